"""Tests for the DiT denoiser (workshop.models.diffusion.dit)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.diffusion.dit import (AdaLNZeroBlock, DiT, patchify, sincos_position_embedding_2d,
                                           unpatchify)


def _small(**kw):
    args = dict(patch_size=2, hidden_size=16, depth=2, num_heads=2)
    args.update(kw)
    return DiT((4, 6, 2), 2, rngs=nnx.Rngs(0), **args)


class DiTTest(absltest.TestCase):
    def test_patchify_round_trip_and_layout(self):
        x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
        tokens = patchify(x, 2)
        self.assertEqual(tokens.shape, (2, 6, 12))
        # Token 1 is the patch at rows 0-1, columns 2-3.
        np.testing.assert_array_equal(tokens[0, 1].reshape(2, 2, 3), x[0, 0:2, 2:4])
        np.testing.assert_array_equal(unpatchify(tokens, 4, 6, 2), x)

    def test_position_embedding_closed_form(self):
        pos = sincos_position_embedding_2d(2, 3, 8)
        self.assertEqual(pos.shape, (6, 8))
        # Token (row 1, column 2): [sin(1 w), cos(1 w), sin(2 w), cos(2 w)], w = (1, 1/100).
        w = np.array([1.0, 0.01])
        np.testing.assert_allclose(pos[5], np.concatenate([np.sin(w), np.cos(w), np.sin(2 * w), np.cos(2 * w)]),
                                   rtol=1e-6)
        self.assertEqual(len({tuple(p) for p in pos.round(6)}), 6)

    def test_adaln_zero_block_is_identity_at_init(self):
        block = AdaLNZeroBlock(16, 4, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 16))
        c = jax.random.normal(jax.random.PRNGKey(1), (3, 16))
        run = nnx.jit(lambda b, x, c: b(x, c))
        np.testing.assert_array_equal(np.asarray(run(block, x, c)), np.asarray(x))
        # ...and not once the modulation has learned something.
        block.modulation.kernel[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(2), block.modulation.kernel.shape)
        self.assertGreater(float(jnp.abs(run(block, x, c) - x).max()), 1e-3)

    def test_output_is_zero_at_init_and_depends_on_time_and_label(self):
        model = _small(num_classes=3)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 2))
        t = jnp.array([5.0, 500.0])
        run = nnx.jit(lambda m, x, t, y: m(x, t, y))
        np.testing.assert_array_equal(np.asarray(run(model, x, t, jnp.array([0, 1]))), 0.0)
        model.final_linear.kernel[...] = jax.random.normal(jax.random.PRNGKey(3), model.final_linear.kernel.shape)
        for block in model.blocks:
            block.modulation.kernel[...] = 0.2 * jax.random.normal(jax.random.PRNGKey(4), block.modulation.kernel.shape)
        a = run(model, x, t, jnp.array([0, 1]))
        b = run(model, x, t[::-1], jnp.array([0, 1]))
        c = run(model, x, t, jnp.array([2, 1]))
        self.assertGreater(float(jnp.abs(a - b).max()), 1e-3)
        self.assertGreater(float(jnp.abs(a[0] - c[0]).max()), 1e-3)
        np.testing.assert_allclose(a[1], c[1], atol=1e-6)  # example 1 kept its label

    def test_gradients_reach_every_parameter(self):
        model = _small()
        model.final_linear.kernel[...] = 0.1 * jnp.ones(model.final_linear.kernel.shape)
        for block in model.blocks:
            block.modulation.kernel[...] = 0.1 * jnp.ones(block.modulation.kernel.shape)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 2))
        graphdef, params = nnx.split(model, nnx.Param)
        grads = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x, jnp.array([1.0, 2.0])) ** 2)))(params)
        norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)]
        self.assertTrue(all(n > 0 for n in norms), norms)

    def test_patch_size_must_divide_the_image(self):
        with self.assertRaisesRegex(ValueError, r"28x28 is not divisible by 5.*e\.g\. 1, 2, 4, 7"):
            DiT((28, 28, 1), 1, patch_size=5, hidden_size=16, depth=1, num_heads=2, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "divisible by 4 and by num_heads=3"):
            DiT((28, 28, 1), 1, patch_size=4, hidden_size=16, depth=1, num_heads=3, rngs=nnx.Rngs(0))


if __name__ == "__main__":
    absltest.main()
