"""Sinusoidal embeddings of (diffusion) timesteps and the MLP on top of them.

The sinusoidal features of Vaswani et al. 2017 ("Attention Is All You Need",
arXiv:1706.03762) applied to a scalar timestep, as in the DDPM U-Net (Ho,
Jain & Abbeel 2020, arXiv:2006.11239) and DiT (Peebles & Xie 2023,
arXiv:2212.09748): `[cos(t w_k), sin(t w_k)]` with frequencies w_k from 1
down to 1 / max_period, followed by Linear -> SiLU -> Linear. Timesteps may be
fractional (continuous-time samplers).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["TimestepEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(t: jax.Array, features: int, *, max_period: float = 10000.0) -> jax.Array:
    """`[B]` timesteps -> `[B, features]` float32 features (cosines, then sines).

    Raises:
      ValueError: `features` is odd.
    """
    if features % 2:
        raise ValueError(f"sinusoidal_embedding needs an even number of features, got {features}")
    half = features // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedding(nnx.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear: `[B] -> [B, features]`.

    Args:
      features: output width.
      frequency_features: width of the sinusoidal features (even).
      rngs: `params` stream (or default).
    """

    def __init__(self, features: int, *, frequency_features: int = 128, rngs: nnx.Rngs):
        policy = get_precision_policy()
        self.frequency_features = int(frequency_features)
        kw = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs)
        self.dense_in = nnx.Linear(self.frequency_features, features, **kw)
        self.dense_out = nnx.Linear(features, features, **kw)

    def __call__(self, t: jax.Array) -> jax.Array:
        h = self.dense_in(sinusoidal_embedding(t, self.frequency_features))
        return self.dense_out(nnx.silu(h))
