"""Tests for workshop.eval.prdc on constructed point sets and against brute force."""

import numpy as np
from absl.testing import absltest

from workshop.eval.prdc import knn_radii, precision_recall_density_coverage


def _brute_force(real, fake, k):
    """The reference definitions (the `prdc` package of Naeem et al.) in float64, strict comparisons."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # [M, N]
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_fr < r_real[None]
    return {
        "precision": inside.any(1).mean(),
        "recall": (d_fr < r_fake[:, None]).any(0).mean(),
        "density": inside.sum() / (k * len(fake)),
        "coverage": (d_fr.min(0) < r_real).mean(),
    }


class PRDCTest(absltest.TestCase):
    def test_points_on_a_line(self):
        # Real points 0..9 on a line, k = 1: every real ball has radius 1.
        real = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
        # One fake point between reals 0 and 1 (inside both balls), one far away.
        fake = np.array([[0.5, 0.0], [100.0, 0.0]])
        got = precision_recall_density_coverage(real, fake, k=1)
        # precision 1/2; density (2 + 0) / (1 * 2) = 1; coverage: reals 0 and 1 -> 2/10;
        # recall: the fake balls have radius 99.5, which reaches every real point.
        expected = {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.2}
        self.assertEqual(set(got), set(expected))
        for name, value in expected.items():
            self.assertAlmostEqual(got[name], value, places=6, msg=name)

    def test_identical_grid_is_perfect(self):
        g = np.arange(5.0)
        real = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)  # a 5x5 grid, k = 4 reaches all 4 neighbours
        got = precision_recall_density_coverage(real, real.copy(), k=4)
        self.assertEqual((got["precision"], got["recall"], got["coverage"]), (1.0, 1.0, 1.0))
        self.assertAlmostEqual(got["density"], _brute_force(real, real, 4)["density"], places=6)

    def test_random_sets_match_brute_force(self):
        rng = np.random.default_rng(0)
        real = rng.normal(size=(300, 5))
        fake = rng.normal(0.3, 1.2, size=(280, 5))  # not a multiple of the row block
        got = precision_recall_density_coverage(real, fake, k=5)
        expected = _brute_force(real, fake, 5)
        for name in expected:
            self.assertAlmostEqual(got[name], expected[name], places=5, msg=name)

    def test_fake_equal_to_real_scores_one_everywhere(self):
        """A ball holds its centre and k-1 neighbours, so memorised samples get density exactly 1, not (k+1)/k."""
        real = np.random.default_rng(1).normal(size=(200, 8))
        got = precision_recall_density_coverage(real, real.copy(), k=5)
        for name in ("precision", "recall", "density", "coverage"):
            self.assertEqual(got[name], 1.0, msg=name)

    def test_shared_large_offset_changes_nothing(self):
        """Features far from the origin (a shared offset of 1000) score as the centred ones, exactly."""
        rng = np.random.default_rng(2)
        real = rng.normal(size=(150, 16))
        fake = real[:100] + rng.normal(scale=0.05, size=(100, 16))  # near copies: distances << |features|
        expected = _brute_force(real, fake, 3)
        for offset in (0.0, 1000.0):
            got = precision_recall_density_coverage(real + offset, fake + offset, k=3)
            for name in expected:
                self.assertAlmostEqual(got[name], expected[name], places=6, msg=f"{name}, offset {offset}")

    def test_knn_radii(self):
        points = np.array([[0.0], [1.0], [3.0], [7.0]])
        np.testing.assert_allclose(knn_radii(points, 1), [1.0, 1.0, 2.0, 4.0])
        np.testing.assert_allclose(knn_radii(points, 2), [3.0, 2.0, 3.0, 6.0])

    def test_too_few_points(self):
        with self.assertRaisesRegex(ValueError, "more than k"):
            precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((3, 2)), k=5)


if __name__ == "__main__":
    absltest.main()
