"""Optax optimizers and learning-rate schedules from an `OptimizerConfiguration`."""

from __future__ import annotations

import optax

from workshop.core.configuration import OptimizerConfiguration

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(config: OptimizerConfiguration, num_steps: int) -> optax.Schedule:
    """The learning rate as a function of the step.

    Args:
      config: the optimizer configuration (`learning_rate`, `schedule`,
        `warmup_steps`, `final_lr_fraction`).
      num_steps: length of the run, over which cosine schedules decay.
    """
    peak = config.learning_rate
    if config.schedule == "constant":
        if config.warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, peak, config.warmup_steps), optax.constant_schedule(peak)],
                [config.warmup_steps],
            )
        return optax.constant_schedule(peak)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, max(num_steps, 1), alpha=config.final_lr_fraction)
    if config.warmup_steps >= num_steps:
        raise ValueError(
            f"optimizer.warmup_steps ({config.warmup_steps}) must be smaller than training.num_steps ({num_steps})"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=config.warmup_steps,
        decay_steps=num_steps,
        end_value=peak * config.final_lr_fraction,
    )


def make_optimizer(config: OptimizerConfiguration, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optax chain: optional global-norm clipping, then the optimizer.

    Returns:
      `(transformation, schedule)`; the schedule is returned so the trainer can
      log the learning rate of each step.
    """
    schedule = make_schedule(config, num_steps)
    if config.name == "adam":
        opt = optax.adam(schedule, b1=config.b1, b2=config.b2)
    elif config.name == "adamw":
        opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    elif config.name == "sgd":
        opt = optax.sgd(schedule, momentum=config.momentum or None)
    elif config.name == "rmsprop":
        opt = optax.rmsprop(schedule, momentum=config.momentum)
    elif config.name == "lamb":
        opt = optax.lamb(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    else:  # pragma: no cover - the configuration's Literal forbids this
        raise ValueError(f"optimizer {config.name!r} is unknown")
    if config.weight_decay and config.name in ("adam", "sgd", "rmsprop"):
        opt = optax.chain(optax.add_decayed_weights(config.weight_decay), opt)
    if config.grad_clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
    return opt, schedule
