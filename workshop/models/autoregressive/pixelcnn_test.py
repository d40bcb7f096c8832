"""PixelCNN: causality without a blind spot, exact likelihood, sampling, bad input, real data."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.autoregressive import logistic_mixture
from workshop.models.autoregressive import PixelCNN
from workshop.models.autoregressive.sampling import sample_categorical


def _model(shape=(5, 5, 1), **params):
    # 24 features: a dead ReLU in every head unit at some pixel (which would hide
    # its dependencies from the gradient) has probability ~2^-24.
    params = {"num_layers": 4, "features": 24, "first_kernel_size": 3, **params}
    return PixelCNN(ModelConfiguration(model_type="pixelcnn", input_shape=shape, parameters=params),
                        rngs=nnx.Rngs(0))


def _images(shape, n=2, levels=256, seed=0):
    return np.random.default_rng(seed).integers(0, levels, (n, *shape)).astype(np.float32) / (levels - 1)


class PixelCNNTest(parameterized.TestCase):
    @parameterized.named_parameters(("grey", (5, 5, 1), "softmax"), ("rgb", (3, 3, 3), "softmax"),
                                    ("mixture_rgb", (3, 3, 3), "logistic_mixture"))
    def test_each_value_depends_on_exactly_the_previous_values(self, shape, output):
        """Gradients: value k (raster order over rows, columns, channels) sees every value < k, none >= k."""
        model = _model(shape, output=output, num_mixtures=2)
        x = jax.random.uniform(jax.random.key(1), (1, *shape), minval=-1.0, maxval=1.0)
        proj = jax.random.normal(jax.random.key(2), (model.params_per_value,))

        def outputs(x_flat):
            return (model.network(x_flat.reshape(1, *shape)) @ proj).reshape(-1)

        jac = np.abs(np.asarray(jax.jit(jax.jacrev(outputs))(x.reshape(-1))))  # [out value, in value]
        n = jac.shape[0]
        strictly_before = np.tril(np.ones((n, n), bool), k=-1)
        self.assertEqual(float(jac[~strictly_before].max()), 0.0, "an output depends on its own or a later value")
        self.assertGreater(float(jac[strictly_before].min()), 0.0, "blind spot: a previous value is not seen")

    def test_band_of_rows_gives_the_full_image_logits(self):
        model = _model((9, 4, 1), num_layers=2)  # receptive_rows 3 < 9: the band moves and is clamped
        self.assertEqual(model.receptive_rows, 3)
        levels = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 9, 4, 1)), jnp.int32)
        full = model.network(model._scaled(levels))
        band = jax.jit(jax.vmap(lambda r: model.window_params(levels, r), out_axes=1))(jnp.arange(9))
        np.testing.assert_allclose(band, full, atol=1e-5)

    def test_uniform_model_gives_log_256_per_dimension(self):
        model = _model((28, 28, 1), num_layers=1)
        model.head_out.conv.kernel[...] = jnp.zeros_like(model.head_out.conv.kernel[...])
        model.head_out.conv.bias[...] = jnp.zeros_like(model.head_out.conv.bias[...])
        x = _images((28, 28, 1), n=3)
        np.testing.assert_allclose(model.log_prob(x, num_samples=10), -784 * math.log(256), rtol=1e-6)
        metrics = model.loss_fn({"x": x}, model(x))
        np.testing.assert_allclose(metrics["nll_bits_per_dim"], 8.0, rtol=1e-6)

    def test_logistic_mixture_is_normalised(self):
        params = jax.random.normal(jax.random.key(0), (4, 9)) * jnp.array([1.0] * 3 + [0.5] * 3 + [1.0] * 3)
        levels = jnp.arange(256)
        log_p = jax.jit(jax.vmap(lambda l: logistic_mixture.mixture_log_prob(params, jnp.full((4,), l), 256)))(levels)
        np.testing.assert_allclose(jax.nn.logsumexp(log_p, axis=0), 0.0, atol=1e-4)

    def test_binary_model_likelihood_sums_to_one(self):
        model = _model((2, 2, 1), num_levels=2)
        all_images = np.array([[(k >> b) & 1 for b in range(4)] for k in range(16)], np.float32).reshape(16, 2, 2, 1)
        self.assertAlmostEqual(float(jax.nn.logsumexp(model.log_prob(all_images))), 0.0, places=4)

    def test_generate_per_sample_keys_and_conditional(self):
        model = _model((3, 3, 1), num_layers=2, features=8, num_classes=3)
        gen = jax.jit(lambda n, labels: model.generate(n_samples=n, rngs=nnx.Rngs(5), labels=labels),
                      static_argnums=0)
        four = gen(4, jnp.array([0, 1, 2, 0]))
        two = gen(2, jnp.array([0, 1]))
        self.assertEqual(four.shape, (4, 3, 3, 1))
        np.testing.assert_array_equal(four[:2], two)  # sample i does not depend on n_samples
        np.testing.assert_allclose(four * 255, np.round(four * 255), atol=1e-4)

    def test_prompt_rows_are_kept_and_completed_as_the_network_would(self):
        """Completing known top rows equals sampling by hand, value by value, from the full network."""
        model = _model((3, 3, 2), num_layers=2, features=8, num_classes=3)
        labels = jnp.array([1, 2])
        top = _images((1, 3, 2), n=2, seed=3)  # [2, R=1, 3, 2]
        out = np.asarray(jax.jit(lambda: model.generate(n_samples=2, rngs=nnx.Rngs(5), labels=labels,
                                                        prompt=top))())
        np.testing.assert_allclose(out[:, :1], top, atol=1e-6)
        key = nnx.Rngs(5).sample()
        levels = np.zeros((2, 3, 3, 2), np.int32)
        levels[:, :1] = np.round(top * 255)
        for t in range(6, 18):
            i, j, ch = t // 6, (t // 2) % 3, t % 2
            params = model.network(2.0 * jnp.asarray(levels, jnp.float32) / 255 - 1.0, labels)[:, i, j, ch]
            levels[:, i, j, ch] = [int(sample_categorical(jax.random.fold_in(jax.random.fold_in(key, b), t),
                                                          params[b])) for b in range(2)]
        np.testing.assert_allclose(out * 255, levels, atol=1e-3)
        with self.assertRaisesRegex(ValueError, r"top rows \[n_samples, R, 3, 2\] with R <= 3; got shape \(2, 4, 3, 2\)"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=labels, prompt=np.zeros((2, 4, 3, 2), np.float32))

    def test_bad_input_is_named(self):
        model = _model((2, 2, 1), num_layers=1)
        x = np.full((1, 2, 2, 1), 0.5, np.float32)
        x[0, 1, 0, 0] = 255.0
        with self.assertRaisesRegex(ValueError, r"256 levels.*\[0, 1\].*255\.0 at index \(0, 1, 0, 0\)"):
            model.log_prob(x)
        with self.assertRaisesRegex(ValueError, r"image levels must lie in \[0, 256\); got 300"):
            model.log_prob(np.array([[[[300], [0]], [[0], [0]]]], np.int32))
        with self.assertRaisesRegex(ValueError, "multiples of 1/1; got 0.5.*binarize"):
            _model((2, 2, 1), num_layers=1, num_levels=2).log_prob(np.full((1, 2, 2, 1), 0.5, np.float32))
        with self.assertRaisesRegex(ValueError, r"\[B, 2, 2, 1\], got shape \(1, 3, 2, 1\)"):
            model.log_prob(np.zeros((1, 3, 2, 1), np.float32))
        with self.assertRaisesRegex(ValueError, "labels are required"):
            _model((2, 2, 1), num_layers=1, num_classes=2).log_prob(np.zeros((1, 2, 2, 1), np.float32))
        with self.assertRaisesRegex(ValueError, "must be odd"):
            _model((2, 2, 1), num_layers=1, kernel_size=4)

    def test_loss_falls_on_fashion_mnist(self):
        from workshop.data.datasets.image import load_image_dataset

        try:
            dataset = load_image_dataset("fashion_mnist", train=True)
        except FileNotFoundError as err:
            if os.environ.get("WORKSHOP_REQUIRE_REAL_DATA"):
                raise
            self.skipTest(f"Fashion-MNIST not installed: {err}")
        images = dataset.images[:320].astype(np.float32) / 255.0  # the pipeline's k/255 floats
        model = _model((28, 28, 1), num_layers=2, features=8)
        graphdef, params = nnx.split(model)
        tx = optax.adam(1e-2)

        @jax.jit
        def step(params, opt_state, batch):
            loss = lambda p: nnx.merge(graphdef, p).loss_fn({}, nnx.merge(graphdef, p)(batch))["loss"]  # noqa: E731
            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        opt_state, losses = tx.init(params), []
        for i in range(20):
            params, opt_state, loss = step(params, opt_state, images[16 * i: 16 * (i + 1)])
            losses.append(float(loss) / (784 * math.log(2)))
        # A fresh model is near uniform (8 bits/dim); after 20 small steps on real
        # images (many black background pixels) it is far below.
        self.assertGreater(losses[0], 6.5)
        self.assertLess(np.mean(losses[-3:]), 5.0)


if __name__ == "__main__":
    absltest.main()
