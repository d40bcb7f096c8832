"""Training and sampling speed of model configs, against this machine's matmul peak; sample quality.

    tools/bazel run //tools/benchmark -- --model=vae [--steps=200] [--output=bench.json]
    tools/bazel run //tools/benchmark -- --model=all --steps=20 --repeats=1 --output=bench.json
    tools/bazel run //tools/benchmark -- --mode=quality --model=all --quality_steps=300

`--model` is a config of workshop/train/configs, a comma-separated list, or
`all`: the reference config of every registered family (`REFERENCE_CONFIGS`).
Several configs print one Markdown table (the rows of BENCHMARKS.md) and write
one JSON file with the machine's description. `--mode=quality` trains each
config for `--quality_steps` steps instead and reports bits/dim where the
family defines a likelihood and FID/KID/PRDC with the Fashion-MNIST feature
network (tools/benchmark/quality.py).

Measures, in one process:
  * the matmul peak: the best of several runs of a jitted f32 matmul
    (n x n, 2n^3 FLOPs), the yardstick for "achieved share of peak";
  * compile time of the train step;
  * steps/s and examples/s of `Trainer.fit` on the real data pipeline, and of a
    bare `jax.jit` loop of the same step function on one device-resident batch;
  * FLOPs per step from XLA's cost analysis, so achieved GFLOP/s = FLOPs x steps/s;
  * peak memory (the accelerator's allocator peak where it keeps one, otherwise
    the process's peak resident set);
  * sampling throughput of `generate` (samples/s);
  * with `--extras`, the family's own benchmarks: for diffusion configs the
    DDIM loop overhead (tools/benchmark/diffusion_sampling.py, in process); once
    per run the loader throughput (tools/benchmark/loaders.py) and, when an
    autoregressive config is in the list, cached-vs-naive decoding
    (tools/benchmark/autoregressive_generation.py), each in a subprocess because
    those modules define absl flags of the same names as this one.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
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
from tools.benchmark.reports import write_report

_MODEL = flags.DEFINE_string("model", "vae", "Config module in workshop/train/configs, a comma-separated list, "
                             "or 'all' (every registered family's reference config).")
_MODE = flags.DEFINE_enum("mode", "speed", ["speed", "quality"], "speed: steps/s, FLOPs, memory, samples/s; "
                          "quality: train --quality_steps steps, then bits/dim and FID/KID/PRDC.")
_EXTRAS = flags.DEFINE_bool("extras", True, "Also run the family benchmarks (DDIM loop overhead, loaders, "
                            "autoregressive decoding) when several configs are benchmarked.")
_SAMPLING_STEPS = flags.DEFINE_integer("sampling_steps", 50, "Sampler steps of the diffusion loop-overhead extra "
                                       "(DDIM for DDPM, the model's own sampler for flow matching and EDM).")
_QUALITY_STEPS = flags.DEFINE_integer("quality_steps", 300, "Train steps per config in quality mode.", lower_bound=1)
_QUALITY_SAMPLES = flags.DEFINE_integer("quality_samples", 2000, "Samples scored per config in quality mode.")
_WORKDIR = flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "workshop_benchmark_quality"),
                               "Where quality mode trains (one subfolder per config, replaced each run).")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed train steps per measurement.", lower_bound=10)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements per loop; the best is kept.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the config's batch size.")
_PRECISION = flags.DEFINE_enum("precision", None, ["float32", "bfloat16", "float16"],
                               "Override the config's training.precision (matmul peak measured in the same dtype).")
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


def matmul_peak_flops(n: int, repeats: int = 5, dtype=jnp.float32) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls in `dtype` (after warm-up; XLA's default precision)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
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


def run_benchmark(model: str, *, steps: int, repeats: int, batch_size: int | None, matmul_n: int, num_samples: int,
                  precision: str | None = None) -> dict:
    config = importlib.import_module(f"workshop.train.configs.{model}").get_config()
    if batch_size:
        config.data.batch_size = batch_size
    if precision:
        config.training.precision = precision
    config.training.num_steps = 10**9  # never reached: the loops below stop themselves
    cfg = parse_config(config)
    # The yardstick in the dtype the matmuls of the step run in.
    peak = matmul_peak_flops(matmul_n, dtype=jnp.dtype(cfg.training.precision))

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
        "precision": cfg.training.precision,
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
        ("precision", result["precision"]),
        ("compile time", f"{result['compile_seconds']:.2f} s"),
        ("Trainer steps/s", f"{result['trainer_steps_per_second']:.1f}"),
        ("Trainer examples/s", f"{result['trainer_examples_per_second']:.0f}"),
        ("bare jax.jit steps/s", f"{result['bare_jit_steps_per_second']:.1f}"),
        ("Trainer / bare jit", f"{result['trainer_vs_bare_jit']:.3f}"),
        ("GFLOP per step (XLA)", f"{result['flops_per_step'] / 1e9:.3f}"),
        ("achieved GFLOP/s", f"{result['achieved_gflops']:.1f}"),
        (f"{result['precision']} matmul peak GFLOP/s", f"{result['matmul_peak_gflops']:.1f}"),
        ("share of matmul peak", f"{100 * result['share_of_matmul_peak']:.1f} %"),
        ("samples/s (generate)", f"{result['samples_per_second']:.0f}"),
        ("peak memory", f"{result['peak_memory_mib']:.0f} MiB ({result['peak_memory_kind']})"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# family -> the config that stands for it in the benchmark table.
REFERENCE_CONFIGS = {
    "vae": "vae",
    "gan": "dcgan",
    "diffusion": "ddpm_unet",
    "flow": "glow",
    "ebm": "ebm_fashion_mnist",
    "autoregressive": "pixelcnn",
}


def resolve_models(spec: str) -> list[str]:
    """`all` -> the reference config of every registered family; else the comma-separated names."""
    if spec.strip() != "all":
        names = [name.strip() for name in spec.split(",") if name.strip()]
        if not names:
            raise app.UsageError("--model is empty; give a config name, a comma-separated list or 'all'")
        return names
    from workshop.core import registry

    families = [f for f in registry.FAMILIES if registry.registered_model_types(f)]
    missing = [f for f in families if f not in REFERENCE_CONFIGS]
    if missing:
        raise ValueError(f"families {missing} are registered but have no reference config in REFERENCE_CONFIGS")
    return [REFERENCE_CONFIGS[f] for f in families]


def _family_of(model: str) -> str:
    config = importlib.import_module(f"workshop.train.configs.{model}").get_config()
    return parse_config(config).model.family


def diffusion_extras(model: str, *, batch_size: int, steps: int) -> dict:
    """Sampling-loop overhead of a diffusion config against NFE forwards (tools/benchmark/diffusion_sampling.py)."""
    from tools.benchmark import diffusion_sampling

    r = diffusion_sampling.measure_config(model, batch_size=batch_size, steps=steps, repeats=1)
    return {"loop_sampler": r["sampler"], "loop_steps": steps, "loop_nfe": r["nfe"], "loop_batch_size": batch_size,
            "loop_seconds": r["sampling_seconds"], "loop_vs_forwards": r["ratio"]}


def _module_json(module: str, args: list[str]) -> dict:
    """Runs `python -m <module> <args> --output=<tmp>` and returns its JSON (or the error)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", module, *args, f"--output={out}"], capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": f"{module} exited with {proc.returncode}: {' / '.join(tail)}"}
        return json.loads(out.read_text())


