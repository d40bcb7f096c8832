"""What the sample binary's flags ask of a restored run, as library functions the binary calls.

* `class_labels`: the class labels of conditional models, cycled over the samples.
* `read_prompt`: the prefix autoregressive models continue (text encoded with
  the run's tokenizer, or a .npy array).
* `super_resolution_input`, `save_super_resolution_panel`: the low-resolution
  images a super-resolution model enlarges (a .npy file, or test images
  averaged down by the model), and the input | sample | original picture.
* `parse_sampler_steps`, `compare_samplers`: the same seed through several
  samplers and step counts, one labelled panel each.
* `score_samples`, `describe_quality`: FID, KID and PRDC of image samples
  against the test set (`workshop.eval.sample_quality`), written to quality.json.

Each raises `ValueError` (or `FileNotFoundError` for a missing file) with a
message that reads after the name of the flag that asked for it; the binary
adds that name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Sequence

import numpy as np

from workshop.core.configuration import DataConfiguration
from workshop.core.protocols import SuperResolutionModel
from workshop.data.sources import encode_text_prompt
from workshop.eval.quality import sample_quality
from workshop.train.experiment import data_source
from workshop.train.image_grid import save_labelled_panels
from workshop.train.sampling import write_samples
from workshop.train.trainer import Trainer, TrainState

__all__ = [
    "SamplerRun",
    "class_labels",
    "compare_samplers",
    "describe_quality",
    "first_test_images",
    "parse_sampler_steps",
    "read_npy",
    "read_prompt",
    "save_super_resolution_panel",
    "score_samples",
    "super_resolution_input",
]


def class_labels(trainer: Trainer, values: Sequence[str], num_samples: int) -> np.ndarray:
    """The labels `values` (e.g. ["0", "1", "2"]) cycled over `num_samples` samples: int32 `[num_samples]`.

    Raises:
      ValueError: the model is not conditional, or a value is not an integer.
    """
    if not trainer.conditional:
        raise ValueError("given, but this model is not conditional (it takes no class labels)")
    try:
        labels = np.array([int(v) for v in values], np.int32)
    except ValueError:
        raise ValueError(f"class labels must be integers, got {list(values)}") from None
    return np.resize(labels, num_samples)


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of a .npy file.

    Raises:
      ValueError: the file is missing or not a .npy array (the message says why).
    """
    try:
        return np.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read a .npy array ({err})") from None


def read_prompt(data: DataConfiguration, *, text: str | None = None,
                path: str | os.PathLike | None = None) -> np.ndarray:
    """The prefix every sample continues: `text` encoded with the run's tokenizer, or the .npy array at `path`.

    Args:
      data: the run's data configuration (its tokenizer, for `text`).
      text: a text prompt for models of text; int32 `[P]` token ids.
      path: a .npy prefix: audio `[P]` or `[num_samples, P]`, images the top
        rows `[R, W, C]` or `[num_samples, R, W, C]` in [0, 1].

    Raises:
      ValueError: both or neither given, the run is not of text (`text`), or
        the file cannot be read.
      FileNotFoundError: the run's tokenizer file is missing.
    """
    if (text is None) == (path is None):
        raise ValueError("give a text prompt or a .npy prompt file, exactly one")
    return encode_text_prompt(data, text) if text is not None else read_npy(path)


def first_test_images(data: DataConfiguration, n: int) -> np.ndarray:
    """The first `n` test images of the run's dataset (fewer if the split is shorter): `[<=n, H, W, C]` in [0, 1]."""
    images = np.asarray(data_source(data, train=False)["x"][:n])
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def super_resolution_input(model: Any, *, low_res: np.ndarray | None = None,
                           originals: np.ndarray | None = None) -> np.ndarray:
    """The low-resolution images a super-resolution model enlarges, one sample each: `[B, H/f, W/f, C]` in [0, 1].

    Args:
      model: the restored model; it must be a `SuperResolutionModel`.
      low_res: `[B, H/f, W/f, C]` images in [0, 1] (uint8 is divided by 255), or
      originals: `[B, H, W, C]` images in [0, 1] that the model averages down
        (`model.downsample`).

    Raises:
      ValueError: the model is not a super-resolution model, or the images do
        not have its low-resolution shape or lie outside [0, 1].
    """
    if not isinstance(model, SuperResolutionModel):
        raise ValueError(f"model_type {model.model_type!r} is not a super-resolution model")
    if (low_res is None) == (originals is None):
        raise ValueError("give low-resolution images or the originals to average down, exactly one")
    if low_res is None:
        low_res = model.downsample(originals)
    return np.asarray(model.check_low_res(low_res))


