"""EDM: the preconditioned denoiser, noise distribution, loss weight and samplers of Karras et al.

Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models" (arXiv:2206.00364). Images in [0, 1]
become x0 = 2 x - 1; the noisy data is x = x0 + sigma n. The network F
(U-Net or DiT, `backbones.py`) is wrapped so that the denoiser is

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),  c_noise = ln(sigma) / 4

(their Table 1), which keeps the input and the training target of F at unit
variance; the backbone's timestep embedding sees 1000 c_noise (the span of
DDPM timesteps). Training draws ln sigma ~ N(P_mean, P_std^2) and weights
|D(x; sigma) - x0|^2 by lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, i.e. unit weight on F's error.

Sampling walks their rho = 7 grid from sigma_max to sigma_min and then 0
with `samplers.karras_sampler` (the loop the DDPM "heun" sampler runs):
"heun" is Algorithm 1, "euler" its first-order variant, "stochastic" is
Algorithm 2 with S_churn, S_min, S_max and S_noise; "dopri5" integrates the
probability-flow ODE dx/dsigma = (x - D) / sigma adaptively from sigma_max
to sigma_min (`ode.py`) and takes the final step to 0, x = D(x; sigma_min).
Class-conditional models use classifier-free guidance on D.

`log_prob` is the log-likelihood through the same probability-flow ODE (Song
et al. 2021, arXiv:2011.13456), dx/d ln(sigma) = x - D(x; sigma) from
sigma_min to sigma_max with the instantaneous change of variables
(`ode.denoiser_log_likelihood`), prior N(0, (sigma_data^2 + sigma_max^2) I),
of the 8-bit image under uniform dequantisation (exact divergence or
Hutchinson's estimator).
"""

from __future__ import annotations

from typing import Any, Literal

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt, model_validator

from workshop.core.configuration import ModelConfiguration
from workshop.core.registry import register_model, typed_parameters
from workshop.models.diffusion import ode
from workshop.models.diffusion.backbones import BackboneParameters, ClassConditioning, backbone_name, drop_labels, guided, make_backbone
from workshop.models.diffusion.samplers import karras_sampler, karras_sigmas
from workshop.models.layers import compiled_sampling

__all__ = ["EDM", "EDMParameters", "EDM_SAMPLERS", "edm_loss_weight", "edm_preconditioning"]

EDM_SAMPLERS = ("heun", "euler", "stochastic", "dopri5")
_NOISE_SCALE = 1000.0  # the timestep embedding sees 1000 c_noise = 250 ln(sigma)


class EDMParameters(BackboneParameters):
    """`parameters` of "edm" (defaults: Karras et al.'s)."""

    model_config = ConfigDict(extra="forbid")

    sigma_data: float = Field(0.5, gt=0.0, description="std of the data in [-1, 1]")
    p_mean: float = Field(-1.2, description="mean of ln(sigma) while training")
    p_std: float = Field(1.2, gt=0.0, description="std of ln(sigma) while training")
    sigma_min: float = Field(0.002, gt=0.0, description="smallest sampling noise level")
    sigma_max: float = Field(80.0, gt=0.0, description="largest sampling noise level")
    rho: float = Field(7.0, gt=0.0, description="the grid's exponent (eq. 5)")
    sampler: Literal["heun", "euler", "stochastic", "dopri5"] = "heun"
    sampling_steps: PositiveInt = Field(18, description="grid steps N (dopri5: its first step)")
    # Algorithm 2; the defaults of s_min, s_max, s_noise are Karras et al.'s ImageNet-64 values.
    s_churn: float = Field(40.0, ge=0.0, description="stochastic sampler: total churn")
    s_min: float = Field(0.05, ge=0.0, description="stochastic sampler: churn only for sigma >= s_min")
    s_max: float = Field(50.0, ge=0.0, description="stochastic sampler: churn only for sigma <= s_max")
    s_noise: float = Field(1.003, gt=0.0, description="stochastic sampler: noise inflation")
    rtol: float = Field(1e-4, gt=0.0, description="dopri5 relative tolerance (sampling)")
    atol: float = Field(1e-4, gt=0.0, description="dopri5 absolute tolerance (sampling)")
    likelihood_divergence: Literal["exact", "hutchinson"] = Field(
        "hutchinson", description="log_prob's divergence: exact (one JVP per dimension) or Hutchinson")
    likelihood_probes: PositiveInt = Field(1, description="Rademacher probes per image (hutchinson)")
    likelihood_tolerance: float = Field(1e-5, gt=0.0, description="log_prob's dopri5 rtol and atol")
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="label drop rate for classifier-free guidance")
    guidance_scale: float = Field(1.0, ge=0.0, description="default classifier-free guidance scale")

    @model_validator(mode="after")
    def _sigma_range(self):
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}")
        return self


