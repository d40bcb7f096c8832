"""Two-stage runs: the second stage reads the first from its workdir.

Importing this module installs `load_autoencoder` as the loader of
`workshop.models.latent` (models must not import the training code), so
`create_model` can build a "latent" model from
`parameters.autoencoder_workdir`. The first stage is restored with
`sampling.restore_workdir`, the code the sample binary uses, with its EMA
weights.

`prepare_two_stage` runs before a second stage is built for training: it
checks the first stage against the data, estimates the latent scale once,
and records in the configuration (hence in config.json and in every
checkpoint's record) the first stage's checkpoint directory and the SHA-256
of its weights. A resumed run, or the sample binary, that finds another
first stage there refuses it (`StageOneChangedError`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import numpy as np

from workshop.core.paths import user_path
from workshop.core.protocols import Autoencoder
from workshop.models.latent import LatentParameters, StageOne, StageOneChangedError, content_hash
from workshop.models.latent import estimate_latent_scale, load_stage_one, set_stage_one_loader

__all__ = ["load_autoencoder", "prepare_two_stage"]

_log = logging.getLogger(__name__)
_SCALE_BATCH = 256
# (workdir, step, the step directory's mtime) -> StageOne: a first stage is read once per process.
_cache: dict[tuple[str, int, int], StageOne] = {}


def _steps(checkpoints: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit() and p.is_dir())


def load_autoencoder(workdir: str, checkpoint: str | None = None) -> StageOne:
    """The trained autoencoder of `workdir` (its newest checkpoint, or the directory `checkpoint`).

    Raises:
      FileNotFoundError: no such workdir, no checkpoint in it, or the recorded
        checkpoint is gone (each message names the path).
      ValueError: the workdir's model is not an autoencoder.
    """
    from workshop.train.sampling import restore_workdir  # sampling imports the experiment, which imports this

    path = user_path(workdir).absolute()
    what = f"autoencoder_workdir {workdir!r}"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {path} is not a workdir written by //workshop/train:train (no config.json); "
                                "train the first stage there first")
    if checkpoint is None:
        steps = _steps(path / "checkpoints")
        if not steps:
            raise FileNotFoundError(f"{what}: {path} has no checkpoint yet; train the first stage there first")
        step = steps[-1]
    else:
        step_dir = pathlib.Path(checkpoint)
        if not step_dir.name.isdigit() or not step_dir.is_dir():
            raise FileNotFoundError(f"{what}: the first-stage checkpoint {checkpoint} recorded for this model is gone "
                                    f"(have steps {_steps(path / 'checkpoints')}); retrain the second stage")
        step = int(step_dir.name)
    step_dir = path / "checkpoints" / str(step)
    key = (str(path), step, step_dir.stat().st_mtime_ns)
    if key not in _cache:
        cfg, trainer, state, record = restore_workdir(path, step=step)
        model = trainer.model_from_state(state)
        if not isinstance(model, Autoencoder):
            raise ValueError(f"{what}: its model_type {cfg.model.model_type!r} is not an autoencoder (no "
                             "encode_codes/decode_codes); train a vae, beta-vae or vqvae as the first stage")
        _cache[key] = StageOne(model, str(step_dir), content_hash(model), cfg.model.model_type)
    return _cache[key]


set_stage_one_loader(load_autoencoder)


def _recorded_parameters(workdir: pathlib.Path) -> dict[str, Any]:
    """The model parameters of the workdir's config.json (a resumed run), or {}."""
    path = workdir / "config.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("model", {}).get("parameters", {}))


def prepare_two_stage(cfg, workdir: str | pathlib.Path, train_source: dict[str, Any]):
    """The experiment's configuration with its first stage resolved and recorded; others unchanged.

    Args:
      cfg: an `experiment.ExperimentConfig`.
      workdir: the second stage's workdir (its config.json, if any, holds what a
        previous run recorded).
      train_source: the training arrays, `{"x": [N, *input_shape], ...}`.

    Returns:
      `cfg` with `autoencoder_workdir` made absolute and `autoencoder_checkpoint`,
      `autoencoder_hash` and (continuous codes) `latent_scale` filled in.

    Raises:
      ValueError: no autoencoder_workdir, or the data's shape is not the first stage's.
      StageOneChangedError: the first stage differs from the one recorded.
    """
    params = cfg.model.typed_parameters()
    if not isinstance(params, LatentParameters):
        return cfg
    if params.autoencoder_workdir is None:
        raise ValueError("model_type 'latent' needs --config.model.parameters.autoencoder_workdir: the workdir of "
                         "a trained autoencoder")
    recorded = _recorded_parameters(pathlib.Path(workdir))
    stage = load_stage_one(params.autoencoder_workdir,
                           params.autoencoder_checkpoint or recorded.get("autoencoder_checkpoint"))
    expected = params.autoencoder_hash or recorded.get("autoencoder_hash")
    if expected is not None and expected != stage.content_hash:
        raise StageOneChangedError(
            f"the first stage {stage.checkpoint} has changed since {workdir} was trained on it (weights hash "
            f"{stage.content_hash[:16]}..., recorded {expected[:16]}...); retrain the second stage in a new workdir")
    autoencoder = stage.model
    data_shape = tuple(np.shape(train_source["x"])[1:])
    if data_shape != tuple(autoencoder.input_shape):
        raise ValueError(f"the data's examples have shape {data_shape} but the first stage in "
                         f"{params.autoencoder_workdir} ({stage.model_type}) takes {tuple(autoencoder.input_shape)}")
    scale = params.latent_scale or recorded.get("latent_scale")
    if scale is None and not autoencoder.discrete_codes:
        x = train_source["x"][: params.scale_examples]
        scale = estimate_latent_scale(autoencoder, (x[i:i + _SCALE_BATCH] for i in range(0, len(x), _SCALE_BATCH)))
        _log.info("latent_scale %.6g: the codes of %d training examples have std %.6g", scale, len(x), 1.0 / scale)
    updated = {
        **cfg.model.parameters,
        "autoencoder_workdir": str(user_path(params.autoencoder_workdir).absolute()),
        "autoencoder_checkpoint": stage.checkpoint,
        "autoencoder_hash": stage.content_hash,
    }
    if scale is not None:
        updated["latent_scale"] = float(scale)
    model = cfg.model.model_validate({**cfg.model.to_dict(), "parameters": updated})
    return dataclasses.replace(cfg, model=model)
