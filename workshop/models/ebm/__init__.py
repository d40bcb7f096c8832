"""Energy-based models: the "ebm" model type, MCMC samplers, AIS and composition.

Importing this package registers "ebm" with `workshop.core.registry`;
`workshop.models.factories.create_ebm` builds it. The samplers (`langevin`,
`mala`, `hmc`) and `annealed_importance_sampling` take any energy function
`[B, *event_shape] -> [B]`.
"""

from workshop.models.ebm.ais import AISResult as AISResult
from workshop.models.ebm.ais import annealed_importance_sampling as annealed_importance_sampling
from workshop.models.ebm.composition import ProductOfEBMs as ProductOfEBMs
from workshop.models.ebm.ebm import EBM as EBM
from workshop.models.ebm.ebm import EBMParameters as EBMParameters
from workshop.models.ebm.ebm import ReplayBuffer as ReplayBuffer
from workshop.models.ebm.energy import EnergyNetwork as EnergyNetwork
from workshop.models.ebm.samplers import SamplerResult as SamplerResult
from workshop.models.ebm.samplers import hmc as hmc
from workshop.models.ebm.samplers import langevin as langevin
from workshop.models.ebm.samplers import mala as mala
from workshop.models.ebm.samplers import run_sampler as run_sampler

__all__ = [
    "AISResult",
    "EBM",
    "EBMParameters",
    "EnergyNetwork",
    "ProductOfEBMs",
    "ReplayBuffer",
    "SamplerResult",
    "annealed_importance_sampling",
    "hmc",
    "langevin",
    "mala",
    "run_sampler",
]
