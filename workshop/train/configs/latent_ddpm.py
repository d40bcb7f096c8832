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

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "latent_ddpm"
    config.model = dict(
        model_type="latent",
        input_shape=(28, 28, 1),
        parameters=dict(
            autoencoder_workdir="runs/kl_autoencoder",
            latent_range=3.0,
            prior=dict(
                model_type="ddpm",
                num_timesteps=1000,
                backbone_type="dit",
                parameters=dict(beta_schedule="cosine", prediction_type="epsilon", loss_weighting="plain",
                                patch_size=1, hidden_size=128, depth=4, num_heads=4, sampler="ddim",
                                sampling_steps=50),
            ),
        ),
    )
    config.training = dict(
        num_steps=1500,
        seed=0,
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.1, weight_decay=0.0, grad_clip_norm=1.0),
        ema_decay=0.995,
        log_every=50,
        eval_every=500,
        eval_batches=1,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=1500,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=500, binarize="none")
    config.eval = dict(likelihood_samples=16, max_test_batches=2)
    config = with_defaults(config)
    # None until estimated (then recorded in config.json); typed, so it can be set from the command line.
    config.model.parameters.latent_scale = config_dict.placeholder(float)
    return config
