"""The default VAE with a convolutional encoder and decoder (stride-2 stages).

Convolutions run far below the matmul peak on XLA's CPU backend
(BENCHMARKS.md): on a 2-core CPU this config trains at a few steps/s, so it is
meant for a GPU, or for a short run:

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/conv_vae.py \
        --config.training.num_steps=500 --workdir=runs/conv_vae
"""

from workshop.train.configs import vae, with_defaults


def get_config():
    config = vae.get_config()
    config.name = "conv_vae"
    config.model.backbone_type = "conv"
    config.model.encoder_features = [32, 64]
    config.model.decoder_features = [64, 32]
    config.model.parameters.upsampling = "subpixel"
    config.training.num_steps = 3000
    config.training.optimizer.learning_rate = 2e-3
    config.training.optimizer.warmup_steps = 100
    config.training.ema_decay = 0.995
    config.training.eval_every = 1000
    config.training.checkpoint_every = 500
    config.training.sample_every = 1000
    return with_defaults(config)
