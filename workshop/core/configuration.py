"""Pydantic v2 configurations: model, optimizer, training, data and evaluation.

Every configuration validates on construction and on assignment, rejects
unknown fields, carries `schema_version`, and round-trips through JSON and
YAML files (`save` / `load`, format by file suffix). Errors are
`pydantic.ValidationError` (a `ValueError`) naming the field and what is allowed.

`ModelConfiguration.parameters` is checked against the parameter schema of its
`model_type` when that type is registered (see `workshop.core.registry`);
`create_model` checks again, so a configuration made before its model was
registered cannot slip through.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Literal

import numpy as np
import pydantic
import yaml
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, NonNegativeInt

from workshop.core import dataset_registry, registry

__all__ = [
    "DATA_SECTIONS",
    "DEFAULT_INPUT_SHAPE",
    "SCHEMA_VERSION",
    "AudioData",
    "DataConfiguration",
    "EvaluationConfiguration",
    "ImageData",
    "ModelConfiguration",
    "OptimizerConfiguration",
    "ProteinData",
    "TextData",
    "TrainingConfiguration",
]

SCHEMA_VERSION = 1

# The documented default: one Fashion-MNIST image, [H, W, C].
DEFAULT_INPUT_SHAPE = (28, 28, 1)


def _json_value(value: Any, where: str) -> Any:
    """`value` as plain JSON data (numpy scalars and arrays converted), or a ValueError naming `where`."""
    if isinstance(value, np.generic):  # np.float32(0.1) -> 0.1: the value JSON files can hold
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r} ({type(key).__name__}); JSON keys must be strings")
        return {k: _json_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__qualname__} ({value!r}), which a "
                     "configuration file cannot hold; use str, int, float, bool, None, lists and dicts "
                     "(numpy scalars and arrays are converted)")


class _Configuration(pydantic.BaseModel):
    """Shared behaviour: strict fields, versioning, file round-trips."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: int = SCHEMA_VERSION

    @pydantic.field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} was written by a newer Workshop; this one reads up to {SCHEMA_VERSION}"
            )
        if v < 1:
            raise ValueError("schema_version must be >= 1")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Writes the configuration as JSON (`.json`) or YAML (`.yaml`, `.yml`)."""
        path = pathlib.Path(path)
        data = self.to_dict()
        if path.suffix == ".json":
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        elif path.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(data, sort_keys=True)
        else:
            raise ValueError(f"{path}: configuration files must end in .json, .yaml or .yml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path):
        """Reads a configuration written by `save` (or by hand)."""
        path = pathlib.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"configuration file {path} does not exist")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
        return cls.model_validate(data)


class ModelConfiguration(_Configuration):
    """One configuration for every model family (see the user guide).

    Attributes:
      model_type: registered model type, e.g. "vae", "vqvae", "ddpm", "glow".
      input_shape: shape of one example; `(H, W, C)` for images, `(D,)` for
        vectors. Default `(28, 28, 1)`, one Fashion-MNIST image.
      latent_dim: size of the latent space (VAE, GAN noise, VQ embedding size).
      encoder_features: widths of the encoder layers (MLP units or conv channels).
      decoder_features: widths of the decoder layers.
      num_timesteps: diffusion steps.
      backbone_type: network family inside the model ("mlp", "conv", "unet",
        "dit", ...); None lets the model pick from `input_shape`.
      num_flows: flow steps.
      parameters: model-specific options, checked against the model's schema.
      metadata: free-form, carried along (experiment ids, dataset names):
        JSON data (str, int, float, bool, None, lists, dicts with string
        keys). numpy scalars and arrays are converted to Python numbers and
        lists; anything else is refused here rather than when saving.
    """

    model_type: str = Field(min_length=1)
    name: str | None = None
    input_shape: tuple[PositiveInt, ...] = DEFAULT_INPUT_SHAPE
    latent_dim: PositiveInt = 32
    encoder_features: list[PositiveInt] = Field(default_factory=lambda: [32, 64])
    decoder_features: list[PositiveInt] = Field(default_factory=lambda: [64, 32])
    num_timesteps: PositiveInt = 1000
    backbone_type: str | None = None
    num_flows: PositiveInt = 8
    parameters: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @pydantic.field_validator("model_type")
    @classmethod
    def _normalise_model_type(cls, v: str) -> str:
        return v.strip().lower()

    @pydantic.field_validator("metadata", mode="before")
    @classmethod
    def _json_metadata(cls, v: Any) -> Any:
        return _json_value(v, "metadata") if isinstance(v, dict) else v

    @pydantic.field_validator("input_shape")
    @classmethod
    def _image_or_vector(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) not in (1, 2, 3):
            raise ValueError(
                f"input_shape {v} must be (D,) for vectors, (T, C) for sequences or (H, W, C) for images"
            )
        return v

    @pydantic.model_validator(mode="after")
    def _check_parameters(self) -> "ModelConfiguration":
        if registry.is_registered(self.model_type):
            registry.validate_parameters(self.model_type, self.parameters)
        return self

    @property
    def family(self) -> str:
        """The registered family of `model_type` (raises if unknown)."""
        return registry.get_model_spec(self.model_type).family

    def typed_parameters(self):
        """`parameters` parsed by the model's schema, defaults filled in."""
        return registry.validate_parameters(self.model_type, self.parameters)


