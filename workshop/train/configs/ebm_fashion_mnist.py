"""A convolutional energy-based model of Fashion-MNIST (grey levels in [0, 1]), persistent CD.

Du & Mordatch 2019 (arXiv:1903.08689): a replay buffer of Langevin chains
(5% restarted from uniform noise), gradient steps of 10 with each gradient
component clipped to 0.01 (at most 0.1 per pixel per step) and noise std
0.005, states clipped to [0, 1], energy regulariser alpha = 1, Adam with
beta1 = 0. The energy network is two stride-2 SiLU convolutions (16, 32
channels) and a linear head, small because XLA's CPU convolutions run far
below the matmul peak.

Measured on the shared 2-core CPU (other jobs running): 3-5 train steps/s
(batch 64, 20 Langevin steps each; 54 Langevin steps/s for 64 chains), 600
steps in 4 minutes wall. Samples after 600 steps are noisy garment
silhouettes; image EBMs need far longer runs (a GPU). The AIS likelihood is
not run at the end (`final_eval=False`): in 784 dimensions a few hundred
chains give a number without a usable error bar; use ebm_toy.py for
likelihoods. Sample grids land in <workdir>/samples.

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/ebm_fashion_mnist.py \
        --workdir=/tmp/ebm_fashion_mnist
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "ebm_fashion_mnist"
    config.model = dict(
        model_type="ebm",
        input_shape=(28, 28, 1),
        backbone_type="conv",
        encoder_features=[16, 32],
        parameters=dict(
            objective="cd",
            sampler="langevin",
            mcmc_steps=20,
            generate_steps=60,
            step_size=10.0,
            noise_scale=0.005,
            grad_clip=0.01,
            init_range=(0.0, 1.0),
            clip_samples=True,
            buffer_size=5000,
            reinit_fraction=0.05,
            energy_reg=1.0,
            max_energy=1000.0,
        ),
    )
    config.training = dict(
        num_steps=1000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=3e-4, b1=0.0, b2=0.999),
        ema_decay=None,
        log_every=50,
        eval_every=500,
        eval_batches=1,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=250,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=64, image=dict(binarize="none"))
    config.eval = dict(final_eval=False)
    return with_defaults(config)
