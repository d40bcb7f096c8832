"""Energy networks E_theta(x) -> [B]: an MLP for vectors, strided convolutions for images.

The activations are SiLU (swish; Ramachandran et al. 2017, arXiv:1710.05941),
smooth so that the Langevin gradients grad_x E are continuous, as in the
short-run EBMs of Nijkamp et al. 2019 (arXiv:1904.09770) and JEM (Grathwohl
et al. 2019, arXiv:1912.03263). A conditional network (Du & Mordatch 2019,
arXiv:1903.08689, section 3.3) appends a learned label embedding to the input
of the MLP, or to the flattened convolutional features.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.layers import MLP, ConvEncoder, LabelEmbedding

__all__ = ["BACKBONES", "EnergyNetwork"]

BACKBONES = ("mlp", "conv")
_LABEL_FEATURES = 16


class EnergyNetwork(nnx.Module):
    """A scalar energy per example.

    Args:
      input_shape: `(D,)` or `(H, W, C)` (an MLP flattens any shape).
      features: hidden widths of the MLP, or channels of each stride-2
        convolution stage.
      backbone: "mlp" or "conv".
      num_classes: None for an unconditional network, else the number of
        label classes it is conditioned on.
      rngs: `params` stream (or default).
    """

    def __init__(self, input_shape: Sequence[int], features: Sequence[int], *, backbone: str,
                 num_classes: int | None = None, rngs: nnx.Rngs):
        if backbone not in BACKBONES:
            raise ValueError(f"backbone_type {backbone!r} is not available for model_type 'ebm'; known: "
                             f"{', '.join(BACKBONES)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.backbone = backbone
        label_features = 0 if num_classes is None else _LABEL_FEATURES
        self.label_embedding = None if num_classes is None else LabelEmbedding(num_classes, label_features, rngs=rngs)
        if backbone == "mlp":
            self.encoder = None
            self.head = MLP(math.prod(self.input_shape) + label_features, features, 1, activation=nnx.silu, rngs=rngs)
        else:
            policy = get_precision_policy()
            self.encoder = ConvEncoder(self.input_shape, features, activation=nnx.silu, rngs=rngs)
            self.head = nnx.Linear(self.encoder.output_size + label_features, 1, dtype=policy.compute_dtype,
                                   param_dtype=policy.param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """`[B, *input_shape]` (and `[B]` int labels) -> `[B]` float32 energies."""
        h = x.reshape(x.shape[0], -1) if self.encoder is None else self.encoder(x)
        if self.label_embedding is not None:
            emb = self.label_embedding(labels)
            h = jnp.concatenate([h.astype(emb.dtype), emb], axis=-1)
        return self.head(h)[:, 0].astype(jnp.float32)
