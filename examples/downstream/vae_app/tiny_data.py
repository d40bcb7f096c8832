"""Tiny Fashion-MNIST-format IDX files for the tests: two shapes a VAE learns in a few steps.

Class 0 lights the top half of a 28x28 image, class 1 its left half (grey levels
200..255, the rest 0..40), so the mean training image is ~1 in the top-left
quadrant, ~1/2 in the top-right and bottom-left ones and ~0 in the bottom-right.
"""

from __future__ import annotations

import pathlib

import numpy as np

from workshop.data.idx import write_idx

__all__ = ["write_two_shapes"]


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 41, size=(len(labels), 28, 28)).astype(np.uint8)
    bright = rng.integers(200, 256, size=(len(labels), 28, 28)).astype(np.uint8)
    top = np.zeros((28, 28), bool)
    top[:14] = True
    left = np.zeros((28, 28), bool)
    left[:, :14] = True
    mask = np.where(labels[:, None, None] == 0, top, left)
    return np.where(mask, bright, images)


def write_two_shapes(folder: str | pathlib.Path, *, num_train: int = 256, num_test: int = 64,
                     seed: int = 0) -> pathlib.Path:
    """Writes train/t10k images `[N, 28, 28]` uint8 and labels `[N]` uint8 into `folder`; returns it."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        labels = (np.arange(n) % 2).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", _images(labels, rng))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder
