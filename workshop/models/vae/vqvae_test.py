"""Tests for the VQ-VAE model (workshop.models.vae.vqvae)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager, protocols, registry
from workshop.core.configuration import ModelConfiguration
from workshop.models.vae import VQVAE, CodebookEMA
from workshop.models.vae import likelihoods


def _config(**kwargs):
    defaults = dict(model_type="vqvae", input_shape=(8, 8, 1), latent_dim=3, encoder_features=[4, 4],
                    decoder_features=[4, 4], parameters={"num_embeddings": 16})
    defaults.update(kwargs)
    return ModelConfiguration(**defaults)


def _images(key, n=3, shape=(8, 8, 1)):
    return jnp.round(jax.random.uniform(key, (n, *shape)) * 255.0) / 255.0


class VQVAETest(parameterized.TestCase):
    def test_shapes_and_loss_parts(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        self.assertEqual(model.latent_shape, (2, 2))
        self.assertEqual(model.num_latents, 4)
        self.assertFalse(hasattr(model, "num_classes"))
        x = _images(jax.random.PRNGKey(0))
        out = model(x)
        self.assertEqual(out["quantized"].shape, (3, 2, 2, 3))
        self.assertEqual(out["indices"].shape, (3, 2, 2))
        metrics = model.loss_fn({"x": x}, out)
        recon = -likelihoods.log_likelihood("discretized_logistic", out["decoder_params"], x, decoder_std=0.1)
        kl = 4 * math.log(16)
        np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-6)
        np.testing.assert_allclose(metrics["reconstruction_loss"], recon.mean(), rtol=1e-5)
        # EMA codebook: only the commitment term joins the loss.
        np.testing.assert_allclose(metrics["loss"], recon.mean() + 0.25 * metrics["commitment_loss"], rtol=1e-5)
        np.testing.assert_allclose(metrics["elbo"], -recon.mean() - kl, rtol=1e-5)
        self.assertBetween(float(metrics["perplexity"]), 1.0, 16.0)

    def test_autoencoder_protocol_gives_integer_code_maps(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, protocols.Autoencoder)
        self.assertTrue(model.discrete_codes)
        self.assertEqual((model.code_shape, model.num_codes), ((2, 2), 16))
        x = _images(jax.random.PRNGKey(1))
        codes = model.encode_codes(x)
        self.assertEqual((codes.shape, codes.dtype), ((3, 2, 2), jnp.dtype(model.code_dtype)))
        self.assertTrue(bool(jnp.all((codes >= 0) & (codes < 16))))
        # Decoding the codes is reconstruction, and they are the forward pass's indices (the
        # forward pass runs last: in train mode it moves the EMA codebook).
        np.testing.assert_allclose(model.decode_codes(codes), model.reconstruct(x), rtol=1e-6)
        np.testing.assert_array_equal(codes, model(x)["indices"])

    def test_likelihood_protocol_is_the_one_hot_posterior(self):
        model = VQVAE(_config(parameters={"num_embeddings": 16, "reconstruction_loss": "bernoulli"}),
                      rngs=nnx.Rngs(0))
        self.assertIsInstance(model, protocols.AutoencoderLikelihood)
        x = (_images(jax.random.PRNGKey(1)) > 0.5).astype(jnp.float32)
        codes, log_q = model.sample_codes(x, jax.random.PRNGKey(0))
        np.testing.assert_array_equal(codes, model.encode_codes(x))
        np.testing.assert_array_equal(log_q, np.zeros(3))
        # The ELBO under the uniform prior: log p(x|codes) - num_latents * log K.
        np.testing.assert_allclose(model.decoder_log_likelihood(x, codes) - 4 * math.log(16), model.elbo(x),
                                   rtol=1e-6)

    def test_log_prob_is_the_uniform_prior_elbo(self):
        model = VQVAE(_config(parameters={"num_embeddings": 16, "reconstruction_loss": "bernoulli"}),
                      rngs=nnx.Rngs(0))
        model.eval()
        x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (3, 8, 8, 1)).astype(jnp.float32)
        out = model(x)
        logits = np.asarray(out["decoder_params"][..., 0], np.float64).reshape(3, -1)
        xn = np.asarray(x, np.float64).reshape(3, -1)
        log_px = np.sum(xn * logits - np.logaddexp(0.0, logits), axis=1)
        np.testing.assert_allclose(model.log_prob(x, rngs=nnx.Rngs(0)), log_px - 4 * math.log(16), rtol=1e-5)
        np.testing.assert_allclose(model.elbo(x, rngs=nnx.Rngs(5)), model.log_prob(x, num_samples=100), rtol=1e-6)

    def test_train_mode_updates_the_codebook_and_eval_mode_does_not(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        x = _images(jax.random.PRNGKey(2))
        before = np.array(model.quantizer.codebook[...])
        model.eval()
        model(x)
        model.log_prob(x)
        np.testing.assert_array_equal(model.quantizer.codebook[...], before)
        model.train()
        model.encode(x)  # encoding alone never updates
        np.testing.assert_array_equal(model.quantizer.codebook[...], before)
        model(x)
        self.assertFalse(np.allclose(model.quantizer.codebook[...], before))

    def test_codebook_is_not_a_param_with_ema_and_is_one_without(self):
        ema = VQVAE(_config(), rngs=nnx.Rngs(0))
        params = nnx.state(ema, nnx.Param)
        self.assertNotIn("quantizer", params)
        self.assertLen(jax.tree.leaves(nnx.state(ema, CodebookEMA)), 3)
        learned = VQVAE(_config(parameters={"num_embeddings": 16, "ema_decay": None}), rngs=nnx.Rngs(0))
        self.assertIn("codebook", nnx.state(learned, nnx.Param)["quantizer"])
        x = _images(jax.random.PRNGKey(3))
        grads = nnx.grad(lambda m: m.loss_fn({"x": x}, m(x))["loss"])(learned)
        self.assertGreater(float(jnp.abs(grads["quantizer"]["codebook"][...]).sum()), 0.0)
        metrics = learned.loss_fn({"x": x}, learned(x))
        np.testing.assert_allclose(
            metrics["loss"],
            metrics["reconstruction_loss"] + metrics["codebook_loss"] + 0.25 * metrics["commitment_loss"],
            rtol=1e-5,
        )

    def test_jit_step_equals_eager_and_carries_the_ema_state(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        model.train()
        x = _images(jax.random.PRNGKey(4))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        before = np.array(model.quantizer.codebook[...])

        @jax.jit
        def step(params, rest, x):
            m = nnx.merge(graphdef, params, rest, copy=True)
            metrics = m.loss_fn({"x": x}, m(x, rngs=nnx.Rngs(0)))
            return metrics, nnx.split(m, nnx.Param, ...)[2]

        metrics, new_rest = step(params, rest, x)
        eager = model.loss_fn({"x": x}, model(x, rngs=nnx.Rngs(0)))
        for name in ("loss", "reconstruction_loss", "commitment_loss", "perplexity"):
            np.testing.assert_allclose(metrics[name], eager[name], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(new_rest["quantizer"]["codebook"][...], model.quantizer.codebook[...], rtol=1e-5)
        self.assertFalse(np.allclose(new_rest["quantizer"]["codebook"][...], before))

    def test_generate_is_prefix_stable_and_in_range(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        many = model.generate(n_samples=16, rngs=nnx.Rngs(3))
        few = model.generate(n_samples=4, rngs=nnx.Rngs(3))
        self.assertEqual(many.shape, (16, 8, 8, 1))
        np.testing.assert_allclose(many[:4], few, atol=1e-6)
        self.assertTrue(bool(jnp.all((many >= 0) & (many <= 1))))
        self.assertFalse(np.allclose(many[0], many[1]))

    def test_latent_api(self):
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        x = _images(jax.random.PRNGKey(5))
        codes = model.encode_codes(x)
        z_q = model.encode(x)
        np.testing.assert_allclose(z_q, model.quantizer.codebook[...][codes])
        np.testing.assert_allclose(model.reconstruct(x), model.decode_codes(codes), atol=1e-6)
        path = model.interpolate(x[0], x[1], 4)
        self.assertEqual(path.shape, (4, 8, 8, 1))
        np.testing.assert_allclose(path[0], model.decode_codes(codes[:1])[0], atol=1e-6)
        np.testing.assert_allclose(path[-1], model.decode_codes(codes[1:2])[0], atol=1e-6)

    def test_mlp_backbone(self):
        model = VQVAE(_config(input_shape=(10,), encoder_features=[8], decoder_features=[8],
                              parameters={"num_embeddings": 4, "num_latents": 5, "reconstruction_loss": "bernoulli"}),
                      rngs=nnx.Rngs(0))
        self.assertEqual(model.backbone, "mlp")
        x = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (2, 10)).astype(jnp.float32)
        out = model(x)
        self.assertEqual(out["indices"].shape, (2, 5))
        self.assertEqual(model.log_prob(x).shape, (2,))
        self.assertEqual(model.generate(n_samples=3, rngs=nnx.Rngs(0)).shape, (3, 10))

    def test_configuration_errors(self):
        with self.assertRaisesRegex(ValueError, "as many encoder as decoder stages"):
            VQVAE(_config(decoder_features=[4]), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "num_latents applies to the mlp backbone"):
            VQVAE(_config(parameters={"num_latents": 3}), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "'commitment' is not valid.*commitment_cost"):
            _config(parameters={"commitment": 0.1})
        with self.assertRaisesRegex(ValueError, "not a likelihood"):
            VQVAE(_config(parameters={"reconstruction_loss": "mse"}), rngs=nnx.Rngs(0)).log_prob(jnp.zeros((1, 8, 8, 1)))
        with self.assertRaisesRegex(ValueError, "unconditional"):
            VQVAE(_config(), rngs=nnx.Rngs(0)).generate(n_samples=1, rngs=nnx.Rngs(0), labels=jnp.zeros(1, jnp.int32))

    def test_registry_defaults(self):
        model = registry.get_model_spec("vqvae").builder(
            ModelConfiguration(model_type="vqvae", latent_dim=4, encoder_features=[8, 8], decoder_features=[8, 8]),
            rngs=nnx.Rngs(0),
        )
        self.assertEqual(model.num_embeddings, 512)
        self.assertEqual(model.latent_shape, (7, 7))
        self.assertEqual(model.quantizer.ema_decay, 0.99)
        self.assertEqual(model.quantizer.commitment_cost, 0.25)
        self.assertEqual(model.reconstruction, "discretized_logistic")

    def test_bf16_policy_keeps_f32_params_and_loss(self):
        previous = device_manager.set_precision_policy(device_manager.PrecisionPolicy(compute_dtype=jnp.bfloat16))
        self.addCleanup(device_manager.set_precision_policy, previous)
        model = VQVAE(_config(), rngs=nnx.Rngs(0))
        for leaf in jax.tree.leaves(nnx.state(model, (nnx.Param, CodebookEMA))):
            self.assertEqual(leaf.dtype, jnp.float32)
        x = _images(jax.random.PRNGKey(6))
        metrics = model.loss_fn({"x": x}, model(x))
        self.assertEqual(metrics["loss"].dtype, jnp.float32)
        self.assertTrue(bool(jnp.isfinite(metrics["loss"])))
        self.assertEqual(model.encoder(x).dtype, jnp.bfloat16)


if __name__ == "__main__":
    absltest.main()
