"""Counts XLA compilations, for tests that a second call reuses a compiled function.

    with count_compiles() as compiles:
        model.generate(n_samples=16, rngs=nnx.Rngs(1))
    assert compiles.count == 0

It listens to JAX's `/jax/core/compile/backend_compile_duration` monitoring
event, recorded once per backend compilation (a persistent-cache hit records
none), so it counts every compilation in the process while the block runs:
jitted steps, sampling loops and the small eager ops compiled on first use.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax

__all__ = ["CompileCount", "count_compiles"]

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCount:
    """The number of backend compilations seen so far (`count`)."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            with self._lock:
                self.count += 1


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Counts the backend compilations while the block runs."""
    counter = CompileCount()
    jax.monitoring.register_event_duration_secs_listener(counter._listen)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(counter._listen)
