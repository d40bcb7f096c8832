"""Monotone rational-quadratic splines (Durkan, Bekasov, Murray & Papamakarios 2019).

"Neural Spline Flows" (arXiv:1906.04032), section 3.1 and appendix A, after
Gregory & Delbourgo 1982: on `[-tail_bound, tail_bound]` the map is a
piecewise rational-quadratic function through K+1 knots with positive
derivatives at the knots, hence strictly increasing and analytically
invertible; outside that interval it is the identity ("linear tails"), with
derivative 1 at the outer knots so the whole map is C^1.

The unnormalised parameters of one element are K bin widths, K bin heights and
K-1 interior derivatives (`num_spline_params(K) = 3K - 1`). All zeros give
equal bins and unit derivatives, i.e. the identity, which is how a flow built
from zero-initialised conditioners starts.

Everything is computed in float32, whatever the precision policy: the
softmax bin normalisation, the cumulative knot positions, the bin search
and the inverse's quadratic root would misplace knots and bins in bfloat16
(8 bits of mantissa), and the log-derivatives are log-det terms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["DEFAULT_MIN_BIN_SIZE", "DEFAULT_MIN_DERIVATIVE", "num_spline_params", "rational_quadratic_spline"]

DEFAULT_MIN_BIN_SIZE = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def num_spline_params(num_bins: int) -> int:
    """Unnormalised parameters per element: K widths, K heights, K-1 derivatives."""
    return 3 * int(num_bins) - 1


def _knots(raw: jax.Array, tail_bound: float, min_size: float) -> tuple[jax.Array, jax.Array]:
    """Softmax bin sizes (each >= min_size of the range) -> knot positions and bin sizes."""
    k = raw.shape[-1]
    sizes = min_size + (1.0 - min_size * k) * jax.nn.softmax(raw, axis=-1)
    cum = jnp.cumsum(sizes, axis=-1)
    cum = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum], axis=-1)
    knots = 2.0 * tail_bound * cum - tail_bound
    # Pin the ends exactly so rounding cannot open a gap at the boundary.
    knots = knots.at[..., 0].set(-tail_bound).at[..., -1].set(tail_bound)
    return knots, knots[..., 1:] - knots[..., :-1]


def _gather(values: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(
    x: jax.Array,
    params: jax.Array,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_SIZE,
    min_bin_height: float = DEFAULT_MIN_BIN_SIZE,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array]:
    """Applies the spline (or its inverse) elementwise.

    Args:
      x: `[...]` inputs (outputs of the forward map when `inverse`).
      params: `[..., 3K - 1]` unnormalised widths `[:K]`, heights `[K:2K]`
        and interior derivatives `[2K:]`, one set per element of `x`.
      inverse: evaluate the inverse map instead.
      tail_bound: B; the spline lives on `[-B, B]`, the identity outside.
      min_bin_width: the floor of a bin's width, to keep the map well conditioned.
      min_bin_height: the floor of a bin's height.
      min_derivative: the floor of the knot derivatives.

    Returns:
      `(y, log_abs_det)`, both `[...]` float32: the image of `x` and
      log|dy/dx| of the map that was applied, per element.
    """
    x = jnp.asarray(x, jnp.float32)
    params = jnp.asarray(params, jnp.float32)
    num_bins = (params.shape[-1] + 1) // 3
    if params.shape[-1] != num_spline_params(num_bins) or num_bins < 1:
        raise ValueError(f"spline params must have 3K-1 entries on the last axis, got {params.shape[-1]}")
    if min_bin_width * num_bins >= 1.0 or min_bin_height * num_bins >= 1.0:
        raise ValueError(f"min_bin_width/height {min_bin_width}/{min_bin_height} too large for {num_bins} bins")
    raw_w, raw_h, raw_d = params[..., :num_bins], params[..., num_bins : 2 * num_bins], params[..., 2 * num_bins :]

    cum_w, widths = _knots(raw_w, tail_bound, min_bin_width)
    cum_h, heights = _knots(raw_h, tail_bound, min_bin_height)
    # softplus(raw + c) + min_d with softplus(c) = 1 - min_d: raw = 0 gives derivative 1.
    shift = math.log(math.expm1(1.0 - min_derivative))
    interior = min_derivative + jax.nn.softplus(raw_d + shift)
    ones = jnp.ones_like(interior[..., :1])
    derivs = jnp.concatenate([ones, interior, ones], axis=-1)  # [..., K + 1], 1 at the ends: linear tails

    inside = (x >= -tail_bound) & (x <= tail_bound)
    # Clamp before the arithmetic so the unused branch has finite values and gradients.
    xc = jnp.clip(x, -tail_bound, tail_bound)
    edges = cum_h if inverse else cum_w
    index = jnp.clip(jnp.sum(xc[..., None] >= edges[..., 1:-1], axis=-1), 0, num_bins - 1)

    x_k, w_k = _gather(cum_w[..., :-1], index), _gather(widths, index)
    y_k, h_k = _gather(cum_h[..., :-1], index), _gather(heights, index)
    d_k, d_k1 = _gather(derivs[..., :-1], index), _gather(derivs[..., 1:], index)
    s_k = h_k / w_k
    total = d_k1 + d_k - 2.0 * s_k

    if inverse:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * total
        b = h_k * d_k - dy * total
        c = -s_k * dy
        disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
        xi = jnp.clip(2.0 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
        out = xi * w_k + x_k
    else:
        xi = (xc - x_k) / w_k
        out = y_k + h_k * (s_k * xi * xi + d_k * xi * (1.0 - xi)) / (s_k + total * xi * (1.0 - xi))
    one_minus = 1.0 - xi
    denom = s_k + total * xi * one_minus
    deriv = s_k * s_k * (d_k1 * xi * xi + 2.0 * s_k * xi * one_minus + d_k * one_minus * one_minus) / (denom * denom)
    log_det = jnp.log(deriv)
    if inverse:
        log_det = -log_det
    return jnp.where(inside, out, x), jnp.where(inside, log_det, 0.0)
