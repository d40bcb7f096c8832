"""Pictures of samples as PNG (Pillow): image grids, labelled panels side by side, and 2-D histograms of points."""

from __future__ import annotations

import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["density_image", "image_grid", "labelled_panels", "save_image_grid", "save_labelled_panels", "save_sample_picture"]


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


def labelled_panels(panels, *, scale: int = 3, band: int = 18, gap: int = 12) -> Image.Image:
    """Image grids side by side, each under its title.

    Args:
      panels: `(title, images)` pairs, images `[N, H, W, C]` as for
        `image_grid` (panels may differ in H and W).
      scale: nearest-neighbour enlargement of every grid.
      band: pixels of white above each grid for its title.
      gap: pixels between panels.

    Returns:
      An RGB picture, `max(panel heights) + band` pixels high.
    """
    panels = list(panels)
    if not panels:
        raise ValueError("labelled_panels needs at least one (title, images) pair")
    pictures = []
    for title, images in panels:
        grid = image_grid(images)
        picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        framed = Image.new("RGB", (picture.width, picture.height + band), "white")
        framed.paste(picture, (0, band))
        ImageDraw.Draw(framed).text((4, 3), str(title), fill="black")
        pictures.append(framed)
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1),
                               max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return canvas


def save_labelled_panels(panels, path: str | pathlib.Path, *, scale: int = 3) -> pathlib.Path:
    """Writes `labelled_panels(panels, scale=scale)` as a PNG."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_panels(panels, scale=scale).save(path)
    return path


def density_image(points: np.ndarray, *, extent: float = 4.0, size: int = 256) -> np.ndarray:
    """A 2-D histogram of points as a grey image, dark where points are dense.

    Args:
      points: `[N, 2]` (x, y); points outside `[-extent, extent]^2` are dropped.
      extent: half-width of the square shown.
      size: pixels per side.

    Returns:
      `[size, size]` uint8, y growing upwards; counts on a square-root scale.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [N, 2], got shape {points.shape}")
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=size, range=[[-extent, extent], [-extent, extent]])
    shade = np.sqrt(counts[::-1] / max(counts.max(), 1.0))
    return (255.0 * (1.0 - shade) + 0.5).astype(np.uint8)


def save_sample_picture(samples: np.ndarray, path: str | pathlib.Path) -> pathlib.Path | None:
    """Writes images `[N, H, W, C]` as a grid and 2-D points `[N, 2]` as a histogram.

    Returns:
      The PNG's path, or None for samples that have no picture (other shapes).
    """
    samples = np.asarray(samples)
    if samples.ndim == 4:
        return save_image_grid(samples, path)
    if samples.ndim == 2 and samples.shape[1] == 2:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(density_image(samples)).save(path)
        return path
    return None
