"""Train-step rate against device count (data parallelism, FSDP) and against precision.

    tools/bazel run //tools/benchmark:scaling -- --model=vae --steps=50 --output=/tmp/10/scaling.json

On a CPU-only machine it simulates 8 devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set here before JAX
starts). Simulated devices share the machine's cores, so these figures show
the cost of partitioning the step (collectives, smaller per-device matmuls),
not a speed-up; on a multi-GPU machine the same command measures real
scaling. For every device count n in `--devices` and parallelism "data" and
"fsdp" it reports steps/s of the compiled train step on one device-resident
global batch of the config's size, the state bytes each device holds, the
most one device holds while the state is created (output + temporaries of
the sharded construction, `Trainer.build_state`), XLA's
per-device temporary buffer size, and achieved GFLOP/s (XLA cost analysis)
as a share of this machine's measured f32 matmul peak (`benchmark.py`'s
yardstick). Then, on one device, the same for precision float32, bfloat16
and float16 (dynamic loss scaling).
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Only the host (CPU) platform reads it; a GPU run uses its real devices.
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import dataclasses  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from tools.benchmark import benchmark as bench  # noqa: E402  (its --model, --steps, --repeats, --output, --batch_size)
from workshop.train import distributed  # noqa: E402
from workshop.train.cli import quiet_library_logs  # noqa: E402
from workshop.train.experiment import make_trainer, parse_config  # noqa: E402
from workshop.models.factories import create_model  # noqa: E402

_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to measure.")
_PRECISIONS = flags.DEFINE_list("precisions", ["float32", "bfloat16", "float16"], "Precisions to compare (1 device).")


def _config(model: str):
    module = importlib.import_module(f"workshop.train.configs.{model}")
    return parse_config(module.get_config())


def measure(cfg, *, batch_size: int, steps: int, repeats: int, peak: float, **training) -> dict:
    """Steps/s, per-device memory and FLOPs of one configuration of the train step."""
    training_cfg = cfg.training.model_copy(update=training)
    # The trainer, building the state straight into its shardings.
    trainer = make_trainer(lambda: create_model(cfg.model, rngs=nnx.Rngs(0)),
                           dataclasses.replace(cfg, training=training_cfg))
    rng = np.random.default_rng(0)
    shape = (batch_size, *cfg.model.input_shape)
    batch = {"x": (rng.random(shape) < 0.3).astype(np.float32), "label": rng.integers(0, 10, batch_size, np.int32)}
    batch = trainer.mesh_sharding.put_batch(batch) if trainer.mesh_sharding else jax.device_put(batch)
    state = trainer.init_state()
    start = time.perf_counter()
    compiled = trainer.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    state_bytes = distributed.bytes_per_device(state)
    init_peak = float("nan")  # On a mesh: the most one device holds while the state is created sharded.
    if trainer.build_state is not None:
        rng = trainer.mesh_sharding.place(np.asarray(jax.random.PRNGKey(0)), trainer.state_sharding.rng)
        init = trainer.build_state.lower(rng).compile().memory_analysis()
        init_peak = init.output_size_in_bytes + init.temp_size_in_bytes
    holder = [state]

    def loop():
        s = holder[0]
        for _ in range(steps):
            s, _ = trainer.train_step(s, batch)
        jax.block_until_ready(s)
        holder[0] = s

    loop()  # warm-up (the first call also runs the compile cache lookup)
    seconds = bench._best_seconds(loop, repeats)
    # XLA's cost analysis of a partitioned step counts one device's share.
    flops = bench._flops(compiled) * (trainer.mesh_sharding.num_devices if trainer.mesh_sharding else 1)
    rate = steps / seconds
    return {
        **{k: v for k, v in training.items()},
        "steps_per_second": rate,
        "examples_per_second": rate * batch_size,
        "compile_seconds": compile_seconds,
        "state_mib_per_device": state_bytes / 2**20,
        "init_peak_mib_per_device": init_peak / 2**20,
        "xla_temp_mib_per_device": getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
        "gflop_per_step": flops / 1e9,  # all devices together
        "share_of_matmul_peak": flops * rate / peak,
    }


def run(model: str, *, devices: list[int], precisions: list[str], steps: int, repeats: int,
        batch_size: int | None) -> dict:
    cfg = _config(model)
    batch_size = batch_size or cfg.data.batch_size
    peak = bench.matmul_peak_flops(1024)
    scaling = []
    for parallelism in ("data", "fsdp"):
        for n in devices:
            if n > jax.device_count():
                continue
            scaling.append(measure(cfg, batch_size=batch_size, steps=steps, repeats=repeats, peak=peak,
                                   parallelism=parallelism, num_devices=n))
    precision = [measure(cfg, batch_size=batch_size, steps=steps, repeats=repeats, peak=peak, precision=p)
                 for p in precisions]
    return {
        "model": model,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_cores": os.cpu_count(),
        "batch_size": batch_size,
        "steps_timed": steps,
        "matmul_peak_gflops": peak / 1e9,
        "scaling": scaling,
        "precision": precision,
    }


def format_tables(result: dict) -> str:
    head = (f"{result['model']}, batch {result['batch_size']}, {result['platform']} ({result['device_kind']}), "
            f"{result['device_count']} devices on {result['cpu_cores']} cores; matmul peak "
            f"{result['matmul_peak_gflops']:.1f} GFLOP/s")
    lines = [head, "", "| parallelism | devices | steps/s | state MiB/device | init peak MiB/device | "
             "XLA temp MiB/device | share of peak |", "|---|---|---|---|---|---|---|"]
    for r in result["scaling"]:
        lines.append(f"| {r['parallelism']} | {r['num_devices']} | {r['steps_per_second']:.1f} | "
                     f"{r['state_mib_per_device']:.2f} | {r['init_peak_mib_per_device']:.2f} | "
                     f"{r['xla_temp_mib_per_device']:.2f} | {100 * r['share_of_matmul_peak']:.1f} % |")
    lines += ["", "| precision (1 device) | steps/s | state MiB | XLA temp MiB | share of f32 peak |",
              "|---|---|---|---|---|"]
    for r in result["precision"]:
        lines.append(f"| {r['precision']} | {r['steps_per_second']:.1f} | {r['state_mib_per_device']:.2f} | "
                     f"{r['xla_temp_mib_per_device']:.2f} | {100 * r['share_of_matmul_peak']:.1f} % |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    result = run(bench._MODEL.value, devices=[int(d) for d in _DEVICES.value], precisions=list(_PRECISIONS.value),
                 steps=bench._STEPS.value, repeats=bench._REPEATS.value, batch_size=bench._BATCH.value)
    print(format_tables(result))
    if bench._OUTPUT.value:
        path = pathlib.Path(bench._OUTPUT.value)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
