"""Guide import path for the model factories (re-exports `workshop.models.factories`)."""

from workshop.models.factories import (  # noqa: F401
    create_autoregressive as create_autoregressive,
    create_diffusion as create_diffusion,
    create_ebm as create_ebm,
    create_flow as create_flow,
    create_gan as create_gan,
    create_model as create_model,
    create_vae as create_vae,
)

__all__ = [
    "create_autoregressive",
    "create_diffusion",
    "create_ebm",
    "create_flow",
    "create_gan",
    "create_model",
    "create_vae",
]
