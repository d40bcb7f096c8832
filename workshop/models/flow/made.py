"""MADE and the autoregressive flow layers built on it (MAF, IAF, autoregressive NSF).

* `MADE`: Germain, Gregor, Murray & Larochelle 2015, "MADE: Masked Autoencoder
  for Distribution Estimation" (arXiv:1502.03509). Dense layers whose weights
  are masked by degrees so that output block i depends only on inputs < i
  (inputs in their given order; flows put a `Reverse` between layers).
* `AutoregressiveLayer`: z_i = T(x_i; MADE(x)_i) with T affine (Masked
  Autoregressive Flow, Papamakarios, Pavlakou & Murray 2017,
  arXiv:1705.07057) or a rational-quadratic spline (Durkan et al. 2019,
  arXiv:1906.04032, section 3.3). The density direction is one parallel
  pass; the inverse takes D sequential passes (`lax.fori_loop`), after pass
  k the first k elements are exact.
* With `inverted=True` the layer is the Inverse Autoregressive Flow of
  Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016
  (arXiv:1606.04934): sampling is the parallel pass, density evaluation the
  sequential one.

Inputs are vectors `[B, D]`; image models flatten first. The bijector
convention of `bijectors.py` applies (forward = data -> base).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.flow import initializers
from workshop.models.flow.bijectors import Buffer
from workshop.models.flow.elementwise import check_transform, elementwise_transform, num_transform_params

__all__ = ["AutoregressiveLayer", "MADE", "MaskedLinear", "made_masks"]


def made_masks(num_inputs: int, hidden_features: Sequence[int], outputs_per_input: int) -> list[np.ndarray]:
    """The connectivity masks of MADE with sequential input degrees 1..D.

    A hidden layer at least D-1 wide cycles its unit degrees through 1..D-1,
    so every degree is present. A narrower layer spreads its degrees evenly
    over 1..D-1 (first 1, last D-1, as the reference MADE's degrees cover the
    whole range), so output d still sees inputs 1..m with m at most
    ceil((D-1) / width) short of d-1, and the last output sees all D-1 of
    its predecessors. Output unit `d * outputs_per_input + p` has degree d + 1
    and sees only hidden units of lower degree.

    Returns:
      One `[fan_in, fan_out]` 0/1 float32 mask per layer.
    """
    d = int(num_inputs)
    degrees = [np.arange(1, d + 1)]
    for h in hidden_features:
        h = int(h)
        if h >= d - 1:
            degrees.append(np.arange(h) % max(d - 1, 1) + 1)
        else:  # cycling would stop at degree h: outputs would never see inputs beyond h
            degrees.append(np.round(np.linspace(1, d - 1, h)).astype(np.int64))
    out_degrees = np.repeat(np.arange(1, d + 1), outputs_per_input)
    masks = [(deg_out[None, :] >= deg_in[:, None]) for deg_in, deg_out in zip(degrees[:-1], degrees[1:])]
    masks.append(out_degrees[None, :] > degrees[-1][:, None])
    return [m.astype(np.float32) for m in masks]


class MaskedLinear(nnx.Module):
    """y = x @ (kernel * mask) + bias (Germain et al. 2015, eq. 8): `[B, fan_in] -> [B, fan_out]`.

    Parameters are `param_dtype`; like a Flax layer it computes in its `dtype`
    (the policy's compute dtype when built; `apply_compute_dtype` changes it),
    the 0/1 mask being exact in any of them.
    """

    def __init__(self, mask: np.ndarray, *, zero_init: bool = False, rngs: nnx.Rngs):
        policy = get_precision_policy()
        fan_in, fan_out = mask.shape
        init = initializers.zeros if zero_init else initializers.lecun_normal(initializers.numpy_generator(rngs))
        # Scale by the kept fan-in, so masked-out inputs do not shrink the activations.
        kept = np.maximum(mask.sum(axis=0, keepdims=True), 1.0)
        self.kernel = nnx.Param(init(None, (fan_in, fan_out), policy.param_dtype) * jnp.asarray(
            np.sqrt(fan_in / kept), policy.param_dtype))
        self.bias = nnx.Param(initializers.zeros(None, (fan_out,), policy.param_dtype))
        self.mask = Buffer(jnp.asarray(mask, policy.param_dtype))
        self.dtype = policy.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype
        w = self.kernel[...].astype(dtype) * self.mask[...].astype(dtype)
        return x.astype(dtype) @ w + self.bias[...].astype(dtype)


class MADE(nnx.Module):
    """`[B, D] (+ cond [B, E]) -> [B, D, P]`, output [:, i] a function of inputs [:, :i] only.

    Args:
      num_inputs: D.
      hidden_features: widths of the masked hidden layers.
      outputs_per_input: P.
      cond_features: E of an optional conditioning input, which enters the
        first hidden layer unmasked.
      rngs: `params` stream (or default). The output layer starts at zero.
    """

    def __init__(self, num_inputs: int, hidden_features: Sequence[int], outputs_per_input: int,
                 cond_features: int = 0, *, rngs: nnx.Rngs):
        if not hidden_features:
            raise ValueError("MADE needs at least one hidden layer (hidden_features is empty)")
        masks = made_masks(num_inputs, hidden_features, outputs_per_input)
        self.layers = nnx.List([MaskedLinear(m, zero_init=(i == len(masks) - 1), rngs=rngs)
                                for i, m in enumerate(masks)])
        policy = get_precision_policy()
        self.cond_proj = (nnx.Linear(cond_features, int(hidden_features[0]), use_bias=False,
                                     kernel_init=initializers.lecun_normal(initializers.numpy_generator(rngs)),
                                     dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs)
                          if cond_features else None)
        self.num_inputs = int(num_inputs)
        self.outputs_per_input = int(outputs_per_input)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        h = self.layers[0](x)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this MADE was built for a conditioning input; pass cond")
            h = h + self.cond_proj(cond.astype(h.dtype))
        for layer in self.layers[1:]:
            h = layer(nnx.relu(h))
        return h.astype(jnp.float32).reshape(x.shape[0], self.num_inputs, self.outputs_per_input)


class AutoregressiveLayer(nnx.Module):
    """An autoregressive bijector on `[B, D]` (MAF layer, or IAF layer when `inverted`).

    Args:
      num_inputs: D.
      transform: "affine" (MAF/IAF) or "spline" (autoregressive NSF).
      hidden_features: MADE hidden widths.
      cond_features: E of the conditioning input, 0 for none.
      num_bins: the spline's number of bins.
      tail_bound: the spline's interval `[-B, B]` bound B.
      inverted: swap the directions (IAF).
      rngs: `params` stream (or default).
    """

    def __init__(self, num_inputs: int, transform: str = "affine", *, hidden_features: Sequence[int] = (64, 64),
                 cond_features: int = 0, num_bins: int = 8, tail_bound: float = 3.0, inverted: bool = False,
                 rngs: nnx.Rngs):
        self.transform = check_transform(transform, what="autoregressive transform")
        if transform == "additive":
            raise ValueError("autoregressive layers take transform 'affine' or 'spline'")
        self.num_inputs = int(num_inputs)
        self.tail_bound = float(tail_bound)
        self.inverted = bool(inverted)
        self.made = MADE(num_inputs, hidden_features, num_transform_params(transform, num_bins), cond_features,
                         rngs=rngs)

    def _check(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2 or x.shape[1] != self.num_inputs:
            raise ValueError(f"autoregressive layer built for [B, {self.num_inputs}] got shape {tuple(x.shape)}")
        return x.astype(jnp.float32)

    def _parallel(self, x: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """z = T(x; MADE(x)): one pass."""
        x = self._check(x)
        z, log_det = elementwise_transform(self.transform, x, self.made(x, cond), tail_bound=self.tail_bound)
        return z, jnp.sum(log_det, axis=-1)

    def _sequential(self, z: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """x = T^-1(z; MADE(x)): D passes, element i is exact after pass i + 1."""
        z = self._check(z)

        def body(_, carry):
            x, _ = carry
            x_new, log_det = elementwise_transform(self.transform, z, self.made(x, cond), inverse=True,
                                                   tail_bound=self.tail_bound)
            return x_new, jnp.sum(log_det, axis=-1)

        init = (jnp.zeros_like(z), jnp.zeros((z.shape[0],), jnp.float32))
        return jax.lax.fori_loop(0, self.num_inputs, body, init)

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._sequential(x, cond) if self.inverted else self._parallel(x, cond)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._parallel(z, cond) if self.inverted else self._sequential(z, cond)
