"""Elementwise invertible maps whose parameters a conditioner network predicts.

Coupling layers (`coupling.py`) and autoregressive layers (`made.py`) both
transform each element x_i with a monotone map whose parameters depend on
other elements; this module holds the maps, chosen by name:

* "affine": z = x * exp(log_s) + t (Dinh et al. 2016, arXiv:1605.08803;
  Papamakarios et al. 2017, arXiv:1705.07057). log_s is soft-clamped to
  `(-MAX_LOG_SCALE, MAX_LOG_SCALE)` by a scaled tanh so one layer cannot blow
  up or collapse the data (bounded scales keep Glow-style training finite).
* "affine_sigmoid": Glow's parameterisation (Kingma & Dhariwal 2018,
  arXiv:1807.03039, code): z = x * s + t with s = sigmoid(h + 2) / sigmoid(2),
  so a layer can expand by at most 1/sigmoid(2) = 1.14 in the density
  direction; deep stacks of couplings stay stable. Used by "glow".
* "additive": z = x + t, volume preserving (Dinh et al. 2014, NICE,
  arXiv:1410.8516).
* "spline": the rational-quadratic spline of Durkan et al. 2019
  (arXiv:1906.04032), see `spline.py`.

With all-zero parameters every map is the identity.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

from workshop.models.flow.spline import num_spline_params, rational_quadratic_spline

__all__ = ["MAX_LOG_SCALE", "TRANSFORMS", "Transform", "check_transform", "elementwise_transform",
           "num_transform_params"]

Transform = Literal["affine", "affine_sigmoid", "additive", "spline"]
TRANSFORMS: tuple[str, ...] = get_args(Transform)
MAX_LOG_SCALE = 3.0


def check_transform(kind: str, *, what: str = "transform") -> str:
    """Returns `kind`, or raises a ValueError listing the valid transforms."""
    if kind not in TRANSFORMS:
        raise ValueError(f"{what} {kind!r} is unknown; valid: {', '.join(TRANSFORMS)}")
    return kind


def num_transform_params(kind: str, num_bins: int = 8) -> int:
    """Parameters per element: 2 (affine kinds), 1 (additive), 3K-1 (spline with K bins)."""
    check_transform(kind)
    return {"affine": 2, "affine_sigmoid": 2, "additive": 1}.get(kind) or num_spline_params(num_bins)


def elementwise_transform(
    kind: str,
    x: jax.Array,
    params: jax.Array,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
) -> tuple[jax.Array, jax.Array]:
    """The map `kind` with `params`, forward (x -> z) or inverse (z -> x).

    Args:
      kind: one of `TRANSFORMS`.
      x: `[...]` float32 inputs.
      params: `[..., P]` with P = `num_transform_params(kind, K)`.
      inverse: apply the inverse map.
      tail_bound: interval half-width of the spline.

    Returns:
      `(y, log_abs_det)`, both `[...]` float32, log|dy/dx| of the map applied.
    """
    check_transform(kind)
    x = x.astype(jnp.float32)
    params = params.astype(jnp.float32)
    if kind == "spline":
        return rational_quadratic_spline(x, params, inverse=inverse, tail_bound=tail_bound)
    shift = params[..., 0]
    if kind == "additive":
        return (x - shift if inverse else x + shift), jnp.zeros_like(x)
    if kind == "affine_sigmoid":
        g = jax.nn.log_sigmoid(params[..., 1] + 2.0) - jax.nn.log_sigmoid(2.0)
        # Soft floor at about -MAX_LOG_SCALE, shifted so that g = 0 stays 0: the
        # sampling direction (which divides by s) cannot blow up to inf either.
        log_s = jax.nn.softplus(g + MAX_LOG_SCALE) - jax.nn.softplus(MAX_LOG_SCALE)
    else:
        log_s = MAX_LOG_SCALE * jnp.tanh(params[..., 1] / MAX_LOG_SCALE)
    if inverse:
        return (x - shift) * jnp.exp(-log_s), -log_s
    return x * jnp.exp(log_s) + shift, log_s