def save_super_resolution_panel(low_res: np.ndarray, samples: np.ndarray, path: str | pathlib.Path, *,
                                originals: np.ndarray | None = None) -> pathlib.Path:
    """Writes each input (enlarged to the samples' size) beside its sample, and its original if given.

    Args:
      low_res: `[B, h, w, C]` inputs in [0, 1].
      samples: `[B, H, W, C]` samples in [0, 1], H a multiple of h.
      path: the PNG to write (`labelled_panels`: "input (fx enlarged)", "samples", "original").
      originals: `[B, H, W, C]` images the inputs were averaged from, or None.
    """
    factor = samples.shape[1] // low_res.shape[1]
    shown = np.repeat(np.repeat(low_res, factor, axis=1), factor, axis=2)
    panels = [(f"input ({factor}x enlarged)", shown), ("samples", samples)]
    if originals is not None:
        panels.append(("original", originals))
    return save_labelled_panels(panels, path)


def parse_sampler_steps(items: Sequence[str]) -> list[tuple[str, int]]:
    """`["ddim:50", "heun:20"]` -> `[("ddim", 50), ("heun", 20)]`.

    Raises:
      ValueError: an entry is not sampler:steps with a whole number of steps.
    """
    pairs = []
    for item in items:
        name, _, steps = item.partition(":")
        if not name or not steps.isdigit():
            raise ValueError(f"entry {item!r} must be sampler:steps, e.g. ddim:50")
        pairs.append((name, int(steps)))
    return pairs


@dataclasses.dataclass(frozen=True)
class SamplerRun:
    """One sampler of `compare_samplers`: its name, steps, samples file and seconds (compilation included)."""

    sampler: str
    steps: int
    npy: pathlib.Path
    seconds: float


def compare_samplers(trainer: Trainer, state: TrainState, output_dir: str | pathlib.Path,
                     pairs: Sequence[tuple[str, int]], *, num_samples: int, seed: int = 0,
                     labels: np.ndarray | None = None,
                     options: dict[str, Any] | None = None) -> tuple[list[SamplerRun], pathlib.Path]:
    """Draws the same seed through each (sampler, steps), into `<output_dir>/<sampler>_<steps>/`.

    Args:
      pairs: (sampler, steps) to compare, e.g. from `parse_sampler_steps`.
      num_samples, seed, labels, options: as for `sampling.write_samples`;
        each pair overrides `options`' sampler and steps.

    Returns:
      One `SamplerRun` per pair, and `<output_dir>/samplers.png`: one labelled
      panel ("ddim, 50 steps") of `[num_samples, *input_shape]` samples per pair.

    Raises:
      ValueError: the model does not take a sampler or its steps.
    """
    output_dir = pathlib.Path(output_dir)
    runs, panels = [], []
    for name, steps in pairs:
        start = time.perf_counter()
        paths = write_samples(trainer, state, output_dir / f"{name}_{steps}", num_samples=num_samples, seed=seed,
                              labels=labels, options=dict(options or {}, sampler=name, steps=steps))
        runs.append(SamplerRun(name, steps, paths["npy"], time.perf_counter() - start))
        panels.append((f"{name}, {steps} steps", np.load(paths["npy"])))
    return runs, save_labelled_panels(panels, output_dir / "samplers.png")


def score_samples(data: DataConfiguration, samples: np.ndarray, output_dir: str | pathlib.Path, *,
                  seed: int = 0) -> tuple[pathlib.Path, dict[str, Any]]:
    """FID/KID/PRDC of `samples` (`[M, H, W, C]` in [0, 1]) against the run's test set, written to quality.json.

    Returns:
      The path of `<output_dir>/quality.json` and the scores (`sample_quality`).

    Raises:
      ValueError: the dataset has no feature network or the samples do not fit it.
      FileNotFoundError: the feature network's weights are missing (the
        message names the command that trains them).
    """
    scores = sample_quality(samples, dataset=data.dataset, num_samples=None, data_dir=data.data_dir, seed=seed)
    path = pathlib.Path(output_dir) / "quality.json"
    path.write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    return path, scores


def describe_quality(scores: dict[str, Any]) -> str:
    """One line of `score_samples`' scores."""
    return (f"FID {scores['fid']:.2f}, KID {scores['kid']:.4f} +- {scores['kid_std']:.4f}, precision "
            f"{scores['precision']:.3f}, recall {scores['recall']:.3f}, density {scores['density']:.3f}, coverage "
            f"{scores['coverage']:.3f} ({scores['num_samples']} samples vs {scores['num_reference']} test images)")
