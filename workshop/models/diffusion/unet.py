"""The DDPM U-Net denoiser (Ho, Jain & Abbeel 2020, arXiv:2006.11239).

After the PixelCNN++ / Wide-ResNet U-Net of Ho et al.: a 3x3 stem, one level
per entry of `channels` with `num_res_blocks` residual blocks each (GroupNorm,
SiLU, 3x3 convolution, plus a projection of the time (+ class) embedding),
self-attention after the blocks whose feature map has a side in
`attention_resolutions`, stride-2 convolutions down, nearest-neighbour
resizing + 3x3 convolution up by default (any `layers.UPSAMPLINGS` choice;
to the skip's size, so 28 -> 14 -> 7 -> 4 comes back to 7 -> 14 -> 28), and skip connections concatenated on the way
up. The last convolution of every residual branch and of the output starts at
zero (as in Ho et al.'s code), so the net begins as a near-identity map.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.layers import SpatialSelfAttention, TimestepEmbedding, Upsample, group_norm_groups

__all__ = ["ResidualBlock", "UNet"]


def _kw():
    policy = get_precision_policy()
    return dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)


class ResidualBlock(nnx.Module):
    """`([B, H, W, C_in], [B, E]) -> [B, H, W, C_out]`, optionally followed by self-attention.

    Args:
      in_channels, out_channels: C_in, C_out.
      embedding_features: E, the width of the time (+ class) embedding.
      attention: add a `SpatialSelfAttention` after the residual block.
      num_heads: heads of that attention.
      rngs: `params` stream (or default).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_features: int, *, attention: bool = False,
                 num_heads: int = 4, rngs: nnx.Rngs):
        kw = _kw()
        self.norm1 = nnx.GroupNorm(in_channels, num_groups=group_norm_groups(in_channels), rngs=rngs, **kw)
        self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), rngs=rngs, **kw)
        self.embedding_proj = nnx.Linear(embedding_features, out_channels, rngs=rngs, **kw)
        self.norm2 = nnx.GroupNorm(out_channels, num_groups=group_norm_groups(out_channels), rngs=rngs, **kw)
        self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), kernel_init=nnx.initializers.zeros_init(),
                              rngs=rngs, **kw)
        self.skip = (nnx.Conv(in_channels, out_channels, (1, 1), rngs=rngs, **kw)
                     if in_channels != out_channels else None)
        self.attention = SpatialSelfAttention(out_channels, num_heads=num_heads, rngs=rngs) if attention else None

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.embedding_proj(nnx.silu(emb))[:, None, None, :]
        h = self.conv2(nnx.silu(self.norm2(h)))
        out = (x if self.skip is None else self.skip(x)) + h
        return out if self.attention is None else self.attention(out)


class UNet(nnx.Module):
    """Noise-prediction U-Net: `(x_t [B, H, W, C_in], t [B], labels [B] | None) -> [B, H, W, C_out]`.

    Args:
      in_channels: C_in (image channels, plus conditioning channels).
      out_channels: C_out.
      channels: widths of the levels, e.g. `(32, 64)`; level i runs at
        resolution ceil(H / 2^i).
      num_res_blocks: residual blocks per level on the way down (one more up).
      attention_resolutions: feature-map heights that get self-attention
        (and the middle block always does).
      height: H of the input, to place the attention levels.
      num_heads: attention heads.
      num_classes: if set, a learned class embedding (num_classes + 1 rows,
        the last one the "no label" of classifier-free guidance) is added to
        the time embedding.
      upsampling: how each level upsamples, one of `layers.UPSAMPLINGS`.
      rngs: `params` stream (or default).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], *, num_res_blocks: int,
                 attention_resolutions: Sequence[int], height: int, num_heads: int = 4,
                 num_classes: int | None = None, upsampling: str = "resize_conv", rngs: nnx.Rngs):
        kw = _kw()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("the unet backbone needs at least one level: encoder_features must be non-empty")
        emb = 4 * channels[0]
        self.time_embedding = TimestepEmbedding(emb, frequency_features=channels[0] * 2, rngs=rngs)
        self.label_embedding = nnx.Embed(num_classes + 1, emb, rngs=rngs, **kw) if num_classes else None
        self.stem = nnx.Conv(in_channels, channels[0], (3, 3), rngs=rngs, **kw)
        attn_at = {int(r) for r in attention_resolutions}

        sizes = [int(height)]
        for _ in channels[1:]:
            sizes.append((sizes[-1] + 1) // 2)
        down, downsample, skip_channels = [], [], [channels[0]]
        cur = channels[0]
        for level, ch in enumerate(channels):
            res = sizes[level]
            for _ in range(num_res_blocks):
                down.append(ResidualBlock(cur, ch, emb, attention=res in attn_at, num_heads=num_heads, rngs=rngs))
                cur = ch
                skip_channels.append(cur)
            if level < len(channels) - 1:
                downsample.append(nnx.Conv(cur, cur, (3, 3), strides=2, rngs=rngs, **kw))
                skip_channels.append(cur)
        self.down = nnx.List(down)
        self.downsample = nnx.List(downsample)
        self.middle = nnx.List([ResidualBlock(cur, cur, emb, attention=True, num_heads=num_heads, rngs=rngs),
                                ResidualBlock(cur, cur, emb, rngs=rngs)])
        up, upsample = [], []
        for level in reversed(range(len(channels))):
            ch = channels[level]
            for _ in range(num_res_blocks + 1):
                up.append(ResidualBlock(cur + skip_channels.pop(), ch, emb, attention=sizes[level] in attn_at,
                                        num_heads=num_heads, rngs=rngs))
                cur = ch
            if level > 0:
                upsample.append(Upsample(cur, cur, method=upsampling, rngs=rngs))
        self.up = nnx.List(up)
        self.upsample = nnx.List(upsample)
        self.out_norm = nnx.GroupNorm(cur, num_groups=group_norm_groups(cur), rngs=rngs, **kw)
        self.out_conv = nnx.Conv(cur, out_channels, (3, 3), kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
                                 **kw)
        self.num_levels = len(channels)
        self.num_res_blocks = int(num_res_blocks)

    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        emb = self.time_embedding(t)
        if self.label_embedding is not None:
            emb = emb + self.label_embedding(labels)
        h = self.stem(x)
        skips = [h]
        blocks = iter(self.down)
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(blocks)(h, emb)
                skips.append(h)
            if level < self.num_levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.middle:
            h = block(h, emb)
        blocks = iter(self.up)
        for i, level in enumerate(reversed(range(self.num_levels))):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
            if level > 0:
                h = self.upsample[i](h, skips[-1].shape[1:3])
        return self.out_conv(nnx.silu(self.out_norm(h))).astype(jnp.float32)
