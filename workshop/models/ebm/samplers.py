"""MCMC samplers for energy-based models, each one compiled chain (`lax.scan`).

Every sampler targets p(x) proportional to exp(-E(x)) for an energy function
`energy_fn(x) -> [B]` of a batch `x` `[B, *event_shape]` of independent
chains (row b of the output may depend on row b of the input only), so the
same code samples a trained network, a product of networks or an analytic
energy in a test.

* `langevin`: unadjusted Langevin dynamics (Roberts & Tweedie 1996,
  "Exponential convergence of Langevin distributions and their discrete
  approximations"), x' = x - eps grad E(x) + noise_scale * xi. With the
  default noise_scale = sqrt(2 eps) it is the Euler-Maruyama discretisation of
  the Langevin diffusion; a smaller noise_scale and clipped gradients are the
  SGLD-style short-run sampler of Du & Mordatch 2019 (arXiv:1903.08689).
* `mala`: the Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996;
  Besag 1994), the same proposal with an accept/reject step, so p is exactly
  invariant.
* `hmc`: Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011,
  "MCMC using Hamiltonian dynamics", arXiv:1206.1901) with a unit mass matrix
  and `num_leapfrog_steps` leapfrog steps per proposal.

Each returns a `SamplerResult` with the final states, the acceptance rate and
the energy of every chain after every step. Noise for chain b is drawn from
`fold_in(step_key, b)`, so chain b follows the same path whatever the batch
size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SAMPLERS", "SamplerResult", "chain_normal", "chain_uniform", "hmc", "langevin", "mala", "run_sampler"]

EnergyFn = Callable[[jax.Array], jax.Array]
SAMPLERS = ("langevin", "mala", "hmc")


class SamplerResult(NamedTuple):
    """What a sampler returns.

    Attributes:
      samples: `[B, *event_shape]`, the chains' final states.
      acceptance_rate: `[]`, the mean acceptance probability over steps and
        chains (1 for unadjusted Langevin, which accepts every move).
      acceptance_trace: `[num_steps]`, its mean over chains at each step.
      energy_trace: `[num_steps + 1, B]`, E of each chain's state before the
        first step and after every step.
    """

    samples: jax.Array
    acceptance_rate: jax.Array
    acceptance_trace: jax.Array
    energy_trace: jax.Array


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_positive(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return  # a traced value cannot be checked; callers validate their configuration
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _check_energy_fn(energy_fn: EnergyFn, x0: jax.Array) -> None:
    if x0.ndim < 1:
        raise ValueError(f"x0 must be a batch of chains [B, *event_shape], got shape {tuple(x0.shape)}")
    out = jax.eval_shape(energy_fn, x0)
    if tuple(out.shape) != (x0.shape[0],):
        raise ValueError(
            f"energy_fn must map a batch [B, ...] to energies [B]; for x0 of shape {tuple(x0.shape)} "
            f"it returned shape {tuple(out.shape)}"
        )


def chain_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal `[B, *rest]`, row b from `fold_in(key, b)` (independent of B)."""
    return jax.vmap(lambda b: jax.random.normal(jax.random.fold_in(key, b), shape[1:], dtype))(jnp.arange(shape[0]))


def chain_uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float, dtype=jnp.float32) -> jax.Array:
    """Uniform on `[low, high)` `[B, *rest]`, row b from `fold_in(key, b)`."""
    draw = lambda b: jax.random.uniform(jax.random.fold_in(key, b), shape[1:], dtype, low, high)  # noqa: E731
    return jax.vmap(draw)(jnp.arange(shape[0]))


