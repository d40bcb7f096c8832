"""Annealed importance sampling (AIS) estimates of the log partition function.

Neal 2001, "Annealed importance sampling" (Statistics and Computing 11;
arXiv:physics/9803008). For an energy E on R^D, Z = int exp(-E(x)) dx. AIS
anneals from a normalised Gaussian base p_0 = N(0, base_std^2 I) to
exp(-E) through the geometric path

    log f_t(x) = (1 - beta_t) log p_0(x) - beta_t E(x),  0 = beta_0 < ... < beta_T = 1,

moving each chain with an MCMC kernel that leaves f_t invariant (HMC or MALA,
with the Metropolis test, so every kernel is exact) and accumulating
log w = sum_t (beta_t - beta_{t-1}) (-E(x_{t-1}) - log p_0(x_{t-1})).
Then E[w] = Z, so log Z is estimated by log mean_n w_n, with standard error
std(w) / (sqrt(N) mean(w)) by the delta method (the estimate of log Z is
biased low by about half its squared standard error, Jensen's inequality).

The default temperatures follow the sigmoid schedule of Wu et al. 2017
("On the quantitative analysis of decoder-based generative models",
arXiv:1611.04273), dense near both ends where f_t changes fastest.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from workshop.models.ebm import samplers

__all__ = ["AISResult", "annealed_importance_sampling", "sigmoid_schedule"]

EnergyFn = Callable[[jax.Array], jax.Array]
_TRANSITIONS = ("hmc", "mala")


class AISResult(NamedTuple):
    """An AIS estimate.

    Attributes:
      log_z: `[]` the estimate of log Z (nats).
      stderr: `[]` its standard error (delta method over the chains).
      log_weights: `[num_chains]` each chain's log importance weight.
      acceptance_rate: `[]` mean acceptance of the MCMC transitions.
      samples: `[num_chains, *event_shape]` the chains' final states,
        approximate samples of exp(-E) / Z (weighted by the weights).
    """

    log_z: jax.Array
    stderr: jax.Array
    log_weights: jax.Array
    acceptance_rate: jax.Array
    samples: jax.Array


def sigmoid_schedule(num_temperatures: int, sharpness: float = 4.0) -> jax.Array:
    """Inverse temperatures `[num_temperatures + 1]` from exactly 0 to exactly 1 (Wu et al. 2017)."""
    s = jax.nn.sigmoid(sharpness * jnp.linspace(-1.0, 1.0, num_temperatures + 1))
    return (s - s[0]) / (s[-1] - s[0])


def annealed_importance_sampling(
    energy_fn: EnergyFn,
    event_shape: tuple[int, ...],
    *,
    key: jax.Array,
    num_chains: int,
    num_temperatures: int,
    base_std: float = 1.0,
    transition: str = "hmc",
    step_size: float = 0.1,
    num_leapfrog_steps: int = 5,
) -> AISResult:
    """Estimates log Z = log int exp(-E(x)) dx by AIS from N(0, base_std^2 I).

    One MCMC transition per temperature; the whole anneal is one `lax.scan`.

    Args:
      energy_fn: `[B, *event_shape] -> [B]` energies (rows independent).
      event_shape: shape of one x, e.g. `(2,)`.
      key: PRNG key.
      num_chains: N independent annealing chains (the importance samples).
      num_temperatures: T intermediate distributions (>= 1; more gives a
        lower-variance estimate, cost grows linearly).
      base_std: std of the Gaussian base; it should cover the mass of exp(-E).
      transition: "hmc" or "mala".
      step_size: step of the transition kernel.
      num_leapfrog_steps: leapfrog steps per HMC transition.

    Returns:
      `AISResult`.

    Raises:
      ValueError: a non-positive count or step, or an unknown transition.
    """
    samplers._check_positive_int("num_chains", num_chains)
    samplers._check_positive_int("num_temperatures", num_temperatures)
    samplers._check_positive("base_std", base_std)
    samplers._check_positive("step_size", step_size)
    if transition not in _TRANSITIONS:
        raise ValueError(f"transition {transition!r} is unknown; known: {', '.join(_TRANSITIONS)}")
    event_shape = tuple(int(s) for s in event_shape)
    dim = math.prod(event_shape)
    log_norm = -0.5 * dim * math.log(2.0 * math.pi * base_std**2)

    def base_log_prob(x):
        return log_norm - 0.5 * jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=-1) / base_std**2

    betas = sigmoid_schedule(num_temperatures)
    k_init, k_run = jax.random.split(key)
    x0 = base_std * samplers.chain_normal(k_init, (num_chains, *event_shape))

    def anneal(carry, inputs):
        x, log_w = carry
        beta_prev, beta, k = inputs
        log_w = log_w + (beta - beta_prev) * (-energy_fn(x).astype(jnp.float32) - base_log_prob(x))
        target = lambda y: beta * energy_fn(y).astype(jnp.float32) - (1.0 - beta) * base_log_prob(y)  # noqa: E731
        result = samplers.run_sampler(transition, target, x, key=k, num_steps=1, step_size=step_size,
                                      num_leapfrog_steps=num_leapfrog_steps)
        return (result.samples, log_w), result.acceptance_rate

    inputs = (betas[:-1], betas[1:], jax.random.split(k_run, num_temperatures))
    (x, log_w), accept = jax.lax.scan(anneal, (x0, jnp.zeros((num_chains,), jnp.float32)), inputs)
    log_z = jax.nn.logsumexp(log_w) - math.log(num_chains)
    ratio = jnp.exp(log_w - log_z)  # w / mean(w), mean 1
    stderr = jnp.std(ratio) / math.sqrt(num_chains)
    return AISResult(log_z, stderr, log_w, jnp.mean(accept), x)
