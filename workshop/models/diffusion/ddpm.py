"""DDPM: denoising diffusion probabilistic models with a U-Net or DiT denoiser.

Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"
(arXiv:2006.11239). Images in [0, 1] are mapped to x0 = 2 x - 1 in [-1, 1];
training draws t ~ U{0..T-1} and x_t ~ q(x_t | x0) and regresses the
network on the epsilon, x0 or v target (`schedules.py`), plainly or with
min-SNR weights (Hang et al. 2023, arXiv:2303.09556). Class-conditional
models (`num_classes` set) drop labels with probability `label_dropout`
during training and sample with classifier-free guidance (Ho & Salimans
2022, "Classifier-Free Diffusion Guidance", arXiv:2207.12598):
eps = eps_uncond + w (eps_cond - eps_uncond), w = `guidance_scale`
(1 = plain conditional sampling).

`log_prob` is the variational bound of Ho et al. (their eq. 5) on the
probability of the 8-bit image, with the discretised Gaussian decoder at
t = 0, in nats; the sum over timesteps can be estimated without bias from a
stratified sample of timesteps (`num_samples`). With `likelihood="ode"` it is
instead the log-likelihood through the probability-flow ODE (Song et al.
2021, arXiv:2011.13456): in the variables x~ = x_t / alpha_t and
sigma = sigma_t / alpha_t the ODE is dx~/d ln(sigma) = x~ - x0_hat (the
flow DDIM and the "heun" sampler follow), integrated from the first
timestep's sigma to the last's, where x~ ~ N(0, (1 + sigma^2) I); the data
is taken as the draw at the first timestep, as Song et al. start at a small
epsilon, and 8-bit images are uniformly dequantised.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.registry import register_model, validate_parameters
from workshop.models.diffusion import ode, schedules
from workshop.models.diffusion.backbones import BACKBONES, BackboneParameters, ClassConditioning, backbone_name, make_backbone
from workshop.models.diffusion.samplers import check_sampler, clip_x0, run_sampler
from workshop.models.diffusion.vlb import variational_bound
from workshop.models.layers import compiled_sampling

__all__ = ["BACKBONES", "DDPM", "DDPMParameters"]


class DDPMParameters(BackboneParameters):
    """`parameters` of "ddpm"."""

    model_config = ConfigDict(extra="forbid")

    beta_schedule: Literal["linear", "cosine", "sigmoid"] = "linear"
    prediction_type: Literal["epsilon", "x0", "v"] = "epsilon"
    loss_weighting: Literal["plain", "min_snr"] = "plain"
    min_snr_gamma: float = Field(5.0, gt=0.0, description="gamma of min-SNR weighting")
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="label drop rate for classifier-free guidance")
    sampler: Literal["ddpm", "ddim", "dpm_solver_pp_2m", "heun"] = "ddim"
    sampling_steps: PositiveInt = Field(50, description="default steps of generate")
    eta: float = Field(0.0, ge=0.0, description="DDIM stochasticity")
    guidance_scale: float = Field(1.0, ge=0.0, description="default classifier-free guidance scale")
    clip_denoised: bool = Field(True, description="clip x0 estimates to [-1, 1] while sampling")
    vlb_samples: PositiveInt | None = Field(None, description="timesteps log_prob draws; None = all T-1 (exact sum)")
    likelihood: Literal["variational_bound", "ode"] = Field(
        "variational_bound", description="log_prob: Ho et al.'s bound, or through the probability-flow ODE")
    likelihood_divergence: Literal["exact", "hutchinson"] = Field(
        "hutchinson", description="the ODE likelihood's divergence (Hutchinson: Rademacher probes)")


def _parameters(config: ModelConfiguration) -> DDPMParameters:
    parsed = validate_parameters(config.model_type, config.parameters)
    return parsed if isinstance(parsed, DDPMParameters) else DDPMParameters.model_validate(config.parameters)


@register_model("ddpm", family="diffusion", parameters=DDPMParameters,
                description="Denoising diffusion probabilistic model (Ho et al. 2020), U-Net or DiT")
class DDPM(ClassConditioning, nnx.Module):
    """A DDPM over images `[B, H, W, C]` in [0, 1].

    Args:
      config: `input_shape` (H, W, C), `num_timesteps` T, `backbone_type`
        ("unet" or "dit"), `encoder_features` (the U-Net's level widths) and
        `parameters` (see `DDPMParameters`).
      rngs: `params` stream (or default) for the initialisers.
      condition_channels: extra input channels the denoiser sees (used by
        conditional variants; 0 for plain DDPM).
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs, condition_channels: int = 0):
        p = _parameters(config)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.backbone_type = backbone_name(config)
        self.schedule = schedules.make_schedule(p.beta_schedule, config.num_timesteps)
        self.num_timesteps = int(config.num_timesteps)
        self.prediction_type = p.prediction_type
        self.loss_weighting = p.loss_weighting
        self.min_snr_gamma = float(p.min_snr_gamma)
        self.label_dropout = float(p.label_dropout)
        self.sampler, self.sampling_steps, self.eta = p.sampler, int(p.sampling_steps), float(p.eta)
        self.guidance_scale, self.clip_denoised = float(p.guidance_scale), bool(p.clip_denoised)
        self.vlb_samples = p.vlb_samples
        self.likelihood, self.likelihood_divergence = p.likelihood, p.likelihood_divergence
        if p.likelihood == "ode":
            self.likelihood_estimate = "exact (ODE)"
            self.likelihood_data = ode.dequantized_likelihood_data("dopri5", p.likelihood_divergence, 1)
        else:  # Ho et al. 2020 eq. 5: a lower bound on log p
            self.likelihood_estimate = "variational bound"
            self.likelihood_data = ("8-bit images: the discretised Gaussian decoder integrates each pixel's bin "
                                    "(Ho et al. 2020)")
        check_sampler(self.sampler, self.sampling_steps, self.num_timesteps)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
        c = self.input_shape[-1]
        self.backbone = make_backbone(config, p, in_channels=c + condition_channels, out_channels=c, rngs=rngs)

    # ------------------------------------------------------------ internals
    def _network(self, x_t: jax.Array, t: jax.Array, labels: jax.Array | None,
                 condition: jax.Array | None) -> jax.Array:
        inputs = x_t if condition is None else jnp.concatenate([x_t, condition.astype(x_t.dtype)], axis=-1)
        return self.backbone(inputs, t, labels)

    def denoiser(self, *, labels: jax.Array | None = None, guidance_scale: float = 1.0,
                 condition: jax.Array | None = None):
        """`(x_t [B, H, W, C], t [B]) -> (x0_hat, eps_hat)`, guidance applied, for the samplers.

        Args:
          labels: `[B]` validated labels (conditional models) or None.
          guidance_scale: w; with w != 1 each call runs the network on the
            labelled and the "no label" batch together.
          condition: `[B, H, W, C_cond]` extra input channels, or None.
        """

        def denoise(x, t):
            alpha, sigma = self.schedule.alpha_sigma(t)
            if labels is None or guidance_scale == 1.0:
                pred = self._network(x, t, labels, condition)
                return schedules.to_x0_and_eps(self.prediction_type, pred, x, alpha, sigma)
            null = jnp.full_like(labels, self.num_classes)
            cond2 = None if condition is None else jnp.concatenate([condition, condition])
            pred = self._network(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                                 jnp.concatenate([labels, null]), cond2)
            pred_c, pred_u = jnp.split(pred, 2)
            # x0 and eps are affine in the prediction, so mixing predictions mixes both.
            pred = pred_u + guidance_scale * (pred_c - pred_u)
            return schedules.to_x0_and_eps(self.prediction_type, pred, x, alpha, sigma)

        return denoise

    def sampling_options(self, *, labels: Any, batch: int, sampler: str | None, steps: int | None,
                         guidance_scale: float | None) -> tuple[jax.Array | None, str, int, float]:
        """Validated (labels, sampler, steps, guidance_scale), defaults from the parameters."""
        labels = self._labels(labels, batch)
        sampler = check_sampler(self.sampler if sampler is None else sampler,
                                self.sampling_steps if steps is None else steps, self.num_timesteps)
        steps = self.sampling_steps if steps is None else int(steps)
        return labels, sampler, steps, self._guidance_scale(guidance_scale)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 condition: jax.Array | None = None) -> dict[str, jax.Array]:
        """One noisy draw per example and the network's prediction.

        Args:
          x: `[B, H, W, C]` images in [0, 1].
          rngs: the `sample` stream (or default) draws t, the noise and the label drops.
          labels: `[B]` integer classes (conditional models only).
          condition: `[B, H, W, C_cond]` extra input channels (conditional variants).

        Returns:
          `prediction`, `target` `[B, H, W, C]`, `weight` and `t` `[B]`.
        """
        batch = x.shape[0]
        labels = self._labels(labels, batch)
        x0 = 2.0 * jnp.asarray(x, jnp.float32) - 1.0
        t = jax.random.randint(rngs.sample(), (batch,), 0, self.num_timesteps)
        noise = jax.random.normal(rngs.sample(), x0.shape)
        alpha, sigma = self.schedule.alpha_sigma(t)
        x_t = self.schedule.q_sample(x0, t, noise)
        if labels is not None and self.label_dropout > 0.0:
            drop = jax.random.bernoulli(rngs.sample(), self.label_dropout, (batch,))
            labels = jnp.where(drop, self.num_classes, labels)
        prediction = self._network(x_t, t.astype(jnp.float32), labels, condition)
        return {
            "prediction": prediction,
            "target": schedules.prediction_target(self.prediction_type, x0, noise, alpha, sigma),
            "weight": schedules.loss_weight(self.loss_weighting, self.prediction_type, alpha, sigma,
                                            self.min_snr_gamma),
            "t": t,
        }

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: the weighted mean squared error per pixel; `mse`: unweighted."""
        err = jnp.mean(jnp.square(outputs["prediction"] - outputs["target"]), axis=tuple(range(1, 4)))
        return {"loss": jnp.mean(outputs["weight"] * err), "mse": jnp.mean(err)}

    # ------------------------------------------------------------- sampling
    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 sampler: str | None = None, steps: int | None = None, guidance_scale: float | None = None,
                 eta: float | None = None, condition: jax.Array | None = None) -> jax.Array:
        """Draws samples with one of `SAMPLERS` (defaults from the parameters).

        Sample i depends only on rngs' key and i, not on n_samples.

        Args:
          n_samples: B.
          rngs: the `sample` stream (or default).
          labels: `[B]` classes (required by conditional models).
          sampler: "ddpm", "ddim", "dpm_solver_pp_2m" or "heun".
          steps: 1 <= steps <= num_timesteps.
          guidance_scale: classifier-free guidance w (conditional models).
          eta: DDIM stochasticity.
          condition: `[B, H, W, C_cond]` extra input channels (conditional variants).

        Returns:
          `[B, H, W, C]` images in [0, 1].
        """
        labels, sampler, steps, w = self.sampling_options(labels=labels, batch=n_samples, sampler=sampler,
                                                          steps=steps, guidance_scale=guidance_scale)
        denoise = self.denoiser(labels=labels, guidance_scale=w, condition=condition)
        if self.clip_denoised:
            denoise = clip_x0(denoise, self.schedule)
        x = self.sample_with(denoise, n_samples=n_samples, rngs=rngs, sampler=sampler, steps=steps,
                             eta=self.eta if eta is None else eta)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    def sample_with(self, denoise, *, n_samples: int, rngs: nnx.Rngs, sampler: str, steps: int,
                    eta: float) -> jax.Array:
        """Runs a validated sampler with a given denoiser from this model's prior draws.

        Args:
          denoise (Callable): `(x_t [B, H, W, C], t [B]) -> (x0_hat, eps_hat)` in the [-1, 1]
            data scale, any clipping or projection already applied.
          n_samples: B; sample i depends only on rngs' key and i.

        Returns:
          `[B, H, W, C]` samples in the [-1, 1] scale, unclipped.
        """
        key = rngs.sample()
        pairs = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(jnp.arange(n_samples))
        x_T = jax.vmap(lambda k: jax.random.normal(k, self.input_shape))(pairs[:, 0])
        return run_sampler(denoise, self.schedule, x_T, pairs[:, 1], sampler=sampler, steps=steps, eta=eta)

    # ----------------------------------------------------------- likelihood
    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None, condition: jax.Array | None = None) -> jax.Array:
        """Lower bound on log P(x) of 8-bit images, nats per example `[B]`.

        Args:
          x: `[B, H, W, C]` float images k / 255 in [0, 1].
          rngs: the `sample` stream draws the noise (and the timesteps).
          num_samples: K timesteps per example for the sum over t = 1..T-1
            (stratified, one draw in each of K equal strata, weighted by the
            stratum size: an unbiased estimate of the bound). None uses the
            `vlb_samples` parameter; K >= T-1 (or both None) sums every term.
          labels: `[B]` classes (conditional models): the bound on log P(x | y).
          condition: `[B, H, W, C_cond]` extra input channels (conditional variants).
        """
        labels = self._labels(labels, x.shape[0])
        if self.likelihood == "ode":
            return self._ode_log_prob(x, rngs=rngs, num_probes=num_samples, labels=labels, condition=condition)
        k = self.vlb_samples if num_samples is None else int(num_samples)
        x0 = 2.0 * jnp.asarray(x, jnp.float32) - 1.0

        def predict_x0(x_t, t):
            alpha, sigma = self.schedule.alpha_sigma(t)
            pred = self._network(x_t, t, labels, condition)
            return schedules.to_x0_and_eps(self.prediction_type, pred, x_t, alpha, sigma)[0]

        return -variational_bound(predict_x0, self.schedule, x0, rngs.sample(), num_samples=k)

    def _ode_log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_probes: int | None, labels: jax.Array | None,
                      condition: jax.Array | None) -> jax.Array:
        """log P(x) of 8-bit images through the probability-flow ODE, nats `[B]` (see the module docstring).

        In the variance-exploding form x~ = x_t / alpha_t = x0 + sigma n, sigma = sigma_t / alpha_t,
        from the first timestep's sigma to the last's (`ode.denoiser_log_likelihood`); the prior
        x~ = x_T sqrt(1 + sigma_max^2), x_T ~ N(0, I), is its N(0, (1 + sigma_max^2) I).
        """
        z = ode.dequantize(x, rngs.sample())
        abar = self.schedule.alpha_bars
        sigmas = np.sqrt((1.0 - abar) / abar)

        def denoise(x_tilde, sigma):
            t = jnp.full((x_tilde.shape[0],), self.schedule.timestep_of_log_snr(-2.0 * jnp.log(sigma)))
            alpha, sigma_t = self.schedule.alpha_sigma(t)
            x_t = x_tilde / jnp.sqrt(1.0 + sigma**2)
            pred = self._network(x_t, t, labels, condition)
            return schedules.to_x0_and_eps(self.prediction_type, pred, x_t, alpha, sigma_t)[0]

        log_pz, _ = ode.denoiser_log_likelihood(
            denoise, z, sigma_min=float(sigmas[0]), sigma_max=float(sigmas[-1]), data_variance=1.0,
            divergence=self.likelihood_divergence, key=rngs.sample(),
            num_probes=1 if num_probes is None else int(num_probes), solver="dopri5", steps=20)
        return log_pz - math.prod(self.input_shape) * ode.BIN_LOG_VOLUME

