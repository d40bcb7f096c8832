"""Neural spline flows: rational-quadratic spline couplings or autoregressive layers.

Durkan, Bekasov, Murray & Papamakarios 2019, "Neural Spline Flows"
(arXiv:1906.04032). `transform="coupling"` (RQ-NSF (C)): `num_flows` steps
of [LU linear layer / invertible 1x1 conv, spline coupling with alternating
masks] - checkerboard masks on images (single scale), alternating halves on
vectors. `transform="autoregressive"` (RQ-NSF (AR)): `num_flows` MADE spline
layers with the order reversed between them (images flattened). Splines
have `num_bins` bins on `[-tail_bound, tail_bound]` and are the identity
outside, so `tail_bound` should cover the bulk of the (preprocessed) data.
"""

from __future__ import annotations

from typing import Any, Literal

from flax import nnx
from pydantic import Field, PositiveFloat, PositiveInt

from workshop.core.registry import register_model
from workshop.models.flow.autoregressive import autoregressive_step
from workshop.models.flow.base import FlowParameters
from workshop.models.flow.bijectors import Invertible1x1Conv
from workshop.models.flow.coupling import Coupling
from workshop.models.flow.multiscale import Level, MultiScaleFlow
from workshop.models.flow.stack import Chain

__all__ = ["NSF", "NSFParameters"]


class NSFParameters(FlowParameters):
    """`parameters` of "nsf"."""

    transform: Literal["coupling", "autoregressive"] = Field("coupling", description="layer type")
    num_bins: PositiveInt = Field(8, description="spline bins K")
    tail_bound: PositiveFloat = Field(3.0, description="the spline acts on [-tail_bound, tail_bound]")


@register_model("nsf", family="flow", parameters=NSFParameters,
                description="Neural spline flow, coupling or autoregressive (Durkan et al. 2019)")
class NSF(MultiScaleFlow):
    """Rational-quadratic spline flow on vectors `(D,)` or images `(H, W, C)`."""

    _schema = NSFParameters

    def _coupling_step(self, p: Any):
        def make(index, shape, *, rngs):
            return Chain([
                Invertible1x1Conv(shape[-1], rngs=rngs),
                Coupling(shape, "checkerboard", index % 2, "spline", hidden_channels=p.hidden_channels,
                         hidden_features=p.hidden_features, cond_features=self.cond_features,
                         num_bins=p.num_bins, tail_bound=p.tail_bound, rngs=rngs),
            ])
        return make

    def _build(self, p: Any, *, rngs: nnx.Rngs) -> None:
        if p.transform == "autoregressive":
            step = autoregressive_step("spline", p, self.cond_features)
            self._set_levels([Level((self.num_dims,), pre=step, num_pre=self.num_flows, rngs=rngs)], flatten=True)
        else:
            self._set_levels([Level(self.input_shape, pre=self._coupling_step(p), num_pre=self.num_flows,
                                    rngs=rngs)])
