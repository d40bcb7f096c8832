"""DCGAN on Fashion-MNIST (grey levels in [0, 1]), kept small for a CPU.

Radford, Metz & Chintala 2015 (arXiv:1511.06434): a generator of stride-2
transposed convolutions with batch normalisation and ReLU and a bounded
output, a discriminator of stride-2 4x4 convolutions with LeakyReLU(0.2) and
batch normalisation after every convolution but the first (both by the
"auto" norms of `parameters`), Adam with lr 2e-4 and b1=0.5, the
non-saturating loss. Difference from the paper: 16/32 channels instead of
128-1024, because XLA's CPU convolutions reach ~5 % of the matmul peak here
(BENCHMARKS.md).

Results: BENCHMARKS.md, "The other families". For
recognisable garments on a CPU, `wgan_gp.py` (MLP players) is the config to
run; this one is meant for an accelerator, where wider channels are cheap.

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/dcgan.py --workdir=/tmp/dcgan
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "dcgan"
    config.model = dict(
        model_type="dcgan",
        input_shape=(28, 28, 1),
        latent_dim=64,
        backbone_type="conv",
        encoder_features=[16, 32],  # discriminator channels (28 -> 14 -> 7)
        decoder_features=[32, 16],  # generator channels (7 -> 14 -> 28)
        parameters=dict(upsampling="subpixel"),
    )
    config.training = dict(
        num_steps=3000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999),
        ema_decay=0.999,
        log_every=50,
        eval_every=1000,
        eval_batches=2,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=500,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=500, image=dict(binarize="none"))
    config.eval = dict(final_eval=False)
    return with_defaults(config)
