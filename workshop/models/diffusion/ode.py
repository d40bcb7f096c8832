"""Probability-flow ODEs solved with diffrax: sampling and exact log-likelihoods.

A continuous-time generative model defines a velocity field v(x, t) whose
flow carries the data distribution at one end of [t0, t1] to a standard
normal prior at the other (flow matching's conditional-OT path, Lipman et
al. 2023, arXiv:2210.02747; the probability-flow ODE of a diffusion, Song et
al. 2021, arXiv:2011.13456). This module integrates such fields:

* `integrate` solves dy/dt = f(t, y) with diffrax (Kidger 2021) in one
  compiled loop: "euler" and "heun" on `steps` equal steps (`StepTo`),
  "dopri5" adaptively (Dormand & Prince 1980, `PIDController` with rtol /
  atol, first step (t1 - t0) / steps). It returns the number of function
  evaluations spent: euler n, heun 2 n (diffrax's Heun is not FSAL),
  dopri5 1 + 6 a + 7 r for a accepted and r rejected steps (first-same-as-
  last saves one stage of each accepted step; diffrax re-evaluates the
  start of a rejected one).
* `ode_log_likelihood` is the instantaneous change of variables (Chen et
  al. 2018, "Neural Ordinary Differential Equations", arXiv:1806.07366):
  log p_t0(x) = log p_t1(x_t1) + int_t0^t1 div v(x_t, t) dt, solved jointly
  with the trajectory. The divergence is exact ("exact": the trace of the
  Jacobian from one JVP per dimension, for small dimension) or Hutchinson's
  estimator ("hutchinson": eps^T (dv/dx) eps with Rademacher probes eps
  held fixed along each trajectory, FFJORD, Grathwohl et al. 2019,
  arXiv:1810.01367), unbiased for the log-likelihood because the trajectory
  itself does not depend on the probes.
* `denoiser_log_likelihood` is that likelihood for a diffusion written as
  x_sigma = x0 + sigma n (variance exploding, the form every DDPM takes after
  x_t / alpha_t, and EDM's), whose probability-flow ODE in ln(sigma) is
  dx/d ln(sigma) = x - D(x; sigma) for the denoiser D (Karras et al. 2022,
  arXiv:2206.00364, eq. 4 with s(t) = 1). `dequantize` and
  `dequantized_likelihood_data` give 8-bit images the density these
  likelihoods need, and say so beside the number.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BIN_LOG_VOLUME",
    "DIVERGENCES",
    "SOLVERS",
    "check_solver",
    "denoiser_log_likelihood",
    "dequantize",
    "dequantized_likelihood_data",
    "divergence_exact",
    "divergence_hutchinson",
    "integrate",
    "ode_log_likelihood",
    "standard_normal_log_prob",
]

SOLVERS = ("euler", "heun", "dopri5")
DIVERGENCES = ("exact", "hutchinson")

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

# log of the inverse bin width of an 8-bit level on the [-1, 1] scale (bins 2 / 256 wide): the
# log-probability of a discrete image is log p(z) - D * BIN_LOG_VOLUME for its dequantised z.
BIN_LOG_VOLUME = math.log(128.0)


def check_solver(solver: str, steps: Any) -> str:
    """Validates an ODE solver name and step count; returns the normalised name.

    Raises:
      ValueError: unknown solver (listing the known ones) or steps < 1.
    """
    name = str(solver).strip().lower()
    if name not in SOLVERS:
        raise ValueError(f"sampler {solver!r} is unknown; known: {', '.join(SOLVERS)}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return name


def integrate(vector_field: Callable[[jax.Array, Any], Any], y0: Any, t0: float, t1: float, *, solver: str,
              steps: int, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096) -> tuple[Any, jax.Array]:
    """Solves dy/dt = vector_field(t, y) from t0 to t1 (either direction).

    Args:
      vector_field: `(t scalar, y pytree) -> pytree like y`.
      y0: the state at t0 (a pytree of arrays).
      solver: "euler", "heun" (`steps` equal steps) or "dopri5" (adaptive).
      steps: the fixed solvers' step count; dopri5's first step is (t1 - t0) / steps.
      rtol, atol: dopri5's tolerances.
      max_steps: dopri5 fails (an error at run time) after this many steps.

    Returns:
      `(y1, nfe)`: the state at t1 and the int32 number of vector-field evaluations.
    """
    name = check_solver(solver, steps)
    term = diffrax.ODETerm(lambda t, y, args: vector_field(t, y))
    if name == "dopri5":
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0, method = (t1 - t0) / steps, diffrax.Dopri5()
    else:
        controller = diffrax.StepTo(ts=jnp.linspace(t0, t1, steps + 1))
        dt0, method = None, diffrax.Euler() if name == "euler" else diffrax.Heun()
        max_steps = steps
    sol = diffrax.diffeqsolve(term, method, t0, t1, dt0, y0, stepsize_controller=controller,
                              saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
    y1 = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    n = sol.stats["num_steps"].astype(jnp.int32)
    rejected = sol.stats["num_rejected_steps"].astype(jnp.int32)
    nfe = {"euler": n, "heun": 2 * n, "dopri5": 1 + 6 * n + rejected}[name]
    return y1, nfe


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) per example: `[B, ...] -> [B]`."""
    z = z.reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(jnp.square(z), axis=1) - 0.5 * z.shape[1] * math.log(2.0 * math.pi)


