"""Tests for the VAE, beta-VAE and CVAE (workshop.models.vae.vae)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager, protocols, registry
from workshop.core.configuration import ModelConfiguration
from workshop.models.vae import CVAE, VAE


def _config(model_type="vae", **kwargs):
    defaults = dict(input_shape=(6,), latent_dim=2, encoder_features=[16], decoder_features=[16])
    defaults.update(kwargs)
    return ModelConfiguration(model_type=model_type, **defaults)


def _binary(key, shape):
    return jax.random.bernoulli(key, 0.4, shape).astype(jnp.float32)


def _linear_gaussian_vae(w, b, sigma):
    """x = w z + b + sigma * noise, z ~ N(0, 1), with the exact posterior as encoder."""
    model = VAE(
        _config(input_shape=(1,), latent_dim=1, encoder_features=[], decoder_features=[],
                parameters={"reconstruction_loss": "gaussian", "decoder_std": sigma}),
        rngs=nnx.Rngs(0),
    )
    post_var = sigma**2 / (w**2 + sigma**2)
    gain = w / (w**2 + sigma**2)  # posterior mean = gain * (x - b)
    model.encoder.layers[0].kernel[...] = jnp.array([[gain, 0.0]])
    model.encoder.layers[0].bias[...] = jnp.array([-gain * b, math.log(post_var)])
    model.decoder.layers[0].kernel[...] = jnp.array([[w]])
    model.decoder.layers[0].bias[...] = jnp.array([b])
    return model


def _log_marginal(x, w, b, sigma):
    var = w**2 + sigma**2
    return -0.5 * (np.log(2 * np.pi * var) + (x - b) ** 2 / var)


class LinearGaussianTest(absltest.TestCase):
    """With q(z|x) the exact posterior, every bound equals log p(x) for every sample."""

    w, b, sigma = 1.5, 0.3, 0.5

    def setUp(self):
        super().setUp()
        self.model = _linear_gaussian_vae(self.w, self.b, self.sigma)
        self.x = jnp.array([[-1.0], [0.0], [0.4], [2.5]])
        self.expected = _log_marginal(np.asarray(self.x[:, 0], np.float64), self.w, self.b, self.sigma)

    def test_elbo_is_log_marginal_with_zero_variance(self):
        for seed in range(5):
            np.testing.assert_allclose(self.model.elbo(self.x, rngs=nnx.Rngs(seed)), self.expected, atol=1e-4)

    def test_log_prob_is_log_marginal(self):
        got = self.model.log_prob(self.x, rngs=nnx.Rngs(3), num_samples=7)
        np.testing.assert_allclose(got, self.expected, atol=1e-4)

    def test_analytic_kl_elbo_matches_in_expectation(self):
        # loss_fn's ELBO uses the closed-form KL: unbiased, but not zero-variance.
        x = jnp.repeat(self.x[2:3], 4000, axis=0)
        metrics = self.model.loss_fn({"x": x}, self.model(x, rngs=nnx.Rngs(0)))
        self.assertAlmostEqual(float(metrics["elbo"]), float(self.expected[2]), delta=0.05)

    def test_a_worse_encoder_gives_a_lower_bound(self):
        self.model.encoder.layers[0].bias[...] = self.model.encoder.layers[0].bias[...] + jnp.array([0.5, 0.0])
        elbo = self.model.elbo(jnp.tile(self.x, (200, 1)), rngs=nnx.Rngs(0)).reshape(200, 4).mean(axis=0)
        self.assertTrue(np.all(elbo < self.expected - 1e-2))


class VAELossTest(parameterized.TestCase):
    def test_kl_and_loss_match_closed_forms(self):
        model = VAE(_config(parameters={"beta": 2.0, "kl_weight": 0.5}), rngs=nnx.Rngs(0))
        x = _binary(jax.random.PRNGKey(1), (5, 6))
        out = model(x, rngs=nnx.Rngs(2))
        metrics = model.loss_fn({"x": x}, out)
        mean, logvar = np.asarray(out["mean"], np.float64), np.asarray(out["logvar"], np.float64)
        kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=1)
        logits = np.asarray(out["decoder_params"][..., 0], np.float64)
        xn = np.asarray(x, np.float64)
        recon = -np.sum(xn * -np.logaddexp(0, -logits) + (1 - xn) * -np.logaddexp(0, logits), axis=1)
        np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["reconstruction_loss"], recon.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], (recon + 2.0 * 0.5 * kl).mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["elbo"], -(recon + kl).mean(), rtol=1e-5)
        # z is the reparameterised sample of the encoder's Gaussian.
        self.assertEqual(out["z"].shape, (5, 2))

    @parameterized.parameters("bernoulli", "gaussian", "mse", "discretized_logistic")
    def test_every_reconstruction_loss_trains_and_generates(self, kind):
        model = VAE(_config(input_shape=(8, 8, 1), encoder_features=[4, 4], decoder_features=[4, 4],
                            parameters={"reconstruction_loss": kind}), rngs=nnx.Rngs(0))
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1)) * 255) / 255
        grads = nnx.jit(nnx.grad(lambda m: m.loss_fn({"x": x}, m(x, rngs=nnx.Rngs(1)))["loss"]))(model)
        self.assertTrue(all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)))
        self.assertGreater(sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)), 0.0)
        samples = model.generate(n_samples=3, rngs=nnx.Rngs(2))
        self.assertEqual(samples.shape, (3, 8, 8, 1))
        self.assertTrue(bool(jnp.all((samples >= 0) & (samples <= 1))))

    def test_mse_has_no_likelihood(self):
        model = VAE(_config(parameters={"reconstruction_loss": "mse"}), rngs=nnx.Rngs(0))
        x = jnp.zeros((2, 6))
        with self.assertRaisesRegex(ValueError, "mse.*not a likelihood"):
            model.log_prob(x, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "not a likelihood"):
            model.elbo(x, rngs=nnx.Rngs(0))
        out = model(x, rngs=nnx.Rngs(1))
        sse = np.sum(np.asarray(out["decoder_params"][..., 0]) ** 2, axis=1).mean()
        np.testing.assert_allclose(model.loss_fn({"x": x}, out)["reconstruction_loss"], sse, rtol=1e-5)


class IWAETest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.model = VAE(_config(), rngs=nnx.Rngs(0))
        self.x = _binary(jax.random.PRNGKey(5), (4, 6))

    def test_iwae_is_logmeanexp_of_the_same_weights_and_above_their_mean(self):
        log_w = self.model.log_importance_weights(self.x, rngs=nnx.Rngs(1), num_samples=50)
        self.assertEqual(log_w.shape, (50, 4))
        iwae = self.model.log_prob(self.x, rngs=nnx.Rngs(1), num_samples=50)
        np.testing.assert_allclose(iwae, jax.nn.logsumexp(log_w, axis=0) - math.log(50), rtol=1e-6)
        self.assertTrue(bool(jnp.all(iwae >= log_w.mean(axis=0))))

    def test_bound_increases_with_k(self):
        x = jnp.repeat(self.x[:1], 300, axis=0)  # 300 independent draws of the estimator
        log_prob = nnx.jit(lambda m, x, k: m.log_prob(x, rngs=nnx.Rngs(2), num_samples=k), static_argnums=2)
        bounds = [float(log_prob(self.model, x, k).mean()) for k in (1, 10, 100)]
        self.assertLess(bounds[0] + 0.05, bounds[1])
        self.assertLess(bounds[1] + 0.01, bounds[2])

    def test_k1_is_the_elbo(self):
        np.testing.assert_allclose(
            self.model.log_prob(self.x, rngs=nnx.Rngs(4), num_samples=1), self.model.elbo(self.x, rngs=nnx.Rngs(4))
        )
        # ... and, in expectation, the closed-form-KL ELBO of loss_fn.
        x = jnp.repeat(self.x[:1], 4000, axis=0)
        sampled = self.model.elbo(x, rngs=nnx.Rngs(5))
        analytic = self.model.loss_fn({"x": x}, self.model(x, rngs=nnx.Rngs(6)))["elbo"]
        stderr = float(jnp.std(sampled)) / math.sqrt(x.shape[0])
        self.assertAlmostEqual(float(sampled.mean()), float(analytic), delta=4 * stderr + 0.02)

    def test_large_k_runs_in_chunks(self):
        x = jnp.repeat(self.x[:1], 500, axis=0)
        jaxpr = str(jax.make_jaxpr(lambda x: self.model.log_prob(x, rngs=nnx.Rngs(0), num_samples=1000))(x))
        self.assertIn("scan", jaxpr)  # a loop over sample chunks, not one [1000 * 500] decode
        self.assertTrue(bool(jnp.all(jnp.isfinite(self.model.log_prob(x, rngs=nnx.Rngs(0), num_samples=1000)))))


class GenerateAndLatentTest(parameterized.TestCase):
    @parameterized.parameters("vae", "beta-vae")
    def test_autoencoder_protocol_gives_the_posterior_mean(self, model_type):
        model = registry.get_model_spec(model_type).builder(_config(model_type), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, protocols.Autoencoder)
        self.assertFalse(model.discrete_codes)
        self.assertIsNone(model.num_codes)
        self.assertEqual(model.code_shape, (2,))
        x = _binary(jax.random.PRNGKey(3), (5, 6))
        codes = model.encode_codes(x)
        self.assertEqual((codes.shape, codes.dtype), ((5, 2), jnp.dtype(model.code_dtype)))
        mean, _ = model.encode_distribution(x)
        np.testing.assert_allclose(codes, mean, rtol=1e-6)
        np.testing.assert_allclose(model.decode_codes(codes), model.decode(mean), rtol=1e-6)

    def test_spatial_latent_codes_are_the_posterior_mean_grid(self):
        # 8x8x1 -> two stride-2 stages -> a 2x2 grid of 3 channels.
        model = VAE(_config(input_shape=(8, 8, 1), backbone_type="conv", encoder_features=[4, 4],
                            decoder_features=[4, 4], parameters={"latent_channels": 3}), rngs=nnx.Rngs(0))
        self.assertEqual((model.code_shape, model.latent_dim), ((2, 2, 3), 12))
        x = _binary(jax.random.PRNGKey(3), (5, 8, 8, 1))
        codes = model.encode_codes(x)
        mean, logvar = model.encode_distribution(x)
        self.assertEqual((codes.shape, mean.shape), ((5, 2, 2, 3), (5, 12)))
        np.testing.assert_allclose(codes.reshape(5, 12), mean, rtol=1e-6)
        # The codes are the mean half of the 1x1 head applied to each cell of the smallest feature map.
        features = model.encoder.feature_map(x)
        head = model.encoder_head(features)[..., :3]
        np.testing.assert_allclose(codes, head, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.decode_codes(codes), model.decode(mean), rtol=1e-6)
        out = model(x, rngs=nnx.Rngs(1))
        self.assertTrue(np.isfinite(float(model.loss_fn({"x": x}, out)["loss"])))
        self.assertEqual(model.generate(n_samples=2, rngs=nnx.Rngs(0)).shape, (2, 8, 8, 1))
        with self.assertRaisesRegex(ValueError, "latent_channels needs the conv backbone"):
            VAE(_config(parameters={"latent_channels": 3}), rngs=nnx.Rngs(0))

    def test_posterior_sample_and_decoder_likelihood_give_the_elbo(self):
        model = VAE(_config(input_shape=(8, 8, 1), backbone_type="conv", encoder_features=[4, 4],
                            decoder_features=[4, 4], parameters={"latent_channels": 3}), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, protocols.AutoencoderLikelihood)
        x = _binary(jax.random.PRNGKey(3), (4, 8, 8, 1))
        # model.elbo draws its noise from fold_in(rngs.sample(), 0): the same draw gives the same bound.
        key = jax.random.fold_in(nnx.Rngs(sample=7).sample(), 0)
        codes, log_q = model.sample_codes(x, key)
        mean, logvar = model.encode_distribution(x)
        z = codes.reshape(4, -1)
        expected = jnp.sum(-0.5 * (jnp.log(2 * jnp.pi) + logvar + (z - mean) ** 2 / jnp.exp(logvar)), axis=-1)
        np.testing.assert_allclose(log_q, expected, rtol=1e-5)
        log_prior = jnp.sum(-0.5 * (jnp.log(2 * jnp.pi) + z**2), axis=-1)
        elbo = model.decoder_log_likelihood(x, codes) + log_prior - log_q
        np.testing.assert_allclose(elbo, model.elbo(x, rngs=nnx.Rngs(sample=7)), rtol=1e-5)

    @parameterized.parameters("mlp", "conv")
    def test_first_samples_do_not_depend_on_n_samples(self, backbone):
        model = VAE(_config(input_shape=(8, 8, 1), backbone_type=backbone, encoder_features=[4, 4],
                            decoder_features=[4, 4]), rngs=nnx.Rngs(0))
        many = model.generate(n_samples=16, rngs=nnx.Rngs(7))
        few = model.generate(n_samples=4, rngs=nnx.Rngs(7))
        np.testing.assert_allclose(many[:4], few, atol=1e-6)
        self.assertTrue(bool(jnp.all((many >= 0) & (many <= 1))))
        self.assertFalse(np.allclose(many[0], many[1]))
        cold = model.generate(n_samples=4, rngs=nnx.Rngs(7), temperature=0.0)
        np.testing.assert_allclose(cold[0], cold[3], atol=1e-6)

    def test_encode_decode_interpolate(self):
        model = VAE(_config(), rngs=nnx.Rngs(0))
        x = _binary(jax.random.PRNGKey(0), (3, 6))
        mean, logvar = model.encode_distribution(x)
        np.testing.assert_allclose(model.encode(x), mean)
        self.assertFalse(np.allclose(model.encode(x, rngs=nnx.Rngs(1)), mean))
        np.testing.assert_allclose(model.reconstruct(x), model.decode(mean))
        path = model.interpolate(x[0], x[1], 5)
        self.assertEqual(path.shape, (5, 6))
        np.testing.assert_allclose(path[0], model.decode(mean[:1])[0], atol=1e-6)
        np.testing.assert_allclose(path[-1], model.decode(mean[1:2])[0], atol=1e-6)
        np.testing.assert_allclose(path[2], model.decode((mean[:1] + mean[1:2]) / 2)[0], atol=1e-6)

    def test_unconditional_model_refuses_labels(self):
        model = VAE(_config(), rngs=nnx.Rngs(0))
        self.assertFalse(hasattr(model, "num_classes"))
        with self.assertRaisesRegex(ValueError, "unconditional"):
            model(jnp.zeros((2, 6)), rngs=nnx.Rngs(0), labels=jnp.array([0, 1]))


class CVAETest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.model = CVAE(_config("cvae", parameters={"num_classes": 3}), rngs=nnx.Rngs(0))

    def test_labels_change_samples(self):
        self.assertEqual(self.model.num_classes, 3)
        a = self.model.generate(n_samples=4, rngs=nnx.Rngs(1), labels=jnp.zeros(4, jnp.int32))
        b = self.model.generate(n_samples=4, rngs=nnx.Rngs(1), labels=jnp.full(4, 2, jnp.int32))
        self.assertGreater(float(jnp.abs(a - b).max()), 1e-3)
        c = self.model.generate(n_samples=4, rngs=nnx.Rngs(1), labels=2)  # a scalar is broadcast
        np.testing.assert_allclose(b, c)

    def test_labels_change_the_posterior(self):
        x = _binary(jax.random.PRNGKey(0), (2, 6))
        m0, _ = self.model.encode_distribution(x, labels=jnp.array([0, 0]))
        m1, _ = self.model.encode_distribution(x, labels=jnp.array([1, 1]))
        self.assertGreater(float(jnp.abs(m0 - m1).max()), 1e-4)

    def test_missing_or_bad_labels_raise(self):
        x = jnp.zeros((2, 6))
        with self.assertRaisesRegex(ValueError, "labels are required"):
            self.model(x, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "labels are required"):
            self.model.generate(n_samples=2, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"\[0, 3\)"):
            self.model(x, rngs=nnx.Rngs(0), labels=jnp.array([0, 3]))
        with self.assertRaisesRegex(ValueError, "shape"):
            self.model.log_prob(x, rngs=nnx.Rngs(0), labels=jnp.array([0, 1, 2]))

    def test_likelihood_and_loss_with_labels(self):
        x = _binary(jax.random.PRNGKey(1), (2, 6))
        labels = jnp.array([0, 2])
        metrics = self.model.loss_fn({"x": x, "label": labels}, self.model(x, rngs=nnx.Rngs(0), labels=labels))
        self.assertTrue(bool(jnp.isfinite(metrics["loss"])))
        iwae = self.model.log_prob(x, rngs=nnx.Rngs(0), num_samples=5, labels=labels)
        self.assertEqual(iwae.shape, (2,))
        self.assertEqual(self.model.interpolate(x[0], x[1], 3, labels=1).shape, (3, 6))


class RegistryAndConfigTest(parameterized.TestCase):
    def test_builder_from_registry(self):
        model = registry.get_model_spec("vae").builder(ModelConfiguration(model_type="vae", latent_dim=8),
                                                       rngs=nnx.Rngs(0))
        self.assertIsInstance(model, VAE)
        self.assertEqual(model.backbone, "conv")  # 3-D default input_shape
        self.assertEqual(model.beta, 1.0)
        beta = registry.get_model_spec("beta-vae").builder(_config("beta-vae"), rngs=nnx.Rngs(0))
        self.assertEqual(beta.beta, 4.0)
        self.assertEqual(beta.backbone, "mlp")
        self.assertEqual(beta.iwae_samples, 64)

    def test_guide_configurations_are_accepted(self):
        ModelConfiguration(model_type="vae", latent_dim=128, parameters={"beta": 1.0})
        config = ModelConfiguration(model_type="vae", input_shape=(28, 28, 1), latent_dim=128,
                                    encoder_features=[64, 128], decoder_features=[128, 64],
                                    parameters={"beta": 1.0, "kl_weight": 1.0, "reconstruction_loss": "mse"})
        self.assertEqual(config.typed_parameters().reconstruction_loss, "mse")

    @parameterized.parameters("vae", "beta-vae", "cvae")
    def test_unknown_or_bad_parameters_are_rejected(self, model_type):
        with self.assertRaisesRegex(ValueError, f"'betta' is not valid.*Valid keys for '{model_type}': beta, "
                                                "decoder_std, iwae_samples, kl_weight"):
            ModelConfiguration(model_type=model_type, parameters={"betta": 1.0})
        with self.assertRaisesRegex(ValueError, "beta"):
            ModelConfiguration(model_type=model_type, parameters={"beta": -1.0})
        with self.assertRaisesRegex(ValueError, "reconstruction_loss"):
            ModelConfiguration(model_type=model_type, parameters={"reconstruction_loss": "l1"})

    def test_bad_backbones_are_explained(self):
        with self.assertRaisesRegex(ValueError, "needs an \\(H, W, C\\)"):
            VAE(_config(backbone_type="conv"), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "backbone_type 'unet' is not available.*mlp, conv"):
            VAE(_config(backbone_type="unet"), rngs=nnx.Rngs(0))


class JitAndPrecisionTest(parameterized.TestCase):
    @parameterized.parameters("vae", "beta-vae", "cvae")
    def test_jit_loss_equals_eager(self, model_type):
        model = registry.get_model_spec(model_type).builder(
            _config(model_type, input_shape=(8, 8, 1), encoder_features=[4], decoder_features=[4]), rngs=nnx.Rngs(0)
        )
        x = _binary(jax.random.PRNGKey(0), (3, 8, 8, 1))
        kw = {"labels": jnp.array([0, 1, 2])} if model_type == "cvae" else {}
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        @jax.jit
        def loss(params, rest, x, key):
            m = nnx.merge(graphdef, params, rest)
            return m.loss_fn({"x": x}, m(x, rngs=nnx.Rngs(key), **kw))

        key = jax.random.PRNGKey(3)
        eager = model.loss_fn({"x": x}, model(x, rngs=nnx.Rngs(key), **kw))
        jitted = loss(params, rest, x, key)
        for name in ("loss", "reconstruction_loss", "kl", "elbo"):
            np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-5, err_msg=name)
        log_p = jax.jit(lambda p, r, x: nnx.merge(graphdef, p, r).log_prob(x, rngs=nnx.Rngs(1), num_samples=4, **kw))
        np.testing.assert_allclose(log_p(params, rest, x), model.log_prob(x, rngs=nnx.Rngs(1), num_samples=4, **kw),
                                   rtol=1e-5)

    @parameterized.parameters("mlp", "conv")
    def test_bf16_policy_keeps_f32_params_and_loss(self, backbone):
        previous = device_manager.set_precision_policy(device_manager.PrecisionPolicy(compute_dtype=jnp.bfloat16))
        self.addCleanup(device_manager.set_precision_policy, previous)
        model = VAE(_config(input_shape=(8, 8, 1), backbone_type=backbone, encoder_features=[4, 4],
                            decoder_features=[4, 4]), rngs=nnx.Rngs(0))
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
            self.assertEqual(leaf.dtype, jnp.float32)
        x = _binary(jax.random.PRNGKey(0), (2, 8, 8, 1))
        out = model(x, rngs=nnx.Rngs(1))
        self.assertEqual(out["decoder_params"].dtype, jnp.float32)
        metrics = model.loss_fn({"x": x}, out)
        self.assertEqual(metrics["loss"].dtype, jnp.float32)
        self.assertTrue(bool(jnp.isfinite(metrics["loss"])))
        # The layers really compute in bf16.
        self.assertEqual(model.decoder(jnp.zeros((1, 2))).dtype, jnp.bfloat16)


if __name__ == "__main__":
    absltest.main()
