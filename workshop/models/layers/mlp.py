"""A multi-layer perceptron built from `nnx.Linear`, the shared dense backbone.

Reads the mixed-precision policy of `workshop.core.device_manager` when it is
built: weights in `policy.param_dtype`, matmuls and activations in
`policy.compute_dtype` (Micikevicius et al. 2018, arXiv:1710.03740).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["MLP"]


class MLP(nnx.Module):
    """Linear layers with an activation between them (none after the last).

    With `hidden_features=()` it is one affine map `in_features -> out_features`.

    Args:
      in_features: size of the last input axis.
      hidden_features: widths of the hidden layers, in order.
      out_features: size of the output's last axis.
      activation: elementwise nonlinearity between layers.
      activate_final: also apply `activation` to the output.
      rngs: `params` stream (or default) for the initialisers.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int,
        *,
        activation: Callable[[jax.Array], jax.Array] = nnx.gelu,
        activate_final: bool = False,
        rngs: nnx.Rngs,
    ):
        policy = get_precision_policy()
        sizes = [int(in_features), *(int(h) for h in hidden_features), int(out_features)]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )
        self.activation = activation
        self.activate_final = bool(activate_final)
        self.in_features = sizes[0]
        self.out_features = sizes[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., in_features] -> [..., out_features]` in the compute dtype."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.activate_final:
                x = self.activation(x)
        return x