def machine_description() -> dict:
    return {
        "start_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": get_device_manager().get_device(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "jax_version": jax.__version__,
    }


def format_markdown(results: list[dict]) -> str:
    """The BENCHMARKS.md table: one row per config (failed ones with their error)."""
    lines = ["| Config | family | batch | compile | Trainer steps/s | examples/s | bare jit steps/s | Trainer / bare "
             "| GFLOP/step | GFLOP/s | share of matmul peak | generate samples/s | peak memory | family extra |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| `{r['model']}` | {r.get('family', '?')} | error: {r['error']} |" + " |" * 11)
            continue
        extra = ""
        if "loop_vs_forwards" in r:
            extra = (f"{r['loop_sampler']}-{r['loop_steps']} at batch {r['loop_batch_size']}: {r['loop_seconds']:.2f} "
                     f"s, {r['loop_vs_forwards']:.3f} x {r['loop_nfe']} forwards")
        lines.append(
            f"| `{r['model']}` | {r.get('family', '')} | {r['batch_size']} | {r['compile_seconds']:.2f} s "
            f"| {r['trainer_steps_per_second']:.1f} | {r['trainer_examples_per_second']:,.0f} "
            f"| {r['bare_jit_steps_per_second']:.1f} | {r['trainer_vs_bare_jit']:.3f} "
            f"| {r['flops_per_step'] / 1e9:.3f} | {r['achieved_gflops']:.1f} "
            f"| {100 * r['share_of_matmul_peak']:.1f} % of {r['matmul_peak_gflops']:.0f} ({r.get('precision', 'float32')}) "
            f"| {r['samples_per_second']:,.0f} | {r['peak_memory_mib']:.0f} MiB | {extra} |")
    return "\n".join(lines)


def _speed_args() -> list[str]:
    args = [f"--steps={_STEPS.value}", f"--repeats={_REPEATS.value}", f"--matmul_n={_MATMUL_N.value}",
            f"--num_samples={_SAMPLES.value}", "--noextras"]
    return (args + ([f"--batch_size={_BATCH.value}"] if _BATCH.value else [])
            + ([f"--precision={_PRECISION.value}"] if _PRECISION.value else []))


def run_speed(models: list[str]) -> dict:
    """One config in this process; several each in a fresh process (clean peak memory, failures isolated)."""
    machine = machine_description()  # the load average before this run adds its own
    results = []
    for model in models:
        if len(models) == 1:
            result = run_benchmark(model, steps=_STEPS.value, repeats=_REPEATS.value, batch_size=_BATCH.value,
                                   matmul_n=_MATMUL_N.value, num_samples=_SAMPLES.value,
                                   precision=_PRECISION.value)
        else:
            print(f"benchmarking {model} ...", flush=True)
            result = _module_json("tools.benchmark.benchmark", [f"--model={model}", *_speed_args()])
            result = result.get("results", [result])[0] if "error" not in result else {**result, "model": model}
        result["family"] = _family_of(model)
        if _EXTRAS.value and len(models) > 1 and result["family"] == "diffusion" and "error" not in result:
            try:
                result.update(diffusion_extras(model, batch_size=min(64, result["batch_size"]), steps=_SAMPLING_STEPS.value))
            except Exception as err:  # noqa: BLE001 - one failed extra must not lose the table
                result["loop_error"] = f"{type(err).__name__}: {err}"
        results.append(result)
    report = {"machine": machine, "mode": "speed", "results": results}
    if _EXTRAS.value and len(models) > 1:
        report["loaders"] = _module_json("tools.benchmark.loaders", ["--loaders=fashion_mnist", "--configs=vae",
                                                                     "--num_batches=50", "--train_steps=3"])
        if any(r.get("family") == "autoregressive" for r in results):
            report["autoregressive_generation"] = _module_json(
                "tools.benchmark.autoregressive_generation",
                ["--length=128", "--token_batch=2", "--audio_length=256", "--audio_batch=2", "--image_batch=4",
                 "--repeats=1"])
    return report


def run_quality_mode(models: list[str]) -> dict:
    from tools.benchmark.quality import run_quality

    machine = machine_description()
    results = []
    for model in models:
        print(f"training and scoring {model} ({_QUALITY_STEPS.value} steps) ...", flush=True)
        try:
            results.append(run_quality(model, steps=_QUALITY_STEPS.value, workdir_root=_WORKDIR.value,
                                       num_samples=_QUALITY_SAMPLES.value))
        except Exception as err:  # noqa: BLE001 - one failed config must not lose the table
            results.append({"model": model, "error": f"{type(err).__name__}: {err}"})
    return {"machine": machine, "mode": "quality", "quality_steps": _QUALITY_STEPS.value,
            "results": results}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    models = resolve_models(_MODEL.value)
    if _MODE.value == "quality":
        from tools.benchmark.quality import format_quality_table

        report = run_quality_mode(models)
        print(format_quality_table(report["results"]))
    else:
        report = run_speed(models)
        if len(models) == 1:
            print(format_table(report["results"][0]))
        print(format_markdown(report["results"]))
        for name in ("loaders", "autoregressive_generation"):
            if name in report:
                print(f"{name}: {json.dumps(report[name], sort_keys=True)[:2000]}")
    m = report["machine"]
    print(f"machine: {m['device']} ({m['device_kind']}), {m['cpu_count']} CPUs, load average at the end "
          f"{os.getloadavg()[0]:.1f} (at the start {m['load_average_1min']:.1f}), jax {m['jax_version']}, started {m['start_utc']} UTC")
    if _OUTPUT.value:
        write_report(_OUTPUT.value, report)


if __name__ == "__main__":
    app.run(main)
