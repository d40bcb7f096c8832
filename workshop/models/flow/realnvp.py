"""Real NVP: affine coupling layers in a multi-scale architecture.

Dinh, Sohl-Dickstein & Bengio 2016, "Density estimation using Real NVP"
(arXiv:1605.08803). On images each level but the last runs `num_flows`
checkerboard couplings, squeezes, runs `num_flows` channel couplings and
factors out half of the channels; the last level runs `num_flows + 1`
checkerboard couplings (the paper's 3 / 3 / 4 pattern for `num_flows=3`).
Masks alternate between consecutive couplings. On vectors it is
`num_flows` affine couplings with alternating masks and MLP conditioners.
The paper's batch normalisation is left out (couplings start at the
identity, and the affine scales are bounded, see `elementwise.py`).
"""

from __future__ import annotations

from typing import Any

from flax import nnx
from pydantic import Field, PositiveInt

from workshop.core.registry import register_model
from workshop.models.flow.base import FlowParameters
from workshop.models.flow.coupling import Coupling
from workshop.models.flow.multiscale import Level, MultiScaleFlow, check_vector_levels, image_levels

__all__ = ["RealNVP", "RealNVPParameters"]


class RealNVPParameters(FlowParameters):
    """`parameters` of "realnvp"."""

    num_levels: PositiveInt | None = Field(
        None, description="scales (images); default: as many as the image size allows, at most 3")


@register_model("realnvp", family="flow", parameters=RealNVPParameters,
                description="Real NVP: multi-scale affine coupling flow (Dinh et al. 2016)")
class RealNVP(MultiScaleFlow):
    """Real NVP on images `(H, W, C)` or vectors `(D,)`; see the module docstring."""

    _schema = RealNVPParameters

    def _coupling(self, mask_type: str, p: Any):
        def make(index, shape, *, rngs):
            return Coupling(shape, mask_type, index % 2, "affine", hidden_channels=p.hidden_channels,
                            hidden_features=p.hidden_features, cond_features=self.cond_features, rngs=rngs)
        return make

    def _build(self, p: Any, *, rngs: nnx.Rngs) -> None:
        k = self.num_flows
        if not self.is_image:
            check_vector_levels(self.model_type, self.input_shape, p.num_levels)
            self._set_levels([Level(self.input_shape, pre=self._coupling("checkerboard", p), num_pre=k, rngs=rngs)])
            return
        num_levels = image_levels(self.model_type, self.input_shape, p.num_levels, squeezes_per_level=0)
        levels, shape = [], self.input_shape
        for _ in range(num_levels - 1):
            level = Level(shape, pre=self._coupling("checkerboard", p), num_pre=k, squeeze_input=True,
                          post=self._coupling("channel", p), num_post=k, split=True, rngs=rngs)
            levels.append(level)
            shape = level.out_shape
        levels.append(Level(shape, pre=self._coupling("checkerboard", p), num_pre=k + 1, rngs=rngs))
        self._set_levels(levels)
