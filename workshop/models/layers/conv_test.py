"""Tests for workshop.models.layers.conv."""

import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager
from workshop.models.layers.conv import (UPSAMPLINGS, ConvDecoder, ConvEncoder, Upsample, depth_to_space,
                                        downsampled_sizes)

_FASHION_MNIST_TEST = os.path.join(os.environ.get("WORKSHOP_DATA_DIR", "/usr/share/datasets/fashion-mnist"),
                                   "t10k-images-idx3-ubyte.gz")


def _depth_to_space_reference(x: np.ndarray, block: int) -> np.ndarray:
    """Pixel by pixel: out[b, y*r + i, x*r + j, c] = in[b, y, x, (i*r + j)*C + c]."""
    b, h, w, depth = x.shape
    c = depth // (block * block)
    out = np.zeros((b, h * block, w * block, c), x.dtype)
    for y in range(h):
        for xx in range(w):
            for i in range(block):
                for j in range(block):
                    out[:, y * block + i, xx * block + j, :] = x[:, y, xx, (i * block + j) * c:(i * block + j + 1) * c]
    return out


class ConvTest(parameterized.TestCase):
    def test_downsampled_sizes(self):
        self.assertEqual(downsampled_sizes(28, 28, 2), [(28, 28), (14, 14), (7, 7)])
        self.assertEqual(downsampled_sizes(30, 9, 2), [(30, 9), (15, 5), (8, 3)])

    @parameterized.parameters(((28, 28, 1), [32, 64], (7, 7, 64)), ((32, 32, 3), [8, 16, 4], (4, 4, 4)),
                              ((30, 9, 2), [4, 4], (8, 3, 4)))
    def test_encoder_output_size(self, input_shape, features, feature_shape):
        enc = nnx.eval_shape(lambda: ConvEncoder(input_shape, features, rngs=nnx.Rngs(0)))
        self.assertEqual(enc.feature_shape, feature_shape)
        self.assertEqual(enc.output_size, int(np.prod(feature_shape)))
        # Shapes by abstract evaluation: traced, not compiled.
        x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
        build = lambda: ConvEncoder(input_shape, features, rngs=nnx.Rngs(0))  # noqa: E731
        self.assertEqual(jax.eval_shape(lambda x: build()(x), x).shape, (2, enc.output_size))
        self.assertEqual(jax.eval_shape(lambda x: build().feature_map(x), x).shape, (2, *feature_shape))

    def test_encoder_known_weights_pick_every_other_pixel(self):
        # SAME padding, stride 2, even side: pad 0 before and 1 after, so a
        # kernel with a 1 at its centre reads pixels 1, 3, 5, ...
        enc = ConvEncoder((4, 6, 1), [1], activation=lambda v: v, rngs=nnx.Rngs(0))
        kernel = np.zeros((3, 3, 1, 1), np.float32)
        kernel[1, 1, 0, 0] = 1.0
        enc.convs[0].kernel[...] = jnp.asarray(kernel)
        enc.convs[0].bias[...] = jnp.array([0.5])
        x = jnp.arange(24.0).reshape(1, 4, 6, 1)
        np.testing.assert_allclose(enc.feature_map(x)[0, :, :, 0], x[0, 1::2, 1::2, 0] + 0.5)

    @parameterized.parameters(((28, 28, 1), [64, 32], 1), ((32, 32, 3), [16, 8], 2), ((30, 30, 1), [8, 8], 2),
                              ((9, 5, 1), [4, 4, 4], 3))
    def test_decoder_output_matches_requested_shape(self, shape, features, per_pixel):
        build = lambda: ConvDecoder(shape, features, per_pixel, in_features=6, rngs=nnx.Rngs(0))  # noqa: E731
        out = jax.eval_shape(lambda z: build()(z), jax.ShapeDtypeStruct((2, 6), jnp.float32))
        self.assertEqual(out.shape, (2, shape[0], shape[1], shape[2] * per_pixel))

    def test_decoder_from_a_grid(self):
        dec = ConvDecoder((28, 28, 1), [16, 8], 2, in_features=5, grid_input=True, rngs=nnx.Rngs(0))
        self.assertEqual(dec.latent_grid_shape, (7, 7))
        self.assertEqual(dec(jnp.ones((3, 7, 7, 5))).shape, (3, 28, 28, 2))
        with self.assertRaisesRegex(ValueError, "expects a grid"):
            dec(jnp.ones((3, 8, 8, 5)))

    def test_decoder_head_bias_reaches_every_pixel(self):
        dec = ConvDecoder((6, 6, 2), [4], 2, in_features=3, rngs=nnx.Rngs(0))
        dec.head.kernel[...] = jnp.zeros_like(dec.head.kernel[...])
        dec.head.bias[...] = jnp.array([1.0, 2.0, 3.0, 4.0])
        out = dec(jax.random.normal(jax.random.PRNGKey(0), (2, 3)))
        np.testing.assert_allclose(out, jnp.broadcast_to(jnp.array([1.0, 2.0, 3.0, 4.0]), (2, 6, 6, 4)))

    def test_decoder_depends_on_its_input(self):
        dec = ConvDecoder((8, 8, 1), [4, 4], 1, in_features=3, rngs=nnx.Rngs(0))
        z = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
        grad = jax.grad(lambda z: dec(z)[0].sum())(z)
        self.assertGreater(float(jnp.abs(grad[0]).sum()), 0.0)
        np.testing.assert_allclose(grad[1], 0.0)  # examples do not mix

    def test_decoder_norm_comes_before_each_activation(self):
        # A LayerNorm over channels after the stem and after each (cropped) upsampling, before the ReLU.
        make = lambda norm: ConvDecoder((7, 7, 1), [6, 4], 1, in_features=3, activation=jax.nn.relu,  # noqa: E731
                                        norm=norm, rngs=nnx.Rngs(0))
        dec = make(lambda c: nnx.LayerNorm(c, rngs=nnx.Rngs(1)))
        plain = make(None)
        self.assertLen(dec.norms, 3)
        self.assertEmpty(plain.norms)  # no norm: no extra parameters (stem, two upsamplings, head)
        self.assertLen(jax.tree.leaves(nnx.state(plain, nnx.Param)), 8)
        z = jax.random.normal(jax.random.PRNGKey(0), (2, 3))

        def standardise(x):
            return (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)

        x = jax.nn.relu(standardise(dec.stem(z).reshape(2, *dec.stem_shape)))
        for up, size in zip(dec.upsamples, dec.stage_sizes[1:]):
            x = jax.nn.relu(standardise(up(x, size)))
        np.testing.assert_allclose(dec(z), dec.head(x), rtol=1e-4, atol=1e-5)
        self.assertFalse(np.allclose(dec(z), plain(z), atol=1e-3))

    @parameterized.parameters(2, 3)
    def test_depth_to_space_matches_a_pixel_by_pixel_reference(self, block):
        x = np.random.RandomState(0).randn(2, 3, 4, 2 * block * block).astype(np.float32)
        np.testing.assert_array_equal(depth_to_space(jnp.asarray(x), block), _depth_to_space_reference(x, block))

    def test_subpixel_is_a_conv_then_depth_to_space(self):
        # Known weights: the sub-pixel output equals a reference 3x3 SAME conv (numpy) followed by the
        # reference depth-to-space, cropped to the requested odd size.
        rng = np.random.RandomState(1)
        up = Upsample(3, 2, method="subpixel", rngs=nnx.Rngs(0))
        kernel = rng.randn(3, 3, 3, 8).astype(np.float32)
        bias = rng.randn(8).astype(np.float32)
        up.conv.kernel[...] = jnp.asarray(kernel)
        up.conv.bias[...] = jnp.asarray(bias)
        x = rng.randn(2, 4, 5, 3).astype(np.float32)
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        conv = np.zeros((2, 4, 5, 8), np.float32) + bias
        for dy in range(3):
            for dx in range(3):
                conv += np.einsum("bhwi,io->bhwo", padded[:, dy:dy + 4, dx:dx + 5], kernel[dy, dx])
        expected = _depth_to_space_reference(conv, 2)[:, :7, :9]
        np.testing.assert_allclose(up(jnp.asarray(x), (7, 9)), expected, rtol=1e-4, atol=1e-4)

    def test_subpixel_starts_as_nearest_upsampling(self):
        # ICNR: the four sub-pixels of every channel start with the same weights, so each 2x2 block is flat.
        up = Upsample(4, 3, method="subpixel", rngs=nnx.Rngs(0))
        out = np.asarray(up(jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 4)), (10, 10)))
        np.testing.assert_allclose(out, np.repeat(np.repeat(out[:, ::2, ::2], 2, axis=1), 2, axis=2), atol=1e-6)
        self.assertGreater(float(np.abs(out).max()), 0.1)

    @parameterized.parameters(("resize_conv", "nearest"), ("resize_conv_bilinear", "bilinear"))
    def test_resize_conv_is_a_resize_then_a_conv(self, method, resize):
        up = Upsample(2, 3, method=method, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 2))
        resized = jax.image.resize(x, (2, 7, 7, 2), resize)
        np.testing.assert_allclose(up(x, (7, 7)), up.conv(resized), rtol=1e-6)
        if resize == "nearest":  # 4 -> 8 by nearest is an exact 2x repeat
            np.testing.assert_allclose(jax.image.resize(x, (2, 8, 8, 2), resize),
                                       np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))

    def test_transposed_is_a_stride_2_transposed_conv_cropped(self):
        up = Upsample(2, 3, method="transposed", rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.PRNGKey(4), (1, 4, 4, 2))
        full = jax.lax.conv_transpose(x, up.conv.kernel[...], (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + up.conv.bias[...]
        np.testing.assert_allclose(up(x, (7, 8)), full[:, :7, :8], rtol=1e-5, atol=1e-6)

    @parameterized.parameters(*UPSAMPLINGS)
    def test_every_upsampling_has_finite_gradients_and_mixes_neighbours(self, method):
        dec = ConvDecoder((9, 7, 1), [4, 4], 2, in_features=3, upsampling=method, rngs=nnx.Rngs(0))
        self.assertEqual(dec.upsamples[0].method, method)
        z = jax.random.normal(jax.random.PRNGKey(5), (2, 3))
        out = dec(z)
        self.assertEqual(out.shape, (2, 9, 7, 2))
        grads = nnx.grad(lambda d: (d(z) ** 2).mean())(dec)
        leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
        self.assertTrue(all(bool(jnp.isfinite(g).all()) for g in leaves))
        self.assertTrue(all(float(jnp.abs(g).sum()) > 0 for g in leaves))

    def test_unknown_upsampling_is_explained(self):
        with self.assertRaisesRegex(ValueError, "upsampling 'deconv' is unknown; known: subpixel"):
            ConvDecoder((8, 8, 1), [4], in_features=2, upsampling="deconv", rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "doubles the side at most"):
            Upsample(2, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 3, 3, 2)), (7, 7))

    @parameterized.parameters(*UPSAMPLINGS)
    def test_a_tiny_conv_vae_learns_fashion_mnist_with_each_upsampling(self, method):
        if not os.path.exists(_FASHION_MNIST_TEST):
            self.skipTest(f"{_FASHION_MNIST_TEST} is absent (Debian package dataset-fashion-mnist)")
        with gzip.open(_FASHION_MNIST_TEST, "rb") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:512]
        data = (images > 127).astype(np.float32)
        latent = 8
        enc = ConvEncoder((28, 28, 1), [8, 16], rngs=nnx.Rngs(0))
        model = nnx.List([enc, nnx.Linear(enc.output_size, 2 * latent, rngs=nnx.Rngs(1)),
                          ConvDecoder((28, 28, 1), [16, 8], in_features=latent, upsampling=method,
                                      rngs=nnx.Rngs(2))])
        graphdef, params = nnx.split(model)
        optimizer = optax.adam(3e-3)

        def neg_elbo(params, x, key):
            encoder, head, decoder = nnx.merge(graphdef, params)
            stats = head(encoder(x))
            mean, logvar = stats[:, :latent], stats[:, latent:]
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
            recon = optax.sigmoid_binary_cross_entropy(decoder(z), x).sum((1, 2, 3))
            kl = 0.5 * (jnp.exp(logvar) + mean**2 - 1.0 - logvar).sum(-1)
            return (recon + kl).mean()

        @jax.jit
        def step(params, opt_state, x, key):
            loss, grads = jax.value_and_grad(neg_elbo)(params, x, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        opt_state = optimizer.init(params)
        losses = []
        for i in range(40):
            x = jnp.asarray(data[(i % 16) * 32:(i % 16 + 1) * 32])
            params, opt_state, loss = step(params, opt_state, x, jax.random.PRNGKey(i))
            losses.append(float(loss))
        self.assertTrue(np.isfinite(losses).all())
        # From ~545 nats (784 coin flips) to under 420 in 40 steps of 32 images (measured: 300-360).
        self.assertGreater(np.mean(losses[:3]), 500.0)
        self.assertLess(np.mean(losses[-5:]), 420.0)

    def test_bad_shapes_are_explained(self):
        with self.assertRaisesRegex(ValueError, r"\(H, W, C\)"):
            ConvEncoder((784,), [8], rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "non-empty"):
            ConvDecoder((28, 28, 1), [], in_features=4, rngs=nnx.Rngs(0))

    def test_bf16_policy_gives_bf16_activations_and_f32_params(self):
        previous = device_manager.set_precision_policy(device_manager.PrecisionPolicy(compute_dtype=jnp.bfloat16))
        self.addCleanup(device_manager.set_precision_policy, previous)
        enc = ConvEncoder((8, 8, 1), [4, 8], rngs=nnx.Rngs(0))
        dec = ConvDecoder((8, 8, 1), [8, 4], 2, in_features=5, rngs=nnx.Rngs(0))
        self.assertEqual(enc(jnp.ones((1, 8, 8, 1), jnp.float32)).dtype, jnp.bfloat16)
        self.assertEqual(jax.eval_shape(dec, jax.ShapeDtypeStruct((2, 5), jnp.float32)).dtype, jnp.bfloat16)
        for module in (enc, dec):
            for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)):
                self.assertEqual(leaf.dtype, jnp.float32)

    def test_jit_matches_eager(self):
        dec = ConvDecoder((12, 12, 1), [4, 4], 1, in_features=3, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(dec)
        z = jax.random.normal(jax.random.PRNGKey(2), (2, 3))
        jitted = jax.jit(lambda s, z: nnx.merge(graphdef, s)(z))(state, z)
        np.testing.assert_allclose(jitted, dec(z), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    absltest.main()
