"""Restoring a trained workdir and writing samples (PNG grid + .npy)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from flax import nnx

from workshop.models.factories import create_model
from workshop.train.checkpointing import Checkpointer
from workshop.train.experiment import ExperimentConfig, load_experiment_config
from workshop.train.image_grid import save_sample_picture
from workshop.train.trainer import Trainer, TrainState

__all__ = ["restore_workdir", "write_samples"]


def restore_workdir(
    workdir: str | pathlib.Path, *, step: int | None = None
) -> tuple[ExperimentConfig, Trainer, TrainState, dict[str, Any]]:
    """Rebuilds the model of a workdir from its config.json and restores a checkpoint.

    Returns:
      `(config, trainer, state, checkpoint_record)`.
    """
    workdir = pathlib.Path(workdir)
    cfg = load_experiment_config(workdir)
    trainer = Trainer(create_model(cfg.model, rngs=nnx.Rngs(cfg.training.seed)), cfg.training)
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.training.keep_checkpoints)
    try:
        state, record = checkpointer.restore(trainer.init_state(), step=step, model_config=cfg.model.to_dict())
    finally:
        checkpointer.close()
    return cfg, trainer, state, record


def write_samples(
    trainer: Trainer,
    state: TrainState,
    output_dir: str | pathlib.Path,
    *,
    num_samples: int,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> dict[str, pathlib.Path]:
    """Draws samples with the EMA parameters and writes `samples.npy` (+ `samples.png` for images and 2-D points)."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    samples = trainer.generate(state, num_samples, seed=seed, labels=labels)
    paths = {"npy": output_dir / "samples.npy"}
    np.save(paths["npy"], samples)
    picture = save_sample_picture(samples, output_dir / "samples.png")
    if picture is not None:
        paths["png"] = picture
    return paths
