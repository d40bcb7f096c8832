"""Convolutional encoder, decoder and learned 2x upsampling for images `[B, H, W, C]`.

`ConvEncoder` halves the resolution at each stage (3x3 convolutions, stride 2,
SAME padding, so a side s becomes ceil(s / 2)). `ConvDecoder` mirrors it:
from a vector (through a Linear) or from a grid of latent vectors to the
smallest feature map, one `Upsample` per stage back up, and a final 3x3
convolution to `C * out_channels_per_pixel` channels. Sides that are not
divisible by 2**stages are handled by bringing each upsampled map to the size
the encoder had at that stage (28 -> 14 -> 7 and back; 30 -> 15 -> 8 -> 16,
cropped to 15 -> 30).

`Upsample` is the one learned 2x upsampling of the library (`UPSAMPLINGS`):

* "subpixel": a 3x3 convolution to 4x the channels at the low resolution,
  then depth-to-space (Shi et al. 2016, arXiv:1609.05158), initialised with
  ICNR (Aitken et al. 2017, arXiv:1707.02937) so that it starts as a
  nearest-neighbour upsampling of a convolution: no checkerboard at start.
* "resize_conv" / "resize_conv_bilinear": nearest or bilinear resizing to the
  target size, then a 3x3 convolution (Odena, Dumoulin & Olah 2016,
  "Deconvolution and Checkerboard Artifacts", Distill).
* "transposed": a stride-2 3x3 transposed convolution (`nnx.ConvTranspose`).

Why "subpixel" is the default: on XLA's CPU backend the kernel gradient of a
stride-2 transposed convolution is lowered to a convolution with a
feature-map-sized (e.g. 14x14) window, about 17x slower than its input
gradient (590 against 34 ms for 64 -> 32 channels, 14 -> 28, batch 128, one
thread): the two transposed convolutions were ~95 % of the conv VAE's step.
Ordinary convolutions, strided or not, do not have that problem; sub-pixel
and resize-conv upsampling use only those (BENCHMARKS.md, "Upsampling").

Both read the mixed-precision policy of `workshop.core.device_manager` when
built (parameters in `param_dtype`, compute in `compute_dtype`).
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["ConvDecoder", "ConvEncoder", "UPSAMPLINGS", "Upsample", "Upsampling", "depth_to_space",
           "downsampled_sizes", "icnr_init"]

# The learned 2x upsamplings `Upsample` offers (a model's `parameters.upsampling`); the first is the default.
Upsampling = Literal["subpixel", "resize_conv", "resize_conv_bilinear", "transposed"]
UPSAMPLINGS: tuple[str, ...] = get_args(Upsampling)


def downsampled_sizes(height: int, width: int, num_stages: int) -> list[tuple[int, int]]:
    """Spatial sizes after 0, 1, ..., num_stages stride-2 SAME convolutions."""
    sizes = [(int(height), int(width))]
    for _ in range(num_stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _image_shape(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"{what} must be (H, W, C) for a convolutional backbone, got {shape}; use the mlp backbone")
    return shape  # type: ignore[return-value]


def _need_stages(features: Sequence[int], what: str) -> tuple[int, ...]:
    features = tuple(int(f) for f in features)
    if not features:
        raise ValueError(f"{what} needs at least one stage: features must be non-empty (e.g. [32, 64])")
    return features


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """`[B, h, w, C * block**2] -> [B, h * block, w * block, C]`.

    Channel `(i * block + j) * C + c` of input pixel (y, x) becomes channel c
    of output pixel (y * block + i, x * block + j) (TensorFlow's
    `depth_to_space` order for NHWC).
    """
    b, h, w, depth = x.shape
    if depth % (block * block):
        raise ValueError(f"depth_to_space needs channels divisible by block**2 = {block * block}, got {depth}")
    c = depth // (block * block)
    x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c)


def icnr_init(base_init: Callable = nnx.initializers.lecun_normal(), block: int = 2) -> Callable:
    """ICNR (Aitken et al. 2017, arXiv:1707.02937): the kernel of a sub-pixel conv `[kh, kw, in, C * block**2]`
    whose block**2 sub-pixels of every output channel start equal, so conv + `depth_to_space` starts as a
    conv followed by a nearest-neighbour upsampling."""

    def init(key, shape, dtype=jnp.float32):
        *window, out = shape
        base = base_init(key, (*window, out // (block * block)), dtype)
        return jnp.tile(base, (1,) * len(window) + (block * block,))

    return init


class Upsample(nnx.Module):
    """A learned 2x upsampling: `([B, h, w, in_features], (H, W)) -> [B, H, W, out_features]`.

    H and W are at most 2h and 2w (a stride-2 encoder's sizes read backwards:
    7 -> 14, or 4 -> 7 for an odd side); "subpixel" and "transposed" make 2h x 2w
    and crop, the resize methods resize straight to (H, W).

    Args:
      in_features, out_features: channels in and out.
      method: one of `UPSAMPLINGS` (see the module docstring).
      rngs: `params` stream (or default).
    """

    def __init__(self, in_features: int, out_features: int, *, method: str = "subpixel", rngs: nnx.Rngs):
        if method not in UPSAMPLINGS:
            raise ValueError(f"upsampling {method!r} is unknown; known: {', '.join(UPSAMPLINGS)}")
        policy = get_precision_policy()
        dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
        self.method = method
        if method == "subpixel":
            self.conv = nnx.Conv(in_features, 4 * out_features, (3, 3), padding="SAME", kernel_init=icnr_init(),
                                 rngs=rngs, **dtypes)
        elif method == "transposed":
            self.conv = nnx.ConvTranspose(in_features, out_features, (3, 3), strides=2, padding="SAME", rngs=rngs,
                                          **dtypes)
        else:
            self.conv = nnx.Conv(in_features, out_features, (3, 3), padding="SAME", rngs=rngs, **dtypes)

    def __call__(self, x: jax.Array, size: Sequence[int]) -> jax.Array:
        """`[B, h, w, in_features]` -> `[B, H, W, out_features]` with `(H, W) = size`."""
        h, w = int(size[0]), int(size[1])
        if not (h <= 2 * x.shape[1] and w <= 2 * x.shape[2]):
            raise ValueError(f"Upsample doubles the side at most: {tuple(x.shape[1:3])} cannot reach {(h, w)}")
        if self.method == "subpixel":
            return depth_to_space(self.conv(x))[:, :h, :w, :]
        if self.method == "transposed":
            # A SAME stride-2 transposed conv doubles the side; crop odd sizes back.
            return self.conv(x)[:, :h, :w, :]
        resize = "nearest" if self.method == "resize_conv" else "bilinear"
        return self.conv(jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), resize))


class ConvEncoder(nnx.Module):
    """Stride-2 convolutions: `[B, H, W, C] -> [B, output_size]` (flattened).

    Args:
      input_shape: `(H, W, C)`.
      features: output channels of each stride-2 stage.
      activation: applied after every convolution.
      rngs: `params` stream (or default).

    Attributes:
      feature_shape: `(h, w, features[-1])`, the smallest feature map.
      output_size: `h * w * features[-1]`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        features: Sequence[int],
        *,
        activation: Callable[[jax.Array], jax.Array] = nnx.gelu,
        rngs: nnx.Rngs,
    ):
        policy = get_precision_policy()
        self.input_shape = _image_shape(input_shape, "ConvEncoder input_shape")
        features = _need_stages(features, "ConvEncoder")
        channels = (self.input_shape[-1], *features)
        self.convs = nnx.List(
            [
                nnx.Conv(c_in, c_out, (3, 3), strides=2, padding="SAME", dtype=policy.compute_dtype,
                         param_dtype=policy.param_dtype, rngs=rngs)
                for c_in, c_out in zip(channels[:-1], channels[1:])
            ]
        )
        self.activation = activation
        h, w = downsampled_sizes(self.input_shape[0], self.input_shape[1], len(features))[-1]
        self.feature_shape = (h, w, features[-1])
        self.output_size = h * w * features[-1]

    def feature_map(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C] -> [B, h, w, features[-1]]`."""
        for conv in self.convs:
            x = self.activation(conv(x))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C] -> [B, output_size]`."""
        h = self.feature_map(x)
        return h.reshape(h.shape[0], -1)


class ConvDecoder(nnx.Module):
    """From a latent vector (or grid) up to `[B, H, W, C * out_channels_per_pixel]`.

    The stage count is `len(features)`: the smallest map has side
    ceil(H / 2**len(features)) and `features[0]` channels; stage i upsamples
    by two (`Upsample`) to `features[i]` channels. Channel `c * out_channels_per_pixel + j`
    of the output is the j-th parameter of image channel c.

    Args:
      output_shape: `(H, W, C)`.
      features: channels of the smallest map and of each upsampling stage.
      out_channels_per_pixel: decoder outputs per image channel (1 for
        logits or means, 2 for a logistic's mean and log-scale, ...).
      in_features: size of the input vector, or channels of the input grid.
      grid_input: False: the input is `[B, in_features]` and a Linear makes
        the smallest map; True: the input is a grid
        `[B, h, w, in_features]` at the smallest size (`latent_grid_shape`),
        mapped to `features[0]` channels by a 3x3 convolution.
      activation: applied after every layer but the last.
      upsampling: how each stage upsamples, one of `UPSAMPLINGS`.
      norm: None, or a function `channels -> layer` making the normalisation
        applied before the activation of the stem's map and of each
        upsampling stage (e.g. batch norm, as in DCGAN's generator, Radford
        et al. 2015, section 3).
      rngs: `params` stream (or default).
    """

    def __init__(
        self,
        output_shape: Sequence[int],
        features: Sequence[int],
        out_channels_per_pixel: int = 1,
        *,
        in_features: int,
        grid_input: bool = False,
        activation: Callable[[jax.Array], jax.Array] = nnx.gelu,
        norm: Callable[[int], nnx.Module] | None = None,
        upsampling: str = "subpixel",
        rngs: nnx.Rngs,
    ):
        policy = get_precision_policy()
        dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
        self.output_shape = _image_shape(output_shape, "ConvDecoder output_shape")
        features = _need_stages(features, "ConvDecoder")
        height, width, channels = self.output_shape
        # Sizes from the smallest map up to (H, W): the encoder's, reversed.
        self.stage_sizes = tuple(reversed(downsampled_sizes(height, width, len(features))))
        h0, w0 = self.stage_sizes[0]
        self.latent_grid_shape = (h0, w0)
        self.in_features = int(in_features)
        self.grid_input = bool(grid_input)
        if self.grid_input:
            self.stem = nnx.Conv(self.in_features, features[0], (3, 3), padding="SAME", rngs=rngs, **dtypes)
        else:
            self.stem = nnx.Linear(self.in_features, h0 * w0 * features[0], rngs=rngs, **dtypes)
        self.stem_shape = (h0, w0, features[0])
        chans = (features[0], *features)
        self.upsampling = upsampling
        self.upsamples = nnx.List(
            [Upsample(c_in, c_out, method=upsampling, rngs=rngs) for c_in, c_out in zip(chans[:-1], chans[1:])]
        )
        self.out_channels_per_pixel = int(out_channels_per_pixel)
        self.head = nnx.Conv(features[-1], channels * self.out_channels_per_pixel, (3, 3), padding="SAME",
                             rngs=rngs, **dtypes)
        self.activation = activation
        # One normalisation for the stem's map and one per upsampling stage (none without `norm`).
        self.norms = nnx.List([norm(int(c)) for c in chans] if norm is not None else [])

    def _normalise(self, stage: int, x: jax.Array) -> jax.Array:
        return self.norms[stage](x) if self.norms else x

    def __call__(self, z: jax.Array) -> jax.Array:
        """`[B, in_features]` (or `[B, h, w, in_features]`) -> `[B, H, W, C * out_channels_per_pixel]`."""
        if self.grid_input:
            expected = (*self.latent_grid_shape, self.in_features)
            if tuple(z.shape[1:]) != expected:
                raise ValueError(f"ConvDecoder expects a grid [B, {expected}], got {tuple(z.shape)}")
            x = self.stem(z)
        else:
            x = self.stem(z).reshape(z.shape[0], *self.stem_shape)
        x = self.activation(self._normalise(0, x))
        for stage, (up, size) in enumerate(zip(self.upsamples, self.stage_sizes[1:]), start=1):
            x = self.activation(self._normalise(stage, up(x, size)))
        return self.head(x)
