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
| protein | float32 CA coordinates `[N, sequence_length, 3]` (Angstrom / `coordinate_scale`; chains or, with `window_stride`, windows) | `"mask"` bool `[N, L]`, `"aatype"` int32 `[N, L]` |

`data.flatten` reshapes `"x"` to `[N, D]` for vector models (protein windows
in the "first_residues" frame: `[N, 3L - 6]`, without their six fixed zeros).

Datasets with an official test split (the image datasets, LibriSpeech's
`test_subset`) use it; the others hold out the last `test_fraction` of their
documents, files or chains, so no document, clip or chain is in both splits.
LibriSpeech with `data_dir` at one subset folder (`.../LibriSpeech/dev-clean`)
holds out the last `test_fraction` of its speakers by id (of its chapters when
it has one speaker), and says so in the log; `subset == test_subset`, or both
resolving to one folder, is refused. The test split is never training data.
A corpus is read once per process for both splits (`_read_once`).

Text datasets keep their BPE tokenizer in `tokenizer_file(data)` (trained on
the corpus the first time, then reused), so a sampler can turn generated ids
back into text (`run_tokenizer`; the sample binary's writers,
`workshop.train.sample_writers`, write `samples.txt` for text models and one
WAV file per sample for audio models).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import pathlib
from typing import Any

import numpy as np

from workshop.core import paths
from workshop.core.configuration import DataConfiguration

__all__ = ["AUDIO_DATASETS", "TEXT_DATASETS", "TOKENIZER_CACHE_ENV", "encode_text_prompt", "held_out_count",
           "load_split", "run_tokenizer", "tokenizer_file"]

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
        tokenizer_path=tokenizer_file(data),
        skip_bad_files=data.skip_bad_files,
    )
    _report_skipped(dataset, data.dataset)
    if dataset.vocab_size > data.vocab_size:
        # A saved tokenizer of another size: its ids would fall outside a model sized by data.vocab_size.
        raise ValueError(f"the tokenizer {tokenizer_file(data)} has {dataset.vocab_size} entries, more than "
                         f"data.vocab_size={data.vocab_size}; set data.vocab_size (and the model's) to match it")
    rows = dataset.sequences
    # Rows are packed in document order, so the last rows hold the last documents.
    return rows, len(rows) - held_out_count(len(rows), data.test_fraction, what=f"{data.data_dir}: packed rows")


TOKENIZER_CACHE_ENV = paths.CACHE_DIR_ENV
TEXT_DATASETS = ("text", "wikipedia")
AUDIO_DATASETS = ("librispeech", "audio_folder")


def tokenizer_file(data: DataConfiguration) -> pathlib.Path:
    """The BPE tokenizer file of a text dataset: read when it exists, else trained on the corpus and saved there.

    `data.tokenizer_path` when set. Otherwise a cache file,
    `$WORKSHOP_CACHE_DIR/tokenizers/<dataset>-bpe<vocab_size>-<digest>.json`
    (`~/.cache/workshop` without the variable), whose digest covers the
    corpus's absolute path and the relative names, sizes and modification
    times of its files: training and sampling a corpus share one tokenizer,
    and an edited corpus gets a new one.

    Raises:
      ValueError: `data.dataset` is not a text dataset.
      FileNotFoundError: `data.data_dir` does not exist.
    """
    if data.dataset not in TEXT_DATASETS:
        raise ValueError(f"data.dataset {data.dataset!r} has no tokenizer; text datasets: {', '.join(TEXT_DATASETS)}")
    if data.tokenizer_path is not None:
        return pathlib.Path(data.tokenizer_path).expanduser()
    root = pathlib.Path(data.data_dir).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"data.data_dir {str(root)!r} does not exist (expected the {data.dataset} corpus)")
    digest = hashlib.sha256(str(root).encode())
    for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(root) if path != root else path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    cache = paths.cache_dir()
    return cache / "tokenizers" / f"{data.dataset}-bpe{data.vocab_size}-{digest.hexdigest()[:16]}.json"


def run_tokenizer(data: DataConfiguration):
    """The BPE tokenizer a text run was trained with (`tokenizer_file`).

    Raises:
      FileNotFoundError: the tokenizer file is missing.
    """
    from workshop.data import bpe  # pylint: disable=g-import-not-at-top

    path = tokenizer_file(data)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} not found: it is written when training reads the corpus "
                                "(set data.tokenizer_path to the file training used)")
    return bpe.load_tokenizer(path)


def encode_text_prompt(data: DataConfiguration, text: str) -> np.ndarray:
    """A text prompt as the token ids a text model was trained on: int32 `[P]`.

    Encoded with the run's BPE tokenizer (`tokenizer_file`), without special
    tokens, as the training corpus was; the sample binary decodes the
    continuation with the same tokenizer.

    Raises:
      ValueError: `data.dataset` is not a text dataset, or the text encodes to no tokens.
      FileNotFoundError: the tokenizer file is missing.
    """
    if data.dataset not in TEXT_DATASETS:
        raise ValueError(f"a text prompt needs a model of text (data.dataset one of {', '.join(TEXT_DATASETS)}); "
                         f"this run's dataset is {data.dataset!r}")
    ids = run_tokenizer(data).encode(text, add_special_tokens=False).ids
    if not ids:
        raise ValueError(f"the prompt {text!r} encodes to no tokens")
    return np.asarray(ids, np.int32)


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


