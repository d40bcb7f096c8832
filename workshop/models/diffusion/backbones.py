"""The denoising networks every diffusion-family model builds: U-Net or DiT.

DDPM, flow matching and EDM differ in what their network is asked to predict
and at which time or noise level, not in the network: each builds it here from
its `ModelConfiguration` (`backbone_type`, `encoder_features`, `input_shape`)
and the shared fields of `BackboneParameters`. The network maps
`(x [B, H, W, C_in], t [B], labels [B] | None) -> [B, H, W, C_out]`, `t` a
float fed to a sinusoidal timestep embedding (DDPM timesteps span [0, T-1];
the continuous-time models scale their time into the same range).
`drop_labels` and `guided` are the two halves of classifier-free guidance
for the continuous-time models.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.models.diffusion.dit import DiT
from workshop.models.diffusion.unet import UNet
from workshop.models.layers import Upsampling, class_labels

__all__ = ["BACKBONES", "BackboneParameters", "ClassConditioning", "backbone_name", "drop_labels", "guided", "make_backbone"]

BACKBONES = ("unet", "dit")


class BackboneParameters(pydantic.BaseModel):
    """The network fields of the diffusion family's `parameters` (and class conditioning)."""

    model_config = ConfigDict(extra="forbid")

    num_classes: PositiveInt | None = Field(None, description="class-conditional with labels in [0, num_classes)")
    # unet
    num_res_blocks: PositiveInt = 1
    attention_resolutions: list[PositiveInt] = Field(default_factory=lambda: [7])
    upsampling: Upsampling = Field("resize_conv", description="the U-Net's 2x upsampling (layers.Upsample)")
    # dit
    patch_size: PositiveInt = 4
    hidden_size: PositiveInt = 128
    depth: PositiveInt = 4
    mlp_ratio: float = Field(4.0, gt=0.0)
    # both
    num_heads: PositiveInt = 4


def backbone_name(config: ModelConfiguration) -> str:
    """"unet" (the default) or "dit"; checks the input is an `(H, W, C)` image.

    Raises:
      ValueError: an unknown backbone (listing the known ones) or a non-image input.
    """
    name = "unet" if config.backbone_type is None else config.backbone_type.strip().lower()
    if name not in BACKBONES:
        raise ValueError(f"backbone_type {config.backbone_type!r} is not available for model_type "
                         f"{config.model_type!r}; known: {', '.join(BACKBONES)} (None picks unet)")
    if len(config.input_shape) != 3:
        raise ValueError(f"model_type {config.model_type!r} needs an (H, W, C) image input_shape, "
                         f"got {tuple(config.input_shape)}")
    return name


def make_backbone(config: ModelConfiguration, p: BackboneParameters, *, in_channels: int, out_channels: int,
                  rngs: nnx.Rngs) -> UNet | DiT:
    """The U-Net or DiT of `config` with `in_channels` inputs and `out_channels` outputs.

    Args:
      config: `backbone_type`, `input_shape` (H, W, C), `encoder_features` (the U-Net's level widths).
      p: the validated network fields.
      rngs: `params` stream (or default).
    """
    h, w, _ = (int(s) for s in config.input_shape)
    if backbone_name(config) == "unet":
        return UNet(in_channels, out_channels, config.encoder_features, num_res_blocks=p.num_res_blocks,
                    attention_resolutions=p.attention_resolutions, height=h, num_heads=p.num_heads,
                    num_classes=p.num_classes, upsampling=p.upsampling, rngs=rngs)
    return DiT((h, w, in_channels), out_channels, patch_size=p.patch_size, hidden_size=p.hidden_size,
               depth=p.depth, num_heads=p.num_heads, mlp_ratio=p.mlp_ratio, num_classes=p.num_classes, rngs=rngs)


def drop_labels(key: jax.Array, labels: jax.Array | None, rate: float, null_label: int) -> jax.Array | None:
    """Labels `[B]` with each replaced by the "no label" class `null_label` with probability `rate`.

    The training half of classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598).
    """
    if labels is None or rate <= 0.0:
        return labels
    return jnp.where(jax.random.bernoulli(key, rate, labels.shape), null_label, labels)


def guided(network: Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array], x: jax.Array, t: jax.Array,
           labels: jax.Array | None, *, null_label: int | None, guidance_scale: float) -> jax.Array:
    """network(x, t, labels) with classifier-free guidance: u + w (c - u).

    Args:
      network: `(x [B, ...], t [B], labels [B] | None) -> [B, ...]`.
      labels: `[B]` or None (unconditional: the network runs once).
      null_label: the "no label" class.
      guidance_scale: w; w = 1 runs the network once on the labelled batch,
        otherwise once on the labelled and the "no label" batch together.

    Returns:
      `[B, ...]`; any output affine in the network's (x0, epsilon, velocity) mixes this way.
    """
    if labels is None or guidance_scale == 1.0:
        return network(x, t, labels)
    out = network(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                  jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
    cond, uncond = jnp.split(out, 2)
    return uncond + guidance_scale * (cond - uncond)


class ClassConditioning:
    """Class labels and classifier-free guidance options of the diffusion family's models.

    A mixin for a model with a `model_type`, a default `guidance_scale` and,
    when class-conditional, `num_classes` (the backbone's "no label" class is
    `num_classes`).
    """

    @property
    def conditional(self) -> bool:
        return hasattr(self, "num_classes")

    def _labels(self, labels: Any, batch: int) -> jax.Array | None:
        """Checked `[batch]` int32 labels (None for an unconditional model; required by a conditional one)."""
        return class_labels(labels, getattr(self, "num_classes", None), batch, model_name=f"model_type {self.model_type!r}",
                            unconditional_hint="set parameters num_classes to train a class-conditional model")

    def _guidance_scale(self, guidance_scale: float | None) -> float:
        """The guidance scale to sample with: the default, or one a conditional model accepts."""
        if guidance_scale is None:
            return self.guidance_scale if self.conditional else 1.0
        if not self.conditional and float(guidance_scale) != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model; model_type "
                             f"{self.model_type!r} here is unconditional (set parameters num_classes)")
        return float(guidance_scale)
