"""A model family defined here, registered and nothing else, trains, evaluates, checkpoints and samples.

The family ("density", model type "diagonal-gaussian") is a diagonal Gaussian
fitted by maximum likelihood, whose optimum is known in closed form: the
data's per-dimension mean and standard deviation. Nothing in workshop/train,
workshop/eval or the binaries knows it: they ask it for protocols.
"""

import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pydantic
from absl.testing import absltest
from flax import nnx

from workshop.core import registry
from workshop.core.protocols import DescribedLikelihood, GenerativeModel, LikelihoodModel
from workshop.data.datasets.toy import sample_toy
from workshop.eval.likelihood import log_likelihood
from workshop.train import experiment
from workshop.train.configs import with_defaults
from workshop.train.sampling import restore_workdir


class GaussianParameters(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    init_std: pydantic.PositiveFloat = 2.0


@registry.register_model("diagonal-gaussian", family="density", parameters=GaussianParameters,
                         description="x ~ N(mean, diag(std^2)), fitted by maximum likelihood")
class DiagonalGaussian(nnx.Module):
    likelihood_estimate = "exact"
    likelihood_data = "continuous vectors: the density"

    def __init__(self, config, *, rngs: nnx.Rngs):
        p = registry.typed_parameters(config.model_type, config.parameters, GaussianParameters)
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.mean = nnx.Param(jnp.zeros(self.input_shape))
        self.log_std = nnx.Param(jnp.full(self.input_shape, math.log(p.init_std)))

    def log_prob(self, x, *, rngs=None):
        z = (x - self.mean[...]) * jnp.exp(-self.log_std[...])
        per_dim = -0.5 * z**2 - self.log_std[...] - 0.5 * math.log(2 * math.pi)
        return per_dim.reshape(x.shape[0], -1).sum(-1)

    def __call__(self, x, *, rngs=None):
        return {"log_prob": self.log_prob(x)}

    def loss_fn(self, batch, outputs):
        nll = -jnp.mean(outputs["log_prob"])
        return {"loss": nll, "nll": nll}

    def generate(self, *, n_samples, rngs: nnx.Rngs):
        noise = jax.random.normal(rngs.sample(), (n_samples, *self.input_shape))
        return self.mean[...] + jnp.exp(self.log_std[...]) * noise


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "diagonal_gaussian"
    config.model = dict(model_type="diagonal-gaussian", input_shape=(2,), parameters={"init_std": 2.0})
    config.training = dict(num_steps=400, optimizer=dict(name="adam", learning_rate=0.05, schedule="constant"),
                           ema_decay=None, log_every=100, eval_every=400, eval_batches=1, checkpoint_every=200,
                           sample_every=400, num_samples=16, progress_bar=False)
    config.data = dict(dataset="eight_gaussians", batch_size=256, eval_batch_size=500, prefetch=0)
    return with_defaults(config)


class NewFamilyTest(absltest.TestCase):
    def test_a_registered_family_trains_evaluates_and_samples_through_the_library(self):
        model = DiagonalGaussian(experiment.parse_config(_config()).model, rngs=nnx.Rngs(0))
        for protocol in (GenerativeModel, LikelihoodModel, DescribedLikelihood):
            self.assertIsInstance(model, protocol)

        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        result = experiment.train_and_evaluate(_config(), workdir)
        self.assertIsNone(result.stop_reason)
        # The closed-form optimum: the data's mean and standard deviation per dimension.
        data, _ = sample_toy("eight_gaussians", 50_000, seed=0)
        fitted = result.trainer.model_from_state(result.state)
        np.testing.assert_allclose(fitted.mean[...], data.mean(0), atol=0.1)
        np.testing.assert_allclose(np.exp(fitted.log_std[...]), data.std(0), rtol=0.05)

        # Evaluation reads the family's own description of its likelihood.
        test = log_likelihood(fitted, data[:2000])
        self.assertEqual((test["estimate"], test["data"]), ("exact", "continuous vectors: the density"))
        expected = -np.mean(np.sum(-0.5 * ((data[:2000] - data.mean(0)) / data.std(0)) ** 2 - np.log(data.std(0))
                                   - 0.5 * np.log(2 * np.pi), axis=1))
        self.assertAlmostEqual(test["nll"], expected, delta=0.05)

        # The workdir restores as any other (config.json + checkpoint) and samples.
        _, trainer, state, record = restore_workdir(workdir)
        self.assertEqual(record["step"], 400)
        samples = trainer.generate(state, 4000, seed=1)
        self.assertEqual(samples.shape, (4000, 2))
        np.testing.assert_allclose(samples.std(0), data.std(0), rtol=0.1)


if __name__ == "__main__":
    absltest.main()
