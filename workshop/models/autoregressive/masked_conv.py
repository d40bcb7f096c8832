"""Masked convolutions of PixelCNN and the gated layer with two stacks.

* `MaskedConv2D`: van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel
  Recurrent Neural Networks" (arXiv:1601.06759), section 3.4. A convolution
  whose kernel (an `nnx.Conv` with a fixed `mask`) sees only the pixels before
  the kernel's centre in raster order; at the centre, feature group g sees the
  input groups before g (type "A", first layer) or up to g (type "B", later
  layers), so channel c of a pixel depends on channels < c of the same pixel.
  Features are split into `num_channels` groups by index modulo
  `num_channels` (channel c of the image is group c).
* `GatedMaskedConv2D`: van den Oord et al. 2016, "Conditional Image Generation
  with PixelCNN Decoders" (arXiv:1606.05328), section 2.2. A vertical stack
  (a `(k//2 + 1) x k` convolution over the rows up to the current one) feeds a
  horizontal stack (a `1 x (k//2 + 1)` masked convolution over the pixels to
  the left) through a one-row down shift, so the receptive field is the whole
  region above and to the left, without the blind spot of stacked masked
  `k x k` kernels. Both stacks use the gate tanh(a) * sigmoid(b) and take an
  optional conditioning bias `[B, 2F]`.

Arrays are NHWC: `[B, H, W, features]`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["GatedMaskedConv2D", "MaskedConv2D", "autoregressive_mask", "gate", "shift_down"]

MaskType = Literal["A", "B"]


def autoregressive_mask(
    kernel_size: Sequence[int],
    in_features: int,
    out_features: int,
    *,
    mask_type: MaskType,
    num_channels: int = 1,
    center: Sequence[int] | None = None,
) -> np.ndarray:
    """The 0/1 kernel mask `[kh, kw, in_features, out_features]` of a masked convolution.

    Kernel positions before `center` (raster order) are open, those after are
    closed; at the centre, output feature o sees input feature i when
    `i % C < o % C` (type "A") or `i % C <= o % C` (type "B"), C = `num_channels`.

    Args:
      kernel_size: `(kh, kw)`.
      in_features: input feature count.
      out_features: output feature count.
      mask_type: "A" (excludes the current pixel's own channel) or "B".
      num_channels: image channels C whose order is autoregressive.
      center: kernel position of the current pixel; default `(kh // 2, kw // 2)`.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = (int(k) for k in kernel_size)
    ci, cj = (kh // 2, kw // 2) if center is None else (int(c) for c in center)
    mask = np.zeros((kh, kw, in_features, out_features), np.float32)
    mask[:ci] = 1.0
    mask[ci, :cj] = 1.0
    group_in = np.arange(in_features)[:, None] % num_channels
    group_out = np.arange(out_features)[None, :] % num_channels
    mask[ci, cj] = (group_in < group_out) if mask_type == "A" else (group_in <= group_out)
    return mask


def _conv_kwargs() -> dict:
    policy = get_precision_policy()
    return {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype}


class MaskedConv2D(nnx.Module):
    """An `nnx.Conv` with an autoregressive kernel mask (type A or B).

    Args:
      in_features: input feature count.
      out_features: output feature count.
      kernel_size: `(kh, kw)` or an int.
      mask_type: "A" or "B" (see `autoregressive_mask`).
      num_channels: image channels whose order is autoregressive.
      center: kernel position of the current pixel (default the middle).
      padding (str | Sequence[tuple[int, int]] | None): `nnx.Conv` padding; default pads so that output (i, j) is
        centred on input (i, j) (`((ci, kh-1-ci), (cj, kw-1-cj))`).
      rngs: `params` stream (or default).

    `[B, H, W, in_features] -> [B, H, W, out_features]`.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
                 mask_type: MaskType, num_channels: int = 1, center: Sequence[int] | None = None,
                 padding=None, rngs: nnx.Rngs):
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        center = (ks[0] // 2, ks[1] // 2) if center is None else tuple(center)
        if padding is None:
            padding = ((center[0], ks[0] - 1 - center[0]), (center[1], ks[1] - 1 - center[1]))
        mask = autoregressive_mask(ks, in_features, out_features, mask_type=mask_type,
                                   num_channels=num_channels, center=center)
        self.conv = nnx.Conv(in_features, out_features, ks, padding=padding, mask=jnp.asarray(mask),
                             rngs=rngs, **_conv_kwargs())

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


def gate(x: jax.Array) -> jax.Array:
    """tanh(a) * sigmoid(b) for `x = [a, b]` split on the last axis: `[..., 2F] -> [..., F]`."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


def shift_down(x: jax.Array) -> jax.Array:
    """Moves `[B, H, W, F]` one row down (zeros enter at the top), so row i holds row i-1."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


class GatedMaskedConv2D(nnx.Module):
    """One gated PixelCNN layer with a vertical and a horizontal stack (no blind spot).

    Args:
      in_features: features of the incoming stacks (C for the first layer).
      features: F, features of the outgoing stacks (a multiple of `num_channels`).
      kernel_size: k (odd); the vertical kernel is `(k//2 + 1) x k`, the
        horizontal one `1 x (k//2 + 1)`.
      mask_type: "A" for the first layer (the current pixel's own value is
        hidden), "B" after it; the first layer has no residual connection.
      num_channels: image channels C, ordered autoregressively within a pixel.
      rngs: `params` stream (or default).

    Call: `(v, h, cond) -> (v, h)` with `v, h: [B, H, W, in_features]`,
    `cond: [B, 2F]` or None; returns `[B, H, W, F]` each. The vertical output
    at row i depends on rows <= i, the horizontal one on the rows above and
    the pixels to the left (and the current pixel's earlier channels).
    """

    def __init__(self, in_features: int, features: int, kernel_size: int = 3, *, mask_type: MaskType,
                 num_channels: int = 1, rngs: nnx.Rngs):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if features % num_channels:
            raise ValueError(f"features ({features}) must be a multiple of the image channels ({num_channels})")
        half = kernel_size // 2
        self.residual = mask_type == "B"
        self.vertical = nnx.Conv(in_features, 2 * features, (half + 1, kernel_size),
                                 padding=((half, 0), (half, half)), rngs=rngs, **_conv_kwargs())
        self.horizontal = MaskedConv2D(in_features, 2 * features, (1, half + 1), mask_type=mask_type,
                                       num_channels=num_channels, center=(0, half), rngs=rngs)
        self.vertical_to_horizontal = nnx.Conv(2 * features, 2 * features, (1, 1), rngs=rngs, **_conv_kwargs())
        self.horizontal_out = MaskedConv2D(features, features, (1, 1), mask_type="B",
                                           num_channels=num_channels, rngs=rngs)

    def __call__(self, v: jax.Array, h: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(shift_down(v_pre))
        if cond is not None:
            cond = cond[:, None, None, :].astype(v_pre.dtype)
            v_pre, h_pre = v_pre + cond, h_pre + cond
        h_out = self.horizontal_out(gate(h_pre))
        if self.residual:
            h_out = h_out + h
        return gate(v_pre), h_out
