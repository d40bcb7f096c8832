"""The arrays of a configured dataset's split, for `BatchPipeline`: the built-in loaders and `load_split`.

`load_split(data_config, train=...)` calls the loader registered under
`data.dataset` (`workshop.core.dataset_registry`, where a user registers a
dataset of their own) and returns a dict of numpy arrays with a shared leading
dim N. `"x"` is the model input, whatever the modality:

| `dataset` (modality) | `"x"` | other keys |
| --- | --- | --- |
| fashion_mnist, mnist, cifar10, cifar100 (image) | uint8 `[N, H, W, C]` | `"label"` |
| two_moons, eight_gaussians, checkerboard, pinwheel (vector) | float32 `[N, 2]` | `"label"` |
| text, wikipedia (text) | int32 BPE ids `[N, text.sequence_length]` | |
| librispeech, audio_folder (audio) | int32 mu-law codes `[N, audio.sequence_length]` (float32 waveform without `audio.quantization_channels`) | `"label"` (speaker id or folder class) |
| protein (protein) | float32 CA coordinates `[N, L, 3]`, L = `protein.sequence_length` (Angstrom / `protein.coordinate_scale`; chains or, with `protein.window_stride`, windows) | `"mask"` bool `[N, L]`, `"aatype"` int32 `[N, L]` |

`data.flatten` reshapes `"x"` to `[N, D]` for vector models (protein windows
in the "first_residues" frame: `[N, 3L - 6]`, without their six fixed zeros).

Datasets with an official test split (the image datasets, LibriSpeech's
`audio.test_subset`) use it; the others hold out the last `test_fraction` of
their documents, files or chains, so no document, clip or chain is in both
splits. LibriSpeech with `data_dir` at one subset folder
(`.../LibriSpeech/dev-clean`) holds out the last `test_fraction` of its
speakers by id (of its chapters when it has one speaker), and says so in the
log; `audio.subset == audio.test_subset`, or both resolving to one folder, is
refused. The test split is never training data. A corpus is read once per
process for both splits (`_read_once`).

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

from workshop.core import dataset_registry, paths
from workshop.core.configuration import DataConfiguration

__all__ = ["TOKENIZER_CACHE_ENV", "encode_text_prompt", "held_out_count", "load_audio_folder", "load_images",
           "load_librispeech", "load_plain_text", "load_protein", "load_split", "load_toy", "load_wikipedia",
           "run_tokenizer", "tokenizer_file"]

_log = logging.getLogger(__name__)

TOKENIZER_CACHE_ENV = paths.CACHE_DIR_ENV


def held_out_count(num_items: int, fraction: float, *, what: str) -> int:
    """How many of `num_items` the test split holds: `ceil(fraction * n)`, at least 1, leaving 1 for training."""
    if num_items < 2:
        raise ValueError(f"{what}: {num_items} found; a train/test split needs at least 2")
    return min(num_items - 1, max(1, math.ceil(fraction * num_items)))


# Fields that change how batches are drawn, not what is read.
_BATCHING_FIELDS = {"batch_size", "eval_batch_size", "shuffle_seed", "prefetch", "image"}


def _read_once(read):
    """Memoizes `read(data, *args)` on the fields that decide what is read (the last two configurations)."""
    cache: dict[tuple[str, ...], Any] = {}

    @functools.wraps(read)
    def wrapper(data: DataConfiguration, *args: str):
        key = (data.model_dump_json(exclude=_BATCHING_FIELDS), *args)
        if key not in cache:
            while len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[key] = read(data, *args)
        return cache[key]

    return wrapper


def _report_skipped(dataset: Any, name: str) -> None:
    skipped = getattr(dataset, "skipped", ())
    if skipped:
        _log.warning("%s: skipped %d bad file(s), e.g. %s: %s", name, len(skipped), skipped[0][0], skipped[0][1])


def load_images(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """An image dataset's split (`workshop.data.datasets.image`): uint8 `"x"` `[N, H, W, C]`, `"label"` `[N]`."""
    from workshop.data.datasets.image import load_image_dataset  # pylint: disable=g-import-not-at-top

    dataset = load_image_dataset(data.dataset, root=data.data_dir, train=train)
    return {"x": dataset.images, "label": dataset.labels}


