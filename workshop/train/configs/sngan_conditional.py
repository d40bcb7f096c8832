"""A class-conditional SN-GAN on Fashion-MNIST: projection discriminator, label embedding in the generator.

Miyato & Koyama 2018, "cGANs with Projection Discriminator" (arXiv:1802.05637):
D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, with the spectrally normalised
discriminator and hinge loss of Miyato et al. 2018 (arXiv:1802.05957). The
generator concatenates a learned 32-d label embedding to z. Adam(b1 = 0,
b2 = 0.9) with the two time-scale rule (Heusel et al. 2017, arXiv:1706.08500):
generator lr 1e-4, discriminator 4e-4, one discriminator update per generator
update (as in SAGAN, Zhang et al. 2018, arXiv:1805.08318). MLP players for the
same reason as `wgan_gp.py` (built on it): XLA's CPU convolutions are slow.

Results: BENCHMARKS.md, "The other families".

Train, then draw the classes you ask for (Fashion-MNIST: 0 T-shirt, 1 trouser,
2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 boot):

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/sngan_conditional.py \\
        --workdir=/tmp/sngan_conditional
    PYTHONPATH=. python -m workshop.train.sample --workdir=/tmp/sngan_conditional --labels=0,1,5,7,8,9,3,2 --num_samples=64
"""

from workshop.train.configs import wgan_gp, with_defaults


def get_config():
    # The MLP players, Adam(0, 0.9) and intervals of wgan_gp.py; SN-GAN's own recipe on top.
    config = wgan_gp.get_config()
    config.name = "sngan_conditional"
    config.model.model_type = "sngan"
    config.model.parameters = dict(num_classes=10, d_lr_multiplier=4.0)
    config.training.num_steps = 5000
    config.data.batch_size = 64  # one discriminator update of 64 per step
    return with_defaults(config)
