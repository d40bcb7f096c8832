"""Two-dimensional toy densities, generated (not read) from a seed.

The standard test beds of density estimation and adversarial training:

* "two_moons": two interleaved half circles (scikit-learn's `make_moons`
  geometry) with Gaussian noise of std 0.1; labels are the moon index.
* "eight_gaussians": a mixture of eight Gaussians (std 0.02 * scale) with
  means equally spaced on a circle of radius 2, the ring of Metz et al. 2017
  ("Unrolled GANs") used to show mode collapse; labels are the mode index.
* "checkerboard": uniform on the black squares of a 4x4 board over [-4, 4]^2
  (Grathwohl et al. 2019, FFJORD; Durkan et al. 2019); labels are 0.
* "pinwheel": five curved arms (Johnson et al. 2016), labels the arm index.

Every dataset is a pure function of (`name`, `num_examples`, `seed`), so a
"test split" is the same call with another seed. The arrays are float32
`[N, 2]` (examples under the key "x", the training pipeline's model input,
like the image datasets) and int32 labels `[N]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

__all__ = ["TOY_DATASETS", "ToyDataset", "eight_gaussians_modes", "load_toy_dataset", "sample_toy"]

# Seeds of the splits: the test split never shares points with the training split.
_SPLIT_SEED = {True: 0, False: 1}


def eight_gaussians_modes(radius: float = 2.0) -> np.ndarray:
    """The eight means of "eight_gaussians": `[8, 2]` float32 on a circle."""
    angles = 2.0 * np.pi * np.arange(8) / 8
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def _two_moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    t = rng.uniform(0.0, math.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(labels[:, None] == 0, upper, lower) + 0.1 * rng.standard_normal((n, 2))
    # Centre and scale to roughly unit variance, as flows and EBMs expect.
    return (x - np.array([0.5, 0.25])) * 2.0, labels


def _eight_gaussians(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 8, n)
    return eight_gaussians_modes()[labels] + 0.02 * 2.0 * rng.standard_normal((n, 2)), labels


def _checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # x1 uniform on [-4, 4); x2 uniform on the two black squares of x1's column.
    x1 = rng.uniform(-4.0, 4.0, n)
    x2 = rng.uniform(0.0, 2.0, n) + 4.0 * rng.integers(0, 2, n) - 4.0
    x2 = x2 + 2.0 * (np.floor(x1 / 2.0) % 2)
    return np.stack([x1, x2], axis=1), np.zeros(n, np.int64)


def _pinwheel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    labels = rng.integers(0, arms, n)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std]) + np.array([1.0, 0.0])
    angles = 2.0 * np.pi * labels / arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    rotated = np.stack([cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]], 1)
    return 2.0 * rotated, labels


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {
    "two_moons": _two_moons,
    "eight_gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
}
TOY_DATASETS = tuple(sorted(_SAMPLERS))


def sample_toy(name: str, num_examples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`num_examples` points of the toy density `name`.

    Returns:
      float32 points `[num_examples, 2]` and int32 labels `[num_examples]`.

    Raises:
      ValueError: an unknown name or a non-positive count.
    """
    if name not in _SAMPLERS:
        raise ValueError(f"toy dataset {name!r} is unknown; known: {', '.join(TOY_DATASETS)}")
    if num_examples < 1:
        raise ValueError(f"num_examples must be positive, got {num_examples}")
    x, labels = _SAMPLERS[name](np.random.default_rng(seed), int(num_examples))
    return x.astype(np.float32), labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ToyDataset:
    """A fixed draw of a toy density: a grain `RandomAccessDataSource`.

    Attributes:
      name: a key of `TOY_DATASETS`.
      images: float32 `[N, 2]` points (named like the image datasets' array so
        the same pipeline and trainer take it).
      labels: int32 `[N]`.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"x": self.images[index], "label": self.labels[index]}


def load_toy_dataset(name: str, train: bool = True, num_examples: int | None = None) -> ToyDataset:
    """The training (seed 0, 50000 points) or test (seed 1, 10000 points) split of `name`."""
    n = num_examples if num_examples is not None else (50_000 if train else 10_000)
    x, labels = sample_toy(name, n, seed=_SPLIT_SEED[train])
    return ToyDataset(name, x, labels)
