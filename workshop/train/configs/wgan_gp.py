"""WGAN-GP on Fashion-MNIST: the DCGAN networks with the Wasserstein loss and a gradient penalty.

Gulrajani et al. 2017 (arXiv:1704.00028), algorithm 1: lambda = 10, five
critic updates of 64 examples per generator update (so a step consumes a
batch of 5 * 64), Adam with lr 1e-4, b1=0, b2=0.9. The critic has no
normalisation layers, as the penalty requires. About five times the work of a
DCGAN step, plus the double backward pass of the penalty.

Measured (2 CPU cores shared with other jobs, load average ~13): 0.47 steps/s
(each step is five critic updates of 64 plus a generator update), so the
default 1000 steps take ~35 min here; no sample quality was measured yet.

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/wgan_gp.py \
        --config.training.num_steps=200 --workdir=/tmp/wgan_gp
"""

from workshop.train.configs import dcgan


def get_config():
    config = dcgan.get_config()
    config.name = "wgan_gp"
    config.model.model_type = "wgan-gp"
    config.model.parameters = dict(gp_weight=10.0, n_critic=5)
    config.training.num_steps = 1000
    config.training.optimizer.learning_rate = 1e-4
    config.training.optimizer.b1 = 0.0
    config.training.optimizer.b2 = 0.9
    config.training.checkpoint_every = 250
    config.training.sample_every = 250
    config.data.batch_size = 5 * 64
    return config