def divergence_exact(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """f(x) and its exact divergence per example, one JVP per dimension.

    Args:
      f: `[B, ...] -> [B, ...]`, acting on each example separately.
      x: `[B, ...]` with D values per example.

    Returns:
      `(f(x) [B, ...], div [B])`, div = trace of df_b/dx_b.
    """
    batch, dims = x.shape[0], int(np.prod(x.shape[1:]))
    basis = jnp.eye(dims, dtype=x.dtype)

    def column(e):  # the same basis vector in every example: d f_b / d x_b[i] for all b
        _, jv = jax.jvp(f, (x,), (jnp.broadcast_to(e.reshape(x.shape[1:]), x.shape),))
        return jv.reshape(batch, dims)

    cols = jax.vmap(column, out_axes=2)(basis)  # [B, D(out), D(in)]
    return f(x), jnp.trace(cols, axis1=1, axis2=2)


def divergence_hutchinson(f: Callable[[jax.Array], jax.Array], x: jax.Array,
                          probes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """f(x) and Hutchinson's divergence estimate, the mean of eps^T (df/dx) eps over K probes.

    Args:
      f: `[B, ...] -> [B, ...]`, acting on each example separately.
      x: `[B, ...]`.
      probes: `[K, B, ...]` with E[eps eps^T] = I (Rademacher here).

    Returns:
      `(f(x) [B, ...], div [B])`.
    """
    def one(eps):
        fx, jv = jax.jvp(f, (x,), (eps,))
        return fx, jnp.sum((eps * jv).reshape(x.shape[0], -1), axis=1)

    fx, div = jax.vmap(one)(probes)
    return fx[0], jnp.mean(div, axis=0)


def ode_log_likelihood(velocity: VelocityFn, x: jax.Array, *, t0: float = 0.0, t1: float = 1.0,
                       divergence: str = "exact", key: jax.Array | None = None, num_probes: int = 1,
                       solver: str = "dopri5", steps: int = 20, rtol: float = 1e-5, atol: float = 1e-5,
                       max_steps: int = 4096,
                       prior_log_prob: Callable[[jax.Array], jax.Array] = standard_normal_log_prob,
                       ) -> tuple[jax.Array, jax.Array]:
    """log p_t0(x) of the flow of `velocity`, whose t1 marginal has density `prior_log_prob`.

    Args:
      velocity: `(x [B, ...], t scalar) -> [B, ...]`, each example on its own.
      x: `[B, ...]` data at t0.
      divergence: "exact" or "hutchinson".
      key: draws the Rademacher probes (hutchinson only).
      num_probes: K probes per example, averaged (hutchinson only).
      solver: see `integrate`.
      steps: see `integrate`.
      rtol: see `integrate`.
      atol: see `integrate`.
      max_steps: see `integrate`.
      prior_log_prob: `[B, ...] -> [B]`, the density at t1.

    Returns:
      `(log_p [B], nfe)`, nats; nfe counts evaluations of the augmented field.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence {divergence!r} is unknown; known: {', '.join(DIVERGENCES)}")
    x = jnp.asarray(x, jnp.float32)
    if divergence == "hutchinson":
        if key is None:
            raise ValueError("the hutchinson divergence needs a key for its probes")
        if int(num_probes) < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        probes = jax.random.rademacher(key, (int(num_probes), *x.shape), dtype=jnp.float32)

    def field(t, y):
        f = lambda z: velocity(z, t).astype(jnp.float32)  # noqa: E731
        v, div = divergence_exact(f, y[0]) if divergence == "exact" else divergence_hutchinson(f, y[0], probes)
        return v, div

    (x1, integral), nfe = integrate(field, (x, jnp.zeros(x.shape[0], jnp.float32)), t0, t1, solver=solver,
                                    steps=steps, rtol=rtol, atol=atol, max_steps=max_steps)
    return prior_log_prob(x1) + integral, nfe


def dequantize(x: jax.Array, key: jax.Array) -> jax.Array:
    """8-bit images k / 255 in [0, 1] -> z = 2 (255 x + u) / 256 - 1 in [-1, 1], u ~ U[0, 1)^D.

    Uniform dequantisation (Theis et al. 2016, arXiv:1511.01844): log p(z) -
    D * `BIN_LOG_VOLUME` is a lower bound, in expectation over u, on the
    log-probability of the discrete image. Shapes: `[B, ...] -> [B, ...]` float32.
    """
    x = jnp.asarray(x, jnp.float32)
    return 2.0 * (x * 255.0 + jax.random.uniform(key, x.shape)) / 256.0 - 1.0


def dequantized_likelihood_data(solver: str, divergence: str, num_probes: int) -> str:
    """What an "exact (ODE)" log-likelihood of dequantised 8-bit images is, stated beside the number."""
    how = ("the exact divergence" if divergence == "exact"
           else f"Hutchinson's divergence estimate ({num_probes} Rademacher probe(s), unbiased)")
    return ("8-bit images k/255: log P of the discrete image under uniform dequantisation y = (255 x + u) / 256 "
            f"(Theis et al. 2016), a lower bound in expectation over u; {solver} ODE solve, {how}")


def denoiser_log_likelihood(denoise: Callable[[jax.Array, jax.Array], jax.Array], z: jax.Array, *,
                            sigma_min: float, sigma_max: float, data_variance: float, divergence: str = "exact",
                            key: jax.Array | None = None, num_probes: int = 1, solver: str = "dopri5",
                            steps: int = 20, rtol: float = 1e-5, atol: float = 1e-5,
                            max_steps: int = 4096) -> tuple[jax.Array, jax.Array]:
    """log p(z) of x_sigma = x0 + sigma n at sigma_min, through the probability-flow ODE.

    Integrates dx/d ln(sigma) = x - D(x; sigma) from ln(sigma_min) to
    ln(sigma_max) with the change in log-density (`ode_log_likelihood`); at
    sigma_max the marginal is taken to be N(0, (data_variance + sigma_max^2) I),
    exact for data of that variance and mean zero once sigma_max dominates
    (and exactly so for Gaussian data N(0, data_variance I)).

    Args:
      denoise: D, `(x [B, ...], sigma scalar) -> [B, ...]`, the estimate of x0.
      z: `[B, ...]` the data (noise level sigma_min).
      sigma_min, sigma_max: the noise levels the solve spans.
      data_variance: the per-dimension variance of x0 assumed by the prior.
      divergence, key, num_probes, solver, steps, rtol, atol, max_steps: see `ode_log_likelihood`.

    Returns:
      `(log_p [B], nfe)` in nats.
    """
    variance = data_variance + sigma_max**2

    def velocity(x, log_sigma):
        return x - denoise(x, jnp.exp(log_sigma))

    def prior(x):
        return standard_normal_log_prob(x / math.sqrt(variance)) - 0.5 * math.prod(x.shape[1:]) * math.log(variance)

    return ode_log_likelihood(velocity, z, t0=math.log(sigma_min), t1=math.log(sigma_max), divergence=divergence,
                              key=key, num_probes=num_probes, solver=solver, steps=steps, rtol=rtol, atol=atol,
                              max_steps=max_steps, prior_log_prob=prior)
