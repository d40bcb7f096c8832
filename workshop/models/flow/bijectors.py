"""Invertible layers with tractable Jacobians: the pieces flows are built from.

Every bijector here, and in `coupling.py` and `made.py`, follows one convention:

* `forward(x, *, cond=None) -> (z, log_det)` is the normalising direction,
  data towards the base space, with `log_det = log|det dz/dx|` per example.
* `inverse(z, *, cond=None) -> (x, log_det)` is the generative direction,
  with `log_det = log|det dx/dz|` (so it is minus the forward value at x).

Arrays are `[B, D]` (vectors) or `[B, H, W, C]` (images); layers that act on
features act on the last axis and share over the spatial axes. Log-dets are
float32 `[B]`. `cond` (`[B, E]` or None) is ignored by layers without a
conditioner.

Precision (`workshop.core.device_manager`): parameters are float32 and flow
states leave every layer as float32. The one matmul here, x W of
`Invertible1x1Conv`, runs in the layer's `dtype` (the policy's compute dtype)
like any layer; what is kept in float32 on purpose, inside `keep_float32`
scopes, is the product of W's LU factors, the triangular solves of W^-1 and
every log-det (sum(log_s) times H*W would lose whole nats in bfloat16).
ActNorm is elementwise and float32 throughout (its data-dependent statistics
are means and variances).

* `ActNorm`: per-channel affine with data-dependent initialisation (Kingma &
  Dhariwal 2018, "Glow", arXiv:1807.03039, section 3.1).
* `Invertible1x1Conv`: a learned channel mixing W = P L (U + diag(s)), LU
  parameterised (Glow, section 3.2); on vectors, the LU linear layer of Durkan
  et al. 2019 (arXiv:1906.04032).
* `Reverse`: reverses the feature axis (MAF, Papamakarios et al. 2017,
  arXiv:1705.07057, between autoregressive layers); `Permutation`: a fixed
  random permutation.
* `squeeze` / `unsqueeze`: 2x2 space-to-depth of the multi-scale architecture
  (Dinh et al. 2016, "Real NVP", arXiv:1605.08803, section 3.6).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy, keep_float32
from workshop.models.flow.initializers import numpy_generator, random_rotation_lu


__all__ = [
    "ActNorm",
    "ActNormStatistics",
    "Buffer",
    "Invertible1x1Conv",
    "Permutation",
    "Reverse",
    "squeeze",
    "unsqueeze",
]


class Buffer(nnx.Variable):
    """A constant of a layer (mask, permutation, sign): not trained, carried in the state."""


class ActNormStatistics(nnx.Variable):
    """Data-dependent initial values of ActNorm and the flag that says they are set."""


def _spatial_size(x: jax.Array) -> int:
    """Positions that share the feature-axis parameters: H*W for images, 1 for vectors."""
    return math.prod(x.shape[1:-1])


def _batch_log_det(per_position: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.float32(_spatial_size(x)) * per_position, (x.shape[0],))


class ActNorm(nnx.Module):
    """z = (x + bias) * exp(log_scale), per channel.

    bias and log_scale are the sum of a data-dependent initial value (an
    `ActNormStatistics` variable, set from the first batch the layer sees in
    `forward`, so that batch leaves with zero mean and unit variance per
    channel) and a trained `nnx.Param` offset that starts at zero. Setting the
    statistics happens inside the forward pass with `jnp.where` on a flag, so
    it works in a jitted train step: the trainer carries the updated
    statistics in `TrainState.rest`. Before initialisation the layer is the
    identity; `inverse` never initialises.

    Args:
      num_features: C, size of the last axis.
      rngs: unused (no random initialisation); accepted for a uniform interface.
    """

    def __init__(self, num_features: int, *, rngs: nnx.Rngs | None = None, eps: float = 1e-6):
        del rngs
        c = int(num_features)
        zeros = lambda: jnp.asarray(np.zeros((c,), np.float32))  # noqa: E731  host-made: no compilation
        self.bias = nnx.Param(zeros())
        self.log_scale = nnx.Param(zeros())
        self.initial_bias = ActNormStatistics(zeros())
        self.initial_log_scale = ActNormStatistics(zeros())
        self.initialized = ActNormStatistics(jnp.asarray(np.zeros((), np.bool_)))
        self.eps = float(eps)

    def _parameters(self) -> tuple[jax.Array, jax.Array]:
        return self.initial_bias[...] + self.bias[...], self.initial_log_scale[...] + self.log_scale[...]

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        x = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        mean = jax.lax.stop_gradient(jnp.mean(x, axis=axes))
        std = jax.lax.stop_gradient(jnp.std(x, axis=axes))
        fresh = ~self.initialized[...]
        self.initial_bias[...] = jnp.where(fresh, -mean, self.initial_bias[...])
        self.initial_log_scale[...] = jnp.where(fresh, -jnp.log(std + self.eps), self.initial_log_scale[...])
        self.initialized[...] = jnp.ones((), jnp.bool_)
        bias, log_scale = self._parameters()
        return (x + bias) * jnp.exp(log_scale), _batch_log_det(jnp.sum(log_scale), x)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        z = z.astype(jnp.float32)
        bias, log_scale = self._parameters()
        return z * jnp.exp(-log_scale) - bias, _batch_log_det(-jnp.sum(log_scale), z)


class Invertible1x1Conv(nnx.Module):
    """z = x W over the last axis, W = P L (U + diag(sign * exp(log_s))).

    P (a permutation) and sign are fixed `Buffer`s; L (unit lower), U (zero
    diagonal upper) and log_s are trained. log|det W| = sum(log_s), times H*W
    for images. Initialised at a random rotation, as in Glow.

    Precision: W (and W^-1) is formed from its LU factors in float32 and the
    log-det is float32, whatever dtype the parameters arrive in; x W runs in
    the layer's `dtype` (the policy's compute dtype; `apply_compute_dtype`
    changes it), and z is returned as float32.

    Args:
      num_features: C, size of the last axis.
      rngs: `params` stream (or default) draws the initial rotation.
    """

    def __init__(self, num_features: int, *, rngs: nnx.Rngs):
        c = int(num_features)
        p, lower, upper = random_rotation_lu(numpy_generator(rngs), c)
        diag = np.diag(upper)
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        self.permutation = Buffer(f32(p))
        self.sign = Buffer(f32(np.sign(diag)))
        self.lower = nnx.Param(f32(np.tril(lower, -1)))
        self.upper = nnx.Param(f32(np.triu(upper, 1)))
        self.log_s = nnx.Param(f32(np.log(np.abs(diag))))
        self.num_features = c
        self.dtype = get_precision_policy().compute_dtype

    def _factors(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """P, L (unit lower) and U (upper, diagonal sign * exp(log_s)), `[C, C]` float32."""
        c = self.num_features
        f32 = lambda v: v[...].astype(jnp.float32)  # noqa: E731  the trainer may hand in bf16 parameters
        lower = jnp.tril(f32(self.lower), -1) + jnp.eye(c, dtype=jnp.float32)
        upper = jnp.triu(f32(self.upper), 1) + jnp.diag(f32(self.sign) * jnp.exp(f32(self.log_s)))
        return f32(self.permutation), lower, upper

    def _log_det(self, x: jax.Array, sign: float) -> jax.Array:
        return _batch_log_det(sign * jnp.sum(self.log_s[...].astype(jnp.float32)), x)

    def weight(self) -> jax.Array:
        """W `[C, C]` float32."""
        with keep_float32("invertible_1x1_lu"):
            p, lower, upper = self._factors()
            return p @ lower @ upper

    def inverse_weight(self) -> jax.Array:
        """W^-1 = U^-1 L^-1 P^T `[C, C]` float32, by two triangular solves (better conditioned than inv(W))."""
        with keep_float32("invertible_1x1_lu"):
            p, lower, upper = self._factors()
            eye = jnp.eye(self.num_features, dtype=jnp.float32)
            inv_lower = jax.scipy.linalg.solve_triangular(lower, eye, lower=True, unit_diagonal=True)
            inv_upper = jax.scipy.linalg.solve_triangular(upper, eye, lower=False)
            return inv_upper @ inv_lower @ p.T

    def _mix(self, x: jax.Array, w: jax.Array) -> jax.Array:
        dtype = self.dtype
        y = jnp.einsum("...c,cd->...d", x.astype(dtype), w.astype(dtype), precision=jax.lax.Precision.HIGHEST)
        return y.astype(jnp.float32)

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._mix(x, self.weight()), self._log_det(x, 1.0)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._mix(z, self.inverse_weight()), self._log_det(z, -1.0)


class Permutation(nnx.Module):
    """A fixed permutation of the last axis (log-det 0).

    Args:
      permutation (jax.Array): `[C]` integer array, a permutation of `range(C)`.
    """

    def __init__(self, permutation):
        permutation = np.asarray(permutation, np.int32)
        if sorted(permutation.tolist()) != list(range(permutation.size)):
            raise ValueError(f"not a permutation of range({permutation.size}): {permutation.tolist()}")
        self.permutation = Buffer(jnp.asarray(permutation))
        self.inverse_permutation = Buffer(jnp.asarray(np.argsort(permutation).astype(np.int32)))

    @classmethod
    def random(cls, num_features: int, *, rngs: nnx.Rngs) -> "Permutation":
        return cls(numpy_generator(rngs).permutation(int(num_features)))

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return jnp.take(x, self.permutation[...], axis=-1), jnp.zeros((x.shape[0],), jnp.float32)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return jnp.take(z, self.inverse_permutation[...], axis=-1), jnp.zeros((z.shape[0],), jnp.float32)


class Reverse(nnx.Module):
    """Reverses the last axis (its own inverse, log-det 0)."""

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return jnp.flip(x, axis=-1), jnp.zeros((x.shape[0],), jnp.float32)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.forward(z)


def squeeze(x: jax.Array) -> jax.Array:
    """2x2 space-to-depth: `[B, H, W, C] -> [B, H/2, W/2, 4C]` (volume preserving).

    Raises:
      ValueError: H or W is odd.
    """
    if x.ndim != 4:
        raise ValueError(f"squeeze needs images [B, H, W, C], got shape {tuple(x.shape)}")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even height and width, got an image of shape (H, W, C) = {(h, w, c)}")
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
    """Inverse of `squeeze`: `[B, H, W, 4C] -> [B, 2H, 2W, C]`."""
    b, h, w, c4 = x.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze needs a channel count divisible by 4, got shape {tuple(x.shape)}")
    c = c4 // 4
    x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, c)