@_read_once
def _librispeech_single_subset(data: DataConfiguration) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`data_dir` is one subset folder: its crops, and a bool `[K]` marking those of held-out speakers (or chapters)."""
    from workshop.data.datasets.audio import LibriSpeechDataset  # pylint: disable=g-import-not-at-top

    dataset = LibriSpeechDataset(data.data_dir, data.sample_rate, subset=None, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, f"librispeech/{dataset.subset}")
    arrays = _audio_arrays(dataset, data, "speaker")
    # Whole speakers are held out, so the test NLL is of voices never trained on;
    # one speaker's subset falls back to whole chapters.
    by, groups = "speakers", dataset.speaker_ids
    if len(np.unique(groups)) < 2:
        by, groups = "chapters", dataset.chapter_ids
    ids = np.unique(groups)  # Sorted: the split depends only on the files.
    held_out = ids[len(ids) - held_out_count(len(ids), data.test_fraction, what=f"{dataset.data_dir}: LibriSpeech {by}"):]
    _log.warning(
        "librispeech: data_dir %s is the single subset %r (data.subset=%r and data.test_subset=%r are not read); "
        "the test split is its last %d of %d %s by id (%s), the training split the rest",
        dataset.data_dir, dataset.subset, data.subset, data.test_subset, len(held_out), len(ids), by,
        ", ".join(map(str, held_out[:10])) + (", ..." if len(held_out) > 10 else ""),
    )
    return arrays, np.isin(groups, held_out)[arrays["clip"]]


def _librispeech(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    from workshop.data.datasets import audio  # pylint: disable=g-import-not-at-top

    root = pathlib.Path(data.data_dir)
    if audio.is_librispeech_subset(root):
        arrays, test_crops = _librispeech_single_subset(data)
        keep = ~test_crops if train else test_crops
        return {key: value[keep] for key, value in arrays.items()}
    if data.subset == data.test_subset:
        raise ValueError(
            f"data.subset and data.test_subset are both {data.subset!r}: the test split would be the training data; "
            "set data.test_subset to another subset (e.g. 'test-clean'), or point data.data_dir at one subset "
            "folder to hold out some of its speakers"
        )
    folders = {s: audio.find_librispeech_subset(root, s) for s in (data.subset, data.test_subset)}
    if folders[data.subset].resolve() == folders[data.test_subset].resolve():
        raise ValueError(
            f"data.subset {data.subset!r} and data.test_subset {data.test_subset!r} are the same folder "
            f"{folders[data.subset].resolve()}: the test split would be the training data"
        )
    subset = data.subset if train else data.test_subset
    dataset = audio.LibriSpeechDataset(folders[subset], data.sample_rate, subset, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, f"librispeech/{subset}")
    return _audio_arrays(dataset, data, "speaker")


def _audio(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    if data.dataset == "librispeech":
        arrays = _librispeech(data, train)
    else:
        arrays, first_test_clip = _audio_folder(data)
        keep = (arrays["clip"] < first_test_clip) if train else (arrays["clip"] >= first_test_clip)
        arrays = {key: value[keep] for key, value in arrays.items()}
    arrays.pop("clip")
    return arrays


@_read_once
def _protein_chains(data: DataConfiguration) -> tuple[Any, int]:
    """The chains of `data_dir` and the index of the first held-out chain."""
    from workshop.data.protein_dataset import ProteinDataset  # pylint: disable=g-import-not-at-top

    dataset = ProteinDataset(data.data_dir, with_constraints=True, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, data.dataset)
    if len(dataset) == 0:
        raise ValueError(f"{data.data_dir}: no protein chain was read")
    split = len(dataset) - held_out_count(len(dataset), data.test_fraction, what=f"{data.data_dir}: protein chains")
    return dataset, split


def _protein(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    from workshop.data import protein_dataset  # pylint: disable=g-import-not-at-top

    dataset, split = _protein_chains(data)
    if data.window_stride is None:
        arrays = dataset.as_arrays(data.sequence_length)
        rows = slice(0, split) if train else slice(split, None)
        ca = 1  # Backbone atom order N, CA, C, O.
        x, mask = arrays["coords"][rows, :, ca], arrays["residue_mask"][rows] & arrays["atom_mask"][rows, :, ca]
        aatype = arrays["aatype"][rows]
    else:
        chains = dataset.examples[:split] if train else dataset.examples[split:]
        windows = protein_dataset.ca_windows(chains, data.sequence_length, data.window_stride)
        if len(windows["ca"]) == 0:
            raise ValueError(
                f"{data.data_dir}: the {'training' if train else 'held-out'} chains have no run of "
                f"data.sequence_length={data.sequence_length} consecutive residues with every CA present"
            )
        x, aatype = windows["ca"], windows["aatype"]
        mask = np.ones(aatype.shape, bool)
        if data.protein_frame == "centred":
            x = x - x.mean(axis=1, keepdims=True)
    if data.protein_frame == "principal_axes":
        x = protein_dataset.principal_axes_frame(x, mask)
    elif data.protein_frame == "first_residues":
        x = protein_dataset.first_residues_frame(x)
        if data.flatten:
            x = protein_dataset.drop_fixed_coordinates(x)  # [N, 3L - 6]: no coordinate that is always 0.
    if train and data.coordinate_noise > 0:
        x, mask, aatype = (np.repeat(a, data.noise_copies, axis=0) for a in (x, mask, aatype))
        noise = np.random.default_rng([data.shuffle_seed, 8]).normal(0.0, data.coordinate_noise, x.shape)
        if x.ndim == 3:
            noise *= mask[..., None]  # Padding stays 0.
        x = x + noise
    return {"x": (x / data.coordinate_scale).astype(np.float32), "mask": mask, "aatype": aatype}


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
    arrays = loader(data, train)
    if data.flatten:
        arrays["x"] = arrays["x"].reshape(len(arrays["x"]), -1)
    return arrays
