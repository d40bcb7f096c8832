"""Device detection, accelerator memory strategies and the mixed-precision policy.

* `get_device_manager()`: the process-wide `DeviceManager` (platform "gpu",
  "cpu" or "tpu", device counts, memory statistics).
* `MemoryStrategy`: the share of accelerator memory XLA may take
  (conservative 0.6, balanced 0.75, aggressive 0.9). XLA reads it from
  `XLA_PYTHON_CLIENT_MEM_FRACTION` when the backend starts, so it must be set
  before the first computation; set later, it is refused with a warning.
* `PrecisionPolicy`: parameters stay float32; with mixed precision enabled the
  layers in `workshop.models.layers` compute in bfloat16 (or float16) and
  losses are computed in float32 (Micikevicius et al. 2018, arXiv:1710.03740).
  Layers read the policy when they are built (`get_precision_policy()`).
* `precision_policy(name)`: the policy of a training configuration's
  `precision` ("float32", "bfloat16", "float16"); `check_precision_supported`
  refuses a compute dtype the platform lacks (bfloat16 on GPUs older than
  Ampere, float16 on TPUs); `apply_compute_dtype` sets the compute dtype of
  every layer of an already-built model, which is how the trainer applies
  a configuration's precision to its train step.
* `keep_float32(name)`: marks a computation a layer keeps in float32 on
  purpose under a mixed policy (log-determinants, LU factors, nearest-code
  distances, ...); `matmul_sites` lists the matmuls and convolutions of a
  jaxpr with their dtypes and scopes, so a test can check that every
  float32 one sits in such a scope.

One mechanism reaches every layer: a layer keeps the dtype it computes in as
its `dtype` attribute (Flax's convention: `nnx.Linear`, `nnx.Conv`, norms,
attention, embeddings, and Workshop's own layers such as MADE's
`MaskedLinear` and Glow's `Invertible1x1Conv`), set from
`get_precision_policy()` when it is built and changed by
`apply_compute_dtype` afterwards.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "FLOAT32_SCOPE_PREFIX",
    "PRECISIONS",
    "DeviceManager",
    "MatmulSite",
    "MemoryStrategy",
    "PrecisionPolicy",
    "apply_compute_dtype",
    "check_precision_supported",
    "configure_for_generative_models",
    "get_device_manager",
    "get_precision_policy",
    "keep_float32",
    "matmul_sites",
    "precision_policy",
    "set_precision_policy",
]

_log = logging.getLogger(__name__)

_MEM_FRACTION_ENV = "XLA_PYTHON_CLIENT_MEM_FRACTION"


class MemoryStrategy(enum.Enum):
    """Share of accelerator memory the XLA client preallocates."""

    CONSERVATIVE = 0.6
    BALANCED = 0.75
    AGGRESSIVE = 0.9

    @property
    def fraction(self) -> float:
        return float(self.value)


@dataclasses.dataclass(frozen=True)
class PrecisionPolicy:
    """Dtypes the layers use: `param_dtype` for weights, `compute_dtype` for
    activations and matmuls, `output_dtype` for what losses consume."""

    param_dtype: jnp.dtype = jnp.float32
    compute_dtype: jnp.dtype = jnp.float32
    output_dtype: jnp.dtype = jnp.float32

    @property
    def is_mixed(self) -> bool:
        return jnp.dtype(self.compute_dtype) != jnp.dtype(self.param_dtype)

    def cast_to_compute(self, x: jax.Array) -> jax.Array:
        return x.astype(self.compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    def cast_to_output(self, x: jax.Array) -> jax.Array:
        return x.astype(self.output_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x


_POLICY = PrecisionPolicy()


def get_precision_policy() -> PrecisionPolicy:
    """The policy layers read when they are constructed."""
    return _POLICY


def set_precision_policy(policy: PrecisionPolicy) -> PrecisionPolicy:
    """Sets the process-wide policy; returns the previous one."""
    global _POLICY
    previous, _POLICY = _POLICY, policy
    return previous


PRECISIONS = ("float32", "bfloat16", "float16")

# Ampere (sm_80) is the first NVIDIA generation with bfloat16 tensor-core math;
# XLA emulates it on older GPUs at a fraction of float32 speed.
_MIN_BF16_COMPUTE_CAPABILITY = (8, 0)


def precision_policy(name: str) -> PrecisionPolicy:
    """The policy of a `TrainingConfiguration.precision`: float32 parameters,
    compute in `name`, float32 outputs.

    Raises:
      ValueError: `name` is not one of `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision {name!r} is unknown; known: {', '.join(PRECISIONS)}")
    return PrecisionPolicy(compute_dtype=jnp.dtype(name))


def check_precision_supported(
    policy: PrecisionPolicy, *, platform: str | None = None, compute_capability: str | None = None
) -> None:
    """Raises if the platform cannot compute in `policy.compute_dtype`.

    Args:
      policy: the policy to check.
      platform: "cpu", "gpu" or "tpu"; default: JAX's default device's.
      compute_capability: a GPU's "major.minor"; default: device 0's.

    Raises:
      ValueError: bfloat16 on a GPU before compute capability 8.0, or float16
        on a TPU, naming the device and the precisions that would work.
    """
    dtype = jnp.dtype(policy.compute_dtype)
    if platform is None:
        device = jax.devices()[0]
        platform = "gpu" if device.platform in ("gpu", "cuda", "rocm") else device.platform
        if platform == "gpu" and compute_capability is None:
            compute_capability = getattr(device, "compute_capability", None)
    if platform == "gpu" and dtype == jnp.bfloat16 and compute_capability:
        major, minor = (int(part) for part in str(compute_capability).split(".")[:2])
        if (major, minor) < _MIN_BF16_COMPUTE_CAPABILITY:
            raise ValueError(
                f"training.precision='bfloat16' needs a GPU of compute capability 8.0 or newer (Ampere); this one "
                f"is {compute_capability}. Use precision='float16' (with dynamic loss scaling) or 'float32'."
            )
    if platform == "tpu" and dtype == jnp.float16:
        raise ValueError("training.precision='float16' is not supported on TPUs; use 'bfloat16' or 'float32'")


def _is_float_dtype(dtype) -> bool:
    try:
        return jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        return False


def apply_compute_dtype(model: nnx.Module, dtype) -> list[str]:
    """Makes every layer of `model` compute in `dtype`; returns their paths.

    A layer is a module with a `dtype` attribute that is None or a floating
    dtype, which it reads on every call and casts its inputs and parameters
    to: Flax's layers (`nnx.Linear`, `nnx.Conv`, norms, attention,
    embeddings) and Workshop's own (`MaskedLinear`, `Invertible1x1Conv`).
    Parameters themselves are not touched. Other Workshop modules are
    containers of layers, so this reaches every family.

    Args:
      model: changed in place.
      dtype (jnp.dtype | str): the compute dtype.

    Returns:
      The "/"-joined paths of the layers that were changed.
    """
    dtype = jnp.dtype(dtype)
    changed = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module) or not hasattr(node, "dtype"):
            continue
        if node.dtype is None or (_is_float_dtype(node.dtype) and jnp.dtype(node.dtype) != dtype):
            node.dtype = dtype
            changed.append("/".join(str(p) for p in path))
    return changed


FLOAT32_SCOPE_PREFIX = "float32_"


def keep_float32(name: str):
    """A `jax.named_scope` marking a computation kept in float32 on purpose.

    Under a mixed policy the layers compute in bfloat16/float16, except where
    rounding would break the maths: log-determinants, the LU factors of an
    invertible 1x1 convolution, nearest-code distances, and so on. Code in
    such a place casts to float32 itself; the scope (`float32_<name>`) only
    names it, in jaxprs, HLO and profiles, so `matmul_sites` and the tests can
    tell a deliberate float32 matmul from a layer that ignores the policy.

    Args:
      name: what is kept, e.g. "invertible_1x1_lu".
    """
    return jax.named_scope(FLOAT32_SCOPE_PREFIX + name)


@dataclasses.dataclass(frozen=True)
class MatmulSite:
    """One matmul or convolution of a traced computation.

    Attributes:
      primitive: "dot_general" or "conv_general_dilated".
      dtype: the result dtype ("bfloat16", "float32", ...).
      operand_dtypes: the dtypes of the two operands.
      scope: the name stack (`keep_float32` scopes, einsum specs, and the
        transforms around them such as "jvp(...)" and "transpose(...)"),
        behind the scopes of the `jit`/`scan`/... equations it is nested in.
      source: "file:line (function)" of the user code that made it, if known.
    """

    primitive: str
    dtype: str
    operand_dtypes: tuple[str, ...]
    scope: str
    source: str


def _summarize_source(source_info) -> str:
    try:  # jax has no public accessor; source_info_util has been stable since jax 0.4
        from jax._src import source_info_util

        return source_info_util.summarize(source_info)
    except (ImportError, AttributeError):  # pragma: no cover - future jax
        return ""


def matmul_sites(jaxpr) -> list[MatmulSite]:
    """Every `dot_general` and `conv_general_dilated` of a jaxpr, nested ones included.

    Args:
      jaxpr (jax.extend.core.ClosedJaxpr | jax.extend.core.Jaxpr): a
        `jax.make_jaxpr(f)(...)` result (closed) or its `.jaxpr`;
        sub-jaxprs of `jit`, `scan`, `cond`, `while`, `custom_jvp`/`vjp`
        and `remat` are searched too.

    Returns:
      One `MatmulSite` per equation, in program order.
    """
    from jax.extend import core as jex_core

    sites: list[MatmulSite] = []

    def walk(jx, outer: str) -> None:
        for eqn in jx.eqns:
            # A nested jaxpr (the body of a jit, e.g. jax.image.resize) starts a fresh name stack.
            scope = "/".join(part for part in (outer, str(eqn.source_info.name_stack)) if part)
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                sites.append(MatmulSite(
                    primitive=eqn.primitive.name,
                    dtype=str(eqn.outvars[0].aval.dtype),
                    operand_dtypes=tuple(str(v.aval.dtype) for v in eqn.invars),
                    scope=scope,
                    source=_summarize_source(eqn.source_info),
                ))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else (param,):
                    if isinstance(sub, jex_core.ClosedJaxpr):
                        walk(sub.jaxpr, scope)
                    elif isinstance(sub, jex_core.Jaxpr):
                        walk(sub, scope)

    walk(jaxpr.jaxpr if isinstance(jaxpr, jex_core.ClosedJaxpr) else jaxpr, "")
    return sites


def _backends_started() -> bool:
    # jax exposes no public query; xla_bridge.backends_are_initialized is the
    # documented-in-source way and has been stable since jax 0.4.
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - future jax
        return True


class DeviceManager:
    """What hardware JAX sees, read once (lazily, on first use)."""

    def __init__(self) -> None:
        self._devices: list[jax.Device] | None = None

    @property
    def devices(self) -> list[jax.Device]:
        if self._devices is None:
            self._devices = list(jax.devices())
        return self._devices

    def get_device(self) -> str:
        """The default platform: "gpu", "cpu" or "tpu"."""
        platform = self.devices[0].platform
        return "gpu" if platform in ("gpu", "cuda", "rocm") else platform

    @property
    def device_count(self) -> int:
        """Devices of the default platform on all hosts."""
        return jax.device_count()

    @property
    def local_device_count(self) -> int:
        return jax.local_device_count()

    @property
    def process_count(self) -> int:
        return jax.process_count()

    @property
    def has_accelerator(self) -> bool:
        return self.get_device() in ("gpu", "tpu")

    def memory_stats(self) -> dict[str, int]:
        """Allocator statistics of device 0 (empty on backends that keep none)."""
        stats = self.devices[0].memory_stats()
        return dict(stats) if stats else {}

    def peak_memory_bytes(self) -> int | None:
        """Peak bytes in use on device 0, or None where the backend does not track it."""
        return self.memory_stats().get("peak_bytes_in_use")

    def __repr__(self) -> str:
        return f"DeviceManager(device={self.get_device()!r}, device_count={self.device_count})"


_MANAGER: DeviceManager | None = None


def get_device_manager() -> DeviceManager:
    """The process-wide device manager."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = DeviceManager()
    return _MANAGER


def _memory_fraction(strategy: MemoryStrategy | str | float) -> tuple[str, float]:
    """(label, fraction) of a `MemoryStrategy`, its name, or a fraction in (0, 1]."""
    if isinstance(strategy, MemoryStrategy):
        return strategy.name, strategy.fraction
    known = ", ".join(s.name.lower() for s in MemoryStrategy)
    if isinstance(strategy, str):
        try:
            member = MemoryStrategy[strategy.strip().upper()]
        except KeyError:
            raise ValueError(f"memory_strategy {strategy!r} is unknown; known: {known}, "
                             "or a fraction of accelerator memory in (0, 1]") from None
        return member.name, member.fraction
    if isinstance(strategy, (int, float)) and not isinstance(strategy, bool):
        fraction = float(strategy)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"memory_strategy {strategy!r} as a fraction of accelerator memory must lie in (0, 1]")
        return f"{fraction:g}", fraction
    raise ValueError(f"memory_strategy must be one of {known}, a MemoryStrategy, or a fraction in (0, 1]; "
                     f"got {strategy!r} ({type(strategy).__name__})")


def _has_accelerator() -> bool:
    """Whether the started backend has a GPU or TPU (the memory fraction means nothing on CPU)."""
    return any(d.platform != "cpu" for d in jax.devices())


def _apply_memory_strategy(label: str, fraction: float) -> bool:
    """Sets XLA's memory fraction if the backend has not started; True if applied.

    Once a backend runs, the fraction cannot change: with an accelerator that
    is worth a warning, on a CPU-only backend (which preallocates nothing) it is not.
    """
    if _backends_started():
        if not _has_accelerator():
            _log.debug("memory_strategy=%s ignored: the backend has no accelerator", label)
            return False
        current = os.environ.get(_MEM_FRACTION_ENV, "XLA's default 0.75")
        warnings.warn(
            f"memory_strategy={label} ({fraction}) was requested after JAX started "
            f"its backend, so it cannot take effect (the running fraction is {current}). Call "
            "configure_for_generative_models before the first JAX computation, or set "
            f"{_MEM_FRACTION_ENV}={fraction} in the environment.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ[_MEM_FRACTION_ENV] = str(fraction)
    return True


def configure_for_generative_models(
    memory_strategy: MemoryStrategy | str | float = MemoryStrategy.BALANCED,
    enable_mixed_precision: bool = False,
    mixed_precision_dtype: str = "bfloat16",
) -> DeviceManager:
    """Applies a memory strategy and a precision policy; returns the manager.

    Args:
      memory_strategy: a `MemoryStrategy`, its name ("conservative",
        "balanced", "aggressive"), or a fraction of accelerator memory in
        (0, 1], e.g. 0.5. It sets `XLA_PYTHON_CLIENT_MEM_FRACTION`, so it
        acts only before the first JAX computation (later, with a GPU or
        TPU, it warns; on CPU there is nothing to preallocate and it is quiet).
      enable_mixed_precision: compute in `mixed_precision_dtype` with float32
        parameters; False restores full float32.
      mixed_precision_dtype: "bfloat16" or "float16".
    """
    label, fraction = _memory_fraction(memory_strategy)
    if mixed_precision_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"mixed_precision_dtype {mixed_precision_dtype!r} must be 'bfloat16' or 'float16'")
    _apply_memory_strategy(label, fraction)
    compute = jnp.dtype(mixed_precision_dtype) if enable_mixed_precision else jnp.dtype(jnp.float32)
    set_precision_policy(PrecisionPolicy(compute_dtype=compute))
    manager = get_device_manager()
    _log.info("configured %s: memory %s (%s), compute dtype %s", manager, label, fraction, compute)
    return manager
