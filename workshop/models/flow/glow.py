"""Glow: ActNorm, invertible 1x1 convolution and coupling, in a multi-scale architecture.

Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1
Convolutions" (arXiv:1807.03039). On images each of the `num_levels` levels
squeezes, runs `num_flows` steps of [ActNorm, invertible 1x1 conv (LU),
affine (Glow's sigmoid scale) or additive coupling on channel halves], and (except the last)
factors out half of the channels. The factored-out halves get the standard
normal prior (Real NVP's choice) rather than Glow's learned conditional
prior. On vectors it is `num_flows` steps with an LU linear layer in place of
the 1x1 convolution. Steps of a level are one `lax.scan` (`stack.py`), so
construction and compilation stay fast for deep models.
"""

from __future__ import annotations

from typing import Any, Literal

from flax import nnx
from pydantic import Field, PositiveInt

from workshop.core.registry import register_model
from workshop.models.flow.base import FlowParameters
from workshop.models.flow.bijectors import ActNorm, Invertible1x1Conv
from workshop.models.flow.coupling import Coupling
from workshop.models.flow.multiscale import Level, MultiScaleFlow, check_vector_levels, image_levels
from workshop.models.flow.stack import Chain

__all__ = ["COUPLING_TYPES", "Glow", "GlowParameters"]

COUPLING_TYPES = ("affine", "additive")
# Glow's affine coupling bounds the expansion per layer (see elementwise.py).
_TRANSFORM = {"affine": "affine_sigmoid", "additive": "additive"}


class GlowParameters(FlowParameters):
    """`parameters` of "glow"."""

    coupling_type: Literal["affine", "additive"] = Field("affine", description="coupling transform")
    num_levels: PositiveInt | None = Field(
        None, description="scales (images); default: as many as the image size allows, at most 3")
    logit_alpha: float = Field(0.0, ge=0.0, lt=0.5, description="0: Glow's centring y - 1/2; > 0: logit preprocessing")


@register_model("glow", family="flow", parameters=GlowParameters,
                description="Glow: ActNorm + invertible 1x1 conv + coupling, multi-scale (Kingma & Dhariwal 2018)")
class Glow(MultiScaleFlow):
    """Glow on images `(H, W, C)` or vectors `(D,)`; `num_flows` steps per level."""

    _schema = GlowParameters

    def _step(self, p: Any):
        if p.coupling_type not in COUPLING_TYPES:
            raise ValueError(f"coupling_type {p.coupling_type!r} is unknown; valid: {', '.join(COUPLING_TYPES)}")

        def make(index, shape, *, rngs):
            del index
            c = shape[-1]
            return Chain([
                ActNorm(c),
                Invertible1x1Conv(c, rngs=rngs),
                Coupling(shape, "channel", 0, _TRANSFORM[p.coupling_type], hidden_channels=p.hidden_channels,
                         hidden_features=p.hidden_features, cond_features=self.cond_features, rngs=rngs),
            ])
        return make

    def _build(self, p: Any, *, rngs: nnx.Rngs) -> None:
        step = self._step(p)
        if not self.is_image:
            check_vector_levels(self.model_type, self.input_shape, p.num_levels)
            self._set_levels([Level(self.input_shape, pre=step, num_pre=self.num_flows, rngs=rngs)])
            return
        num_levels = image_levels(self.model_type, self.input_shape, p.num_levels, squeezes_per_level=1)
        levels, shape = [], self.input_shape
        for i in range(num_levels):
            level = Level(shape, squeeze_input=True, post=step, num_post=self.num_flows,
                          split=i < num_levels - 1, rngs=rngs)
            levels.append(level)
            shape = level.out_shape
        self._set_levels(levels)
