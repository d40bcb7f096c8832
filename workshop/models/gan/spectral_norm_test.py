"""Spectral normalisation against `jnp.linalg.svd`."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.gan import PowerIterationVector, SpectralNormConv, SpectralNormLinear, power_iteration


class PowerIterationTest(absltest.TestCase):
    def test_sigma_matches_the_largest_singular_value(self):
        w = jax.random.normal(jax.random.PRNGKey(0), (12, 7))
        u0 = jax.random.normal(jax.random.PRNGKey(1), (7,))
        _, sigma = power_iteration(w, u0 / jnp.linalg.norm(u0), num_iterations=200)
        np.testing.assert_allclose(sigma, jnp.linalg.svd(w, compute_uv=False)[0], rtol=1e-4)


class SpectralNormLayerTest(absltest.TestCase):
    def test_linear_converges_to_svd_over_calls_and_normalises(self):
        layer = SpectralNormLinear(10, 6, rngs=nnx.Rngs(0))
        layer.kernel[...] = layer.kernel[...] * 5.0  # far from norm 1, so normalising matters
        kernel = np.asarray(layer.kernel[...])
        true_sigma = np.linalg.svd(kernel, compute_uv=False)[0]
        x = jnp.ones((2, 10))
        first = layer.sigma()
        u_before = np.asarray(layer.u[...])
        for _ in range(50):  # one power iteration per call, as in training
            layer(x)
        self.assertFalse(np.allclose(u_before, layer.u[...]), "training-mode calls must advance u")
        np.testing.assert_allclose(layer.sigma(), true_sigma, rtol=1e-4)
        self.assertLess(float(first), true_sigma * (1 + 1e-5))  # power iteration approaches from below
        normalised = np.asarray(layer.normalised_kernel())
        np.testing.assert_allclose(np.linalg.svd(normalised, compute_uv=False)[0], 1.0, rtol=1e-4)
        # The layer computes x W / sigma + b.
        np.testing.assert_allclose(layer(x), np.asarray(x) @ kernel / true_sigma + np.asarray(layer.bias[...]),
                                   rtol=1e-4, atol=1e-5)

    def test_conv_uses_the_reshaped_kernel_and_eval_freezes_u(self):
        layer = SpectralNormConv(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(1))
        x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
        for _ in range(60):
            y = layer(x)
        self.assertEqual(y.shape, (2, 4, 4, 4))
        matrix = np.asarray(layer.kernel[...]).reshape(-1, 4)
        np.testing.assert_allclose(layer.sigma(), np.linalg.svd(matrix, compute_uv=False)[0], rtol=1e-4)
        layer.eval()
        frozen = np.asarray(layer.u[...])
        layer(x)
        np.testing.assert_array_equal(frozen, layer.u[...])

    def test_u_is_state_not_a_parameter(self):
        layer = SpectralNormLinear(4, 3, rngs=nnx.Rngs(0))
        _, params, rest = nnx.split(layer, nnx.Param, ...)
        self.assertEqual(set(params.keys()), {"kernel", "bias"})
        self.assertIsInstance(rest["u"], PowerIterationVector)

    def test_no_gradient_through_u(self):
        layer = SpectralNormLinear(4, 3, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def f(p):
            return jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(jnp.ones((1, 4))))

        grads = jax.jit(jax.grad(f))(params)
        self.assertTrue(all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)))


if __name__ == "__main__":
    absltest.main()
