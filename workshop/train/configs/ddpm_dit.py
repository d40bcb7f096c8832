"""DDPM with a small DiT denoiser on 8-bit Fashion-MNIST (the CPU-friendly diffusion config).

Ho et al. 2020 (arXiv:2006.11239) with the Diffusion Transformer of Peebles &
Xie 2023 (arXiv:2212.09748): 4x4 patches (49 tokens), width 128, 4 adaLN-Zero
blocks, cosine schedule (Nichol & Dhariwal 2021, arXiv:2102.09672), T = 1000,
epsilon prediction with the plain ("L_simple") loss, DDIM-50 samples. The
model is matmul-bound, so XLA's CPU backend runs it far faster than the
convolutional U-Net (ddpm_unet.py).

Plain weighting, not min-SNR: the bound is dominated by its small-t terms
(the t = 0 decoder and t = 1), which min-SNR-5 weights by 5 / SNR, i.e. almost
not at all. With min-SNR a 1500-step run reached 6.22 bits/dim; with the
plain loss a 1000-step run (below) reaches 5.84.

Results: BENCHMARKS.md, "The other families".

The final test-set figure is the variational bound of Ho et al. on the
8-bit images (discretised Gaussian decoder), its sum over timesteps estimated
without bias from 16 stratified timesteps per image, on 1000 test images.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/ddpm_dit.py --workdir=/tmp/dit --config.training.num_steps=1000
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/dit \
        --num_samples=16 --compare=ddpm:1000,ddim:50,dpm_solver_pp_2m:20
"""

import ml_collections

from workshop.train.configs import with_defaults


# The denoiser's parameters, shared by the configs that compare objectives on this backbone
# (flow_matching.py:dit, edm.py:dit).
BACKBONE = dict(patch_size=4, hidden_size=128, depth=4, num_heads=4)


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "ddpm_dit"
    config.model = dict(
        model_type="ddpm",
        input_shape=(28, 28, 1),
        num_timesteps=1000,
        backbone_type="dit",
        parameters=dict(
            beta_schedule="cosine",
            prediction_type="epsilon",
            loss_weighting="plain",
            **BACKBONE,
            sampler="ddim",
            sampling_steps=50,
        ),
    )
    config.training = dict(
        num_steps=1500,
        seed=0,
        optimizer=dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.1, weight_decay=0.0, grad_clip_norm=1.0),
        ema_decay=0.995,
        log_every=50,
        eval_every=500,
        eval_batches=1,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=1500,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=64, eval_batch_size=500, image=dict(binarize="none"))
    # log_prob's num_samples: stratified timesteps per test image (see DDPM.log_prob).
    config.eval = dict(likelihood_samples=16, max_test_batches=2)
    return with_defaults(config)
