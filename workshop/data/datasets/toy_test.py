"""The toy densities have the geometry their names promise."""

import numpy as np
from absl.testing import absltest, parameterized

from workshop.data.datasets import toy


class ToyTest(parameterized.TestCase):
    @parameterized.parameters(*toy.TOY_DATASETS)
    def test_shapes_dtypes_and_determinism(self, name):
        x, labels = toy.sample_toy(name, 1000, seed=3)
        self.assertEqual((x.shape, x.dtype, labels.shape, labels.dtype), ((1000, 2), np.float32, (1000,), np.int32))
        np.testing.assert_array_equal(x, toy.sample_toy(name, 1000, seed=3)[0])
        self.assertFalse(np.array_equal(x, toy.sample_toy(name, 1000, seed=4)[0]))
        self.assertTrue(np.isfinite(x).all())

    def test_eight_gaussians_points_sit_at_their_mode(self):
        x, labels = toy.sample_toy("eight_gaussians", 4000)
        distance = np.linalg.norm(x - toy.eight_gaussians_modes()[labels], axis=1)
        self.assertLess(distance.max(), 0.25)
        self.assertEqual(sorted(set(labels.tolist())), list(range(8)))

    def test_checkerboard_fills_only_the_black_squares(self):
        x, _ = toy.sample_toy("checkerboard", 8000)
        col, row = np.floor(x[:, 0] / 2), np.floor(x[:, 1] / 2)
        self.assertTrue(((col + row) % 2 == 0).all())
        self.assertTrue((np.abs(x) <= 4).all())
        self.assertEqual(len({(c, r) for c, r in zip(col, row)}), 8)

    def test_two_moons_is_centred_with_two_labelled_halves(self):
        x, labels = toy.sample_toy("two_moons", 20000)
        np.testing.assert_allclose(x.mean(axis=0), [0.0, 0.0], atol=0.05)
        self.assertGreater(x[labels == 0, 1].mean(), x[labels == 1, 1].mean())

    def test_splits_differ_and_errors_name_the_value(self):
        train, test = toy.load_toy_dataset("pinwheel", train=True), toy.load_toy_dataset("pinwheel", train=False)
        self.assertEqual((len(train), len(test)), (50_000, 10_000))
        self.assertEqual(set(train[0]), {"x", "label"})
        with self.assertRaisesRegex(ValueError, r"'spiral' is unknown; known: checkerboard, eight_gaussians"):
            toy.sample_toy("spiral", 10)
        with self.assertRaisesRegex(ValueError, "num_examples must be positive, got 0"):
            toy.sample_toy("two_moons", 0)


if __name__ == "__main__":
    absltest.main()
