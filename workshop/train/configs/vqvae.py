"""VQ-VAE (van den Oord et al. 2017) with EMA codebook updates on grey-level Fashion-MNIST."""

from workshop.train.configs import conv_vae, with_defaults


def get_config():
    config = conv_vae.get_config()
    config.name = "vqvae"
    config.model.model_type = "vqvae"
    config.model.latent_dim = 16
    config.model.parameters = dict(
        num_embeddings=128, commitment_cost=0.25, ema_decay=0.99, reconstruction_loss="discretized_logistic",
        upsampling="subpixel",
    )
    config.data.image.binarize = "none"
    config.eval.likelihood_samples = 1
    return with_defaults(config)
