"""Diffusion Transformer (DiT) with adaLN-Zero blocks.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"
(arXiv:2212.09748): the image is cut into non-overlapping p x p patches, each
linearly embedded (a matmul on the reshaped patches, the same map as a
stride-p convolution) plus fixed 2-D sine-cosine position embeddings; `depth`
transformer blocks are modulated by the conditioning vector c = time
embedding (+ class embedding) through adaptive layer norm: c -> (shift,
scale, gate) for the attention and the MLP branch, with the modulation
layer initialised to zero ("adaLN-Zero"), so every block starts as the
identity. A final adaLN layer and a zero-initialised linear map give p*p*C_out
values per patch, put back into an image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.layers import TimestepEmbedding, fused_attention

__all__ = ["AdaLNZeroBlock", "DiT", "patchify", "sincos_position_embedding_2d", "unpatchify"]


def _kw():
    policy = get_precision_policy()
    return dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
    """`[B, H, W, C] -> [B, (H/p)(W/p), p*p*C]`, patches in row-major order."""
    b, h, w, c = x.shape
    p = patch_size
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, height: int, width: int, patch_size: int) -> jax.Array:
    """The inverse of `patchify`: `[B, (H/p)(W/p), p*p*C] -> [B, H, W, C]`."""
    b, _, d = tokens.shape
    p = patch_size
    c = d // (p * p)
    x = tokens.reshape(b, height // p, width // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


def sincos_position_embedding_2d(grid_h: int, grid_w: int, features: int) -> np.ndarray:
    """Fixed 2-D sine-cosine embeddings `[grid_h * grid_w, features]` (features % 4 == 0).

    Half the features encode the row, half the column, each as
    `[sin(pos w_k), cos(pos w_k)]` with w_k = 10000^(-k / (features / 4)).
    """
    quarter = features // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")

    def embed(pos):
        args = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(args), np.cos(args)], axis=1)

    return np.concatenate([embed(rows), embed(cols)], axis=1).astype(np.float32)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class AdaLNZeroBlock(nnx.Module):
    """A DiT block: `([B, N, D] tokens, [B, D] conditioning) -> [B, N, D]`.

    x + gate1 * Attn(LN(x) (1 + scale1) + shift1), then the same with an MLP;
    (shift, scale, gate) x 2 = Linear(SiLU(c)), zero at initialisation.

    Args:
      features: D.
      num_heads: attention heads (must divide D).
      mlp_ratio: hidden width of the MLP over D.
      rngs: `params` stream (or default).
    """

    def __init__(self, features: int, num_heads: int, *, mlp_ratio: float = 4.0, rngs: nnx.Rngs):
        kw = _kw()
        hidden = int(features * mlp_ratio)
        self.norm1 = nnx.LayerNorm(features, use_scale=False, use_bias=False, rngs=rngs, **kw)
        self.attention = nnx.MultiHeadAttention(num_heads, features, decode=False, attention_fn=fused_attention,
                                                rngs=rngs, **kw)
        self.norm2 = nnx.LayerNorm(features, use_scale=False, use_bias=False, rngs=rngs, **kw)
        self.mlp_in = nnx.Linear(features, hidden, rngs=rngs, **kw)
        self.mlp_out = nnx.Linear(hidden, features, rngs=rngs, **kw)
        self.modulation = nnx.Linear(features, 6 * features, kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
                                     **kw)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.modulation(nnx.silu(c)), 6, axis=-1)
        h = self.attention(_modulate(self.norm1(x), shift1, scale1), deterministic=True)
        x = x + gate1[:, None, :] * h
        h = self.mlp_out(nnx.gelu(approximate=True, x=self.mlp_in(_modulate(self.norm2(x), shift2, scale2))))
        return x + gate2[:, None, :] * h


class DiT(nnx.Module):
    """`(x_t [B, H, W, C_in], t [B], labels [B] | None) -> [B, H, W, C_out]`.

    Args:
      input_shape (tuple[int, int, int]): `(H, W, C_in)`; H and W must be divisible by `patch_size`.
      out_channels: C_out.
      patch_size: p.
      hidden_size: D, the token width (divisible by 4 and by `num_heads`).
      depth: number of adaLN-Zero blocks.
      num_heads: attention heads.
      mlp_ratio: MLP width over D.
      num_classes: if set, a class embedding (num_classes + 1 rows, the last
        the "no label" of classifier-free guidance) is added to c.
      rngs: `params` stream (or default).

    Raises:
      ValueError: a side not divisible by the patch size, or a bad width.
    """

    def __init__(self, input_shape, out_channels: int, *, patch_size: int, hidden_size: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, num_classes: int | None = None, rngs: nnx.Rngs):
        h, w, c = (int(s) for s in input_shape)
        p = int(patch_size)
        if h % p or w % p:
            divisors = ", ".join(str(d) for d in range(1, 8) if h % d == 0 and w % d == 0)
            raise ValueError(
                f"the dit backbone needs image sides divisible by patch_size: {h}x{w} is not divisible by {p}; "
                f"choose a patch_size that divides both (e.g. {divisors})"
            )
        if hidden_size % 4 or hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by 4 and by num_heads={num_heads}")
        kw = _kw()
        self.height, self.width, self.patch_size, self.hidden_size = h, w, p, int(hidden_size)
        self.patch_embed = nnx.Linear(p * p * c, hidden_size, rngs=rngs, **kw)
        self.time_embedding = TimestepEmbedding(hidden_size, rngs=rngs)
        self.label_embedding = nnx.Embed(num_classes + 1, hidden_size, rngs=rngs, **kw) if num_classes else None
        self.blocks = nnx.List([AdaLNZeroBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, rngs=rngs)
                                for _ in range(int(depth))])
        self.final_norm = nnx.LayerNorm(hidden_size, use_scale=False, use_bias=False, rngs=rngs, **kw)
        self.final_modulation = nnx.Linear(hidden_size, 2 * hidden_size, kernel_init=nnx.initializers.zeros_init(),
                                           rngs=rngs, **kw)
        self.final_linear = nnx.Linear(hidden_size, p * p * out_channels, kernel_init=nnx.initializers.zeros_init(),
                                       rngs=rngs, **kw)

    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        p = self.patch_size
        pos = sincos_position_embedding_2d(self.height // p, self.width // p, self.hidden_size)
        tokens = self.patch_embed(patchify(x, p)) + jnp.asarray(pos)[None]
        cond = self.time_embedding(t)
        if self.label_embedding is not None:
            cond = cond + self.label_embedding(labels)
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = jnp.split(self.final_modulation(nnx.silu(cond)), 2, axis=-1)
        out = self.final_linear(_modulate(self.final_norm(tokens), shift, scale))
        return unpatchify(out, self.height, self.width, p).astype(jnp.float32)
