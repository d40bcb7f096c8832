"""The accessors shared by in-memory labelled image datasets (CIFAR, image folders).

A dataset that sets `images` uint8 `[N, H, W, C]`, `labels` int32 `[N]` and
`class_names` gets `len`, `ds[i]` (so it is a grain `RandomAccessDataSource`),
`num_classes` and `as_arrays()` for `BatchPipeline` from `LabelledImages`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabelledImages"]


class LabelledImages:
    """Mixin: `images` uint8 `[N, H, W, C]` and `labels` int32 `[N]` as a dataset."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """`{"x": uint8 [H, W, C], "label": int32 []}` of example `index`."""
        return {"x": self.images[index], "label": self.labels[index]}

    def as_arrays(self) -> dict[str, np.ndarray]:
        """`{"x": uint8 [N, H, W, C], "label": int32 [N]}`, e.g. for `BatchPipeline`."""
        return {"x": self.images, "label": self.labels}
