"""Convolutional encoder and decoder for images `[B, H, W, C]`.

`ConvEncoder` halves the resolution at each stage (3x3 convolutions, stride 2,
SAME padding, so a side s becomes ceil(s / 2)). `ConvDecoder` mirrors it:
from a vector (through a Linear) or from a grid of latent vectors to the
smallest feature map, stride-2 transposed convolutions back up, and a final
3x3 convolution to `C * out_channels_per_pixel` channels. Sides that are not
divisible by 2**stages are handled by cropping each upsampled map to the size
the encoder had at that stage (28 -> 14 -> 7 and back; 30 -> 15 -> 8 -> 16,
cropped to 15 -> 30).

Both read the mixed-precision policy of `workshop.core.device_manager` when
built (parameters in `param_dtype`, compute in `compute_dtype`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["ConvDecoder", "ConvEncoder", "downsampled_sizes"]


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
    by two to `features[i]` channels. Channel `c * out_channels_per_pixel + j`
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
        self.upsamples = nnx.List(
            [
                nnx.ConvTranspose(c_in, c_out, (3, 3), strides=2, padding="SAME", rngs=rngs, **dtypes)
                for c_in, c_out in zip(chans[:-1], chans[1:])
            ]
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
        for stage, (up, (h, w)) in enumerate(zip(self.upsamples, self.stage_sizes[1:]), start=1):
            # A SAME stride-2 transposed conv doubles the side; crop odd sizes back.
            x = self.activation(self._normalise(stage, up(x)[:, :h, :w, :]))
        return self.head(x)
