"""Latent diffusion: a DDPM over the 7x7x4 latents of the KL autoencoder (kl_autoencoder.py).

Rombach et al. 2022 (arXiv:2112.10752): the first stage is frozen, its
posterior means are scaled to unit variance (`latent_scale`, estimated on the
training data and recorded in config.json) and a diffusion model learns
their distribution; samples are decoded by the first stage. The prior is a
DiT (Peebles & Xie 2023, arXiv:2212.09748) with 1x1 patches, one token per
latent cell (49), cosine schedule, epsilon prediction, DDIM-50 sampling.
The pixel DDPM configs (ddpm_dit.py, ddpm_unet.py) are its baselines.

Train the first stage, then this one (`autoencoder_workdir` names the first):

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/kl_autoencoder.py --workdir=runs/kl_autoencoder
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/latent_ddpm.py --workdir=runs/latent_ddpm \
        --config.model.parameters.autoencoder_workdir=runs/kl_autoencoder
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=runs/latent_ddpm \
        --num_samples=1000 --quality

The final test-set figure is the bound through the decoder (latent.py's
module docstring), labelled as such in final_metrics.json.
"""

import ml_collections
from ml_collections import config_dict

from workshop.train.configs import ddpm_dit, with_defaults


def get_config() -> ml_collections.ConfigDict:
    # The pixel baseline's DiT (1x1 patches over the 7x7 latents), training budget, data and evaluation.
    pixel = ddpm_dit.get_config()
    prior = pixel.model.to_dict()
    prior.pop("input_shape")  # the prior's input shape is the autoencoder's code shape
    prior["parameters"]["patch_size"] = 1
    config = ml_collections.ConfigDict()
    config.name = "latent_ddpm"
    config.model = dict(
        model_type="latent",
        input_shape=(28, 28, 1),
        parameters=dict(autoencoder_workdir="runs/kl_autoencoder", latent_range=3.0, prior=prior),
    )
    config.training = pixel.training
    config.data = pixel.data
    config.eval = pixel.eval
    config = with_defaults(config)
    # None until estimated (then recorded in config.json); typed, so it can be set from the command line.
    config.model.parameters.latent_scale = config_dict.placeholder(float)
    return config
