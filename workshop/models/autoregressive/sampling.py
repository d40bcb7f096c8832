"""Drawing one token from categorical logits: temperature, top-k and nucleus (top-p).

* Temperature divides the logits (Ackley, Hinton & Sejnowski 1985); 0 means
  greedy (argmax).
* Top-k keeps the k most likely tokens (Fan, Lewis & Dauphin 2018,
  arXiv:1805.04833).
* Top-p keeps the smallest set of most likely tokens whose probability reaches
  p (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration",
  arXiv:1904.09751).

All three compose (temperature first, then top-k, then top-p) and work under
`jax.jit` with static settings. `broadcast_prompt` shapes the prompt (known
first values) that the models' `generate` continues, and `prompted_draw` is
the draw of one generation step: the prompt's value while the step is inside
it, else a sample. Sample i draws with keys from `fold_in(key, i)`
(`sample_keys`), so it depends only on the key and i, not on how many
samples are drawn with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["broadcast_prompt", "check_sampling_settings", "filter_logits", "prompt_values", "prompted_draw",
           "sample_categorical", "sample_keys", "step_keys"]


def check_sampling_settings(temperature: float, top_k: int | None, top_p: float | None, vocab_size: int) -> None:
    """Raises a ValueError naming a bad temperature, top_k or top_p."""
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and not 1 <= int(top_k) <= vocab_size:
        raise ValueError(f"top_k must lie in [1, {vocab_size}], got {top_k}")
    if top_p is not None and not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def broadcast_prompt(prompt, n_samples: int, item_ndim: int, *, what: str) -> jax.Array:
    """One prompt for every sample, or one per sample: `[...]` or `[n_samples, ...]` -> `[n_samples, ...]`.

    Args:
      prompt: an array with `item_ndim` dimensions (shared by all samples) or
        `item_ndim + 1` (its first axis `n_samples`).
      n_samples: the number of samples generated.
      item_ndim: dimensions of one sample's prompt (1 for sequences, 3 for image rows).
      what: how the error names the expected shape, e.g. "[P] or [n_samples, P] token ids".

    Raises:
      ValueError: another number of dimensions, or a first axis that is not `n_samples`.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim == item_ndim:
        return jnp.broadcast_to(prompt[None], (n_samples, *prompt.shape))
    if prompt.ndim != item_ndim + 1 or prompt.shape[0] != n_samples:
        raise ValueError(f"prompt must be {what}; got shape {tuple(prompt.shape)} for n_samples={n_samples}")
    return prompt


def prompt_values(prompt: jax.Array, t: jax.Array, drawn: jax.Array) -> jax.Array:
    """The prompt's value at step `t` while `t` is inside it, else `drawn`.

    Args:
      prompt: `[B, P]` known values in generation order (P may be 0).
      t: scalar step.
      drawn: `[B]` the values sampled at step t.

    Returns:
      `[B]`, the same dtype as `drawn`.
    """
    length = prompt.shape[1]
    if length == 0:
        return drawn
    known = jax.lax.dynamic_index_in_dim(prompt, jnp.minimum(t, length - 1), axis=1, keepdims=False)
    return jnp.where(t < length, known.astype(drawn.dtype), drawn)


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


def sample_keys(key: jax.Array, n_samples: int) -> jax.Array:
    """`fold_in(key, i)` for each sample i: `[n_samples, 2]`."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_samples))


def step_keys(keys: jax.Array, t: jax.Array) -> jax.Array:
    """Each sample's key of generation step `t`: `[B, 2] -> [B, 2]`."""
    return jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)


def prompted_draw(key: jax.Array, n_samples: int, prompt: jax.Array, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None):
    """`draw(t, logits [B, V]) -> [B]` int32: step t's prompt values while t < P, else categorical draws.

    Args:
      key: the sampling key; sample i draws with `fold_in(fold_in(key, i), t)`.
      n_samples: B.
      prompt: `[B, P]` known values in generation order (P may be 0).
      temperature, top_k, top_p: see `sample_categorical`.
    """
    keys = sample_keys(key, n_samples)

    def draw(t: jax.Array, logits: jax.Array) -> jax.Array:
        drawn = jax.vmap(lambda k, l: sample_categorical(k, l, temperature=temperature, top_k=top_k,
                                                         top_p=top_p))(step_keys(keys, t), logits)
        return prompt_values(prompt, t, drawn)

    return draw
