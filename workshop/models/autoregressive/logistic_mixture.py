"""A mixture of discretized logistics per value (Salimans et al. 2017, PixelCNN++).

Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN
with Discretized Logistic Mixture Likelihood and Other Modifications"
(arXiv:1701.05517), section 2.1. Each value (one channel of one pixel) has M
components with mixture logits, means (data units, [0, 1]) and log-scales
(clamped at -7 as in PixelCNN++); the bin probabilities come from
`workshop.core.losses.discretized_logistic_log_likelihood`, whose edge bins
take the tails so that the `num_levels` probabilities sum to one.

Unlike PixelCNN++, the colour channels of a pixel do not share a mixture
indicator with linear coefficients: each channel has its own mixture, and a
channel sees the earlier channels of its pixel through the masked network
instead (see `masked_conv.py`). The likelihood stays exact.

Parameters are laid out `[..., 3M]` as (logits, means, log_scales).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from workshop.core import losses

__all__ = ["MIN_LOG_SCALE", "mixture_log_prob", "mixture_sample", "split_mixture_params"]

MIN_LOG_SCALE = -7.0


def split_mixture_params(params: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`[..., 3M]` -> (logits, means, log_scales), each `[..., M]` float32."""
    params = params.astype(jnp.float32)
    logits, means, log_scales = jnp.split(params, 3, axis=-1)
    return logits, means, jnp.maximum(log_scales, MIN_LOG_SCALE)


def mixture_log_prob(params: jax.Array, levels: jax.Array, num_levels: int) -> jax.Array:
    """log P(level) of each value.

    Args:
      params: `[..., 3M]` mixture parameters.
      levels: `[...]` integers in `[0, num_levels)`.
      num_levels: number of bins.

    Returns:
      `[...]` nats.
    """
    logits, means, log_scales = split_mixture_params(params)
    x = jnp.broadcast_to((levels.astype(jnp.float32) / (num_levels - 1))[..., None], means.shape)
    # The shared likelihood sums over all but the leading axis: one row per (value, component).
    flat = losses.discretized_logistic_log_likelihood(
        x.reshape(-1, 1), means.reshape(-1, 1), log_scales.reshape(-1, 1), num_bins=num_levels
    ).reshape(means.shape)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + flat, axis=-1)


def mixture_sample(key: jax.Array, params: jax.Array, num_levels: int, *, temperature: float = 1.0) -> jax.Array:
    """One level per value: pick a component, draw a logistic, round to the nearest bin.

    Temperature divides the mixture logits and multiplies the scales; 0 takes
    the most likely component's mean.

    Args:
      key: PRNG key.
      params: `[..., 3M]`.

    Returns:
      `[...]` int32 in `[0, num_levels)`.
    """
    logits, means, log_scales = split_mixture_params(params)
    k_comp, k_noise = jax.random.split(key)
    if temperature == 0.0:
        component = jnp.argmax(logits, axis=-1)
        value = jnp.take_along_axis(means, component[..., None], axis=-1)[..., 0]
    else:
        component = jax.random.categorical(k_comp, logits / temperature, axis=-1)
        mean = jnp.take_along_axis(means, component[..., None], axis=-1)[..., 0]
        log_scale = jnp.take_along_axis(log_scales, component[..., None], axis=-1)[..., 0]
        u = jax.random.uniform(k_noise, mean.shape, minval=1e-5, maxval=1.0 - 1e-5)
        value = mean + temperature * jnp.exp(log_scale) * (jnp.log(u) - jnp.log1p(-u))
    top = num_levels - 1
    return jnp.clip(jnp.round(value * top), 0, top).astype(jnp.int32)
