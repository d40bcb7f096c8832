"""Chains of bijectors, and K same-shaped flow steps run as one `lax.scan`.

`Chain` composes bijectors (forward in order, inverse in reverse order,
log-dets added). `StackedSteps` holds K steps of identical structure with
every variable stacked on a leading axis of size K (the steps are built one
by one with host-side initialisers, then stacked), and runs forward/inverse
as a `lax.scan`, so a deep flow compiles one step per level. Variables that a step updates in its forward pass
(ActNorm statistics) are written back after the scan, so data-dependent
initialisation works inside a jitted train step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["Chain", "StackedSteps"]


class Chain(nnx.Module):
    """Bijectors applied in order: forward f_n(...f_1(x)), log-dets summed.

    Args:
      layers: objects with `forward`/`inverse(x, *, cond) -> (y, log_det [B])`.
    """

    def __init__(self, layers: Sequence[nnx.Module]):
        self.layers = nnx.List(list(layers))

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        total = jnp.zeros((x.shape[0],), jnp.float32)
        for layer in self.layers:
            x, log_det = layer.forward(x, cond=cond)
            total = total + log_det
        return x, total

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        total = jnp.zeros((z.shape[0],), jnp.float32)
        for layer in reversed(self.layers):
            z, log_det = layer.inverse(z, cond=cond)
            total = total + log_det
        return z, total


class StackedSteps(nnx.Module):
    """K flow steps of one structure, their variables stacked, run by `lax.scan`.

    Args:
      make_step: `make_step(index, *, rngs) -> bijector`, `index` in
        `range(num_steps)` (e.g. to alternate mask parity); every step must
        have the same structure and variable shapes.
      num_steps: K >= 1.
      rngs: `params` stream (or default); step k gets its own key.
    """

    def __init__(self, make_step: Callable[..., nnx.Module], num_steps: int, *, rngs: nnx.Rngs):
        k = int(num_steps)
        if k < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        steps = [make_step(i, rngs=rngs) for i in range(k)]
        graphdef, _ = nnx.split(steps[0])
        states = [nnx.split(step)[1] for step in steps]
        for i, (step, state) in enumerate(zip(steps, states)):
            if nnx.split(step)[0] != graphdef or jax.tree.structure(state) != jax.tree.structure(states[0]):
                raise ValueError(f"step {i} differs in structure from step 0; stacked steps must share one")
        # Stacked on the host: one device transfer per variable, no compilation.
        stacked = jax.tree.map(lambda *leaves: jnp.asarray(np.stack([np.asarray(v) for v in leaves])), *states)
        self.steps = nnx.merge(graphdef, stacked)
        self.num_steps = k

    def _run(self, x: jax.Array, cond: jax.Array | None, inverse: bool) -> tuple[jax.Array, jax.Array]:
        graphdef, state = nnx.split(self.steps)

        def body(h, step_state):
            step = nnx.merge(graphdef, step_state)
            h, log_det = step.inverse(h, cond=cond) if inverse else step.forward(h, cond=cond)
            # Only non-Param variables (ActNorm statistics, buffers) can change in a pass.
            return h, (log_det, nnx.state(step, nnx.Not(nnx.Param)))

        y, (log_dets, new_state) = jax.lax.scan(body, x, state, reverse=inverse)
        if not inverse:
            nnx.update(self.steps, new_state)
        return y, jnp.sum(log_dets, axis=0)

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._run(x, cond, inverse=False)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._run(z, cond, inverse=True)
