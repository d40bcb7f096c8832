"""The Trainer: one compiled step for any `GenerativeModel`.

The model is split once into a static graph and array state
(`nnx.split(model, nnx.Param, ...)`). The train step is a single `jax.jit` of
a pure function over `TrainState` that merges the graph back inside the trace,
computes `model.loss_fn`, applies optax updates and the parameter EMA, and
donates the old state: no NNX graph traversal or Python work per step beyond
handing in the batch. Metrics stay on the device until a logging step.

The step's randomness is `fold_in(seed_key, step)`, so a run resumed from a
checkpoint draws exactly the numbers an uninterrupted run draws.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from workshop.core.configuration import TrainingConfiguration
from workshop.core.device_manager import apply_compute_dtype, check_precision_supported, precision_policy
from workshop.data.pipeline import model_input
from workshop.train.loss_scaling import DynamicLossScale, scaled_value_and_grad
from workshop.train.optimizers import make_optimizer, skip_nonfinite_update
from workshop.train.distributed import MeshSharding

__all__ = ["TrainState", "Trainer", "NonFiniteLossError", "cycled_class_labels"]

_log = logging.getLogger(__name__)

Batch = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
    """The loss or a metric became NaN/Inf; names the step."""


@struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree.

    Attributes:
      step: int32 scalar, number of completed train steps.
      params: `nnx.State` of the model's `nnx.Param`s.
      rest: `nnx.State` of every other model variable (batch statistics,
        codebook EMAs, ...), updated by the forward pass.
      opt_state: optax state.
      ema_params: exponential moving average of `params` (None without EMA).
      rng: uint32[2] base key; step t uses `fold_in(rng, t)`.
      loss_scale: `{"scale", "good_steps"}` of float16 training's dynamic
        loss scaling (`workshop.train.loss_scaling`); None otherwise.
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    loss_scale: Any = None

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_checkpoint(cls, tree: dict[str, Any]) -> "TrainState":
        return cls(**{f.name: tree.get(f.name) for f in dataclasses.fields(cls)})


def cycled_class_labels(n_samples: int, num_classes: int) -> np.ndarray:
    """The default labels of conditional sampling: 0, 1, ..., num_classes - 1, 0, 1, ...

    Returns:
      `[n_samples]` int32, so a grid of samples shows every class in turn.
    """
    return np.arange(n_samples, dtype=np.int32) % np.int32(num_classes)


def _conditioning(conditional: bool, batch: Batch) -> dict[str, Any]:
    return {"labels": batch["label"]} if conditional else {}


class Trainer:
    """Trains any model that follows the `GenerativeModel` protocol.

    Args:
      model: the model (`__call__(x, *, rngs)`, `loss_fn(batch, outputs)`,
        `generate(*, n_samples, rngs)`), or a function of no arguments that
        builds it (e.g. `lambda: create_model(cfg, rngs=nnx.Rngs(0))`).
        Conditional models (with a `num_classes` attribute) get
        `labels=batch["label"]`.
      config: the training configuration (optimizer, EMA, intervals,
        `parallelism` and `precision`).

    Devices: with `config.parallelism` "data" or "fsdp" the state lives on a
    mesh (`workshop.train.distributed`), `train_step` takes this process's rows
    of a batch as numpy and puts them on the mesh, and metrics come back
    replicated. Given a function that builds the model, the trainer builds it
    abstractly (`nnx.eval_shape`) and `init_state` creates the parameters,
    optimizer state and EMA inside one `jax.jit` with the state's shardings as
    `out_shardings` (`build_state`), so no device ever holds a whole
    FSDP-sharded array (models larger than one device); the values equal
    those of the function called on one device (`jax_threefry_partitionable`
    random bits do not depend on the sharding). Given a built model, its host
    copy is placed on the mesh. Without a mesh the function is just called.

    Precision: with `config.precision` "bfloat16" or "float16" the train step
    casts the float32 parameters and the input `batch["x"]` to that dtype at
    the start of the loss function, every layer of the train-step model (Flax's
    and Workshop's own, by their `dtype` attribute) computes in it, the outputs
    are cast back to float32 before `model.loss_fn`, and the gradients (of the float32 parameters) are float32;
    optimizer state and EMA stay float32. float16 adds dynamic loss scaling
    (a step with overflowing gradients is skipped; logged as `grads_finite`
    and `loss_scale`). Evaluation and sampling run the model as it was built.

    Raises:
      ValueError: the precision is not supported on this platform, or FSDP
        cannot shard a parameter (both name the fix).
    """

    mesh_sharding: MeshSharding | None = None
    state_sharding: Any = None
    # Sharded construction (a model-building function on a mesh): the function and
    # `build_state`, the jitted rng -> TrainState whose out_shardings are `state_sharding`.
    _build_model: Callable[[], nnx.Module] | None = None
    build_state: Callable[[jax.Array], TrainState] | None = None
    loss_scale: DynamicLossScale | None = None

    def __init__(self, model: nnx.Module | Callable[[], nnx.Module], config: TrainingConfiguration):
        self.config = config
        self.mesh_sharding = MeshSharding.from_config(config)
        model = self._resolve_model(model)
        self.conditional = hasattr(model, "num_classes")
        self.policy = precision_policy(config.precision)
        if self.policy.is_mixed:
            check_precision_supported(self.policy)
        self.loss_scale = DynamicLossScale.from_config(config)
        model.train()
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        eval_model = nnx.merge(self.graphdef, params, rest)
        eval_model.eval()
        self.eval_graphdef, _, _ = nnx.split(eval_model, nnx.Param, ...)
        if self.policy.is_mixed:
            train_model = nnx.merge(self.graphdef, params, rest)
            apply_compute_dtype(train_model, self.policy.compute_dtype)
            self.graphdef = nnx.split(train_model, nnx.Param, ...)[0]
        self._initial = (params, rest)
        self.tx, self.schedule = make_optimizer(config.optimizer, config.num_steps)
        if self.mesh_sharding is None:
            self.train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]] = jax.jit(
                self._train_step, donate_argnums=0
            )
            self.eval_step = jax.jit(self._eval_step)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",))
        else:
            ms = self.mesh_sharding
            abstract = jax.eval_shape(self._fresh_state, params, rest, jax.random.PRNGKey(0))
            self.state_sharding = ms.state_shardings(abstract)
            sh = self.state_sharding
            _log.info("training with %s", ms.describe())
            self.train_step = ms.jit_step(self._train_step, sh)
            # Evaluation batches may have any size: they are replicated, not split.
            self.eval_step = jax.jit(self._eval_step, in_shardings=(sh.params, sh.rest, ms.replicated, ms.replicated),
                                     out_shardings=ms.replicated)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",), out_shardings=ms.replicated)
            if self._build_model is not None:
                # rng uint32[2] -> TrainState: the whole state created already sharded.
                self.build_state = jax.jit(self._build_state, out_shardings=sh)
        self._stop_reason: str | None = None

    def _resolve_model(self, model: nnx.Module | Callable[[], nnx.Module]) -> nnx.Module:
        """`model`, or the model the function `model` builds: abstractly on a mesh (`init_state`
        then builds it for real, straight into its shardings, with `build_state`)."""
        if isinstance(model, nnx.Module):
            return model
        if not callable(model):
            raise TypeError(f"{type(self).__name__} needs an nnx.Module or a function of no arguments that builds "
                            f"one, got {type(model).__name__}")
        if self.mesh_sharding is None:
            return model()
        self._build_model = model
        return nnx.eval_shape(model)

    # ----------------------------------------------------------------- state
    def init_state(self, seed: int | None = None) -> TrainState:
        """A fresh state from the model's initial parameters.

        The arrays are copies: the compiled step donates its input state, so a
        state shared between calls would be deleted by the first one. On a
        mesh, a trainer given a model-building function creates the state
        with `build_state` (sharded construction, see the class docstring);
        one given a built model places every array with its sharding (each
        process copies only the pieces its devices hold).
        """
        seed = self.config.seed if seed is None else seed
        if self.mesh_sharding is None:
            params, rest = jax.tree.map(jnp.copy, self._initial)
            return self._fresh_state(params, rest, jax.random.PRNGKey(seed))
        ms, sh = self.mesh_sharding, self.state_sharding
        if self.build_state is not None:
            return self.build_state(ms.place(np.asarray(jax.random.PRNGKey(seed)), sh.rng))
        params, rest = ms.place(jax.device_get(self._initial), (sh.params, sh.rest))
        rng = ms.place(np.asarray(jax.random.PRNGKey(seed)), sh.rng)
        return jax.jit(self._fresh_state, out_shardings=sh)(params, rest, rng)

    def abstract_state(self) -> TrainState:
        """The state's shapes, dtypes and shardings (`jax.ShapeDtypeStruct`s); creates no array.

        A restore target: `Checkpointer.restore(trainer.abstract_state())`
        reads a checkpoint straight into the state's layout (sharded on a mesh,
        on `jax.devices()[0]` otherwise) without building a fresh state first.
        """
        shapes = jax.eval_shape(self._fresh_state, *self._initial, jax.random.PRNGKey(0))
        shardings = self.state_sharding
        if shardings is None:
            shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes)
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)

    def _build_state(self, rng) -> TrainState:
        _, params, rest = nnx.split(self._build_model(), nnx.Param, ...)
        return self._fresh_state(params, rest, rng)

    def _fresh_state(self, params, rest, rng) -> TrainState:
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=self._init_opt_state(params),
            ema_params=self._init_ema(params, rest) if self.config.ema_decay is not None else None,
            rng=rng,
            loss_scale=self.loss_scale.init() if self.loss_scale is not None else None,
        )

    # Subclasses with several optimizers or a partial EMA (GANTrainer) override these two.
    def _init_opt_state(self, params) -> Any:
        return self.tx.init(params)

    def _init_ema(self, params, rest) -> Any:
        return jax.tree.map(jnp.copy, params)

    def model_from_state(self, state: TrainState, *, use_ema: bool = True) -> nnx.Module:
        """An evaluation-mode model holding the state's (EMA) parameters."""
        params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
        return nnx.merge(self.eval_graphdef, params, state.rest)

    # ------------------------------------------------------------ the steps
    def _train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        batch = {**batch, "x": model_input(batch["x"])}  # uint8 images cross to the device as uint8
        conditioning = _conditioning(self.conditional, batch)
        policy, scaler = self.policy, self.loss_scale
        mixed = policy.is_mixed

        def loss_fn(params):
            if mixed:  # float32 master weights, cast for the passes (Micikevicius et al. 2018)
                params = jax.tree.map(policy.cast_to_compute, params)
            model = nnx.merge(self.graphdef, params, state.rest, copy=True)
            x = policy.cast_to_compute(batch["x"]) if mixed else batch["x"]
            outputs = model(x, rngs=nnx.Rngs(key), **conditioning)
            if mixed:
                outputs = jax.tree.map(policy.cast_to_output, outputs)
            metrics = model.loss_fn(batch, outputs)
            _, new_rest = nnx.split(model, nnx.Param, ...)[1:]
            if mixed:  # running statistics keep their dtypes
                new_rest = jax.tree.map(lambda new, old: new.astype(old.dtype), new_rest, state.rest)
            return metrics["loss"], (metrics, new_rest)

        (_, (metrics, rest)), grads, finite = scaled_value_and_grad(
            loss_fn, scaler, state.loss_scale, has_aux=True)(state.params)
        metrics = dict(metrics)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["learning_rate"] = self.schedule(state.step)
        loss_scale = state.loss_scale
        if scaler is not None:
            # An overflow step changes nothing but the scale (halved) and the step count.
            loss_scale = scaler.adjust(state.loss_scale, finite)
            metrics["grad_norm"] = jnp.where(finite, metrics["grad_norm"], 0.0)
            metrics["grads_finite"] = finite.astype(jnp.float32)
            metrics["loss_scale"] = state.loss_scale["scale"]

        def update(old, grads, new_rest):
            params, opt_state, ema, _ = old
            updates, opt_state = self.tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if ema is not None:
                # Warm-up of the EMA (as in TF's ExponentialMovingAverage with num_updates):
                # early averages do not drag in the random initialisation for long.
                decay = jnp.minimum(self.config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
                ema = optax.incremental_update(params, ema, step_size=1.0 - decay)
            return params, opt_state, ema, new_rest

        # NaN guard (fit): a NaN/Inf loss, metric or gradient norm drops the whole update;
        # the step (the data position) and the loss scale still advance.
        (params, opt_state, ema, rest), metrics = skip_nonfinite_update(
            metrics, update, (state.params, state.opt_state, state.ema_params, state.rest), grads, rest,
            finite=finite if scaler is not None else None)
        new_state = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state, ema_params=ema,
                                  loss_scale=loss_scale)
        return new_state, metrics

    def _eval_step(self, params, rest, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
        batch = {**batch, "x": model_input(batch["x"])}
        model = nnx.merge(self.eval_graphdef, params, rest, copy=True)
        outputs = model(batch["x"], rngs=nnx.Rngs(key), **_conditioning(self.conditional, batch))
        return model.loss_fn(batch, outputs)

    def _generate_impl(self, params, rest, key, labels, *, n_samples: int) -> jax.Array:
        model = nnx.merge(self.eval_graphdef, params, rest, copy=True)
        kwargs = {"labels": labels} if labels is not None else {}
        return model.generate(n_samples=n_samples, rngs=nnx.Rngs(key), **kwargs)

    # ---------------------------------------------------------- public API
    def generate(self, state: TrainState, n_samples: int, *, seed: int = 0, labels=None) -> np.ndarray:
        """Samples with the EMA parameters: `[n_samples, *input_shape]`."""
        if self.conditional and labels is None:
            labels = cycled_class_labels(n_samples, self.model_from_state(state).num_classes)
        params = state.ema_params if state.ema_params is not None else state.params
        out = self._generate(params, state.rest, jax.random.PRNGKey(seed), labels, n_samples=n_samples)
        return np.asarray(out)

    def evaluate(self, state: TrainState, batches: Iterable[Batch], *, seed: int = 0) -> dict[str, float]:
        """Example-weighted means of `loss_fn`'s metrics over `batches` (EMA params)."""
        params = state.ema_params if state.ema_params is not None else state.params
        key = jax.random.PRNGKey(seed)
        totals: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(batches):
            n = int(batch["x"].shape[0])
            metrics = jax.device_get(self.eval_step(params, state.rest, batch, jax.random.fold_in(key, i)))
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
        if count == 0:
            raise ValueError("evaluate() got no batches")
        return {name: total / count for name, total in totals.items()}

    def request_stop(self, reason: str) -> None:
        """Ends `fit` after the current step (signal handlers, early stopping)."""
        self._stop_reason = reason

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    def fit(
        self,
        state: TrainState,
        batches: Iterator[Batch],
        *,
        callbacks: Sequence[Any] = (),
        eval_batches: Callable[[], Iterable[Batch]] | None = None,
        checkpointer: Any = None,
    ) -> TrainState:
        """Runs train steps from `state.step` to `config.num_steps`.

        Non-finite steps: the compiled step drops the update of a step whose
        loss, a metric or the gradient norm is NaN/Inf (only the step counter,
        i.e. the data position, advances), so no state handed to the callbacks
        holds NaN. The host learns of it at the next logging step (no sync per
        step). With `config.max_bad_steps` None the run then stops with
        NonFiniteLossError; with N the logs count `skipped_steps` (their other
        metrics are means over the steps that were applied) and after N bad
        steps in a row the parameters, optimizer state and EMA roll back to the
        newest checkpoint written before the first of them, discarding the
        checkpoints written since (they hold the parameters that failed). The
        step counter does not roll back: training continues with the batches
        and step keys that follow, so the batches of the bad stretch are not
        replayed (the PaLM recipe, Chowdhery et al. 2022, arXiv:2204.02311,
        Sec. 5.1: restart from an earlier checkpoint and skip the data around
        the spike). The logs carry `rollbacks` (the count so far). The
        optimizer's own update count, which drives its learning-rate schedule,
        follows the applied updates, so after skips or a rollback it trails
        `step` (the logged `learning_rate` is the schedule at `step`).

        Args:
          state: where to start (fresh or restored).
          batches: the training batches, positioned at `state.step`.
          callbacks: objects with any of `on_train_begin(trainer, state)`,
            `on_step_end(trainer, step, state)`, `on_log(trainer, step, logs)`,
            `on_eval(trainer, step, logs)`, `on_train_end(trainer, step, state)`.
          eval_batches: returns a fresh pass over the evaluation set.
          checkpointer: the `workshop.train.checkpointing.Checkpointer` to roll
            back from (its `restore(target, before=..., set_aside_rejected=True)`
            and `discard_from`).

        Returns:
          The final state. `stop_reason` tells whether the run was cut short.

        Raises:
          NonFiniteLossError: with `max_bad_steps` None, a step went NaN/Inf
            (names the step and the metric); with N, a rollback was due but
            impossible (no checkpointer, no checkpoint before the bad steps,
            or `max_rollbacks` used up).
        """
        cfg = self.config
        self._stop_reason = None
        self._bad_in_a_row, self._first_bad, self._rollbacks = 0, 0, 0
        step = int(state.step)
        self._call(callbacks, "on_train_begin", self, state)
        self._pending = pending = []  # the metrics of the steps since the last logging step
        while step < cfg.num_steps and self._stop_reason is None:
            try:
                batch = next(batches)
            except StopIteration:
                self._stop_reason = "the training data ran out"
                break
            state, metrics = self.train_step(state, batch)
            step += 1
            pending.append(metrics)
            if step % cfg.log_every == 0 or step == cfg.num_steps:
                state = self._log(state, pending, step, callbacks, checkpointer)
                self._pending = pending = []
            if eval_batches is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.num_steps):
                self._call(callbacks, "on_eval", self, step, self.evaluate(state, eval_batches()))
            self._call(callbacks, "on_step_end", self, step, state)
        if pending:
            state = self._log(state, pending, step, callbacks, checkpointer)
            self._pending = []
        self._call(callbacks, "on_train_end", self, step, state)
        return state

    def bad_steps_in_a_row(self) -> int:
        """How many of the latest steps in a row the NaN guard skipped (0: the last step was applied).

        Such a state holds the parameters that failed, so checkpoints must not
        be written of it (`CheckpointCallback` asks before each save). Reads
        the skipped flags of the steps not logged yet from the device: a host
        sync, meant for points that sync anyway (a save).
        """
        flags = [m["skipped"] for m in getattr(self, "_pending", ()) if "skipped" in m]
        before = getattr(self, "_bad_in_a_row", 0)
        if not flags:
            return before
        skipped = np.asarray(jax.device_get(jnp.stack(flags)))
        applied = np.flatnonzero(skipped == 0)
        return int(len(skipped) - 1 - applied[-1]) if applied.size else before + len(skipped)

    def _log(self, state: TrainState, pending, step: int, callbacks, checkpointer) -> TrainState:
        """Reduces the pending metrics, handles skipped steps, calls `on_log`."""
        first_step = step - len(pending) + 1
        logs, skipped = self._reduce(pending, first_step=first_step)
        if skipped is not None:
            if self.config.max_bad_steps is not None:  # else `_reduce` raised at a bad step
                state = self._count_bad_steps(state, skipped, first_step, checkpointer)
            logs["rollbacks"] = self._rollbacks
        self._call(callbacks, "on_log", self, step, logs)
        return state

    def _reduce(self, pending: list[dict[str, jax.Array]], *, first_step: int) -> tuple[dict[str, float], Any]:
        """Host means of the pending steps' metrics, and their skipped flags (None without the NaN guard).

        Raises NonFiniteLossError at the first non-finite value when the step
        has no guard (a trainer whose step reports no `"skipped"`) or when
        `max_bad_steps` is None.
        """
        # One transfer of every pending scalar, stacked on the host: a `jnp.stack` would compile
        # anew for every count of pending steps (a resumed or stopped run's last window).
        host = jax.device_get(pending)
        stacked = {k: np.stack([np.asarray(m[k]) for m in host]) for k in host[0]}
        skipped = stacked.pop("skipped", None)
        applied = np.ones(len(pending), bool) if skipped is None else skipped == 0
        if skipped is None or self.config.max_bad_steps is None:
            for name in sorted(stacked, key=lambda n: n != "loss"):  # report the loss first
                values = stacked[name]
                bad = ~np.isfinite(values)
                if bad.any():
                    at = int(np.argmax(bad))
                    kept = "the step was skipped, so no state or checkpoint holds it" if skipped is not None else (
                        "the last checkpoint holds the state before it")
                    raise NonFiniteLossError(
                        f"metric {name!r} became {values[at]} at step {first_step + at}; training stopped "
                        f"({kept}; set training.max_bad_steps to skip such steps instead)"
                    )
        logs: dict[str, float] = {}
        for name, values in stacked.items():
            good = values[applied]
            good = good[np.isfinite(good)]  # e.g. a gradient norm overflowing float32 with finite gradients
            if good.size:
                logs[name] = float(np.mean(good))
        if skipped is not None:
            logs["skipped_steps"] = int(np.sum(~applied))
            return logs, ~applied
        return logs, None

    def _count_bad_steps(self, state: TrainState, skipped, first_step: int, checkpointer) -> TrainState:
        """Tracks the bad steps in a row; rolls back once `max_bad_steps` of them happened in this window.

        The decision does not depend on `log_every`: a run of N bad steps that
        a good step ended before this logging step still rolls back.
        """
        limit, due = self.config.max_bad_steps, None
        for i, bad in enumerate(skipped):
            if not bad:
                self._bad_in_a_row = 0
                continue
            if self._bad_in_a_row == 0:
                self._first_bad = first_step + i
            self._bad_in_a_row += 1
            if self._bad_in_a_row >= limit and due is None:
                due = (self._first_bad, first_step + i)
        if skipped.any():
            _log.warning(
                "skipped %d step(s) with a NaN/Inf loss or gradient among steps %d-%d; %d in a row now "
                "(training.max_bad_steps=%d)",
                int(skipped.sum()), first_step, first_step + len(skipped) - 1, self._bad_in_a_row, limit,
            )
        if due is None:
            return state
        return self._roll_back(state, checkpointer, *due)

    def _roll_back(self, state: TrainState, checkpointer, first_bad: int, last_bad: int) -> TrainState:
        step = int(state.step)
        failed = first_bad - 1  # the parameters that failed are those after this many steps
        what = (f"{last_bad - first_bad + 1} steps in a row with a NaN/Inf loss or gradient "
                f"(steps {first_bad}-{last_bad})")
        if checkpointer is None:
            raise NonFiniteLossError(f"{what}; no checkpointer to roll back to (pass fit(..., checkpointer=...))")
        if self._rollbacks >= self.config.max_rollbacks:
            raise NonFiniteLossError(
                f"{what} after {self._rollbacks} rollback(s), training.max_rollbacks={self.config.max_rollbacks}: "
                "the run keeps diverging; lower the learning rate, clip gradients or look for bad data"
            )
        try:
            good, record = checkpointer.restore(state, before=failed, set_aside_rejected=True)
        except FileNotFoundError as e:
            raise NonFiniteLossError(
                f"{what}; nothing to roll back to: {e}. Checkpoint more often (training.checkpoint_every), keep "
                "more (training.keep_checkpoints) or allow more bad steps (training.max_bad_steps)"
            ) from e
        discarded = checkpointer.discard_from(failed)
        self._rollbacks += 1
        self._bad_in_a_row = 0
        _log.warning(
            "%s: rolled back to the checkpoint of step %d (rollback %d of at most %d); training continues at "
            "step %d with the batches that follow%s",
            what, int(record["step"]), self._rollbacks, self.config.max_rollbacks, step,
            f"; deleted the checkpoints of steps {discarded}, which hold the parameters that failed"
            if discarded else "",
        )
        # Orbax returns committed arrays while the unsharded step's outputs are
        # uncommitted; a difference would compile the step again.
        return jax.tree.map(lambda new, cur: new if cur.committed else jax.device_put(np.asarray(new)),
                            good.replace(step=state.step), state)

    @staticmethod
    def _call(callbacks: Sequence[Any], hook: str, *args) -> None:
        for callback in callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(*args)
