"""Precision, recall, density and coverage of generated samples from k-NN balls.

Naeem, Oh, Uh, Choi & Yoo (2020), "Reliable fidelity and diversity metrics
for generative models", arXiv:2002.09797, building on the k-NN precision and
recall of Kynkaanniemi et al. (2019, arXiv:1904.06991). With r_k(a) the
Euclidean distance from a to its k-th nearest neighbour in its own set (the
point itself excluded), N real points X and M fake points Y:

    precision = (1/M) sum_j 1[exists i: |Y_j - X_i| <= r_k(X_i)]
    recall    = (1/N) sum_i 1[exists j: |X_i - Y_j| <= r_k(Y_j)]
    density   = (1/(kM)) sum_j sum_i 1[|Y_j - X_i| <= r_k(X_i)]
    coverage  = (1/N) sum_i 1[min_j |X_i - Y_j| <= r_k(X_i)]

Distances are computed in JAX in row blocks (`lax.map`), so N x M never has
to fit in memory at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["knn_radii", "precision_recall_density_coverage"]

_ROWS_PER_BLOCK = 256


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(d2, 0.0)


def _row_blocks(fn, rows: jax.Array):
    """Applies `fn` to blocks of rows of `rows` ([N, D]) and concatenates along axis 0."""
    return jax.lax.map(fn, rows, batch_size=min(_ROWS_PER_BLOCK, rows.shape[0]))


def _knn_squared_radii(points: jax.Array, k: int) -> jax.Array:
    def one(row):
        d2 = _squared_distances(row[None], points)[0]
        # The point itself is at distance 0 and counts as the first neighbour.
        return -jax.lax.top_k(-d2, k + 1)[0][k]

    return _row_blocks(one, points)


@functools.partial(jax.jit, static_argnames="k")
def knn_radii(points: jax.Array, k: int) -> jax.Array:
    """Distance of each point to its k-th nearest other point: `[N, D] -> [N]`."""
    return jnp.sqrt(_knn_squared_radii(points, k))


@functools.partial(jax.jit, static_argnames="k")
def _prdc(real: jax.Array, fake: jax.Array, k: int) -> dict[str, jax.Array]:
    # Squared distances against squared radii throughout: a point exactly on a
    # ball's boundary (its centre's k-th neighbour) stays inside.
    real_r2, fake_r2 = _knn_squared_radii(real, k), _knn_squared_radii(fake, k)

    def per_fake(y):
        d2 = _squared_distances(y[None], real)[0]
        inside = d2 <= real_r2
        return jnp.any(inside), jnp.sum(inside)

    in_any_real_ball, real_ball_counts = _row_blocks(per_fake, fake)

    def per_real(row_and_r2):  # coverage needs each real point's own radius
        x, r2 = row_and_r2
        d2 = _squared_distances(x[None], fake)[0]
        return jnp.any(d2 <= fake_r2), jnp.min(d2) <= r2

    recalled, covered = jax.lax.map(per_real, (real, real_r2),
                                    batch_size=min(_ROWS_PER_BLOCK, real.shape[0]))
    return {
        "precision": jnp.mean(in_any_real_ball),
        "recall": jnp.mean(recalled),
        "density": jnp.sum(real_ball_counts) / (k * fake.shape[0]),
        "coverage": jnp.mean(covered),
    }


def precision_recall_density_coverage(real_features, fake_features, *, k: int = 5) -> dict[str, float]:
    """The four k-NN metrics of Naeem et al. 2020 (their default k = 5).

    Args:
      real_features: `[N, D]`, N > k.
      fake_features: `[M, D]`, M > k.
      k: the neighbour that sets each ball's radius.

    Returns:
      `{"precision", "recall", "density", "coverage"}` as Python floats;
      all but density lie in [0, 1]; density is 1 on average for matching
      distributions and can exceed 1.
    """
    real = jnp.asarray(real_features, jnp.float32)
    fake = jnp.asarray(fake_features, jnp.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D] with the same D, got {list(real.shape)} and {list(fake.shape)}"
        )
    if k < 1 or real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"k = {k} needs more than k points in each set, got {real.shape[0]} real, {fake.shape[0]} fake")
    return {name: float(v) for name, v in _prdc(real, fake, k).items()}
