"""Tests for workshop.eval.frechet against closed forms and an independent square root."""

import numpy as np
from absl.testing import absltest

from workshop.eval.frechet import frechet_distance, gaussian_statistics


def _random_covariance(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def _denman_beavers_sqrt(a, iterations=50):
    """The principal square root of a (non-symmetric) matrix with positive eigenvalues:
    an independent route to (S1 S2)^{1/2} (Denman & Beavers 1976)."""
    y, z = a.copy(), np.eye(len(a))
    for _ in range(iterations):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


class FrechetTest(absltest.TestCase):
    def test_diagonal_gaussians_match_closed_form(self):
        # Commuting covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
        mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
        a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
        expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
        self.assertAlmostEqual(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, places=10)

    def test_full_covariances_match_an_independent_square_root(self):
        rng = np.random.default_rng(0)
        d = 6
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
        covmean = _denman_beavers_sqrt(s1 @ s2)
        np.testing.assert_allclose(covmean @ covmean, s1 @ s2, atol=1e-10)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
        self.assertAlmostEqual(frechet_distance(mu1, s1, mu2, s2), expected, places=8)

    def test_one_dimensional_wasserstein(self):
        # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2.
        value = frechet_distance([2.0], [[9.0]], [-1.0], [[4.0]])
        self.assertAlmostEqual(value, 9.0 + 1.0, places=12)

    def test_same_set_is_zero_even_with_singular_covariance(self):
        rng = np.random.default_rng(1)
        features = rng.normal(size=(20, 64))  # N < D: the covariance has rank 19
        mu, sigma = gaussian_statistics(features)
        self.assertLess(frechet_distance(mu, sigma, mu, sigma), 1e-8)
        s = _random_covariance(rng, 32, rank=3)
        self.assertLess(frechet_distance(np.zeros(32), s, np.zeros(32), s), 1e-8)

    def test_samples_approach_population_distance(self):
        rng = np.random.default_rng(2)
        d = 4
        s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
        mu1, mu2 = np.zeros(d), np.full(d, 0.5)
        exact = frechet_distance(mu1, s1, mu2, s2)
        x = rng.multivariate_normal(mu1, s1, size=200_000)
        y = rng.multivariate_normal(mu2, s2, size=200_000)
        estimate = frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
        self.assertAlmostEqual(estimate, exact, delta=0.02 * exact + 1e-3)

    def test_statistics_are_mean_and_unbiased_covariance(self):
        x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
        mu, sigma = gaussian_statistics(x)
        np.testing.assert_allclose(mu, x.mean(0))
        np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))

    def test_bad_shapes_name_the_argument(self):
        with self.assertRaisesRegex(ValueError, "sigma2"):
            frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
        with self.assertRaisesRegex(ValueError, "at least 2"):
            gaussian_statistics(np.zeros((1, 3)))


if __name__ == "__main__":
    absltest.main()
