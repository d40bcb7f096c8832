"""Diffusion models. Importing this package registers its model types.

* "ddpm" (`DDPM`): Ho et al. 2020 with a U-Net or DiT denoiser, epsilon/x0/v
  prediction, linear/cosine/sigmoid schedules, min-SNR weighting, classifier-
  free guidance, four compiled samplers and a variational bound `log_prob`.
* "ddpm_super_resolution" (`SuperResolutionDDPM`): a DDPM conditioned on a
  low-resolution image; `super_resolve` upsamples a user's images with it.
* "flow_matching" (`FlowMatching`): flow matching on the optimal-transport
  path (Lipman et al. 2023) with the same networks; Euler, Heun and adaptive
  Dormand-Prince sampling and an exact ODE likelihood (`ode.py`).
* "edm" (`EDM`): Karras et al. 2022's preconditioned denoiser, log-normal
  noise levels and loss weight, with their deterministic Heun and stochastic
  samplers (the same loop as DDPM's "heun").
* `inpaint`: fills masked pixels of a user's images with any trained DDPM.
"""

from workshop.models.diffusion.ddpm import BACKBONES as BACKBONES
from workshop.models.diffusion.ddpm import DDPM as DDPM
from workshop.models.diffusion.ddpm import DDPMParameters as DDPMParameters
from workshop.models.diffusion.dit import DiT as DiT
from workshop.models.diffusion.edm import EDM as EDM
from workshop.models.diffusion.edm import EDMParameters as EDMParameters
from workshop.models.diffusion.flow_matching import FlowMatching as FlowMatching
from workshop.models.diffusion.flow_matching import FlowMatchingParameters as FlowMatchingParameters
from workshop.models.diffusion.ode import SOLVERS as ODE_SOLVERS
from workshop.models.diffusion.ode import ode_log_likelihood as ode_log_likelihood
from workshop.models.diffusion.samplers import SAMPLERS as SAMPLERS
from workshop.models.diffusion.schedules import BETA_SCHEDULES as BETA_SCHEDULES
from workshop.models.diffusion.schedules import NoiseSchedule as NoiseSchedule
from workshop.models.diffusion.schedules import make_schedule as make_schedule
from workshop.models.diffusion.super_resolution import SuperResolutionDDPM as SuperResolutionDDPM
from workshop.models.diffusion.super_resolution import SuperResolutionParameters as SuperResolutionParameters
from workshop.models.diffusion.super_resolution import average_pool as average_pool
from workshop.models.diffusion.super_resolution import super_resolve as super_resolve
from workshop.models.diffusion.unet import UNet as UNet

__all__ = [
    "BACKBONES",
    "BETA_SCHEDULES",
    "DDPM",
    "DDPMParameters",
    "DiT",
    "EDM",
    "EDMParameters",
    "FlowMatching",
    "FlowMatchingParameters",
    "NoiseSchedule",
    "ODE_SOLVERS",
    "SAMPLERS",
    "SuperResolutionDDPM",
    "SuperResolutionParameters",
    "UNet",
    "average_pool",
    "make_schedule",
    "ode_log_likelihood",
    "super_resolve",
]
