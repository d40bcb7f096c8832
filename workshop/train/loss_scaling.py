"""Dynamic loss scaling for float16 training (Micikevicius et al. 2018, arXiv:1710.03740).

float16 flushes gradients below ~6e-8 to zero, so the loss is multiplied by a
scale S before differentiation and the gradients divided by S afterwards. S
is kept as large as the float16 range allows: a step whose gradients overflow
(any Inf or NaN) is skipped and S halved; after `period` finite steps in a row
S doubles. The state is two scalars in the `TrainState`, so checkpoints carry
it and a resumed run continues with the same scale. `scaled_value_and_grad`
is `jax.value_and_grad` through the scale, with or without it, so a train
step is written once for every precision.

Written here because no maintained JAX library provides it: optax 0.2.8 and
Flax 0.12 have none, and DeepMind's `jmp` (its `DynamicLossScale` is the same
algorithm) has had no release since 0.0.4 in January 2023.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["DynamicLossScale", "all_finite", "scaled_value_and_grad"]


def all_finite(tree: Any) -> jax.Array:
    """bool scalar: every element of every array leaf of `tree` is finite."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]).all()


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """The rule (static); its state is `{"scale": f32 [], "good_steps": int32 []}`.

    Args:
      initial_scale: S at step 0 (2**15 as in the paper and NVIDIA's apex).
      period: finite steps in a row after which S doubles.
      factor: the growth and backoff factor.
      min_scale: S never falls below this.
    """

    initial_scale: float = 2.0**15
    period: int = 2000
    factor: float = 2.0
    min_scale: float = 1.0

    def __post_init__(self):
        if not self.initial_scale > 0 or self.period < 1 or not self.factor > 1 or not self.min_scale > 0:
            raise ValueError(
                f"DynamicLossScale needs initial_scale > 0, period >= 1, factor > 1, min_scale > 0; got {self}"
            )

    @classmethod
    def from_config(cls, config) -> "DynamicLossScale | None":
        """The rule of a `TrainingConfiguration`: float16 training's, None for other precisions."""
        if config.precision != "float16":
            return None
        return cls(initial_scale=config.loss_scale_init, period=config.loss_scale_period)

    def init(self) -> dict[str, jax.Array]:
        return {"scale": jnp.asarray(self.initial_scale, jnp.float32), "good_steps": jnp.zeros((), jnp.int32)}

    def scale(self, state: dict[str, jax.Array], loss: jax.Array) -> jax.Array:
        """`loss * S`, in float32."""
        return loss.astype(jnp.float32) * state["scale"]

    def unscale(self, state: dict[str, jax.Array], grads: Any) -> Any:
        """Gradients of the scaled loss divided by S (leaves keep their dtypes)."""
        inverse = 1.0 / state["scale"]
        return jax.tree.map(lambda g: (g * inverse).astype(g.dtype), grads)

    def adjust(self, state: dict[str, jax.Array], grads_finite: jax.Array) -> dict[str, jax.Array]:
        """The state after a step whose gradients were (not) all finite."""
        grown = state["good_steps"] + 1 >= self.period
        scale = jnp.where(
            grads_finite,
            jnp.where(grown, state["scale"] * self.factor, state["scale"]),
            jnp.maximum(state["scale"] / self.factor, self.min_scale),
        )
        good = jnp.where(grads_finite & ~grown, state["good_steps"] + 1, 0)
        return {"scale": scale.astype(jnp.float32), "good_steps": good.astype(jnp.int32)}


def scaled_value_and_grad(
    fun: Callable[..., Any], scaler: DynamicLossScale | None, scale_state: dict[str, jax.Array] | None, *,
    has_aux: bool = False,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """`jax.value_and_grad(fun)` with the loss scaled by S before differentiation.

    Args:
      fun: `(params, *args) -> loss` (`(loss, aux)` with `has_aux`); the loss
        a float scalar, differentiated with respect to the first argument.
      scaler: the rule, or None for no scaling (float32 and bfloat16).
      scale_state: the `TrainState.loss_scale` of this step (None without `scaler`).
      has_aux: as in `jax.value_and_grad`.

    Returns:
      A function of `fun`'s arguments giving `(value, grads, finite)`: `value`
      is what `fun` returned (the loss unscaled), `grads` are the gradients
      of the loss (divided by S again), and `finite` is a bool scalar, True
      when every gradient is finite (always True without `scaler`; the caller
      skips the update and calls `scaler.adjust` with it).
    """
    if scaler is None:
        plain = jax.value_and_grad(fun, has_aux=has_aux)

        def unscaled(*args):
            value, grads = plain(*args)
            return value, grads, jnp.array(True)

        return unscaled

    def scaled_fun(*args):
        out = fun(*args)
        loss = out[0] if has_aux else out
        return scaler.scale(scale_state, loss), out

    scaled = jax.value_and_grad(scaled_fun, has_aux=True)

    def wrapped(*args):
        (_, value), grads = scaled(*args)
        grads = scaler.unscale(scale_state, grads)
        return value, grads, all_finite(grads)

    return wrapped
