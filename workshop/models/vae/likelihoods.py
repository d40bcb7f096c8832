"""The decoder distributions p(x | z) of the VAE family, chosen by name.

The decoder network outputs `params` of shape `[B, *input_shape, k]` with
`k = params_per_pixel(kind)`; these functions turn them into per-example
log-likelihoods, reconstruction losses and means, all float32:

* "bernoulli": `params[..., 0]` are logits (Kingma & Welling 2013,
  arXiv:1312.6114, appendix C.1); the usual choice for binarized images.
* "gaussian": `params[..., 0]` is the mean; the standard deviation is fixed
  to `decoder_std` (not learned), so the likelihood is a proper density.
* "mse": the sum of squared errors. Not a likelihood: `log_likelihood`
  refuses it, so models built with it have no `log_prob` or `elbo`.
* "discretized_logistic": `params[..., 0]` the mean and `params[..., 1]` the
  log-scale of a logistic over 256 bins (Salimans et al. 2017,
  arXiv:1701.05517), a valid likelihood of 8-bit data in [0, 1]; the
  log-scale is clamped at -7 as in PixelCNN++.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

from workshop.core import losses

__all__ = [
    "MIN_LOG_SCALE",
    "RECONSTRUCTION_LOSSES",
    "ReconstructionLoss",
    "data_description",
    "decoder_mean",
    "log_likelihood",
    "params_per_pixel",
    "reconstruction_loss",
    "require_likelihood",
]

ReconstructionLoss = Literal["bernoulli", "gaussian", "mse", "discretized_logistic"]
RECONSTRUCTION_LOSSES: tuple[str, ...] = get_args(ReconstructionLoss)
MIN_LOG_SCALE = -7.0
_NUM_BINS = 256


def _check(kind: str) -> None:
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"reconstruction_loss {kind!r} is unknown; known: {', '.join(RECONSTRUCTION_LOSSES)}")


def data_description(kind: str) -> str:
    """What the decoder's likelihood is a likelihood of, for the label beside a test-set figure."""
    _check(kind)
    return {
        "bernoulli": "binary data (binarized images): the Bernoulli probability mass",
        "discretized_logistic": "8-bit images: the discretized logistic mass of each 1/255 bin",
        "gaussian": "continuous data: the Gaussian density with the fixed decoder_std (no dequantisation)",
        "mse": "none: the squared error is not a likelihood (log_prob refuses it)",
    }[kind]


def params_per_pixel(kind: str) -> int:
    """Decoder outputs per data dimension: 2 for the logistic, else 1."""
    _check(kind)
    return 2 if kind == "discretized_logistic" else 1


def require_likelihood(kind: str, model_type: str, what: str = "log_prob") -> None:
    """Raises a ValueError when `kind` defines no likelihood (only "mse")."""
    _check(kind)
    if kind == "mse":
        raise ValueError(
            f"{what} is undefined for model_type {model_type!r} with reconstruction_loss='mse': a sum of squared "
            "errors is not a likelihood. Use 'gaussian' (fixed decoder_std), 'bernoulli' or "
            "'discretized_logistic' to evaluate log-likelihoods."
        )


def log_likelihood(kind: str, params: jax.Array, x: jax.Array, *, decoder_std: float) -> jax.Array:
    """log p(x | z) per example.

    Args:
      kind: one of `RECONSTRUCTION_LOSSES` except "mse".
      params: `[B, *input_shape, k]` decoder outputs.
      x: `[B, *input_shape]` data in [0, 1].
      decoder_std: standard deviation of the "gaussian" decoder.

    Returns:
      `[B]` nats.
    """
    require_likelihood(kind, "this model", "log_likelihood")
    params = params.astype(jnp.float32)
    if kind == "bernoulli":
        return losses.bernoulli_log_likelihood(params[..., 0], x)
    if kind == "gaussian":
        return losses.gaussian_log_likelihood(x, params[..., 0], jnp.log(jnp.float32(decoder_std)))
    log_scale = jnp.maximum(params[..., 1], MIN_LOG_SCALE)
    return losses.discretized_logistic_log_likelihood(x, params[..., 0], log_scale, num_bins=_NUM_BINS)


def reconstruction_loss(kind: str, params: jax.Array, x: jax.Array, *, decoder_std: float) -> jax.Array:
    """-log p(x | z), or the sum of squared errors for "mse": `[B]`."""
    _check(kind)
    if kind == "mse":
        return losses.squared_error(x, params[..., 0])
    return -log_likelihood(kind, params, x, decoder_std=decoder_std)


def decoder_mean(kind: str, params: jax.Array) -> jax.Array:
    """The decoder's mean image `[B, *input_shape]` in [0, 1].

    sigmoid(logits) for "bernoulli"; otherwise the location clipped to the
    data range (the mean of a discretized logistic with its edge bins, or of a
    Gaussian, can leave [0, 1] only through the clipped tails).
    """
    _check(kind)
    params = params.astype(jnp.float32)
    if kind == "bernoulli":
        return jax.nn.sigmoid(params[..., 0])
    return jnp.clip(params[..., 0], 0.0, 1.0)
