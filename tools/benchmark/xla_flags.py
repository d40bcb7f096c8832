"""Reference configs' train steps under XLA CPU options, in alternating subprocesses.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m tools.benchmark.xla_flags --rounds=2
    tools/bazel run //tools/benchmark:xla_flags -- --configs=conv_vae,vae --rounds=3

XLA reads `XLA_FLAGS` once, when the backend starts, so each setting runs in
its own process: per round, one child per setting (the order rotating each
round), each timing every config's compiled `Trainer.train_step` on one
batch. Reported per config and setting: the median over rounds of
(baseline seconds per step / setting's), and the loss after the warm-up
steps, which must equal the baseline's within `--rtol` for the option to be
correct. A user's own `XLA_FLAGS` are kept and the setting's flags appended.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from tools.benchmark.reports import write_report

_CONFIGS = flags.DEFINE_list("configs", ["vae", "conv_vae", "dcgan", "ddpm_unet", "glow", "pixelcnn"],
                             "Configs of workshop/train/configs.")
_SETTINGS = flags.DEFINE_list(
    "settings",
    ["baseline=", "xnnpack=--xla_cpu_use_xnnpack=true", "onednn=--xla_cpu_use_onednn=true",
     "xnn_graph_greedy=--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"],
    "name=flags pairs (flags space-separated); the first is the baseline.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size of every config.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Target timed seconds per config per child.")
_RTOL = flags.DEFINE_float("rtol", 1e-3, "Largest relative loss difference from the baseline that counts as equal.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: time the configs in this process and print JSON.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the report as JSON here too.")

_WARMUP_STEPS = 3


def time_configs(configs: list[str], batch_size: int, seconds: float) -> dict:
    """{config: {seconds_per_step, loss_after_warmup, compile_seconds}} in this process."""
    import jax  # noqa: PLC0415 - after XLA_FLAGS is set by the parent
    from flax import nnx  # noqa: PLC0415

    from workshop.data.pipeline import BatchPipeline  # noqa: PLC0415
    from workshop.models.factories import create_model  # noqa: PLC0415
    from workshop.train.experiment import data_source, make_trainer, parse_config  # noqa: PLC0415

    out = {}
    for name in configs:
        raw = importlib.import_module(f"workshop.train.configs.{name}").get_config()
        raw.data.batch_size = batch_size
        raw.training.num_steps = 10**9
        cfg = parse_config(raw)
        trainer = make_trainer(create_model(cfg.model, rngs=nnx.Rngs(0)), cfg)
        source = data_source(cfg.data, train=True)
        batch = jax.device_put(next(iter(BatchPipeline(source, batch_size=batch_size, seed=0, shuffle=True,
                                                       drop_remainder=True, binarize=cfg.data.binarize))))
        state = trainer.init_state()
        start = time.perf_counter()
        for _ in range(_WARMUP_STEPS):
            state, metrics = trainer.train_step(state, batch)
        loss = float(jax.device_get(metrics["loss"] if "loss" in metrics else next(iter(metrics.values()))))
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        state, _ = trainer.train_step(state, batch)
        jax.block_until_ready(state)
        steps = max(2, int(seconds / max(time.perf_counter() - start, 1e-6)))
        start = time.perf_counter()
        for _ in range(steps):
            state, _ = trainer.train_step(state, batch)
        jax.block_until_ready(state)
        out[name] = {"seconds_per_step": (time.perf_counter() - start) / steps, "steps": steps,
                     "loss_after_warmup": loss, "first_steps_seconds": compile_seconds}
    return out


def _child(setting_flags: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), setting_flags) if f)
    args = [sys.executable, "-m", "tools.benchmark.xla_flags", "--child", f"--configs={','.join(_CONFIGS.value)}",
            f"--batch_size={_BATCH.value}", f"--seconds={_SECONDS.value}"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CHILD.value:
        print(json.dumps(time_configs(_CONFIGS.value, _BATCH.value, _SECONDS.value)))
        return
    settings = [s.partition("=")[::2] for s in _SETTINGS.value]
    names = [n for n, _ in settings]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    loads = []
    for r in range(_ROUNDS.value):
        order = settings[r % len(settings):] + settings[:r % len(settings)]
        for name, setting_flags in order:
            runs[name].append(_child(setting_flags))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1} {name}: {json.dumps(runs[name][-1])[:400]} (load {loads[-1]:.1f})", flush=True)
    base = names[0]
    table = ["| config | " + " | ".join(f"{n} ms/step" for n in names) + " | "
             + " | ".join(f"{base} / {n}" for n in names[1:]) + " | loss equal |",
             "| --- " * (2 * len(names)) + "| --- |"]
    report = {"settings": dict(settings), "batch_size": _BATCH.value, "rounds": _ROUNDS.value,
              "load_average": {"min": min(loads), "max": max(loads)}, "runs": runs, "summary": {}}
    for config in _CONFIGS.value:
        ok = [(runs[n][i], runs[base][i]) for n in names for i in range(_ROUNDS.value)]
        if any("error" in a or "error" in b for a, b in ok):
            errors = {n: [x.get("error") for x in runs[n] if "error" in x] for n in names}
            table.append(f"| `{config}` | errors: {errors} |")
            continue
        ms = {n: 1e3 * float(np.median([x[config]["seconds_per_step"] for x in runs[n]])) for n in names}
        speedups = {n: float(np.median([b[config]["seconds_per_step"] / x[config]["seconds_per_step"]
                                        for x, b in zip(runs[n], runs[base])])) for n in names[1:]}
        base_loss = runs[base][0][config]["loss_after_warmup"]
        equal = {n: abs(runs[n][0][config]["loss_after_warmup"] - base_loss) <= _RTOL.value * abs(base_loss)
                 for n in names[1:]}
        report["summary"][config] = {"ms_per_step": ms, "speedup_over_baseline": speedups, "loss_equal": equal,
                                     "losses": {n: runs[n][0][config]["loss_after_warmup"] for n in names}}
        table.append(f"| `{config}` | " + " | ".join(f"{ms[n]:.1f}" for n in names) + " | "
                     + " | ".join(f"{speedups[n]:.2f}" for n in names[1:]) + " | "
                     + ", ".join(f"{n}: {'yes' if equal[n] else 'NO'}" for n in names[1:]) + " |")
    print("\n".join(table))
    print(f"load average {report['load_average']['min']:.1f}-{report['load_average']['max']:.1f}, "
          f"batch {_BATCH.value}, {_ROUNDS.value} rounds")
    if _OUTPUT.value:
        write_report(_OUTPUT.value, report)


if __name__ == "__main__":
    app.run(main)
