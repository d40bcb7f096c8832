"""MNIST and Fashion-MNIST read from their IDX files, with no download.

MNIST: LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied
to document recognition". Fashion-MNIST: Xiao, Rasul & Vollgraf (2017),
"Fashion-MNIST: a novel image dataset for benchmarking machine learning
algorithms", arXiv:1708.07747. Both are 28x28 grey images in 10 classes,
60000 for training and 10000 for test, stored as

    <root>/train-images-idx3-ubyte[.gz]   <root>/train-labels-idx1-ubyte[.gz]
    <root>/t10k-images-idx3-ubyte[.gz]    <root>/t10k-labels-idx1-ubyte[.gz]

The data folder is the `root` argument, else `$WORKSHOP_DATA_DIR`, else (for
Fashion-MNIST) Debian's `/usr/share/datasets/fashion-mnist` from the package
dataset-fashion-mnist; see `default_data_dir`. A dataset is a grain
`RandomAccessDataSource` (`len`, `ds[i]`) and also exposes its whole arrays.

This module is also the public path of the other image loaders, re-exported
from their own modules: `CIFAR10Dataset`, `CIFAR100Dataset` (cifar.py) and
`ImageFolderDataset` (image_folder.py).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from workshop.core import paths
from workshop.core.paths import DATA_DIR_ENV
from workshop.data.datasets.cifar import CIFAR100Dataset, CIFAR10Dataset
from workshop.data.datasets.image_folder import ImageFolderDataset
from workshop.data.datasets.labelled_images import LabelledImages
from workshop.data.idx import DatasetFormatError, read_idx

__all__ = [
    "CIFAR100Dataset",  # Re-exported from cifar.py.
    "CIFAR10Dataset",  # Re-exported from cifar.py.
    "DATA_DIR_ENV",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASS_NAMES",
    "FashionMNISTDataset",
    "IMAGE_DATASETS",
    "ImageFolderDataset",  # Re-exported from image_folder.py.
    "MNISTDataset",
    "default_data_dir",
    "load_image_dataset",
]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))

# dataset name -> (subfolder of a data dir, system-wide default folder or None).
_LOCATIONS = {
    "mnist": ("mnist", None),
    "fashion_mnist": ("fashion-mnist", DEBIAN_FASHION_MNIST_DIR),
}
_FIX_HINT = (
    "install Debian's dataset-fashion-mnist (tools/bazel does this), "
    f"set {DATA_DIR_ENV}, or pass --data_dir"
)
_SPLIT_PREFIX = {True: "train", False: "t10k"}


def _idx_paths(folder: pathlib.Path, stem: str) -> list[pathlib.Path]:
    return [folder / (stem + ".gz"), folder / stem]


def _holds_dataset(folder: pathlib.Path) -> bool:
    return any(p.is_file() for train in (True, False) for p in _idx_paths(folder, f"{_SPLIT_PREFIX[train]}-images-idx3-ubyte"))


def default_data_dir(dataset_name: str, root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder that holds a dataset's IDX files.

    Tried in order: `root` and its `mnist` / `fashion-mnist` subfolder if `root`
    is given (and nothing else); otherwise `$WORKSHOP_DATA_DIR` and its subfolder
    if set, then `/usr/share/datasets/fashion-mnist` for Fashion-MNIST. MNIST has
    no Debian package, hence no system default. A folder qualifies when it holds
    a train or test image file (`.gz` or raw).

    Args:
      dataset_name: "mnist" or "fashion_mnist".
      root: an explicit data folder, e.g. from a `--data_dir` flag.

    Returns:
      The first qualifying folder.

    Raises:
      ValueError: unknown `dataset_name`.
      FileNotFoundError: no folder qualifies; the message lists those tried.
    """
    name = dataset_name.lower().replace("-", "_")
    if name not in _LOCATIONS:
        raise ValueError(f"dataset {dataset_name!r} is unknown; known: {', '.join(sorted(_LOCATIONS))}")
    subfolder, system_default = _LOCATIONS[name]
    env_dir = paths.env_data_dir()
    candidates = []
    for base in [root] if root is not None else [env_dir]:
        if base is not None:
            candidates += [pathlib.Path(base), pathlib.Path(base) / subfolder]
    # An explicit root is final; the environment variable falls back to the system.
    if root is None and system_default is not None:
        candidates.append(pathlib.Path(system_default))
    if not candidates:
        raise FileNotFoundError(
            f"{dataset_name} has no default location (no Debian package ships it): "
            f"set {DATA_DIR_ENV} or pass root / --data_dir to a folder holding "
            "train-images-idx3-ubyte.gz and its companions"
        )
    for folder in candidates:
        if _holds_dataset(folder):
            return folder
    tried = "\n  ".join(
        str(path)
        for folder in candidates
        for split in ("train", "t10k")
        for path in _idx_paths(folder, f"{split}-images-idx3-ubyte")
    )
    raise FileNotFoundError(f"{dataset_name} IDX files not found; tried:\n  {tried}\nTo fix: {_FIX_HINT}")