def load_toy(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """A generated 2-D density's split (`workshop.data.datasets.toy`): float32 `"x"` `[N, 2]`, `"label"` `[N]`."""
    from workshop.data.datasets.toy import load_toy_dataset  # pylint: disable=g-import-not-at-top

    dataset = load_toy_dataset(data.dataset, train=train)
    return {"x": dataset.images, "label": dataset.labels}


@_read_once
def _text_rows(data: DataConfiguration, reader: str) -> tuple[np.ndarray, int]:
    """Packed rows of the whole corpus (read by `workshop.data.datasets.text.<reader>`) and the first test row."""
    from workshop.data.datasets import text  # pylint: disable=g-import-not-at-top

    options = data.text
    dataset = getattr(text, reader)(
        data.data_dir,
        max_length=options.sequence_length,
        vocab_size=options.vocab_size,
        tokenizer_path=tokenizer_file(data),
        skip_bad_files=data.skip_bad_files,
    )
    _report_skipped(dataset, data.dataset)
    if dataset.vocab_size > options.vocab_size:
        # A saved tokenizer of another size: its ids would fall outside a model sized by data.text.vocab_size.
        raise ValueError(f"the tokenizer {tokenizer_file(data)} has {dataset.vocab_size} entries, more than "
                         f"data.text.vocab_size={options.vocab_size}; set data.text.vocab_size (and the model's) "
                         "to match it")
    rows = dataset.sequences
    # Rows are packed in document order, so the last rows hold the last documents.
    return rows, len(rows) - held_out_count(len(rows), data.test_fraction, what=f"{data.data_dir}: packed rows")


def _text_split(data: DataConfiguration, train: bool, reader: str) -> dict[str, np.ndarray]:
    rows, split = _text_rows(data, reader)
    return {"x": rows[:split] if train else rows[split:]}


def load_plain_text(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """The `*.txt` files under `data_dir` (or one file) as int32 BPE ids `"x"` `[N, text.sequence_length]`."""
    return _text_split(data, train, "PlainTextDataset")


def load_wikipedia(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """A Wikipedia dump (or WikiExtractor JSON) as int32 BPE ids `"x"` `[N, text.sequence_length]`."""
    return _text_split(data, train, "WikipediaDataset")


def _text_options(data: DataConfiguration, what: str):
    if data.text is None:
        raise ValueError(f"{what} needs a text dataset ({', '.join(dataset_registry.registered_datasets('text'))}); "
                         f"data.dataset {data.dataset!r} is not (its modality: {data.modality})")
    return data.text


def tokenizer_file(data: DataConfiguration) -> pathlib.Path:
    """The BPE tokenizer file of a text dataset: read when it exists, else trained on the corpus and saved there.

    `data.text.tokenizer_path` when set. Otherwise a cache file,
    `$WORKSHOP_CACHE_DIR/tokenizers/<dataset>-bpe<vocab_size>-<digest>.json`
    (`~/.cache/workshop` without the variable), whose digest covers the
    corpus's absolute path and the relative names, sizes and modification
    times of its files: training and sampling a corpus share one tokenizer,
    and an edited corpus gets a new one.

    Raises:
      ValueError: `data.dataset` is not a text dataset.
      FileNotFoundError: `data.data_dir` does not exist.
    """
    options = _text_options(data, "a tokenizer")
    if options.tokenizer_path is not None:
        return pathlib.Path(options.tokenizer_path).expanduser()
    root = pathlib.Path(data.data_dir).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"data.data_dir {str(root)!r} does not exist (expected the {data.dataset} corpus)")
    digest = hashlib.sha256(str(root).encode())
    for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(root) if path != root else path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    cache = paths.cache_dir()
    return cache / "tokenizers" / f"{data.dataset}-bpe{options.vocab_size}-{digest.hexdigest()[:16]}.json"


def run_tokenizer(data: DataConfiguration):
    """The BPE tokenizer a text run was trained with (`tokenizer_file`).

    Raises:
      FileNotFoundError: the tokenizer file is missing.
    """
    from workshop.data import bpe  # pylint: disable=g-import-not-at-top

    path = tokenizer_file(data)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} not found: it is written when training reads the corpus "
                                "(set data.text.tokenizer_path to the file training used)")
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
    _text_options(data, "a text prompt")
    ids = run_tokenizer(data).encode(text, add_special_tokens=False).ids
    if not ids:
        raise ValueError(f"the prompt {text!r} encodes to no tokens")
    return np.asarray(ids, np.int32)


