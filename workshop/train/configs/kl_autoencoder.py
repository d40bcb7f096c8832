"""A convolutional KL autoencoder, 28x28x1 -> 7x7x4, as the first stage of latent diffusion.

Rombach et al. 2022 (arXiv:2112.10752, section 3 and appendix G): a
convolutional autoencoder whose latent is a spatial grid (here two stride-2
stages: a 7x7 map of 4 channels, downsampling factor f = 4, 196 numbers for
784 pixels), regularised towards N(0, I) by a KL term. Their KL weight is
tiny (1e-6 against a per-pixel L1 + perceptual loss) so that the latent keeps
the detail; here the reconstruction term is the discretized logistic
log-likelihood of the 8-bit image summed over pixels (Salimans et al. 2017)
and beta = 0.1 of the summed KL, a VAE leaning towards reconstruction. The
second stage (latent_ddpm.py) learns the prior over its posterior means.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/kl_autoencoder.py --workdir=runs/kl_autoencoder
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/latent_ddpm.py --workdir=runs/latent_ddpm \
        --config.model.parameters.autoencoder_workdir=runs/kl_autoencoder

CIFAR-10 layout data (32x32x3 -> 8x8x4): add
`--config.data.dataset=cifar10 --config.model.input_shape=32,32,3` to both stages.
"""

from workshop.train.configs import conv_vae, with_defaults


def get_config():
    config = conv_vae.get_config()
    config.name = "kl_autoencoder"
    config.model.encoder_features = (32, 64)
    config.model.decoder_features = (64, 32)
    config.model.parameters = dict(beta=0.1, reconstruction_loss="discretized_logistic", upsampling="subpixel",
                                   latent_channels=4)
    config.data.image.binarize = "none"
    config.eval.likelihood_samples = 16
    config.eval.test_binarize = "fixed"
    config.training.num_steps = 3000
    return with_defaults(config)
