"""The adversarial training objective: critic updates, then the generator's, in one compiled step.

Follows the alternating scheme of Goodfellow et al. 2014 (arXiv:1406.2661,
algorithm 1) with `n_critic` discriminator updates per generator update
(Arjovsky et al. 2017, arXiv:1701.07875; Gulrajani et al. 2017,
arXiv:1704.00028, algorithm 1). The trainer (`workshop.train.trainer`) runs
the critic updates in a `lax.scan` inside the same `jax.jit` as the generator
update. Each player is a parameter group with its own optimizer: the
discriminator's learning rate is the configured one times `d_lr_multiplier`
(the two time-scale update rule of Heusel et al. 2017, arXiv:1706.08500).
Only the generator is averaged (EMA, Yazici et al. 2019, arXiv:1806.04498);
samples come from the averaged generator.

A step consumes one batch of `n_critic * m` real examples: critic update i
sees part i (m examples) against m fresh fakes, and the generator update
draws m fakes (with the labels of part 0 for a conditional model).

Batch normalisation (DCGAN, Radford et al. 2015, arXiv:1511.06434): both
players run in training mode inside the step; a batch-normalised
discriminator scores the real and the fake half in separate calls
(`GAN.score`), so neither half's statistics leak into the other's. The
averaged generator keeps running averages of its own: after each step it runs
once in training mode on the generator update's latents
(`refresh_averaged_statistics`), so at sampling it normalises with statistics
of the averaged weights, not of the raw generator's.

Logged per step (means over the critic updates): `d_loss`, `d_real`,
`d_fake`, `wasserstein_estimate` (mean D(x) - mean D(G(z)), the critic's
distance estimate), `gradient_penalty`, `r1_penalty`, `g_loss`; the trainer
adds `d_grad_norm`, `g_grad_norm`, `d_learning_rate`, `g_learning_rate`. A
collapsing generator shows as a growing `wasserstein_estimate` or a `d_loss`
near zero; divergence as exploding gradient norms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core import losses
from workshop.core.protocols import ParameterGroup, Update, UpdateContext

__all__ = ["AdversarialObjective", "GENERATOR_PARAMS", "check_recipe"]

# The generator's parameters; the discriminator's are the other `nnx.Param`s.
GENERATOR_PARAMS = nnx.All(nnx.Param, nnx.PathContains("generator"))
# The generator's running statistics: the averaged generator keeps its own.
GENERATOR_STATISTICS = nnx.All(nnx.BatchStat, nnx.PathContains("generator"))

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class AdversarialObjective:
    """A `TrainingObjective` for a `GAN` (built by `GAN.training_objective`).

    Attributes:
      loss: the adversarial loss's name (`workshop.core.losses`).
      n_critic: discriminator updates per generator update.
      gp_weight: weight of the gradient penalty (WGAN-GP), 0 for none.
      r1_weight: gamma of the R1 penalty (Mescheder et al. 2018,
        arXiv:1801.04406), applied as gamma / 2 * E||grad D(x)||^2.
      d_lr_multiplier: the discriminator's learning rate over the generator's.
      latent_dim: the width of z.
      conditional: whether the players take `batch["label"]`.
      separate_scoring: score real and fake examples in separate calls (a
        batch-normalised discriminator).
      generator_statistics: whether the generator has batch statistics (then
        the averaged generator keeps its own).
    """

    loss: str
    n_critic: int
    gp_weight: float
    r1_weight: float
    d_lr_multiplier: float
    latent_dim: int
    conditional: bool
    separate_scoring: bool
    generator_statistics: bool

    @property
    def groups(self) -> tuple[ParameterGroup, ...]:
        return (ParameterGroup("generator", GENERATOR_PARAMS, averaged=True, metric_prefix="g_"),
                ParameterGroup("discriminator", nnx.Param, learning_rate_multiplier=self.d_lr_multiplier,
                               averaged=False, metric_prefix="d_"))

    @property
    def updates(self) -> tuple[Update, ...]:
        return (Update("critic", "discriminator", self.critic_loss, repeat=self.n_critic),
                Update("generator", "generator", self.generator_loss))

    @property
    def averaged_statistics(self):
        return GENERATOR_STATISTICS if self.generator_statistics else None

    @property
    def refresh_averaged_statistics(self):
        return self.averaged_generator_pass if self.generator_statistics else None

    def _labels(self, batch: Batch) -> jax.Array | None:
        return jnp.asarray(batch["label"], jnp.int32) if self.conditional else None

    def _latents(self, key: jax.Array, m: int, context: UpdateContext) -> jax.Array:
        return context.split_examples(jax.random.normal(key, (m, self.latent_dim)))

    def critic_loss(self, model, batch: Batch, context: UpdateContext) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The discriminator's loss on `batch` against as many fresh fakes, plus its penalties."""
        real, labels = jnp.asarray(batch["x"], jnp.float32), self._labels(batch)
        k_z, k_gp = jax.random.split(context.key)
        graphdef, state = nnx.split(model)  # before the passes: the penalties score with fresh copies
        fake = jax.lax.stop_gradient(model.generator(self._latents(k_z, real.shape[0], context), labels))
        d_real, d_fake = model.score(real, fake, labels)
        loss = jnp.mean(losses.discriminator_loss(self.loss, d_real, d_fake))

        def critic(x):  # a fresh copy: penalties must not advance running statistics
            return nnx.merge(graphdef, state).discriminator(x, labels)

        gp = jnp.mean(losses.gradient_penalty(critic, real, fake, k_gp)) if self.gp_weight else jnp.zeros(())
        r1 = jnp.mean(losses.r1_penalty(critic, real)) if self.r1_weight else jnp.zeros(())
        total = loss + self.gp_weight * gp + 0.5 * self.r1_weight * r1
        return total, {"d_loss": loss, "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake),
                       "wasserstein_estimate": jnp.mean(d_real) - jnp.mean(d_fake),
                       "gradient_penalty": gp, "r1_penalty": r1}

    def generator_loss(self, model, batch: Batch, context: UpdateContext) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The generator's loss on as many fakes as `batch` has examples (with its labels)."""
        labels = self._labels(batch)
        z = self._latents(context.key, batch["x"].shape[0], context)
        loss = jnp.mean(losses.generator_loss(self.loss, model.discriminator(model.generator(z, labels), labels)))
        return loss, {"g_loss": loss}

    def averaged_generator_pass(self, model, batch: Batch, context: UpdateContext) -> None:
        """One training-mode pass of the averaged generator on the generator update's latents."""
        model.generator(self._latents(context.key, batch["x"].shape[0], context), self._labels(batch))


def check_recipe(objective: AdversarialObjective, discriminator_norm: str) -> None:
    """Raises `ValueError` naming the setting when the recipe cannot be trained."""
    if objective.n_critic < 1:
        raise ValueError(
            f"n_critic must be >= 1 (discriminator updates per generator update), got {objective.n_critic}")
    losses.generator_loss(objective.loss, jnp.zeros((1,)))  # an unknown loss fails here, listing the known ones
    if discriminator_norm == "batch" and (objective.gp_weight or objective.r1_weight):
        raise ValueError("a batch-normalised discriminator cannot take the gradient penalty or R1 "
                         "(they need each example scored on its own); use discriminator_norm 'layer' or 'none'")

