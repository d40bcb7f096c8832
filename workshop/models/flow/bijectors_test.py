"""Tests of ActNorm, the invertible 1x1 convolution, permutations, squeeze and the step stacks."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.flow.bijectors import ActNorm, Invertible1x1Conv, Permutation, Reverse, squeeze, unsqueeze
from workshop.models.flow.stack import Chain, StackedSteps
from workshop.models.flow.test_util import check_bijector, randomize_params


def _images(seed=0, shape=(3, 2, 2, 3)):
    return 2.0 * jax.random.normal(jax.random.key(seed), shape) + 0.7


class ActNormTest(absltest.TestCase):
    def test_first_forward_normalises_the_batch_per_channel(self):
        layer = ActNorm(3)
        x = _images(shape=(8, 4, 4, 3)) * jnp.array([1.0, 5.0, 0.1])
        z, log_det = layer.forward(x)
        np.testing.assert_allclose(jnp.mean(z, axis=(0, 1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(jnp.std(z, axis=(0, 1, 2)), 1.0, atol=1e-4)
        self.assertTrue(bool(layer.initialized[...]))
        expected = -16 * jnp.sum(jnp.log(jnp.std(x, axis=(0, 1, 2))))
        np.testing.assert_allclose(log_det, jnp.full((8,), expected), rtol=1e-5)
        # The statistics are fixed now: another batch is not re-normalised.
        z2, _ = layer.forward(x + 3.0)
        np.testing.assert_allclose(jnp.mean(z2 - z), 3.0 * jnp.mean(jnp.exp(layer.initial_log_scale[...])),
                                   rtol=1e-4)

    def test_inverse_does_not_initialise(self):
        layer = ActNorm(3)
        x = _images()
        np.testing.assert_allclose(layer.inverse(x)[0], x)
        self.assertFalse(bool(layer.initialized[...]))

    def test_round_trip_and_log_det(self):
        layer = ActNorm(3)
        layer.forward(_images(1))
        randomize_params(layer)
        check_bijector(self, layer, _images(2))

    def test_initialises_inside_jit_through_split_state(self):
        layer = ActNorm(2)
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        @jax.jit
        def step(params, rest, x):
            m = nnx.merge(graphdef, params, rest, copy=True)
            z, _ = m.forward(x)
            return z, nnx.split(m, nnx.Param, ...)[2]

        x = jnp.array([[1.0, 10.0], [3.0, 30.0]])
        z, rest = step(params, rest, x)
        np.testing.assert_allclose(z, [[-1.0, -1.0], [1.0, 1.0]], atol=1e-4)
        self.assertTrue(bool(rest["initialized"][...]))
        np.testing.assert_allclose(rest["initial_bias"][...], [-2.0, -20.0])


class Invertible1x1ConvTest(absltest.TestCase):
    def test_starts_as_a_rotation(self):
        w = Invertible1x1Conv(4, rngs=nnx.Rngs(0)).weight()
        np.testing.assert_allclose(w @ w.T, jnp.eye(4), atol=1e-5)

    def test_round_trip_and_log_det_on_images_and_vectors(self):
        layer = randomize_params(Invertible1x1Conv(3, rngs=nnx.Rngs(1)), scale=0.2)
        check_bijector(self, layer, _images(3))
        check_bijector(self, layer, _images(4, (3, 3)))


class PermutationTest(absltest.TestCase):
    def test_permutations_invert_with_zero_log_det(self):
        x = _images(5, (2, 5))
        for layer in (Permutation.random(5, rngs=nnx.Rngs(0)), Reverse()):
            z, _ = check_bijector(self, layer, x)
            np.testing.assert_allclose(jnp.sort(z, axis=-1), jnp.sort(x, axis=-1))

    def test_rejects_a_non_permutation(self):
        with self.assertRaisesRegex(ValueError, "not a permutation"):
            Permutation([0, 0, 2])


class SqueezeTest(absltest.TestCase):
    def test_round_trip_and_block_layout(self):
        x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
        y = squeeze(x)
        self.assertEqual(y.shape, (2, 2, 3, 12))
        np.testing.assert_array_equal(unsqueeze(y), x)
        # The 2x2 block at the origin becomes the channels of pixel (0, 0).
        np.testing.assert_array_equal(y[0, 0, 0].reshape(2, 2, 3), x[0, :2, :2])

    def test_odd_size_names_the_shape(self):
        with self.assertRaisesRegex(ValueError, r"\(5, 4, 1\)"):
            squeeze(jnp.zeros((1, 5, 4, 1)))


class StackedStepsTest(absltest.TestCase):
    def test_scan_equals_the_unrolled_chain_and_inverts(self):
        def make(i, *, rngs):
            return Chain([ActNorm(3), Invertible1x1Conv(3, rngs=rngs), Reverse()])

        stack = StackedSteps(make, 3, rngs=nnx.Rngs(0))
        x = _images(6)
        z, log_det = stack.forward(x)
        self.assertTrue(bool(jnp.all(stack.steps.layers[0].initialized[...])))
        randomize_params(stack, scale=0.1)
        z, log_det = check_bijector(self, stack, x)
        # Unrolled: step k's variables are slice k of the stacked ones.
        graphdef, state = nnx.split(stack.steps)
        h, total = x, jnp.zeros(x.shape[0])
        for k in range(3):
            step = nnx.merge(graphdef, jax.tree.map(lambda v: v[k], state))
            h, ld = step.forward(h)
            total = total + ld
        np.testing.assert_allclose(h, z, atol=1e-5)
        np.testing.assert_allclose(total, log_det, rtol=1e-5)


if __name__ == "__main__":
    absltest.main()
