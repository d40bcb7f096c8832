"""Causal multi-head self-attention with a key/value cache and optional rotary positions.

Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762), masked
to the past for decoding; rotary position embeddings from Su et al. 2021,
"RoFormer: Enhanced Transformer with Rotary Position Embedding"
(arXiv:2104.09864), applied to queries and keys.

Flax's `nnx.MultiHeadAttention` has a cache (`decode=True`, `init_cache`) but
stores keys before any position-dependent transform, so rotary keys could not
be cached; this layer keeps Flax's projections (`nnx.LinearGeneral`) and
attention (`nnx.dot_product_attention`) and holds the cache as an explicit
pytree, which also lets decoding run inside `lax.scan` without mutating modules.

Attention dropout (on the attention weights, as in Vaswani et al. 2017,
section 5.4) applies in training mode only: `model.eval()` sets
`deterministic`, and cached decoding never drops.

Shapes: activations `[B, T, D]`; cache keys and values `[B, max_length, H, D/H]`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["CausalSelfAttention", "KVCache", "apply_rotary", "check_decode_position"]

PositionKind = Literal["learned", "rotary"]


class KVCache(NamedTuple):
    """Keys and values of the positions decoded so far: `[B, max_length, H, D/H]` each."""

    keys: jax.Array
    values: jax.Array


def check_decode_position(index, max_length: int, *, model_name: str = "attention") -> None:
    """Refuses a decoding position outside `[0, max_length)`, when it is known.

    Past the cache a learned position embedding reads out of range (NaN
    logits) and a cache write is clamped onto the last slot, silently
    overwriting it. Only a concrete `index` can be checked: inside
    `jax.jit` / `lax.scan` it is a traced value, and the loop that makes it
    must bound it statically (as `generate` does, checking its length first).

    Raises:
      ValueError: naming the position and `max_length`.
    """
    if isinstance(index, jax.core.Tracer):
        return
    position = int(index) if isinstance(index, int) else int(np.asarray(index).reshape(()))
    if not 0 <= position < max_length:
        raise ValueError(f"{model_name}: decode position {position} is outside [0, max_length={max_length}); "
                         "the key/value cache holds max_length positions (raise parameters.max_length to "
                         "decode longer sequences)")


def apply_rotary(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotates feature pairs (i, i + d/2) of `x` `[B, T, H, d]` by `positions[t] * base^(-2i/d)`."""
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * freqs[None, :]  # [T, half]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class CausalSelfAttention(nnx.Module):
    """Self-attention where position t sees positions <= t.

    Args:
      features: model width D.
      num_heads: H (D must be divisible by H; D/H even for rotary positions).
      positions: "rotary" rotates queries and keys; "learned" leaves them (the
        model adds position embeddings to its inputs).
      dropout_rate: dropout on the attention weights in training mode.
      rngs: `params` stream (or default).
    """

    def __init__(self, features: int, num_heads: int, *, positions: PositionKind = "learned",
                 dropout_rate: float = 0.0, rngs: nnx.Rngs):
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        if features % num_heads:
            raise ValueError(f"embed_dim ({features}) must be divisible by num_heads ({num_heads})")
        head_dim = features // num_heads
        if positions == "rotary" and head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension, got {head_dim}")
        policy = get_precision_policy()
        kw = {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype, "rngs": rngs}
        self.num_heads, self.head_dim, self.rotary = num_heads, head_dim, positions == "rotary"
        self.dropout_rate = float(dropout_rate)
        self.deterministic = False  # as nnx.Dropout: model.eval() sets it, model.train() clears it
        self.qkv = nnx.LinearGeneral(features, (3, num_heads, head_dim), **kw)
        self.out = nnx.LinearGeneral((num_heads, head_dim), features, axis=(-2, -1), **kw)

    def _project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        qkv = self.qkv(x)  # [B, T, 3, H, d]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rotary:
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)
        return q, k, v

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, deterministic: bool | None = None) -> jax.Array:
        """Full causal pass: `[B, T, D] -> [B, T, D]`.

        Args:
          x: `[B, T, D]`.
          rngs: its `dropout` stream (or default) draws the dropout mask when
            dropping (training mode and `dropout_rate` > 0).
          deterministic: overrides the mode (`self.deterministic`) when given.
        """
        length = x.shape[1]
        q, k, v = self._project(x, jnp.arange(length))
        mask = nnx.make_causal_mask(jnp.ones((x.shape[0], length)))  # [B, 1, T, T]
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.dropout_rate == 0.0 or deterministic:
            return self.out(nnx.dot_product_attention(q, k, v, mask=mask))
        if rngs is None:
            raise ValueError(f"attention dropout (rate {self.dropout_rate}) in training mode needs rngs=; "
                             "call model.eval() for deterministic outputs")
        out = nnx.dot_product_attention(q, k, v, mask=mask, dropout_rng=rngs.dropout(),
                                        dropout_rate=self.dropout_rate, deterministic=False)
        return self.out(out)

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        """An empty cache for `max_length` positions."""
        dtype = dtype or self.qkv.dtype or jnp.float32
        shape = (batch_size, max_length, self.num_heads, self.head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def decode(self, x: jax.Array, cache: KVCache, index: jax.Array) -> tuple[jax.Array, KVCache]:
        """One position: `x` `[B, 1, D]` at position `index` attends to the cache and itself.

        `index` must lie in `[0, max_length)` of the cache; a concrete one
        outside is refused (`check_decode_position`), a traced one is the
        caller's to bound.

        Returns:
          `[B, 1, D]` and the cache with this position's key and value written.
        """
        check_decode_position(index, cache.keys.shape[1])
        q, k, v = self._project(x, jnp.reshape(index, (1,)))
        keys = jax.lax.dynamic_update_slice_in_dim(cache.keys, k.astype(cache.keys.dtype), index, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(cache.values, v.astype(cache.values.dtype), index, axis=1)
        max_length = keys.shape[1]
        mask = jnp.broadcast_to(jnp.arange(max_length) <= index, (x.shape[0], 1, 1, max_length))
        out = nnx.dot_product_attention(q, keys, values, mask=mask)
        return self.out(out), KVCache(keys, values)
