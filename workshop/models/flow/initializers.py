"""Host-side (NumPy) initialisers for the layers of deep flows.

Building Glow's 2 x 32 steps with JAX initialisers runs dozens of small
eager JAX programs, each compiled on first use (about 0.2 s apiece on a busy
CPU), so construction took 10-15 s. These draw the same distributions with
a NumPy generator seeded from the layer's `rngs` key: no compilation, the
same numbers for the same seed.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["lecun_normal", "numpy_generator", "random_rotation_lu", "zeros"]

Initializer = Callable[..., jax.Array]


def numpy_generator(rngs: nnx.Rngs) -> np.random.Generator:
    """A NumPy generator seeded from the next `params` key of `rngs`."""
    return np.random.default_rng(np.asarray(jax.random.key_data(rngs.params())).ravel().tolist())


def lecun_normal(gen: np.random.Generator) -> Initializer:
    """N(0, 1/fan_in) weights (fan_in = product of all but the last axis), drawn by `gen`."""

    def init(key, shape, dtype=jnp.float32):
        del key
        fan_in = math.prod(shape[:-1]) or 1
        return jnp.asarray(gen.standard_normal(shape) / math.sqrt(fan_in), dtype)

    return init


def zeros(key, shape, dtype=jnp.float32) -> jax.Array:
    """All zeros, made on the host."""
    del key
    return jnp.asarray(np.zeros(shape), dtype)


def random_rotation_lu(gen: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random orthogonal Q `[n, n]` and its pivoted LU factors: Q = P L U.

    Returns:
      `(P, L, U)` float64: a permutation matrix, unit lower-triangular L and
      upper-triangular U (Doolittle elimination with partial pivoting).
    """
    q, r = np.linalg.qr(gen.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))[None, :]
    a = q.copy()
    perm = np.arange(n)
    lower = np.eye(n)
    for k in range(n - 1):
        pivot = k + int(np.argmax(np.abs(a[k:, k])))
        if pivot != k:
            a[[k, pivot]] = a[[pivot, k]]
            perm[[k, pivot]] = perm[[pivot, k]]
            lower[[k, pivot], :k] = lower[[pivot, k], :k]
        factors = a[k + 1:, k] / a[k, k]
        lower[k + 1:, k] = factors
        a[k + 1:] -= factors[:, None] * a[k]
    p = np.eye(n)[:, perm]  # P with P^T Q = L U, i.e. Q = P L U
    return p, lower, np.triu(a)
