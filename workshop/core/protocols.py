"""The protocols every generative model and every consumer of models share.

Trainers, metrics and binaries are written against these protocols, never
against concrete classes: anything that has the methods is a model.

* `GenerativeModel`: the contract of every family (forward pass, sampling, loss).
* `LikelihoodModel`: models that give log p(x) or a bound on it (flows,
  autoregressive models exactly; VAEs by importance weighting; diffusion by
  the variational bound or the probability-flow ODE; EBMs by AIS), and
  `DescribedLikelihood` those that say which of these their `log_prob` is and
  of what data (the label printed beside every likelihood).
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
* `BatchInputs`: models whose `__call__` takes more of the batch than `x` and
  `label` (reflow's paired noise).
* `LearnsFromTeacher`: models trained on data that a trained model of another
  run makes (reflow); the experiment restores the teacher's workdir.

How a model is trained:

* `TrainingObjective`: the updates of one train step (which parameter group
  each changes, its loss, how often it repeats), for families whose step is
  more than one gradient step on `loss_fn` (GANs: critic then generator).
  `ParameterGroup`, `Update` and `UpdateContext` are its parts.
* `CustomObjective`: a model that supplies its own `TrainingObjective`; the
  trainer builds a one-update objective from `loss_fn` for every other model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import jax
from flax import nnx

__all__ = [
    "Autoencoder",
    "AutoencoderLikelihood",
    "BatchInputs",
    "ConditionalModel",
    "CustomObjective",
    "DescribedLikelihood",
    "ElboModel",
    "GenerativeModel",
    "InputChecks",
    "JointElboModel",
    "LatentModel",
    "LearnsFromTeacher",
    "LikelihoodModel",
    "ParameterGroup",
    "SamplingOptions",
    "SuperResolutionModel",
    "TrainingObjective",
    "Update",
    "UpdateContext",
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
class DescribedLikelihood(Protocol):
    """A `LikelihoodModel` that says what its `log_prob` is.

    Attributes:
      likelihood_estimate: the kind of number: "exact", "exact (ODE)",
        "importance-weighted bound", "variational bound", "dequantisation
        bound" or "AIS estimate".
      likelihood_data: what it is a likelihood of (the discretisation or
        dequantisation of the data), e.g. "binary data (binarized images):
        the Bernoulli probability mass".
    """

    likelihood_estimate: str
    likelihood_data: str


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
    """A model that generates a high-resolution image from a low-resolution one.

    Attributes:
      model_type: the registered type, for messages.
      low_res_shape: `(H / f, W / f, C)`, the shape of one low-resolution input.
    """

    model_type: str
    low_res_shape: tuple[int, ...]

    def check_low_res(self, low_res: Any, batch: int | None = None) -> jax.Array:
        """`[B, *low_res_shape]` floats in [0, 1] (uint8 divided by 255); `ValueError` naming what is wrong."""
        ...

    def downsample(self, x: jax.Array) -> jax.Array:
        """The low-resolution version the model is trained on: `[B, H, W, C] -> [B, *low_res_shape]`."""
        ...


@runtime_checkable
class BatchInputs(Protocol):
    """A model whose `__call__` takes batch entries besides `x` and `label`.

    Attributes:
      batch_inputs: batch keys passed to `__call__` as keywords of the same
        name whenever the batch has them (e.g. ("noise",)).
    """

    batch_inputs: tuple[str, ...]


@runtime_checkable
class LearnsFromTeacher(Protocol):
    """A model trained on data that a trained model of another run (its teacher) makes.

    Reflow (Liu et al. 2023, arXiv:2209.03003) trains on the (noise, sample)
    pairs of a flow; the experiment restores `teacher_workdir` (config and
    checkpoint) and caches what `teacher_data` returns in the student's
    workdir. With `init_from_teacher` the student starts from the teacher's
    (EMA) weights, as Liu et al. initialise the 2-rectified flow from the
    1-rectified one.
    """

    teacher_workdir: str | None
    init_from_teacher: bool

    def teacher_data(self, teacher: Any, source: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """The training source (`{"x": [N, ...], ...}` numpy arrays) that `teacher` makes.

        Raises `ValueError` naming the teacher when it cannot teach this model.
        """
        ...


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


# ----------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class ParameterGroup:
    """Parameters that one optimizer updates.

    Attributes:
      name: the group's key in the train state (`params[name]`,
        `opt_state[name]`) when an objective has several groups.
      filter: an NNX filter selecting the group's `nnx.Param`s; groups are
        split in order, so a later group may say `nnx.Param` for "the rest".
      learning_rate_multiplier: the group's learning rate is the configured
        optimizer's times this (the two time-scale update rule of GANs,
        Heusel et al. 2017, arXiv:1706.08500).
      averaged: whether the group has an exponential moving average (used for
        evaluation and sampling when `training.ema_decay` is set).
      metric_prefix: put before `grad_norm` and `learning_rate` in the logs
        ("" for a single group).
    """

    name: str
    filter: Any
    learning_rate_multiplier: float = 1.0
    averaged: bool = True
    metric_prefix: str = ""


class UpdateContext(Protocol):
    """What the trainer hands an update's loss besides the model and the batch.

    Attributes:
      key: uint32 `[2]`, this update's random key (the step's key for a step
        of one update; otherwise `fold_in(step key, i)` for the i-th update
        of the step, counting repetitions).
    """

    key: jax.Array

    def split_examples(self, x: jax.Array) -> jax.Array:
        """`x` `[B, ...]` with its examples spread over the devices of the run's mesh (unchanged on one)."""
        ...


