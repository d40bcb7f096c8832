"""The VAE family: "vae", "beta-vae", "cvae" and "vqvae".

Importing this package registers the four model types with
`workshop.core.registry`; `workshop.models.factories.create_vae` builds them.
"""

from workshop.models.vae.vae import CVAE as CVAE
from workshop.models.vae.vae import VAE as VAE
from workshop.models.vae.vae import BetaVAEParameters as BetaVAEParameters
from workshop.models.vae.vae import CVAEParameters as CVAEParameters
from workshop.models.vae.vae import VAEParameters as VAEParameters
from workshop.models.vae.vector_quantizer import CodebookEMA as CodebookEMA
from workshop.models.vae.vector_quantizer import VectorQuantizer as VectorQuantizer
from workshop.models.vae.vqvae import VQVAE as VQVAE
from workshop.models.vae.vqvae import VQVAEParameters as VQVAEParameters

__all__ = [
    "BetaVAEParameters",
    "CVAE",
    "CVAEParameters",
    "CodebookEMA",
    "VAE",
    "VAEParameters",
    "VQVAE",
    "VQVAEParameters",
    "VectorQuantizer",
]
