"""Tests for workshop.models.layers.conv."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager
from workshop.models.layers.conv import ConvDecoder, ConvEncoder, downsampled_sizes


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
        for up, (h, w) in zip(dec.upsamples, dec.stage_sizes[1:]):
            x = jax.nn.relu(standardise(up(x)[:, :h, :w, :]))
        np.testing.assert_allclose(dec(z), dec.head(x), rtol=1e-4, atol=1e-5)
        self.assertFalse(np.allclose(dec(z), plain(z), atol=1e-3))

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
