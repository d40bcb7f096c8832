"""The arrays of a configured dataset's split, for `BatchPipeline`, in every modality.

`load_split(data_config, train=...)` reads the dataset named by a
`DataConfiguration` and returns a dict of numpy arrays with a shared leading
dim N. `"x"` is the model input, whatever the modality:

| `dataset` | `"x"` | other keys |
| --- | --- | --- |
| fashion_mnist, mnist, cifar10, cifar100 | uint8 `[N, H, W, C]` | `"label"` |
| two_moons, eight_gaussians, checkerboard, pinwheel | float32 `[N, 2]` | `"label"` |
| text, wikipedia | int32 BPE ids `[N, sequence_length]` | |
| librispeech, audio_folder | int32 mu-law codes `[N, sequence_length]` (float32 waveform without `quantization_channels`) | `"label"` (speaker id or folder class) |
| protein | float32 CA coordinates `[N, sequence_length, 3]` (Angstrom) | `"mask"` bool `[N, L]`, `"aatype"` int32 `[N, L]` |

Datasets with an official test split (the image datasets, LibriSpeech's
`test_subset`) use it; the others hold out the last `test_fraction` of their
documents, files or chains, so no document, clip or chain is in both splits.
A corpus is read once per process for both splits (`_read_once`).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np

from workshop.core.configuration import DataConfiguration

__all__ = ["load_split", "held_out_count"]

_log = logging.getLogger(__name__)


def held_out_count(num_items: int, fraction: float, *, what: str) -> int:
    """How many of `num_items` the test split holds: `ceil(fraction * n)`, at least 1, leaving 1 for training."""
    if num_items < 2:
        raise ValueError(f"{what}: {num_items} found; a train/test split needs at least 2")
    return min(num_items - 1, max(1, math.ceil(fraction * num_items)))


# Fields that change how batches are drawn, not what is read.
_BATCHING_FIELDS = {"batch_size", "eval_batch_size", "shuffle_seed", "prefetch", "binarize"}


def _read_once(read):
    """Memoizes `read(data)` on the fields that decide what is read (the last two configurations)."""
    cache: dict[str, Any] = {}

    @functools.wraps(read)
    def wrapper(data: DataConfiguration):
        key = data.model_dump_json(exclude=_BATCHING_FIELDS)
        if key not in cache:
            while len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[key] = read(data)
        return cache[key]

    return wrapper


def _report_skipped(dataset: Any, name: str) -> None:
    skipped = getattr(dataset, "skipped", ())
    if skipped:
        _log.warning("%s: skipped %d bad file(s), e.g. %s: %s", name, len(skipped), skipped[0][0], skipped[0][1])


def _images(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    from workshop.data.datasets.image import load_image_dataset  # pylint: disable=g-import-not-at-top

    dataset = load_image_dataset(data.dataset, root=data.data_dir, train=train)
    return {"x": dataset.images, "label": dataset.labels}


def _toy(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    from workshop.data.datasets.toy import load_toy_dataset  # pylint: disable=g-import-not-at-top

    dataset = load_toy_dataset(data.dataset, train=train)
    return {"x": dataset.images, "label": dataset.labels}


@_read_once
def _text_rows(data: DataConfiguration) -> tuple[np.ndarray, int]:
    """Packed rows of the whole corpus and the row where the test split starts."""
    from workshop.data.datasets import text  # pylint: disable=g-import-not-at-top

    cls = text.PlainTextDataset if data.dataset == "text" else text.WikipediaDataset
    dataset = cls(
        data.data_dir,
        max_length=data.sequence_length,
        vocab_size=data.vocab_size,
        tokenizer_path=data.tokenizer_path,
        skip_bad_files=data.skip_bad_files,
    )
    _report_skipped(dataset, data.dataset)
    rows = dataset.sequences
    # Rows are packed in document order, so the last rows hold the last documents.
    return rows, len(rows) - held_out_count(len(rows), data.test_fraction, what=f"{data.data_dir}: packed rows")


def _text(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    rows, split = _text_rows(data)
    return {"x": rows[:split] if train else rows[split:]}


def _audio_arrays(dataset: Any, data: DataConfiguration, labels: str) -> dict[str, np.ndarray]:
    arrays = dataset.as_arrays(data.sequence_length, data.quantization_channels)
    if len(arrays["clip"]) == 0:
        raise ValueError(
            f"{dataset!r}: no clip is at least data.sequence_length={data.sequence_length} samples long"
        )
    x = arrays["mu_law"].astype(np.int32) if data.quantization_channels else arrays["audio"].astype(np.float32)
    return {"x": x, "label": arrays[labels], "clip": arrays["clip"]}


@_read_once
def _audio_folder(data: DataConfiguration) -> tuple[dict[str, np.ndarray], int]:
    from workshop.data.datasets.audio import AudioFolderDataset  # pylint: disable=g-import-not-at-top

    dataset = AudioFolderDataset(data.data_dir, data.sample_rate, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, data.dataset)
    arrays = _audio_arrays(dataset, data, "label")
    # Split by file, so no clip has crops in both splits.
    first_test_clip = len(dataset) - held_out_count(len(dataset), data.test_fraction, what=f"{data.data_dir}: audio files")
    return arrays, first_test_clip


def _audio(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    if data.dataset == "librispeech":
        from workshop.data.datasets.audio import LibriSpeechDataset  # pylint: disable=g-import-not-at-top

        subset = data.subset if train else data.test_subset
        dataset = LibriSpeechDataset(data.data_dir, data.sample_rate, subset, skip_bad_files=data.skip_bad_files)
        _report_skipped(dataset, f"librispeech/{subset}")
        arrays = _audio_arrays(dataset, data, "speaker")
    else:
        arrays, first_test_clip = _audio_folder(data)
        keep = (arrays["clip"] < first_test_clip) if train else (arrays["clip"] >= first_test_clip)
        arrays = {key: value[keep] for key, value in arrays.items()}
    arrays.pop("clip")
    return arrays


@_read_once
def _protein_chains(data: DataConfiguration) -> tuple[dict[str, np.ndarray], int]:
    from workshop.data.protein_dataset import ProteinDataset  # pylint: disable=g-import-not-at-top

    dataset = ProteinDataset(data.data_dir, with_constraints=True, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, data.dataset)
    if len(dataset) == 0:
        raise ValueError(f"{data.data_dir}: no protein chain was read")
    arrays = dataset.as_arrays(data.sequence_length)
    split = len(dataset) - held_out_count(len(dataset), data.test_fraction, what=f"{data.data_dir}: protein chains")
    return arrays, split


def _protein(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    arrays, split = _protein_chains(data)
    rows = slice(0, split) if train else slice(split, None)
    ca = 1  # Backbone atom order N, CA, C, O.
    return {
        "x": arrays["coords"][rows, :, ca],
        "mask": arrays["residue_mask"][rows] & arrays["atom_mask"][rows, :, ca],
        "aatype": arrays["aatype"][rows],
    }


_IMAGES = ("fashion_mnist", "mnist", "cifar10", "cifar100")
_TOY = ("two_moons", "eight_gaussians", "checkerboard", "pinwheel")
_LOADERS = {
    **{name: _images for name in _IMAGES},
    **{name: _toy for name in _TOY},
    "text": _text,
    "wikipedia": _text,
    "librispeech": _audio,
    "audio_folder": _audio,
    "protein": _protein,
}


def load_split(data: DataConfiguration, *, train: bool) -> dict[str, np.ndarray]:
    """The arrays of the training (`train=True`) or test split of `data.dataset` (see the module doc)."""
    try:
        loader = _LOADERS[data.dataset]
    except KeyError:
        raise ValueError(f"data.dataset {data.dataset!r} is unknown; known: {', '.join(sorted(_LOADERS))}") from None
    return loader(data, train)
