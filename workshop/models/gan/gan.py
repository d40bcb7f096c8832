"""Generative adversarial networks: one model class, five registered recipes.

A `GAN` holds a `generator` and a `discriminator` (see `networks.py`) and the
recipe that trains them: its `training_objective` (`objective.py`) gives the
trainer the alternating critic and generator updates. The registered model types differ in their defaults:

* "dcgan": Radford, Metz & Chintala 2015 (arXiv:1511.06434), the
  non-saturating loss of Goodfellow et al. 2014 (arXiv:1406.2661).
* "wgan-gp": Gulrajani et al. 2017, "Improved Training of Wasserstein GANs"
  (arXiv:1704.00028): Wasserstein loss, gradient penalty weight 10,
  5 critic updates per generator update.
* "sngan": Miyato et al. 2018, "Spectral Normalization for GANs"
  (arXiv:1802.05957): spectrally normalised discriminator, hinge loss.
* "lsgan": Mao et al. 2017 (arXiv:1611.04076), least-squares loss.
* "hinge-gan": Lim & Ye 2017, "Geometric GAN" (arXiv:1705.02894).

Every type becomes class-conditional with `num_classes` (label embedding in
the generator, projection discriminator of Miyato & Koyama 2018,
arXiv:1802.05637). Conv players are batch-normalised as in DCGAN unless
something forbids it (`generator_norm`, `discriminator_norm`: a critic with a
gradient penalty or R1 refuses batch norm; "layer" is its substitute). Batch
norm follows NNX's modes: a freshly built model is in training mode (batch
statistics); call `model.eval()` before sampling by hand so that samples use
the running averages and do not depend on each other (the trainer's
`generate` and `model_from_state` do this). `generate` draws z ~ N(0, I), optionally truncated to
[-truncation, truncation] (Brock, Donahue & Simonyan 2018, "BigGAN",
arXiv:1809.11096); `interpolate` walks the latent space along a great circle
(White 2016, "Sampling Generative Networks", arXiv:1609.04468).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt

from workshop.core import losses, registry
from workshop.core.configuration import ModelConfiguration
from workshop.core.registry import register_model
from workshop.models.gan.networks import OUTPUT_ACTIVATIONS, Discriminator, Generator
from workshop.models.gan.objective import AdversarialObjective, check_recipe
from workshop.models.layers import Upsampling, class_labels, compiled_sampling, resolve_backbone

__all__ = [
    "DCGANParameters",
    "GAN",
    "GANParameters",
    "HingeGANParameters",
    "LSGANParameters",
    "SNGANParameters",
    "WGANGPParameters",
]



class GANParameters(pydantic.BaseModel):
    """`parameters` shared by every GAN type (defaults of "dcgan")."""

    model_config = ConfigDict(extra="forbid")

    loss: Literal["non-saturating", "wasserstein", "hinge", "least-squares"] = Field(
        "non-saturating", description="adversarial loss (workshop.core.losses.ADVERSARIAL_LOSSES)")
    n_critic: int = Field(1, ge=1, description="discriminator updates per generator update")
    gp_weight: float = Field(0.0, ge=0.0, description="weight lambda of the WGAN-GP gradient penalty")
    r1_weight: float = Field(0.0, ge=0.0, description="gamma of the R1 penalty gamma/2 E||grad D(x)||^2")
    spectral_norm: bool = Field(False, description="spectrally normalise the discriminator")
    power_iterations: PositiveInt = Field(1, description="power iterations per discriminator call")
    num_classes: PositiveInt | None = Field(None, description="set for a class-conditional GAN")
    d_lr_multiplier: PositiveFloat = Field(
        1.0, description="discriminator learning rate / generator learning rate (TTUR, Heusel et al. 2017)")
    output_activation: Literal["auto", "unit_interval", "tanh", "none"] = Field(
        "auto", description="generator output; auto: [0, 1] for images, none for vectors")
    generator_norm: Literal["auto", "none", "batch"] = Field(
        "auto", description="generator normalisation; auto: batch norm for the conv backbone (DCGAN), none for MLPs")
    upsampling: Upsampling = Field("subpixel", description="conv generator's 2x upsampling (layers.Upsample)")
    discriminator_norm: Literal["auto", "none", "batch", "layer"] = Field(
        "auto", description="discriminator normalisation; auto: batch norm for a conv discriminator without "
                            "gradient penalty, R1 or spectral norm (DCGAN), none otherwise; 'layer' is the "
                            "WGAN-GP critic's substitute")


class DCGANParameters(GANParameters):
    """`parameters` of "dcgan"."""


class WGANGPParameters(GANParameters):
    """`parameters` of "wgan-gp": Wasserstein loss, gp_weight 10, n_critic 5."""

    loss: Literal["non-saturating", "wasserstein", "hinge", "least-squares"] = "wasserstein"
    n_critic: int = Field(5, ge=1, description="critic updates per generator update")
    gp_weight: float = Field(10.0, ge=0.0, description="weight lambda of the gradient penalty")


class SNGANParameters(GANParameters):
    """`parameters` of "sngan": spectral normalisation and the hinge loss."""

    loss: Literal["non-saturating", "wasserstein", "hinge", "least-squares"] = "hinge"
    spectral_norm: bool = True


class LSGANParameters(GANParameters):
    """`parameters` of "lsgan": the least-squares loss."""

    loss: Literal["non-saturating", "wasserstein", "hinge", "least-squares"] = "least-squares"


class HingeGANParameters(GANParameters):
    """`parameters` of "hinge-gan": the hinge loss."""

    loss: Literal["non-saturating", "wasserstein", "hinge", "least-squares"] = "hinge"


def _resolve_norms(p: GANParameters, backbone: str, model_type: str) -> tuple[str, str]:
    """The players' normalisations after "auto"; batch norm in a penalised critic is an error."""
    g_norm = p.generator_norm
    if g_norm == "auto":
        g_norm = "batch" if backbone == "conv" else "none"
    d_norm = p.discriminator_norm
    penalised = p.gp_weight > 0 or p.r1_weight > 0
    if d_norm == "auto":
        d_norm = "batch" if backbone == "conv" and not (penalised or p.spectral_norm) else "none"
    if d_norm == "batch" and penalised:
        raise ValueError(
            f"model_type {model_type!r}: parameters.discriminator_norm='batch' cannot be combined with "
            f"gp_weight={p.gp_weight} / r1_weight={p.r1_weight}: the gradient penalty and R1 penalise each "
            "example's own input gradient, which batch statistics mix across the batch (Gulrajani et al. 2017, "
            "section 4); use discriminator_norm='layer' or 'none'")
    return g_norm, d_norm


