"""Tests for workshop.eval.likelihood against a model with a known density."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core import losses
from workshop.eval.likelihood import bits_per_dim, evaluate_likelihood


class _FactorisedBernoulli(nnx.Module):
    """p(x) = prod_d Bernoulli(x_d; sigmoid(logit_d)): log p(x) is known exactly."""

    def __init__(self, logits):
        self.logits = nnx.Param(jnp.asarray(logits))

    def log_prob(self, x, *, rngs=None):
        return losses.bernoulli_log_likelihood(jnp.broadcast_to(self.logits.value, x.shape), x)

    def elbo(self, x, *, rngs=None):
        return self.log_prob(x) - 1.0  # a bound that is 1 nat loose


class LikelihoodTest(absltest.TestCase):
    def test_matches_closed_form_over_uneven_batches(self):
        logits = np.array([[[0.3], [-1.2]], [[2.0], [0.0]]], np.float32)  # [2, 2, 1]
        rng = np.random.default_rng(0)
        x = (rng.random((7, 2, 2, 1)) < 0.5).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-logits))
        expected = -np.mean(np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=(1, 2, 3)))
        batches = [{"x": x[:4]}, {"x": x[4:]}]
        result = evaluate_likelihood(_FactorisedBernoulli(logits), batches)
        self.assertEqual(result["num_examples"], 7)
        np.testing.assert_allclose(result["nll"], expected, rtol=1e-5)
        np.testing.assert_allclose(result["negative_elbo"], expected + 1.0, rtol=1e-5)
        np.testing.assert_allclose(result["nll_bits_per_dim"], expected / (4 * math.log(2)), rtol=1e-5)

    def test_bits_per_dim_of_uniform_bytes_is_eight(self):
        self.assertAlmostEqual(bits_per_dim(784 * math.log(256), 784), 8.0)

    def test_no_batches_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "no batches"):
            evaluate_likelihood(_FactorisedBernoulli(np.zeros((1,), np.float32)), [])


if __name__ == "__main__":
    absltest.main()
