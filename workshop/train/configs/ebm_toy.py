"""An energy-based model of the 2-D "eight_gaussians" density, trained by persistent CD.

Du & Mordatch 2019 (arXiv:1903.08689): Langevin chains kept in a replay
buffer (5% restarted from uniform noise on [-4, 4]^2), energy regulariser
alpha (E+^2 + E-^2) with a small alpha so the energy can be sharp enough for
modes of std 0.04, and a weak Gaussian confinement (prior_std 4) that keeps
Z finite for the AIS log-likelihood at the end (256 AIS chains per test
batch, `eval.likelihood_samples`, through 200 temperatures). Langevin is unstable
for steps above 2 / (largest curvature of E), about 0.003 for these modes,
hence step_size 0.002. No parameter EMA: samples come from the chains of the
current parameters.

Measured on the shared 2-core CPU (other jobs running): 60-120 train
steps/s after an 8 s compile; the whole run (2000 steps, final AIS
evaluation of the 10000 test points) took 60-75 s wall. At step 2000, 99.8%
of 2000 samples from noise lie within 0.5 of a mode (87% within 0.2), and the
test NLL by AIS is 0.037 nats (log Z by AIS 0.78-1.10 +- 0.15 per run of 256
chains vs 0.907 by integration on a grid). Samples (2-D histograms) land in
<workdir>/samples.

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/ebm_toy.py --workdir=/tmp/ebm_toy
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "ebm_toy"
    config.model = dict(
        model_type="ebm",
        input_shape=(2,),
        backbone_type="mlp",
        encoder_features=[128, 128],
        parameters=dict(
            objective="cd",
            sampler="langevin",
            mcmc_steps=40,
            generate_steps=100,
            step_size=0.002,
            init_range=(-4.0, 4.0),
            buffer_size=10000,
            reinit_fraction=0.05,
            energy_reg=0.01,
            prior_std=4.0,
            max_energy=1000.0,
            ais_chains=256,
            ais_temperatures=200,
            ais_step_size=0.05,
            ais_base_std=2.0,
        ),
    )
    config.training = dict(
        num_steps=2000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, b1=0.0, b2=0.999),
        ema_decay=None,
        log_every=100,
        eval_every=1000,
        eval_batches=2,
        checkpoint_every=1000,
        keep_checkpoints=2,
        sample_every=500,
        num_samples=2000,
    )
    config.data = dict(dataset="eight_gaussians", batch_size=128, eval_batch_size=500)
    config.eval = dict(likelihood_samples=256)
    return with_defaults(config)
