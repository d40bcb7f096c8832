"""Train-step time of configs under each learned upsampling (`layers.UPSAMPLINGS`), alternating in one process.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m tools.benchmark.upsampling --configs=conv_vae,dcgan,vqvae,ddpm_unet
    tools/bazel run //tools/benchmark:upsampling -- --configs=conv_vae --batch_size=128 --rounds=5

For each config, one trainer per upsampling (`model.parameters.upsampling`)
is built and its compiled `train_step` warmed up; then in every round each
runs a few steps on the same batch (the order rotating each round). Reported:
the median wall and CPU seconds per step (CPU seconds of the whole process,
less sensitive to other jobs on a shared machine), the median per-round
speed-up over the first method of `--methods`, and FLOPs per step from XLA's
cost analysis.
"""

from __future__ import annotations

import importlib
import os
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from workshop.data.pipeline import BatchPipeline
from workshop.models.factories import create_model
from workshop.models.layers import UPSAMPLINGS
from workshop.train.experiment import data_source, make_trainer, parse_config
from tools.benchmark.reports import write_report

_CONFIGS = flags.DEFINE_list("configs", ["conv_vae", "dcgan", "vqvae", "ddpm_unet"], "Configs with an upsampling.")
_METHODS = flags.DEFINE_list("methods", ["transposed", *[m for m in UPSAMPLINGS if m != "transposed"]],
                             "Upsamplings to compare; the first is the reference of the speed-ups.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the configs' batch size.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Target seconds per method per round.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON here too.")


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def compare(config: str, methods: list[str], *, batch_size: int | None, rounds: int, seconds: float) -> dict:
    runs = {}
    for method in methods:
        raw = importlib.import_module(f"workshop.train.configs.{config}").get_config()
        raw.model.parameters.upsampling = method
        raw.training.num_steps = 10**9
        if batch_size:
            raw.data.batch_size = batch_size
        cfg = parse_config(raw)
        trainer = make_trainer(create_model(cfg.model, rngs=nnx.Rngs(0)), cfg)
        batch = jax.device_put(next(iter(BatchPipeline(data_source(cfg.data, train=True), batch_size=cfg.data.batch_size,
                                                       seed=0, shuffle=True, drop_remainder=True,
                                                       binarize=cfg.data.binarize))))
        state = trainer.init_state()
        flops = _flops(trainer.train_step.lower(state, batch).compile())
        for _ in range(2):
            state, _ = trainer.train_step(state, batch)
        start = time.perf_counter()
        state, _ = trainer.train_step(state, batch)
        jax.block_until_ready(state)
        steps = max(2, int(seconds / max(time.perf_counter() - start, 1e-6)))
        runs[method] = {"trainer": trainer, "state": state, "batch": batch, "steps": steps, "flops": flops,
                        "wall": [], "cpu": []}
    loads = []
    for r in range(rounds):
        for method in methods[r % len(methods):] + methods[:r % len(methods)]:
            run = runs[method]
            state = run["state"]
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(run["steps"]):
                state, _ = run["trainer"].train_step(state, run["batch"])
            jax.block_until_ready(state)
            run["wall"].append((time.perf_counter() - wall) / run["steps"])
            run["cpu"].append((time.process_time() - cpu) / run["steps"])
            run["state"] = state
        loads.append(os.getloadavg()[0])
        print(f"{config} round {r + 1}: " + ", ".join(f"{m} {1e3 * runs[m]['wall'][-1]:.0f} ms" for m in methods)
              + f" (load {loads[-1]:.1f})", flush=True)
    ref = methods[0]
    return {
        "config": config, "batch_size": batch_size, "load_average": [min(loads), max(loads)],
        "methods": {m: {"ms_per_step": 1e3 * float(np.median(runs[m]["wall"])),
                        "cpu_ms_per_step": 1e3 * float(np.median(runs[m]["cpu"])),
                        "speedup_over_" + ref: float(np.median([a / b for a, b in zip(runs[ref]["wall"],
                                                                                       runs[m]["wall"])])),
                        "cpu_speedup_over_" + ref: float(np.median([a / b for a, b in zip(runs[ref]["cpu"],
                                                                                           runs[m]["cpu"])])),
                        "gflop_per_step": runs[m]["flops"] / 1e9}
                    for m in methods},
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    results = [compare(c, _METHODS.value, batch_size=_BATCH.value, rounds=_ROUNDS.value, seconds=_SECONDS.value)
               for c in _CONFIGS.value]
    ref = _METHODS.value[0]
    print(f"| config | upsampling | ms/step | CPU ms/step | speed-up over {ref} (wall, CPU) | GFLOP/step | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for m, v in r["methods"].items():
            print(f"| `{r['config']}` | {m} | {v['ms_per_step']:.0f} | {v['cpu_ms_per_step']:.0f} "
                  f"| {v['speedup_over_' + ref]:.2f}, {v['cpu_speedup_over_' + ref]:.2f} | {v['gflop_per_step']:.2f} "
                  f"| {r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")
    if _OUTPUT.value:
        write_report(_OUTPUT.value, results)


if __name__ == "__main__":
    app.run(main)
