"""Tests for workshop.models.layers.timestep_embedding."""

import math

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.layers.timestep_embedding import TimestepEmbedding, sinusoidal_embedding


class TimestepEmbeddingTest(absltest.TestCase):
    def test_sinusoid_closed_form(self):
        t = jnp.array([0.0, 3.0, 250.5])
        emb = np.asarray(sinusoidal_embedding(t, 8, max_period=10000.0))
        freqs = np.array([10000.0 ** (-k / 4) for k in range(4)])
        for i, ti in enumerate([0.0, 3.0, 250.5]):
            np.testing.assert_allclose(emb[i], np.concatenate([np.cos(ti * freqs), np.sin(ti * freqs)]), atol=1e-4)
        # Cosines and sines of the same frequency lie on the unit circle.
        np.testing.assert_allclose(emb[:, :4] ** 2 + emb[:, 4:] ** 2, 1.0, rtol=1e-5)
        self.assertAlmostEqual(float(emb[0, 0]), math.cos(0.0))

    def test_odd_width_is_refused(self):
        with self.assertRaisesRegex(ValueError, "even number of features, got 7"):
            sinusoidal_embedding(jnp.zeros(2), 7)

    def test_mlp_distinguishes_nearby_timesteps(self):
        layer = TimestepEmbedding(32, frequency_features=16, rngs=nnx.Rngs(0))
        out = np.asarray(layer(jnp.array([10.0, 11.0, 10.0])))
        self.assertEqual(out.shape, (3, 32))
        np.testing.assert_array_equal(out[0], out[2])
        self.assertGreater(np.abs(out[0] - out[1]).max(), 1e-3)


if __name__ == "__main__":
    absltest.main()
