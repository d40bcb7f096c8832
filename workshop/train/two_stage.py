"""Two-stage runs: the second stage reads the first from its workdir.

Importing this module installs `load_autoencoder` as the loader of
`workshop.models.latent` (models must not import the training code), so
`create_model` can build a "latent" model from
`parameters.autoencoder_workdir`. The first stage is restored with
`experiment.restore_workdir`, the code the sample binary uses, with its EMA
weights (`workshop.train.upstream`).

`prepare_two_stage` runs before a second stage is built for training: it
checks the first stage against the data, estimates the latent scale once,
and records in the configuration (hence in config.json and in every
checkpoint's record) the first stage's workdir, checkpoint directory and the
SHA-256 of its weights (`Upstream.record`). A resumed run, or the sample
binary, that finds a first stage with other weights refuses it
(`StageOneChangedError`); a copy of its workdir elsewhere is the same first
stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import numpy as np

from workshop.core.protocols import Autoencoder
from workshop.models.latent import LatentParameters, StageOne, StageOneChangedError
from workshop.models.latent import estimate_latent_scale, set_stage_one_loader
from workshop.train.upstream import Upstream, check_unchanged, find_upstream, restore_upstream

__all__ = ["load_autoencoder", "prepare_two_stage"]

_log = logging.getLogger(__name__)
_SCALE_BATCH = 256
_FIELD, _ROLE = "autoencoder_workdir", "first stage"
# (workdir, step, the step directory's mtime) -> Upstream: a first stage is read once per process.
_cache: dict[tuple[str, int, int], Upstream] = {}


def _first_stage(workdir: str, checkpoint: str | None = None) -> Upstream:
    """The trained autoencoder of `workdir` (its newest checkpoint, or the step of the directory `checkpoint`).

    Raises:
      FileNotFoundError: no such workdir, no checkpoint in it, or the recorded
        checkpoint's step is gone (each message names the path).
      ValueError: the workdir's model is not an autoencoder.
    """
    from workshop.train.experiment import restore_workdir  # the experiment imports this module

    path, steps = find_upstream(workdir, field=_FIELD, role=_ROLE)
    if checkpoint is None:
        step = steps[-1]
    else:
        name = pathlib.Path(checkpoint).name
        if not name.isdigit() or int(name) not in steps:
            raise FileNotFoundError(f"{_FIELD} {workdir}: the first-stage checkpoint {checkpoint} recorded for this "
                                    f"model is gone ({path} has steps {steps}); retrain the second stage")
        step = int(name)
    key = (str(path), step, (path / "checkpoints" / str(step)).stat().st_mtime_ns)
    if key not in _cache:
        stage = restore_upstream(path, step, field=_FIELD, role=_ROLE, restore=restore_workdir)
        if not isinstance(stage.model, Autoencoder):
            raise ValueError(f"{_FIELD} {workdir}: its model_type {stage.config.model.model_type!r} is not an "
                             "autoencoder (no encode_codes/decode_codes); train a vae, beta-vae or vqvae as the "
                             "first stage")
        _cache[key] = stage
    return _cache[key]


def load_autoencoder(workdir: str, checkpoint: str | None = None) -> StageOne:
    """The trained autoencoder of `workdir` (its newest checkpoint, or the directory `checkpoint`).

    The loader of `workshop.models.latent` (`set_stage_one_loader`).

    Raises:
      FileNotFoundError: no such workdir, no checkpoint in it, or the recorded
        checkpoint is gone (each message names the path).
      ValueError: the workdir's model is not an autoencoder.
    """
    stage = _first_stage(workdir, checkpoint)
    return StageOne(stage.model, str(stage.checkpoint), stage.sha256, stage.config.model.model_type)


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
      StageOneChangedError: the first stage's weights differ from the ones recorded.
    """
    params = cfg.model.typed_parameters()
    if not isinstance(params, LatentParameters):
        return cfg
    if params.autoencoder_workdir is None:
        raise ValueError("model_type 'latent' needs --config.model.parameters.autoencoder_workdir: the workdir of "
                         "a trained autoencoder")
    recorded = _recorded_parameters(pathlib.Path(workdir))
    checkpoint = params.autoencoder_checkpoint or recorded.get("autoencoder_checkpoint")
    stage = _first_stage(params.autoencoder_workdir, checkpoint)
    check_unchanged(stage, recorded_checkpoint=checkpoint,
                    recorded_hash=params.autoencoder_hash or recorded.get("autoencoder_hash"),
                    since=f"{workdir} was trained on it", remedy="retrain the second stage in a new workdir",
                    error=StageOneChangedError)
    autoencoder = stage.model
    data_shape = tuple(np.shape(train_source["x"])[1:])
    if data_shape != tuple(autoencoder.input_shape):
        raise ValueError(f"the data's examples have shape {data_shape} but the first stage in "
                         f"{params.autoencoder_workdir} ({stage.config.model.model_type}) takes "
                         f"{tuple(autoencoder.input_shape)}")
    scale = params.latent_scale or recorded.get("latent_scale")
    if scale is None and not autoencoder.discrete_codes:
        x = train_source["x"][: params.scale_examples]
        scale = estimate_latent_scale(autoencoder, (x[i:i + _SCALE_BATCH] for i in range(0, len(x), _SCALE_BATCH)))
        _log.info("latent_scale %.6g: the codes of %d training examples have std %.6g", scale, len(x), 1.0 / scale)
    updated = {**cfg.model.parameters, **stage.record("autoencoder")}
    if scale is not None:
        updated["latent_scale"] = float(scale)
    model = cfg.model.model_validate({**cfg.model.to_dict(), "parameters": updated})
    return dataclasses.replace(cfg, model=model)
