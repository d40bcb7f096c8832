"""Tests for workshop.data.datasets.image on tiny IDX fixtures and the real files."""

import os
import pathlib
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from workshop.data.datasets import image
from workshop.data.idx import DatasetFormatError, write_idx


def _write_split(folder, prefix="train", n=6, suffix=".gz", rows=28, seed=0):
    """Writes `n` random images and labels `i % 10` as IDX files; returns them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, rows), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), images)
    write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), labels)
    return images, labels


class FixtureTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        # Resolution must not depend on the machine's environment.
        self.enter_context(mock.patch.dict(os.environ, {image.DATA_DIR_ENV: ""}))

    @parameterized.product(suffix=[".gz", ""], train=[True, False])
    def test_reads_split_with_exact_values(self, suffix, train):
        root = self.create_tempdir().full_path
        images, labels = _write_split(root, "train" if train else "t10k", n=7, suffix=suffix)
        dataset = image.FashionMNISTDataset(root=root, train=train)
        self.assertLen(dataset, 7)
        self.assertEqual(dataset.images.shape, (7, 28, 28, 1))
        self.assertEqual(dataset.images.dtype, np.uint8)
        self.assertEqual(dataset.labels.dtype, np.int32)
        np.testing.assert_array_equal(dataset.images[..., 0], images)
        np.testing.assert_array_equal(dataset.labels, labels)
        example = dataset[3]
        np.testing.assert_array_equal(example["x"], images[3][..., None])
        self.assertEqual(example["label"], 3)
        self.assertEqual(example["label"].dtype, np.int32)

    def test_class_names(self):
        self.assertEqual(image.FashionMNISTDataset.class_names[0], "T-shirt/top")
        self.assertEqual(image.FashionMNISTDataset.class_names[9], "Ankle boot")
        self.assertLen(image.FashionMNISTDataset.class_names, 10)
        self.assertEqual(image.MNISTDataset.class_names[7], "7")

    def test_count_mismatch_names_both_files(self):
        root = self.create_tempdir().full_path
        _write_split(root, n=5)
        write_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), np.zeros(4, np.uint8))
        with self.assertRaisesRegex(
            DatasetFormatError, r"5 images in .*train-images-idx3-ubyte.gz but 4 labels in .*train-labels"
        ):
            image.MNISTDataset(root=root)

    def test_images_must_be_3d(self):
        root = self.create_tempdir().full_path
        _write_split(root, n=5)
        write_idx(os.path.join(root, "train-images-idx3-ubyte.gz"), np.zeros((5, 784), np.uint8))
        with self.assertRaisesRegex(DatasetFormatError, r"train-images-idx3-ubyte.gz: expected uint8 images \[N, rows, cols\]"):
            image.MNISTDataset(root=root)

    def test_labels_out_of_range(self):
        root = self.create_tempdir().full_path
        _write_split(root, n=3)
        write_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), np.array([0, 10, 2], np.uint8))
        with self.assertRaisesRegex(DatasetFormatError, "labels in 0..9, found 0..10"):
            image.MNISTDataset(root=root)

    def test_missing_labels_lists_paths_tried(self):
        root = self.create_tempdir().full_path
        _write_split(root, n=3)
        os.remove(os.path.join(root, "train-labels-idx1-ubyte.gz"))
        with self.assertRaises(FileNotFoundError) as cm:
            image.MNISTDataset(root=root)
        message = str(cm.exception)
        self.assertIn(os.path.join(root, "train-labels-idx1-ubyte.gz"), message)
        self.assertIn(os.path.join(root, "train-labels-idx1-ubyte") + "\n", message)
        self.assertIn("WORKSHOP_DATA_DIR", message)

    def test_missing_folder_lists_paths_and_fix(self):
        root = self.create_tempdir().full_path
        with self.assertRaises(FileNotFoundError) as cm:
            image.FashionMNISTDataset(root=root)
        message = str(cm.exception)
        self.assertIn(os.path.join(root, "train-images-idx3-ubyte.gz"), message)
        self.assertIn(os.path.join(root, "fashion-mnist", "t10k-images-idx3-ubyte"), message)
        self.assertIn("dataset-fashion-mnist", message)
        self.assertIn("--data_dir", message)
        self.assertNotIn("/usr/share", message)  # An explicit root is not second-guessed.

    def test_env_var_folder_or_its_subfolder(self):
        base = self.create_tempdir().full_path
        _write_split(os.path.join(base, "mnist"), n=4, seed=1)
        _write_split(base, n=3, seed=2)  # Holds files directly: used as is.
        with mock.patch.dict(os.environ, {image.DATA_DIR_ENV: base}):
            self.assertEqual(str(image.default_data_dir("mnist")), base)
            self.assertLen(image.MNISTDataset(), 3)
        os.remove(os.path.join(base, "train-images-idx3-ubyte.gz"))
        with mock.patch.dict(os.environ, {image.DATA_DIR_ENV: base}):  # Falls back to base/mnist.
            self.assertEqual(image.default_data_dir("mnist"), pathlib.Path(base, "mnist"))
            self.assertLen(image.MNISTDataset(), 4)

    def test_explicit_root_wins_over_env_var(self):
        env_dir, root = self.create_tempdir().full_path, self.create_tempdir().full_path
        _write_split(env_dir, n=3)
        _write_split(root, n=5)
        with mock.patch.dict(os.environ, {image.DATA_DIR_ENV: env_dir}):
            self.assertLen(image.FashionMNISTDataset(root=root), 5)

    def test_mnist_without_location_says_there_is_no_default(self):
        with self.assertRaisesRegex(FileNotFoundError, "mnist has no default location.*WORKSHOP_DATA_DIR"):
            image.MNISTDataset()

    def test_load_image_dataset(self):
        root = self.create_tempdir().full_path
        _write_split(root, "t10k", n=4)
        dataset = image.load_image_dataset("fashion_mnist", root=root, train=False)
        self.assertIsInstance(dataset, image.FashionMNISTDataset)
        self.assertEqual(dataset.num_classes, 10)
        with self.assertRaisesRegex(ValueError, "'svhn' is unknown; known: cifar10, cifar100, fashion_mnist, mnist"):
            image.load_image_dataset("svhn")
        with mock.patch.dict(os.environ, {image.DATA_DIR_ENV: ""}):
            with self.assertRaisesRegex(FileNotFoundError, "cifar10 has no default location.*WORKSHOP_DATA_DIR"):
                image.load_image_dataset("cifar10")

    def test_is_a_grain_random_access_source(self):
        import grain  # pylint: disable=g-import-not-at-top

        root = self.create_tempdir().full_path
        _, labels = _write_split(root, n=6)
        dataset = grain.MapDataset.source(image.MNISTDataset(root=root)).batch(4)
        self.assertEqual([b["label"].tolist() for b in dataset], [labels[:4].tolist(), labels[4:].tolist()])


_REAL_DIR = image.DEBIAN_FASHION_MNIST_DIR


@absltest.skipUnless(
    os.path.isdir(_REAL_DIR),
    f"{_REAL_DIR} is missing: install Debian's dataset-fashion-mnist (tools/bazel does this)",
)
class RealFashionMNISTTest(absltest.TestCase):

    def test_real_files(self):
        train = image.FashionMNISTDataset(root=_REAL_DIR, train=True)
        test = image.FashionMNISTDataset(root=_REAL_DIR, train=False)
        self.assertEqual(train.images.shape, (60000, 28, 28, 1))
        self.assertEqual(test.images.shape, (10000, 28, 28, 1))
        np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), np.full(10, 6000))
        np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 1000))
        self.assertEqual(train.labels[0], 9)  # The first training image is an ankle boot.
        self.assertEqual(train.images.max(), 255)

    def test_env_folder_without_files_falls_back_to_debian(self):
        empty = self.create_tempdir().full_path
        with mock.patch.dict(os.environ, {image.DATA_DIR_ENV: empty}):
            self.assertEqual(image.default_data_dir("fashion_mnist"), pathlib.Path(_REAL_DIR))


if __name__ == "__main__":
    absltest.main()
