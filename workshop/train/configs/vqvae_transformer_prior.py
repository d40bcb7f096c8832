"""A decoder-only Transformer prior over the 7x7 code maps of a trained VQ-VAE (vqvae.py).

The VQGAN recipe of Esser et al. 2021 (arXiv:2012.09841) on a VQ-VAE (van
den Oord et al. 2017, arXiv:1711.00937): the code map, read in raster order,
is a sequence of 49 tokens from the codebook of 128, modelled by a GPT-style
Transformer (4 layers, width 128, 4 heads) and decoded with a key/value cache.
The same first stage as vqvae_pixelcnn_prior.py.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/vqvae_transformer_prior.py --workdir=runs/vqvae_transformer_prior \
        --config.model.parameters.autoencoder_workdir=runs/vqvae
"""

from workshop.train.configs import vqvae_pixelcnn_prior, with_defaults


def get_config():
    config = vqvae_pixelcnn_prior.get_config()
    config.name = "vqvae_transformer_prior"
    config.model.parameters.prior = dict(
        model_type="transformer", input_shape=(49,),
        parameters=dict(num_layers=4, num_heads=4, embed_dim=128, positions="learned"))
    config.training.optimizer.learning_rate = 5e-4
    return with_defaults(config)
