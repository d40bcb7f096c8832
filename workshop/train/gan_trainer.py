"""The GAN trainer: critic and generator updates of one step in one compiled function.

Follows the alternating scheme of Goodfellow et al. 2014 (arXiv:1406.2661,
algorithm 1) with `n_critic` discriminator updates per generator update
(Arjovsky et al. 2017, arXiv:1701.07875; Gulrajani et al. 2017,
arXiv:1704.00028, algorithm 1). The critic updates run in a `lax.scan` inside
the same `jax.jit` as the generator update; the old state is donated. Each
player has its own optax optimizer: the generator uses
`TrainingConfiguration.optimizer`, the discriminator the same with its
learning rate multiplied by the model's `d_lr_multiplier` (the two time-scale
update rule of Heusel et al. 2017, arXiv:1706.08500), unless a
`discriminator_optimizer` is given. Samples come from an exponential moving
average of the generator's weights (Yazici et al. 2019, arXiv:1806.04498).

A step consumes one batch of `n_critic * m` real examples: critic update i
sees chunk i (m examples) against m fresh fakes, and the generator update
draws m fakes. The state is the `TrainState` of `workshop.train.trainer`
(`params` and `opt_state` are `{"generator": ..., "discriminator": ...}`,
`rest` is `{"generator": ..., "other": ...}`, the generator's batch
statistics and every other non-parameter variable), so `Checkpointer` saves
and resumes it and `Trainer.fit` with its callbacks drives it unchanged.

Batch normalisation (DCGAN, Radford et al. 2015, arXiv:1511.06434): both
players run in training mode inside the step (batch statistics, running
averages updated); a batch-normalised discriminator scores the real and the
fake half in separate calls, as in the DCGAN reference code, so neither half's
statistics leak into the other's. The EMA generator (`ema_params` is
`{"params": ..., "batch_stats": ...}`) keeps running averages of its own: each
step runs it once in training mode on the generator update's latents, so at
sampling (evaluation mode) it normalises with statistics of the averaged
weights, not of the raw generator's.

Devices (`workshop.train.distributed`, as in `Trainer`): with
`training.parallelism` "data" or "fsdp" the state (both players' parameters
and optimizer states, the EMA generator and its statistics, the batch
statistics and power-iteration vectors) lives on the mesh with the
`MeshSharding.state_shardings` of the Trainer, and the step is one
`jax.jit` with those shardings (`MeshSharding.jit_step`). Each critic update's m
examples are split over all devices, so on a mesh m must be a multiple of
the device count: `data.batch_size` a multiple of `n_critic * devices`.
Batch statistics are those of the global batch, so a mesh trains exactly
like one device.

Precision (as in `Trainer`, through the device manager's policy): with
"bfloat16" or "float16" the float32 parameters of both players are cast to
the compute dtype inside the step, every layer of the train-step model
(Flax layers and the spectrally normalised ones) computes in it, scores and
generated examples come out float32, and losses, penalties, gradients,
optimizer states and the EMA are float32. "float16" scales every player's
loss by one dynamic loss scale (`workshop.train.loss_scaling`): an update
whose gradients overflow is not applied, and a step with any overflowing
update (a critic update or the generator's) changes nothing but the scale
(halved) and the step count, logged as `grads_finite` and `loss_scale`.
Evaluation and sampling run the model as it was built (float32).

Logged per step (means over the critic updates where they apply): `d_loss`,
`g_loss`, `wasserstein_estimate` (mean D(x) - mean D(G(z)), the critic's
distance estimate), `d_real`, `d_fake`, `gradient_penalty`, `r1_penalty`,
`d_grad_norm`, `g_grad_norm`, `d_learning_rate`, `g_learning_rate`. A
collapsing generator shows as a growing `wasserstein_estimate` or a `d_loss`
near zero; divergence as exploding gradient norms.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from workshop.core import losses
from workshop.core.configuration import OptimizerConfiguration, TrainingConfiguration
from workshop.core.device_manager import apply_compute_dtype, check_precision_supported, precision_policy
from workshop.data.pipeline import model_input
from workshop.train.distributed import MeshSharding
from workshop.train.loss_scaling import DynamicLossScale, scaled_value_and_grad
from workshop.train.optimizers import make_optimizer, skip_nonfinite_update
from workshop.train.trainer import Trainer, TrainState, cycled_class_labels

__all__ = ["GANTrainer"]

Batch = dict[str, Any]

_GENERATOR = nnx.All(nnx.Param, nnx.PathContains("generator"))
_GENERATOR_STATS = nnx.All(nnx.BatchStat, nnx.PathContains("generator"))
_FILTERS = (_GENERATOR, nnx.Param, _GENERATOR_STATS, ...)


def _split_rest(module: nnx.Module) -> dict[str, Any]:
    _, _, _, g_stats, other = nnx.split(module, *_FILTERS)
    return {"generator": g_stats, "other": other}


class GANTrainer(Trainer):
    """Trains a model with a `generator` and a `discriminator` (the GAN family).

    `fit`, `request_stop` and the metric reduction are the `Trainer`'s; the
    state, the step, `evaluate`, `generate` and `model_from_state` are
    overridden.

    Args:
      model: a GAN (`generator(z, labels)`, `discriminator(x, labels)`,
        `latent_dim`, `loss`, `n_critic`, `gp_weight`, `r1_weight`,
        `d_lr_multiplier`, `generate`); conditional when it has `num_classes`.
      config: the training configuration; its optimizer is the generator's.
      discriminator_optimizer: the discriminator's optimizer; by default the
        generator's with the learning rate times `model.d_lr_multiplier`.

    Raises:
      ValueError: the model is not a GAN, or its recipe is invalid; the
        precision is not supported on this platform, or FSDP cannot shard a
        parameter (both name the fix).
    """

    def __init__(self, model: nnx.Module | Callable[[], nnx.Module], config: TrainingConfiguration, *,
                 discriminator_optimizer: OptimizerConfiguration | None = None):
        self.mesh_sharding = MeshSharding.from_config(config)
        model = self._resolve_model(model)  # on a mesh a function is built straight into its shardings
        for name in ("generator", "discriminator", "latent_dim", "loss", "n_critic"):
            if not hasattr(model, name):
                raise ValueError(f"GANTrainer needs a model with a generator and a discriminator; "
                                 f"{type(model).__name__} has no {name!r} (use Trainer for other families)")
        if int(model.n_critic) < 1:
            raise ValueError(f"n_critic must be >= 1 (discriminator updates per generator update), got {model.n_critic}")
        losses.generator_loss(model.loss, jnp.zeros((1,)))  # an unknown loss fails here, listing the known ones
        if getattr(model.discriminator, "norm", "none") == "batch" and (
                getattr(model, "gp_weight", 0.0) or getattr(model, "r1_weight", 0.0)):
            raise ValueError("a batch-normalised discriminator cannot take the gradient penalty or R1 "
                             "(they need each example scored on its own); use discriminator_norm 'layer' or 'none'")
        self.config = config
        self.policy = precision_policy(config.precision)
        if self.policy.is_mixed:
            check_precision_supported(self.policy)
        self.loss_scale = DynamicLossScale.from_config(config)
        self.conditional = hasattr(model, "num_classes")
        self.latent_dim = int(model.latent_dim)
        self.loss = str(model.loss)
        self.n_critic = int(model.n_critic)
        self.gp_weight = float(getattr(model, "gp_weight", 0.0))
        self.r1_weight = float(getattr(model, "r1_weight", 0.0))
        # A batch-normalised discriminator scores real and fake examples in separate calls.
        self.separate_scoring = getattr(model.discriminator, "norm", "none") == "batch"
        model.train()
        self.graphdef, g_params, d_params, g_stats, other = nnx.split(model, *_FILTERS)
        eval_model = nnx.merge(self.graphdef, g_params, d_params, g_stats, other)
        eval_model.eval()
        self.eval_graphdef = nnx.split(eval_model, *_FILTERS)[0]
        if self.policy.is_mixed:
            train_model = nnx.merge(self.graphdef, g_params, d_params, g_stats, other)
            apply_compute_dtype(train_model, self.policy.compute_dtype)
            self.graphdef = nnx.split(train_model, *_FILTERS)[0]
        self.generator_has_stats = bool(jax.tree.leaves(g_stats))
        self._initial = ({"generator": g_params, "discriminator": d_params}, {"generator": g_stats, "other": other})
        d_opt = discriminator_optimizer or config.optimizer.model_copy(
            update={"learning_rate": config.optimizer.learning_rate * float(getattr(model, "d_lr_multiplier", 1.0))})
        self.g_tx, self.g_schedule = make_optimizer(config.optimizer, config.num_steps)
        self.d_tx, self.d_schedule = make_optimizer(d_opt, config.num_steps)
        if self.mesh_sharding is None:
            self.train_step = jax.jit(self._train_step, donate_argnums=0)
            self.eval_step = jax.jit(self._eval_step)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",))
        else:
            ms = self.mesh_sharding
            abstract = jax.eval_shape(self._fresh_state, *self._initial, jax.random.PRNGKey(0))
            self.state_sharding = sh = ms.state_shardings(abstract)
            self.train_step = ms.jit_step(self._train_step, sh)
            # The (EMA) generator and its statistics have the shapes, hence the shardings, of the raw ones.
            # Evaluation batches may have any size: they are replicated, not split.
            players = (sh.params["generator"], sh.params["discriminator"], sh.rest)
            self.eval_step = jax.jit(self._eval_step, in_shardings=(*players, ms.replicated, ms.replicated),
                                     out_shardings=ms.replicated)
            self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",), out_shardings=ms.replicated)
            if self._build_model is not None:
                self.build_state = jax.jit(self._build_state, out_shardings=sh)
        self._stop_reason = None

    def _build_state(self, rng) -> TrainState:
        _, g_params, d_params, g_stats, other = nnx.split(self._build_model(), *_FILTERS)
        return self._fresh_state({"generator": g_params, "discriminator": d_params},
                                 {"generator": g_stats, "other": other}, rng)

    # ----------------------------------------------------------------- state
    # `Trainer.init_state` builds the state; these give each player its optimizer
    # and average the generator only (weights and its own batch statistics).
    def _init_opt_state(self, params) -> Any:
        return {"generator": self.g_tx.init(params["generator"]),
                "discriminator": self.d_tx.init(params["discriminator"])}

    def _init_ema(self, params, rest) -> Any:
        return {"params": jax.tree.map(jnp.copy, params["generator"]),
                "batch_stats": jax.tree.map(jnp.copy, rest["generator"])}

    def _sampling_generator(self, state: TrainState, use_ema: bool = True) -> tuple[Any, Any]:
        """The generator's (params, batch statistics) to sample with."""
        if use_ema and state.ema_params is not None:
            return state.ema_params["params"], state.ema_params["batch_stats"]
        return state.params["generator"], state.rest["generator"]

    def model_from_state(self, state: TrainState, *, use_ema: bool = True) -> nnx.Module:
        """An evaluation-mode model with the (EMA) generator and the current discriminator."""
        g_params, g_stats = self._sampling_generator(state, use_ema)
        return nnx.merge(self.eval_graphdef, g_params, state.params["discriminator"], g_stats, state.rest["other"])

    # ------------------------------------------------------------ the step
    def _model(self, g_params, d_params, rest, *, graphdef=None) -> nnx.Module:
        """The train-step model (default) or `graphdef`'s; the train-step model computes in the policy's dtype."""
        if graphdef is None and self.policy.is_mixed:
            # float32 master weights, cast for the passes (Micikevicius et al. 2018, arXiv:1710.03740).
            g_params, d_params = jax.tree.map(self.policy.cast_to_compute, (g_params, d_params))
        return nnx.merge(graphdef or self.graphdef, g_params, d_params, rest["generator"], rest["other"], copy=True)

    def _new_rest(self, model: nnx.Module, old_rest) -> dict[str, Any]:
        # Running statistics keep their dtypes (a bfloat16 pass may promote or demote them).
        return jax.tree.map(lambda new, old: new.astype(old.dtype), _split_rest(model), old_rest)

    def _on_mesh(self, x: jax.Array, axis: int) -> jax.Array:
        """`x` with its `axis` (examples) split over every device of the mesh (unchanged on one device)."""
        return x if self.mesh_sharding is None else self.mesh_sharding.split_examples(x, axis)

    def _score(self, discriminator, real, fake, labels):
        """D on real and fake examples: two calls with batch norm, else one (power iterations advance once)."""
        if self.separate_scoring:
            return discriminator(real, labels), discriminator(fake, labels)
        both = None if labels is None else jnp.concatenate([labels, labels])
        scores = discriminator(jnp.concatenate([real, fake]), both)
        return scores[: real.shape[0]], scores[real.shape[0]:]

    def _critic_objective(self, d_params, g_params, rest, real, labels, key):
        k_z, k_gp = jax.random.split(key)
        model = self._model(g_params, d_params, rest)
        z = self._on_mesh(jax.random.normal(k_z, (real.shape[0], self.latent_dim)), 0)
        fake = jax.lax.stop_gradient(model.generator(z, labels))
        d_real, d_fake = self._score(model.discriminator, real, fake, labels)
        loss = jnp.mean(losses.discriminator_loss(self.loss, d_real, d_fake))
        new_rest = self._new_rest(model, rest)

        def critic(x):  # a fresh copy: penalties must not advance running statistics
            return self._model(g_params, d_params, rest).discriminator(x, labels)

        gp = jnp.mean(losses.gradient_penalty(critic, real, fake, k_gp)) if self.gp_weight else jnp.zeros(())
        r1 = jnp.mean(losses.r1_penalty(critic, real)) if self.r1_weight else jnp.zeros(())
        total = loss + self.gp_weight * gp + 0.5 * self.r1_weight * r1
        metrics = {"d_loss": loss, "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake),
                   "wasserstein_estimate": jnp.mean(d_real) - jnp.mean(d_fake),
                   "gradient_penalty": gp, "r1_penalty": r1}
        return total, (metrics, new_rest)

    def _generator_objective(self, g_params, d_params, rest, labels, z):
        model = self._model(g_params, d_params, rest)
        scores = model.discriminator(model.generator(z, labels), labels)
        return jnp.mean(losses.generator_loss(self.loss, scores)), self._new_rest(model, rest)

    def _ema_generator_stats(self, ema_params, d_params, rest, labels, z):
        # The averaged generator's own running statistics: one forward pass in training mode.
        ema_rest = {"generator": ema_params["batch_stats"], "other": rest["other"]}
        model = self._model(ema_params["params"], d_params, ema_rest)
        model.generator(z, labels)
        return self._new_rest(model, ema_rest)["generator"]

    def _train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        real = jnp.asarray(model_input(batch["x"]), jnp.float32)
        if real.shape[0] % self.n_critic:
            raise ValueError(f"a GAN step with n_critic={self.n_critic} needs a batch of n_critic * m examples; "
                             f"got {real.shape[0]} (set data.batch_size to a multiple of {self.n_critic})")
        m = real.shape[0] // self.n_critic
        devices = 1 if self.mesh_sharding is None else self.mesh_sharding.num_devices
        if m % devices:
            raise ValueError(
                f"a GAN step with n_critic={self.n_critic} on {devices} devices splits each critic update's "
                f"m = {real.shape[0]} / {self.n_critic} = {m} examples over the devices: set data.batch_size to a "
                f"multiple of n_critic * devices = {self.n_critic * devices}")
        # Critic update i sees rows [i m, (i + 1) m), split over the mesh.
        real = self._on_mesh(real.reshape(self.n_critic, m, *real.shape[1:]), 1)
        labels = None
        if self.conditional:
            labels = self._on_mesh(jnp.asarray(batch["label"], jnp.int32).reshape(self.n_critic, m), 1)
        g_params = state.params["generator"]
        scaler, scale_state = self.loss_scale, state.loss_scale

        def keep_if(finite, new, old):  # an overflowing float16 update is not applied
            return new if scaler is None else optax.tree.where(finite, new, old)

        def critic_update(carry, inputs):
            d_params, d_opt, rest = carry
            x, y, i = inputs
            grad_fn = scaled_value_and_grad(self._critic_objective, scaler, scale_state, has_aux=True)
            (_, (metrics, new_rest)), grads, finite = grad_fn(d_params, g_params, rest, x, y,
                                                             jax.random.fold_in(key, i))
            updates, new_opt = self.d_tx.update(grads, d_opt, d_params)
            new = keep_if(finite, (optax.apply_updates(d_params, updates), new_opt, new_rest), carry)
            metrics["d_grad_norm"] = jnp.where(finite, optax.tree.norm(grads), 0.0)
            metrics["d_grads_finite"] = finite
            return new, metrics

        carry = (state.params["discriminator"], state.opt_state["discriminator"], state.rest)
        ys = labels if labels is not None else jnp.zeros((self.n_critic, 0), jnp.int32)
        (d_params, d_opt, rest), d_metrics = jax.lax.scan(
            lambda c, xs: critic_update(c, (xs[0], xs[1] if labels is not None else None, xs[2])),
            carry, (real, ys, jnp.arange(self.n_critic)))

        g_labels = None if labels is None else labels[0]
        z = self._on_mesh(jax.random.normal(jax.random.fold_in(key, self.n_critic), (m, self.latent_dim)), 0)
        (g_loss, new_rest), g_grads, g_finite = scaled_value_and_grad(
            self._generator_objective, scaler, scale_state, has_aux=True)(g_params, d_params, rest, g_labels, z)
        d_finite = d_metrics.pop("d_grads_finite")
        metrics = {name: jnp.mean(value) for name, value in d_metrics.items()}
        metrics.update(g_loss=g_loss, g_grad_norm=jnp.where(g_finite, optax.tree.norm(g_grads), 0.0),
                       g_learning_rate=self.g_schedule(state.step), d_learning_rate=self.d_schedule(state.step))
        finite, loss_scale = None, state.loss_scale
        if scaler is not None:
            # One overflowing update voids the whole step (the updates after it depend on it): only the
            # scale (halved) and the step count change.
            finite = jnp.all(d_finite) & g_finite
            loss_scale = scaler.adjust(scale_state, finite)
            metrics.update(grads_finite=finite.astype(jnp.float32), loss_scale=scale_state["scale"])

        def update(old, d_params, d_opt, g_grads, new_rest):
            g_params, g_opt = old["params"]["generator"], old["opt_state"]["generator"]
            updates, g_opt = self.g_tx.update(g_grads, g_opt, g_params)
            g_params = optax.apply_updates(g_params, updates)
            ema = old["ema"]
            if ema is not None:
                # The warm-up of `Trainer`: early averages do not keep the initialisation for long.
                decay = jnp.minimum(self.config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
                ema = {"params": optax.incremental_update(g_params, ema["params"], step_size=1.0 - decay),
                       "batch_stats": ema["batch_stats"]}
                if self.generator_has_stats:
                    ema["batch_stats"] = self._ema_generator_stats(ema, d_params, new_rest, g_labels, z)
            return {"params": {"generator": g_params, "discriminator": d_params}, "rest": new_rest,
                    "opt_state": {"generator": g_opt, "discriminator": d_opt}, "ema": ema}

        # A non-finite step changes nothing but the data position and the loss scale (see Trainer.fit,
        # max_bad_steps); the update runs only when the step is good (`skip_nonfinite_update`).
        old = {"params": state.params, "rest": state.rest, "opt_state": state.opt_state, "ema": state.ema_params}
        new, metrics = skip_nonfinite_update(metrics, update, old, d_params, d_opt, g_grads, new_rest,
                                             finite=finite)
        return state.replace(step=state.step + 1, params=new["params"], rest=new["rest"],
                             opt_state=new["opt_state"], ema_params=new["ema"], loss_scale=loss_scale), metrics

    # ------------------------------------------------------ eval and sampling
    def _eval_step(self, g_params, d_params, rest, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
        # `rest["generator"]` holds the sampling generator's batch statistics.
        model = self._model(g_params, d_params, rest, graphdef=self.eval_graphdef)
        real = jnp.asarray(model_input(batch["x"]), jnp.float32)
        labels = jnp.asarray(batch["label"], jnp.int32) if self.conditional else None
        fake = model.generator(jax.random.normal(key, (real.shape[0], self.latent_dim)), labels)
        d_real, d_fake = model.discriminator(real, labels), model.discriminator(fake, labels)
        d_loss = jnp.mean(losses.discriminator_loss(self.loss, d_real, d_fake))
        return {"d_loss": d_loss, "g_loss": jnp.mean(losses.generator_loss(self.loss, d_fake)),
                "wasserstein_estimate": jnp.mean(d_real) - jnp.mean(d_fake)}

    def evaluate(self, state: TrainState, batches: Iterable[Batch], *, seed: int = 0) -> dict[str, float]:
        """Example-weighted means over held-out real batches against fakes of the EMA generator.

        Returns:
          `d_loss`, `g_loss` and `wasserstein_estimate` under the current discriminator.
        """
        key = jax.random.PRNGKey(seed)
        g, g_stats = self._sampling_generator(state)
        d, rest = state.params["discriminator"], {"generator": g_stats, "other": state.rest["other"]}
        totals: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(batches):
            n = int(batch["x"].shape[0])
            metrics = jax.device_get(self.eval_step(g, d, rest, batch, jax.random.fold_in(key, i)))
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
        if count == 0:
            raise ValueError("evaluate() got no batches")
        return {name: total / count for name, total in totals.items()}

    def _generate_impl(self, g_params, d_params, rest, key, labels, *, n_samples: int) -> jax.Array:
        model = self._model(g_params, d_params, rest, graphdef=self.eval_graphdef)
        kwargs = {"labels": labels} if labels is not None else {}
        return model.generate(n_samples=n_samples, rngs=nnx.Rngs(key), **kwargs)

    def generate(self, state: TrainState, n_samples: int, *, seed: int = 0, labels=None) -> np.ndarray:
        """Samples of the EMA generator: `[n_samples, *input_shape]`.

        Conditional models cycle through the classes when `labels` is None.

        Raises:
          ValueError: labels given to an unconditional model.
        """
        model = self.model_from_state(state)
        if self.conditional and labels is None:
            labels = cycled_class_labels(n_samples, model.num_classes)
        model.check_labels(labels, n_samples)
        g_params, g_stats = self._sampling_generator(state)
        out = self._generate(g_params, state.params["discriminator"], {"generator": g_stats, "other": state.rest["other"]},
                             jax.random.PRNGKey(seed), labels, n_samples=n_samples)
        return np.asarray(out)
