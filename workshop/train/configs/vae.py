"""Default config: a VAE with MLP encoder and decoder on dynamically binarized Fashion-MNIST.

Kingma & Welling 2013 (arXiv:1312.6114) with a Bernoulli decoder, the
architecture family of the IWAE benchmarks (Burda et al. 2015,
arXiv:1509.00519). About 250 train steps/s on a 2-core CPU (BENCHMARKS.md), so
`tools/bazel run //workshop/train:train` finishes in a couple of minutes,
final importance-weighted test likelihood included. conv_vae.py is the
convolutional variant; beta_vae.py and cvae.py import this file and override a
few fields.

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/vae.py \
        --config.training.num_steps=500 --workdir=runs/vae
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "vae"
    config.model = dict(
        model_type="vae",
        input_shape=(28, 28, 1),
        latent_dim=32,
        backbone_type="mlp",
        encoder_features=[512, 256],
        decoder_features=[256, 512],
        parameters=dict(beta=1.0, reconstruction_loss="bernoulli"),
    )
    config.training = dict(
        num_steps=20000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=200,
                       final_lr_fraction=0.05, grad_clip_norm=100.0),
        ema_decay=0.999,
        log_every=100,
        eval_every=5000,
        eval_batches=4,
        checkpoint_every=2000,
        keep_checkpoints=2,
        sample_every=5000,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=128, eval_batch_size=500, image=dict(binarize="dynamic"))
    config.eval = dict(likelihood_samples=100, test_binarize="fixed")
    return with_defaults(config)
