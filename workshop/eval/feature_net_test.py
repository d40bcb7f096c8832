"""Tests for workshop.eval.feature_net and its training: shapes, weight files, errors, learning."""

import os
import pathlib
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.eval import feature_net
from workshop.eval.train_feature_net import accuracy, train_classifier


class FeatureNetTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = pathlib.Path(tempfile.mkdtemp())
        self.net = feature_net.FashionMNISTClassifier(rngs=nnx.Rngs(3))
        self.images = np.random.default_rng(0).random((7, 28, 28, 1)).astype(np.float32)

    def test_shapes(self):
        self.assertEqual(self.net.features(self.images).shape, (7, 128))
        self.assertEqual(self.net(self.images).shape, (7, 10))
        with self.assertRaisesRegex(ValueError, r"\[B, 28, 28, 1\]"):
            self.net.features(np.zeros((2, 32, 32, 3)))

    def test_save_load_round_trip(self):
        path = feature_net.save_feature_net(self.net, self.dir / "weights.npz", {"test_accuracy": 0.5})
        loaded = feature_net.load_feature_net(path)
        np.testing.assert_array_equal(np.asarray(loaded.features(self.images)), np.asarray(self.net.features(self.images)))
        self.assertEqual(loaded.fingerprint, feature_net.weights_fingerprint(path))
        self.assertIn('"sha256"', (self.dir / "info.json").read_text())

    def test_cache_dir_override_and_missing_weights_name_the_command(self):
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: str(self.dir)}):
            self.assertEqual(feature_net.default_weights_path(),
                             self.dir / "feature_nets" / "fashion_mnist_classifier" / "weights.npz")
            with self.assertRaisesRegex(feature_net.FeatureNetworkMissingError, "//workshop/eval:train_feature_net"):
                feature_net.load_feature_net()

    def test_wrong_file_names_the_keys(self):
        path = self.dir / "other.npz"
        np.savez(path, **{"conv1/kernel": np.zeros((3, 3, 1, 32), np.float32)})
        with self.assertRaisesRegex(ValueError, "missing .*conv2/kernel"):
            feature_net.load_feature_net(path)

    def test_extract_features_pads_the_last_batch(self):
        batched = feature_net.extract_features(self.net, self.images, batch_size=3)
        np.testing.assert_allclose(batched, np.asarray(self.net.features(self.images)), rtol=1e-5, atol=1e-6)
        as_uint8 = feature_net.extract_features(self.net, (self.images * 255).astype(np.uint8))
        self.assertEqual(as_uint8.shape, (7, 128))

    def test_training_learns_a_separable_task(self):
        # Class = which quarter of the image is bright: learnable in a few dozen steps.
        rng = np.random.default_rng(1)
        labels = rng.integers(0, 4, size=256).astype(np.int32)
        images = rng.integers(0, 40, size=(256, 28, 28, 1)).astype(np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, 14 * r:14 * r + 14, 14 * c:14 * c + 14] += 200
        model = train_classifier(images, labels, steps=40, batch_size=32, seed=0)
        self.assertGreater(accuracy(model, images, labels), 0.9)


if __name__ == "__main__":
    absltest.main()
