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
from workshop.train.optimizers import make_optimizer

__all__ = ["TrainState", "Trainer", "NonFiniteLossError"]

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
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_checkpoint(cls, tree: dict[str, Any]) -> "TrainState":
        return cls(**{f.name: tree.get(f.name) for f in dataclasses.fields(cls)})


def _conditioning(conditional: bool, batch: Batch) -> dict[str, Any]:
    return {"labels": batch["label"]} if conditional else {}


class Trainer:
    """Trains any model that follows the `GenerativeModel` protocol.

    Args:
      model: the model (`__call__(x, *, rngs)`, `loss_fn(batch, outputs)`,
        `generate(*, n_samples, rngs)`). Conditional models (with a
        `num_classes` attribute) get `labels=batch["label"]`.
      config: the training configuration (optimizer, EMA, intervals).
    """

    def __init__(self, model: nnx.Module, config: TrainingConfiguration):
        self.config = config
        self.conditional = hasattr(model, "num_classes")
        model.train()
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        eval_model = nnx.merge(self.graphdef, params, rest)
        eval_model.eval()
        self.eval_graphdef, _, _ = nnx.split(eval_model, nnx.Param, ...)
        self._initial = (params, rest)
        self.tx, self.schedule = make_optimizer(config.optimizer, config.num_steps)
        self.train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]] = jax.jit(
            self._train_step, donate_argnums=0
        )
        self.eval_step = jax.jit(self._eval_step)
        self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",))
        self._stop_reason: str | None = None

    # ----------------------------------------------------------------- state
    def init_state(self, seed: int | None = None) -> TrainState:
        """A fresh state from the model's initial parameters.

        The arrays are copies: the compiled step donates its input state, so a
        state shared between calls would be deleted by the first one.
        """
        params, rest = jax.tree.map(jnp.copy, self._initial)
        seed = self.config.seed if seed is None else seed
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=self.tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params) if self.config.ema_decay is not None else None,
            rng=jax.random.PRNGKey(seed),
        )

    def model_from_state(self, state: TrainState, *, use_ema: bool = True) -> nnx.Module:
        """An evaluation-mode model holding the state's (EMA) parameters."""
        params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
        return nnx.merge(self.eval_graphdef, params, state.rest)

    # ------------------------------------------------------------ the steps
    def _train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        conditioning = _conditioning(self.conditional, batch)

        def loss_fn(params):
            model = nnx.merge(self.graphdef, params, state.rest, copy=True)
            outputs = model(batch["x"], rngs=nnx.Rngs(key), **conditioning)
            metrics = model.loss_fn(batch, outputs)
            _, new_rest = nnx.split(model, nnx.Param, ...)[1:]
            return metrics["loss"], (metrics, new_rest)

        (_, (metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            # Warm-up of the EMA (as in TF's ExponentialMovingAverage with num_updates):
            # early averages do not drag in the random initialisation for long.
            decay = jnp.minimum(self.config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
            ema = optax.incremental_update(params, ema, step_size=1.0 - decay)
        metrics = dict(metrics)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["learning_rate"] = self.schedule(state.step)
        new_state = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state, ema_params=ema)
        return new_state, metrics

    def _eval_step(self, params, rest, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
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
            labels = jnp.arange(n_samples) % self.model_from_state(state).num_classes
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
    ) -> TrainState:
        """Runs train steps from `state.step` to `config.num_steps`.

        Args:
          state: where to start (fresh or restored).
          batches: the training batches, positioned at `state.step`.
          callbacks: objects with any of `on_train_begin(trainer, state)`,
            `on_step_end(trainer, step, state)`, `on_log(trainer, step, logs)`,
            `on_eval(trainer, step, logs)`, `on_train_end(trainer, step, state)`.
          eval_batches: returns a fresh pass over the evaluation set.

        Returns:
          The final state. `stop_reason` tells whether the run was cut short.

        Raises:
          NonFiniteLossError: a metric became NaN or Inf (names the step). The
            state of that step is not handed to the callbacks, so no checkpoint
            holds it.
        """
        cfg = self.config
        self._stop_reason = None
        step = int(state.step)
        self._call(callbacks, "on_train_begin", self, state)
        pending: list[dict[str, jax.Array]] = []
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
                logs = self._reduce(pending, first_step=step - len(pending) + 1)
                pending = []
                self._call(callbacks, "on_log", self, step, logs)
            if eval_batches is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.num_steps):
                self._call(callbacks, "on_eval", self, step, self.evaluate(state, eval_batches()))
            self._call(callbacks, "on_step_end", self, step, state)
        if pending:
            self._call(callbacks, "on_log", self, step, self._reduce(pending, first_step=step - len(pending) + 1))
        self._call(callbacks, "on_train_end", self, step, state)
        return state

    @staticmethod
    def _reduce(pending: list[dict[str, jax.Array]], *, first_step: int) -> dict[str, float]:
        stacked = jax.device_get({k: jnp.stack([m[k] for m in pending]) for k in pending[0]})
        for name in sorted(stacked, key=lambda n: n != "loss"):  # report the loss first
            values = stacked[name]
            bad = ~np.isfinite(values)
            if bad.any():
                at = first_step + int(np.argmax(bad))
                raise NonFiniteLossError(
                    f"metric {name!r} became {values[np.argmax(bad)]} at step {at}; "
                    "training stopped (the last checkpoint holds the state before it)"
                )
        return {name: float(np.mean(values)) for name, values in stacked.items()}

    @staticmethod
    def _call(callbacks: Sequence[Any], hook: str, *args) -> None:
        for callback in callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(*args)