def _audio_arrays(dataset: Any, data: DataConfiguration, labels: str) -> dict[str, np.ndarray]:
    """The crops of `dataset`: `"x"` `[K, T]`, `"label"` `[K]` (its `labels` array) and `"clip"` `[K]` (file index)."""
    options = data.audio
    arrays = dataset.as_arrays(options.sequence_length, options.quantization_channels)
    if len(arrays["clip"]) == 0:
        raise ValueError(
            f"{dataset!r}: no clip is at least data.audio.sequence_length={options.sequence_length} samples long"
        )
    x = arrays["mu_law"].astype(np.int32) if options.quantization_channels else arrays["audio"].astype(np.float32)
    return {"x": x, "label": arrays[labels], "clip": arrays["clip"]}


@_read_once
def _audio_folder(data: DataConfiguration) -> tuple[dict[str, np.ndarray], int]:
    from workshop.data.datasets.audio import AudioFolderDataset  # pylint: disable=g-import-not-at-top

    dataset = AudioFolderDataset(data.data_dir, data.audio.sample_rate, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, data.dataset)
    arrays = _audio_arrays(dataset, data, "label")
    # Split by file, so no clip has crops in both splits.
    first_test_clip = len(dataset) - held_out_count(len(dataset), data.test_fraction, what=f"{data.data_dir}: audio files")
    return arrays, first_test_clip


