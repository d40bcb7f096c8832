"""Kernel inception distance: the unbiased MMD^2 with a cubic polynomial kernel.

Binkowski, Sutherland, Arbel & Gretton (2018), "Demystifying MMD GANs",
arXiv:1801.01401, section 4: with k(x, y) = (x.y / D + 1)^3 on D-dimensional
features, KID is the unbiased estimator of MMD^2 (Gretton et al. 2012, eq. 3),

    (1 / m(m-1)) sum_{i != j} k(x_i, x_j) + (1 / m(m-1)) sum_{i != j} k(y_i, y_j)
      - (2 / m^2) sum_{i, j} k(x_i, y_j),

averaged over `num_subsets` random subsets of m examples of each set (drawn
without replacement, as in the authors' code), with the standard deviation
over subsets as the spread. Being unbiased, it averages to 0 (and can be
negative) when both sets come from the same distribution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["kernel_inception_distance", "polynomial_mmd2_unbiased"]


def _polynomial_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
    return (a @ b.T / a.shape[-1] + 1.0) ** 3


def polynomial_mmd2_unbiased(x: jax.Array, y: jax.Array) -> jax.Array:
    """The unbiased MMD^2 estimate of two equal-size sets with k(a, b) = (a.b/D + 1)^3.

    Args:
      x, y: `[m, D]` feature sets, m >= 2.

    Returns:
      A scalar.
    """
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    off_diagonal = lambda k: (jnp.sum(k) - jnp.trace(k)) / (m * (m - 1))  # noqa: E731
    return off_diagonal(k_xx) + off_diagonal(k_yy) - 2.0 * jnp.mean(k_xy)


def kernel_inception_distance(
    real_features, fake_features, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subsets.

    Args:
      real_features: `[N, D]`.
      fake_features: `[M, D]`.
      num_subsets: how many subset pairs to average.
      subset_size: m, capped at min(N, M).
      seed: the subsets are drawn from `PRNGKey(seed)`; the same seed gives
        the same value.

    Returns:
      `(kid_mean, kid_std)` as Python floats.
    """
    real = jnp.asarray(real_features, jnp.float32)
    fake = jnp.asarray(fake_features, jnp.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D] with the same D, got {list(real.shape)} and {list(fake.shape)}"
        )
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 examples in each set, got {real.shape[0]} and {fake.shape[0]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    values = _subset_mmds(real, fake, jax.random.PRNGKey(seed), num_subsets=num_subsets, m=m)
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std())


@functools.partial(jax.jit, static_argnames=("num_subsets", "m"))
def _subset_mmds(real, fake, key, *, num_subsets: int, m: int) -> jax.Array:
    def one(i):
        k_real, k_fake = jax.random.split(jax.random.fold_in(key, i))
        x = real[jax.random.choice(k_real, real.shape[0], (m,), replace=False)]
        y = fake[jax.random.choice(k_fake, fake.shape[0], (m,), replace=False)]
        return polynomial_mmd2_unbiased(x, y)

    return jax.lax.map(one, jnp.arange(num_subsets))