def edm_preconditioning(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(c_skip, c_out, c_in, c_noise) of Karras et al. Table 1, each shaped like `sigma`."""
    sigma = jnp.asarray(sigma, jnp.float32)
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1.0 / jnp.sqrt(total), jnp.log(sigma) / 4.0


def edm_loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _bcast(a: jax.Array, like: jax.Array) -> jax.Array:
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


@register_model("edm", family="diffusion", parameters=EDMParameters,
                description="EDM (Karras et al. 2022): preconditioned denoiser, Heun and stochastic samplers")
class EDM(ClassConditioning, nnx.Module):
    """An EDM over images `[B, H, W, C]` in [0, 1].

    Args:
      config: `input_shape` (H, W, C), `backbone_type` ("unet" or "dit"),
        `encoder_features` (the U-Net's level widths) and `parameters` (see `EDMParameters`).
      rngs: `params` stream (or default) for the initialisers.
    """

    likelihood_estimate = "exact (ODE)"

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = typed_parameters(config.model_type, config.parameters, EDMParameters)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.backbone_type = backbone_name(config)
        self.sigma_data, self.p_mean, self.p_std = float(p.sigma_data), float(p.p_mean), float(p.p_std)
        self.sigma_min, self.sigma_max, self.rho = float(p.sigma_min), float(p.sigma_max), float(p.rho)
        self.sampler, self.sampling_steps = p.sampler, int(p.sampling_steps)
        # Pairs, not a dict: static attributes of a module must be hashable (compiled sampling).
        self.churn = (("s_churn", float(p.s_churn)), ("s_min", float(p.s_min)), ("s_max", float(p.s_max)),
                      ("s_noise", float(p.s_noise)))
        self.rtol, self.atol = float(p.rtol), float(p.atol)
        self.label_dropout, self.guidance_scale = float(p.label_dropout), float(p.guidance_scale)
        self.likelihood_divergence, self.likelihood_probes = p.likelihood_divergence, int(p.likelihood_probes)
        self.likelihood_tolerance = float(p.likelihood_tolerance)
        self.likelihood_data = ode.dequantized_likelihood_data("dopri5", p.likelihood_divergence, p.likelihood_probes)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
        c = self.input_shape[-1]
        self.backbone = make_backbone(config, p, in_channels=c, out_channels=c, rngs=rngs)

    def denoise(self, x: jax.Array, sigma: jax.Array, *, labels: jax.Array | None = None,
                guidance_scale: float = 1.0) -> jax.Array:
        """D(x; sigma): `[B, H, W, C]` noisy data, sigma `[B]` or scalar -> `[B, H, W, C]` float32 x0 estimate."""
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
        network = lambda inp, noise, lab: self.backbone(inp, _NOISE_SCALE * noise, lab)  # noqa: E731
        f = guided(network, _bcast(c_in, x) * x, c_noise, labels, null_label=getattr(self, "num_classes", None),
                   guidance_scale=guidance_scale)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * f

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """One noise level and draw per example, and the denoiser's estimate.

        Args:
          x: `[B, H, W, C]` images in [0, 1].
          rngs: the `sample` stream (or default) draws sigma, the noise and the label drops.
          labels: `[B]` integer classes (conditional models only).

        Returns:
          `prediction` D(x0 + sigma n; sigma), `target` x0 `[B, H, W, C]`,
          `weight` lambda(sigma) and `sigma` `[B]`.
        """
        batch = x.shape[0]
        labels = self._labels(labels, batch)
        x0 = 2.0 * jnp.asarray(x, jnp.float32) - 1.0
        sigma = jnp.exp(self.p_mean + self.p_std * jax.random.normal(rngs.sample(), (batch,)))
        noisy = x0 + _bcast(sigma, x0) * jax.random.normal(rngs.sample(), x0.shape)
        if labels is not None:
            labels = drop_labels(rngs.sample(), labels, self.label_dropout, self.num_classes)
        return {"prediction": self.denoise(noisy, sigma, labels=labels), "target": x0,
                "weight": edm_loss_weight(sigma, self.sigma_data), "sigma": sigma}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: lambda(sigma)-weighted squared denoising error per pixel; `mse`: unweighted."""
        err = jnp.mean(jnp.square(outputs["prediction"] - outputs["target"]), axis=tuple(range(1, 4)))
        return {"loss": jnp.mean(outputs["weight"] * err), "mse": jnp.mean(err)}

    # ------------------------------------------------------------- sampling
    def sampling_options(self, *, labels: Any, batch: int, sampler: str | None, steps: int | None,
                         guidance_scale: float | None) -> tuple[jax.Array | None, str, int, float]:
        """Validated (labels, sampler, steps, guidance_scale), defaults from the parameters."""
        labels = self._labels(labels, batch)
        name = str(self.sampler if sampler is None else sampler).strip().lower()
        if name not in EDM_SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is unknown; known: {', '.join(EDM_SAMPLERS)}")
        steps = self.sampling_steps if steps is None else steps
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        return labels, name, int(steps), self._guidance_scale(guidance_scale)

    def sample(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None, sampler: str | None = None,
               steps: int | None = None, guidance_scale: float | None = None) -> tuple[jax.Array, jax.Array]:
        """Samples in the [-1, 1] data scale (unclipped) and the number of denoiser evaluations.

        Sample i depends only on rngs' key and i (dopri5's steps adapt to the whole batch).

        Returns:
          `(x [B, H, W, C], nfe)`: heun 2 N - 1, euler N, stochastic 2 N - 1,
          dopri5 its solver's count + 1; with guidance each runs the network twice.
        """
        labels, name, steps, w = self.sampling_options(labels=labels, batch=n_samples, sampler=sampler,
                                                       steps=steps, guidance_scale=guidance_scale)
        key = rngs.sample()
        pairs = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(jnp.arange(n_samples))
        noise = jax.vmap(lambda k: jax.random.normal(k, self.input_shape))(pairs[:, 0])
        denoise = lambda x, s: self.denoise(x, s, labels=labels, guidance_scale=w)  # noqa: E731
        x = noise * self.sigma_max
        if name == "dopri5":
            x, nfe = ode.integrate(lambda s, y: (y - denoise(y, s)) / s, x, self.sigma_max, self.sigma_min,
                                   solver="dopri5", steps=steps, rtol=self.rtol, atol=self.atol)
            return denoise(x, self.sigma_min), nfe + 1
        sigmas = karras_sigmas(self.sigma_min, self.sigma_max, steps, self.rho)
        churn = dict(self.churn) if name == "stochastic" else {}
        x = karras_sampler(denoise, x, sigmas, keys=pairs[:, 1], second_order=name != "euler", **churn)
        return x, jnp.asarray(steps if name == "euler" else 2 * steps - 1, jnp.int32)

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None) -> jax.Array:
        """Draws samples with one of `EDM_SAMPLERS` (defaults from the parameters).

        Args:
          n_samples: B.
          rngs: the `sample` stream (or default).
          labels: `[B]` classes (required by conditional models).
          sampler: "heun", "euler", "stochastic" or "dopri5".
          steps: N of the rho grid (dopri5: its first step is (sigma_min - sigma_max) / N).
          guidance_scale: classifier-free guidance w (conditional models).

        Returns:
          `[B, H, W, C]` images in [0, 1].
        """
        x, _ = self.sample(n_samples=n_samples, rngs=rngs, labels=labels, sampler=sampler, steps=steps,
                           guidance_scale=guidance_scale)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    # ----------------------------------------------------------- likelihood
    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """log P(x) of 8-bit images through the probability-flow ODE, nats per example `[B]`.

        Args:
          x: `[B, H, W, C]` float images k / 255 in [0, 1].
          rngs: the `sample` stream draws the dequantisation noise and the probes.
          num_samples: Hutchinson probes per image (None: `likelihood_probes`).
          labels: `[B]` classes (conditional models): log P(x | y), no guidance.
        """
        labels = self._labels(labels, x.shape[0])
        z = ode.dequantize(x, rngs.sample())
        log_pz, _ = ode.denoiser_log_likelihood(
            lambda y, sigma: self.denoise(y, sigma, labels=labels), z, sigma_min=self.sigma_min,
            sigma_max=self.sigma_max, data_variance=self.sigma_data**2, divergence=self.likelihood_divergence,
            key=rngs.sample(), num_probes=self.likelihood_probes if num_samples is None else int(num_samples),
            solver="dopri5", steps=self.sampling_steps, rtol=self.likelihood_tolerance,
            atol=self.likelihood_tolerance)
        return log_pz - math.prod(self.input_shape) * ode.BIN_LOG_VOLUME