def load_audio_folder(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """Crops of the sound files under `data_dir`, `"x"` `[N, audio.sequence_length]`, `"label"` the folder class.

    The last `test_fraction` of the files are held out whole.
    """
    arrays, first_test_clip = _audio_folder(data)
    keep = (arrays["clip"] < first_test_clip) if train else (arrays["clip"] >= first_test_clip)
    return {key: value[keep] for key, value in arrays.items() if key != "clip"}


@_read_once
def _librispeech_single_subset(data: DataConfiguration) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`data_dir` is one subset folder: its crops, and a bool `[K]` marking those of held-out speakers (or chapters)."""
    from workshop.data.datasets.audio import LibriSpeechDataset  # pylint: disable=g-import-not-at-top

    options = data.audio
    dataset = LibriSpeechDataset(data.data_dir, options.sample_rate, subset=None, skip_bad_files=data.skip_bad_files)
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
        "librispeech: data_dir %s is the single subset %r (data.audio.subset=%r and data.audio.test_subset=%r are "
        "not read); the test split is its last %d of %d %s by id (%s), the training split the rest",
        dataset.data_dir, dataset.subset, options.subset, options.test_subset, len(held_out), len(ids), by,
        ", ".join(map(str, held_out[:10])) + (", ..." if len(held_out) > 10 else ""),
    )
    return arrays, np.isin(groups, held_out)[arrays["clip"]]


def load_librispeech(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """Crops of LibriSpeech utterances, `"x"` `[N, audio.sequence_length]`, `"label"` the speaker id.

    `audio.subset` trains and `audio.test_subset` tests; a `data_dir` at one
    subset folder holds out its last speakers instead (see the module doc).
    """
    from workshop.data.datasets import audio  # pylint: disable=g-import-not-at-top

    options, root = data.audio, pathlib.Path(data.data_dir)
    if audio.is_librispeech_subset(root):
        arrays, test_crops = _librispeech_single_subset(data)
        keep = ~test_crops if train else test_crops
        return {key: value[keep] for key, value in arrays.items() if key != "clip"}
    if options.subset == options.test_subset:
        raise ValueError(
            f"data.audio.subset and data.audio.test_subset are both {options.subset!r}: the test split would be the "
            "training data; set data.audio.test_subset to another subset (e.g. 'test-clean'), or point "
            "data.data_dir at one subset folder to hold out some of its speakers"
        )
    folders = {s: audio.find_librispeech_subset(root, s) for s in (options.subset, options.test_subset)}
    if folders[options.subset].resolve() == folders[options.test_subset].resolve():
        raise ValueError(
            f"data.audio.subset {options.subset!r} and data.audio.test_subset {options.test_subset!r} are the same "
            f"folder {folders[options.subset].resolve()}: the test split would be the training data"
        )
    subset = options.subset if train else options.test_subset
    dataset = audio.LibriSpeechDataset(folders[subset], options.sample_rate, subset, skip_bad_files=data.skip_bad_files)
    _report_skipped(dataset, f"librispeech/{subset}")
    arrays = _audio_arrays(dataset, data, "speaker")
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


def load_protein(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
    """CA traces of the chains (or windows) of the PDB/mmCIF files under `data_dir`, framed, scaled and noised.

    Returns `"x"` float32 `[N, L, 3]` (`[N, 3L - 6]` flattened in the
    "first_residues" frame), `"mask"` bool `[N, L]`, `"aatype"` int32 `[N, L]`.
    """
    from workshop.data import protein_dataset  # pylint: disable=g-import-not-at-top

    options = data.protein
    dataset, split = _protein_chains(data)
    if options.window_stride is None:
        arrays = dataset.as_arrays(options.sequence_length)
        rows = slice(0, split) if train else slice(split, None)
        ca = 1  # Backbone atom order N, CA, C, O.
        x, mask = arrays["coords"][rows, :, ca], arrays["residue_mask"][rows] & arrays["atom_mask"][rows, :, ca]
        aatype = arrays["aatype"][rows]
    else:
        chains = dataset.examples[:split] if train else dataset.examples[split:]
        windows = protein_dataset.ca_windows(chains, options.sequence_length, options.window_stride)
        if len(windows["ca"]) == 0:
            raise ValueError(
                f"{data.data_dir}: the {'training' if train else 'held-out'} chains have no run of "
                f"data.protein.sequence_length={options.sequence_length} consecutive residues with every CA present"
            )
        x, aatype = windows["ca"], windows["aatype"]
        mask = np.ones(aatype.shape, bool)
        if options.frame == "centred":
            x = x - x.mean(axis=1, keepdims=True)
    if options.frame == "principal_axes":
        x = protein_dataset.principal_axes_frame(x, mask)
    elif options.frame == "first_residues":
        x = protein_dataset.first_residues_frame(x)
        if data.flatten:
            x = protein_dataset.drop_fixed_coordinates(x)  # [N, 3L - 6]: no coordinate that is always 0.
    if train and options.coordinate_noise > 0:
        x, mask, aatype = (np.repeat(a, options.noise_copies, axis=0) for a in (x, mask, aatype))
        noise = np.random.default_rng([data.shuffle_seed, 8]).normal(0.0, options.coordinate_noise, x.shape)
        if x.ndim == 3:
            noise *= mask[..., None]  # Padding stays 0.
        x = x + noise
    return {"x": (x / options.coordinate_scale).astype(np.float32), "mask": mask, "aatype": aatype}


def load_split(data: DataConfiguration, *, train: bool) -> dict[str, np.ndarray]:
    """The arrays of the training (`train=True`) or test split of `data.dataset` (see the module doc).

    Calls the dataset's registered loader (`workshop.core.dataset_registry`).

    Raises:
      ValueError: the loader returned no `"x"`, or arrays of different lengths.
    """
    arrays = dict(dataset_registry.dataset_spec(data.dataset).load(data, train))
    if "x" not in arrays:
        raise ValueError(f"the loader of data.dataset {data.dataset!r} returned {sorted(arrays)}, without the model "
                         "input 'x'")
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the loader of data.dataset {data.dataset!r} returned arrays of different lengths {lengths}")
    if data.flatten:
        arrays["x"] = arrays["x"].reshape(len(arrays["x"]), -1)
    return arrays
