"""EDM with the U-Net of ddpm_unet.py (or the DiT of ddpm_dit.py) on 8-bit Fashion-MNIST.

Karras et al. 2022 (arXiv:2206.00364): the preconditioned denoiser with
sigma_data = 0.5, ln sigma ~ N(-1.2, 1.2^2) while training, the loss weight
(sigma^2 + sigma_data^2) / (sigma sigma_data)^2, and their deterministic
Heun sampler on the rho = 7 grid from sigma 80 to 0.002, 18 steps (35
network evaluations). The network, optimiser, schedule and training budget
are those of ddpm_unet.py, or of ddpm_dit.py with
`--config=workshop/train/configs/edm.py:dit`, so the configs compare the
objectives alone.

The final test-set figure is the log-likelihood through the probability-flow
ODE (dopri5, rtol = atol = 1e-5, Hutchinson's divergence estimate with one
Rademacher probe) of the 8-bit images under uniform dequantisation, on the
first 100 test images.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/edm.py --workdir=/tmp/edm
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/edm \
        --num_samples=16 --compare=heun:18,stochastic:40,euler:50
"""

from workshop.train.configs import with_defaults
from workshop.train.configs.flow_matching import backbone_config


def get_config(backbone: str = "unet"):
    config, network = backbone_config(backbone)
    config.name = "edm" if backbone == "unet" else f"edm_{backbone}"
    config.model.model_type = "edm"
    config.model.parameters = dict(
        **network,
        sigma_data=0.5,
        p_mean=-1.2,
        p_std=1.2,
        sampler="heun",
        sampling_steps=18,
    )
    config.data.eval_batch_size = 100
    config.eval = dict(likelihood_samples=1, max_test_batches=1)
    return with_defaults(config)
