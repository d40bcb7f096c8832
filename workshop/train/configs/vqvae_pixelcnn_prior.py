"""A gated PixelCNN prior over the 7x7 code maps of a trained VQ-VAE (vqvae.py).

van den Oord et al. 2017 (arXiv:1711.00937, section 4.1): after the VQ-VAE
is trained, a PixelCNN learns the distribution of its code maps (here 7x7
codes from a codebook of 128, one 128-way softmax per code) and samples are
its code maps decoded by the VQ-VAE. The PixelCNN (van den Oord et al. 2016,
arXiv:1606.05328) has 8 gated layers of 64 features. The code map has 49
positions against 784 pixels, so sampling takes 49 sequential steps.

`prior_nll_bits_per_dim` in the metrics is the exact negative
log-likelihood of the codes in bits per code; the final test figure is the
bound through the decoder, log p(x|z_q) + log p(codes).

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/vqvae.py --workdir=runs/vqvae
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/vqvae_pixelcnn_prior.py --workdir=runs/vqvae_pixelcnn_prior \
        --config.model.parameters.autoencoder_workdir=runs/vqvae
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=runs/vqvae_pixelcnn_prior \
        --num_samples=1000 --quality
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "vqvae_pixelcnn_prior"
    config.model = dict(
        model_type="latent",
        input_shape=(28, 28, 1),
        parameters=dict(
            autoencoder_workdir="runs/vqvae",
            prior=dict(model_type="pixelcnn",
                       parameters=dict(num_layers=8, features=64, kernel_size=3, first_kernel_size=7,
                                       output="softmax")),
        ),
    )
    config.training = dict(
        num_steps=3000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.05, grad_clip_norm=100.0),
        ema_decay=0.995,
        log_every=100,
        eval_every=1000,
        eval_batches=2,
        checkpoint_every=1000,
        keep_checkpoints=2,
        sample_every=3000,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=500, image=dict(binarize="none"))
    config.eval = dict(likelihood_samples=1, max_test_batches=2)
    return with_defaults(config)
