"""beta-VAE (Higgins et al. 2017): the default VAE with the KL term weighted by beta=4."""

from workshop.train.configs import vae, with_defaults


def get_config():
    config = vae.get_config()
    config.name = "beta_vae"
    config.model.model_type = "beta-vae"
    config.model.parameters.beta = 4.0
    return with_defaults(config)
