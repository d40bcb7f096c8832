"""Helpers shared by the flow tests: brute-force log-dets and random parameters."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["check_bijector", "randomize_params"]


def randomize_params(module: nnx.Module, seed: int = 0, scale: float = 0.3) -> nnx.Module:
    """Adds N(0, scale^2) noise to every `nnx.Param` in place, so zero-initialised
    (identity) layers become non-trivial. Returns `module`."""
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    nnx.update(module, jax.tree.unflatten(treedef, noisy))
    return module


def _run(graphdef, state, x, cond):
    """forward, inverse and the brute-force log|det dz/dx| per example, in one program.

    The module is rebuilt from its state inside each transform, so layers that
    write variables in their forward pass (ActNorm) stay functional.
    """
    b, shape = x.shape[0], x.shape[1:]
    n = math.prod(shape)
    z, log_det = nnx.merge(graphdef, state, copy=True).forward(x, cond=cond)
    x_back, inv_log_det = nnx.merge(graphdef, state, copy=True).inverse(z, cond=cond)

    def one(v, c):
        c = None if c is None else c[None]
        return nnx.merge(graphdef, state, copy=True).forward(v.reshape(1, *shape), cond=c)[0].reshape(n)

    jac = jax.vmap(jax.jacfwd(one))(x.reshape(b, n), cond)
    return z, log_det, x_back, inv_log_det, jnp.linalg.slogdet(jac)[1]


_run_jit = jax.jit(_run, static_argnums=0)


def check_bijector(test, bijector, x: jax.Array, *, cond=None, atol: float = 1e-5, log_det_atol: float = 1e-4):
    """Asserts, for a bijector whose examples are independent (initialised ActNorm):
    inverse(forward(x)) == x to `atol`; the forward log-det equals
    `slogdet(jacfwd(forward))` per example; the inverse log-det is its negative.

    Returns:
      `(z, log_det)` of the forward pass.
    """
    graphdef, state = nnx.split(bijector)
    z, log_det, x_back, inv_log_det, brute = _run_jit(graphdef, state, x, cond)
    test.assertEqual(log_det.shape, (x.shape[0],))
    test.assertLess(float(jnp.max(jnp.abs(x_back - x))), atol, "inverse(forward(x)) != x")
    test.assertLess(float(jnp.max(jnp.abs(log_det - brute))), log_det_atol,
                    f"log-det {log_det} vs brute force {brute}")
    test.assertLess(float(jnp.max(jnp.abs(inv_log_det + log_det))), log_det_atol)
    return z, log_det
