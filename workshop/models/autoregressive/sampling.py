"""Drawing one token from categorical logits: temperature, top-k and nucleus (top-p).

* Temperature divides the logits (Ackley, Hinton & Sejnowski 1985); 0 means
  greedy (argmax).
* Top-k keeps the k most likely tokens (Fan, Lewis & Dauphin 2018,
  arXiv:1805.04833).
* Top-p keeps the smallest set of most likely tokens whose probability reaches
  p (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration",
  arXiv:1904.09751).

All three compose (temperature first, then top-k, then top-p) and work under
`jax.jit` with static settings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_sampling_settings", "filter_logits", "sample_categorical"]


def check_sampling_settings(temperature: float, top_k: int | None, top_p: float | None, vocab_size: int) -> None:
    """Raises a ValueError naming a bad temperature, top_k or top_p."""
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and not 1 <= int(top_k) <= vocab_size:
        raise ValueError(f"top_k must lie in [1, {vocab_size}], got {top_k}")
    if top_p is not None and not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def filter_logits(logits: jax.Array, *, top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """Sets the logits outside the top-k / top-p set to -inf.

    Args:
      logits: `[..., V]` float.
      top_k: keep the k largest logits (None: all).
      top_p: keep the smallest prefix of the sorted distribution whose mass
        reaches `top_p` (the most likely token is always kept).

    Returns:
      `[..., V]` float32.
    """
    logits = logits.astype(jnp.float32)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, int(top_k))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # The smallest logit still inside the nucleus is the threshold.
        inside = mass_before < top_p
        threshold = jnp.min(jnp.where(inside, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample_categorical(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """One draw per row of `logits` `[..., V]`: int32 `[...]`."""
    if temperature == 0.0:
        return jnp.argmax(filter_logits(logits, top_k=top_k, top_p=top_p), axis=-1).astype(jnp.int32)
    logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
