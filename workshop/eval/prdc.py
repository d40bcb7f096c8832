"""Precision, recall, density and coverage of generated samples from k-NN balls.

Naeem, Oh, Uh, Choi & Yoo (2020), "Reliable fidelity and diversity metrics
for generative models", arXiv:2002.09797, building on the k-NN precision and
recall of Kynkaanniemi et al. (2019, arXiv:1904.06991). With r_k(a) the
Euclidean distance from a to its k-th nearest neighbour in its own set (the
point itself excluded), N real points X and M fake points Y:

    precision = (1/M) sum_j 1[exists i: |Y_j - X_i| < r_k(X_i)]
    recall    = (1/N) sum_i 1[exists j: |X_i - Y_j| < r_k(Y_j)]
    density   = (1/(kM)) sum_j sum_i 1[|Y_j - X_i| < r_k(X_i)]
    coverage  = (1/N) sum_i 1[min_j |X_i - Y_j| < r_k(X_i)]

The comparisons are strict, as in the authors' `prdc` package
(github.com/clovaai/generative-evaluation-prdc): a ball holds its centre and
k - 1 neighbours, so fake samples that copy the real ones get density 1
(with `<=` the k-th neighbour on the boundary would count too, k+1 per ball).

Distances are stable and exactly symmetric: the features are centred on the
real mean in float64 on the host before the float32 cast (a large shared
offset would otherwise eat the float32 mantissa), and each squared distance
is the sum of squared differences, not |a|^2 + |b|^2 - 2ab, which cancels
catastrophically for nearby points far from the origin and could put a copy
of a point on the other side of its own ball's boundary. They are computed
in JAX in row blocks (`lax.map`), so N x M never has to fit in memory at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["knn_radii", "precision_recall_density_coverage"]

_ROWS_PER_BLOCK = 64


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """`[P, D]`, `[Q, D]` -> `[P, Q]` sums of squared differences (XLA fuses them into the reduction)."""
    return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)


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
    # Squared distances against squared radii throughout, strictly: a point
    # exactly on a ball's boundary (its centre's k-th neighbour) is outside.
    real_r2, fake_r2 = _knn_squared_radii(real, k), _knn_squared_radii(fake, k)

    def per_fake(y):
        d2 = _squared_distances(y[None], real)[0]
        inside = d2 < real_r2
        return jnp.any(inside), jnp.sum(inside)

    in_any_real_ball, real_ball_counts = _row_blocks(per_fake, fake)

    def per_real(row_and_r2):  # coverage needs each real point's own radius
        x, r2 = row_and_r2
        d2 = _squared_distances(x[None], fake)[0]
        return jnp.any(d2 < fake_r2), jnp.min(d2) < r2

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
      distributions (exactly 1 for fake == real without ties) and can exceed 1.
    """
    real, fake = np.asarray(real_features, np.float64), np.asarray(fake_features, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D] with the same D, got {list(real.shape)} and {list(fake.shape)}"
        )
    if k < 1 or real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"k = {k} needs more than k points in each set, got {real.shape[0]} real, {fake.shape[0]} fake")
    centre = real.mean(axis=0) if len(real) else 0.0
    real, fake = jnp.asarray(real - centre, jnp.float32), jnp.asarray(fake - centre, jnp.float32)
    return {name: float(v) for name, v in _prdc(real, fake, k).items()}
