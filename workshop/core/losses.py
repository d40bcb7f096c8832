"""Shared likelihoods and divergences, per example, in nats.

Every function takes batched arrays `[B, ...]` and returns `[B]` float32: the
log-density (or divergence, or error) summed over all non-batch axes. Inputs
are cast to float32 first, so a model that computes in bfloat16 still gets its
loss in float32 (Micikevicius et al. 2018, arXiv:1710.03740).

* Gaussian reparameterised latents and their KL terms follow Kingma & Welling
  2013, "Auto-Encoding Variational Bayes" (arXiv:1312.6114), appendix B.
* `discretized_logistic_log_likelihood` follows Salimans, Karpathy, Chen &
  Kingma 2017, "PixelCNN++" (arXiv:1701.05517), section 2.1: the probability
  of a pixel's bin under a logistic, with the edge bins taking the tails.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "bernoulli_log_likelihood",
    "discretized_logistic_log_likelihood",
    "gaussian_log_likelihood",
    "kl_diagonal_gaussians",
    "kl_standard_normal",
    "log_normal_diag",
    "log_standard_normal",
    "squared_error",
    "sum_except_batch",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _f32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def sum_except_batch(x: jax.Array) -> jax.Array:
    """Sums over all axes but the first.

    Args:
      x: `[B, ...]`.

    Returns:
      `[B]` float32 (for `[B]` input, `x` itself).
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 0:
        raise ValueError("sum_except_batch needs an array with a leading batch axis, got a scalar")
    return x.reshape(x.shape[0], -1).sum(axis=-1)


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log Bernoulli(x; sigmoid(logits)), stable for any logit.

    Uses x*l - softplus(l) = x log sigmoid(l) + (1 - x) log sigmoid(-l), which
    never takes the log of a probability that underflowed. For x in [0, 1]
    (grey levels) it is the negative binary cross-entropy.

    Args:
      logits: `[B, ...]` decoder logits.
      x: `[B, ...]` targets in {0, 1} or [0, 1].

    Returns:
      `[B]` log-likelihood in nats.
    """
    logits, x = _f32(logits, x)
    return sum_except_batch(x * logits - jax.nn.softplus(logits))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log N(x; mean, exp(log_std)^2), with the full normalising constant.

    Args:
      x: `[B, ...]`.
      mean: `[B, ...]` (or broadcastable).
      log_std: `[B, ...]` or broadcastable (a scalar for a fixed std).

    Returns:
      `[B]` log-density in nats.
    """
    x, mean, log_std = _f32(x, mean, log_std)
    z = (x - mean) * jnp.exp(-log_std)
    return sum_except_batch(-0.5 * _LOG_2PI - log_std - 0.5 * jnp.square(z))


def discretized_logistic_log_likelihood(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array, num_bins: int = 256
) -> jax.Array:
    """log P(x) for x in [0, 1] holding the values k / (num_bins - 1).

    The probability of bin k is the logistic mass on [x - h, x + h] with
    h = 1 / (2 (num_bins - 1)); bin 0 takes (-inf, h] and the last bin
    [1 - h, inf), so the probabilities of all bins sum to one (PixelCNN++,
    arXiv:1701.05517). The interior mass is computed as
    log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)),
    exact and stable in both tails, without the PixelCNN++ fallback to the
    density. Clamp `log_scale` from below in the model (PixelCNN++ uses -7)
    to keep the gradients of confident bins bounded.

    Args:
      x: `[B, ...]` in [0, 1], multiples of 1 / (num_bins - 1).
      mean: `[B, ...]` location of the logistic, data units.
      log_scale: `[B, ...]` log of the logistic scale.
      num_bins: number of levels (256 for 8-bit data).

    Returns:
      `[B]` log-probability in nats.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    x, mean, log_scale = _f32(x, mean, log_scale)
    half_bin = 0.5 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    upper = inv_scale * (x - mean + half_bin)
    lower = inv_scale * (x - mean - half_bin)
    log_cdf_upper = -jax.nn.softplus(-upper)  # log sigmoid(upper): first bin
    log_survival_lower = -jax.nn.softplus(lower)  # log(1 - sigmoid(lower)): last bin
    # upper - lower = 2 h / scale > 0, so expm1 is negative and the log finite.
    log_mass = log_cdf_upper + log_survival_lower + jnp.log(-jnp.expm1(lower - upper))
    log_probs = jnp.where(
        x < half_bin, log_cdf_upper, jnp.where(x > 1.0 - half_bin, log_survival_lower, log_mass)
    )
    return sum_except_batch(log_probs)


def log_normal_diag(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))).

    Args:
      z, mean, logvar: `[B, ...]` (broadcastable).

    Returns:
      `[B]` log-density in nats.
    """
    z, mean, logvar = _f32(z, mean, logvar)
    return sum_except_batch(-0.5 * (_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar)))


def log_standard_normal(z: jax.Array) -> jax.Array:
    """log N(z; 0, I). `[B, ...] -> [B]`."""
    (z,) = _f32(z)
    return sum_except_batch(-0.5 * (_LOG_2PI + jnp.square(z)))


def kl_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)), Kingma & Welling 2013 appendix B.

    Args:
      mean, logvar: `[B, ...]`.

    Returns:
      `[B]` KL in nats.
    """
    mean, logvar = _f32(mean, logvar)
    return sum_except_batch(0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar))


def kl_diagonal_gaussians(
    mean_q: jax.Array, logvar_q: jax.Array, mean_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
    """KL(N(mean_q, diag(exp(logvar_q))) || N(mean_p, diag(exp(logvar_p)))).

    Args:
      mean_q, logvar_q, mean_p, logvar_p: `[B, ...]` (broadcastable).

    Returns:
      `[B]` KL in nats.
    """
    mean_q, logvar_q, mean_p, logvar_p = _f32(mean_q, logvar_q, mean_p, logvar_p)
    ratio = (jnp.exp(logvar_q) + jnp.square(mean_q - mean_p)) * jnp.exp(-logvar_p)
    return sum_except_batch(0.5 * (logvar_p - logvar_q + ratio - 1.0))


def squared_error(x: jax.Array, y: jax.Array) -> jax.Array:
    """Sum of squared differences per example: `[B, ...] -> [B]`.

    Not a log-likelihood: it equals -log N(x; y, 1/2) up to the constant
    D/2 log(pi) for D dimensions.
    """
    x, y = _f32(x, y)
    return sum_except_batch(jnp.square(x - y))


# Adversarial losses (non-saturating, hinge, Wasserstein with gradient penalty)
# join this module together with the GAN family, so that GANs and any other
# family that needs a discriminator term share one copy.
