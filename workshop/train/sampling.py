"""Sampling a trained workdir (`restore_workdir`, from the experiment) and writing samples (PNG grid + .npy).

`write_samples` passes sampler options (`sampler`, `steps`, `guidance_scale`
for diffusion models) through to the model's `generate` when given, checking
first that the model's `generate` takes them.
"""

from __future__ import annotations

import inspect
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.protocols import SamplingOptions
from workshop.train.experiment import restore_workdir
from workshop.train.image_grid import save_sample_picture
from workshop.train.trainer import Trainer, TrainState, cycled_class_labels

__all__ = ["generate_with_options", "restore_workdir", "write_samples"]


def generate_with_options(
    trainer: Trainer,
    state: TrainState,
    num_samples: int,
    *,
    seed: int = 0,
    labels: np.ndarray | None = None,
    options: dict[str, Any],
) -> np.ndarray:
    """Like `trainer.generate` (EMA parameters, one compiled call) with extra `generate` keywords.

    Args:
      options: keyword arguments for the model's `generate`, e.g.
        `{"sampler": "ddim", "steps": 50}`.

    Returns:
      `[num_samples, *input_shape]` samples.

    Raises:
      ValueError: the model's `generate` does not take one of the options.
    """
    model = trainer.model_from_state(state)
    accepted = inspect.signature(model.generate).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"{type(model).__name__}.generate does not take {', '.join(unknown)}; "
                         f"it takes: {', '.join(k for k in accepted if k not in ('n_samples', 'rngs'))}")
    if trainer.conditional and labels is None:
        labels = cycled_class_labels(num_samples, model.num_classes)
    cond = {} if labels is None else {"labels": jnp.asarray(labels, jnp.int32)}
    # Validate eagerly (readable errors) before tracing: the checks run on Python values only.
    if isinstance(model, SamplingOptions):
        model.sampling_options(labels=cond.get("labels"), batch=num_samples, sampler=options.get("sampler"),
                               steps=options.get("steps"), guidance_scale=options.get("guidance_scale"))
    graphdef, model_state = nnx.split(model)

    @jax.jit
    def draw(model_state, key, cond):
        m = nnx.merge(graphdef, model_state, copy=True)
        return m.generate(n_samples=num_samples, rngs=nnx.Rngs(key), **cond, **options)

    return np.asarray(draw(model_state, jax.random.PRNGKey(seed), cond))


def write_samples(
    trainer: Trainer,
    state: TrainState,
    output_dir: str | pathlib.Path,
    *,
    num_samples: int,
    seed: int = 0,
    labels: np.ndarray | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, pathlib.Path]:
    """Draws samples with the EMA parameters and writes `samples.npy` (+ `samples.png` for images and 2-D points).

    Args:
      options: extra keywords for the model's `generate` (e.g. sampler, steps,
        guidance_scale); None or empty uses the model's defaults.
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if options:
        samples = generate_with_options(trainer, state, num_samples, seed=seed, labels=labels, options=options)
    else:
        samples = trainer.generate(state, num_samples, seed=seed, labels=labels)
    paths = {"npy": output_dir / "samples.npy"}
    np.save(paths["npy"], samples)
    picture = save_sample_picture(samples, output_dir / "samples.png")
    if picture is not None:
        paths["png"] = picture
    return paths
