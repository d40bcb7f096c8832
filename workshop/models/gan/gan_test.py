"""Tests of the GAN models: registry, recipes, conditioning, sampling and errors."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import losses, registry
from workshop.core.configuration import ModelConfiguration
from workshop.models.gan import GAN, SpectralNormConv, SpectralNormLinear


def _vector_gan(model_type="dcgan", **parameters):
    config = ModelConfiguration(model_type=model_type, input_shape=(2,), latent_dim=4, encoder_features=[16, 16],
                                decoder_features=[16], parameters=parameters)
    return GAN(config, rngs=nnx.Rngs(0))


@functools.lru_cache(maxsize=None)
def _shared_gan(model_type="dcgan"):
    """One model per type for the tests that only read it (building costs eager compiles)."""
    return _vector_gan(model_type)


class GuideTest(absltest.TestCase):
    def test_the_guide_snippet(self):
        from workshop.models.factories import create_gan  # pylint: disable=import-outside-toplevel

        config = ModelConfiguration(model_type="wgan-gp", latent_dim=100, parameters={"gp_weight": 10.0})
        model = create_gan(config, rngs=nnx.Rngs(0))
        self.assertEqual((model.loss, model.gp_weight, model.n_critic), ("wasserstein", 10.0, 5))
        x = model.generate(n_samples=3, rngs=nnx.Rngs(1))
        self.assertEqual(x.shape, (3, 28, 28, 1))  # the default input_shape, a conv generator
        self.assertTrue(0.0 <= float(x.min()) and float(x.max()) <= 1.0)
        with self.assertRaisesRegex(ValueError, "create_vae got model_type 'wgan-gp', which is a gan model"):
            from workshop.models.factories import create_vae  # pylint: disable=import-outside-toplevel

            create_vae(config, rngs=nnx.Rngs(0))


class RecipeTest(parameterized.TestCase):
    @parameterized.parameters(
        ("dcgan", "non-saturating", 1, 0.0, False),
        ("wgan-gp", "wasserstein", 5, 10.0, False),
        ("sngan", "hinge", 1, 0.0, True),
        ("lsgan", "least-squares", 1, 0.0, False),
        ("hinge-gan", "hinge", 1, 0.0, False),
    )
    def test_registered_defaults(self, model_type, loss, n_critic, gp_weight, spectral):
        self.assertEqual(registry.get_model_spec(model_type).family, "gan")
        model = _shared_gan(model_type)
        self.assertEqual((model.loss, model.n_critic, model.gp_weight), (loss, n_critic, gp_weight))
        layer_types = {type(layer) for layer in model.discriminator.layers}
        self.assertEqual(layer_types == {SpectralNormLinear}, spectral)

    def test_sngan_conv_discriminator_is_normalised(self):
        model = GAN(ModelConfiguration(model_type="sngan", input_shape=(8, 8, 1), latent_dim=4,
                                       encoder_features=[4, 8], decoder_features=[8, 4]), rngs=nnx.Rngs(0))
        self.assertTrue(all(isinstance(layer, SpectralNormConv) for layer in model.discriminator.layers))

    def test_loss_fn_is_the_named_loss_of_the_forward_pass(self):
        model = _vector_gan("lsgan")
        x = jnp.array([[2.0, 0.0], [0.0, -2.0], [1.0, 1.0]])
        out = model(x, rngs=nnx.Rngs(3))
        metrics = model.loss_fn({"x": x}, out)
        np.testing.assert_allclose(out["real_scores"], model.discriminate(x), rtol=1e-6)
        np.testing.assert_allclose(
            metrics["d_loss"], jnp.mean(losses.least_squares_discriminator_loss(out["real_scores"], out["fake_scores"])),
            rtol=1e-6)
        np.testing.assert_allclose(metrics["g_loss"], jnp.mean(0.5 * (out["fake_scores"] - 1.0) ** 2), rtol=1e-6)
        np.testing.assert_allclose(metrics["wasserstein_estimate"],
                                   jnp.mean(out["real_scores"]) - jnp.mean(out["fake_scores"]), rtol=1e-5)


class BadInputTest(absltest.TestCase):
    def test_labels_to_an_unconditional_model(self):
        model = _shared_gan()
        with self.assertRaisesRegex(ValueError, "'dcgan' is unconditional and takes no labels.*num_classes"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 1]))
        with self.assertRaisesRegex(ValueError, "unconditional"):
            model(jnp.zeros((2, 2)), rngs=nnx.Rngs(0), labels=jnp.array([0, 1]))

    def test_n_critic_below_one(self):
        with self.assertRaisesRegex(ValueError, r"parameters\.n_critic: Input should be greater than or equal to 1"):
            ModelConfiguration(model_type="wgan-gp", parameters={"n_critic": 0})

    def test_unknown_loss_lists_the_valid_ones(self):
        with self.assertRaisesRegex(ValueError, "parameters.loss: .*'non-saturating', 'wasserstein', 'hinge' or "
                                                "'least-squares'"):
            ModelConfiguration(model_type="dcgan", parameters={"loss": "minimax"})

    def test_unknown_parameter_key(self):
        with self.assertRaisesRegex(ValueError, "'gp_wieght' is not valid for model_type 'wgan-gp'.*gp_weight"):
            ModelConfiguration(model_type="wgan-gp", parameters={"gp_wieght": 1.0})

    def test_conv_backbone_needs_images(self):
        with self.assertRaisesRegex(ValueError, "backbone_type 'conv' needs an \\(H, W, C\\) input_shape"):
            GAN(ModelConfiguration(model_type="dcgan", input_shape=(2,), backbone_type="conv"), rngs=nnx.Rngs(0))


class ConditionalTest(absltest.TestCase):
    def test_projection_discriminator(self):
        model = _vector_gan("sngan", num_classes=3)
        model.eval()  # freeze the power iterations so two calls see the same weights
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
        y0, y2 = jnp.zeros(4, jnp.int32), jnp.full(4, 2, jnp.int32)
        phi = model.discriminator.features(x)
        emb = model.discriminator.projection.embedding[...]
        # D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, so the label changes the score by the projection alone.
        np.testing.assert_allclose(model.discriminate(x, labels=y2) - model.discriminate(x, labels=y0),
                                   phi @ (emb[2] - emb[0]), rtol=1e-4, atol=1e-5)

    def test_labels_reach_the_generator(self):
        model = _image_gan("dcgan", num_classes=5)
        model.eval()
        z = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
        labels = jnp.array([1, 3, 3])
        graphdef, params, rest = nnx.split(model.generator, nnx.Param, ...)

        def total(params):
            return jnp.sum(nnx.merge(graphdef, params, rest)(z, labels))

        table = jax.grad(total)(params)["label_embedding"]["embed"]["embedding"][...]
        used = np.abs(np.asarray(table)).sum(axis=1) > 0
        np.testing.assert_array_equal(used, [False, True, False, True, False])
        with self.assertRaisesRegex(ValueError, r"labels must lie in \[0, 5\)"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 5]))
        with self.assertRaisesRegex(ValueError, "labels"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0.5, 1.0]))

    def test_labels_are_required_and_checked(self):
        model = _vector_gan("dcgan", num_classes=3)
        self.assertEqual(model.num_classes, 3)
        with self.assertRaisesRegex(ValueError, "conditional: labels are required"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"labels must lie in \[0, 3\)"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 3]))
        a = model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 1]))
        b = model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([2, 1]))
        self.assertFalse(np.allclose(a[0], b[0]))
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def _image_gan(model_type="dcgan", **parameters):
    config = ModelConfiguration(model_type=model_type, input_shape=(8, 8, 1), latent_dim=4, backbone_type="conv",
                                encoder_features=[4, 6], decoder_features=[6, 4], parameters=parameters)
    return GAN(config, rngs=nnx.Rngs(0))


class NormalisationTest(parameterized.TestCase):
    @parameterized.parameters(
        ("dcgan", "conv", {}, "batch", "batch"),       # Radford et al. 2015: batch norm in both players
        ("wgan-gp", "conv", {}, "batch", "none"),      # the penalised critic takes no batch norm
        ("sngan", "conv", {}, "batch", "none"),
        ("dcgan", "conv", {"r1_weight": 1.0}, "batch", "none"),
        ("wgan-gp", "conv", {"discriminator_norm": "layer"}, "batch", "layer"),
        ("dcgan", "mlp", {}, "none", "none"),
    )
    def test_auto_norms(self, model_type, backbone, parameters, g_norm, d_norm):
        config = ModelConfiguration(model_type=model_type, input_shape=(8, 8, 1), latent_dim=4, backbone_type=backbone,
                                    encoder_features=[4, 6], decoder_features=[6, 4], parameters=parameters)
        model = GAN(config, rngs=nnx.Rngs(0))
        self.assertEqual((model.generator.norm, model.discriminator.norm), (g_norm, d_norm))

    def test_penalised_critic_refuses_batch_norm(self):
        for model_type, parameters in (("wgan-gp", {}), ("dcgan", {"r1_weight": 1.0})):
            with self.assertRaisesRegex(ValueError, "discriminator_norm='batch' cannot be combined with gp_weight"):
                _image_gan(model_type, discriminator_norm="batch", **parameters)
        with self.assertRaisesRegex(ValueError, "discriminator norm 'batch' is implemented for the conv backbone only"):
            _vector_gan("dcgan", discriminator_norm="batch")
        with self.assertRaisesRegex(ValueError, "generator_norm"):
            _image_gan("dcgan", generator_norm="layer")

    def test_discriminator_batch_norm_train_and_eval(self):
        model = _image_gan("dcgan")
        d = model.discriminator
        x = jax.random.uniform(jax.random.PRNGKey(0), (6, 8, 8, 1))
        model.train()
        scores = d(x)
        # Training mode: the second convolution's output is normalised with this batch's
        # statistics, and the running averages move by (1 - momentum) towards them.
        a = d.layers[1](jax.nn.leaky_relu(d.layers[0](x), 0.2))
        mean, var = jnp.mean(a, axis=(0, 1, 2)), jnp.var(a, axis=(0, 1, 2))
        np.testing.assert_allclose(d.norms[1].mean[...], 0.1 * mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(d.norms[1].var[...], 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6)
        h = jax.nn.leaky_relu((a - mean) / jnp.sqrt(var + 1e-5), 0.2).reshape(6, -1)
        np.testing.assert_allclose(scores, (h @ d.head.kernel[...] + d.head.bias[...])[:, 0], rtol=1e-4, atol=1e-5)
        # ... so a score depends on the rest of the batch.
        self.assertFalse(np.allclose(d(x[:2]), scores[:2], atol=1e-4))
        # Evaluation mode: the running averages, each example on its own, statistics frozen.
        model.eval()
        frozen = jax.tree.map(np.asarray, nnx.state(d, nnx.BatchStat))
        full = d(x)
        np.testing.assert_allclose(d(x[:2]), full[:2], rtol=1e-5, atol=1e-6)
        h = jax.nn.leaky_relu((a - d.norms[1].mean[...]) / jnp.sqrt(d.norms[1].var[...] + 1e-5), 0.2).reshape(6, -1)
        np.testing.assert_allclose(full, (h @ d.head.kernel[...] + d.head.bias[...])[:, 0], rtol=1e-4, atol=1e-5)
        jax.tree.map(np.testing.assert_array_equal, frozen, jax.tree.map(np.asarray, nnx.state(d, nnx.BatchStat)))

    def test_generator_batch_norm_train_and_eval(self):
        model = _image_gan("dcgan")
        g = model.generator
        z = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
        model.train()
        g(z)
        stem = g.net.stem(z)  # [5, 2 * 2 * 6]: the projection to the smallest map
        np.testing.assert_allclose(g.net.norms[0].mean[...], 0.1 * jnp.mean(stem.reshape(5, 2, 2, 6), axis=(0, 1, 2)),
                                   rtol=1e-4, atol=1e-6)
        self.assertFalse(np.allclose(g(z[:2]), g(z)[:2], atol=1e-4))
        model.eval()
        np.testing.assert_allclose(g(z[:2]), g(z)[:2], rtol=1e-5, atol=1e-6)

    def test_layer_norm_critic_scores_each_example_alone(self):
        model = _image_gan("wgan-gp", discriminator_norm="layer")
        model.train()
        x = jax.random.uniform(jax.random.PRNGKey(0), (6, 8, 8, 1))
        np.testing.assert_allclose(model.discriminator(x[:2]), model.discriminator(x)[:2], rtol=1e-5, atol=1e-6)
        # The gradient penalty's per-example gradients: example 0's score ignores example 1.
        grads = jax.grad(lambda v: model.discriminator(v)[0])(x)
        self.assertEqual(float(jnp.abs(grads[1:]).max()), 0.0)


class SamplingTest(absltest.TestCase):
    def test_samples_do_not_depend_on_the_batch_size(self):
        model = _shared_gan()
        few = model.generate(n_samples=3, rngs=nnx.Rngs(5))
        many = model.generate(n_samples=10, rngs=nnx.Rngs(5))
        np.testing.assert_allclose(few, many[:3], rtol=1e-5, atol=1e-6)

    def test_truncation_bounds_the_latents(self):
        model = _shared_gan()
        z = model.sample_latents(500, jax.random.PRNGKey(0), truncation=0.5)
        self.assertLessEqual(float(jnp.abs(z).max()), 0.5)
        self.assertGreater(float(jnp.abs(z).max()), 0.45)
        full = model.sample_latents(500, jax.random.PRNGKey(0))
        self.assertGreater(float(jnp.abs(full).max()), 2.0)
        with self.assertRaisesRegex(ValueError, "truncation must be positive"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), truncation=0.0)

    def test_interpolation(self):
        model = _shared_gan()
        z_a, z_b = jnp.array([3.0, 0.0, 0.0, 0.0]), jnp.array([0.0, 3.0, 0.0, 0.0])
        path = model.interpolate(z_a, z_b, 5)
        self.assertEqual(path.shape, (5, 2))
        np.testing.assert_allclose(path[0], model.decode(z_a[None])[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(path[-1], model.decode(z_b[None])[0], rtol=1e-5, atol=1e-6)
        # The slerp midpoint keeps the endpoints' norm (3), the straight line's does not (3 / sqrt 2).
        mid = jnp.array([1.0, 1.0, 0.0, 0.0]) * 3.0 / np.sqrt(2.0)
        np.testing.assert_allclose(path[2], model.decode(mid[None])[0], rtol=1e-5, atol=1e-6)
        line = model.interpolate(z_a, z_b, 5, spherical=False)
        np.testing.assert_allclose(line[2], model.decode(jnp.array([[1.5, 1.5, 0.0, 0.0]]))[0], rtol=1e-5, atol=1e-6)

    def test_generate_under_jit(self):
        model = _shared_gan()
        graphdef, state = nnx.split(model)
        f = jax.jit(lambda s, k: nnx.merge(graphdef, s).generate(n_samples=4, rngs=nnx.Rngs(k)))
        np.testing.assert_allclose(f(state, jax.random.PRNGKey(1)), model.generate(n_samples=4, rngs=nnx.Rngs(1)),
                                   rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
