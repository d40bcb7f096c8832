"""Spectrally normalised dense and convolutional layers.

Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral Normalization for
Generative Adversarial Networks" (arXiv:1802.05957): each weight W is divided
by an estimate of its largest singular value sigma(W), so every layer (and,
with 1-Lipschitz activations, the whole discriminator) is at most
1-Lipschitz. sigma is estimated by power iteration (algorithm 1) on the
kernel reshaped to a matrix `[fan_in, out]`; the running left-singular vector
estimate `u` lives in the module as a `PowerIterationVector`, an
`nnx.Variable` that is not an `nnx.Param`, so optimizers never touch it and
checkpoints carry it with the rest of the model state.

Like batch normalisation the estimate is a running statistic: layers update
`u` on each call while `use_running_average` is False (after
`module.train()`) and only read it after `module.eval()`. No gradient flows
through `u`.

Precision: like a Flax layer each one computes in its `dtype` (the policy's
compute dtype when built; `apply_compute_dtype` changes it). The power
iteration and sigma stay float32 on purpose (`keep_float32`): they estimate a
norm, which bfloat16's 8-bit mantissa would blur.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core.device_manager import get_precision_policy, keep_float32

__all__ = ["PowerIterationVector", "SpectralNormConv", "SpectralNormLinear", "power_iteration"]


class PowerIterationVector(nnx.Variable):
    """The running estimate of a kernel's leading singular vector (not trained)."""


def _normalise(v: jax.Array) -> jax.Array:
    return v / (jnp.linalg.norm(v) + 1e-12)


def power_iteration(matrix: jax.Array, u: jax.Array, num_iterations: int = 1) -> tuple[jax.Array, jax.Array]:
    """Power iteration for the largest singular value of `matrix`.

    Args:
      matrix: `[m, n]` float32.
      u: `[n]`, the current right-singular-vector estimate (the side of the
        layer's outputs).
      num_iterations: iterations of v <- Wu/|Wu|, u <- W^T v/|W^T v|.

    Returns:
      `(u, sigma)`: the updated `[n]` estimate and sigma = v^T W u, a scalar,
      both without gradient through the vectors (sigma keeps its gradient
      with respect to `matrix`, as in the paper).
    """
    w = jax.lax.stop_gradient(matrix)
    v = None
    for _ in range(max(1, int(num_iterations))):
        v = _normalise(w @ u)
        u = _normalise(w.T @ v)
    u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
    return u, v @ matrix @ u


class _SpectralNorm(nnx.Module):
    """Shared state and normalisation of the two layer types."""

    def _init_spectral(self, out_features: int, num_iterations: int, rngs: nnx.Rngs) -> None:
        u = jax.random.normal(rngs.params(), (out_features,), jnp.float32)
        self.u = PowerIterationVector(_normalise(u))
        self.num_iterations = int(num_iterations)
        self.use_running_average = False

    def normalised_kernel(self) -> jax.Array:
        """The kernel divided by its estimated spectral norm (same shape as `kernel`)."""
        kernel = self.kernel[...].astype(jnp.float32)
        matrix = kernel.reshape(-1, kernel.shape[-1])
        u = self.u[...]
        # Without updating, one more iteration from the stored u still refines sigma.
        with keep_float32("spectral_norm_power_iteration"):
            u_new, sigma = power_iteration(matrix, u, self.num_iterations)
        if not self.use_running_average:
            self.u[...] = u_new
        return kernel / sigma

    def sigma(self) -> jax.Array:
        """The current estimate of the kernel's largest singular value (scalar)."""
        kernel = self.kernel[...].astype(jnp.float32)
        with keep_float32("spectral_norm_power_iteration"):
            _, sigma = power_iteration(kernel.reshape(-1, kernel.shape[-1]), self.u[...], self.num_iterations)
        return sigma


class SpectralNormLinear(_SpectralNorm):
    """`y = x W / sigma(W) + b`: `[..., in_features] -> [..., out_features]`.

    Args:
      in_features: input size.
      out_features: output size.
      num_iterations: power iterations per call (1 in the paper).
      rngs: `params` stream (or default) for the kernel and the initial `u`.
    """

    def __init__(self, in_features: int, out_features: int, *, num_iterations: int = 1, rngs: nnx.Rngs):
        policy = get_precision_policy()
        self.dtype = policy.compute_dtype
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), policy.param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), policy.param_dtype))
        self._init_spectral(out_features, num_iterations, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.normalised_kernel().astype(self.dtype)
        return x.astype(self.dtype) @ kernel + self.bias[...].astype(self.dtype)


class SpectralNormConv(_SpectralNorm):
    """A SAME-padded 2-D convolution with kernel `[kh, kw, C_in, C_out] / sigma`.

    sigma is that of the kernel reshaped to `[kh * kw * C_in, C_out]`, the
    paper's choice (section 2.1), which bounds the convolution's norm up to a
    factor depending on the kernel size.

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: `(kh, kw)`.
      strides: spatial strides.
      num_iterations: power iterations per call.
      rngs: `params` stream (or default).
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int] = (3, 3), *,
                 strides: int = 1, num_iterations: int = 1, rngs: nnx.Rngs):
        policy = get_precision_policy()
        self.dtype = policy.compute_dtype
        shape = (*(int(k) for k in kernel_size), int(in_features), int(out_features))
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape, policy.param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), policy.param_dtype))
        self.strides = (int(strides), int(strides))
        self._init_spectral(out_features, num_iterations, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C_in] -> [B, ceil(H / s), ceil(W / s), C_out]`."""
        kernel = self.normalised_kernel().astype(self.dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel, self.strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + self.bias[...].astype(self.dtype)
