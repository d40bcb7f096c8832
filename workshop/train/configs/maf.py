"""Masked autoregressive flow (Papamakarios et al. 2017, arXiv:1705.07057) on two moons.

Five MADE affine layers (two hidden layers of 64) with the order reversed
between them, on the generated 2-D "two_moons" density
(`workshop/data/datasets/toy.py`); the test figure is the exact
log-density of 10000 held-out points. Results: BENCHMARKS.md, "The other families". The sample
picture is a 2-D histogram of 4096 model samples (two moons, thinly bridged).

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/maf.py --workdir=runs/maf
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "maf"
    config.model = dict(
        model_type="maf",
        input_shape=(2,),
        num_flows=5,
        parameters=dict(hidden_features=[64, 64]),
    )
    config.training = dict(
        num_steps=3000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.05, grad_clip_norm=10.0),
        ema_decay=0.99,
        log_every=100,
        eval_every=1000,
        eval_batches=4,
        checkpoint_every=1000,
        keep_checkpoints=2,
        sample_every=1000,
        num_samples=4096,
    )
    config.data = dict(dataset="two_moons", batch_size=256, eval_batch_size=1000)
    config.eval = dict(likelihood_samples=1)
    return with_defaults(config)