class OptimizerConfiguration(_Configuration):
    """An optax optimizer and learning-rate schedule.

    `schedule`: "constant"; "cosine" (cosine decay to `final_lr_fraction` of the
    peak over the run); "warmup_cosine" (linear warm-up over `warmup_steps`, then
    cosine decay).
    """

    name: Literal["adam", "adamw", "sgd", "rmsprop", "lamb"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    schedule: Literal["constant", "cosine", "warmup_cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    final_lr_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    b1: float = Field(default=0.9, ge=0.0, lt=1.0)
    b2: float = Field(default=0.999, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    grad_clip_norm: PositiveFloat | None = None


class TrainingConfiguration(_Configuration):
    """How long and how to train, and when the callbacks fire (in steps).

    Devices (`workshop.train.distributed`): `parallelism` "none" runs on one
    device; "data" replicates the state on a mesh of `num_devices` devices
    (None: all of them, on every host) and splits each batch across them;
    "fsdp" also shards every parameter and optimizer-state array of at least
    `fsdp_min_size` elements along its largest axis divisible by the device
    count (smaller arrays are replicated). The batch size must be divisible by
    the device count.

    Precision (`workshop.core.device_manager`): "float32"; "bfloat16" computes
    the forward and backward passes in bfloat16 with float32 parameters and
    optimizer state; "float16" does the same in float16 with dynamic loss
    scaling, starting at `loss_scale_init` and doubling after
    `loss_scale_period` finite steps (Micikevicius et al. 2018, arXiv:1710.03740).
    """

    num_steps: PositiveInt = 1000
    seed: int = 0
    optimizer: OptimizerConfiguration = Field(default_factory=OptimizerConfiguration)
    ema_decay: float | None = Field(default=0.999, ge=0.0, lt=1.0)
    log_every: PositiveInt = 50
    eval_every: PositiveInt | None = 500
    eval_batches: PositiveInt | None = None
    checkpoint_every: PositiveInt | None = 500
    keep_checkpoints: PositiveInt = 3
    sample_every: PositiveInt | None = 1000
    num_samples: PositiveInt = 64
    early_stopping_patience: PositiveInt | None = None
    early_stopping_metric: str = "loss"
    progress_bar: bool = True
    tensorboard: bool = True
    # A step whose loss, a metric or the gradient norm is NaN/Inf never changes the
    # state (Trainer.fit). None: the run stops at the next logging step with
    # NonFiniteLossError. N: such steps are skipped and counted (`skipped_steps`);
    # after N in a row the state rolls back to the newest checkpoint written before
    # them, at most `max_rollbacks` times per run.
    max_bad_steps: PositiveInt | None = None
    max_rollbacks: NonNegativeInt = 3
    parallelism: Literal["none", "data", "fsdp"] = "none"
    num_devices: PositiveInt | None = None
    fsdp_min_size: PositiveInt = 4096
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    loss_scale_init: PositiveFloat = 2.0**15
    loss_scale_period: PositiveInt = 2000

    @pydantic.model_validator(mode="after")
    def _devices_need_parallelism(self) -> "TrainingConfiguration":
        if self.parallelism == "none" and self.num_devices not in (None, 1):
            raise ValueError(
                f"training.num_devices={self.num_devices} needs training.parallelism 'data' or 'fsdp' "
                "(with 'none' the run uses one device)"
            )
        opt = self.optimizer
        if opt.schedule == "warmup_cosine" and opt.warmup_steps >= self.num_steps:
            raise ValueError(
                f"training.optimizer.warmup_steps={opt.warmup_steps} must be below training.num_steps="
                f"{self.num_steps} (schedule 'warmup_cosine'): set training.optimizer.warmup_steps below "
                f"{self.num_steps} or train longer"
            )
        return self


class _Section(pydantic.BaseModel):
    """One modality's part of `DataConfiguration` (its `schema_version` covers the sections)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ImageData(_Section):
    """`data.image`: the image datasets ("fashion_mnist", "mnist", "cifar10", "cifar100").

    Attributes:
      binarize: "none" keeps grey levels in [0, 1]; "dynamic" draws a fresh
        Bernoulli sample of each image every epoch (Salakhutdinov & Murray
        2008), the usual training set-up for Bernoulli decoders; "fixed"
        binarizes once with a seed (for evaluation sets).
    """

    binarize: Literal["none", "dynamic", "fixed"] = "none"


class TextData(_Section):
    """`data.text`: "text" (every `*.txt` file under `data_dir`, or one file) and
    "wikipedia" (a `pages-articles*.xml[.bz2]` dump or WikiExtractor JSON), as
    byte-level BPE ids packed into rows.

    Attributes:
      sequence_length: tokens per row (required).
      vocab_size: entries of the BPE vocabulary.
      tokenizer_path: the tokenizer file, read when it exists, else trained on
        the corpus and saved there; None: a cache file named after the corpus
        (`workshop.data.sources.tokenizer_file`).
    """

    sequence_length: PositiveInt | None = None
    vocab_size: PositiveInt = 8192
    tokenizer_path: str | None = None


class AudioData(_Section):
    """`data.audio`: "librispeech" and "audio_folder" (WAV/FLAC/OGG files), as crops.

    Attributes:
      sequence_length: samples per crop (required).
      sample_rate: clips are resampled to this rate (Hz).
      quantization_channels: mu-law levels of the codes; None keeps float
        waveforms.
      subset: the LibriSpeech subset trained on.
      test_subset: the LibriSpeech subset evaluated on.
    """

    sequence_length: PositiveInt | None = None
    sample_rate: PositiveInt = 16000
    quantization_channels: PositiveInt | None = 256
    subset: str = "train-clean-100"
    test_subset: str = "test-clean"


class ProteinData(_Section):
    """`data.protein`: "protein" (PDB/mmCIF files, gzipped too), CA traces in Angstrom.

    Attributes:
      sequence_length: residues per example: whole chains padded with a mask
        (None: the longest chain), or the length of each window.
      window_stride: every window of `sequence_length` consecutive residues with
        all CAs present, starting `window_stride` residues apart, each centred
        (None: whole chains).
      frame: "centred"; "principal_axes" turns each example onto its principal
        axes; "first_residues" (windows only) puts CA 0 at the origin, CA 1 on
        +x and CA 2 in the xy-plane (canonical poses).
      coordinate_scale: coordinates are divided by it (10: nanometres).
      coordinate_noise: > 0 (Angstrom) makes the training split `noise_copies`
        copies of each example with Gaussian noise of that standard deviation
        (one draw, seeded by `data.shuffle_seed`): real CA traces lie on thin
        shells (CA-CA 3.80 +- 0.02 A), on which a flow's likelihood can grow
        without bound.
      noise_copies: noisy copies of each training example.
    """

    sequence_length: PositiveInt | None = None
    window_stride: PositiveInt | None = None
    frame: Literal["centred", "principal_axes", "first_residues"] = "centred"
    coordinate_scale: PositiveFloat = 1.0
    coordinate_noise: float = Field(default=0.0, ge=0.0)
    noise_copies: PositiveInt = 1

    @pydantic.model_validator(mode="after")
    def _windows(self) -> "ProteinData":
        if self.frame == "first_residues" and self.window_stride is None:
            raise ValueError("data.protein.frame 'first_residues' needs whole windows: set data.protein.window_stride")
        if self.window_stride is not None and self.sequence_length is None:
            raise ValueError("data.protein.window_stride cuts chains into windows of data.protein.sequence_length "
                             "residues: set data.protein.sequence_length")
        return self


# The section of each modality that has one ("vector" datasets have no options of their own).
DATA_SECTIONS: dict[str, type[_Section]] = {"image": ImageData, "text": TextData, "audio": AudioData,
                                            "protein": ProteinData}

# The fields of `DataConfiguration` before it had sections (config.json of older workdirs): where each
# moved, by modality.
_FLAT_FIELDS = {
    "binarize": {"image": "binarize"},
    "sequence_length": {"text": "sequence_length", "audio": "sequence_length", "protein": "sequence_length"},
    "vocab_size": {"text": "vocab_size"},
    "tokenizer_path": {"text": "tokenizer_path"},
    "sample_rate": {"audio": "sample_rate"},
    "quantization_channels": {"audio": "quantization_channels"},
    "subset": {"audio": "subset"},
    "test_subset": {"audio": "test_subset"},
    "window_stride": {"protein": "window_stride"},
    "protein_frame": {"protein": "frame"},
    "coordinate_scale": {"protein": "coordinate_scale"},
    "coordinate_noise": {"protein": "coordinate_noise"},
    "noise_copies": {"protein": "noise_copies"},
}


def _a(modality: str) -> str:
    """ "an image", "a text": the article and the modality."""
    return f"{'an' if modality[0] in 'aeiou' else 'a'} {modality}"


def _non_defaults(name: str, section: type[_Section], value: Any) -> dict[str, Any]:
    """The fields of section `data.<name>` (a dict or the section itself) that differ from their defaults."""
    if not isinstance(value, pydantic.BaseModel):
        try:
            value = section.model_validate(value)
        except pydantic.ValidationError as err:
            raise ValueError("; ".join(f"data.{'.'.join([name, *map(str, e['loc'])])}={e.get('input')!r}: {e['msg']}"
                                       for e in err.errors())) from None
    fields = value.model_dump()
    return {k: v for k, v in fields.items() if v != section.model_fields[k].default}


class DataConfiguration(_Configuration):
    """Which dataset, where its files are, and how batches are made.

    `dataset` is a name of `workshop.core.dataset_registry` (which also
    registers user datasets):

    * images: "fashion_mnist" (the default; Debian's dataset-fashion-mnist),
      "mnist", "cifar10", "cifar100" (official test splits), options in
      `image` (`ImageData`);
    * vectors: the 2-D toy densities "two_moons", "eight_gaussians",
      "checkerboard", "pinwheel" of `workshop.data.datasets.toy`, generated,
      so `data_dir` does not apply; no options;
    * text: "text", "wikipedia", options in `text` (`TextData`);
    * audio: "librispeech", "audio_folder", options in `audio` (`AudioData`);
    * protein: "protein", options in `protein` (`ProteinData`).

    The section of the dataset's modality is filled with its defaults when
    absent; a section of another modality is refused when it sets anything
    (one holding only defaults, as `workshop.train.configs.with_defaults`
    writes every section so any field can be set from the command line, is
    dropped). The flat fields of configurations written before the sections
    (`"sequence_length": 128` beside `"dataset": "text"`) move into the
    dataset's section on reading; one of another modality must hold its old
    default.

    The fields below apply to every dataset. Datasets that read local files
    (text, audio, protein) need `data_dir`. `flatten` reshapes each example of
    `"x"` into a vector (for models with `input_shape` `(D,)`, e.g. flows on
    `[3 * sequence_length]` CA traces; `[3 * sequence_length - 6]` in the
    "first_residues" frame, whose six coordinates fixed at 0 are left out).
    Datasets without an official test split ("text", "wikipedia",
    "audio_folder", "protein") hold out their last `test_fraction` of
    documents, files or chains. `skip_bad_files` leaves unreadable files out
    (counted in the log) instead of stopping.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 500
    shuffle_seed: int = 0
    prefetch: NonNegativeInt = 2
    test_fraction: float = Field(default=0.05, gt=0.0, lt=1.0)
    skip_bad_files: bool = False
    flatten: bool = False
    image: ImageData | None = None
    text: TextData | None = None
    audio: AudioData | None = None
    protein: ProteinData | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _sections_of_the_modality(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        dataset = values.get("dataset", cls.model_fields["dataset"].default)
        modality = dataset_registry.dataset_spec(dataset).modality
        for key in [k for k in values if k not in cls.model_fields]:
            if key not in _FLAT_FIELDS:
                raise ValueError(
                    f"data has no field {key!r}; fields: {', '.join(f for f in cls.model_fields if f not in DATA_SECTIONS)}"
                    f", and the sections {', '.join(f'data.{m}' for m in DATA_SECTIONS)}"
                )
            value, moved = values.pop(key), _FLAT_FIELDS[key]
            if modality in moved:
                section = values.get(modality)
                section = dict(section.model_dump() if isinstance(section, pydantic.BaseModel) else section or {})
                if moved[modality] in section and section[moved[modality]] != value:
                    raise ValueError(f"data.{key}={value!r} and data.{modality}.{moved[modality]}="
                                     f"{section[moved[modality]]!r} disagree; keep data.{modality}.{moved[modality]}")
                section[moved[modality]] = value
                values[modality] = section
            elif value != (default := next(DATA_SECTIONS[m].model_fields[f].default for m, f in moved.items())):
                where = " or ".join(f"data.{m}.{f}" for m, f in moved.items())
                raise ValueError(f"data.{key}={value!r} (now {where}) does not apply to data.dataset {dataset!r}, "
                                 f"{_a(modality)} dataset (it must stay {default!r})")
        for name, section in DATA_SECTIONS.items():
            value = values.get(name)
            if name == modality:
                values[name] = {} if value is None else value
            elif value is not None:
                changed = _non_defaults(name, section, value)
                if changed:
                    field, setting = next(iter(changed.items()))
                    raise ValueError(
                        f"data.{name}.{field}={setting!r} is set, but data.dataset {dataset!r} is {_a(modality)} dataset; "
                        f"data.{name} applies to {name} datasets ({', '.join(dataset_registry.registered_datasets(name))})"
                    )
                values.pop(name)  # Only defaults: says nothing about this dataset.
        return values

    @pydantic.model_validator(mode="after")
    def _modality_fields(self) -> "DataConfiguration":
        spec = dataset_registry.dataset_spec(self.dataset)
        if spec.needs_data_dir and self.data_dir is None:
            raise ValueError(f"data.dataset {self.dataset!r} reads local files: set data.data_dir (or --data_dir)")
        for name in DATA_SECTIONS:
            if name == spec.modality and getattr(self, name) is None:
                raise ValueError(f"data.dataset {self.dataset!r} is {_a(name)} dataset: set data.{name}")
            if name != spec.modality and getattr(self, name) is not None:
                raise ValueError(f"data.{name} applies to {name} datasets, not to data.dataset {self.dataset!r} "
                                 f"({_a(spec.modality)} dataset): leave it unset")
        if spec.modality in ("text", "audio") and getattr(self, spec.modality).sequence_length is None:
            what = "tokens per row" if spec.modality == "text" else "samples per crop"
            raise ValueError(f"data.dataset {self.dataset!r} needs data.{spec.modality}.sequence_length ({what})")
        return self

    @property
    def modality(self) -> str:
        """The modality `dataset` is registered with: "image", "vector", "text", "audio" or "protein"."""
        return dataset_registry.dataset_spec(self.dataset).modality

    @property
    def binarize(self) -> str:
        """How batches are binarized (`BatchPipeline(binarize=...)`): `image.binarize`, "none" for other modalities."""
        return self.image.binarize if self.image is not None else "none"


class EvaluationConfiguration(_Configuration):
    """Test-set evaluation of a training run (`config.eval` of the train binary).

    Attributes:
      likelihood_samples: the `num_samples` of the models' `log_prob`:
        importance samples (VAE), timesteps (diffusion), AIS chains (EBM),
        dequantization draws (flows); None leaves each model its own default.
      final_eval: estimate the test-set likelihood at the end of the run
        (`final_metrics.json`).
      test_binarize: how test images are binarized when the training data is
        ("fixed": once, with a seed, so every evaluation sees the same set).
      max_test_batches: evaluate the final likelihood on at most this many
        test batches (None: the whole test set).
      every_steps: test likelihood every this many steps during training, on
        `training.eval_batches` test batches (None: off).
      sample_quality_every: FID/KID/PRDC of `sample_quality_samples` samples
        every this many steps (None: off).
    """

    likelihood_samples: PositiveInt | None = None
    final_eval: bool = True
    test_binarize: Literal["none", "dynamic", "fixed"] = "fixed"
    max_test_batches: PositiveInt | None = None
    every_steps: PositiveInt | None = None
    sample_quality_every: PositiveInt | None = None
    sample_quality_samples: PositiveInt = 1000
