"""Data parallelism and fully-sharded data parallelism (FSDP) over a `jax.sharding.Mesh`.

The mesh has two axes, `("data", "fsdp")`. `parallelism="data"` puts every
device on "data" (shape `(n, 1)`): the train state is replicated and each
batch is split along its leading axis, so XLA inserts one all-reduce of the
gradients per step. `parallelism="fsdp"` puts them on "fsdp" (shape
`(1, n)`): the batch is split the same way, and every parameter, optimizer
moment and EMA array of at least `min_size` elements is sharded along its
largest axis divisible by n, so each device holds 1/n of the state and XLA
all-gathers the weights for the forward pass and reduce-scatters the
gradients (ZeRO stage 3, Rajbhandari et al. 2020, arXiv:1910.02054; the
compiler does the partitioning, GSPMD, Xu et al. 2021, arXiv:2105.04663).
Smaller arrays (biases, norms, step counters) are replicated: sharding them
saves little memory and costs a collective each.

Under a mesh a model is created sharded: the trainer builds it abstractly
with `nnx.eval_shape`, computes `MeshSharding.state_shardings` from those
shapes, and creates the parameters, optimizer moments and EMA inside one
`jax.jit` whose `out_shardings` are those shardings (`Trainer.build_state`),
so no device ever holds a whole sharded array and the values equal a
one-device build of the same seed.

The train step is one `jax.jit` with these shardings as `in_shardings` and
`out_shardings` (`ShardedStep`). Batches come in as this process's rows
(numpy) and become one global array with
`jax.make_array_from_process_local_data`, so the same code runs on one host
and on many (`jax.distributed.initialize`, see `workshop/train/main.py`).
The train binary reads only this process's rows of every batch
(`BatchPipeline(shard_index=jax.process_index(), shard_count=jax.process_count())`);
`process_local_batches` cuts an in-memory stream of global batches the same way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "BATCH_AXES",
    "DATA_AXIS",
    "FSDP_AXIS",
    "MeshSharding",
    "ShardedStep",
    "bytes_per_device",
    "fsdp_partition_spec",
    "make_mesh",
    "process_local_batches",
]

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(parallelism: str, num_devices: int | None = None, *, devices=None) -> Mesh:
    """A `("data", "fsdp")` mesh with every device on the axis of `parallelism`.

    Args:
      parallelism: "data" (shape `(n, 1)`) or "fsdp" (shape `(1, n)`).
      num_devices: n; None for all of `devices`.
      devices: default `jax.devices()` (every device of every process).

    Raises:
      ValueError: unknown parallelism, more devices asked for than exist, or a
        multi-process run that does not use all devices.
    """
    if parallelism not in ("data", "fsdp"):
        raise ValueError(f"parallelism {parallelism!r} has no mesh; known: 'data', 'fsdp' ('none' uses one device)")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else int(num_devices)
    if n < 1 or n > len(devices):
        raise ValueError(f"training.num_devices={num_devices} but {len(devices)} devices are available")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(
            f"training.num_devices={n} in a run of {jax.process_count()} processes: a multi-host mesh uses every "
            f"device of every process ({len(devices)}); leave num_devices unset"
        )
    shape = (n, 1) if parallelism == "data" else (1, n)
    return Mesh(np.asarray(devices[:n]).reshape(shape), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def _divisor_hint(shape: tuple[int, ...], limit: int) -> list[int]:
    return [k for k in range(2, limit + 1) if any(d % k == 0 for d in shape)]


def fsdp_partition_spec(name: str, shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """Where an array of `shape` is cut under FSDP over `fsdp_size` devices.

    Arrays under `min_size` elements (and all arrays when `fsdp_size == 1`)
    are replicated (`P()`); others are sharded along their largest axis
    divisible by `fsdp_size` (the first of equal ones).

    Args:
      name: the array's path in the state, for the error message.
      shape: its shape.
      fsdp_size: devices on the "fsdp" axis.
      min_size: the smallest array that is sharded (elements).

    Raises:
      ValueError: a large array none of whose axes `fsdp_size` divides; the
        message names it and the fixes.
    """
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    if fsdp_size == 1 or size < min_size:
        return P()
    fits = [i for i, d in enumerate(shape) if d % fsdp_size == 0]
    if not fits:
        counts = _divisor_hint(shape, max(fsdp_size, 8))
        raise ValueError(
            f"FSDP over {fsdp_size} devices cannot shard {name} {list(shape)} ({size} elements, at least "
            f"training.fsdp_min_size={min_size}): none of its axes is divisible by {fsdp_size}. Use "
            f"training.num_devices in {counts} (device counts that divide one of its axes), make that layer's "
            f"width a multiple of {fsdp_size}, raise training.fsdp_min_size above {size} to replicate arrays "
            "this small, or use training.parallelism='data'"
        )
    axis = max(fits, key=lambda i: (shape[i], -i))
    return P(*[FSDP_AXIS if i == axis else None for i in range(len(shape))])


def _leaf_name(path) -> str:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return name[: -len("/value")] if name.endswith("/value") else name  # an nnx.Variable's own leaf


def bytes_per_device(tree: Any) -> int:
    """Bytes of `tree`'s arrays held by the first device of its first array."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]
    if not leaves:
        return 0
    device = leaves[0].addressable_shards[0].device
    total = 0
    for leaf in leaves:
        total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
    return total


