"""Images in a folder per class, the layout of torchvision's `ImageFolder`.

    <root>/<class name>/<any name>.png|.jpg|.jpeg   (subfolders of a class too)

Labels number the class folders in sorted order. Every image is decoded with
Pillow, converted to RGB, its central square cropped and resized to
`image_size` x `image_size` (bicubic), so the dataset holds uint8
`[N, image_size, image_size, 3]` like `CIFAR10Dataset`. All images are decoded
once, when the dataset is made.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from workshop.data.datasets.labelled_images import LabelledImages
from workshop.data.idx import DatasetFormatError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "load_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Decodes one PNG/JPEG file to uint8 `[image_size, image_size, 3]`.

    Raises:
      DatasetFormatError: not a readable PNG/JPEG (truncated, corrupt or of
        another format); the message names the file.
    """
    try:
        with Image.open(path) as picture:
            if picture.format not in ("PNG", "JPEG"):
                raise DatasetFormatError(f"{path}: expected a PNG or JPEG image, found {picture.format}")
            if picture.mode == "P" and "transparency" in picture.info:
                picture = picture.convert("RGBA")  # Pillow's way for palette transparency.
            picture = picture.convert("RGB")  # Decodes the whole file: truncation shows here.
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetFormatError(f"{path}: expected a PNG or JPEG image; unreadable ({e})") from e
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    picture = picture.crop((left, top, left + side, top + side))
    if side != image_size:
        picture = picture.resize((image_size, image_size), Image.BICUBIC)
    return np.asarray(picture, dtype=np.uint8)


class ImageFolderDataset(LabelledImages):
    """Labelled images from a folder of class folders.

    Attributes:
      images: uint8 `[N, image_size, image_size, 3]`.
      labels: int32 `[N]`, the index of the class folder in `class_names`.
      class_names: the class folder names, sorted.
      paths: the file of each image, in dataset order.
      skipped: `(path, problem)` of each unreadable file (`skip_bad_files=True`).
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 32, *, skip_bad_files: bool = False):
        """Decodes every image under `root`.

        Args:
          root: the folder of class folders.
          image_size: side of the square output images.
          skip_bad_files: leave unreadable files out (listed in `skipped`)
            instead of raising.

        Raises:
          FileNotFoundError: `root` is missing or holds no class folder with images.
          DatasetFormatError: an image is truncated or corrupt (unless skipped).
        """
        self.data_dir = pathlib.Path(root)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.data_dir} (expected <root>/<class>/<image>.png|.jpg)")
        self.class_names = tuple(sorted(p.name for p in self.data_dir.iterdir() if p.is_dir()))
        self.skipped: list[tuple[pathlib.Path, str]] = []
        self.paths: list[pathlib.Path] = []
        images, labels = [], []
        for label, name in enumerate(self.class_names):
            for path in sorted((self.data_dir / name).rglob("*")):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                    continue
                try:
                    images.append(load_image(path, image_size))
                except DatasetFormatError as e:
                    if not skip_bad_files:
                        raise
                    self.skipped.append((path, str(e)))
                    continue
                labels.append(label)
                self.paths.append(path)
        if not images and not self.skipped:
            raise FileNotFoundError(
                f"no images under {self.data_dir}: expected class folders holding "
                f"{', '.join(IMAGE_EXTENSIONS)} files; class folders found: {list(self.class_names)}"
            )
        self.images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __repr__(self) -> str:
        return f"ImageFolderDataset({len(self)} images, {self.num_classes} classes from {self.data_dir})"
