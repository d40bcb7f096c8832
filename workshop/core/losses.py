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
    "ADVERSARIAL_LOSSES",
    "bernoulli_log_likelihood",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "hinge_discriminator_loss",
    "least_squares_discriminator_loss",
    "least_squares_generator_loss",
    "non_saturating_discriminator_loss",
    "non_saturating_generator_loss",
    "r1_penalty",
    "wasserstein_discriminator_loss",
    "wasserstein_generator_loss",
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



# --------------------------------------------------------------------------
# Adversarial losses and discriminator regularisers.
#
# Each loss takes the discriminator's raw scores (logits for the
# non-saturating loss, critic values otherwise) of real and generated
# examples, `[B]` each, and returns the per-example loss `[B]` float32; the
# caller averages. The pairs are:
#
# * "non-saturating": Goodfellow et al. 2014, "Generative Adversarial Nets"
#   (arXiv:1406.2661), with the generator maximising log D(G(z)) (section 3).
# * "wasserstein": Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN"
#   (arXiv:1701.07875); with `gradient_penalty`, WGAN-GP of Gulrajani et al.
#   2017 (arXiv:1704.00028).
# * "hinge": Lim & Ye 2017, "Geometric GAN" (arXiv:1705.02894), the loss of
#   SN-GAN (Miyato et al. 2018, arXiv:1802.05957).
# * "least-squares": Mao et al. 2017, "Least Squares Generative Adversarial
#   Networks" (arXiv:1611.04076), the 0-1 coding (a=0, b=1, c=1) of eq. 9.

ADVERSARIAL_LOSSES = ("non-saturating", "wasserstein", "hinge", "least-squares")


def non_saturating_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) = softplus(-real) + softplus(fake): `[B], [B] -> [B]`."""
    real_logits, fake_logits = _f32(real_logits, fake_logits)
    return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """-log sigmoid(D(G(z))) = softplus(-fake): `[B] -> [B]`."""
    (fake_logits,) = _f32(fake_logits)
    return jax.nn.softplus(-fake_logits)


def wasserstein_discriminator_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """The critic minimises D(G(z)) - D(x): `[B], [B] -> [B]`.

    Its negative batch mean is the critic's estimate of the Wasserstein-1
    distance (up to the Lipschitz constant the penalty enforces).
    """
    real_scores, fake_scores = _f32(real_scores, fake_scores)
    return fake_scores - real_scores


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """-D(G(z)): `[B] -> [B]`."""
    (fake_scores,) = _f32(fake_scores)
    return -fake_scores


def hinge_discriminator_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))): `[B], [B] -> [B]`."""
    real_scores, fake_scores = _f32(real_scores, fake_scores)
    return jax.nn.relu(1.0 - real_scores) + jax.nn.relu(1.0 + fake_scores)


def least_squares_discriminator_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """(D(x) - 1)^2 / 2 + D(G(z))^2 / 2: `[B], [B] -> [B]`."""
    real_scores, fake_scores = _f32(real_scores, fake_scores)
    return 0.5 * jnp.square(real_scores - 1.0) + 0.5 * jnp.square(fake_scores)


def least_squares_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """(D(G(z)) - 1)^2 / 2: `[B] -> [B]`."""
    (fake_scores,) = _f32(fake_scores)
    return 0.5 * jnp.square(fake_scores - 1.0)


_DISCRIMINATOR_LOSSES = {
    "non-saturating": non_saturating_discriminator_loss,
    "wasserstein": wasserstein_discriminator_loss,
    "hinge": hinge_discriminator_loss,
    "least-squares": least_squares_discriminator_loss,
}
# The hinge generator loss of Lim & Ye and Miyato et al. is the Wasserstein one.
_GENERATOR_LOSSES = {
    "non-saturating": non_saturating_generator_loss,
    "wasserstein": wasserstein_generator_loss,
    "hinge": wasserstein_generator_loss,
    "least-squares": least_squares_generator_loss,
}


def _adversarial(table: dict, kind: str):
    if kind not in table:
        raise ValueError(f"adversarial loss {kind!r} is unknown; known: {', '.join(ADVERSARIAL_LOSSES)}")
    return table[kind]


def discriminator_loss(kind: str, real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """The discriminator's loss named `kind` (one of `ADVERSARIAL_LOSSES`): `[B], [B] -> [B]`.

    Raises:
      ValueError: `kind` is unknown (the message lists the known ones).
    """
    return _adversarial(_DISCRIMINATOR_LOSSES, kind)(real_scores, fake_scores)


def generator_loss(kind: str, fake_scores: jax.Array) -> jax.Array:
    """The generator's loss named `kind` (one of `ADVERSARIAL_LOSSES`): `[B] -> [B]`.

    Raises:
      ValueError: `kind` is unknown (the message lists the known ones).
    """
    return _adversarial(_GENERATOR_LOSSES, kind)(fake_scores)


def _input_gradients(critic_fn, x: jax.Array) -> jax.Array:
    # Examples are scored independently, so the gradient of the batch sum
    # holds each example's own input gradient.
    return jax.grad(lambda v: jnp.sum(jnp.asarray(critic_fn(v), jnp.float32)))(x)


def gradient_penalty(critic_fn, real: jax.Array, fake: jax.Array, key: jax.Array, *, target: float = 1.0) -> jax.Array:
    """The two-sided penalty of WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028, eq. 3).

    (||grad_x D(x_hat)||_2 - target)^2 at x_hat = e x + (1 - e) G(z), with one
    e ~ U[0, 1] per example, which pushes the critic towards 1-Lipschitz
    along lines between real and generated points.

    Args:
      critic_fn: `[B, ...] -> [B]` scores; examples must not interact (no
        batch normalisation).
      real, fake: `[B, ...]` real and generated examples.
      key: PRNG key for the interpolation weights.
      target: the gradient norm aimed at (1 in the paper).

    Returns:
      `[B]` float32 penalties (not yet weighted by lambda).
    """
    real, fake = _f32(real, fake)
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), jnp.float32)
    x_hat = eps * real + (1.0 - eps) * fake
    grads = _input_gradients(critic_fn, x_hat)
    norms = jnp.sqrt(sum_except_batch(jnp.square(grads)) + 1e-12)
    return jnp.square(norms - target)


def r1_penalty(critic_fn, real: jax.Array) -> jax.Array:
    """||grad_x D(x)||_2^2 on real data (Mescheder, Geiger & Nowozin 2018, arXiv:1801.04406, eq. 9).

    The paper's regulariser is gamma / 2 times the batch mean of this value.

    Args:
      critic_fn: `[B, ...] -> [B]` scores of independent examples.
      real: `[B, ...]` real examples.

    Returns:
      `[B]` float32 squared gradient norms.
    """
    (real,) = _f32(real)
    return sum_except_batch(jnp.square(_input_gradients(critic_fn, real)))
