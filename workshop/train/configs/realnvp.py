"""Real NVP (Dinh et al. 2016, arXiv:1605.08803) on 8-bit Fashion-MNIST.

Two scales (28x28x1 -> 14x14x2 factored out -> 14x14x2), 2 affine couplings
per stage (3 in the last; the paper has 3 and 4) with 32-channel CNN conditioners, logit preprocessing and uniform
dequantisation; the reported bits/dim are of the discrete 8-bit images
(`workshop/models/flow/base.py`). Kept small for a 2-core CPU, where XLA's
convolutions are slow. Results: BENCHMARKS.md, "The other families". Samples at that point
are blobs of cloth-like texture, not garments yet: this is a smoke-size run;
raise `training.num_steps` (and `num_flows`, `hidden_channels`) on a GPU.

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/realnvp.py \\
        --workdir=runs/realnvp
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "realnvp"
    config.model = dict(
        model_type="realnvp",
        input_shape=(28, 28, 1),
        num_flows=2,
        parameters=dict(hidden_channels=32, num_levels=2, logit_alpha=0.05),
    )
    config.training = dict(
        num_steps=400,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=20,
                       final_lr_fraction=0.05, grad_clip_norm=100.0),
        ema_decay=0.995,
        log_every=50,
        eval_every=200,
        eval_batches=2,
        checkpoint_every=200,
        keep_checkpoints=2,
        sample_every=200,
        num_samples=64,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=32, eval_batch_size=500, image=dict(binarize="none"))
    config.eval = dict(likelihood_samples=1)
    return with_defaults(config)
