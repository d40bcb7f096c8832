"""Default config: a convolutional VAE on dynamically binarized Fashion-MNIST.

Kingma & Welling 2013 (arXiv:1312.6114) with a Bernoulli decoder; trains in a
few minutes on a 2-core CPU. Variants (beta_vae.py, cvae.py, vqvae.py) import
this and override a few fields.

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/vae.py \
        --config.training.num_steps=500 --workdir=runs/vae
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "vae"
    config.model = dict(
        model_type="vae",
        input_shape=(28, 28, 1),
        latent_dim=32,
        backbone_type="conv",
        encoder_features=[32, 64],
        decoder_features=[64, 32],
        parameters=dict(beta=1.0, reconstruction_loss="bernoulli"),
    )
    config.training = dict(
        num_steps=3000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.05, grad_clip_norm=100.0),
        ema_decay=0.995,
        log_every=50,
        eval_every=1000,
        eval_batches=4,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=1000,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=128, eval_batch_size=500, binarize="dynamic")
    config.eval = dict(iwae_samples=100, test_binarize="fixed")
    return config
