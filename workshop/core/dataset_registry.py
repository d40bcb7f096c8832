"""The dataset registry: `data.dataset` name -> modality and loader.

Each dataset is registered once, with its modality (which section of
`DataConfiguration` configures it: `data.image`, `data.text`, `data.audio`,
`data.protein`; "vector" datasets have none) and its loader,
`loader(data, train) -> {"x": [N, ...], ...}`, which
`workshop.data.sources.load_split` calls. `DataConfiguration` validates
`dataset` against this registry. A user registers another dataset the same
way, without editing the library:

    def load_tiles(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
        return {"x": tiles_uint8[:800] if train else tiles_uint8[800:]}   # [N, H, W, C]

    register_dataset("tiles", modality="image", loader=load_tiles)

after which `DataConfiguration(dataset="tiles", image={"binarize": "dynamic"})`
validates and `load_split` reads it. The built-in datasets name their loaders
by import path (`"module:function"`, imported on the first load), so this
module, like the rest of `core`, imports nothing from `workshop.data`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from workshop.core.configuration import DataConfiguration

__all__ = [
    "MODALITIES",
    "DatasetSpec",
    "Loader",
    "dataset_spec",
    "register_dataset",
    "registered_datasets",
    "unregister_dataset",
]

# What `"x"` holds: images [N, H, W, C] uint8 (or float in [0, 1]), vectors [N, D],
# token ids [N, T], audio [N, T] (mu-law codes or waveform), protein CA traces [N, L, 3].
MODALITIES = ("image", "vector", "text", "audio", "protein")

Loader = Callable[["DataConfiguration", bool], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about one dataset.

    Attributes:
      name: the `data.dataset` string.
      modality: one of `MODALITIES`; names the `DataConfiguration` section
        that configures the dataset (none for "vector").
      loader: `loader(data, train) -> dict` of numpy arrays with a shared
        leading dim N and the model input under `"x"`; or its import path,
        `"package.module:function"`, imported on the first `load`.
      needs_data_dir: the dataset reads local files, so `data.data_dir` must be set.
      description: one line for listings.
    """

    name: str
    modality: str
    loader: Loader | str
    needs_data_dir: bool = False
    description: str = ""

    def load(self, data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
        """The arrays of the training (`train=True`) or test split: `self.loader(data, train)`."""
        loader = self.loader
        if isinstance(loader, str):
            module, _, function = loader.partition(":")
            loader = getattr(importlib.import_module(module), function)
        return loader(data, train)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, modality: str, loader: Loader | str, needs_data_dir: bool = False,
                     description: str = "") -> DatasetSpec:
    """Registers `name` as a `data.dataset` value read by `loader` (see `DatasetSpec`).

    Raises:
      ValueError: `name` is empty or already registered, or `modality` is not one of `MODALITIES`.
    """
    if not name or name != name.strip():
        raise ValueError(f"dataset name {name!r} must be a non-empty string without surrounding spaces")
    if modality not in MODALITIES:
        raise ValueError(f"dataset {name!r}: modality {modality!r} is unknown; known: {', '.join(MODALITIES)}")
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered ({_REGISTRY[name].modality}); "
                         "unregister_dataset it first to replace it")
    if isinstance(loader, str) and ":" not in loader:
        raise ValueError(f"dataset {name!r}: loader {loader!r} must be a function or 'package.module:function'")
    spec = DatasetSpec(name, modality, loader, needs_data_dir, description)
    _REGISTRY[name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Removes `name` from the registry (for tests and replacements); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def registered_datasets(modality: str | None = None) -> list[str]:
    """The registered dataset names (of one modality), sorted."""
    return sorted(n for n, s in _REGISTRY.items() if modality is None or s.modality == modality)


def dataset_spec(name: str) -> DatasetSpec:
    """The registration of `name`.

    Raises:
      ValueError: `name` is not registered; the message lists the registered names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        by_modality = "; ".join(f"{m}: {', '.join(registered_datasets(m))}" for m in MODALITIES
                                if registered_datasets(m))
        raise ValueError(f"data.dataset {name!r} is not a registered dataset{hint}; registered: {by_modality} "
                         "(workshop.core.dataset_registry.register_dataset adds one)") from None


def _register_builtins() -> None:
    sources = "workshop.data.sources"
    for name in ("fashion_mnist", "mnist", "cifar10", "cifar100"):
        register_dataset(name, modality="image", loader=f"{sources}:load_images",
                         description="official train/test splits; data_dir optional (Debian's packages or a download)")
    for name in ("two_moons", "eight_gaussians", "checkerboard", "pinwheel"):
        register_dataset(name, modality="vector", loader=f"{sources}:load_toy",
                         description="a generated 2-D toy density")
    register_dataset("text", modality="text", loader=f"{sources}:load_plain_text", needs_data_dir=True,
                     description="every *.txt file under data_dir (or one file), as BPE ids")
    register_dataset("wikipedia", modality="text", loader=f"{sources}:load_wikipedia", needs_data_dir=True,
                     description="a pages-articles XML dump or WikiExtractor JSON, as BPE ids")
    register_dataset("librispeech", modality="audio", loader=f"{sources}:load_librispeech", needs_data_dir=True,
                     description="LibriSpeech subsets (audio.subset, audio.test_subset), labelled by speaker")
    register_dataset("audio_folder", modality="audio", loader=f"{sources}:load_audio_folder", needs_data_dir=True,
                     description="WAV/FLAC/OGG files under data_dir, labelled by folder")
    register_dataset("protein", modality="protein", loader=f"{sources}:load_protein", needs_data_dir=True,
                     description="CA traces of the chains of PDB/mmCIF files under data_dir")


_register_builtins()
