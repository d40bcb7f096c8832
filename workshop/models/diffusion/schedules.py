"""Noise schedules of discrete-time diffusion and the three prediction targets.

The forward process (Ho, Jain & Abbeel 2020, "Denoising Diffusion
Probabilistic Models", arXiv:2006.11239) is q(x_t | x_0) = N(alpha_t x_0,
sigma_t^2 I) with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t)
and alpha_bar_t = prod_{s <= t} (1 - beta_s), for timestep indices
t = 0 .. T-1 (index 0 is Ho et al.'s t = 1). Beta schedules:

* "linear": Ho et al. 2020, 1e-4 .. 0.02 at T = 1000, scaled by 1000 / T as
  in Nichol & Dhariwal 2021 so any T ends near pure noise.
* "cosine": Nichol & Dhariwal 2021, "Improved Denoising Diffusion
  Probabilistic Models" (arXiv:2102.09672): alpha_bar(t) = f(t) / f(0),
  f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2, s = 0.008, betas <= 0.999.
* "sigmoid": Chen 2023, "On the Importance of Noise Scheduling for Diffusion
  Models" (arXiv:2301.10972): alpha_bar from a shifted sigmoid, start -3,
  end 3, tau 1.

Between integer timesteps the schedule is continued linearly in the log
signal-to-noise ratio, so samplers may query fractional timesteps (the Karras
sigma grid) and map noise levels back to timesteps exactly.

Prediction targets: "epsilon" (Ho et al. 2020), "x0", and "v" = alpha eps -
sigma x_0 (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", arXiv:2202.00512). Min-SNR loss weights follow Hang et al.
2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"
(arXiv:2303.09556).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BETA_SCHEDULES",
    "LOSS_WEIGHTINGS",
    "NoiseSchedule",
    "PREDICTION_TYPES",
    "cosine_beta_schedule",
    "linear_beta_schedule",
    "loss_weight",
    "make_schedule",
    "prediction_target",
    "sigmoid_beta_schedule",
    "to_x0_and_eps",
]

BETA_SCHEDULES = ("linear", "cosine", "sigmoid")
PREDICTION_TYPES = ("epsilon", "x0", "v")
LOSS_WEIGHTINGS = ("plain", "min_snr")
_MAX_BETA = 0.999


def linear_beta_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020's linear betas, `[T]` float64, scaled by 1000 / T."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, min(scale * beta_end, _MAX_BETA), num_timesteps, dtype=np.float64)


def _betas_from_alpha_bar(alpha_bar_fn, num_timesteps: int) -> np.ndarray:
    grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = alpha_bar_fn(grid) / alpha_bar_fn(np.zeros(1))
    return np.minimum(1.0 - abar[1:] / abar[:-1], _MAX_BETA)


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021's cosine schedule, `[T]` float64 betas."""
    return _betas_from_alpha_bar(lambda u: np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2, num_timesteps)


