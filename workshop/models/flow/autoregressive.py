"""Masked and inverse autoregressive flows: "maf" and "iaf".

* "maf": Papamakarios, Pavlakou & Murray 2017, "Masked Autoregressive Flow for
  Density Estimation" (arXiv:1705.07057). `num_flows` MADE affine layers
  with the order reversed between them; density evaluation is one parallel
  pass per layer, sampling D sequential passes per layer.
* "iaf": Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016,
  "Improved Variational Inference with Inverse Autoregressive Flow"
  (arXiv:1606.04934): the same layers inverted, so sampling is parallel and
  density evaluation (hence training by maximum likelihood) is sequential,
  D passes per layer: fine for low-dimensional data, slow for images.

Images are flattened to `[B, H*W*C]` in raster order. The paper's batch
normalisation between layers is left out.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from workshop.core.registry import register_model
from workshop.models.flow.base import FlowParameters
from workshop.models.flow.bijectors import Reverse
from workshop.models.flow.made import AutoregressiveLayer
from workshop.models.flow.multiscale import Level, MultiScaleFlow
from workshop.models.flow.stack import Chain

__all__ = ["IAF", "MAF", "MAFParameters", "autoregressive_step"]


class MAFParameters(FlowParameters):
    """`parameters` of "maf" and "iaf" (`hidden_features` are the MADE widths)."""


def autoregressive_step(transform: str, p: Any, cond_features: int, *, inverted: bool = False):
    """A step factory: [autoregressive layer, reverse the order]."""

    def make(index, shape, *, rngs):
        del index
        layer = AutoregressiveLayer(shape[0], transform, hidden_features=p.hidden_features,
                                    cond_features=cond_features, num_bins=getattr(p, "num_bins", 8),
                                    tail_bound=getattr(p, "tail_bound", 3.0), inverted=inverted, rngs=rngs)
        return Chain([layer, Reverse()])
    return make


@register_model("maf", family="flow", parameters=MAFParameters,
                description="Masked autoregressive flow (Papamakarios et al. 2017)")
class MAF(MultiScaleFlow):
    """`num_flows` MADE affine layers on vectors `(D,)` or flattened images."""

    _schema = MAFParameters
    _inverted = False

    def _build(self, p: Any, *, rngs: nnx.Rngs) -> None:
        step = autoregressive_step("affine", p, self.cond_features, inverted=self._inverted)
        self._set_levels([Level((self.num_dims,), pre=step, num_pre=self.num_flows, rngs=rngs)], flatten=True)


@register_model("iaf", family="flow", parameters=MAFParameters,
                description="Inverse autoregressive flow (Kingma et al. 2016): parallel sampling")
class IAF(MAF):
    """MAF with every layer inverted: parallel sampling, sequential density."""

    _inverted = True
