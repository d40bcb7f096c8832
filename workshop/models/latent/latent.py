"""Two-stage generative models: a learned prior over the codes of a frozen, trained autoencoder.

* Continuous codes, a diffusion (or flow) prior: latent diffusion, Rombach
  et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
  (arXiv:2112.10752). The codes (the posterior mean of a KL autoencoder) are
  multiplied by `latent_scale`, which gives them unit variance on the
  training data (their section 4.3.2), and handed to the prior.
* Discrete codes, an autoregressive prior: van den Oord et al. 2017,
  "Neural Discrete Representation Learning" (arXiv:1711.00937, section
  4.1: a PixelCNN over the VQ-VAE's code map), as in VQ-VAE-2 (Razavi et al.
  2019, arXiv:1906.00446) and VQGAN (Esser et al. 2021, with a Transformer).

The first stage is any model with the `Autoencoder` protocol, built from a
workdir through `stage_one.load_stage_one` (or given in memory) and frozen
(`stage_one.freeze`): its weights are not `nnx.Param`s, so training the
whole model updates the prior only, in one compiled step. The prior is any
registered model, built from `parameters.prior` (a `ModelConfiguration`
without `input_shape`: it is the code shape).

The continuous families here model data in [0, 1] (mapped to [-1, 1]) and
clip their samples to it, so the scaled codes are handed over as
u = 1/2 + latent_scale * z / (2 latent_range): unit-variance codes within
+-latent_range (3: 99.7% of a Gaussian) fit in the prior's range.

`generate` samples the prior and decodes. `log_prob` is the evidence lower
bound through the decoder, log p(x) >= E_q[log p(x|c) + log p(c) - log q(c|x)]
(one draw of c ~ q(c|x)); with a VQ-VAE the posterior is one-hot and
log p(c) is the prior's exact log-likelihood of the code map
(`code_log_prob`), the quantity the VQ-VAE papers report in bits per code.
With continuous codes, log p(c) comes from the prior's estimate of the
probability of the 1/255-wide bin around u, taken as a density.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveFloat

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration
from workshop.core.protocols import Autoencoder, AutoencoderLikelihood, LikelihoodModel, SamplingOptions
from workshop.core.registry import register_model, typed_parameters
from workshop.models.latent import stage_one
from workshop.models.layers import compiled_sampling

__all__ = ["LatentModel", "LatentParameters"]

# The continuous families' log_prob is the probability of a 1/255-wide bin of their [0, 1] data.
_PRIOR_BIN_WIDTH = 1.0 / 255.0
# Options of `generate` passed on to the prior when given.
_SAMPLING_OPTIONS = ("sampler", "steps", "guidance_scale", "eta", "temperature", "top_k", "top_p")


class LatentParameters(pydantic.BaseModel):
    """`parameters` of "latent"."""

    model_config = ConfigDict(extra="forbid")

    prior: dict[str, Any] = Field(description="the prior's ModelConfiguration (model_type, parameters, ...); "
                                              "its input_shape defaults to the code shape")
    autoencoder_workdir: str | None = Field(None, description="workdir of the trained first stage")
    autoencoder_checkpoint: str | None = Field(
        None, description="the first stage's checkpoint directory (recorded by training; default: the newest)")
    autoencoder_hash: str | None = Field(
        None, description="SHA-256 of the first stage's weights (recorded by training; a changed one is refused)")
    latent_scale: PositiveFloat | None = Field(
        None, description="continuous codes: the factor giving them unit variance (estimated on the training data "
                          "when None, then recorded)")
    latent_range: PositiveFloat = Field(3.0, description="continuous codes: scaled codes in [-r, r] fill the "
                                                         "prior's [0, 1] data range")
    scale_examples: pydantic.PositiveInt = Field(2048, description="training examples the latent_scale "
                                                                    "estimate reads")

    @pydantic.field_validator("prior")
    @classmethod
    def _prior_configuration(cls, prior: dict[str, Any]) -> dict[str, Any]:
        if "model_type" not in prior:
            raise ValueError("the prior needs a model_type, e.g. prior=dict(model_type='ddpm', ...)")
        config = ModelConfiguration.model_validate(prior)  # bad parameters fail here
        family = config.family  # an unknown model_type fails here, naming the known ones
        if config.model_type == "latent":
            raise ValueError("the prior of a latent model cannot itself be a latent model")
        if family == "gan":
            raise ValueError(f"prior model_type {config.model_type!r} is a GAN: a prior needs the one-step "
                             "trainer; use a diffusion, flow or autoregressive model")
        return prior


@register_model("latent", family="vae", parameters=LatentParameters,
                description="A prior (diffusion, flow, PixelCNN, Transformer) over a frozen autoencoder's codes")
class LatentModel(nnx.Module):
    """A learned prior over the codes of a frozen autoencoder (see the module docstring).

    Args:
      config: `input_shape` (the data's, which must be the autoencoder's) and
        `parameters` (see `LatentParameters`).
      rngs: initialises the prior.
      autoencoder: a trained first stage in memory; None loads the one of
        `parameters.autoencoder_workdir` (`stage_one.load_stage_one`).

    Raises:
      ValueError: no first stage, one that is not an `Autoencoder`, an input
        shape that differs from the autoencoder's, a prior that does not fit
        the codes; `stage_one.StageOneChangedError` when the recorded
        checkpoint or content hash differ from the first stage found.
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs, autoencoder: nnx.Module | None = None):
        p = typed_parameters(config.model_type, config.parameters, LatentParameters)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        if autoencoder is None:
            if p.autoencoder_workdir is None:
                raise ValueError("model_type 'latent' needs its first stage: set parameters.autoencoder_workdir to "
                                 "the workdir of a trained autoencoder (e.g. --config.model.parameters."
                                 "autoencoder_workdir=runs/kl_autoencoder)")
            found = stage_one.load_stage_one(p.autoencoder_workdir, p.autoencoder_checkpoint)
            if p.autoencoder_hash is not None and found.content_hash != p.autoencoder_hash:
                raise stage_one.StageOneChangedError(
                    f"the first stage {found.checkpoint} has changed since this model was trained on it: its weights "
                    f"hash to {found.content_hash[:16]}..., the recorded hash is {p.autoencoder_hash[:16]}...; "
                    "retrain the second stage on it, or restore the first stage's checkpoint")
            autoencoder, self.autoencoder_checkpoint, self.autoencoder_hash = (
                found.model, found.checkpoint, found.content_hash)
        else:
            self.autoencoder_checkpoint, self.autoencoder_hash = None, stage_one.content_hash(autoencoder)
        if not isinstance(autoencoder, Autoencoder):
            name = getattr(autoencoder, "model_type", type(autoencoder).__name__)
            raise ValueError(f"the first stage ({name!r}) is not an autoencoder: it has no encode_codes/decode_codes "
                             "(the Autoencoder protocol); train a vae, beta-vae or vqvae as the first stage")
        if tuple(autoencoder.input_shape) != self.input_shape:
            raise ValueError(f"input_shape {self.input_shape} differs from the first stage's "
                             f"{tuple(autoencoder.input_shape)}: set model.input_shape to the autoencoder's")
        self.autoencoder = stage_one.freeze(autoencoder)
        self.code_shape = tuple(int(s) for s in autoencoder.code_shape)
        self.discrete_codes = bool(autoencoder.discrete_codes)
        self.num_codes = int(autoencoder.num_codes) if self.discrete_codes else None
        self.latent_scale = 1.0 if p.latent_scale is None else float(p.latent_scale)
        self.latent_range = float(p.latent_range)
        self.prior = self._build_prior(p.prior, rngs)
        self.prior_shape = tuple(self.prior.input_shape)
        if self.discrete_codes:
            self.likelihood_estimate = "variational bound (through the decoder; exact prior over the codes)"
        else:
            self.likelihood_estimate = ("variational bound (through the decoder; the prior's estimate of "
                                        "1/255-wide latent bins taken as a density)")
        self.likelihood_data = "the data as the first stage's decoder models it"

    # ------------------------------------------------------------ internals
    def _build_prior(self, prior: dict[str, Any], rngs: nnx.Rngs) -> nnx.Module:
        prior = dict(prior)
        spec = registry.get_model_spec(prior["model_type"])
        codes = "discrete" if self.discrete_codes else "continuous"
        if self.discrete_codes != (spec.family == "autoregressive"):
            raise ValueError(f"prior model_type {spec.model_type!r} ({spec.family}) does not fit the {codes} codes "
                             f"of the first stage: discrete codes need an autoregressive prior (pixelcnn, "
                             f"transformer), continuous ones a diffusion or flow prior")
        size = math.prod(self.code_shape)
        if "input_shape" in prior:
            shape = tuple(int(s) for s in prior["input_shape"])
            if math.prod(shape) != size:
                raise ValueError(f"prior input_shape {shape} does not hold the {size} codes of shape {self.code_shape}")
        else:  # a 2-D code map becomes a one-channel image for image priors
            shape = (*self.code_shape, 1) if self.discrete_codes and len(self.code_shape) == 2 else self.code_shape
        prior["input_shape"] = list(shape)
        if self.discrete_codes:  # the prior's alphabet is the codebook
            parameters = dict(prior.get("parameters", {}))
            fields = spec.parameters.model_fields if spec.parameters is not None else {}
            for name in ("num_levels", "vocab_size"):
                if name not in fields:
                    continue
                if parameters.get(name, self.num_codes) != self.num_codes:
                    raise ValueError(f"prior parameters.{name}={parameters[name]} differs from the first stage's "
                                     f"{self.num_codes} codes; leave it out")
                parameters[name] = self.num_codes
            prior["parameters"] = parameters
        config = ModelConfiguration.model_validate(prior)
        spec.parse_parameters(config.parameters)
        return spec.builder(config, rngs=rngs)

    def _codes(self, x: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(self.autoencoder.encode_codes(x))

    def prior_input(self, codes: jax.Array) -> jax.Array:
        """Codes `[B, *code_shape]` -> the prior's data `[B, *prior_shape]` (int codes, or u in [0, 1])."""
        codes = codes.reshape(codes.shape[0], *self.prior_shape)
        if self.discrete_codes:
            return codes.astype(jnp.int32)
        return 0.5 + codes.astype(jnp.float32) * (self.latent_scale / (2.0 * self.latent_range))

    def codes_of_prior_output(self, u: jax.Array) -> jax.Array:
        """The prior's samples `[B, *prior_shape]` -> codes `[B, *code_shape]` (inverse of `prior_input`)."""
        if self.discrete_codes:
            if jnp.issubdtype(u.dtype, jnp.floating):  # image priors return levels k / (K - 1)
                u = jnp.round(u * (self.num_codes - 1))
            return u.astype(jnp.int32).reshape(u.shape[0], *self.code_shape)
        z = (u.astype(jnp.float32) - 0.5) * (2.0 * self.latent_range / self.latent_scale)
        return z.reshape(u.shape[0], *self.code_shape)

    def _log_code_density_offset(self) -> float:
        """log of |du/dz| per code element plus the bin's log width removed: log p(z) = log P(bin) + D * this."""
        return -math.log(_PRIOR_BIN_WIDTH) + math.log(self.latent_scale / (2.0 * self.latent_range))

    def _no_labels(self, labels: Any) -> None:
        if labels is not None:
            raise ValueError("model_type 'latent' is unconditional and takes no labels")

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: Any = None) -> dict[str, Any]:
        """Encodes `x` `[B, *input_shape]` with the frozen first stage and runs the prior on the codes.

        Returns:
          `prior_x` `[B, *prior_shape]`, the prior's data, and `prior`, its outputs.
        """
        self._no_labels(labels)
        u = self.prior_input(self._codes(x))
        return {"prior_x": u, "prior": self.prior(u, rngs=rngs)}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, Any]) -> dict[str, jax.Array]:
        """The prior's loss on the codes; its other metrics prefixed `prior_` (for a PixelCNN or
        Transformer prior, `prior_nll_bits_per_dim` is the exact bits per code)."""
        metrics = self.prior.loss_fn({"x": outputs["prior_x"]}, outputs["prior"])
        return {"loss": metrics["loss"], **{f"prior_{k}": v for k, v in metrics.items() if k != "loss"}}

    # ------------------------------------------------------------- sampling
    def sampling_options(self, *, labels: Any = None, batch: int, sampler: str | None = None,
                         steps: int | None = None, guidance_scale: float | None = None) -> Any:
        """Checks the options on Python values: no labels, and the prior's own checks."""
        self._no_labels(labels)
        if isinstance(self.prior, SamplingOptions):
            return self.prior.sampling_options(labels=None, batch=batch, sampler=sampler, steps=steps,
                                               guidance_scale=guidance_scale)
        return None

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: Any = None, sampler: str | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, eta: float | None = None,
                 temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None) -> jax.Array:
        """Samples codes from the prior and decodes them with the first stage.

        The options given (not None) go to the prior's `generate` (a diffusion
        prior's sampler and steps, an autoregressive prior's temperature, ...).

        Returns:
          `[n_samples, *input_shape]` in [0, 1].

        Raises:
          ValueError: the prior's `generate` does not take an option given.
        """
        self._no_labels(labels)
        given = {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale, "eta": eta,
                 "temperature": temperature, "top_k": top_k, "top_p": top_p}
        options = {k: v for k, v in given.items() if v is not None}
        accepted = inspect.signature(self.prior.generate).parameters
        unknown = sorted(k for k in options if k not in accepted)
        if unknown:
            raise ValueError(f"the prior's generate does not take {', '.join(unknown)}; it takes: "
                             f"{', '.join(k for k in accepted if k not in ('n_samples', 'rngs'))}")
        u = self.prior.generate(n_samples=n_samples, rngs=rngs, **options)
        return self.autoencoder.decode_codes(self.codes_of_prior_output(u))

    # ----------------------------------------------------------- likelihood
    def code_log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                      num_samples: int | None = None) -> jax.Array:
        """log p(c(x)) of the codes of `x` under the prior: `[B, *input_shape] -> [B]` nats.

        Exact for discrete codes and an autoregressive prior; for continuous
        codes the prior's own estimate, as a density of the scaled codes u.
        """
        return self.prior.log_prob(self.prior_input(self._codes(x)), rngs=rngs, num_samples=num_samples)

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: Any = None) -> jax.Array:
        """The evidence lower bound through the decoder (see the module docstring): `[B]` nats.

        Args:
          x: `[B, *input_shape]`.
          rngs: the `sample` stream draws c ~ q(c|x) and the prior's own noise.
          num_samples: passed to the prior's `log_prob` (timesteps or probes).

        Raises:
          TypeError: the first stage has no decoder likelihood, or the prior no `log_prob`.
        """
        self._no_labels(labels)
        if not isinstance(self.autoencoder, AutoencoderLikelihood) or not isinstance(self.prior, LikelihoodModel):
            raise TypeError("this latent model has no likelihood: it needs a first stage with sample_codes/"
                            "decoder_log_likelihood and a prior with log_prob")
        codes, log_q = self.autoencoder.sample_codes(x, rngs.sample())
        codes = jax.lax.stop_gradient(codes)
        log_prior = self.prior.log_prob(self.prior_input(codes), rngs=rngs, num_samples=num_samples)
        if not self.discrete_codes:
            log_prior = log_prior + math.prod(self.code_shape) * self._log_code_density_offset()
        return self.autoencoder.decoder_log_likelihood(x, codes) + log_prior - log_q
