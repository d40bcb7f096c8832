"""Tests for workshop.models.layers.mlp."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager
from workshop.models.layers.mlp import MLP


class MLPTest(parameterized.TestCase):
    def test_known_weights(self):
        mlp = MLP(2, [3], 1, activation=nnx.relu, rngs=nnx.Rngs(0))
        mlp.layers[0].kernel[...] = jnp.array([[1.0, -1.0, 0.5], [2.0, 1.0, -1.0]])
        mlp.layers[0].bias[...] = jnp.array([0.0, 0.5, -3.0])
        mlp.layers[1].kernel[...] = jnp.array([[1.0], [2.0], [4.0]])
        mlp.layers[1].bias[...] = jnp.array([-10.0])
        x = jnp.array([[1.0, 1.0], [-1.0, 2.0]])
        # hidden = relu(x @ W0 + b0); out = hidden @ W1 + b1 (no activation on the output).
        hidden = np.maximum(np.array([[3.0, 0.5, -3.5], [3.0, 3.5, -5.5]]), 0.0)
        expected = hidden @ np.array([[1.0], [2.0], [4.0]]) - 10.0
        np.testing.assert_allclose(mlp(x), expected, rtol=1e-6)
        self.assertLess(float(mlp(x)[0, 0]), 0.0)  # the final layer is not rectified

    def test_no_hidden_layers_is_one_affine_map(self):
        mlp = MLP(3, [], 2, rngs=nnx.Rngs(1))
        self.assertLen(mlp.layers, 1)
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
        layer = mlp.layers[0]
        np.testing.assert_allclose(mlp(x), x @ layer.kernel[...] + layer.bias[...], rtol=1e-5, atol=1e-6)

    @parameterized.parameters(((5,), [8, 8], 3), ((2, 7), [16], 4))
    def test_shapes_on_leading_axes(self, lead, hidden, out):
        mlp = MLP(6, hidden, out, rngs=nnx.Rngs(0))
        self.assertEqual(mlp(jnp.ones((*lead, 6))).shape, (*lead, out))

    def test_bf16_policy_gives_bf16_activations_and_f32_params(self):
        previous = device_manager.set_precision_policy(device_manager.PrecisionPolicy(compute_dtype=jnp.bfloat16))
        self.addCleanup(device_manager.set_precision_policy, previous)
        mlp = MLP(4, [8], 2, rngs=nnx.Rngs(0))
        self.assertEqual(mlp(jnp.ones((3, 4), jnp.float32)).dtype, jnp.bfloat16)
        for leaf in jax.tree.leaves(nnx.state(mlp, nnx.Param)):
            self.assertEqual(leaf.dtype, jnp.float32)

    def test_jit_matches_eager(self):
        mlp = MLP(4, [8, 8], 2, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(mlp)
        x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
        jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
        np.testing.assert_allclose(jitted, mlp(x), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
