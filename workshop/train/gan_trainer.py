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

Logged per step (means over the critic updates where they apply): `d_loss`,
`g_loss`, `wasserstein_estimate` (mean D(x) - mean D(G(z)), the critic's
distance estimate), `d_real`, `d_fake`, `gradient_penalty`, `r1_penalty`,
`d_grad_norm`, `g_grad_norm`, `d_learning_rate`, `g_learning_rate`. A
collapsing generator shows as a growing `wasserstein_estimate` or a `d_loss`
near zero; divergence as exploding gradient norms.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from workshop.core import losses
from workshop.core.configuration import OptimizerConfiguration, TrainingConfiguration
from workshop.train.optimizers import make_optimizer, skip_nonfinite_update
from workshop.train.trainer import Trainer, TrainState

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
      ValueError: the model is not a GAN, or its recipe is invalid.
    """

    def __init__(self, model: nnx.Module, config: TrainingConfiguration, *,
                 discriminator_optimizer: OptimizerConfiguration | None = None):
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
        if config.parallelism != "none" or config.precision != "float32":
            raise ValueError(
                f"GANTrainer runs on one device in float32; got training.parallelism={config.parallelism!r}, "
                f"training.precision={config.precision!r} (data/FSDP meshes and mixed precision are the Trainer's "
                "so far): set them to 'none' and 'float32'"
            )
        self.config = config
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
        self.generator_has_stats = bool(jax.tree.leaves(g_stats))
        self._initial = ({"generator": g_params, "discriminator": d_params}, {"generator": g_stats, "other": other})
        d_opt = discriminator_optimizer or config.optimizer.model_copy(
            update={"learning_rate": config.optimizer.learning_rate * float(getattr(model, "d_lr_multiplier", 1.0))})
        self.g_tx, self.g_schedule = make_optimizer(config.optimizer, config.num_steps)
        self.d_tx, self.d_schedule = make_optimizer(d_opt, config.num_steps)
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.eval_step = jax.jit(self._eval_step)
        self._generate = jax.jit(self._generate_impl, static_argnames=("n_samples",))
        self._stop_reason = None

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
        return nnx.merge(graphdef or self.graphdef, g_params, d_params, rest["generator"], rest["other"], copy=True)

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
        z = jax.random.normal(k_z, (real.shape[0], self.latent_dim))
        fake = jax.lax.stop_gradient(model.generator(z, labels))
        d_real, d_fake = self._score(model.discriminator, real, fake, labels)
        loss = jnp.mean(losses.discriminator_loss(self.loss, d_real, d_fake))
        new_rest = _split_rest(model)

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
        return jnp.mean(losses.generator_loss(self.loss, scores)), _split_rest(model)

    def _ema_generator_stats(self, ema_params, d_params, rest, labels, z):
        # The averaged generator's own running statistics: one forward pass in training mode.
        ema_rest = {"generator": ema_params["batch_stats"], "other": rest["other"]}
        model = self._model(ema_params["params"], d_params, ema_rest)
        model.generator(z, labels)
        return _split_rest(model)["generator"]

    def _train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        real = jnp.asarray(batch["x"], jnp.float32)
        if real.shape[0] % self.n_critic:
            raise ValueError(f"a GAN step with n_critic={self.n_critic} needs a batch of n_critic * m examples; "
                             f"got {real.shape[0]} (set data.batch_size to a multiple of {self.n_critic})")
        m = real.shape[0] // self.n_critic
        real = real.reshape(self.n_critic, m, *real.shape[1:])
        labels = jnp.asarray(batch["label"], jnp.int32).reshape(self.n_critic, m) if self.conditional else None
        g_params = state.params["generator"]

        def critic_update(carry, inputs):
            d_params, d_opt, rest = carry
            x, y, i = inputs
            grad_fn = jax.value_and_grad(self._critic_objective, has_aux=True)
            (_, (metrics, rest)), grads = grad_fn(d_params, g_params, rest, x, y, jax.random.fold_in(key, i))
            updates, d_opt = self.d_tx.update(grads, d_opt, d_params)
            metrics["d_grad_norm"] = optax.tree.norm(grads)
            return (optax.apply_updates(d_params, updates), d_opt, rest), metrics

        carry = (state.params["discriminator"], state.opt_state["discriminator"], state.rest)
        ys = labels if labels is not None else jnp.zeros((self.n_critic, 0), jnp.int32)
        (d_params, d_opt, rest), d_metrics = jax.lax.scan(
            lambda c, xs: critic_update(c, (xs[0], xs[1] if labels is not None else None, xs[2])),
            carry, (real, ys, jnp.arange(self.n_critic)))

        g_labels = None if labels is None else labels[0]
        z = jax.random.normal(jax.random.fold_in(key, self.n_critic), (m, self.latent_dim))
        (g_loss, rest), g_grads = jax.value_and_grad(self._generator_objective, has_aux=True)(
            g_params, d_params, rest, g_labels, z)
        updates, g_opt = self.g_tx.update(g_grads, state.opt_state["generator"], g_params)
        g_params = optax.apply_updates(g_params, updates)
        ema = state.ema_params
        if ema is not None:
            # The warm-up of `Trainer`: early averages do not keep the initialisation for long.
            decay = jnp.minimum(self.config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
            ema = {"params": optax.incremental_update(g_params, ema["params"], step_size=1.0 - decay),
                   "batch_stats": ema["batch_stats"]}
            if self.generator_has_stats:
                ema["batch_stats"] = self._ema_generator_stats(ema, d_params, rest, g_labels, z)
        metrics = {name: jnp.mean(value) for name, value in d_metrics.items()}
        metrics.update(g_loss=g_loss, g_grad_norm=optax.tree.norm(g_grads),
                       g_learning_rate=self.g_schedule(state.step), d_learning_rate=self.d_schedule(state.step))
        new_state = state.replace(step=state.step + 1, params={"generator": g_params, "discriminator": d_params},
                                  rest=rest, opt_state={"generator": g_opt, "discriminator": d_opt}, ema_params=ema)
        # A non-finite step changes nothing but the data position (see Trainer.fit, max_bad_steps).
        return skip_nonfinite_update(metrics, new_state, state.replace(step=new_state.step))

    # ------------------------------------------------------ eval and sampling
    def _eval_step(self, g_params, d_params, rest, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
        # `rest["generator"]` holds the sampling generator's batch statistics.
        model = self._model(g_params, d_params, rest, graphdef=self.eval_graphdef)
        real = jnp.asarray(batch["x"], jnp.float32)
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
            labels = jnp.arange(n_samples) % model.num_classes
        model.check_labels(labels, n_samples)
        g_params, g_stats = self._sampling_generator(state)
        out = self._generate(g_params, state.params["discriminator"], {"generator": g_stats, "other": state.rest["other"]},
                             jax.random.PRNGKey(seed), labels, n_samples=n_samples)
        return np.asarray(out)
