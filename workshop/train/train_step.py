"""One train step of a `TrainingObjective`: the pure function the `Trainer` compiles.

`TrainStep(state, batch) -> (state, metrics)` merges the model's graph with
the state's arrays inside the trace, runs the objective's updates in order
(an update that repeats in a `lax.scan`, each repetition on its own part of
the batch), each with its parameter group's optax optimizer, then the
parameter EMA; a NaN/Inf metric drops the whole step (`bad_steps`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from workshop.core.device_manager import PrecisionPolicy
from workshop.core.protocols import TrainingObjective
from workshop.data.pipeline import model_input
from workshop.train.bad_steps import skip_nonfinite_update
from workshop.train.distributed import MeshSharding
from workshop.train.loss_scaling import DynamicLossScale, scaled_value_and_grad

__all__ = ["ParameterGroups", "TrainState", "TrainStep"]

Batch = dict[str, Any]


@struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree.

    With one parameter group (most models) `params`, `opt_state` and
    `ema_params` are that group's; with several (a GAN's generator and
    discriminator) they are dicts keyed by group name, `ema_params` holding
    the averaged groups only.

    Attributes:
      step: int32 scalar, number of completed train steps.
      params: `nnx.State` of the model's `nnx.Param`s (per group).
      rest: `nnx.State` of every other model variable (batch statistics,
        codebook EMAs, power-iteration vectors, ...), updated by the passes.
      opt_state: optax state (per group).
      ema_params: exponential moving average of `params` (None without EMA).
      rng: uint32[2] base key; step t uses `fold_in(rng, t)`.
      loss_scale: `{"scale", "good_steps"}` of float16 training's dynamic
        loss scaling (`workshop.train.loss_scaling`); None otherwise.
      ema_rest: the variables of `rest` the averaged model keeps of its own
        (the objective's `averaged_statistics`), or None.
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    loss_scale: Any = None
    ema_rest: Any = None

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_checkpoint(cls, tree: dict[str, Any]) -> "TrainState":
        return cls(**{f.name: tree.get(f.name) for f in dataclasses.fields(cls)})


class ParameterGroups:
    """Where an objective's parameter groups live in the state and in the model.

    With one group (most models) the state holds that group's values
    directly; with several, dicts keyed by group name.
    """

    def __init__(self, objective: TrainingObjective):
        self.names = tuple(g.name for g in objective.groups)
        self.filters = tuple(g.filter for g in objective.groups)
        self.averaged = [g.name for g in objective.groups if g.averaged]
        self.prefix = {g.name: g.metric_prefix for g in objective.groups}

    def split(self, model: nnx.Module) -> tuple[Any, dict[str, Any], Any]:
        """`(graphdef, {group: params}, rest)` of `model`."""
        graphdef, *groups, rest = nnx.split(model, *self.filters, ...)
        return graphdef, dict(zip(self.names, groups)), rest

    def rest_of(self, model: nnx.Module) -> Any:
        """The variables of `model` that are no group's parameters."""
        return nnx.split(model, *self.filters, ...)[-1]

    def pack(self, per_group: dict[str, Any]) -> Any:
        """The state's form of per-group values: the value itself for a single group, else the dict."""
        return per_group[self.names[0]] if len(self.names) == 1 else per_group

    def unpack(self, packed: Any) -> dict[str, Any]:
        return {self.names[0]: packed} if len(self.names) == 1 else dict(packed)

    def merge(self, graphdef, params: dict[str, Any], rest) -> nnx.Module:
        return nnx.merge(graphdef, *(params[n] for n in self.names), rest, copy=True)


@dataclasses.dataclass(frozen=True)
class _Context:
    """The `UpdateContext` of one update."""

    key: jax.Array
    mesh_sharding: MeshSharding | None

    def split_examples(self, x: jax.Array) -> jax.Array:
        return x if self.mesh_sharding is None else self.mesh_sharding.split_examples(x, 0)


