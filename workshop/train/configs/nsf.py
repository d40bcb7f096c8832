"""Neural spline flow (Durkan et al. 2019, arXiv:1906.04032) on the 2-D checkerboard.

Six rational-quadratic spline coupling steps (8 bins on [-5, 5], each after
an LU linear layer, MLP conditioners of two hidden layers of 64) on the
generated "checkerboard" density (`workshop/data/datasets/toy.py`), whose
sharp edges affine flows cannot follow. The test figure is the exact
log-density of 10000 held-out points (the uniform density on the 8 black
squares has entropy log 32 = 3.466 nats, the best attainable NLL).
Results: BENCHMARKS.md, "The other families".

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/nsf.py --workdir=runs/nsf
"""

from workshop.train.configs import maf, with_defaults


def get_config():
    config = maf.get_config()
    config.name = "nsf"
    config.model.model_type = "nsf"
    config.model.num_flows = 6
    config.model.parameters = dict(transform="coupling", num_bins=8, tail_bound=5.0, hidden_features=[64, 64])
    config.data.dataset = "checkerboard"
    config.training.optimizer.learning_rate = 1e-3
    return with_defaults(config)
