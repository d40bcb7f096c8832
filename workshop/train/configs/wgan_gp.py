"""WGAN-GP on Fashion-MNIST with MLP players, sized for a CPU.

Gulrajani et al. 2017 (arXiv:1704.00028), algorithm 1: Wasserstein loss,
gradient penalty lambda = 10, five critic updates of m = 64 examples per
generator update (so a step consumes a batch of 5 * 64), Adam with lr 1e-4,
b1 = 0, b2 = 0.9. The critic has no normalisation layers, as the penalty
requires (`discriminator_norm="layer"` is the paper's substitute for the conv
critic).

Why MLPs: XLA's CPU convolutions are slow and the penalty differentiates the
critic twice. The speed comparison is in BENCHMARKS.md
("Config design measurements"): these MLPs run some two hundred times faster
than the conv players on this CPU. For the DCGAN-style conv players
(slow here, fine on an accelerator) override
`--config.model.backbone_type=conv --config.model.encoder_features=[32,64]
--config.model.decoder_features=[64,32]`.

Results: BENCHMARKS.md, "The other families".

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/wgan_gp.py --workdir=/tmp/wgan_gp
"""

from workshop.train.configs import dcgan, with_defaults


def get_config():
    config = dcgan.get_config()
    config.name = "wgan_gp"
    config.model.model_type = "wgan-gp"
    config.model.backbone_type = "mlp"
    config.model.encoder_features = [512, 256]  # critic widths
    config.model.decoder_features = [256, 512]  # generator widths
    config.model.parameters = dict(gp_weight=10.0, n_critic=5)
    config.training.num_steps = 10000
    config.training.optimizer.learning_rate = 1e-4
    config.training.optimizer.b1 = 0.0
    config.training.optimizer.b2 = 0.9
    config.training.log_every = 100
    config.training.eval_every = 2500
    config.training.checkpoint_every = 2500
    config.training.sample_every = 2500
    config.data.batch_size = 5 * 64
    return with_defaults(config)