@register_model("dcgan", family="gan", parameters=DCGANParameters,
                description="DCGAN (Radford et al. 2015), non-saturating loss")
class GAN(nnx.Module):
    """A generator, a discriminator and the adversarial recipe that trains them.

    Args:
      config: `input_shape`, `latent_dim`, `decoder_features` (generator
        widths), `encoder_features` (discriminator widths), `backbone_type`
        and `parameters` (see `GANParameters`) are used.
      rngs: `params` stream (or default) for the initialisers.

    Attributes:
      generator, discriminator: the two players.
      loss, n_critic, gp_weight, r1_weight, d_lr_multiplier: the recipe
        (`training_objective`).
      num_classes: present only on conditional models.
    """

    _schema: type[GANParameters] = GANParameters  # registered types bring their own subclass

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = registry.typed_parameters(config.model_type, config.parameters, self._schema)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.latent_dim = int(config.latent_dim)
        self.loss = str(p.loss)
        self.n_critic = int(p.n_critic)
        self.gp_weight = float(p.gp_weight)
        self.r1_weight = float(p.r1_weight)
        self.d_lr_multiplier = float(p.d_lr_multiplier)
        self.spectral_norm = bool(p.spectral_norm)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
        backbone = resolve_backbone(config)
        activation = p.output_activation
        if activation == "auto":
            activation = "unit_interval" if len(self.input_shape) == 3 else "none"
        assert activation in OUTPUT_ACTIVATIONS
        g_norm, d_norm = _resolve_norms(p, backbone, config.model_type)
        self.generator = Generator(self.input_shape, self.latent_dim, config.decoder_features, backbone=backbone,
                                   output_activation=activation, num_classes=p.num_classes, norm=g_norm,
                                   upsampling=p.upsampling, rngs=rngs)
        self.discriminator = Discriminator(self.input_shape, config.encoder_features, backbone=backbone,
                                           spectral_norm=self.spectral_norm, num_classes=p.num_classes,
                                           power_iterations=p.power_iterations, norm=d_norm, rngs=rngs)

    # ------------------------------------------------------------ players
    def check_labels(self, labels: Any, batch_size: int) -> jax.Array | None:
        """`[B]` int32 labels for a conditional model, None for an unconditional one.

        Raises:
          ValueError: labels given to an unconditional model, or missing,
            misshaped or out of range for a conditional one.
        """
        return class_labels(
            labels, getattr(self, "num_classes", None), batch_size, model_name=f"model_type {self.model_type!r}",
            unconditional_hint="set parameters.num_classes for a class-conditional GAN (projection discriminator)",
        )

    def sample_latents(self, n_samples: int, key: jax.Array, *, truncation: float | None = None) -> jax.Array:
        """z ~ N(0, I), or truncated to [-truncation, truncation]: `[n_samples, latent_dim]`.

        Sample i's noise comes from `fold_in(key, i)`, so the first k samples
        are the same whatever `n_samples` is.
        """
        if truncation is not None and not truncation > 0:
            raise ValueError(f"truncation must be positive (or None), got {truncation}")

        def one(i):
            k = jax.random.fold_in(key, i)
            if truncation is None:
                return jax.random.normal(k, (self.latent_dim,))
            return jax.random.truncated_normal(k, -truncation, truncation, (self.latent_dim,))

        return jax.vmap(one)(jnp.arange(n_samples))

    def decode(self, z: jax.Array, *, labels: jax.Array | None = None) -> jax.Array:
        """G(z): `[B, latent_dim] -> [B, *input_shape]` float32."""
        return self.generator(z, self.check_labels(labels, z.shape[0]))

    def discriminate(self, x: jax.Array, *, labels: jax.Array | None = None) -> jax.Array:
        """D(x): `[B, *input_shape] -> [B]` float32 scores (logits for the non-saturating loss)."""
        return self.discriminator(x, self.check_labels(labels, x.shape[0]))

    def score(self, real: jax.Array, fake: jax.Array, labels: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """D on `[B, ...]` real and fake examples: `([B], [B])` scores.

        A batch-normalised discriminator scores the two halves in separate
        calls (as the DCGAN reference code does), so neither half's statistics
        leak into the other's; any other scores both in one call (power
        iterations advance once).
        """
        if self.discriminator.norm == "batch":
            return self.discriminator(real, labels), self.discriminator(fake, labels)
        both = None if labels is None else jnp.concatenate([labels, labels])
        scores = self.discriminator(jnp.concatenate([real, fake]), both)
        return scores[: real.shape[0]], scores[real.shape[0]:]

    # --------------------------------------------------------- training API
    def training_objective(self) -> AdversarialObjective:
        """The critic and generator updates the trainer runs (`objective.py`).

        Raises:
          ValueError: the recipe cannot be trained (n_critic < 1, an unknown
            loss, a batch-normalised discriminator with a penalty).
        """
        objective = AdversarialObjective(
            loss=self.loss, n_critic=int(self.n_critic), gp_weight=float(self.gp_weight),
            r1_weight=float(self.r1_weight), d_lr_multiplier=float(self.d_lr_multiplier), latent_dim=self.latent_dim,
            conditional=hasattr(self, "num_classes"), separate_scoring=self.discriminator.norm == "batch",
            generator_statistics=bool(jax.tree.leaves(nnx.state(self.generator, nnx.BatchStat))))
        check_recipe(objective, self.discriminator.norm)
        return objective

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """Scores a real batch and as many generated examples (the trainer's evaluation pass).

        Args:
          x: `[B, *input_shape]` real examples.
          rngs: the `sample` stream (or default) draws z.
          labels: `[B]` integer classes (conditional models only); the fakes
            get the same labels.

        Returns:
          `real_scores`, `fake_scores` `[B]` and `fake` `[B, *input_shape]`.
        """
        labels = self.check_labels(labels, x.shape[0])
        z = jax.random.normal(rngs.sample(), (x.shape[0], self.latent_dim))
        fake = self.generator(z, labels)
        real_scores, fake_scores = self.score(x.astype(jnp.float32), fake, labels)
        return {"real_scores": real_scores, "fake_scores": fake_scores, "fake": fake}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Both players' objectives on one forward pass: the held-out metrics of `Trainer.evaluate`.

        Training minimises each player's own loss with its penalties
        (`training_objective`); this gives the losses without penalties (they
        need the critic as a function).

        Returns:
          `d_loss`, `g_loss`, `wasserstein_estimate` (mean D(x) - mean D(G(z)))
          and `loss`, the discriminator's objective (a GAN has no single loss).
        """
        real, fake = outputs["real_scores"], outputs["fake_scores"]
        d_loss = jnp.mean(losses.discriminator_loss(self.loss, real, fake))
        return {
            "loss": d_loss,
            "d_loss": d_loss,
            "g_loss": jnp.mean(losses.generator_loss(self.loss, fake)),
            "wasserstein_estimate": jnp.mean(real) - jnp.mean(fake),
        }

    def sampling_options(self, *, labels: Any = None, batch: int, sampler: str | None = None,
                         steps: int | None = None, guidance_scale: float | None = None) -> None:
        """Checks labels eagerly; a GAN samples in one pass, so it has no sampler, steps or guidance.

        Raises:
          ValueError: labels the model cannot take (see `check_labels`), or a
            sampler, steps or guidance scale given.
        """
        given = [name for name, v in (("sampler", sampler), ("steps", steps), ("guidance_scale", guidance_scale))
                 if v is not None]
        if given:
            raise ValueError(f"model_type {self.model_type!r} draws a sample in one generator pass and takes no "
                             f"{', '.join(given)}")
        self.check_labels(labels, batch)

    # ----------------------------------------------------------- sampling
    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 truncation: float | None = None) -> jax.Array:
        """G(z) for z ~ N(0, I) (or truncated): `[n_samples, *input_shape]` float32.

        Args:
          n_samples: how many.
          rngs: the `sample` stream (or default) draws z.
          labels: `[n_samples]` (or scalar) classes, conditional models only.
          truncation: None, or the bound of a truncated normal z (smaller:
            less diverse, more typical samples).
        """
        labels = self.check_labels(labels, n_samples)
        z = self.sample_latents(n_samples, rngs.sample(), truncation=truncation)
        return self.generator(z, labels)

    def interpolate(self, z_a: jax.Array, z_b: jax.Array, num_steps: int, *, labels: Any = None,
                    spherical: bool = True) -> jax.Array:
        """Decodes `num_steps` points from `z_a` to `z_b` (both ends included).

        Args:
          z_a: the first `[latent_dim]` latent.
          z_b: the last `[latent_dim]` latent.
          num_steps: number of points.
          labels: one class (conditional models), used for every point.
          spherical: slerp (White 2016), which keeps the norm typical of a
            Gaussian z; False for a straight line.

        Returns:
          `[num_steps, *input_shape]`.
        """
        z_a = jnp.reshape(jnp.asarray(z_a, jnp.float32), (self.latent_dim,))
        z_b = jnp.reshape(jnp.asarray(z_b, jnp.float32), (self.latent_dim,))
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        if spherical:
            cos = jnp.dot(z_a, z_b) / (jnp.linalg.norm(z_a) * jnp.linalg.norm(z_b) + 1e-12)
            omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
            so = jnp.sin(omega)
            # Nearly parallel latents: slerp tends to the straight line.
            safe = so > 1e-6
            wa = jnp.where(safe, jnp.sin((1.0 - t) * omega) / jnp.where(safe, so, 1.0), 1.0 - t)
            wb = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, so, 1.0), t)
            z = wa * z_a + wb * z_b
        else:
            z = (1.0 - t) * z_a + t * z_b
        step_labels = None
        if labels is not None:
            step_labels = jnp.broadcast_to(jnp.reshape(jnp.asarray(labels), (-1,))[:1], (num_steps,))
        return self.decode(z, labels=step_labels)


# The other recipes are the same model with their own defaults (the registered
# schema is what `_parameters` reads).
register_model("wgan-gp", family="gan", parameters=WGANGPParameters,
               description="WGAN-GP (Gulrajani et al. 2017): Wasserstein loss + gradient penalty")(GAN)
register_model("sngan", family="gan", parameters=SNGANParameters,
               description="SN-GAN (Miyato et al. 2018): spectrally normalised discriminator, hinge loss")(GAN)
register_model("lsgan", family="gan", parameters=LSGANParameters,
               description="Least-squares GAN (Mao et al. 2017)")(GAN)
register_model("hinge-gan", family="gan", parameters=HingeGANParameters,
               description="Hinge-loss GAN (Lim & Ye 2017)")(GAN)
