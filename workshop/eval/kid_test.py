"""Tests for workshop.eval.kid: the unbiased estimator against brute force, and its unbiasedness."""

import itertools

import jax
import numpy as np
from absl.testing import absltest

from workshop.eval.kid import kernel_inception_distance, polynomial_mmd2_unbiased


def _brute_force_mmd2(x, y):
    k = lambda a, b: (np.dot(a, b) / len(a) + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


class KIDTest(absltest.TestCase):
    def test_matches_double_loop(self):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(7, 3)), rng.normal(1.0, size=(7, 3))
        np.testing.assert_allclose(float(polynomial_mmd2_unbiased(x, y)), _brute_force_mmd2(x, y), rtol=1e-4)

    def test_whole_sets_as_one_subset(self):
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4)) * 2
        mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=9)
        # Each subset is a permutation of the whole set, which the estimator ignores.
        np.testing.assert_allclose(mean, _brute_force_mmd2(x, y), rtol=1e-4)
        self.assertLess(std, 1e-4 * abs(mean))

    def test_unbiased_on_identical_distributions(self):
        # Independent pairs from one distribution: the estimates average to 0
        # (a biased V-statistic would sit clearly above 0 at m = 20).
        key = jax.random.PRNGKey(0)
        d, m, pairs = 8, 20, 400
        x = np.asarray(jax.random.normal(key, (pairs, m, d)))
        y = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (pairs, m, d)))
        values = np.asarray(jax.vmap(polynomial_mmd2_unbiased)(x, y))
        standard_error = values.std() / np.sqrt(pairs)
        self.assertLess(abs(values.mean()), 4 * standard_error)
        k = lambda a, b: (a @ np.swapaxes(b, -1, -2) / d + 1.0) ** 3  # noqa: E731
        biased = np.mean(k(x, x), (1, 2)) + np.mean(k(y, y), (1, 2)) - 2 * np.mean(k(x, y), (1, 2))
        self.assertGreater(biased.mean(), 10 * standard_error)

    def test_positive_for_shifted_and_deterministic(self):
        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(500, 16)), rng.normal(0.5, size=(500, 16))
        same = kernel_inception_distance(x, rng.normal(size=(500, 16)), num_subsets=20, subset_size=200, seed=3)
        shifted = kernel_inception_distance(x, y, num_subsets=20, subset_size=200, seed=3)
        self.assertGreater(shifted[0], 10 * shifted[1])
        self.assertLess(abs(same[0]), shifted[0] / 10)
        self.assertEqual(shifted, kernel_inception_distance(x, y, num_subsets=20, subset_size=200, seed=3))
        self.assertNotEqual(shifted, kernel_inception_distance(x, y, num_subsets=20, subset_size=200, seed=4))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "same D"):
            kernel_inception_distance(np.zeros((4, 3)), np.zeros((4, 2)))
        with self.assertRaisesRegex(ValueError, "at least 2"):
            kernel_inception_distance(np.zeros((1, 3)), np.zeros((4, 3)))


if __name__ == "__main__":
    absltest.main()
