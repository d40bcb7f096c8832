"""Two-stage models: a learned prior over the codes of a frozen, trained autoencoder.

Importing this package registers "latent" with `workshop.core.registry`;
`workshop.models.factories.create_model` builds it. The first stage is read
from its workdir by the loader that `workshop.train.stage_one` installs.
"""

from workshop.models.latent.latent import LatentModel as LatentModel
from workshop.models.latent.latent import LatentParameters as LatentParameters
from workshop.models.latent.stage_one import FrozenWeight as FrozenWeight
from workshop.models.latent.stage_one import StageOne as StageOne
from workshop.models.latent.stage_one import StageOneChangedError as StageOneChangedError
from workshop.models.latent.stage_one import content_hash as content_hash
from workshop.models.latent.stage_one import estimate_latent_scale as estimate_latent_scale
from workshop.models.latent.stage_one import freeze as freeze
from workshop.models.latent.stage_one import load_stage_one as load_stage_one
from workshop.models.latent.stage_one import set_stage_one_loader as set_stage_one_loader

__all__ = [
    "FrozenWeight",
    "LatentModel",
    "LatentParameters",
    "StageOne",
    "StageOneChangedError",
    "content_hash",
    "estimate_latent_scale",
    "freeze",
    "load_stage_one",
    "set_stage_one_loader",
]