def _energy_and_grad(energy_fn: EnergyFn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """E(x) `[B]` and dE/dx `[B, ...]` (rows are independent, so one VJP with ones)."""
    e, vjp = jax.vjp(energy_fn, x)
    (g,) = vjp(jnp.ones_like(e))
    return e.astype(jnp.float32), g


def _sq_norm(v: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=-1)


def _finish(x, accept_trace, energies, e0) -> SamplerResult:
    trace = jnp.concatenate([e0[None], energies], axis=0)
    return SamplerResult(x, jnp.mean(accept_trace), accept_trace, trace)


def langevin(
    energy_fn: EnergyFn,
    x0: jax.Array,
    *,
    key: jax.Array,
    num_steps: int,
    step_size: float,
    noise_scale: float | None = None,
    grad_clip: float | None = None,
    clip_range: tuple[float, float] | None = None,
) -> SamplerResult:
    """Unadjusted Langevin: x' = x - step_size * grad E(x) + noise_scale * xi.

    Args:
      energy_fn: `[B, *event_shape] -> [B]`.
      x0: `[B, *event_shape]` initial states.
      key: PRNG key.
      num_steps: number of updates (>= 1).
      step_size: eps > 0.
      noise_scale: std of the added noise; None is sqrt(2 eps), the
        discretised Langevin diffusion whose stationary law tends to p as
        eps -> 0.
      grad_clip: if set, each component of grad E is clipped to
        [-grad_clip, grad_clip] (Du & Mordatch 2019).
      clip_range: if set, states are clipped to [low, high] after each step
        (e.g. the pixel range).

    Returns:
      `SamplerResult` (acceptance rate 1).
    """
    _check_positive_int("num_steps", num_steps)
    _check_positive("step_size", step_size)
    _check_energy_fn(energy_fn, x0)
    noise_scale = jnp.sqrt(2.0 * step_size) if noise_scale is None else noise_scale

    def step(carry, key):
        x, g = carry
        if grad_clip is not None:
            g = jnp.clip(g, -grad_clip, grad_clip)
        x = x - step_size * g + noise_scale * chain_normal(key, x.shape, x.dtype)
        if clip_range is not None:
            x = jnp.clip(x, clip_range[0], clip_range[1])
        e, g = _energy_and_grad(energy_fn, x)
        return (x, g), e

    e0, g0 = _energy_and_grad(energy_fn, x0)
    (x, _), energies = jax.lax.scan(step, (x0, g0), jax.random.split(key, num_steps))
    return _finish(x, jnp.ones((num_steps,), jnp.float32), energies, e0)


def mala(
    energy_fn: EnergyFn,
    x0: jax.Array,
    *,
    key: jax.Array,
    num_steps: int,
    step_size: float,
) -> SamplerResult:
    """Metropolis-adjusted Langevin: the proposal y = x - eps grad E(x) + sqrt(2 eps) xi, accepted w.p. min(1, r).

    r = exp(E(x) - E(y)) q(x | y) / q(y | x), q(y | x) = N(y; x - eps grad E(x), 2 eps I).

    Args:
      energy_fn: `[B, *event_shape] -> [B]`.
      x0: `[B, *event_shape]`.
      key: PRNG key.
      num_steps: number of proposals (>= 1).
      step_size: eps > 0.

    Returns:
      `SamplerResult`; the acceptance rate is the mean of min(1, r).
    """
    _check_positive_int("num_steps", num_steps)
    _check_positive("step_size", step_size)
    _check_energy_fn(energy_fn, x0)

    def step(carry, key):
        x, e, g = carry
        k_noise, k_accept = jax.random.split(key)
        y = x - step_size * g + jnp.sqrt(2.0 * step_size) * chain_normal(k_noise, x.shape, x.dtype)
        e_y, g_y = _energy_and_grad(energy_fn, y)
        log_q_forward = -_sq_norm(y - x + step_size * g) / (4.0 * step_size)
        log_q_backward = -_sq_norm(x - y + step_size * g_y) / (4.0 * step_size)
        log_ratio = e - e_y + log_q_backward - log_q_forward
        return _metropolis(k_accept, log_ratio, (x, e, g), (y, e_y, g_y))

    e0, g0 = _energy_and_grad(energy_fn, x0)
    (x, _, _), (energies, accept) = jax.lax.scan(step, (x0, e0, g0), jax.random.split(key, num_steps))
    return _finish(x, accept, energies, e0)


def hmc(
    energy_fn: EnergyFn,
    x0: jax.Array,
    *,
    key: jax.Array,
    num_steps: int,
    step_size: float,
    num_leapfrog_steps: int = 5,
) -> SamplerResult:
    """Hamiltonian Monte Carlo with unit mass: fresh momenta, a leapfrog trajectory, a Metropolis test.

    H(x, p) = E(x) + |p|^2 / 2; the proposal after `num_leapfrog_steps`
    leapfrog steps of size eps is accepted w.p. min(1, exp(H_start - H_end)).

    Args:
      energy_fn: `[B, *event_shape] -> [B]`.
      x0: `[B, *event_shape]`.
      key: PRNG key.
      num_steps: number of trajectories (>= 1).
      step_size: leapfrog eps > 0.
      num_leapfrog_steps: L >= 1 (L = 1 is MALA with step eps^2 / 2).

    Returns:
      `SamplerResult`; the acceptance rate is the mean of min(1, exp(-dH)).
    """
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("num_leapfrog_steps", num_leapfrog_steps)
    _check_positive("step_size", step_size)
    _check_energy_fn(energy_fn, x0)

    def leapfrog(carry, _):
        x, p, _, g = carry
        p = p - 0.5 * step_size * g
        x = x + step_size * p
        e, g = _energy_and_grad(energy_fn, x)
        p = p - 0.5 * step_size * g
        return (x, p, e, g), None

    def step(carry, key):
        x, e, g = carry
        k_momentum, k_accept = jax.random.split(key)
        p = chain_normal(k_momentum, x.shape, x.dtype)
        (y, p_end, e_y, g_y), _ = jax.lax.scan(leapfrog, (x, p, e, g), None, length=num_leapfrog_steps)
        log_ratio = (e + 0.5 * _sq_norm(p)) - (e_y + 0.5 * _sq_norm(p_end))
        return _metropolis(k_accept, log_ratio, (x, e, g), (y, e_y, g_y))

    e0, g0 = _energy_and_grad(energy_fn, x0)
    (x, _, _), (energies, accept) = jax.lax.scan(step, (x0, e0, g0), jax.random.split(key, num_steps))
    return _finish(x, accept, energies, e0)


def _metropolis(key, log_ratio, current, proposal):
    """Accepts each chain's proposal w.p. min(1, exp(log_ratio)); NaN ratios reject."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    u = jax.vmap(lambda b: jax.random.uniform(jax.random.fold_in(key, b)))(jnp.arange(log_ratio.shape[0]))
    accepted = u < prob

    def choose(new, old):
        return jnp.where(accepted.reshape(-1, *([1] * (new.ndim - 1))), new, old)

    state = jax.tree.map(choose, proposal, current)
    return state, (state[1], jnp.mean(prob))


def run_sampler(
    name: str,
    energy_fn: EnergyFn,
    x0: jax.Array,
    *,
    key: jax.Array,
    num_steps: int,
    step_size: float,
    noise_scale: float | None = None,
    grad_clip: float | None = None,
    clip_range: tuple[float, float] | None = None,
    num_leapfrog_steps: int = 5,
) -> SamplerResult:
    """Runs the sampler `name` ("langevin", "mala" or "hmc") with its own options.

    `noise_scale`, `grad_clip` and `clip_range` apply to "langevin" only (the
    adjusted samplers keep p exactly invariant, which they would break);
    `num_leapfrog_steps` to "hmc" only.
    """
    if name == "langevin":
        return langevin(energy_fn, x0, key=key, num_steps=num_steps, step_size=step_size,
                        noise_scale=noise_scale, grad_clip=grad_clip, clip_range=clip_range)
    if name == "mala":
        return mala(energy_fn, x0, key=key, num_steps=num_steps, step_size=step_size)
    if name == "hmc":
        return hmc(energy_fn, x0, key=key, num_steps=num_steps, step_size=step_size,
                   num_leapfrog_steps=num_leapfrog_steps)
    raise ValueError(f"sampler {name!r} is unknown; known: {', '.join(SAMPLERS)}")
