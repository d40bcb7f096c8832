"""The protocols every generative model and every consumer of models share.

Trainers, metrics and binaries are written against these protocols, never
against concrete classes: anything that has the methods is a model.

* `GenerativeModel`: the contract of every family (forward pass, sampling, loss).
* `LikelihoodModel`: models that give log p(x) or a bound on it (flows,
  autoregressive models exactly; VAEs by importance weighting; diffusion by
  the variational bound; EBMs by AIS).
* `LatentModel`: models with an encoder and a decoder.
* `Autoencoder`: an encoder to a code space and a decoder back, with the code
  shape and dtype declared, so a second-stage model (a prior over the codes)
  can be built on a trained first stage without importing its family.
* `AutoencoderLikelihood`: an autoencoder whose encoder is a distribution
  q(codes|x) and whose decoder is a likelihood p(x|codes), so that a
  two-stage model can bound log p(x) through the decoder.
* `ConditionalModel`: models that take class labels; the trainer passes
  `labels=batch["label"]` to `__call__` and callers pass `labels=` to `generate`.

Capabilities that consumers (the experiment, the sample binary) ask for with
`isinstance(model, P)` instead of probing attributes:

* `InputChecks`: models that validate a whole data source before training
  (token models: every id inside the vocabulary).
* `SamplingOptions`: models that validate sampling options eagerly, on Python
  values, before `generate` is traced.
* `ElboModel`: models that also give the evidence lower bound, and
  `JointElboModel` those that give log p(x) and the ELBO from the same
  importance samples (so that IWAE >= ELBO holds for every example).
* `SuperResolutionModel`: models that upsample a low-resolution input of shape
  `low_res_shape`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

__all__ = [
    "Autoencoder",
    "AutoencoderLikelihood",
    "ConditionalModel",
    "ElboModel",
    "GenerativeModel",
    "InputChecks",
    "JointElboModel",
    "LatentModel",
    "LikelihoodModel",
    "SamplingOptions",
    "SuperResolutionModel",
]


@runtime_checkable
class GenerativeModel(Protocol):
    """Base protocol for all generative models."""

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> dict[str, Any]:
        """Forward pass on a batch `x` of shape `[B, *input_shape]`.

        Returns a dict of arrays that `loss_fn` consumes.
        """
        ...

    def generate(self, *, n_samples: int, rngs: nnx.Rngs | None = None, **conditioning: Any) -> jax.Array:
        """Draws `n_samples` samples, an array of shape `[n_samples, *input_shape]`."""
        ...

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, Any]) -> dict[str, jax.Array]:
        """Returns a dict with a scalar `"loss"` to minimise and any other scalar metrics."""
        ...


@runtime_checkable
class LikelihoodModel(Protocol):
    """A model that gives log p(x), or a lower bound on it, in nats per example."""

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Log-likelihood of each example: `[B, *input_shape] -> [B]` (nats)."""
        ...


@runtime_checkable
class LatentModel(Protocol):
    """A model with an encoder to a latent space and a decoder back."""

    def encode(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """`[B, *input_shape] -> [B, *latent_shape]`."""
        ...

    def decode(self, z: jax.Array) -> jax.Array:
        """`[B, *latent_shape] -> [B, *input_shape]`."""
        ...


@runtime_checkable
class Autoencoder(Protocol):
    """A first stage for two-stage models (latent diffusion, Rombach et al. 2022; VQ-VAE-2 priors,
    Razavi et al. 2019): `encode_codes` maps data to codes, `decode_codes` maps codes back.

    Continuous codes (`discrete_codes` False) are float arrays of shape `[B, *code_shape]`;
    discrete codes (`discrete_codes` True) are integer indices in `[0, num_codes)` of shape
    `[B, *code_shape]`.
    """

    input_shape: tuple[int, ...]
    code_shape: tuple[int, ...]
    code_dtype: Any
    discrete_codes: bool
    num_codes: int | None

    def encode_codes(self, x: jax.Array) -> jax.Array:
        """`[B, *input_shape] -> [B, *code_shape]`, deterministic (no sampling, no state update)."""
        ...

    def decode_codes(self, codes: jax.Array) -> jax.Array:
        """`[B, *code_shape] -> [B, *input_shape]`, the decoder's mean."""
        ...


@runtime_checkable
class AutoencoderLikelihood(Protocol):
    """An `Autoencoder` with a posterior to sample and a decoder likelihood, for the evidence lower bound
    log p(x) >= E_q[log p(x|c) + log p(c) - log q(c|x)] of a two-stage model with prior p(c)."""

    def sample_codes(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """c ~ q(c|x) and log q(c|x): `[B, *input_shape] -> ([B, *code_shape], [B])`; a deterministic
        encoder (VQ-VAE: a one-hot posterior) returns its codes and log q = 0."""
        ...

    def decoder_log_likelihood(self, x: jax.Array, codes: jax.Array) -> jax.Array:
        """log p(x|c): `([B, *input_shape], [B, *code_shape]) -> [B]` nats."""
        ...


@runtime_checkable
class ConditionalModel(Protocol):
    """A model conditioned on integer class labels in `[0, num_classes)`."""

    num_classes: int

    def __call__(
        self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None
    ) -> dict[str, Any]: ...

    def generate(
        self, *, n_samples: int, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None
    ) -> jax.Array: ...


@runtime_checkable
class InputChecks(Protocol):
    """A model that checks a data source before any training step."""

    def check_inputs(self, x: Any) -> None:
        """Raises `ValueError` naming the offending value if `x` (`[N, *input_shape]`) cannot be modelled."""
        ...


@runtime_checkable
class SamplingOptions(Protocol):
    """A model that validates its sampling options on Python values, before tracing `generate`."""

    def sampling_options(self, *, labels: Any = None, batch: int, sampler: str | None = None,
                         steps: int | None = None, guidance_scale: float | None = None) -> Any:
        """Raises `ValueError` naming the option if the combination cannot be sampled."""
        ...


@runtime_checkable
class SuperResolutionModel(Protocol):
    """A model that generates a high-resolution image from a low-resolution one."""

    low_res_shape: tuple[int, ...]


@runtime_checkable
class ElboModel(Protocol):
    """A model that gives the evidence lower bound (Kingma & Welling 2013, arXiv:1312.6114)."""

    def elbo(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """ELBO of each example: `[B, *input_shape] -> [B]` (nats)."""
        ...


@runtime_checkable
class JointElboModel(Protocol):
    """A model that gives the IWAE bound and the ELBO from the same importance samples (Burda et al. 2015)."""

    def log_prob_and_elbo(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        """`[B, *input_shape] -> ([B], [B])`: log p(x) estimate and ELBO of each example (nats)."""
        ...