def _find_file(folder: pathlib.Path, stem: str) -> pathlib.Path:
    paths = _idx_paths(folder, stem)
    for path in paths:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{stem} not found; tried:\n  " + "\n  ".join(map(str, paths)) + f"\nTo fix: {_FIX_HINT}"
    )


class MNISTDataset(LabelledImages):
    """The MNIST digits, read from IDX files.

    Attributes:
      images: uint8 `[N, 28, 28, 1]` grey levels, 0 = black.
      labels: int32 `[N]`, in `0 .. num_classes - 1`.
      class_names: one name per label.
      num_classes: 10.
      data_dir: the folder the files were read from.
    """

    name = "mnist"
    class_names: tuple[str, ...] = MNIST_CLASS_NAMES

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True):
        """Reads the training (`train=True`, 60000) or test (10000) split.

        Args:
          root: the data folder; None resolves it with `default_data_dir`.
          train: the training split, else the test split.

        Raises:
          FileNotFoundError: the files are missing; the message lists the paths tried.
          DatasetFormatError: the files are not valid IDX or do not agree.
        """
        self.data_dir = default_data_dir(self.name, root)
        self.train = train
        prefix = _SPLIT_PREFIX[train]
        images_path = _find_file(self.data_dir, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_file(self.data_dir, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(
                f"{images_path}: expected uint8 images [N, rows, cols], found {images.dtype} {list(images.shape)}"
            )
        if labels.ndim != 1:
            raise DatasetFormatError(f"{labels_path}: expected labels [N], found shape {list(labels.shape)}")
        if len(images) != len(labels):
            raise DatasetFormatError(
                f"{len(images)} images in {images_path} but {len(labels)} labels in {labels_path}; "
                "the counts must agree"
            )
        if len(labels) and not 0 <= labels.min() <= labels.max() < self.num_classes:
            raise DatasetFormatError(
                f"{labels_path}: expected labels in 0..{self.num_classes - 1}, "
                f"found {labels.min()}..{labels.max()}"
            )
        self.images = images[..., np.newaxis]
        self.labels = labels.astype(np.int32)

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} examples from {self.data_dir})"


class FashionMNISTDataset(MNISTDataset):
    """Fashion-MNIST: Zalando article images in MNIST's format and sizes."""

    name = "fashion_mnist"
    class_names = FASHION_MNIST_CLASS_NAMES


IMAGE_DATASETS: dict[str, type[LabelledImages]] = {
    "cifar10": CIFAR10Dataset,
    "cifar100": CIFAR100Dataset,
    "fashion_mnist": FashionMNISTDataset,
    "mnist": MNISTDataset,
}
# Datasets no Debian package ships: their folder must be given.
_NEEDS_ROOT = ("cifar10", "cifar100")


def load_image_dataset(name: str, root: str | os.PathLike | None = None, train: bool = True) -> LabelledImages:
    """Reads the image dataset called `name` (a key of `IMAGE_DATASETS`).

    Args:
      name: "fashion_mnist", "mnist", "cifar10" or "cifar100".
      root: the data folder; None resolves it with `default_data_dir` for the
        MNIST formats and with `$WORKSHOP_DATA_DIR` for CIFAR.
      train: the training split, else the test split.

    Returns:
      The dataset, with `images` uint8 `[N, H, W, C]` and `labels` int32 `[N]`.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"image dataset {name!r} is unknown; known: {', '.join(sorted(IMAGE_DATASETS))}")
    if name in _NEEDS_ROOT:
        root = root if root is not None else paths.env_data_dir()
        if root is None:
            raise FileNotFoundError(
                f"{name} has no default location (no Debian package ships it): set {DATA_DIR_ENV} or pass "
                f"--data_dir / root to the folder holding the official python or binary batches"
            )
    return IMAGE_DATASETS[name](root=root, train=train)
