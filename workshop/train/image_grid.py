"""Writing batches of images as one PNG grid (Pillow)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
from PIL import Image

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images: np.ndarray, *, ncols: int | None = None, padding: int = 2) -> np.ndarray:
    """Tiles images into one uint8 array.

    Args:
      images: `[N, H, W, C]` with C in {1, 3}, floats in [0, 1] or uint8.
      ncols: columns (default: ceil(sqrt(N))).
      padding: pixels between tiles.

    Returns:
      `[rows*(H+p)+p, ncols*(W+p)+p, C]` uint8.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, C] with C 1 or 3, got shape {images.shape}")
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image
    return grid


def save_image_grid(images: np.ndarray, path: str | pathlib.Path, *, ncols: int | None = None, scale: int = 2) -> pathlib.Path:
    """Writes `images` (`[N, H, W, C]`) as a PNG grid, enlarged `scale` times."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, ncols=ncols)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(path)
    return path
