"""Tests for the two-stage latent model (workshop.models.latent), first stages given in memory."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models import latent
from workshop.models.factories import create_model
from workshop.models.latent import LatentModel, StageOneChangedError

_SHAPE = (8, 8, 1)
_KL_AE = dict(model_type="vae", input_shape=_SHAPE, backbone_type="conv", encoder_features=[4, 4],
              decoder_features=[4, 4], parameters={"latent_channels": 2, "reconstruction_loss": "discretized_logistic"})
_VQ_AE = dict(model_type="vqvae", input_shape=_SHAPE, latent_dim=3, encoder_features=[4, 4],
              decoder_features=[4, 4], parameters={"num_embeddings": 16})
_DDPM = dict(model_type="ddpm", num_timesteps=20, backbone_type="dit",
             parameters=dict(patch_size=1, hidden_size=16, depth=1, num_heads=2, sampling_steps=4))
_PIXELCNN = dict(model_type="pixelcnn", parameters=dict(num_layers=2, features=8, kernel_size=3, first_kernel_size=3))
_TRANSFORMER = dict(model_type="transformer", input_shape=[4],
                    parameters=dict(num_layers=1, num_heads=2, embed_dim=16))


def _autoencoder(spec, seed=0):
    return create_model(ModelConfiguration(**spec), rngs=nnx.Rngs(seed))


def _latent(ae_spec, prior, **parameters):
    config = ModelConfiguration(model_type="latent", input_shape=_SHAPE, parameters={"prior": prior, **parameters})
    return LatentModel(config, rngs=nnx.Rngs(1), autoencoder=_autoencoder(ae_spec))


def _images(n=4, seed=0):
    return jnp.round(jax.random.uniform(jax.random.PRNGKey(seed), (n, *_SHAPE)) * 255.0) / 255.0


def _size(tree):
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(tree))


class ContinuousPriorTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.model = _latent(_KL_AE, _DDPM, latent_scale=2.0, latent_range=4.0)

    def test_codes_map_to_the_prior_range_and_back(self):
        self.assertEqual((self.model.code_shape, self.model.prior_shape), ((2, 2, 2), (2, 2, 2)))
        z = jnp.array([[-4.0, -2.0, 0.0, 2.0, 1.0, 0.5, -1.0, 3.0]]).reshape(1, 2, 2, 2) / 2.0
        u = self.model.prior_input(z)
        # scaled codes 2z in [-4, 4] fill [0, 1]: u = 1/2 + 2z / 8.
        np.testing.assert_allclose(u, 0.5 + 2.0 * z / 8.0, rtol=1e-6)
        np.testing.assert_allclose(self.model.codes_of_prior_output(u), z, rtol=1e-6, atol=1e-7)

    def test_loss_is_the_priors_on_the_scaled_codes(self):
        x = _images()
        out = self.model(x, rngs=nnx.Rngs(3))
        codes = self.model.autoencoder.encode_codes(x)
        np.testing.assert_allclose(out["prior_x"], 0.5 + codes * 2.0 / 8.0, rtol=1e-6)
        direct = self.model.prior.loss_fn({"x": out["prior_x"]}, self.model.prior(out["prior_x"], rngs=nnx.Rngs(3)))
        metrics = self.model.loss_fn({"x": x}, out)
        np.testing.assert_allclose(metrics["loss"], direct["loss"], rtol=1e-6)
        np.testing.assert_allclose(metrics["prior_mse"], direct["mse"], rtol=1e-6)

    def test_generate_decodes_the_priors_samples(self):
        samples = self.model.generate(n_samples=3, rngs=nnx.Rngs(5))
        u = self.model.prior.generate(n_samples=3, rngs=nnx.Rngs(5))
        expected = self.model.autoencoder.decode_codes(self.model.codes_of_prior_output(u))
        np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-6)
        self.assertEqual(samples.shape, (3, *_SHAPE))
        # Options reach the prior: the stochastic DDPM sampler draws other codes than DDIM.
        u2 = self.model.prior.generate(n_samples=3, rngs=nnx.Rngs(5), sampler="ddpm", steps=20)
        self.assertFalse(np.allclose(u2, u))
        np.testing.assert_allclose(self.model.generate(n_samples=3, rngs=nnx.Rngs(5), sampler="ddpm", steps=20),
                                   self.model.autoencoder.decode_codes(self.model.codes_of_prior_output(u2)),
                                   rtol=1e-5, atol=1e-6)
        with self.assertRaisesRegex(ValueError, "does not take top_k"):
            self.model.generate(n_samples=2, rngs=nnx.Rngs(0), top_k=3)

    def test_log_prob_is_the_bound_through_the_decoder(self):
        x = _images()
        got = self.model.log_prob(x, rngs=nnx.Rngs(sample=9), num_samples=4)
        # By hand, with the same draws: c ~ q(c|x) from the first key, the prior's noise from the next ones.
        rngs = nnx.Rngs(sample=9)
        codes, log_q = self.model.autoencoder.sample_codes(x, rngs.sample())
        log_prior = self.model.prior.log_prob(self.model.prior_input(codes), rngs=rngs, num_samples=4)
        per_dim = math.log(255.0) + math.log(2.0 / 8.0)  # bin width 1/255 in u, du/dz = scale / (2 range)
        expected = self.model.autoencoder.decoder_log_likelihood(x, codes) + log_prior + 8 * per_dim - log_q
        np.testing.assert_allclose(got, expected, rtol=1e-5)
        self.assertIn("variational bound", self.model.likelihood_estimate)


class FirstStageTest(absltest.TestCase):
    def test_hash_is_of_the_weights(self):
        ae = _autoencoder(_KL_AE)
        self.assertEqual(latent.content_hash(latent.freeze(ae)), latent.content_hash(ae))
        self.assertEqual(latent.content_hash(ae), latent.content_hash(_autoencoder(_KL_AE)))
        self.assertNotEqual(latent.content_hash(ae), latent.content_hash(_autoencoder(_KL_AE, seed=1)))

    def test_latent_scale_gives_unit_variance(self):
        ae = _autoencoder(_KL_AE)
        x = np.asarray(_images(64, seed=2))
        scale = latent.estimate_latent_scale(ae, [x[:40], x[40:]])
        codes = np.asarray(ae.encode_codes(jnp.asarray(x)))
        self.assertAlmostEqual(float(np.std(codes * scale)), 1.0, places=4)


class DiscretePriorTest(parameterized.TestCase):
    @parameterized.named_parameters(("pixelcnn", _PIXELCNN, (2, 2, 1)), ("transformer", _TRANSFORMER, (4,)))
    def test_prior_over_code_maps(self, prior, prior_shape):
        model = _latent(_VQ_AE, prior)
        self.assertEqual((model.code_shape, model.prior_shape, model.num_codes), ((2, 2), prior_shape, 16))
        x = _images()
        codes = model.autoencoder.encode_codes(x)
        out = model(x, rngs=nnx.Rngs(0))
        np.testing.assert_array_equal(out["prior_x"], codes.reshape(4, *prior_shape))
        # The exact code likelihood: the loss is its mean NLL, and bits per code are reported.
        code_log_p = model.code_log_prob(x)
        np.testing.assert_allclose(code_log_p, model.prior.log_prob(codes.reshape(4, *prior_shape)), rtol=1e-6)
        metrics = model.loss_fn({"x": x}, out)
        np.testing.assert_allclose(metrics["loss"], -jnp.mean(code_log_p), rtol=1e-5)
        np.testing.assert_allclose(metrics["prior_nll_bits_per_dim"], -jnp.mean(code_log_p) / (4 * math.log(2)),
                                   rtol=1e-5)
        # The bound through the decoder: one-hot posterior, log q = 0.
        expected = model.autoencoder.decoder_log_likelihood(x, codes) + code_log_p
        np.testing.assert_allclose(model.log_prob(x, rngs=nnx.Rngs(0)), expected, rtol=1e-5)
        samples = model.generate(n_samples=3, rngs=nnx.Rngs(4))
        drawn = model.codes_of_prior_output(model.prior.generate(n_samples=3, rngs=nnx.Rngs(4)))
        self.assertTrue(bool(jnp.all((drawn >= 0) & (drawn < 16))))
        np.testing.assert_allclose(samples, model.autoencoder.decode_codes(drawn), rtol=1e-5, atol=1e-6)

    def test_the_priors_alphabet_is_the_codebook(self):
        with self.assertRaisesRegex(ValueError, r"num_levels=256 differs from the first stage's 16 codes"):
            _latent(_VQ_AE, dict(model_type="pixelcnn", parameters=dict(num_levels=256, num_layers=2, features=8)))


class ErrorsTest(absltest.TestCase):
    def test_a_first_stage_that_is_not_an_autoencoder(self):
        ddpm = create_model(ModelConfiguration(input_shape=_SHAPE, **_DDPM), rngs=nnx.Rngs(0))
        config = ModelConfiguration(model_type="latent", input_shape=_SHAPE, parameters={"prior": _DDPM})
        with self.assertRaisesRegex(ValueError, "'ddpm'.* is not an autoencoder"):
            LatentModel(config, rngs=nnx.Rngs(0), autoencoder=ddpm)

    def test_input_shape_must_be_the_autoencoders(self):
        config = ModelConfiguration(model_type="latent", input_shape=(16, 16, 1), parameters={"prior": _DDPM})
        with self.assertRaisesRegex(ValueError, r"input_shape \(16, 16, 1\) differs from the first stage's \(8, 8, 1\)"):
            LatentModel(config, rngs=nnx.Rngs(0), autoencoder=_autoencoder(_KL_AE))

    def test_prior_must_fit_the_kind_of_codes(self):
        with self.assertRaisesRegex(ValueError, "discrete codes need an autoregressive prior"):
            _latent(_VQ_AE, _DDPM)
        with self.assertRaisesRegex(ValueError, "does not fit the continuous codes"):
            _latent(_KL_AE, _PIXELCNN)
        with self.assertRaisesRegex(ValueError, "does not hold the 8 codes"):
            _latent(_KL_AE, {**_DDPM, "input_shape": [3, 3, 1]})

    def test_bad_prior_configurations_are_caught_by_the_schema(self):
        with self.assertRaisesRegex(ValueError, "model_type 'nope' is unknown"):
            ModelConfiguration(model_type="latent", parameters={"prior": {"model_type": "nope"}})
        with self.assertRaisesRegex(ValueError, "is a GAN"):
            ModelConfiguration(model_type="latent", parameters={"prior": {"model_type": "dcgan"}})

    def test_a_workdir_needs_a_loader_and_a_recorded_hash_must_match(self):
        config = ModelConfiguration(model_type="latent", input_shape=_SHAPE, parameters={"prior": _DDPM})
        with self.assertRaisesRegex(ValueError, "needs its first stage: set parameters.autoencoder_workdir"):
            create_model(config, rngs=nnx.Rngs(0))
        ae = _autoencoder(_KL_AE)
        found = latent.StageOne(ae, "/runs/ae/checkpoints/5", latent.content_hash(ae), "vae")
        latent.set_stage_one_loader(lambda workdir, checkpoint: found)
        try:
            params = {"prior": _DDPM, "autoencoder_workdir": "/runs/ae"}
            model = create_model(ModelConfiguration(model_type="latent", input_shape=_SHAPE, parameters=params),
                                 rngs=nnx.Rngs(0))
            self.assertEqual((model.autoencoder_checkpoint, model.autoencoder_hash), (found.checkpoint,
                                                                                       found.content_hash))
            params["autoencoder_hash"] = "0" * 64
            with self.assertRaisesRegex(StageOneChangedError, "has changed since this model was trained on it"):
                create_model(ModelConfiguration(model_type="latent", input_shape=_SHAPE, parameters=params),
                             rngs=nnx.Rngs(0))
        finally:
            latent.set_stage_one_loader(None)


if __name__ == "__main__":
    absltest.main()
