"""Flow matching with the U-Net of ddpm_unet.py (or the DiT of ddpm_dit.py) on 8-bit Fashion-MNIST.

Lipman et al. 2023 (arXiv:2210.02747), the conditional optimal-transport path
x_t = (1 - t) x0 + t eps with velocity target eps - x0, logit-normal training
times (Esser et al. 2024, arXiv:2403.03206), uniformly dequantised training
images so the model has a density. The network, optimiser, schedule and
training budget are those of ddpm_unet.py, or of ddpm_dit.py with
`--config=workshop/train/configs/flow_matching.py:dit`, so the configs
compare the objectives alone.
Samples: Heun, 25 steps (50 velocity evaluations); `sample --sampler=euler|
heun|dopri5 --steps=N` picks another solver.

The final test-set figure is the exact log-likelihood through the
probability-flow ODE (dopri5, rtol = atol = 1e-5, Hutchinson's divergence
estimate with one Rademacher probe) of the 8-bit images under uniform
dequantisation, on the first 100 test images: each image costs a few
hundred network evaluations with a JVP.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/flow_matching.py --workdir=/tmp/fm
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/fm \
        --num_samples=16 --sampler=dopri5
"""

from workshop.train.configs import ddpm_dit, ddpm_unet, with_defaults

_BACKBONES = {"unet": ddpm_unet, "dit": ddpm_dit}


def backbone_config(backbone: str):
    """The config of ddpm_unet.py ("unet") or ddpm_dit.py ("dit") and its denoiser's parameters."""
    if backbone not in _BACKBONES:
        raise ValueError(f"config argument {backbone!r}: expected one of {sorted(_BACKBONES)} (the backbone), "
                         f"e.g. --config=workshop/train/configs/flow_matching.py:dit")
    base = _BACKBONES[backbone]
    return base.get_config(), dict(base.BACKBONE)


def get_config(backbone: str = "unet"):
    config, network = backbone_config(backbone)
    config.name = "flow_matching" if backbone == "unet" else f"flow_matching_{backbone}"
    config.model.model_type = "flow_matching"
    config.model.parameters = dict(
        **network,
        time_sampling="logit_normal",
        dequantize=True,
        sampler="heun",
        sampling_steps=25,
        likelihood_divergence="hutchinson",
        likelihood_solver="dopri5",
    )
    config.data.eval_batch_size = 100
    config.eval = dict(likelihood_samples=1, max_test_batches=1)
    return with_defaults(config)
