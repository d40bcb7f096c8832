"""Gated PixelCNN: exact likelihood of images, one pixel (and channel) at a time.

van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks" (arXiv:1601.06759): p(x) = prod_i p(x_i | x_<i) over pixels in
raster order and channels in order, each a 256-way softmax over levels. The
network is the gated PixelCNN of van den Oord et al. 2016, "Conditional Image
Generation with PixelCNN Decoders" (arXiv:1606.05328): a first
`GatedMaskedConv2D` of type A with a `first_kernel_size` kernel, then
`num_layers - 1` of type B, vertical and horizontal stacks (no blind spot),
optional class conditioning as a learned bias per layer, and a head of two
masked 1x1 convolutions. The output is either a `num_levels`-way softmax or a
mixture of discretized logistics (Salimans et al. 2017, arXiv:1701.05517; see
`logistic_mixture.py`).

Data: images `[B, H, W, C]` as the pipeline gives them (floats `k / 255` in
[0, 1], or {0, 1} with `num_levels=2` for binarized data), or integer levels.
`log_prob` is exact, in nats per image.

Sampling runs H*W*C steps in one `lax.fori_loop`. Each step evaluates the
network only on the band of rows that the current row's output depends on (the
vertical reach of the stacks, `receptive_rows` above it, clamped to the image),
which gives exactly the logits of the full image at a fraction of the cost.
`generate(prompt=...)` completes images whose top rows are given: the loop
starts after them, keeping them unchanged.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.registry import register_model
from workshop.models.autoregressive import logistic_mixture, quantization
from workshop.models.autoregressive.masked_conv import GatedMaskedConv2D, MaskedConv2D
from workshop.models.autoregressive.sampling import (broadcast_prompt, check_sampling_settings, sample_categorical,
                                                     sample_keys, step_keys)
from workshop.models.layers.embedding import LabelEmbedding, class_labels
from workshop.models.layers.compiled_sampling import compiled_sampling

__all__ = ["PixelCNN", "PixelCNNParameters"]


class PixelCNNParameters(pydantic.BaseModel):
    """`parameters` of "pixelcnn"."""

    model_config = ConfigDict(extra="forbid")

    num_layers: PositiveInt = Field(12, description="gated layers (the first is of type A)")
    features: PositiveInt = Field(64, description="features F of each stack (a multiple of the image channels)")
    kernel_size: PositiveInt = Field(3, description="odd kernel size k of the type-B layers")
    first_kernel_size: PositiveInt = Field(7, description="odd kernel size of the first (type-A) layer")
    num_levels: int = Field(256, ge=2, le=65536, description="levels per value: 256 for 8-bit, 2 for binarized")
    output: Literal["softmax", "logistic_mixture"] = Field("softmax", description="per-value distribution")
    num_mixtures: PositiveInt = Field(5, description="logistic components (output='logistic_mixture')")
    num_classes: PositiveInt | None = Field(None, description="class-conditional when set; labels in [0, n)")


@register_model("pixelcnn", family="autoregressive", parameters=PixelCNNParameters,
                description="Gated PixelCNN (van den Oord et al. 2016), exact likelihood")
class PixelCNN(nnx.Module):
    """Gated PixelCNN over images of `config.input_shape` `(H, W, C)`.

    Args:
      config: `input_shape` and `parameters` (see `PixelCNNParameters`).
      rngs: `params` stream (or default) for the initialisers.
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = PixelCNNParameters.model_validate(config.parameters)
        if len(config.input_shape) != 3:
            raise ValueError(f"pixelcnn needs input_shape (H, W, C), got {tuple(config.input_shape)}")
        for name in ("kernel_size", "first_kernel_size"):
            if getattr(p, name) % 2 != 1:
                raise ValueError(f"parameters.{name} must be odd, got {getattr(p, name)}")
        self.input_shape = tuple(int(s) for s in config.input_shape)
        h, w, c = self.input_shape
        if p.features % c:
            raise ValueError(f"parameters.features ({p.features}) must be a multiple of the {c} image channels")
        self.num_levels = int(p.num_levels)
        self.likelihood_estimate = "exact"
        self.likelihood_data = f"discrete values, {self.num_levels} levels each: the probability mass"
        self.output = p.output
        self.params_per_value = self.num_levels if p.output == "softmax" else 3 * p.num_mixtures
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
            self.label_embeddings = nnx.List(
                [LabelEmbedding(self.num_classes, 2 * p.features, rngs=rngs) for _ in range(p.num_layers)]
            )
        kernels = [p.first_kernel_size] + [p.kernel_size] * (p.num_layers - 1)
        self.layers = nnx.List([
            GatedMaskedConv2D(c if i == 0 else p.features, p.features, k, mask_type="A" if i == 0 else "B",
                              num_channels=c, rngs=rngs)
            for i, k in enumerate(kernels)
        ])
        self.head_hidden = MaskedConv2D(p.features, p.features, 1, mask_type="B", num_channels=c, rngs=rngs)
        self.head_out = MaskedConv2D(p.features, c * self.params_per_value, 1, mask_type="B", num_channels=c,
                                     rngs=rngs)
        # Rows above the current one that its output depends on: each vertical
        # kernel reaches k // 2 rows up and the down shift one more.
        self.receptive_rows = min(h - 1, sum(k // 2 for k in kernels) + 1)

    # ------------------------------------------------------------ internals
    def _labels(self, labels, batch_size: int) -> jax.Array | None:
        return class_labels(labels, getattr(self, "num_classes", None), batch_size, model_name="pixelcnn",
                            unconditional_hint="set parameters.num_classes")

    def _levels(self, x: jax.Array) -> jax.Array:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"pixelcnn expects images [B, {', '.join(map(str, self.input_shape))}], "
                             f"got shape {tuple(x.shape)}")
        return quantization.image_to_levels(x, self.num_levels, model_name="pixelcnn")

    def network(self, inputs: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """The masked network on real-valued inputs (differentiable, for causality checks).

        Args:
          inputs: `[B, H', W, C]` levels scaled to [-1, 1] (any height H').
          labels: `[B]` int32 (conditional models) or None.

        Returns:
          `[B, H', W, C, P]` float32 distribution parameters of each value
          (P = `num_levels` logits, or 3 * `num_mixtures`).
        """
        v = h = inputs.astype(self.head_out.conv.dtype or jnp.float32)
        for i, layer in enumerate(self.layers):
            cond = None if labels is None else self.label_embeddings[i](labels)
            v, h = layer(v, h, cond)
        out = self.head_out(jax.nn.relu(self.head_hidden(jax.nn.relu(h))))
        b, hh, w, _ = out.shape
        c = self.input_shape[-1]
        # Output feature p*C + c belongs to channel group c (see autoregressive_mask).
        out = out.reshape(b, hh, w, self.params_per_value, c)
        return jnp.moveaxis(out, -1, -2).astype(jnp.float32)

    def _scaled(self, levels: jax.Array) -> jax.Array:
        return 2.0 * levels.astype(jnp.float32) / (self.num_levels - 1) - 1.0

    def _value_log_prob(self, params: jax.Array, levels: jax.Array) -> jax.Array:
        if self.output == "softmax":
            log_p = jax.nn.log_softmax(params, axis=-1)
            return jnp.take_along_axis(log_p, levels[..., None], axis=-1)[..., 0]
        return logistic_mixture.mixture_log_prob(params, levels, self.num_levels)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """One pass over a batch (teacher forcing).

        Args:
          x: `[B, H, W, C]` images (see the module docstring).
          rngs: unused (the model is deterministic).
          labels: `[B]` integer classes (conditional models).

        Returns:
          `params` `[B, H, W, C, P]` and `levels` `[B, H, W, C]` int32.
        """
        levels = self._levels(x)
        params = self.network(self._scaled(levels), self._labels(labels, x.shape[0]))
        return {"params": params, "levels": levels}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: mean negative log-likelihood in nats per image; `nll_bits_per_dim`."""
        log_p = self._value_log_prob(outputs["params"], outputs["levels"])
        nll = -jnp.sum(log_p.reshape(log_p.shape[0], -1), axis=-1)
        dims = log_p[0].size
        return {"loss": jnp.mean(nll), "nll_bits_per_dim": jnp.mean(nll) / (dims * jnp.log(2.0))}

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """Exact log p(x): `[B, H, W, C] -> [B]` nats. `rngs` and `num_samples` are ignored."""
        out = self(x, labels=labels)
        log_p = self._value_log_prob(out["params"], out["levels"])
        return jnp.sum(log_p.reshape(log_p.shape[0], -1), axis=-1)

    # ----------------------------------------------------------- sampling
    def window_params(self, levels: jax.Array, row: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Distribution parameters of one row, computed on the rows it depends on.

        Args:
          levels: `[B, H, W, C]` int32 (rows after `row` may hold anything).
          row: scalar int, the row whose parameters are wanted.

        Returns:
          `[B, W, C, P]`, equal to `network(...)[:, row]` of the whole image.
        """
        height = self.input_shape[0]
        band = self.receptive_rows + 1
        start = jnp.clip(row - self.receptive_rows, 0, height - band)
        window = jax.lax.dynamic_slice_in_dim(levels, start, band, axis=1)
        params = self.network(self._scaled(window), labels)
        return jax.lax.dynamic_index_in_dim(params, row - start, axis=1, keepdims=False)

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 prompt: jax.Array | None = None) -> jax.Array:
        """Ancestral samples, one value per step in a single `lax.fori_loop`.

        Sample i's randomness is `fold_in(key, i)`, so the first samples do
        not change with `n_samples`. `top_k` / `top_p` apply to the softmax output.

        Args:
          n_samples: number of images.
          rngs: the `sample` stream (or default).
          labels: `[n_samples]` classes (conditional models; a scalar is broadcast).
          temperature: divides the logits (0: greedy).
          prompt: the known top rows, `[R, W, C]` (every sample) or
            `[n_samples, R, W, C]` with R <= H, as the inputs (levels
            `k / (num_levels - 1)` or integers); sampling starts below them
            and they stay unchanged (image completion).

        Returns:
          `[n_samples, H, W, C]` float32 `k / (num_levels - 1)` in [0, 1].
        """
        check_sampling_settings(temperature, top_k, top_p, self.num_levels)
        if self.output != "softmax" and (top_k is not None or top_p is not None):
            raise ValueError("top_k/top_p apply to output='softmax' only")
        labels = self._labels(labels, n_samples)
        h, w, c = self.input_shape
        levels = jnp.zeros((n_samples, h, w, c), jnp.int32)
        first = 0
        if prompt is not None:
            rows = broadcast_prompt(prompt, n_samples, 3, what=f"the top rows of an image, [R, {w}, {c}] or "
                                    f"[n_samples, R, {w}, {c}] with R <= {h}")
            if tuple(rows.shape[2:]) != (w, c) or rows.shape[1] > h:
                raise ValueError(f"pixelcnn prompt must be the top rows [n_samples, R, {w}, {c}] with R <= {h}; "
                                 f"got shape {tuple(rows.shape)}")
            levels = levels.at[:, :rows.shape[1]].set(
                quantization.image_to_levels(rows, self.num_levels, model_name="pixelcnn prompt"))
            first = rows.shape[1] * w * c
        keys = sample_keys(rngs.sample(), n_samples)

        def draw(key, params):
            if self.output == "softmax":
                return sample_categorical(key, params, temperature=temperature, top_k=top_k, top_p=top_p)
            return logistic_mixture.mixture_sample(key, params, self.num_levels, temperature=temperature)

        def step(t, levels):
            i, j, ch = t // (w * c), (t // c) % w, t % c
            params = self.window_params(levels, i, labels)[:, j, ch]  # [B, P]
            value = jax.vmap(draw)(step_keys(keys, t), params)
            return levels.at[:, i, j, ch].set(value)

        levels = jax.lax.fori_loop(first, h * w * c, step, levels)
        return quantization.levels_to_image(levels, self.num_levels)
