"""DDPM with the U-Net of Ho et al. 2020 on 8-bit Fashion-MNIST.

Ho, Jain & Abbeel 2020 (arXiv:2006.11239): a three-level U-Net (32, 64 and 64
channels at 28x28, 14x14 and 7x7, one residual block per level on the way
down, two up), self-attention only at 7x7 (the last level and the middle
block), linear schedule, T = 1000, epsilon prediction, DDIM-50 samples (Song
et al. 2021, arXiv:2010.02502).

The levels were chosen for speed on XLA's CPU backend: the former
two-level net (32, 64) with attention at 14x14 spent about a third of its
step in attention over 196 positions with 16-dimensional heads. The speed comparison is in
BENCHMARKS.md ("Config design measurements"). The
deeper net also sees the whole 28x28 image from its 7x7 level, as Ho et al.'s
32x32 nets do from 4x4. Convolutions still run well below the matmul peak on
CPU.

Results: BENCHMARKS.md, "The other families".

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/ddpm_unet.py --workdir=/tmp/unet
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/unet \
        --num_samples=16 --compare=ddpm:1000,ddim:50,dpm_solver_pp_2m:20
"""

from workshop.train.configs import ddpm_dit, with_defaults


# The denoiser's parameters besides `encoder_features`, shared by the configs that compare
# objectives on this backbone (flow_matching.py, edm.py).
BACKBONE = dict(num_res_blocks=1, attention_resolutions=[7], upsampling="resize_conv", num_heads=4)


def get_config():
    config = ddpm_dit.get_config()
    config.name = "ddpm_unet"
    config.model.backbone_type = "unet"
    config.model.encoder_features = [32, 64, 64]
    config.model.parameters = dict(
        beta_schedule="linear",
        prediction_type="epsilon",
        loss_weighting="plain",
        **BACKBONE,
        sampler="ddim",
        sampling_steps=50,
    )
    config.training.num_steps = 3000
    config.training.sample_every = 1000
    config.eval = dict(likelihood_samples=8, max_test_batches=1)
    return with_defaults(config)
