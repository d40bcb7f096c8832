"""`compiled_sampling`: a model's `generate` compiled once per model structure and call shape.

A sampling loop (diffusion steps, MCMC chains, token decoding) called
eagerly is traced and compiled again on every call: `jax.lax.scan` and
`fori_loop` compile their bodies each time they are traced. Decorating
`generate` with `compiled_sampling` runs it through one `jax.jit` over the
split model (`nnx.split`: the graph definition static, the arrays traced), so
a second call with the same model structure, sample count, options and input
shapes reuses the compiled loop, and a call after the parameters changed
reads the new ones (they are arguments, never constants of the compiled code).

What counts as the same call: the keyword arguments that are arrays
(`labels`, `condition`, `low_res`, ...) are traced, so only their shapes and
dtypes matter; every other keyword (`n_samples`, `sampler`, `steps`,
`temperature`, ...) is static, as the Python value the method sees, so a new
value compiles once for it. `rngs` is split with the model and its stream
counters are written back after the call, so `rngs` advances exactly as in an
eager call and the samples are those of the same key. Called inside a trace
(a jitted train or sample step), or with an unhashable option (a list), the
method runs as written.

Label values can only be checked on concrete arrays: a model with
`num_classes` has concrete `labels` range-checked (`validate_labels`) before
the compiled call, as its eager `generate` would.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import jax
import numpy as np
from flax import nnx

from workshop.models.layers.embedding import validate_labels

__all__ = ["compiled_sampling"]

F = TypeVar("F", bound=Callable[..., Any])


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _run(method: Callable[..., Any], graphdef: nnx.GraphDef, state: nnx.State, arrays: dict[str, Any],
         static: tuple[tuple[str, Any], ...]):
    model, rngs = nnx.merge(graphdef, state)
    out = method(model, rngs=rngs, **arrays, **dict(static))
    # Everything but the parameters, which sampling never changes: the rng counters, caches.
    return out, nnx.state((model, rngs), nnx.Not(nnx.Param))


def compiled_sampling(method: F | None = None, *, check: Callable[..., Any] | None = None):
    """Decorates a model's `generate(self, *, n_samples, rngs, **options)` (see the module docstring).

    Args:
      method: the `generate` method (`@compiled_sampling`), or None (`@compiled_sampling(check=...)`).
      check: `check(self, **options)` (`rngs` left out), run on the concrete arguments before the
        compiled call: checks of array values (prompt tokens in range, say) that a trace cannot make.
    """
    if method is None:
        return functools.partial(compiled_sampling, check=check)

    @functools.wraps(method)
    def generate(self, *, rngs: nnx.Rngs, **kwargs):
        arrays = {k: v for k, v in kwargs.items() if _is_array(v)}
        static = tuple(sorted((k, v) for k, v in kwargs.items() if not _is_array(v)))
        graphdef, state = nnx.split((self, rngs))
        leaves = jax.tree.leaves((state, arrays))
        if (not isinstance(rngs, nnx.Rngs) or not _hashable(static)
                or any(isinstance(x, jax.core.Tracer) for x in leaves)):
            return method(self, rngs=rngs, **kwargs)
        labels = arrays.get("labels")
        num_classes = getattr(self, "num_classes", None)
        if labels is not None and num_classes is not None and "n_samples" in kwargs:
            name = f"model_type {self.model_type!r}" if isinstance(getattr(self, "model_type", None), str) else (
                type(self).__name__)
            validate_labels(labels, int(num_classes), int(kwargs["n_samples"]), model_name=name)
        if check is not None:
            check(self, **kwargs)
        out, new_state = _run(method, graphdef, state, arrays, static)
        nnx.update((self, rngs), new_state)
        return out

    return generate  # type: ignore[return-value]