@dataclasses.dataclass(frozen=True)
class Update:
    """One optimizer update of a train step.

    Attributes:
      name: what the update is called in errors ("critic", "generator").
      group: the `ParameterGroup.name` whose parameters it changes (the
        others stay fixed in its loss).
      loss: `(model, batch, context) -> (loss [], metrics)`. `model` is the
        training-mode model holding the current parameters (cast to the
        compute dtype under mixed precision), `batch` the update's part of the
        step's batch, `context` an `UpdateContext`; `metrics` is a dict of
        scalars to log. Variables other than parameters that the pass changes
        (batch statistics) are kept.
      repeat: how many times the update runs in the step, in a `lax.scan`
        inside the one compiled step. The step's batch is split into as many
        equal parts as the largest `repeat` of the objective; repetition i
        sees part i (an update that runs once sees part 0). Its metrics are
        means over the repetitions.
    """

    name: str
    group: str
    loss: Callable[[Any, dict[str, jax.Array], UpdateContext], tuple[jax.Array, dict[str, jax.Array]]]
    repeat: int = 1


@runtime_checkable
class TrainingObjective(Protocol):
    """The updates of one train step, run in order inside one compiled function.

    Attributes:
      groups: the parameter groups, each with its own optimizer state.
      updates: the updates, in order; a later update sees the parameters the
        earlier ones produced.
      averaged_statistics: an NNX filter of the non-parameter variables
        (running statistics) the averaged (EMA) model keeps of its own, or
        None: it then uses the trained model's.
      refresh_averaged_statistics: with `averaged_statistics`, `(model, batch,
        context) -> None`, run after each step on the training-mode model that
        holds the averaged parameters, to update those variables (a
        batch-normalised generator's statistics); called with the last
        update's part of the batch and its context.
    """

    groups: Sequence[ParameterGroup]
    updates: Sequence[Update]
    averaged_statistics: Any
    refresh_averaged_statistics: Callable[[Any, dict[str, jax.Array], UpdateContext], None] | None


@runtime_checkable
class CustomObjective(Protocol):
    """A model that says how it is trained, instead of one gradient step on its `loss_fn`."""

    def training_objective(self) -> TrainingObjective:
        """The objective; raises `ValueError` naming the setting if the model's recipe cannot be trained."""
        ...
