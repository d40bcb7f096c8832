"""Adam steps on a model's own loss, for model tests that check a family learns.

A model test asks whether the family learns (a loss falls, a likelihood reaches
its closed form), not how runs are managed, so it needs no trainer target: this
runs `model.loss_fn(batch, model(batch["x"], rngs=...))` in one compiled step
(`nnx.jit`, the model and optimizer updated in place, including non-parameter
state such as ActNorm's initialised flags or an EBM's replay buffer) with
optax's Adam (Kingma & Ba 2014, arXiv:1412.6980).
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np
import optax
from flax import nnx

__all__ = ["adam_steps"]


def adam_steps(
    model: nnx.Module,
    batches: Iterable[dict[str, Any]],
    *,
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Trains `model` in place, one Adam step per batch, and returns each step's metrics.

    Args:
      model: an unconditional model with `__call__(x, *, rngs) -> dict` and
        `loss_fn(batch, outputs) -> dict` holding a scalar `"loss"`.
      batches: dicts with `"x"` `[B, *input_shape]` (other keys reach `loss_fn`).
      learning_rate, b1: Adam's step size and first-moment decay.
      seed: step i draws its randomness from `fold_in(key(seed), i)`.

    Returns:
      One dict per step: the `loss_fn` metrics as floats.
    """
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate, b1=b1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch, key):
        def loss(m):
            metrics = m.loss_fn(batch, m(batch["x"], rngs=nnx.Rngs(key)))
            return metrics["loss"], metrics

        (_, metrics), grads = nnx.value_and_grad(loss, has_aux=True)(model)
        optimizer.update(model, grads)
        return metrics

    key = jax.random.key(seed)
    history = [step(model, optimizer, batch, jax.random.fold_in(key, i)) for i, batch in enumerate(batches)]
    return [{name: float(np.asarray(value)) for name, value in metrics.items()} for metrics in jax.device_get(history)]
