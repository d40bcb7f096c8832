"""Tests for workshop.data.datasets.image_folder on PNG and JPEG fixtures."""

import os

from absl.testing import absltest
import numpy as np
from PIL import Image

from workshop.data.datasets import image
from workshop.data.datasets import image_folder
from workshop.data.idx import DatasetFormatError


def _save(path, pixels, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


class ImageFolderTest(absltest.TestCase):

    def test_classes_labels_and_exact_png_pixels(self):
        root = self.create_tempdir().full_path
        rng = np.random.default_rng(0)
        cat = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        dog = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        _save(os.path.join(root, "dog", "a.png"), dog)
        _save(os.path.join(root, "cat", "sub", "b.PNG"), cat)  # Nested, upper-case suffix.
        _save(os.path.join(root, "cat", "c.png"), cat[..., 0])  # Grey becomes RGB.
        with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
            f.write("not an image")
        dataset = image.ImageFolderDataset(root)
        self.assertEqual(dataset.class_names, ("cat", "dog"))
        self.assertEqual(dataset.images.shape, (3, 32, 32, 3))
        np.testing.assert_array_equal(dataset.labels, [0, 0, 1])
        np.testing.assert_array_equal(dataset.images[0], np.repeat(cat[..., :1], 3, axis=-1))  # c.png
        np.testing.assert_array_equal(dataset.images[1], cat)  # sub/b.PNG
        np.testing.assert_array_equal(dataset[2]["x"], dog)

    def test_jpeg_centre_crop_and_resize(self):
        root = self.create_tempdir().full_path
        picture = np.zeros((40, 80, 3), np.uint8)
        picture[:, 20:60] = 200  # The central 40x40 square is uniform.
        _save(os.path.join(root, "x", "wide.jpg"), picture, quality=95)
        dataset = image_folder.ImageFolderDataset(root, image_size=16)
        self.assertEqual(dataset.images.shape, (1, 16, 16, 3))
        np.testing.assert_allclose(dataset.images[0, 3:13, 3:13].astype(float), 200, atol=4)

    def test_truncated_png_names_file_or_is_skipped(self):
        root = self.create_tempdir().full_path
        _save(os.path.join(root, "a", "good.png"), np.zeros((32, 32, 3), np.uint8))
        bad = os.path.join(root, "a", "bad.png")
        _save(bad, np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
        with open(bad, "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaisesRegex(DatasetFormatError, r"bad.png: expected a PNG or JPEG image"):
            image_folder.ImageFolderDataset(root)
        dataset = image_folder.ImageFolderDataset(root, skip_bad_files=True)
        self.assertLen(dataset, 1)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [bad])

    def test_missing_or_empty_folder(self):
        root = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, "image folder not found: .*nope"):
            image_folder.ImageFolderDataset(os.path.join(root, "nope"))
        os.makedirs(os.path.join(root, "empty_class"))
        with self.assertRaisesRegex(FileNotFoundError, r"no images under .*\['empty_class'\]"):
            image_folder.ImageFolderDataset(root)


if __name__ == "__main__":
    absltest.main()
