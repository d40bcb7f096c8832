"""DCGAN on Fashion-MNIST (grey levels in [0, 1]), kept small for a CPU.

Radford, Metz & Chintala 2015 (arXiv:1511.06434): a generator of stride-2
transposed convolutions with ReLU and a bounded output, a discriminator of
stride-2 4x4 convolutions with LeakyReLU(0.2), Adam with lr 2e-4 and b1=0.5,
the non-saturating loss. Differences from the paper: 16/32 channels instead of
128-1024 and no batch normalisation, because XLA's CPU convolutions run at
~15 GFLOP/s on this machine (BENCHMARKS.md).

Measured (2 CPU cores shared with other jobs, load average 11-15, when a
1024^2 matmul reached 87 GFLOP/s instead of ~450): 1.6-2.6 steps/s at batch 64
(1.16 GFLOP per step by XLA's cost analysis); 600 steps took 252 s wall and
gave diverse blobs, 2000 steps (resumed from 600) 15 more minutes and gave
garment-like silhouettes with checkerboard artefacts, not yet sharp
Fashion-MNIST items. The full 3000 steps need ~20-30 min on this machine.

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/dcgan.py \
        --config.training.num_steps=500 --workdir=/tmp/dcgan
"""

import ml_collections


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
        parameters=dict(),
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
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=500, binarize="none")
    config.eval = dict(final_eval=False)
    return config
