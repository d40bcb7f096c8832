"""The training objective a model is trained with: its own, or one gradient step on `loss_fn`.

Families whose step is more than one gradient step on one loss (GANs: critic
updates, then the generator's) implement `CustomObjective`
(`workshop.core.protocols`); every other model is trained by
`LossFunctionObjective`, built here from its `__call__` and `loss_fn`.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from workshop.core.device_manager import PrecisionPolicy
from workshop.core.protocols import (BatchInputs, ConditionalModel, CustomObjective, ParameterGroup,
                                     TrainingObjective, Update, UpdateContext)

__all__ = ["LossFunctionObjective", "call_inputs", "conditioning", "training_objective"]


def call_inputs(model: Any) -> tuple[bool, tuple[str, ...]]:
    """What of a batch `model.__call__` takes besides `x`: (labels?, other keys) from its protocols."""
    return isinstance(model, ConditionalModel), tuple(model.batch_inputs) if isinstance(model, BatchInputs) else ()


def conditioning(inputs: tuple[bool, tuple[str, ...]], batch: dict[str, Any]) -> dict[str, Any]:
    """The keywords of `model(batch["x"], ...)`: `labels` for a conditional model, the `batch_inputs` present."""
    conditional, keys = inputs
    out = {"labels": batch["label"]} if conditional else {}
    out.update({k: batch[k] for k in keys if k in batch})
    return out


class LossFunctionObjective:
    """One update of all parameters on `model.loss_fn(batch, model(x, rngs=..., **conditioning))["loss"]`.

    Under a mixed-precision policy the input `batch["x"]` is cast to the
    compute dtype and the forward pass's outputs back to float32 before
    `loss_fn` (Micikevicius et al. 2018, arXiv:1710.03740).

    Args:
      inputs: what of the batch the model takes besides `x` (`call_inputs`).
      policy: the precision policy of the train step.
    """

    groups = (ParameterGroup("params", nnx.Param),)
    averaged_statistics = None
    refresh_averaged_statistics = None

    def __init__(self, *, inputs: tuple[bool, tuple[str, ...]], policy: PrecisionPolicy):
        self.inputs = inputs
        self.policy = policy
        self.updates = (Update("loss_fn", "params", self.loss),)

    def loss(self, model, batch: dict[str, jax.Array], context: UpdateContext) -> tuple[jax.Array, dict]:
        mixed = self.policy.is_mixed
        x = self.policy.cast_to_compute(batch["x"]) if mixed else batch["x"]
        outputs = model(x, rngs=nnx.Rngs(context.key), **conditioning(self.inputs, batch))
        if mixed:
            outputs = jax.tree.map(self.policy.cast_to_output, outputs)
        metrics = model.loss_fn(batch, outputs)
        return metrics["loss"], metrics


def training_objective(model: Any, policy: PrecisionPolicy) -> TrainingObjective:
    """The model's own objective (`CustomObjective`), else a `LossFunctionObjective`.

    Raises:
      ValueError: the objective is malformed (names the group or update).
    """
    if isinstance(model, CustomObjective):
        objective = model.training_objective()
    else:
        objective = LossFunctionObjective(inputs=call_inputs(model), policy=policy)
    names = [g.name for g in objective.groups]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"a training objective needs parameter groups with distinct names, got {names}")
    if not objective.updates:
        raise ValueError("a training objective needs at least one update")
    for update in objective.updates:
        if update.group not in names:
            raise ValueError(f"update {update.name!r} changes group {update.group!r}, which is not one of {names}")
        if int(update.repeat) < 1:
            raise ValueError(f"update {update.name!r} must run at least once per step, got repeat={update.repeat}")
    if (objective.averaged_statistics is None) != (objective.refresh_averaged_statistics is None):
        raise ValueError("a training objective gives averaged_statistics and refresh_averaged_statistics together")
    if objective.updates[-1].repeat != 1:
        raise ValueError(f"the last update of a step ({objective.updates[-1].name!r}) must run once (repeat 1): "
                         "the step's NaN guard decides whether it is applied")
    return objective
