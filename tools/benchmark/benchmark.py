"""Training and sampling speed of a model config, against this machine's matmul peak.

    tools/bazel run //tools/benchmark -- --model=vae [--steps=200] [--output=bench.json]

Measures, in one process:
  * the matmul peak: the best of several runs of a jitted f32 matmul
    (n x n, 2n^3 FLOPs), the yardstick for "achieved share of peak";
  * compile time of the train step;
  * steps/s and examples/s of `Trainer.fit` on the real data pipeline, and of a
    bare `jax.jit` loop of the same step function on one device-resident batch;
  * FLOPs per step from XLA's cost analysis, so achieved GFLOP/s = FLOPs x steps/s;
  * peak memory (the accelerator's allocator peak where it keeps one, otherwise
    the process's peak resident set);
  * sampling throughput of `generate` (samples/s).
"""

from __future__ import annotations

import importlib
import json
import pathlib
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from workshop.core.device_manager import get_device_manager
from workshop.train.experiment import data_source, make_trainer, parse_config
from workshop.data.pipeline import BatchPipeline
from workshop.models.factories import create_model
from flax import nnx

_MODEL = flags.DEFINE_string("model", "vae", "Config module in workshop/train/configs.")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed train steps per measurement.", lower_bound=10)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements per loop; the best is kept.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the config's batch size.")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 2048, "Size of the peak-measuring matmul.")
_SAMPLES = flags.DEFINE_integer("num_samples", 256, "Samples per generate call.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON here too.")


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_flops(n: int, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n x n float32 matmuls (after warm-up)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)
    matmul(a, b).block_until_ready()
    seconds = _best_seconds(lambda: matmul(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / seconds


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def _peak_memory() -> tuple[int, str]:
    device_peak = get_device_manager().peak_memory_bytes()
    if device_peak is not None:
        return int(device_peak), "device allocator peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (host)"


def run_benchmark(model: str, *, steps: int, repeats: int, batch_size: int | None, matmul_n: int, num_samples: int) -> dict:
    config = importlib.import_module(f"workshop.train.configs.{model}").get_config()
    if batch_size:
        config.data.batch_size = batch_size
    config.training.num_steps = 10**9  # never reached: the loops below stop themselves
    cfg = parse_config(config)
    peak = matmul_peak_flops(matmul_n)

    source = data_source(cfg.data, train=True)
    trainer = make_trainer(create_model(cfg.model, rngs=nnx.Rngs(0)), cfg)

    def pipeline():
        return iter(BatchPipeline(source, batch_size=cfg.data.batch_size, seed=0, shuffle=True, drop_remainder=True,
                                  binarize=cfg.data.binarize, prefetch=cfg.data.prefetch))

    batch = jax.device_put(next(pipeline()))
    state = trainer.init_state()
    start = time.perf_counter()
    compiled = trainer.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    flops_per_step = _flops(compiled)

    # The Trainer: fit() over the real pipeline, metrics gathered as in training.
    class _Stop:
        def __init__(self, n):
            self.n = n

        def on_step_end(self, t, step, s):
            if step >= self.n:
                t.request_stop("benchmark")

    trainer_state = [trainer.init_state()]

    def trainer_loop():
        s = trainer_state[0]
        s = trainer.fit(s, pipeline(), callbacks=[_Stop(int(s.step) + steps)])
        jax.block_until_ready(s)
        trainer_state[0] = s

    trainer_loop()  # warm-up: compiles, starts the pipeline threads
    trainer_seconds = _best_seconds(trainer_loop, repeats)

    # A bare jax.jit of the same step on one device-resident batch.
    bare_step = jax.jit(trainer._train_step, donate_argnums=0)
    bare_state = [trainer.init_state()]

    def bare_loop():
        s = bare_state[0]
        for _ in range(steps):
            s, _ = bare_step(s, batch)
        jax.block_until_ready(s)
        bare_state[0] = s

    bare_loop()
    bare_seconds = _best_seconds(bare_loop, repeats)

    generate = lambda: trainer.generate(trainer_state[0], num_samples, seed=0)  # noqa: E731
    generate()
    sample_seconds = _best_seconds(generate, repeats)
    memory, memory_kind = _peak_memory()

    trainer_rate, bare_rate = steps / trainer_seconds, steps / bare_seconds
    return {
        "model": model,
        "device": get_device_manager().get_device(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": platform.processor() or platform.machine(),
        "batch_size": cfg.data.batch_size,
        "steps_timed": steps,
        "compile_seconds": compile_seconds,
        "trainer_steps_per_second": trainer_rate,
        "trainer_examples_per_second": trainer_rate * cfg.data.batch_size,
        "bare_jit_steps_per_second": bare_rate,
        "trainer_vs_bare_jit": trainer_rate / bare_rate,
        "flops_per_step": flops_per_step,
        "achieved_gflops": flops_per_step * trainer_rate / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "share_of_matmul_peak": flops_per_step * trainer_rate / peak,
        "samples_per_second": num_samples / sample_seconds,
        "peak_memory_mib": memory / 2**20,
        "peak_memory_kind": memory_kind,
    }


def format_table(result: dict) -> str:
    rows = [
        ("model", result["model"]),
        ("device", f"{result['device']} ({result['device_kind']})"),
        ("batch size", result["batch_size"]),
        ("compile time", f"{result['compile_seconds']:.2f} s"),
        ("Trainer steps/s", f"{result['trainer_steps_per_second']:.1f}"),
        ("Trainer examples/s", f"{result['trainer_examples_per_second']:.0f}"),
        ("bare jax.jit steps/s", f"{result['bare_jit_steps_per_second']:.1f}"),
        ("Trainer / bare jit", f"{result['trainer_vs_bare_jit']:.3f}"),
        ("GFLOP per step (XLA)", f"{result['flops_per_step'] / 1e9:.3f}"),
        ("achieved GFLOP/s", f"{result['achieved_gflops']:.1f}"),
        ("matmul peak GFLOP/s", f"{result['matmul_peak_gflops']:.1f}"),
        ("share of matmul peak", f"{100 * result['share_of_matmul_peak']:.1f} %"),
        ("samples/s (generate)", f"{result['samples_per_second']:.0f}"),
        ("peak memory", f"{result['peak_memory_mib']:.0f} MiB ({result['peak_memory_kind']})"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = run_benchmark(_MODEL.value, steps=_STEPS.value, repeats=_REPEATS.value, batch_size=_BATCH.value,
                           matmul_n=_MATMUL_N.value, num_samples=_SAMPLES.value)
    print(format_table(result))
    if _OUTPUT.value:
        from workshop.train.cli import user_path

        path = user_path(_OUTPUT.value)
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
