"""The Trainer: one compiled step for any `GenerativeModel`, whatever its objective.

The model is split once into a static graph and array state: one `nnx.State`
per parameter group of its `TrainingObjective` and one of every other
variable. The train step is a single `jax.jit` of a pure function over
`TrainState` that merges the graph back inside the trace, runs the
objective's updates in order (repeated ones in a `lax.scan`), each with its
group's optax optimizer, then the parameter EMA, and donates the old state:
no NNX graph traversal or Python work per step beyond handing in the batch.
Metrics stay on the device until a logging step. Most models have one update
of all parameters on `loss_fn` (`workshop.train.objective`); a GAN's step is
`n_critic` critic updates, then the generator's (`workshop.models.gan`).

The step's randomness is `fold_in(seed_key, step)`, so a run resumed from a
checkpoint draws exactly the numbers an uninterrupted run draws.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.configuration import TrainingConfiguration
from workshop.core.device_manager import apply_compute_dtype, check_precision_supported, precision_policy
from workshop.core.protocols import ConditionalModel, SamplingOptions
from workshop.data.pipeline import model_input
from workshop.train.bad_steps import BadStepPolicy, NonFiniteLossError
from workshop.train.distributed import MeshSharding
from workshop.train.loss_scaling import DynamicLossScale
from workshop.train.objective import call_inputs, conditioning, training_objective
from workshop.train.optimizers import make_optimizer
from workshop.train.train_step import ParameterGroups, TrainState, TrainStep

__all__ = ["TrainState", "Trainer", "NonFiniteLossError", "cycled_class_labels"]

_log = logging.getLogger(__name__)

Batch = dict[str, Any]


def cycled_class_labels(n_samples: int, num_classes: int) -> np.ndarray:
    """The default labels of conditional sampling: 0, 1, ..., num_classes - 1, 0, 1, ...

    Returns:
      `[n_samples]` int32, so a grid of samples shows every class in turn.
    """
    return np.arange(n_samples, dtype=np.int32) % np.int32(num_classes)


class Trainer:
    """Trains any model that follows the `GenerativeModel` protocol.

    Args:
      model: the model, or a function of no arguments that builds it (e.g.
        `lambda: create_model(cfg, rngs=nnx.Rngs(0))`). Its objective is its
        own (`CustomObjective`) or one update on `loss_fn`; conditional models
        (`ConditionalModel`) get `labels=batch["label"]`.
      config: the training configuration (optimizer, EMA, intervals,
        `parallelism` and `precision`). Each parameter group's optimizer is
        `config.optimizer` with the learning rate times the group's multiplier.

    Devices: with `config.parallelism` "data" or "fsdp" the state lives on a
    mesh (`workshop.train.distributed`), `train_step` takes this process's rows
    of a batch as numpy and puts them on the mesh, and metrics come back
    replicated; an update's part of the batch is split over every device.
    Given a function that builds the model, the trainer builds it abstractly
    (`nnx.eval_shape`) and `init_state` creates the parameters, optimizer
    states and EMA inside one `jax.jit` with the state's shardings as
    `out_shardings` (`build_state`), so no device ever holds a whole
    FSDP-sharded array; the values equal those of the function called on one
    device (`jax_threefry_partitionable` random bits do not depend on the
    sharding). Given a built model, its host copy is placed on the mesh.

    Precision: with `config.precision` "bfloat16" or "float16" the train step
    casts the float32 parameters to that dtype before each pass, every layer of
    the train-step model (Flax's and Workshop's own, by their `dtype`
    attribute) computes in it, and the gradients (of the float32 parameters)
    are float32; optimizer states and EMA stay float32 and running statistics
    keep their dtypes. float16 adds dynamic loss scaling: an update with
    overflowing gradients is not applied and the step changes nothing but the
    scale (halved) and the step count; logged as `grads_finite` and
    `loss_scale`. Evaluation and sampling run the model as it was built.

    Logged per step: the updates' metrics (means over repetitions), and per
    group `grad_norm` and `learning_rate` with the group's `metric_prefix`.

    Raises:
      ValueError: the precision is not supported on this platform, FSDP
        cannot shard a parameter, or the model's objective is malformed (each
        names the fix).
    """

    mesh_sharding: MeshSharding | None = None
    state_sharding: Any = None
    # Sharded construction (a model-building function on a mesh): the function and
    # `build_state`, the jitted rng -> TrainState whose out_shardings are `state_sharding`.
    _build_model: Callable[[], nnx.Module] | None = None
    build_state: Callable[[jax.Array], TrainState] | None = None

    def __init__(self, model: nnx.Module | Callable[[], nnx.Module], config: TrainingConfiguration):
        self.config = config
        self.mesh_sharding = MeshSharding.from_config(config)
        model = self._resolve_model(model)
        self.policy = precision_policy(config.precision)
        if self.policy.is_mixed:
            check_precision_supported(self.policy)
        self.loss_scale = DynamicLossScale.from_config(config)
        self.objective = training_objective(model, self.policy)
        self.groups = groups = ParameterGroups(self.objective)
        self.conditional = isinstance(model, ConditionalModel)
        self._inputs = call_inputs(model)
        self.num_classes = int(model.num_classes) if self.conditional else None
        model.train()
        self.graphdef, params, rest = groups.split(model)
        eval_model = groups.merge(self.graphdef, params, rest)
        eval_model.eval()
        self.eval_graphdef = groups.split(eval_model)[0]
        if self.policy.is_mixed:
            train_model = groups.merge(self.graphdef, params, rest)
            apply_compute_dtype(train_model, self.policy.compute_dtype)
            self.graphdef = groups.split(train_model)[0]
        self._initial = (groups.pack(params), rest)
        self.optimizers, self.schedules = {}, {}
        for g in self.objective.groups:
            opt = config.optimizer.model_copy(
                update={"learning_rate": config.optimizer.learning_rate * g.learning_rate_multiplier})
            self.optimizers[g.name], self.schedules[g.name] = make_optimizer(opt, config.num_steps)
        self._train_step = TrainStep(self.objective, groups, self.graphdef, optimizers=self.optimizers,
                                     schedules=self.schedules, policy=self.policy, loss_scale=self.loss_scale,
                                     ema_decay=config.ema_decay, mesh_sharding=self.mesh_sharding)
        self.bad_steps = BadStepPolicy(config.max_bad_steps, config.max_rollbacks)
        if self.mesh_sharding is None:
            self.train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]] = jax.jit(
                self._train_step, donate_argnums=0)
            self.eval_step = jax.jit(self._eval_step)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",))
        else:
            ms = self.mesh_sharding
            abstract = jax.eval_shape(self._fresh_state, *self._initial, jax.random.PRNGKey(0))
            self.state_sharding = sh = ms.state_shardings(abstract)
            _log.info("training with %s", ms.describe())
            self.train_step = ms.jit_step(self._train_step, sh)
            # The averaged parameters and statistics have the shapes, hence the shardings, of the raw ones.
            # Evaluation batches may have any size: they are replicated, not split.
            self.eval_step = jax.jit(self._eval_step, in_shardings=(sh.params, sh.rest, ms.replicated, ms.replicated),
                                     out_shardings=ms.replicated)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",), out_shardings=ms.replicated)
            if self._build_model is not None:
                # rng uint32[2] -> TrainState: the whole state created already sharded.
                self.build_state = jax.jit(self._build_state, out_shardings=sh)
        self._stop_reason: str | None = None
        self._pending: list[dict[str, jax.Array]] = []

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
            return self._fresh_state(*jax.tree.map(jnp.copy, self._initial), jax.random.PRNGKey(seed))
        ms, sh = self.mesh_sharding, self.state_sharding
        rng = ms.place(np.asarray(jax.random.PRNGKey(seed)), sh.rng)
        if self.build_state is not None:
            return self.build_state(rng)
        params, rest = ms.place(jax.device_get(self._initial), (sh.params, sh.rest))
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
        _, params, rest = self.groups.split(self._build_model())
        return self._fresh_state(self.groups.pack(params), rest, rng)

    def _fresh_state(self, params, rest, rng) -> TrainState:
        groups = self.groups.unpack(params)
        ema = ema_rest = None
        if self.config.ema_decay is not None and self.groups.averaged:
            ema = self.groups.pack({n: jax.tree.map(jnp.copy, groups[n]) for n in self.groups.averaged})
            if self.objective.averaged_statistics is not None:
                ema_rest = jax.tree.map(jnp.copy, nnx.filter_state(rest, self.objective.averaged_statistics))
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, rest=rest,
            opt_state=self.groups.pack({n: self.optimizers[n].init(groups[n]) for n in self.groups.names}),
            ema_params=ema, rng=rng, loss_scale=self.loss_scale.init() if self.loss_scale is not None else None,
            ema_rest=ema_rest)

    def _sampling_state(self, state: TrainState, use_ema: bool = True) -> tuple[Any, Any]:
        """(params, rest) to evaluate and sample with: the averaged groups' EMA, the others' raw values."""
        if not use_ema or state.ema_params is None:
            return state.params, state.rest
        params, ema = self.groups.unpack(state.params), self.groups.unpack(state.ema_params)
        params = self.groups.pack({n: ema.get(n, params[n]) for n in self.groups.names})
        return params, state.rest if state.ema_rest is None else nnx.merge_state(state.rest, state.ema_rest)

    def model_from_state(self, state: TrainState, *, use_ema: bool = True) -> nnx.Module:
        """An evaluation-mode model holding the state's (EMA) parameters."""
        params, rest = self._sampling_state(state, use_ema)
        return self.groups.merge(self.eval_graphdef, self.groups.unpack(params), rest)

    def _eval_step(self, params, rest, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
        batch = {**batch, "x": model_input(batch["x"])}
        model = self.groups.merge(self.eval_graphdef, self.groups.unpack(params), rest)
        outputs = model(batch["x"], rngs=nnx.Rngs(key), **conditioning(self._inputs, batch))
        return model.loss_fn(batch, outputs)

    def _generate_impl(self, params, rest, key, labels, *, n_samples: int) -> jax.Array:
        model = self.groups.merge(self.eval_graphdef, self.groups.unpack(params), rest)
        kwargs = {"labels": labels} if labels is not None else {}
        return model.generate(n_samples=n_samples, rngs=nnx.Rngs(key), **kwargs)

    # ---------------------------------------------------------- public API
    def generate(self, state: TrainState, n_samples: int, *, seed: int = 0, labels=None) -> np.ndarray:
        """Samples with the EMA parameters: `[n_samples, *input_shape]`.

        Conditional models cycle through the classes when `labels` is None.

        Raises:
          ValueError: labels given to an unconditional model, or labels the
            model refuses (`SamplingOptions`: out of range, misshaped).
        """
        if labels is not None and not self.conditional:
            raise ValueError("this model is unconditional and takes no labels; build it with parameters.num_classes "
                             "for class-conditional sampling")
        if self.conditional and labels is None:
            labels = cycled_class_labels(n_samples, self.num_classes)
        model = self.model_from_state(state)
        if isinstance(model, SamplingOptions):  # readable errors on Python values, before tracing
            model.sampling_options(labels=labels, batch=n_samples, sampler=None, steps=None, guidance_scale=None)
        params, rest = self._sampling_state(state)
        return np.asarray(self._generate(params, rest, jax.random.PRNGKey(seed), labels, n_samples=n_samples))

    def evaluate(self, state: TrainState, batches: Iterable[Batch], *, seed: int = 0) -> dict[str, float]:
        """Example-weighted means of `loss_fn`'s metrics over `batches` (EMA parameters)."""
        params, rest = self._sampling_state(state)
        key = jax.random.PRNGKey(seed)
        totals: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(batches):
            n = int(batch["x"].shape[0])
            metrics = jax.device_get(self.eval_step(params, rest, batch, jax.random.fold_in(key, i)))
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

    def fit(self, state: TrainState, batches: Iterator[Batch], *, callbacks: Sequence[Any] = (),
            eval_batches: Callable[[], Iterable[Batch]] | None = None, checkpointer: Any = None) -> TrainState:
        """Runs train steps from `state.step` to `config.num_steps`.

        Non-finite steps are skipped inside the compiled step, and stop the
        run or roll it back to a checkpoint (`workshop.train.bad_steps`, with
        `config.max_bad_steps` and `max_rollbacks`); the logs then carry
        `skipped_steps` and `rollbacks`. The optimizer's own update count,
        which drives its learning-rate schedule, follows the applied updates,
        so after skips or a rollback it trails `step` (the logged
        `learning_rate` is the schedule at `step`).

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
            impossible.
        """
        cfg = self.config
        self._stop_reason = None
        self.bad_steps.reset()
        step = int(state.step)
        self._call(callbacks, "on_train_begin", self, state)
        self._pending = []  # the metrics of the steps since the last logging step
        while step < cfg.num_steps and self._stop_reason is None:
            try:
                batch = next(batches)
            except StopIteration:
                self._stop_reason = "the training data ran out"
                break
            state, metrics = self.train_step(state, batch)
            step += 1
            self._pending.append(metrics)
            if step % cfg.log_every == 0 or step == cfg.num_steps:
                state = self._log(state, step, callbacks, checkpointer)
            if eval_batches is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.num_steps):
                self._call(callbacks, "on_eval", self, step, self.evaluate(state, eval_batches()))
            self._call(callbacks, "on_step_end", self, step, state)
        if self._pending:
            state = self._log(state, step, callbacks, checkpointer)
        self._call(callbacks, "on_train_end", self, step, state)
        return state

    def bad_steps_in_a_row(self) -> int:
        """How many of the latest steps in a row the NaN guard skipped (0: the last step was applied).

        Such a state holds the parameters that failed, so checkpoints must not
        be written of it (`CheckpointCallback` asks before each save). Reads
        the skipped flags of the steps not logged yet from the device: a host
        sync, meant for points that sync anyway (a save).
        """
        return self.bad_steps.in_a_row(self._pending)

    def _log(self, state: TrainState, step: int, callbacks, checkpointer) -> TrainState:
        pending, self._pending = self._pending, []
        state, logs = self.bad_steps.window(state, pending, first_step=step - len(pending) + 1,
                                            checkpointer=checkpointer)
        self._call(callbacks, "on_log", self, step, logs)
        return state

    @staticmethod
    def _call(callbacks: Sequence[Any], hook: str, *args) -> None:
        for callback in callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(*args)
