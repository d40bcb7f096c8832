"""DDPM super-resolution, 7x7 -> 28x28 Fashion-MNIST (conditioned on the low-resolution image).

SR3 (Saharia et al. 2021, arXiv:2104.07636) on the DiT denoiser of
ddpm_dit.py (Peebles & Xie 2023, arXiv:2212.09748): each training image is
averaged over 4x4 blocks to a 7x7 image, upsampled bilinearly and given to
the denoiser as two extra input channels (the image and a "present" flag);
10 % of the time the condition is dropped, so the model also samples without
one (the training run's sample grids do that). 4x4 patches make one token per
low-resolution pixel. The final test figure is the variational bound on
log P(x | 7x7 version of x) in bits/dim, a conditional likelihood.

Results (the run behind docs/samples/diffusion_super_resolution.png):
BENCHMARKS.md, "The other families".

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \\
        --config=workshop/train/configs/ddpm_super_resolution.py --workdir=/tmp/sr
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/sr \\
        --low_res=low_res.npy --sampler=dpm_solver_pp_2m --steps=20

(`low_res.npy`: `[B, 7, 7, 1]` floats in [0, 1]; in Python,
`workshop.models.diffusion.super_resolve(model, low_res, rngs=nnx.Rngs(0))`.)
"""

import ml_collections

from workshop.train.configs import ddpm_dit, with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ddpm_dit.get_config()
    config.name = "ddpm_super_resolution"
    config.model.model_type = "ddpm_super_resolution"
    parameters = dict(config.model.parameters)
    parameters.update(downsample_factor=4, condition_dropout=0.1, upsample_method="bilinear")
    config.model.parameters = parameters
    config.training.num_steps = 2000
    config.training.sample_every = 1000
    return with_defaults(config)
