"""Generators and discriminators for vectors (MLP) and images (DCGAN-style convolutions).

* Convolutional generator: the DCGAN layout of Radford, Metz & Chintala 2015,
  "Unsupervised Representation Learning with Deep Convolutional Generative
  Adversarial Networks" (arXiv:1511.06434): a linear projection of z to a small
  feature map, learned 2x upsamplings with ReLU up to the image size, and a
  bounded output. Its layers are the shared `ConvDecoder` of
  `workshop.models.layers`; the paper's stride-2 transposed convolutions are
  `upsampling="transposed"`, the default is sub-pixel convolution (Shi et al.
  2016, arXiv:1609.05158; faster on CPU, no checkerboard; `layers.Upsample`); with `norm="batch"` a batch normalisation (Ioffe &
  Szegedy 2015, arXiv:1502.03167) follows the projection and every upsampling,
  before the ReLU, as in the paper.
* Convolutional discriminator: stride-2 4x4 convolutions with LeakyReLU(0.2),
  no pooling, a linear score; MLP discriminator: dense layers with LeakyReLU.
  Both optionally spectrally normalised (Miyato et al. 2018, arXiv:1802.05957)
  and optionally class-conditional through a projection (Miyato & Koyama 2018,
  "cGANs with Projection Discriminator", arXiv:1802.05637):
  D(x, y) = psi(phi(x)) + <embed(y), phi(x)>. The conv discriminator takes
  `norm="batch"` (DCGAN: every convolution but the first) or `norm="layer"`
  (over H, W, C of each example: the critic of Gulrajani et al. 2017,
  arXiv:1704.00028, section 4, where batch normalisation is ruled out because
  the gradient penalty and R1 need examples scored independently; `GAN`
  refuses that combination).
* Conditional generators concatenate a learned label embedding to z.

Batch normalisation follows NNX's modes: after `model.train()` it normalises
with the batch's statistics and updates the running averages (`BatchStat`
variables), after `model.eval()` it uses the running averages.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.gan.spectral_norm import SpectralNormConv, SpectralNormLinear
from workshop.models.layers import MLP, ConvDecoder, LabelEmbedding

__all__ = ["Discriminator", "Generator", "GENERATOR_NORMS", "DISCRIMINATOR_NORMS", "OUTPUT_ACTIVATIONS"]

_LABEL_FEATURES = 32
_LEAKY_SLOPE = 0.2
# Running averages over ~10 steps (PyTorch's default): the players change fast.
_BN_MOMENTUM = 0.9

GENERATOR_NORMS = ("none", "batch")
DISCRIMINATOR_NORMS = ("none", "batch", "layer")


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    policy = get_precision_policy()
    return nnx.BatchNorm(features, momentum=_BN_MOMENTUM, dtype=policy.compute_dtype,
                         param_dtype=policy.param_dtype, rngs=rngs)


def _check_norm(norm: str, allowed: Sequence[str], backbone: str, player: str) -> None:
    if norm not in allowed:
        raise ValueError(f"{player} norm {norm!r} is unknown; known: {', '.join(allowed)}")
    if norm != "none" and backbone != "conv":
        raise ValueError(f"{player} norm {norm!r} is implemented for the conv backbone only; "
                         f"backbone {backbone!r} takes norm 'none'")


def _leaky_relu(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, _LEAKY_SLOPE)


def _unit_interval(x: jax.Array) -> jax.Array:
    # (1 + tanh) / 2: DCGAN's tanh output, mapped to data in [0, 1].
    return 0.5 * (1.0 + jnp.tanh(x))


OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "unit_interval": _unit_interval,
    "tanh": jnp.tanh,
    "none": lambda x: x,
}


class Generator(nnx.Module):
    """z (and a label) to an example: `[B, latent_dim] -> [B, *output_shape]` float32.

    Args:
      output_shape: one example's shape, `(D,)` or `(H, W, C)`.
      latent_dim: size of z.
      features: hidden widths (MLP units, or the `ConvDecoder` channels from
        the smallest map up).
      backbone: "mlp" or "conv" (conv needs `(H, W, C)`).
      output_activation: a key of `OUTPUT_ACTIVATIONS`.
      num_classes: None for an unconditional generator.
      norm: "none", or "batch" (conv backbone) for DCGAN's batch
        normalisation before every ReLU.
      upsampling: the conv backbone's 2x upsampling (`layers.UPSAMPLINGS`).
      rngs: `params` stream (or default).
    """

    def __init__(self, output_shape: Sequence[int], latent_dim: int, features: Sequence[int], *, backbone: str,
                 output_activation: str, num_classes: int | None = None, norm: str = "none",
                 upsampling: str = "subpixel", rngs: nnx.Rngs):
        _check_norm(norm, GENERATOR_NORMS, backbone, "generator")
        self.output_shape = tuple(int(s) for s in output_shape)
        self.latent_dim = int(latent_dim)
        self.output_activation = output_activation
        label_features = 0 if num_classes is None else _LABEL_FEATURES
        self.label_embedding = nnx.data(
            None if num_classes is None else LabelEmbedding(num_classes, label_features, rngs=rngs))
        in_features = self.latent_dim + label_features
        if backbone == "conv":
            # With "batch": a batch norm before every ReLU (Radford et al. 2015, section 3).
            batch_norm = (lambda channels: _batch_norm(channels, rngs)) if norm == "batch" else None
            self.net = ConvDecoder(self.output_shape, features, 1, in_features=in_features, activation=nnx.relu,
                                   norm=batch_norm, upsampling=upsampling, rngs=rngs)
        else:
            self.net = MLP(in_features, features, math.prod(self.output_shape), activation=nnx.relu, rngs=rngs)
        self.norm = norm

    def __call__(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """`[B, latent_dim]` (and `[B]` int labels) -> `[B, *output_shape]` float32."""
        h = z
        if self.label_embedding is not None:
            emb = self.label_embedding(labels)
            h = jnp.concatenate([z.astype(emb.dtype), emb], axis=-1)
        out = self.net(h)
        out = out.astype(jnp.float32).reshape(z.shape[0], *self.output_shape)
        return OUTPUT_ACTIVATIONS[self.output_activation](out)


class Discriminator(nnx.Module):
    """An example (and a label) to one real-valued score: `[B, *input_shape] -> [B]` float32.

    Args:
      input_shape: one example's shape.
      features: hidden widths (MLP units, or channels of each stride-2 conv).
      backbone: "mlp" or "conv".
      spectral_norm: normalise every weight by its spectral norm.
      num_classes: None, or the class count of a projection discriminator.
      power_iterations: power iterations per call of each normalised layer.
      norm: "none"; for the conv backbone also "batch" (after every
        convolution but the first, DCGAN) or "layer" (over `[H, W, C]` of
        each example, after every convolution but the first).
      rngs: `params` stream (or default).
    """

    def __init__(self, input_shape: Sequence[int], features: Sequence[int], *, backbone: str,
                 spectral_norm: bool = False, num_classes: int | None = None, power_iterations: int = 1,
                 norm: str = "none", rngs: nnx.Rngs):
        _check_norm(norm, DISCRIMINATOR_NORMS, backbone, "discriminator")
        self.norm = norm
        policy = get_precision_policy()
        dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.backbone = backbone
        features = tuple(int(f) for f in features)
        if not features:
            raise ValueError("the discriminator needs at least one hidden layer: encoder_features must be non-empty")

        def dense(a, b):
            if spectral_norm:
                return SpectralNormLinear(a, b, num_iterations=power_iterations, rngs=rngs)
            return nnx.Linear(a, b, rngs=rngs, **dtypes)

        def conv(a, b):
            if spectral_norm:
                return SpectralNormConv(a, b, (4, 4), strides=2, num_iterations=power_iterations, rngs=rngs)
            return nnx.Conv(a, b, (4, 4), strides=2, padding="SAME", rngs=rngs, **dtypes)

        if backbone == "conv":
            if len(self.input_shape) != 3:
                raise ValueError(f"a conv discriminator needs an (H, W, C) input_shape, got {self.input_shape}")
            chans = (self.input_shape[-1], *features)
            self.layers = nnx.List([conv(a, b) for a, b in zip(chans[:-1], chans[1:])])
            h, w = self.input_shape[:2]
            sides = []
            for _ in features:
                h, w = (h + 1) // 2, (w + 1) // 2
                sides.append((h, w))
            self.feature_size = h * w * features[-1]
            # DCGAN leaves the first layer unnormalised (Radford et al. 2015, section 3).
            if norm == "batch":
                self.norms = nnx.List([None] + [_batch_norm(f, rngs) for f in features[1:]])
            elif norm == "layer":
                self.norms = nnx.List([None] + [
                    nnx.LayerNorm(f, reduction_axes=(-3, -2, -1), feature_axes=-1, rngs=rngs, **dtypes)
                    for f in features[1:]])
        else:
            sizes = (math.prod(self.input_shape), *features)
            self.layers = nnx.List([dense(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
            self.feature_size = features[-1]
        if norm == "none":
            self.norms = nnx.List([None] * len(features))
        self.head = dense(self.feature_size, 1)
        self.projection = nnx.data(
            None if num_classes is None else nnx.Embed(int(num_classes), self.feature_size, **dtypes, rngs=rngs))

    def features(self, x: jax.Array) -> jax.Array:
        """phi(x): `[B, *input_shape] -> [B, feature_size]`."""
        h = x if self.backbone == "conv" else x.reshape(x.shape[0], -1)
        for layer, norm in zip(self.layers, self.norms):
            h = layer(h)
            h = _leaky_relu(h if norm is None else norm(h))
        return h.reshape(h.shape[0], -1)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """`[B, *input_shape]` (and `[B]` labels for a projection discriminator) -> `[B]` float32 scores."""
        phi = self.features(x)
        score = self.head(phi)[:, 0].astype(jnp.float32)
        if self.projection is not None:
            score = score + jnp.sum((self.projection(labels) * phi).astype(jnp.float32), axis=-1)
        return score
