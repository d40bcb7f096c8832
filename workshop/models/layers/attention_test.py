"""Tests for workshop.models.layers.attention."""

import jax
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.layers.attention import SpatialSelfAttention, fused_attention, group_norm_groups


class AttentionTest(absltest.TestCase):
    def test_identity_at_initialisation(self):
        layer = SpatialSelfAttention(16, num_heads=4, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 16))
        np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, x: m(x))(layer, x)), np.asarray(x))

    def test_permuting_positions_permutes_the_output(self):
        """Attention has no notion of position: shuffling pixels shuffles the result the same way."""
        layer = SpatialSelfAttention(8, num_heads=2, rngs=nnx.Rngs(0))
        out_proj = layer.attention.out.kernel
        out_proj[...] = jax.random.normal(jax.random.PRNGKey(1), out_proj.shape) * 0.3
        x = jax.random.normal(jax.random.PRNGKey(2), (1, 4, 4, 8))
        perm = np.random.default_rng(0).permutation(16)
        x_perm = x.reshape(1, 16, 8)[:, perm].reshape(1, 4, 4, 8)
        run = nnx.jit(lambda m, x: m(x))
        y = np.asarray(run(layer, x)).reshape(1, 16, 8)[:, perm]
        np.testing.assert_allclose(np.asarray(run(layer, x_perm)).reshape(1, 16, 8), y, atol=1e-5)
        self.assertGreater(np.abs(y - np.asarray(x_perm).reshape(1, 16, 8)).max(), 1e-2)

    def test_fused_attention_matches_flax_default(self):
        q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 7, 3, 4)) for i in range(3))
        np.testing.assert_allclose(fused_attention(q, k, v), nnx.dot_product_attention(q, k, v), atol=1e-5)

    def test_group_counts(self):
        self.assertEqual([group_norm_groups(c) for c in (32, 64, 48, 128, 256, 7, 1)], [8, 16, 12, 32, 32, 1, 1])
        with self.assertRaisesRegex(ValueError, "must divide channels=10"):
            SpatialSelfAttention(10, num_heads=4, rngs=nnx.Rngs(0))


if __name__ == "__main__":
    absltest.main()
