"""Temperature, top-k and top-p (nucleus) filtering of categorical logits."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from workshop.models.autoregressive.sampling import check_sampling_settings, filter_logits, sample_categorical

_PROBS = jnp.array([0.5, 0.3, 0.15, 0.05])


class SamplingTest(absltest.TestCase):
    def test_top_k_keeps_the_k_largest(self):
        kept = np.isfinite(filter_logits(jnp.log(_PROBS), top_k=2))
        np.testing.assert_array_equal(kept, [True, True, False, False])

    def test_top_p_keeps_the_smallest_nucleus(self):
        # Mass before each token: 0, 0.5, 0.8, 0.95.
        for p, expected in [(0.5, 1), (0.51, 2), (0.8, 2), (0.85, 3), (1.0, 4)]:
            kept = np.isfinite(filter_logits(jnp.log(_PROBS), top_p=p))
            self.assertEqual(int(kept.sum()), expected, f"top_p={p}")
            self.assertTrue(kept[0])

    def test_sample_frequencies(self):
        keys = jax.random.split(jax.random.key(0), 20000)
        draw = jax.jit(jax.vmap(lambda k: sample_categorical(k, jnp.log(_PROBS), top_k=3)))
        freq = np.bincount(np.asarray(draw(keys)), minlength=4) / 20000
        np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], atol=0.015)
        hot = jax.jit(jax.vmap(lambda k: sample_categorical(k, jnp.log(_PROBS), temperature=0.25)))(keys)
        self.assertGreater(float(np.mean(np.asarray(hot) == 0)), 0.85)  # sharpened towards the mode

    def test_greedy_and_bad_settings(self):
        self.assertEqual(int(sample_categorical(jax.random.key(0), jnp.log(_PROBS), temperature=0.0)), 0)
        with self.assertRaisesRegex(ValueError, "top_k must lie in \\[1, 4\\], got 0"):
            check_sampling_settings(1.0, 0, None, 4)
        with self.assertRaisesRegex(ValueError, "temperature must be >= 0"):
            check_sampling_settings(-1.0, None, None, 4)


if __name__ == "__main__":
    absltest.main()
