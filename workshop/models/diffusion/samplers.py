"""Reverse-process samplers, each one compiled `lax.scan` over its steps.

Every sampler takes a denoiser `denoise(x_t [B, ...], t [B]) -> (x0, eps)`
(parameterisation and classifier-free guidance already applied; `t` may be
fractional, see `NoiseSchedule.log_snr`) and walks from x_T ~ N(0, I) at
t = T-1 to clean data. With `steps` < T the discrete samplers use respaced
timesteps (Nichol & Dhariwal 2021, arXiv:2102.09672): `steps` evenly spaced
indices from T-1 down to 0, and one last move from t = 0 to the clean data
(alpha_bar = 1), so every sampler spends exactly `steps` denoiser calls
(Heun: 2 * steps - 1).

* "ddpm": ancestral sampling from the posterior q(x_s | x_t, x0_hat) of the
  respaced process (Ho et al. 2020, arXiv:2006.11239), variance beta_tilde.
* "ddim": Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"
  (arXiv:2010.02502); `eta` = 0 is deterministic, 1 matches "ddpm".
* "dpm_solver_pp_2m": Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
  Sampling of Diffusion Probabilistic Models" (arXiv:2211.01095), the
  multistep second-order data-prediction solver, first order on the first
  and last steps, on steps uniform in log SNR (their "logSNR" spacing,
  advised for low-resolution images; fractional timesteps). The noisy end is
  clipped as for "heun", at sigma = 80 (log SNR -8.76): the cosine schedule's
  capped last beta puts log SNR -19.8 at t = T-1, and a uniform grid from there
  would spend 3 of 10 steps inside the last timestep, on pure noise.
* "heun": Karras et al. 2022, "Elucidating the Design Space of
  Diffusion-Based Generative Models" (arXiv:2206.00364), Algorithm 1 (no
  churn) on their sigma grid with rho = 7 between the schedule's smallest and
  largest sigma = sqrt((1 - alpha_bar) / alpha_bar), the largest capped at
  their 80. The loop is `karras_sampler`, which the EDM model (edm.py)
  runs too, with its stochastic churn (their Algorithm 2) when asked.

Noise for example b at step i is drawn from fold_in(keys[b], i), so a sample
depends on its own key only, not on the batch it is drawn in.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from workshop.models.diffusion.schedules import NoiseSchedule

__all__ = [
    "SAMPLERS",
    "check_sampler",
    "clip_x0",
    "discrete_step",
    "discrete_tables",
    "karras_sampler",
    "karras_sigmas",
    "map_x0",
    "per_example_normal",
    "respaced_timesteps",
    "run_sampler",
]

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp_2m", "heun")

# Karras et al. 2022 start at sigma 80: schedules such as the cosine one end at
# sigma ~ 1e4, where a rho = 7 grid would spend most of its steps on pure noise.
_KARRAS_SIGMA_MAX = 80.0

DenoiseFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def check_sampler(sampler: str, steps: int, num_timesteps: int) -> str:
    """Validates a sampler name and step count; returns the normalised name.

    Raises:
      ValueError: unknown sampler (listing the known ones), or steps outside
        [1, num_timesteps].
    """
    name = str(sampler).strip().lower()
    if name not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is unknown; known: {', '.join(SAMPLERS)}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if steps > num_timesteps:
        raise ValueError(f"steps={steps} exceeds num_timesteps={num_timesteps}; use at most {num_timesteps} steps")
    return name


def respaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` distinct integer timesteps evenly spaced from T-1 down to 0, `[steps]`."""
    if steps > num_timesteps:
        raise ValueError(f"steps={steps} exceeds num_timesteps={num_timesteps}")
    return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int64)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 eq. (5): `[steps + 1]` sigmas from sigma_max to sigma_min, then 0."""
    if steps == 1:
        return np.array([sigma_max, 0.0])
    ramp = np.linspace(0.0, 1.0, steps)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return np.append((inv_max + ramp * (inv_min - inv_max)) ** rho, 0.0)


def per_example_normal(keys: jax.Array, step: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`[B, *shape]` normals, row b drawn from fold_in(keys[b], step)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape))(keys)


def discrete_tables(schedule: NoiseSchedule, steps: int, *, log_snr_uniform: bool = False) -> dict[str, np.ndarray]:
    """Per-step constants of the respaced discrete samplers, float64 numpy `[steps]` each.

    Returns:
      `t` (timesteps, fractional when `log_snr_uniform`, then starting no
      noisier than sigma = sqrt((1 - alpha_bar) / alpha_bar) = 80), `abar_t`, `abar_s`
      (alpha_bar at the step's start and end, 1 at the clean end) and
      `dpm_c` (DPM-Solver++ 2M's second-order coefficient).
    """
    if log_snr_uniform:
        grid = schedule.log_snrs
        # Start no noisier than sigma = 80, as the Karras grid of "heun" does.
        lam_start = min(max(grid[-1], -2.0 * np.log(_KARRAS_SIGMA_MAX)), grid[0])
        lam = np.linspace(lam_start, grid[0], steps)
        t = np.interp(-lam, -grid, np.arange(schedule.num_timesteps, dtype=np.float64))
        abar_t = 1.0 / (1.0 + np.exp(-lam))
    else:
        t = respaced_timesteps(schedule.num_timesteps, steps)
        abar_t = schedule.alpha_bars[t]
    abar_s = np.append(abar_t[1:], 1.0)
    lam_t = np.log(abar_t) - np.log1p(-abar_t)
    with np.errstate(divide="ignore"):
        lam_s = np.append(lam_t[1:], np.inf)
    h = lam_s - lam_t
    # DPM-Solver++ 2M: D = x0 + c (x0 - x0_prev), c = h_i / (2 h_{i-1}); first order on the first and last step.
    c = np.zeros(steps)
    if steps > 2:
        c[1:-1] = h[1:-1] / (2.0 * h[:-2])
    return {"t": np.asarray(t, np.float64), "abar_t": abar_t, "abar_s": abar_s, "dpm_c": c}


def run_sampler(
    denoise: DenoiseFn,
    schedule: NoiseSchedule,
    x_T: jax.Array,
    keys: jax.Array,
    *,
    sampler: str,
    steps: int,
    eta: float = 0.0,
    clip_denoised: bool = False,
) -> jax.Array:
    """Runs the named sampler from `x_T` to clean data.

    Args:
      denoise: `(x_t [B, ...], t [B]) -> (x0_hat, eps_hat)`, each `[B, ...]`.
      schedule: the model's noise schedule.
      x_T: `[B, ...]` standard normal draws (the prior at t = T-1).
      keys: `[B]` PRNG keys for the per-step noise of each example.
      sampler: one of `SAMPLERS`.
      steps: number of steps, 1 <= steps <= T.
      eta: DDIM's stochasticity (0 deterministic; ignored by the others).
      clip_denoised: clip x0_hat to [-1, 1] (and recompute eps) every step.

    Returns:
      `[B, ...]` samples, float32.
    """
    name = check_sampler(sampler, steps, schedule.num_timesteps)
    x_T = jnp.asarray(x_T, jnp.float32)
    batch, shape = x_T.shape[0], x_T.shape[1:]

    if clip_denoised:
        denoise = clip_x0(denoise, schedule)

    def denoise_at(x, t_scalar):
        x0, eps = denoise(x, jnp.full((batch,), t_scalar, jnp.float32))
        return x0.astype(jnp.float32), eps.astype(jnp.float32)

    if name == "heun":
        return _heun(denoise_at, schedule, x_T, steps)

    tables = discrete_tables(schedule, steps, log_snr_uniform=name == "dpm_solver_pp_2m")
    tab = {k: jnp.asarray(v, jnp.float32) for k, v in tables.items()}
    eta = jnp.asarray(eta, jnp.float32)

    def body(carry, inputs):
        x, x0_prev = carry
        i, t, abar_t, abar_s, c = inputs
        x0, eps = denoise_at(x, t)
        z = per_example_normal(keys, i, shape)
        x_s = discrete_step(name, x, x0, eps, z, abar_t, abar_s, eta=eta, x0_prev=x0_prev, dpm_c=c)
        return (x_s, x0), None

    idx = jnp.arange(steps, dtype=jnp.int32)
    (x, _), _ = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)),
                             (idx, tab["t"], tab["abar_t"], tab["abar_s"], tab["dpm_c"]))
    return x


def map_x0(denoise: DenoiseFn, schedule: NoiseSchedule, fn: Callable[[jax.Array], jax.Array]) -> DenoiseFn:
    """Wraps a denoiser so x0_hat becomes `fn(x0_hat)` and eps_hat is recomputed to match.

    Args:
      fn: `[B, ...] -> [B, ...]`, e.g. a clip or a projection onto known data.
    """

    def mapped(x, t):
        x0, _ = denoise(x, t)
        alpha, sigma = schedule.alpha_sigma(t)
        x0 = fn(x0.astype(jnp.float32))
        shape = (-1,) + (1,) * (x.ndim - 1)
        return x0, (x - alpha.reshape(shape) * x0) / sigma.reshape(shape)

    return mapped


def clip_x0(denoise: DenoiseFn, schedule: NoiseSchedule) -> DenoiseFn:
    """Wraps a denoiser so x0_hat is clipped to [-1, 1] and eps_hat recomputed to match."""
    return map_x0(denoise, schedule, lambda x0: jnp.clip(x0, -1.0, 1.0))


def discrete_step(name: str, x: jax.Array, x0: jax.Array, eps: jax.Array, z: jax.Array, abar_t: jax.Array,
                  abar_s: jax.Array, *, eta: jax.Array | float = 0.0, x0_prev: jax.Array | None = None,
                  dpm_c: jax.Array | float = 0.0) -> jax.Array:
    """One move of a discrete sampler from timestep t to an earlier s.

    Args:
      name: "ddpm", "ddim" or "dpm_solver_pp_2m".
      x: `[B, ...]` x_t; x0, eps: the denoiser's estimates at t.
      z: standard normal `[B, ...]` (ddpm, ddim with eta > 0).
      abar_t, abar_s: scalars, alpha_bar at t and s (abar_s = 1 for the clean end).
      eta: DDIM's stochasticity.
      x0_prev, dpm_c: DPM-Solver++ 2M's previous x0 estimate and its
        coefficient h_i / (2 h_{i-1}) (0 for a first-order step).

    Returns:
      `[B, ...]` x_s.
    """
    alpha_t, sigma_t = jnp.sqrt(abar_t), jnp.sqrt(1.0 - abar_t)
    if name == "ddpm":
        a_step = abar_t / abar_s
        mean = (jnp.sqrt(abar_s) * (1.0 - a_step) / (1.0 - abar_t)) * x0 + (
            jnp.sqrt(a_step) * (1.0 - abar_s) / (1.0 - abar_t)) * x
        return mean + jnp.sqrt((1.0 - a_step) * (1.0 - abar_s) / (1.0 - abar_t)) * z
    if name == "ddim":
        sig = eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        return jnp.sqrt(abar_s) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_s - sig**2, 0.0)) * eps + sig * z
    if name == "dpm_solver_pp_2m":  # data prediction, lambda = log(alpha / sigma)
        d = x0 if x0_prev is None else x0 + dpm_c * (x0 - x0_prev)
        alpha_s, sigma_s = jnp.sqrt(abar_s), jnp.sqrt(1.0 - abar_s)
        # exp(-h) = (alpha_t sigma_s) / (sigma_t alpha_s), 0 on the last step (sigma_s = 0).
        exp_mh = (alpha_t * sigma_s) / (sigma_t * alpha_s)
        return (sigma_s / sigma_t) * x - alpha_s * (exp_mh - 1.0) * d
    raise ValueError(f"{name!r} is not a discrete sampler; known: ddpm, ddim, dpm_solver_pp_2m")


def karras_sampler(denoise_sigma: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, sigmas: np.ndarray, *,
                   keys: jax.Array | None = None, second_order: bool = True, s_churn: float = 0.0,
                   s_min: float = 0.0, s_max: float = float("inf"), s_noise: float = 1.0) -> jax.Array:
    """Karras et al. 2022, Algorithm 2 (Algorithm 1 when `s_churn` = 0), one `lax.scan` over the grid.

    In their variables x = x0 + sigma n: at each sigma_i the churn raises the
    noise to sigma_hat = (1 + gamma_i) sigma_i, gamma_i = min(s_churn / N,
    sqrt(2) - 1) for sigma_i in [s_min, s_max] (else 0), by adding fresh noise
    of std sqrt(sigma_hat^2 - sigma_i^2) s_noise; then an Euler step of
    dx/dsigma = (x - D(x; sigma)) / sigma to sigma_{i+1} and, unless
    sigma_{i+1} = 0 or `second_order` is off, Heun's trapezoidal correction.
    Denoiser calls: N (Euler) or 2 N - 1 (Heun) for N = len(sigmas) - 1.

    Args:
      denoise_sigma: `(x [B, ...], sigma scalar) -> D(x; sigma) [B, ...]`.
      x: `[B, ...]` the start, x ~ N(0, sigmas[0]^2 I) (plus data).
      sigmas: `[N + 1]` decreasing noise levels ending at 0 (`karras_sigmas`).
      keys: `[B]` per-example keys of the churn noise (needed when s_churn > 0).
      second_order: Heun (True) or Euler steps.
      s_churn, s_min, s_max, s_noise: the stochasticity of Algorithm 2.

    Returns:
      `[B, ...]` x at sigma = 0.
    """
    sigmas = np.asarray(sigmas, np.float64)
    steps = len(sigmas) - 1
    churn = s_churn > 0.0
    if churn and keys is None:
        raise ValueError("s_churn > 0 draws fresh noise: pass keys")
    in_range = (sigmas[:-1] >= s_min) & (sigmas[:-1] <= s_max)
    gammas = np.where(in_range, min(s_churn / steps, math.sqrt(2.0) - 1.0), 0.0)
    sig = jnp.asarray(sigmas, jnp.float32)
    shape = x.shape[1:]

    def body(x, inputs):
        i, s, s_next, gamma = inputs
        if churn:
            s_hat = s * (1.0 + gamma)
            # sqrt(s_hat^2 - s^2), written so gamma = 0 gives exactly 0 (not sqrt of a rounding error < 0).
            x = x + s * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * per_example_normal(keys, i, shape)
        else:
            s_hat = s
        d = (x - denoise_sigma(x, s_hat)) / s_hat
        x_euler = x + (s_next - s_hat) * d
        if not second_order:
            return x_euler, None

        def correct(_):
            d_next = (x_euler - denoise_sigma(x_euler, s_next)) / s_next
            return x + (s_next - s_hat) * 0.5 * (d + d_next)

        return jax.lax.cond(s_next > 0, correct, lambda _: x_euler, None), None

    inputs = (jnp.arange(steps, dtype=jnp.int32), sig[:-1], sig[1:], jnp.asarray(gammas, jnp.float32))
    x, _ = jax.lax.scan(body, x, inputs)
    return x


def _heun(denoise_at, schedule: NoiseSchedule, x_T: jax.Array, steps: int) -> jax.Array:
    """Karras et al. 2022, Algorithm 1 (deterministic), in their x = x0 + sigma n variables."""
    abar = schedule.alpha_bars
    sig_all = np.sqrt((1.0 - abar) / abar)
    sigma_max = min(float(sig_all[-1]), _KARRAS_SIGMA_MAX)
    sigmas = karras_sigmas(float(sig_all[0]), sigma_max, steps)

    def data_estimate(x, sigma):
        scale = jnp.sqrt(1.0 + sigma**2)  # x_vp = x / scale, alpha = 1 / scale, sigma_vp = sigma / scale
        t = schedule.timestep_of_log_snr(-2.0 * jnp.log(sigma))
        x0, _ = denoise_at(x / scale, t)
        return x0

    # x_T ~ N(0, I) is the prior of the VP variables at the first noise level.
    return karras_sampler(data_estimate, x_T * jnp.sqrt(1.0 + jnp.float32(sigmas[0]) ** 2), sigmas)