def sigmoid_beta_schedule(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Chen 2023's sigmoid schedule, `[T]` float64 betas."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    v_start, v_end = sig(start / tau), sig(end / tau)
    return _betas_from_alpha_bar(lambda u: (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start),
                                 num_timesteps)


_SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule, "sigmoid": sigmoid_beta_schedule}


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A beta schedule and the quantities derived from it (float64 numpy, `[T]`).

    Attributes:
      name: the schedule's name.
      betas: beta_t for t = 0 .. T-1.
    """

    name: str
    betas: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bars(self) -> np.ndarray:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s), `[T]`, decreasing."""
        return np.cumprod(1.0 - self.betas)

    @property
    def log_snrs(self) -> np.ndarray:
        """log(alpha_bar / (1 - alpha_bar)), `[T]`, decreasing."""
        abar = self.alpha_bars
        return np.log(abar) - np.log1p(-abar)

    # -------------------------------------------- continuous-time queries (jnp)
    def log_snr(self, t: jax.Array) -> jax.Array:
        """log SNR at (fractional) timesteps `t` in [0, T-1], linear between integers."""
        grid = jnp.arange(self.num_timesteps, dtype=jnp.float32)
        return jnp.interp(jnp.asarray(t, jnp.float32), grid, jnp.asarray(self.log_snrs, jnp.float32))

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha_t, sigma_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), shaped like `t`."""
        lam = self.log_snr(t)
        return jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))

    def timestep_of_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """The inverse of `log_snr`: fractional timesteps, clipped to [0, T-1]."""
        grid = jnp.arange(self.num_timesteps, dtype=jnp.float32)
        # jnp.interp needs increasing x: the log SNR decreases with t.
        return jnp.interp(-jnp.asarray(log_snr, jnp.float32), -jnp.asarray(self.log_snrs, jnp.float32), grid)

    def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """A draw of q(x_t | x_0) = alpha_t x0 + sigma_t noise.

        Args:
          x0: `[B, ...]` clean data.
          t: `[B]` timesteps.
          noise: standard normal, shaped like `x0`.

        Returns:
          `[B, ...]`.
        """
        alpha, sigma = self.alpha_sigma(t)
        return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def make_schedule(name: str, num_timesteps: int) -> NoiseSchedule:
    """The named beta schedule with `num_timesteps` steps.

    Raises:
      ValueError: an unknown name (listing the known ones) or T < 1.
    """
    key = str(name).strip().lower()
    if key not in _SCHEDULES:
        raise ValueError(f"beta_schedule {name!r} is unknown; known: {', '.join(BETA_SCHEDULES)}")
    if int(num_timesteps) < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    return NoiseSchedule(key, _SCHEDULES[key](int(num_timesteps)))


def _bcast(a: jax.Array, like: jax.Array) -> jax.Array:
    """`[B]` -> `[B, 1, ..., 1]` against `like` `[B, ...]`."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def _check_prediction(kind: str) -> None:
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {kind!r} is unknown; known: {', '.join(PREDICTION_TYPES)}")


def prediction_target(kind: str, x0: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """What a network of prediction type `kind` is trained to output.

    Args:
      kind: "epsilon", "x0" or "v".
      x0, eps: `[B, ...]` clean data and the noise of x_t = alpha x0 + sigma eps.
      alpha, sigma: `[B]`.

    Returns:
      `[B, ...]`: eps, x0, or v = alpha eps - sigma x0.
    """
    _check_prediction(kind)
    if kind == "epsilon":
        return eps
    if kind == "x0":
        return x0
    return _bcast(alpha, x0) * eps - _bcast(sigma, x0) * x0


def to_x0_and_eps(kind: str, prediction: jax.Array, x_t: jax.Array, alpha: jax.Array,
                  sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Converts a network output of type `kind` into (x0, eps) estimates.

    Uses x_t = alpha x0 + sigma eps and alpha^2 + sigma^2 = 1.

    Args:
      kind: "epsilon", "x0" or "v".
      prediction, x_t: `[B, ...]`.
      alpha, sigma: `[B]`.

    Returns:
      `(x0, eps)`, each `[B, ...]`.
    """
    _check_prediction(kind)
    a, s = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if kind == "epsilon":
        return (x_t - s * prediction) / a, prediction
    if kind == "x0":
        return prediction, (x_t - a * prediction) / s
    return a * x_t - s * prediction, s * x_t + a * prediction


def loss_weight(weighting: str, kind: str, alpha: jax.Array, sigma: jax.Array, gamma: float = 5.0) -> jax.Array:
    """Per-example weight of the squared error on the `kind` target, `[B]`.

    "plain" is 1. "min_snr" (Hang et al. 2023) weights every target so the
    implied x0-error weight is min(SNR, gamma): min(SNR, gamma) / SNR for
    epsilon, min(SNR, gamma) for x0, min(SNR, gamma) / (SNR + 1) for v.
    """
    _check_prediction(kind)
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting {weighting!r} is unknown; known: {', '.join(LOSS_WEIGHTINGS)}")
    if weighting == "plain":
        return jnp.ones_like(alpha)
    snr = jnp.square(alpha) / jnp.square(sigma)
    clipped = jnp.minimum(snr, gamma)
    if kind == "epsilon":
        return clipped / snr
    if kind == "x0":
        return clipped
    return clipped / (snr + 1.0)