class TrainStep:
    """`(state, batch) -> (state, metrics)` for `objective`; pure, compiled once by the `Trainer`.

    Args:
      objective: the model's `TrainingObjective`.
      groups: its `ParameterGroups`.
      graphdef (nnx.GraphDef): the training-mode model's graph (in the
        compute dtype under mixed precision).
      optimizers: each group's optax optimizer.
      schedules: each group's learning rate schedule.
      policy: the precision policy; parameters are cast to its compute dtype
        for the passes.
      loss_scale: float16's dynamic loss scaling, or None.
      ema_decay: the EMA's decay, or None.
      mesh_sharding: the run's mesh, or None.
    """

    def __init__(self, objective: TrainingObjective, groups: ParameterGroups, graphdef, *, optimizers: dict[str, Any],
                 schedules: dict[str, Any], policy: PrecisionPolicy, loss_scale: DynamicLossScale | None,
                 ema_decay: float | None, mesh_sharding: MeshSharding | None):
        self.objective, self.groups, self.graphdef = objective, groups, graphdef
        self.optimizers, self.schedules, self.policy = optimizers, schedules, policy
        self.loss_scale, self.ema_decay, self.mesh_sharding = loss_scale, ema_decay, mesh_sharding
        self.chunks = max(u.repeat for u in objective.updates)

    def _gradients(self, update, params: dict[str, Any], rest, part: Batch, context: _Context, scale_state):
        """`(metrics, new rest), grads, finite` of one update on `part`, with the other groups fixed."""
        policy = self.policy

        def loss_fn(group_params):
            current = {**params, update.group: group_params}
            if policy.is_mixed:  # float32 master weights, cast for the passes (Micikevicius et al. 2018)
                current = jax.tree.map(policy.cast_to_compute, current)
            model = self.groups.merge(self.graphdef, current, rest)
            loss, metrics = update.loss(model, part, context)
            # Running statistics keep their dtypes (a low-precision pass may change them).
            new_rest = jax.tree.map(lambda new, old: new.astype(old.dtype), self.groups.rest_of(model), rest)
            return loss, (metrics, new_rest)

        (_, aux), grads, finite = scaled_value_and_grad(loss_fn, self.loss_scale, scale_state, has_aux=True)(
            params[update.group])
        return aux, grads, finite

    def _with_norm(self, update, metrics, grads, finite, step) -> dict[str, jax.Array]:
        prefix = self.groups.prefix[update.group]
        norm = optax.tree.norm(grads)
        return {**metrics, f"{prefix}grad_norm": norm if self.loss_scale is None else jnp.where(finite, norm, 0.0),
                f"{prefix}learning_rate": self.schedules[update.group](step)}

    def _parts(self, batch: Batch) -> Batch:
        """The batch as `[chunks, m, ...]`: repetition i of an update sees part i (split over the mesh)."""
        b, r = int(batch["x"].shape[0]), self.chunks
        name = max(self.objective.updates, key=lambda u: u.repeat).name
        if b % r:
            raise ValueError(f"each train step makes {r} {name!r} updates, each on its own part of the batch: set "
                             f"data.batch_size to a multiple of {r} (got {b})")
        devices = 1 if self.mesh_sharding is None else self.mesh_sharding.num_devices
        if (b // r) % devices:
            raise ValueError(f"each train step makes {r} {name!r} updates on parts of {b // r} examples, split over "
                             f"{devices} devices: set data.batch_size to a multiple of {r * devices}")
        parts = {k: v.reshape(r, b // r, *v.shape[1:]) for k, v in batch.items()}
        if self.mesh_sharding is not None:
            parts = {k: self.mesh_sharding.split_examples(v, 1) for k, v in parts.items()}
        return parts

    def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        step_key = jax.random.fold_in(state.rng, state.step)
        batch = {**batch, "x": model_input(batch["x"])}  # uint8 images cross to the device as uint8
        *earlier, last = self.objective.updates
        one_pass = not earlier
        parts = None if one_pass else self._parts(batch)
        params, opt_state, rest = self.groups.unpack(state.params), self.groups.unpack(state.opt_state), state.rest
        scaler, scale_state = self.loss_scale, state.loss_scale
        metrics, finites, index = {}, [], 0

        def key(i):  # a step of one update uses the step's key itself
            return step_key if one_pass else jax.random.fold_in(step_key, i)

        for update in earlier:  # applied at once; a bad step discards them with the rest below
            tx = self.optimizers[update.group]

            def repetition(carry, xs, update=update, tx=tx):
                group_params, group_opt, rest = carry
                part, i = xs
                (m, new_rest), grads, finite = self._gradients(
                    update, {**params, update.group: group_params}, rest, part, _Context(key(i), self.mesh_sharding),
                    scale_state)
                updates, new_opt = tx.update(grads, group_opt, group_params)
                new = (optax.apply_updates(group_params, updates), new_opt, new_rest)
                if scaler is not None:  # an overflowing float16 update is not applied
                    new = optax.tree.where(finite, new, carry)
                return new, (self._with_norm(update, m, grads, finite, state.step), finite)

            xs = (jax.tree.map(lambda v: v[:update.repeat], parts), index + jnp.arange(update.repeat))
            (params[update.group], opt_state[update.group], rest), (m, finite) = jax.lax.scan(
                repetition, (params[update.group], opt_state[update.group], rest), xs)
            metrics.update({name: jnp.mean(value) for name, value in m.items()})
            finites.append(jnp.all(finite))
            index += update.repeat

        part = batch if parts is None else jax.tree.map(lambda v: v[0], parts)
        context = _Context(key(index), self.mesh_sharding)
        (m, rest), grads, finite = self._gradients(last, params, rest, part, context, scale_state)
        metrics.update(self._with_norm(last, m, grads, finite, state.step))
        loss_scale, all_good = state.loss_scale, None
        if scaler is not None:
            # One overflowing update voids the whole step (those after it depend on it): only the
            # scale (halved) and the step count change.
            all_good = jnp.all(jnp.stack([*finites, finite]))
            loss_scale = scaler.adjust(scale_state, all_good)
            metrics.update(grads_finite=all_good.astype(jnp.float32), loss_scale=scale_state["scale"])

        def apply(old, grads, changed_params, changed_opt, rest):
            params, opt_state, group = {**old["params"], **changed_params}, {**old["opt"], **changed_opt}, last.group
            updates, opt_state[group] = self.optimizers[group].update(grads, opt_state[group], params[group])
            params[group] = optax.apply_updates(params[group], updates)
            ema, ema_rest = old["ema"], old["ema_rest"]
            if ema is not None:
                # Warm-up of the EMA (as in TF's ExponentialMovingAverage with num_updates):
                # early averages do not drag in the random initialisation for long.
                decay = jnp.minimum(self.ema_decay, (1.0 + state.step) / (10.0 + state.step))
                ema = {n: optax.incremental_update(params[n], ema[n], step_size=1.0 - decay) for n in ema}
                if ema_rest is not None:
                    ema_rest = self._refresh_averaged(params, ema, rest, ema_rest, part, context)
            return {"params": params, "opt": opt_state, "rest": rest, "ema": ema, "ema_rest": ema_rest}

        # NaN guard: a NaN/Inf loss, metric or gradient norm drops the whole step (`bad_steps`), the
        # earlier updates' results included; the step (the data position) and the loss scale still advance.
        groups = self.groups
        old = {"params": groups.unpack(state.params), "opt": groups.unpack(state.opt_state), "rest": state.rest,
               "ema": None if state.ema_params is None else groups.unpack(state.ema_params),
               "ema_rest": state.ema_rest}
        changed = {u.group for u in earlier}
        new, metrics = skip_nonfinite_update(metrics, apply, old, grads, {n: params[n] for n in changed},
                                             {n: opt_state[n] for n in changed}, rest, finite=all_good)
        return state.replace(
            step=state.step + 1, params=groups.pack(new["params"]), rest=new["rest"],
            opt_state=groups.pack(new["opt"]), ema_params=None if new["ema"] is None else groups.pack(new["ema"]),
            loss_scale=loss_scale, ema_rest=new["ema_rest"]), metrics

    def _refresh_averaged(self, params, ema, rest, ema_rest, part: Batch, context: _Context):
        """The averaged model's own running statistics after one training-mode pass (the objective's)."""
        current = {n: ema.get(n, params[n]) for n in self.groups.names}
        if self.policy.is_mixed:
            current = jax.tree.map(self.policy.cast_to_compute, current)
        model = self.groups.merge(self.graphdef, current, nnx.merge_state(rest, ema_rest))
        self.objective.refresh_averaged_statistics(model, part, context)
        new = nnx.filter_state(self.groups.rest_of(model), self.objective.averaged_statistics)
        return jax.tree.map(lambda new, old: new.astype(old.dtype), new, ema_rest)

