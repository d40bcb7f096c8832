"""Tests for workshop.eval.quality: identical sets, shifted sets, determinism, warnings, caching."""

import os
import pathlib
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.eval import feature_net, quality as sq
from workshop.eval.frechet import gaussian_statistics


class _NoiseImages(nnx.Module):
    """A 'generative model' whose samples are uniform noise images."""

    def generate(self, *, n_samples, rngs):
        return jax.random.uniform(rngs.sample(), (n_samples, 28, 28, 1))


def _reference(features):
    mu, sigma = gaussian_statistics(features)
    return {"features": np.asarray(features, np.float32), "mu": mu, "sigma": sigma}


class SampleQualityTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.net = feature_net.FashionMNISTClassifier(rngs=nnx.Rngs(0))
        rng = np.random.default_rng(0)
        # Smooth blobs, not noise: the random net's features then vary between images.
        self.images = np.clip(rng.random((240, 1, 1, 1)) * np.linspace(0, 1, 28)[None, :, None, None]
                              + rng.normal(0, 0.05, (240, 28, 28, 1)), 0, 1).astype(np.float32)

    def test_set_against_itself(self):
        reference = _reference(feature_net.extract_features(self.net, self.images))
        with self.assertLogs(level="WARNING") as logs:  # 240 < MIN_RECOMMENDED_SAMPLES
            scores = sq.sample_quality(self.images, num_samples=None, net=self.net, reference=reference)
        self.assertIn("below", logs.output[0])
        self.assertLess(scores["fid"], 1e-6)
        for name in ("precision", "recall", "coverage"):
            self.assertEqual(scores[name], 1.0, name)
        self.assertEqual((scores["num_samples"], scores["num_reference"]), (240, 240))
        self.assertEqual(scores["feature_net"], "fashion_mnist_classifier")

    def test_shifted_features_closed_form_fid(self):
        rng = np.random.default_rng(1)
        real = rng.normal(size=(2000, 4))
        shift = np.array([1.0, 0.0, 0.0, 0.0])
        scores = sq.quality_from_features(_reference(real), real[:1500] + shift, kid_subset_size=500, kid_subsets=10)
        # Same covariance, so FID = |shift|^2 = 1 up to sampling error.
        self.assertAlmostEqual(scores["fid"], 1.0, delta=0.1)
        self.assertGreater(scores["kid"], 3 * scores["kid_std"])

    def test_model_samples_are_deterministic_and_worse_than_data(self):
        reference = _reference(feature_net.extract_features(self.net, self.images))
        run = lambda seed: sq.sample_quality(_NoiseImages(), num_samples=64, net=self.net,  # noqa: E731
                                             reference=reference, seed=seed, batch_size=32)
        first = run(0)
        self.assertEqual(first, run(0))
        self.assertNotEqual(first["fid"], run(1)["fid"])
        self.assertGreater(first["fid"], sq.sample_quality(self.images[:64], num_samples=64, net=self.net,
                                                           reference=reference)["fid"])

    def test_bad_samples_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"takes \[M, 28, 28, 1\]"):
            sq.sample_quality(np.zeros((10, 32, 32, 3)), net=self.net, reference={})
        with self.assertRaisesRegex(ValueError, "NaN"):
            sq.sample_quality(np.full((10, 28, 28, 1), np.nan), net=self.net, reference={})
        with self.assertRaisesRegex(ValueError, "known: fashion_mnist"):
            sq.sample_quality(self.images, dataset="cifar10", net=self.net)

    def test_reference_statistics_are_cached_per_weights(self):
        try:
            from workshop.data.datasets.image import default_data_dir

            default_data_dir("fashion_mnist")
        except FileNotFoundError:
            self.skipTest("Fashion-MNIST is not installed")
        cache = pathlib.Path(tempfile.mkdtemp())
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: str(cache)}):
            path = feature_net.save_feature_net(self.net, feature_net.default_weights_path(), {})
            net = feature_net.load_feature_net()
            first = sq.reference_features("fashion_mnist", net=net)
            files = list((cache / "reference_stats").glob("*.npz"))
            self.assertLen(files, 1)
            self.assertIn(net.fingerprint, files[0].name)
            self.assertEqual(first["features"].shape, (10000, 128))
            np.testing.assert_array_equal(sq.reference_features("fashion_mnist", net=net)["mu"], first["mu"])
            del path


if __name__ == "__main__":
    absltest.main()
