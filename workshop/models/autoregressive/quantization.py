"""Discrete data for autoregressive models: image levels, token checks, mu-law.

Autoregressive models here are categorical over a finite alphabet, so their
inputs must be integers in range. The data pipeline feeds images as float32
`k / (num_levels - 1)` in [0, 1] (binarized images: {0, 1}); these helpers turn
them into integer levels and back, and check token sequences. The checks run
eagerly only: under `jax.jit` the values are unknown, so a traced array passes
through unchecked (evaluate or call the model eagerly once to catch bad data).

mu-law companding follows the ITU-T G.711 recommendation as used by WaveNet
(van den Oord et al. 2016, arXiv:1609.03499, section 2.2):
f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), quantized to mu + 1 levels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_sequence_length",
    "check_token_array",
    "check_tokens",
    "image_to_levels",
    "levels_to_image",
    "mu_law_decode",
    "mu_law_encode",
]

# A float image is accepted when every value is within this many levels of a level.
_LEVEL_TOLERANCE = 1e-2


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def image_to_levels(x: jax.Array, num_levels: int, *, model_name: str = "this model") -> jax.Array:
    """Integer levels of an image batch.

    Args:
      x: `[B, ...]` floats in [0, 1] holding multiples of `1 / (num_levels - 1)`
        (the pipeline's `k / 255`, or {0, 1} when binarized), or integers in
        `[0, num_levels)`.
      num_levels: size of the alphabet (256 for 8-bit data, 2 for binarized).
      model_name: named in error messages.

    Returns:
      `[B, ...]` int32 in `[0, num_levels)`.

    Raises:
      ValueError: (eager arrays only) a value outside the range, or a float
        that is not one of the `num_levels` levels; the message names it.
    """
    x = jnp.asarray(x)
    top = num_levels - 1
    if jnp.issubdtype(x.dtype, jnp.integer):
        if _concrete(x):
            _check_int_range(np.asarray(x), num_levels, f"{model_name}: image levels")
        return x.astype(jnp.int32)
    if _concrete(x):
        values = np.asarray(x, np.float64)
        bad = ~((values >= 0.0) & (values <= 1.0))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{model_name} models {num_levels} levels and takes images with values in [0, 1] "
                f"(k/{top}); got {float(values[idx])!r} at index {idx}"
            )
        scaled = values * top
        off = np.abs(scaled - np.round(scaled))
        if off.max() > _LEVEL_TOLERANCE:
            idx = tuple(int(i) for i in np.argwhere(off == off.max())[0])
            hint = " (binarize the data, e.g. data.image.binarize='dynamic')" if num_levels == 2 else ""
            raise ValueError(
                f"{model_name} models {num_levels} levels: image values must be multiples of 1/{top}; "
                f"got {float(values[idx])!r} at index {idx}{hint}"
            )
    return jnp.clip(jnp.round(x.astype(jnp.float32) * top), 0, top).astype(jnp.int32)


def levels_to_image(levels: jax.Array, num_levels: int) -> jax.Array:
    """`[B, ...]` integer levels -> float32 in [0, 1] (`k / (num_levels - 1)`)."""
    return levels.astype(jnp.float32) / (num_levels - 1)


def _check_int_range(values: np.ndarray, size: int, what: str) -> None:
    if values.size == 0:
        return
    bad = (values < 0) | (values >= size)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} must lie in [0, {size}); got {int(values[idx])} at index {idx}")


def check_sequence_length(length: int, max_length: int, *, model_name: str = "this model") -> None:
    """Raises a ValueError when a sequence of `length` exceeds `max_length`."""
    if length > max_length:
        raise ValueError(
            f"{model_name}: sequence length {length} exceeds max_length {max_length}; "
            "build the model with a larger max_length or cut the sequences"
        )


def check_tokens(tokens: jax.Array, vocab_size: int, *, model_name: str = "this model") -> jax.Array:
    """Checks integer tokens `[B, T]` lie in `[0, vocab_size)` (eagerly); returns them as int32.

    Raises:
      ValueError: float tokens, or (eager arrays only) a token outside the
        vocabulary; the message names the token and its index.
    """
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{model_name}: tokens must be integers, got dtype {tokens.dtype}")
    if _concrete(tokens):
        _check_int_range(np.asarray(tokens), vocab_size, f"{model_name}: tokens (vocab_size {vocab_size})")
    return tokens.astype(jnp.int32)


def check_token_array(tokens, vocab_size: int, *, max_length: int | None = None,
                      model_name: str = "this model") -> None:
    """Checks a whole host array of token ids `[N, T]` (e.g. a training set) before it is traced.

    Inside a compiled train step the values are unknown, so an id outside the
    vocabulary cannot be named there (it would only turn the loss into NaN);
    this check runs on numpy, without a device transfer.

    Raises:
      ValueError: not `[N, T]`, T > `max_length`, float ids, or an id outside
        `[0, vocab_size)`; the message names the first bad id and its index.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"{model_name} expects token ids [N, T], got shape {tokens.shape}")
    if max_length is not None:
        check_sequence_length(tokens.shape[1], max_length, model_name=model_name)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{model_name}: tokens must be integers, got dtype {tokens.dtype}")
    _check_int_range(tokens, vocab_size, f"{model_name}: tokens (vocab_size {vocab_size})")


def mu_law_encode(audio: jax.Array, num_levels: int = 256) -> jax.Array:
    """Waveform in [-1, 1] -> int32 mu-law codes in `[0, num_levels)`, mu = num_levels - 1.

    Args:
      audio: `[...]` floats in [-1, 1] (clipped).
      num_levels: number of codes (256 in WaveNet).
    """
    mu = num_levels - 1
    x = jnp.clip(jnp.asarray(audio, jnp.float32), -1.0, 1.0)
    companded = jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / jnp.log1p(float(mu))
    # Round half up, as workshop.data.datasets.audio.mu_law_encode, so both give the same codes.
    return jnp.clip(jnp.floor((companded + 1.0) / 2.0 * mu + 0.5), 0, mu).astype(jnp.int32)


def mu_law_decode(codes: jax.Array, num_levels: int = 256) -> jax.Array:
    """int mu-law codes `[...]` -> float32 waveform in [-1, 1] (inverse of `mu_law_encode` up to rounding)."""
    mu = num_levels - 1
    companded = 2.0 * codes.astype(jnp.float32) / mu - 1.0
    return jnp.sign(companded) * jnp.expm1(jnp.abs(companded) * jnp.log1p(float(mu))) / mu
