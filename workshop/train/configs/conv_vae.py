"""The default VAE with a convolutional encoder and decoder (stride-2 stages).

The decoder upsamples by sub-pixel convolution (`parameters.upsampling`):
on XLA's CPU backend transposed convolutions' kernel gradients are ~17x
slower than their input gradients, and sub-pixel made the step 2.2x faster
and trained as well (BENCHMARKS.md, "Upsampling"). Still several times the
MLP VAE's cost per step on a 2-core CPU, so a short run:

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
