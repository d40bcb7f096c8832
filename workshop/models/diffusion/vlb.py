"""The variational bound of a discrete-time diffusion model on 8-bit images.

Ho, Jain & Abbeel 2020 (arXiv:2006.11239), eq. (5), with timestep indices
t = 0 .. T-1 (their t = 1 .. T):

  -log p(x0) <= KL(q(x_{T-1} | x0) || N(0, I))                     (prior)
               + sum_{t=1}^{T-1} KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
               - E log p(x0 | x_{t=0})                              (decoder)

with p(x_{t-1} | x_t) = N(posterior mean at x0_hat, beta_tilde_t I), so each
KL term is 0.5 (SNR_{t-1} - SNR_t) ||x0 - x0_hat(x_t)||^2 (Kingma et al. 2021,
"Variational Diffusion Models", arXiv:2107.00630), and the decoder is the
discretised Gaussian N(x0_hat, beta_0) integrated over each pixel's bin of
width 2/255 (the edge bins extend to +-inf), so the bound is on the
probability of the discrete 8-bit data and bits/dim is the usual figure.

The T-1 KL terms are estimated from K timesteps: {1..T-1} is split into K
contiguous strata of sizes n_k, one t is drawn uniformly in each, and its
term is weighted by n_k. Every t is covered with its own weight, so the
estimate is unbiased; with K >= T-1 the sum is exact.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from workshop.models.diffusion.schedules import NoiseSchedule

__all__ = ["discretized_gaussian_log_likelihood", "prior_kl", "variational_bound"]

_BIN_HALF_WIDTH = 1.0 / 255.0


def _log_cdf_difference(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log(Phi(hi) - Phi(lo)) for lo < hi, accurate in both tails."""

    def direct(a, b):
        la, lb = norm.logcdf(a), norm.logcdf(b)
        return lb + jnp.log(-jnp.expm1(la - lb))

    # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi): use the lower tail, where logcdf is exact.
    return jnp.where(lo > 0, direct(-hi, -lo), direct(lo, hi))


def discretized_gaussian_log_likelihood(x0: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log P(pixel bin of x0) under N(mean, std^2), per pixel.

    Args:
      x0: `[B, ...]` values on the 8-bit grid 2 k / 255 - 1 in [-1, 1].
      mean: `[B, ...]` decoder means.
      std: scalar decoder standard deviation.

    Returns:
      `[B, ...]` log probabilities (<= 0).
    """
    lo = (x0 - _BIN_HALF_WIDTH - mean) / std
    hi = (x0 + _BIN_HALF_WIDTH - mean) / std
    return jnp.where(x0 < -1.0 + _BIN_HALF_WIDTH, norm.logcdf(hi),
                     jnp.where(x0 > 1.0 - _BIN_HALF_WIDTH, norm.logcdf(-lo), _log_cdf_difference(lo, hi)))


def prior_kl(schedule: NoiseSchedule, x0: jax.Array) -> jax.Array:
    """KL(q(x_{T-1} | x0) || N(0, I)) in nats, `[B, ...] -> [B]`."""
    abar = float(schedule.alpha_bars[-1])
    per_dim = 0.5 * (abar * jnp.square(x0) - abar - np.log1p(-abar))
    return jnp.sum(per_dim.reshape(x0.shape[0], -1), axis=1)


def variational_bound(
    predict_x0: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: NoiseSchedule,
    x0: jax.Array,
    key: jax.Array,
    *,
    num_samples: int | None = None,
) -> jax.Array:
    """The negative variational bound, -log p(x0) <= result, in nats `[B]`.

    Args:
      predict_x0: `(x_t [B, ...], t [B] float) -> x0_hat [B, ...]`.
      schedule: the noise schedule.
      x0: `[B, ...]` data on the 8-bit grid in [-1, 1].
      key: PRNG key for the noise and the timesteps.
      num_samples: K timesteps for the sum over t (stratified); None or
        K >= T-1 sums all T-1 terms.

    Returns:
      `[B]` nats (an upper bound on -log P(x0) in expectation).
    """
    x0 = jnp.asarray(x0, jnp.float32)
    batch = x0.shape[0]
    num_t = schedule.num_timesteps
    snr = np.exp(schedule.log_snrs)

    def sum_pixels(v):
        return jnp.sum(v.reshape(batch, -1), axis=1)

    key_dec, key_terms = jax.random.split(key)
    # Decoder term at t = 0: x_0 ~ q, p(x0 | x_0) discretised N(x0_hat, beta_0).
    t0 = jnp.zeros((batch,), jnp.float32)
    x_t0 = schedule.q_sample(x0, t0, jax.random.normal(key_dec, x0.shape))
    decoder_std = float(np.sqrt(schedule.betas[0]))
    decoder_nll = -sum_pixels(discretized_gaussian_log_likelihood(x0, predict_x0(x_t0, t0), decoder_std))
    total = prior_kl(schedule, x0) + decoder_nll
    if num_t < 2:
        return total

    num_terms = num_t - 1
    k = num_terms if num_samples is None or num_samples >= num_terms else int(num_samples)
    strata = np.array_split(np.arange(1, num_t), k)
    starts = jnp.asarray([s[0] for s in strata], jnp.int32)
    sizes = jnp.asarray([len(s) for s in strata], jnp.int32)
    snr_drop = jnp.asarray(snr[:-1] - snr[1:], jnp.float32)  # [T-1]: SNR_{t-1} - SNR_t at index t-1

    def term(acc, inputs):
        i, start, size = inputs
        kt, kn = jax.random.split(jax.random.fold_in(key_terms, i))
        t = start + jax.random.randint(kt, (batch,), 0, size)
        tf = t.astype(jnp.float32)
        x_t = schedule.q_sample(x0, tf, jax.random.normal(kn, x0.shape))
        err = sum_pixels(jnp.square(x0 - predict_x0(x_t, tf).astype(jnp.float32)))
        return acc + size.astype(jnp.float32) * 0.5 * snr_drop[t - 1] * err, None

    kl_sum, _ = jax.lax.scan(term, jnp.zeros((batch,), jnp.float32), (jnp.arange(k), starts, sizes))
    return total + kl_sum
