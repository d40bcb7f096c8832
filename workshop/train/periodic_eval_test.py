"""Tests for workshop.train.periodic_eval: intervals, values equal to direct evaluation, missing weights."""

import json
import math
import os
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import OptimizerConfiguration, TrainingConfiguration
from workshop.eval import feature_net, quality
from workshop.eval.frechet import gaussian_statistics
from workshop.eval.likelihood import evaluate_likelihood
from workshop.train.periodic_eval import PeriodicEvaluation
from workshop.train.trainer import Trainer

_SIGMA = 0.2


class _PixelGaussian(nnx.Module):
    """x ~ N(sigmoid(m), 0.2^2) per pixel: log p(x) in closed form, samples in [0, 1]."""

    def __init__(self, *, rngs):
        self.logit = nnx.Param(0.1 * jax.random.normal(rngs.params(), (28, 28, 1)))

    def log_prob(self, x, *, rngs=None):
        z = (x - jax.nn.sigmoid(self.logit[...])) / _SIGMA
        return jnp.sum(-0.5 * z**2 - math.log(_SIGMA * math.sqrt(2 * math.pi)), axis=(1, 2, 3))

    def __call__(self, x, *, rngs):
        return {"log_prob": self.log_prob(x)}

    def loss_fn(self, batch, outputs):
        return {"loss": -jnp.mean(outputs["log_prob"]) / 784}

    def generate(self, *, n_samples, rngs):
        noise = _SIGMA * jax.random.normal(rngs.sample(), (n_samples, 28, 28, 1))
        return jnp.clip(jax.nn.sigmoid(self.logit[...]) + noise, 0.0, 1.0)


def _images(seed, n):
    rng = np.random.default_rng(seed)
    return np.clip(0.6 + 0.2 * rng.normal(size=(n, 28, 28, 1)), 0, 1).astype(np.float32)


def _train_batches():
    i = 0
    while True:
        yield {"x": _images(i, 16)}
        i += 1


class _Sink:
    def __init__(self):
        self.records = []

    def on_eval(self, trainer, step, logs):
        self.records.append((step, logs))


class PeriodicEvaluationTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        config = TrainingConfiguration(num_steps=4, log_every=2, eval_every=None, ema_decay=None,
                                       optimizer=OptimizerConfiguration(learning_rate=0.05, schedule="constant"))
        self.trainer = Trainer(_PixelGaussian(rngs=nnx.Rngs(0)), config)
        test_x = _images(100, 40)
        self.test_batches = lambda: [{"x": test_x[:25]}, {"x": test_x[25:]}]
        self.net = feature_net.FashionMNISTClassifier(rngs=nnx.Rngs(1))
        real = feature_net.extract_features(self.net, _images(200, 120))
        mu, sigma = gaussian_statistics(real)
        self.reference = {"features": real, "mu": mu, "sigma": sigma}

    def test_values_and_intervals(self):
        sink = _Sink()
        callback = PeriodicEvaluation(self.test_batches, sinks=[sink], every_steps=2, sample_quality_every=4,
                                      sample_quality_samples=60, sample_batch_size=25, feature_net=self.net,
                                      reference=self.reference)
        state = self.trainer.fit(self.trainer.init_state(), _train_batches(), callbacks=[callback])
        self.assertEqual([step for step, _ in sink.records], [2, 4])
        self.assertNotIn("fid", sink.records[0][1])
        final = sink.records[1][1]
        direct = evaluate_likelihood(self.trainer.model_from_state(state), self.test_batches())
        self.assertAlmostEqual(final["test_nll"], direct["nll"], places=3)
        self.assertAlmostEqual(final["test_nll_bits_per_dim"], direct["nll_bits_per_dim"], places=6)
        self.assertLess(final["test_nll"], sink.records[0][1]["test_nll"])  # training helps
        samples = np.concatenate([self.trainer.generate(state, 25, seed=i) for i in range(3)])[:60]
        scores = quality.sample_quality(samples, num_samples=None, net=self.net, reference=self.reference)
        self.assertAlmostEqual(final["fid"], scores["fid"], places=6)
        self.assertEqual(final["sample_quality_samples"], 60)
        for name in ("kid", "kid_std", "precision", "recall", "density", "coverage"):
            self.assertIn(name, final)

    def test_missing_feature_network_leaves_likelihood_only(self):
        sink = _Sink()
        callback = PeriodicEvaluation(self.test_batches, sinks=[sink], every_steps=4, sample_quality_every=4)
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: tempfile.mkdtemp()}):
            with self.assertLogs(level="WARNING") as logs:
                self.trainer.fit(self.trainer.init_state(), _train_batches(), callbacks=[callback])
        self.assertIn("train_feature_net", "\n".join(logs.output))
        self.assertEqual([step for step, _ in sink.records], [4])
        self.assertIn("test_nll", sink.records[0][1])
        self.assertNotIn("fid", sink.records[0][1])

    def test_config_eval_keys_reach_metrics_jsonl(self):
        from workshop.train.configs import maf
        from workshop.train.experiment import train_and_evaluate

        config = maf.get_config()
        config.training.update(num_steps=4, log_every=2, eval_every=None, checkpoint_every=None, sample_every=None,
                               num_samples=16, progress_bar=False, tensorboard=False, eval_batches=1)
        config.training.optimizer.warmup_steps = 1
        config.eval.update(every_steps=2, max_test_batches=1)
        workdir = tempfile.mkdtemp()
        run = train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        periodic = [r for r in records if "test_nll" in r]
        self.assertEqual([r["step"] for r in periodic], [2, 4])
        self.assertEqual({r["split"] for r in periodic}, {"eval"})
        # The last periodic value is the final evaluation's (same EMA state, seed and test batch).
        self.assertAlmostEqual(periodic[-1]["test_nll"], run.final_metrics["nll"], places=4)

    def test_bad_interval(self):
        with self.assertRaisesRegex(ValueError, "config.eval.every_steps"):
            PeriodicEvaluation(self.test_batches, every_steps=0)


if __name__ == "__main__":
    absltest.main()
