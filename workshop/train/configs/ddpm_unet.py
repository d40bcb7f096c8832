"""DDPM with the U-Net of Ho et al. 2020 on 8-bit Fashion-MNIST.

Ho, Jain & Abbeel 2020 (arXiv:2006.11239): a two-level U-Net (32 and 64
channels at 28x28 and 14x14, one residual block per level, self-attention at
14x14 and in the middle), linear schedule, T = 1000, epsilon prediction,
DDIM-50 samples (Song et al. 2021, arXiv:2010.02502). Convolutions run far
below the matmul peak on XLA's CPU backend, so this config is meant for an
accelerator or a short run; ddpm_dit.py is the CPU-friendly one.
Measured on the same shared 2-core CPU: 1.5 CPU-s per step at batch 64
(0.42 steps/s), about 6x the DiT's cost, so 1000 steps take about 40 min
here.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/ddpm_unet.py --workdir=/tmp/unet --config.training.num_steps=200
"""

from workshop.train.configs import ddpm_dit


def get_config():
    config = ddpm_dit.get_config()
    config.name = "ddpm_unet"
    config.model.backbone_type = "unet"
    config.model.encoder_features = [32, 64]
    config.model.parameters = dict(
        beta_schedule="linear",
        prediction_type="epsilon",
        loss_weighting="plain",
        num_res_blocks=1,
        attention_resolutions=[14],
        num_heads=4,
        sampler="ddim",
        sampling_steps=50,
    )
    config.training.num_steps = 1000
    config.training.sample_every = 1000
    config.eval = dict(likelihood_samples=8, max_test_batches=1)
    return config