@dataclasses.dataclass(frozen=True)
class MeshSharding:
    """The shardings of one run: a mesh, the batch's and the state's.

    Attributes:
      mesh: the `("data", "fsdp")` mesh.
      parallelism: "data" or "fsdp".
      min_size: FSDP shards arrays of at least this many elements.
    """

    mesh: Mesh
    parallelism: str
    min_size: int = 4096

    @classmethod
    def from_config(cls, config) -> "MeshSharding | None":
        """The sharding of a `TrainingConfiguration`, or None for `parallelism="none"`.

        Raises:
          ValueError: "none" in a multi-process run (each host would train its own copy).
        """
        if config.parallelism == "none":
            if jax.process_count() > 1:
                raise ValueError(
                    f"this run has {jax.process_count()} processes but training.parallelism='none' would train a "
                    "separate copy on each; set training.parallelism to 'data' or 'fsdp'"
                )
            return None
        return cls(make_mesh(config.parallelism, config.num_devices), config.parallelism, config.fsdp_min_size)

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch_sharding(self) -> NamedSharding:
        """Leading (example) axis split over every device of the mesh."""
        return NamedSharding(self.mesh, P(BATCH_AXES))

    def describe(self) -> str:
        shape = ", ".join(f"{k}={v}" for k, v in self.mesh.shape.items())
        return f"{self.parallelism} parallelism on a mesh ({shape}) over {jax.process_count()} process(es)"

    def split_examples(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """Inside a jitted step: `x` with its `axis` (examples) split over every device of the mesh."""
        spec = P(*[BATCH_AXES if i == axis else None for i in range(x.ndim)])
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def jit_step(self, step: Callable, state_sharding: Any) -> "ShardedStep":
        """`step(state, batch) -> (state, metrics)` compiled for the mesh.

        The state comes in and goes out with `state_sharding` (and is donated),
        the batch is split over every device, the metrics are replicated.
        """
        return ShardedStep(jax.jit(step, donate_argnums=0, in_shardings=(state_sharding, self.batch_sharding),
                                   out_shardings=(state_sharding, self.replicated)), self)

    def state_shardings(self, abstract_state: Any) -> Any:
        """A `NamedSharding` for every array of `abstract_state` (shapes suffice).

        Raises:
          ValueError: FSDP cannot shard one of the arrays (see `fsdp_partition_spec`).
        """
        fsdp_size = int(self.mesh.shape[FSDP_AXIS])

        def sharding(path, leaf):
            if self.parallelism == "data":
                return self.replicated
            spec = fsdp_partition_spec(_leaf_name(path), tuple(leaf.shape), fsdp_size, self.min_size)
            return NamedSharding(self.mesh, spec)

        return jax.tree_util.tree_map_with_path(sharding, abstract_state)

    def place(self, host_tree: Any, shardings: Any) -> Any:
        """Global arrays from host values that every process holds in full.

        Each process copies only the pieces its own devices hold.
        """

        def put(value, sharding):
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

        return jax.tree.map(put, host_tree, shardings)

    def put_batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """This process's rows of a batch -> global arrays split over the mesh.

        Args:
          batch: `{"x": [b, ...], "label": [b], ...}` with b = global batch
            size / process count (the whole batch on one host).

        Returns:
          The same keys as global `jax.Array`s of leading size b * processes.

        Raises:
          ValueError: b is not divisible by this process's devices in the mesh.
        """
        local_devices = sum(d.process_index == jax.process_index() for d in self.mesh.devices.flat)
        processes = self.num_devices // local_devices
        out = {}
        for key, value in batch.items():
            if isinstance(value, jax.Array) and value.sharding == self.batch_sharding:
                out[key] = value
                continue
            value = np.asarray(value)
            b = value.shape[0] if value.ndim else None
            if b is None or b % local_devices:
                total = None if b is None else b * processes
                lower = (total // self.num_devices) * self.num_devices if total else 0
                raise ValueError(
                    f"batch[{key!r}] of {total} examples cannot be split over the {self.num_devices} devices of the "
                    f"{self.parallelism} mesh: set data.batch_size to a multiple of {self.num_devices} "
                    f"(e.g. {max(lower, self.num_devices)} or {lower + self.num_devices}), or training.num_devices to "
                    f"a divisor of {total}"
                )
            global_shape = (b * processes, *value.shape[1:])
            out[key] = jax.make_array_from_process_local_data(self.batch_sharding, value, global_shape)
        return out


class ShardedStep:
    """A jitted `step(state, batch)` whose batch is put on the mesh first.

    Calls and `lower` take host-local numpy batches (`MeshSharding.put_batch`).

    On a mesh of several CPU devices each call waits for its result: XLA:CPU
    runs every simulated device's program on a shared thread pool, and with
    several collective steps in flight the devices' all-reduce rendezvous can
    starve and abort the process ("Expected 8 threads to join the rendezvous,
    but only 4 of them arrived"; reproduced here on 2 cores with 8 simulated
    devices, also with `jax_cpu_enable_async_dispatch` off; see
    jax-ml/jax#25861). CPU steps gain little from overlapping dispatch;
    accelerators keep asynchronous dispatch.
    """

    def __init__(self, jitted: Callable, mesh_sharding: MeshSharding):
        self.jitted = jitted
        self.mesh_sharding = mesh_sharding
        devices = list(mesh_sharding.mesh.devices.flat)
        self.wait = len(devices) > 1 and devices[0].platform == "cpu"

    def __call__(self, state, batch):
        out = self.jitted(state, self.mesh_sharding.put_batch(batch))
        return jax.block_until_ready(out) if self.wait else out

    def lower(self, state, batch):
        return self.jitted.lower(state, self.mesh_sharding.put_batch(batch))


def process_local_batches(
    batches: Iterable[dict[str, Any]], *, process_index: int | None = None, process_count: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """This process's contiguous share of every global batch of `batches`.

    Process p of P gets rows `[p * B/P, (p + 1) * B/P)`: the rows its devices
    hold in the mesh (devices are ordered by process), so a run on P hosts
    trains on the same global batches as on one.

    Args:
      batches: global batches `{"x": [B, ...], ...}`.
      process_index, process_count: default `jax.process_index()` / `jax.process_count()`.

    Raises:
      ValueError: B is not divisible by the process count.
    """
    p = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    for batch in batches:
        if count == 1:
            yield batch
            continue
        out = {}
        for key, value in batch.items():
            b = np.shape(value)[0]
            if b % count:
                raise ValueError(f"batch[{key!r}] of {b} examples cannot be split over {count} processes; "
                                 f"set data.batch_size to a multiple of {count}")
            share = b // count
            out[key] = np.asarray(value)[p * share : (p + 1) * share]
        yield out
