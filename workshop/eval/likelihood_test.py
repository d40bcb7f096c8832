"""Tests for workshop.eval.likelihood against a model with a known density."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core import losses
from workshop.core.configuration import ModelConfiguration
from workshop.eval.likelihood import (
    anomaly_scores,
    bits_per_dim,
    evaluate_likelihood,
    likelihood_estimate,
    log_likelihood,
)
from workshop.models.factories import create_model


class _FactorisedBernoulli(nnx.Module):
    """p(x) = prod_d Bernoulli(x_d; sigmoid(logit_d)): log p(x) is known exactly."""

    def __init__(self, logits):
        self.logits = nnx.Param(jnp.asarray(logits))

    def log_prob(self, x, *, rngs=None):
        return losses.bernoulli_log_likelihood(jnp.broadcast_to(self.logits[...], x.shape), x)

    def elbo(self, x, *, rngs=None):
        return self.log_prob(x) - 1.0  # a bound that is 1 nat loose


class _Uniform256(nnx.Module):
    """Every 8-bit image equally likely: log P(x) = -D log 256."""

    likelihood_estimate = "exact"
    likelihood_data = "8-bit values: the probability mass"

    def log_prob(self, x, *, rngs=None):
        return jnp.full(x.shape[:1], -x[0].size * math.log(256.0))


def _standard_normal_log_pdf(x):
    return -0.5 * np.sum(x**2 + math.log(2 * math.pi), axis=1)


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

    def test_perplexity_of_a_uniform_token_model_is_its_vocabulary(self):
        tokens = np.random.default_rng(0).integers(0, 256, (5, 12)).astype(np.int32)
        result = evaluate_likelihood(_Uniform256(), [{"x": tokens}])
        np.testing.assert_allclose(result["perplexity"], 256.0, rtol=1e-6)
        images = evaluate_likelihood(_Uniform256(), [{"x": tokens.astype(np.float32) / 255}])
        self.assertNotIn("perplexity", images)  # Only for integer ids.

    def test_no_batches_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "no batches"):
            evaluate_likelihood(_FactorisedBernoulli(np.zeros((1,), np.float32)), [])


    def test_identity_flow_on_gaussian_data(self):
        # A freshly built RealNVP is the identity (zero-initialised couplings),
        # so its density is the standard normal's, known in closed form.
        model = create_model(ModelConfiguration(model_type="realnvp", input_shape=(3,), num_flows=2),
                             rngs=nnx.Rngs(0))
        x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
        exact = _standard_normal_log_pdf(x.astype(np.float64))
        result = log_likelihood(model, x, batch_size=3)  # batches of 3, 3, 1
        self.assertEqual(result["estimate"], "exact")
        self.assertIn("continuous", result["data"])
        self.assertEqual(result["num_examples"], 7)
        np.testing.assert_allclose(result["nll"], -exact.mean(), rtol=1e-5)
        np.testing.assert_allclose(result["nll_bits_per_dim"], -exact.mean() / (3 * math.log(2)), rtol=1e-5)
        np.testing.assert_allclose(anomaly_scores(model, x, batch_size=3), -exact, rtol=1e-5)

    def test_uniform_model_on_uint8_images_is_eight_bits(self):
        images = np.random.default_rng(1).integers(0, 256, size=(5, 4, 4, 1), dtype=np.uint8)
        result = log_likelihood(_Uniform256(), {"x": images, "label": np.zeros(5, np.int32)}, batch_size=2)
        self.assertAlmostEqual(result["nll_bits_per_dim"], 8.0, places=5)
        self.assertEqual((result["estimate"], result["num_examples"]), ("exact", 5))

    def test_estimate_kinds_of_the_families(self):
        rngs = nnx.Rngs(0)
        vae = create_model(ModelConfiguration(model_type="vae", input_shape=(4,), latent_dim=2,
                                              encoder_features=[8], decoder_features=[8],
                                              parameters={"reconstruction_loss": "bernoulli"}), rngs=rngs)
        self.assertEqual(likelihood_estimate(vae)["estimate"], "importance-weighted bound")
        self.assertIn("binary", likelihood_estimate(vae)["data"])
        flow = create_model(ModelConfiguration(model_type="realnvp", input_shape=(4, 4, 1), num_flows=2,
                                               parameters={"hidden_channels": 4}), rngs=rngs)
        # log P of 8-bit images under uniform dequantisation is a bound, not an exact figure.
        self.assertEqual(likelihood_estimate(flow)["estimate"], "dequantisation bound")
        self.assertIn("dequantisation", likelihood_estimate(flow)["data"])
        vector_flow = create_model(ModelConfiguration(model_type="realnvp", input_shape=(4,), num_flows=2), rngs=rngs)
        self.assertEqual(likelihood_estimate(vector_flow)["estimate"], "exact")

    def test_vae_nll_and_elbo_come_from_the_same_importance_samples(self):
        """IWAE = log-mean-exp and ELBO = mean of the same k log weights, so the nll never exceeds -ELBO."""
        vae = create_model(ModelConfiguration(model_type="vae", input_shape=(6,), latent_dim=2,
                                              encoder_features=[8], decoder_features=[8],
                                              parameters={"reconstruction_loss": "bernoulli"}), rngs=nnx.Rngs(0))
        x = np.random.default_rng(0).integers(0, 2, (5, 6)).astype(np.float32)
        for seed in range(4):
            one = log_likelihood(vae, x, num_samples=1, seed=seed)
            self.assertAlmostEqual(one["nll"], one["negative_elbo"], places=5)  # k = 1: the same single draw
            result = log_likelihood(vae, x, num_samples=4, seed=seed)
            log_w = np.asarray(vae.log_importance_weights(
                jnp.asarray(x), rngs=nnx.Rngs(jax.random.fold_in(jax.random.PRNGKey(seed), 0)), num_samples=4),
                np.float64)  # [k, B]: batch 0's key
            iwae = np.log(np.mean(np.exp(log_w - log_w.max(0)), axis=0)) + log_w.max(0)
            np.testing.assert_allclose(result["nll"], -iwae.mean(), rtol=1e-5)
            np.testing.assert_allclose(result["negative_elbo"], -log_w.mean(), rtol=1e-5)
            self.assertLessEqual(result["nll"], result["negative_elbo"])

    def test_conditional_model_without_labels_is_named(self):
        cvae = create_model(ModelConfiguration(model_type="cvae", input_shape=(4,), latent_dim=2,
                                               encoder_features=[8], decoder_features=[8],
                                               parameters={"reconstruction_loss": "bernoulli", "num_classes": 3}),
                            rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"CVAE is class-conditional.*needs each example's label.*"
                                                r"\{'x': inputs, 'label': labels\}"):
            log_likelihood(cvae, np.zeros((3, 4), np.float32))
        labelled = log_likelihood(cvae, {"x": np.zeros((3, 4), np.float32), "label": np.array([0, 1, 2])})
        self.assertTrue(np.isfinite(labelled["nll"]))

    def test_model_without_log_prob_is_refused(self):
        class _SamplerOnly(nnx.Module):  # a GAN-like model: samples, no density
            def generate(self, *, n_samples, rngs):
                return jnp.zeros((n_samples, 2))

        with self.assertRaisesRegex(TypeError, "no log_prob.*sample_quality"):
            log_likelihood(_SamplerOnly(), np.zeros((3, 2), np.float32))

    def test_anomaly_scores_rank_outliers_last(self):
        model = create_model(ModelConfiguration(model_type="realnvp", input_shape=(2,), num_flows=2),
                             rngs=nnx.Rngs(0))
        x = np.array([[0.0, 0.0], [5.0, 5.0], [0.5, -0.5]], np.float32)
        self.assertEqual(int(np.argmax(anomaly_scores(model, [{"x": x}]))), 1)


if __name__ == "__main__":
    absltest.main()
