"""The multi-scale architecture: stages of flow steps, squeezes, and factored-out latents.

Dinh, Sohl-Dickstein & Bengio 2016, "Density estimation using Real NVP"
(arXiv:1605.08803), section 3.6; Kingma & Dhariwal 2018, "Glow"
(arXiv:1807.03039), figure 2. A level runs a stage of steps, optionally
squeezes (`[H, W, C] -> [H/2, W/2, 4C]`), runs a second stage, and optionally
factors out half of the channels straight to the base distribution; the
next level works on the rest. The base point is the concatenation of the
flattened factored-out parts and the last level's output, `[B, D]`.

A single level with one stage and neither squeeze nor split is a plain
(single-scale) flow; `flatten=True` turns images into vectors first (the
autoregressive flows).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.models.flow.base import FlowModel
from workshop.models.flow.bijectors import squeeze, unsqueeze
from workshop.models.flow.stack import StackedSteps

__all__ = ["Level", "MultiScaleFlow", "check_vector_levels", "image_levels", "max_squeezes"]

StepFactory = Callable[..., nnx.Module]


def max_squeezes(shape: tuple[int, ...]) -> int:
    """How many 2x2 squeezes an `(H, W, C)` image allows (H and W halve each time)."""
    h, w = shape[0], shape[1]
    n = 0
    while h % 2 == 0 and w % 2 == 0:
        h, w, n = h // 2, w // 2, n + 1
    return n


def image_levels(model_type: str, shape: tuple[int, ...], requested: int | None, *, squeezes_per_level: int,
                 default_max: int = 3) -> int:
    """The number of levels of a multi-scale flow on an `(H, W, C)` image.

    `squeezes_per_level=1`: every level squeezes (Glow, L squeezes);
    `0`: all levels but the last do (Real NVP, L - 1 squeezes).

    Raises:
      ValueError: the image size cannot be squeezed that often (names the shape).
    """
    available = max_squeezes(shape)
    most = available if squeezes_per_level == 1 else available + 1
    if requested is None:
        levels = min(default_max, most)
        if levels < 1:
            raise ValueError(f"model_type {model_type!r} squeezes 2x2 blocks, so height and width must be even; "
                             f"got input_shape {tuple(shape)}")
        return levels
    if requested > most:
        needed = requested if squeezes_per_level == 1 else requested - 1
        raise ValueError(f"model_type {model_type!r} with num_levels={requested} squeezes {needed} times, so height "
                         f"and width must be divisible by {2 ** needed}; got input_shape {tuple(shape)} "
                         f"(at most num_levels={most})")
    return requested


def check_vector_levels(model_type: str, shape: tuple[int, ...], requested: int | None) -> None:
    """Vectors have one level; any other `num_levels` is an error."""
    if requested not in (None, 1):
        raise ValueError(f"model_type {model_type!r}: num_levels applies to images; vectors {tuple(shape)} "
                         f"use one level (got num_levels={requested})")


class Level(nnx.Module):
    """One scale: `pre` steps, optional squeeze, `post` steps, optional split.

    Args:
      shape: event shape entering the level.
      pre: `make_step(index, shape, *, rngs)` for the first stage, or None.
      num_pre: steps in the first stage.
      squeeze_input: squeeze between the stages (images only).
      post: step factory of the second stage (on the squeezed shape), or None.
      num_post: steps in the second stage.
      split: factor out the second half of the channels at the end.
      rngs: `params` stream (or default).
    """

    def __init__(self, shape: tuple[int, ...], *, pre: StepFactory | None = None, num_pre: int = 0,
                 squeeze_input: bool = False, post: StepFactory | None = None, num_post: int = 0,
                 split: bool = False, rngs: nnx.Rngs):
        self.in_shape = tuple(shape)
        self.pre = StackedSteps(lambda i, *, rngs: pre(i, shape, rngs=rngs), num_pre, rngs=rngs) if pre else None
        if squeeze_input:
            h, w, c = shape
            if h % 2 or w % 2:
                raise ValueError(f"cannot squeeze an image of shape (H, W, C) = {tuple(shape)}: H and W must be even")
            shape = (h // 2, w // 2, 4 * c)
        self.squeeze_input = bool(squeeze_input)
        self.post = (StackedSteps(lambda i, *, rngs: post(i, shape, rngs=rngs), num_post, rngs=rngs)
                     if post else None)
        self.split = bool(split)
        if split:
            keep = shape[-1] // 2
            if keep < 1:
                raise ValueError(f"cannot split the channels of shape {tuple(shape)}")
            self.factored_shape = (*shape[:-1], shape[-1] - keep)
            shape = (*shape[:-1], keep)
        else:
            self.factored_shape = None
        self.out_shape = tuple(shape)

    def forward(self, h: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """-> (kept `[B, *out_shape]`, factored-out part or None, log|det| `[B]`)."""
        log_det = jnp.zeros((h.shape[0],), jnp.float32)
        if self.pre is not None:
            h, ld = self.pre.forward(h, cond=cond)
            log_det = log_det + ld
        if self.squeeze_input:
            h = squeeze(h)
        if self.post is not None:
            h, ld = self.post.forward(h, cond=cond)
            log_det = log_det + ld
        if self.split:
            keep = self.out_shape[-1]
            return h[..., :keep], h[..., keep:], log_det
        return h, None, log_det

    def inverse(self, h: jax.Array, factored: jax.Array | None, cond: jax.Array | None) -> jax.Array:
        if self.split:
            h = jnp.concatenate([h, factored], axis=-1)
        if self.post is not None:
            h, _ = self.post.inverse(h, cond=cond)
        if self.squeeze_input:
            h = unsqueeze(h)
        if self.pre is not None:
            h, _ = self.pre.inverse(h, cond=cond)
        return h


class MultiScaleFlow(FlowModel):
    """A `FlowModel` made of `Level`s; subclasses fill `self.levels` in `_build`.

    Subclasses call `self._set_levels(levels, flatten=...)` at the end of `_build`.
    """

    def _set_levels(self, levels: list[Level], *, flatten: bool = False) -> None:
        self.levels = nnx.List(levels)
        self.flatten = bool(flatten)
        sizes = [math.prod(lvl.factored_shape) for lvl in levels if lvl.split]
        self.latent_sizes = (*sizes, math.prod(levels[-1].out_shape))
        if sum(self.latent_sizes) != self.num_dims:
            raise AssertionError(f"latent sizes {self.latent_sizes} do not add up to {self.num_dims}")

    def _to_latent(self, h: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        b = h.shape[0]
        if self.flatten:
            h = h.reshape(b, self.num_dims)
        parts, log_det = [], jnp.zeros((b,), jnp.float32)
        for level in self.levels:
            h, factored, ld = level.forward(h, cond)
            log_det = log_det + ld
            if factored is not None:
                parts.append(factored.reshape(b, -1))
        parts.append(h.reshape(b, -1))
        return jnp.concatenate(parts, axis=-1), log_det

    def _from_latent(self, z: jax.Array, cond: jax.Array | None) -> jax.Array:
        b = z.shape[0]
        offsets = [0]
        for size in self.latent_sizes:
            offsets.append(offsets[-1] + size)
        pieces = [z[:, a:e] for a, e in zip(offsets[:-1], offsets[1:])]
        h = pieces[-1].reshape(b, *self.levels[-1].out_shape)
        factored = iter(reversed(pieces[:-1]))
        for level in reversed(self.levels):
            part = next(factored).reshape(b, *level.factored_shape) if level.split else None
            h = level.inverse(h, part, cond)
        return h.reshape(b, *self.input_shape)
