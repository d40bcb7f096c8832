"""The GAN family: "dcgan", "wgan-gp", "sngan", "lsgan" and "hinge-gan".

Importing this package registers the five model types with
`workshop.core.registry`; `workshop.models.factories.create_gan` builds them
and the `Trainer` trains them through their `training_objective`. Any of them
becomes class-conditional (projection discriminator) with
`parameters.num_classes`.
"""

from workshop.models.gan.gan import GAN as GAN
from workshop.models.gan.gan import DCGANParameters as DCGANParameters
from workshop.models.gan.gan import GANParameters as GANParameters
from workshop.models.gan.gan import HingeGANParameters as HingeGANParameters
from workshop.models.gan.gan import LSGANParameters as LSGANParameters
from workshop.models.gan.gan import SNGANParameters as SNGANParameters
from workshop.models.gan.gan import WGANGPParameters as WGANGPParameters
from workshop.models.gan.networks import Discriminator as Discriminator
from workshop.models.gan.networks import Generator as Generator
from workshop.models.gan.spectral_norm import PowerIterationVector as PowerIterationVector
from workshop.models.gan.spectral_norm import SpectralNormConv as SpectralNormConv
from workshop.models.gan.spectral_norm import SpectralNormLinear as SpectralNormLinear
from workshop.models.gan.spectral_norm import power_iteration as power_iteration

__all__ = [
    "DCGANParameters",
    "Discriminator",
    "GAN",
    "GANParameters",
    "Generator",
    "HingeGANParameters",
    "LSGANParameters",
    "PowerIterationVector",
    "SNGANParameters",
    "SpectralNormConv",
    "SpectralNormLinear",
    "WGANGPParameters",
    "power_iteration",
]
