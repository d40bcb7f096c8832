"""Normalizing flows: "realnvp", "glow", "maf", "iaf" and "nsf".

Importing this package registers the model types with
`workshop.core.registry`; `workshop.models.factories.create_flow` builds
them. The bijectors (coupling, ActNorm, invertible 1x1 convolution, MADE
layers, splines, squeeze) are exported for composing other flows.
"""

from workshop.models.flow.autoregressive import IAF as IAF
from workshop.models.flow.autoregressive import MAF as MAF
from workshop.models.flow.autoregressive import MAFParameters as MAFParameters
from workshop.models.flow.base import FlowModel as FlowModel
from workshop.models.flow.base import FlowParameters as FlowParameters
from workshop.models.flow.bijectors import ActNorm as ActNorm
from workshop.models.flow.bijectors import Invertible1x1Conv as Invertible1x1Conv
from workshop.models.flow.bijectors import Permutation as Permutation
from workshop.models.flow.bijectors import Reverse as Reverse
from workshop.models.flow.bijectors import squeeze as squeeze
from workshop.models.flow.bijectors import unsqueeze as unsqueeze
from workshop.models.flow.coupling import Coupling as Coupling
from workshop.models.flow.coupling import coupling_mask as coupling_mask
from workshop.models.flow.glow import Glow as Glow
from workshop.models.flow.glow import GlowParameters as GlowParameters
from workshop.models.flow.made import MADE as MADE
from workshop.models.flow.made import AutoregressiveLayer as AutoregressiveLayer
from workshop.models.flow.nsf import NSF as NSF
from workshop.models.flow.nsf import NSFParameters as NSFParameters
from workshop.models.flow.realnvp import RealNVP as RealNVP
from workshop.models.flow.realnvp import RealNVPParameters as RealNVPParameters
from workshop.models.flow.spline import rational_quadratic_spline as rational_quadratic_spline
from workshop.models.flow.stack import Chain as Chain
from workshop.models.flow.stack import StackedSteps as StackedSteps

__all__ = [
    "AutoregressiveLayer",
    "ActNorm",
    "Chain",
    "Coupling",
    "FlowModel",
    "FlowParameters",
    "Glow",
    "GlowParameters",
    "IAF",
    "Invertible1x1Conv",
    "MADE",
    "MAF",
    "MAFParameters",
    "NSF",
    "NSFParameters",
    "Permutation",
    "RealNVP",
    "RealNVPParameters",
    "Reverse",
    "StackedSteps",
    "coupling_mask",
    "rational_quadratic_spline",
    "squeeze",
    "unsqueeze",
]
