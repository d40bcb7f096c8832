"""The "ebm" model: an energy network trained by contrastive divergence or score matching.

p_theta(x) = exp(-E_theta(x)) / Z_theta with E_theta = network(x) plus an
optional Gaussian confinement 0.5 |x - c|^2 / prior_std^2 (c the centre of
`init_range`), which keeps Z finite whatever the network does far from data.

* objective "cd": contrastive divergence with persistent chains and a replay
  buffer (Hinton 2002; Tieleman 2008; Du & Mordatch 2019, "Implicit
  Generation and Generalization in Energy-Based Models", arXiv:1903.08689).
  Each step, a batch of chains restarts from random buffer entries (a share
  `reinit_fraction` from uniform noise instead), runs `mcmc_steps` of the
  configured sampler with the parameters held fixed (gradients stopped), and
  is written back into the same buffer slots. The loss is
  mean E(x+) - mean E(x-) + energy_reg * (mean E(x+)^2 + mean E(x-)^2).
  The buffer is an `nnx.Variable` (`ReplayBuffer`, not a Param): it lives in
  the trainer's `TrainState.rest` and in every checkpoint, so a resumed run
  continues the same chains. In eval mode (`model.eval()`) it is not written.
* objective "dsm": denoising score matching (Vincent 2011, "A Connection
  Between Score Matching and Denoising Autoencoders", Neural Computation 23),
  0.5 E |sigma * (-grad_x E(x + sigma eps)) + eps|^2, needing no sampling.

Divergence: `loss_fn` reports `energy_abs_max`, the largest |E| of the batch,
and sets it to +inf when it exceeds `max_energy`; the trainer stops on a
non-finite metric with a `NonFiniteLossError` naming the step.

`log_prob` is -E(x) - log Z with log Z from annealed importance sampling
(Neal 2001; see `ais.py`): `ais_chains` chains (or `num_samples`) through
`ais_temperatures` temperatures, one HMC transition each. The estimate is
good for low-dimensional data (the 2-D toy densities); in image dimensions
it is a rough, high-variance number.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core import registry
from workshop.core.registry import register_model
from workshop.models.ebm import ais, samplers
from workshop.models.ebm.energy import EnergyNetwork
from workshop.models.layers import class_labels, compiled_sampling

__all__ = ["EBM", "EBMParameters", "ReplayBuffer"]


class EBMParameters(pydantic.BaseModel):
    """`parameters` of "ebm"."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # frozen: hashable, a static module attribute

    objective: Literal["cd", "dsm"] = Field("cd", description="contrastive divergence or denoising score matching")
    sampler: Literal["langevin", "mala", "hmc"] = Field("langevin", description="MCMC for training and generate")
    mcmc_steps: PositiveInt = Field(60, description="sampler steps per train step (negative phase)")
    generate_steps: PositiveInt | None = Field(None, description="sampler steps of generate (None: mcmc_steps)")
    step_size: PositiveFloat = Field(0.01, description="Langevin/MALA step eps, or the HMC leapfrog step")
    noise_scale: NonNegativeFloat | None = Field(None, description="Langevin noise std (None: sqrt(2*step_size))")
    grad_clip: PositiveFloat | None = Field(None, description="clip each component of grad_x E (Langevin)")
    leapfrog_steps: PositiveInt = Field(5, description="leapfrog steps per HMC proposal")
    init_range: tuple[float, float] = Field((0.0, 1.0), description="chains start uniform on [low, high]")
    clip_samples: bool = Field(True, description="clip Langevin states to init_range")
    buffer_size: NonNegativeInt = Field(10000, description="replay buffer entries (0: every chain from noise)")
    reinit_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of chains restarted from noise")
    energy_reg: NonNegativeFloat = Field(1.0, description="alpha of alpha*(E+^2 + E-^2) (cd only)")
    dsm_noise_std: PositiveFloat = Field(0.1, description="sigma of denoising score matching")
    prior_std: PositiveFloat | None = Field(None, description="std of the Gaussian confinement term (None: off)")
    max_energy: PositiveFloat = Field(1e4, description="|E| above this is reported as divergence")
    num_classes: PositiveInt | None = Field(None, description="condition on labels in [0, num_classes)")
    ais_chains: PositiveInt = Field(256, description="AIS chains of log_prob / log_partition")
    ais_temperatures: PositiveInt = Field(200, description="AIS intermediate distributions")
    ais_step_size: PositiveFloat = Field(0.1, description="HMC leapfrog step of the AIS transitions")
    ais_base_std: PositiveFloat = Field(2.0, description="std of the AIS Gaussian base, centred on init_range")

    @pydantic.field_validator("init_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"init_range must be (low, high) with low < high, got {v}")
        return v


class ReplayBuffer(nnx.Variable):
    """Persistent MCMC states `[buffer_size, *input_shape]` (state, not a trained parameter)."""


def _typed_parameters(config: ModelConfiguration) -> EBMParameters:
    """`config.parameters` checked by the "ebm" schema (errors name the key and list the valid ones)."""
    return registry.validate_parameters("ebm", config.parameters)


@register_model("ebm", family="ebm", parameters=EBMParameters,
                description="Energy-based model, CD with replay buffer or DSM (Du & Mordatch 2019)")
class EBM(nnx.Module):
    """An energy-based model with MCMC sampling and an AIS likelihood.

    Args:
      config: `input_shape`, `encoder_features` (MLP widths or conv
        channels), `backbone_type` ("mlp", "conv", or None: "conv" for
        (H, W, C) inputs) and `parameters` (see `EBMParameters`).
      rngs: `params` stream (or default) for the initialisers and the
        buffer's initial noise.
    """

    likelihood_estimate = "AIS estimate"  # Neal 2001: log Z by annealed importance sampling
    likelihood_data = "the data as given: a density, with no dequantisation"

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = _typed_parameters(config)
        self.input_shape = tuple(int(s) for s in config.input_shape)
        backbone = (config.backbone_type or ("conv" if len(self.input_shape) == 3 else "mlp")).strip().lower()
        if backbone == "conv" and len(self.input_shape) != 3:
            raise ValueError(f"backbone_type 'conv' needs an (H, W, C) input_shape, got {self.input_shape}; use 'mlp'")
        self.network = EnergyNetwork(self.input_shape, config.encoder_features, backbone=backbone,
                                     num_classes=p.num_classes, rngs=rngs)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)  # marks the model conditional for the trainer
        self.hparams = p
        self.centre = 0.5 * (p.init_range[0] + p.init_range[1])
        self.deterministic = False  # set by model.eval(): no buffer writes
        self.buffer_size = int(p.buffer_size)
        if self.buffer_size:
            self.replay_buffer = ReplayBuffer(self._noise(rngs.params(), self.buffer_size))
        else:
            self.replay_buffer = None

    # ------------------------------------------------------------ energies
    def _check_input(self, x: jax.Array) -> None:
        if tuple(x.shape[1:]) != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"model_type 'ebm' expects inputs [B, {', '.join(map(str, self.input_shape))}] "
                             f"(input_shape {self.input_shape}), got shape {tuple(x.shape)}")

    def _labels(self, labels: Any, batch_size: int) -> jax.Array | None:
        return class_labels(labels, self.hparams.num_classes, batch_size, model_name="model_type 'ebm'",
                            unconditional_hint="set parameters.num_classes")

    def _energy(self, network: EnergyNetwork, x: jax.Array, labels: jax.Array | None) -> jax.Array:
        e = network(x, labels)
        if self.hparams.prior_std is not None:
            sq = jnp.sum(jnp.square(x - self.centre).reshape(x.shape[0], -1), axis=-1)
            e = e + 0.5 * sq / self.hparams.prior_std**2
        return e

    def energy(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """E(x): `[B, *input_shape]` (and `[B]` labels when conditional) -> `[B]` float32."""
        self._check_input(x)
        return self._energy(self.network, x, self._labels(labels, x.shape[0]))

    def energy_fn(self, labels: jax.Array | None = None, *, stop_gradient: bool = False):
        """`x -> E(x)` with fixed labels, for the samplers; `stop_gradient` detaches the parameters."""
        graphdef, state = nnx.split(self.network)
        if stop_gradient:
            state = jax.lax.stop_gradient(state)

        def fn(x):
            return self._energy(nnx.merge(graphdef, state), x, labels)

        return fn

    # -------------------------------------------------------------- chains
    def _noise(self, key: jax.Array, n: int) -> jax.Array:
        low, high = self.hparams.init_range
        return samplers.chain_uniform(key, (n, *self.input_shape), low, high)

    def sample(self, x0: jax.Array, *, rngs: nnx.Rngs, num_steps: int | None = None,
               labels: jax.Array | None = None) -> samplers.SamplerResult:
        """Runs the configured sampler from `x0` `[B, *input_shape]` (parameters detached).

        Returns:
          `SamplerResult`: samples `[B, *input_shape]`, acceptance rate,
          energy trace `[num_steps + 1, B]`.
        """
        self._check_input(x0)
        labels = self._labels(labels, x0.shape[0])
        steps = self.hparams.mcmc_steps if num_steps is None else num_steps
        return self._run(self.energy_fn(labels, stop_gradient=True), x0, rngs.sample(), steps)

    def _run(self, energy_fn, x0, key, num_steps) -> samplers.SamplerResult:
        p = self.hparams
        return samplers.run_sampler(p.sampler, energy_fn, x0, key=key, num_steps=num_steps, step_size=p.step_size,
                                    noise_scale=p.noise_scale, grad_clip=p.grad_clip,
                                    clip_range=p.init_range if p.clip_samples else None,
                                    num_leapfrog_steps=p.leapfrog_steps)

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None) -> jax.Array:
        """Samples: uniform noise on `init_range`, then `generate_steps` of the configured sampler.

        Returns:
          `[n_samples, *input_shape]`.
        """
        key = rngs.sample()
        k_init, k_chain = jax.random.split(key)
        labels = self._labels(labels, n_samples)
        x0 = self._noise(k_init, n_samples)
        steps = self.hparams.generate_steps or self.hparams.mcmc_steps
        return self._run(self.energy_fn(labels, stop_gradient=True), x0, k_chain, steps).samples

    # ------------------------------------------------------------ training
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """One training forward pass.

        Args:
          x: `[B, *input_shape]` data.
          rngs: the `sample` stream (or default) drives the chains / noise.
          labels: `[B]` integer classes (conditional models only).

        Returns:
          "cd": `energy_pos`, `energy_neg` `[B]`, `samples` `[B, *input_shape]`
          (gradients stopped), `acceptance_rate` `[]`. "dsm": `energy_pos`,
          `dsm_loss` `[B]`. The buffer is updated in train mode (cd).
        """
        self._check_input(x)
        labels = self._labels(labels, x.shape[0])
        key = rngs.sample()
        if self.hparams.objective == "dsm":
            return self._dsm(x, labels, key)
        batch = x.shape[0]
        if self.replay_buffer is not None and batch > self.buffer_size:
            raise ValueError(f"the batch of {batch} chains is larger than parameters.buffer_size "
                             f"{self.buffer_size}; raise buffer_size or lower the batch size")
        k_idx, k_restart, k_noise, k_chain = jax.random.split(key, 4)
        x0 = self._noise(k_noise, batch)
        if self.replay_buffer is not None:
            idx = jax.random.choice(k_idx, self.buffer_size, (batch,), replace=False)
            restart = jax.random.uniform(k_restart, (batch,)) < self.hparams.reinit_fraction
            restart = restart.reshape(batch, *([1] * len(self.input_shape)))
            x0 = jnp.where(restart, x0, self.replay_buffer[...][idx])
        result = self._run(self.energy_fn(labels, stop_gradient=True), x0, k_chain, self.hparams.mcmc_steps)
        x_neg = jax.lax.stop_gradient(result.samples)
        if self.replay_buffer is not None and not self.deterministic:
            self.replay_buffer[...] = self.replay_buffer[...].at[idx].set(x_neg)
        return {
            "energy_pos": self._energy(self.network, x, labels),
            "energy_neg": self._energy(self.network, x_neg, labels),
            "samples": x_neg,
            "acceptance_rate": result.acceptance_rate,
        }

    def _dsm(self, x: jax.Array, labels: jax.Array | None, key: jax.Array) -> dict[str, jax.Array]:
        sigma = self.hparams.dsm_noise_std
        eps = samplers.chain_normal(key, x.shape, x.dtype)
        grad_e = jax.grad(lambda y: jnp.sum(self._energy(self.network, y, labels)))(x + sigma * eps)
        residual = eps - sigma * grad_e  # sigma * score + eps, with score = -grad E
        dsm = 0.5 * jnp.sum(jnp.square(residual).reshape(x.shape[0], -1), axis=-1)
        return {"energy_pos": self._energy(self.network, x, labels), "dsm_loss": dsm}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Batch means of the objective and diagnostics.

        Returns:
          `loss`; `energy_pos` (mean E on data); `energy_abs_max` (largest |E|,
          +inf once above `max_energy`, so the trainer stops and names the
          step); for cd also `energy_neg`, `cd_gap` = E+ - E- and
          `acceptance_rate`; for dsm `dsm_loss`.
        """
        e_pos = outputs["energy_pos"]
        energies = [e_pos]
        metrics = {"energy_pos": jnp.mean(e_pos)}
        if "dsm_loss" in outputs:
            metrics["loss"] = metrics["dsm_loss"] = jnp.mean(outputs["dsm_loss"])
        else:
            e_neg = outputs["energy_neg"]
            energies.append(e_neg)
            reg = self.hparams.energy_reg * (jnp.mean(jnp.square(e_pos)) + jnp.mean(jnp.square(e_neg)))
            metrics.update(
                loss=jnp.mean(e_pos) - jnp.mean(e_neg) + reg,
                energy_neg=jnp.mean(e_neg),
                cd_gap=jnp.mean(e_pos) - jnp.mean(e_neg),
                acceptance_rate=outputs["acceptance_rate"],
            )
        abs_max = jax.lax.stop_gradient(jnp.max(jnp.abs(jnp.concatenate(energies))))
        metrics["energy_abs_max"] = jnp.where(abs_max > self.hparams.max_energy, jnp.inf, abs_max)
        return metrics

    # ---------------------------------------------------------- likelihood
    def log_partition(self, *, rngs: nnx.Rngs, num_chains: int | None = None,
                      labels: jax.Array | int | None = None) -> ais.AISResult:
        """AIS estimate of log Z (of E(. | label) for one label when conditional).

        Uses `ais_chains` (or `num_chains`) chains, `ais_temperatures`
        temperatures, one HMC transition (`ais_step_size`, `leapfrog_steps`)
        per temperature, from N(centre, ais_base_std^2 I).
        """
        p = self.hparams
        n = int(num_chains or p.ais_chains)
        label_batch = None if labels is None else jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))
        label_batch = self._labels(label_batch, n)
        energy = self.energy_fn(label_batch)
        return ais.annealed_importance_sampling(
            lambda y: energy(y + self.centre), self.input_shape, key=rngs.sample(), num_chains=n,
            num_temperatures=p.ais_temperatures, base_std=p.ais_base_std, step_size=p.ais_step_size,
            num_leapfrog_steps=p.leapfrog_steps,
        )

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """log p(x) = -E(x) - log Z, log Z by AIS with `num_samples` chains (default `ais_chains`).

        For a conditional model, log p(x | y) with log Z(y) estimated for
        every class (num_classes AIS runs, in a `lax.map`).

        Returns:
          `[B]` nats.
        """
        e = self.energy(x, labels)
        if self.hparams.num_classes is None:
            return -e - self.log_partition(rngs=rngs, num_chains=num_samples).log_z
        key = rngs.sample()
        log_z = jax.lax.map(lambda c: self.log_partition(rngs=nnx.Rngs(jax.random.fold_in(key, c)),
                                                         num_chains=num_samples, labels=c).log_z,
                            jnp.arange(self.num_classes))
        return -e - log_z[self._labels(labels, x.shape[0])]
