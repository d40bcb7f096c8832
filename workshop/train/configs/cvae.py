"""Conditional VAE (Sohn et al. 2015) on Fashion-MNIST labels; samples row by class."""

from workshop.train.configs import vae, with_defaults


def get_config():
    config = vae.get_config()
    config.name = "cvae"
    config.model.model_type = "cvae"
    config.model.parameters = dict(beta=1.0, reconstruction_loss="bernoulli", num_classes=10)
    config.training.num_samples = 100
    return with_defaults(config)
