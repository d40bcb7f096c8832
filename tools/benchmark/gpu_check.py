"""One command for a GPU machine: the GPU test twins, every family's speed, a short convergence run.

    tools/gpu_check                        # in the CUDA virtualenv of requirements_gpu_lock.txt
    tools/gpu_check --python=python3       # in an interpreter that already has CUDA JAX
    tools/gpu_check --dry_run              # the same stages on this CPU, tiny sizes

Stages, each in subprocesses with their own time limit (a failing or hanging
stage loses only itself), in the order of what a first GPU run must show:

  1. `environment`: jax/jaxlib/flax/optax/orbax versions, the devices, nvidia-smi.
  2. `peaks`: the best of several jitted n x n matmuls in float32 (XLA's default
     precision, which lets Hopper use TF32) and in bfloat16: the yardsticks.
  3. `tests`: the test files of `TEST_FILES` (what a backend can break: the
     trainer, precision, checkpoints, every family's numerics), each run as its
     own process like the Bazel `_gpu` twins (`JAX_PLATFORMS=cuda`, f32 matmuls
     at full precision so the CPU tolerances hold), several at a time.
  4. `speed`: tools/benchmark/benchmark.py for each family's reference config
     at GPU batch sizes, in float32 and bfloat16: steps/s, GFLOP/s, the share
     of the matmul peak of the same dtype, memory.
  5. `convergence`: `ddpm_unet` trained for up to `--convergence_steps` steps
     (fewer if the measured speed and the time left say so), then bits/dim and
     FID/KID/PRDC of `--convergence_samples` DDIM-50 samples with the Fashion-MNIST
     feature network (tools/benchmark/quality.py), as the CPU figure in
     BENCHMARKS.md was measured. The CPU dry run trains the `vae` config for 300
     steps instead (ddpm_unet takes minutes per hundred steps on a CPU).

Writes `<out>/gpu_check.json` (everything) and `<out>/gpu_check.md` (the
BENCHMARKS.md section), and prints the Markdown at the end. The data and the
feature network are read from `WORKSHOP_DATA_DIR` and `WORKSHOP_CACHE_DIR` as
everywhere else; nothing is downloaded.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[2]

_OUT = flags.DEFINE_string("out", "/tmp/workshop_gpu_check", "Folder for the JSON, the Markdown and the run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Run every stage on the CPU with tiny sizes (checks the script).")
_BUDGET = flags.DEFINE_integer("budget_s", 450, "Wall-clock seconds for all stages together.")
_STAGES = flags.DEFINE_list("stages", ["environment", "peaks", "tests", "speed", "convergence"], "Stages to run.")
_CONVERGENCE_STEPS = flags.DEFINE_integer("convergence_steps", 3000, "Most train steps of the ddpm_unet run "
                                          "(3000 x 64 is the run behind the CPU figure in BENCHMARKS.md).")
_SAMPLES = flags.DEFINE_integer("convergence_samples", 2000, "Samples scored after the convergence run.")
_JOBS = flags.DEFINE_integer("jobs", 6, "Test files run at a time.")
_STAGE = flags.DEFINE_string("stage", None, "Internal: run one in-process stage and write its JSON.")
_STAGE_STEPS = flags.DEFINE_integer("stage_steps", None, "Internal: steps of the convergence stage.")
_STAGE_CONFIG = flags.DEFINE_string("stage_config", None, "Internal: config of the convergence stage.")
_RESULT = flags.DEFINE_string("result", None, "Internal: where the in-process stage writes its JSON.")

# The test files whose `_gpu` twins matter most: every family's numerics, the
# trainer, mixed precision, checkpoints and the shared layers.
TEST_FILES = [
    "workshop/train/trainer_test.py",
    "workshop/train/precision_test.py",
    "workshop/train/nonfinite_test.py",
    "workshop/train/checkpointing_test.py",
    "workshop/train/gan_training_test.py",
    "workshop/train/gan_precision_test.py",
    "workshop/train/optimizers_test.py",
    "workshop/models/layers/precision_test.py",
    "workshop/models/layers/conv_test.py",
    "workshop/models/layers/attention_test.py",
    "workshop/models/vae/vae_test.py",
    "workshop/models/vae/vqvae_test.py",
    "workshop/models/gan/gan_test.py",
    "workshop/models/diffusion/ddpm_test.py",
    "workshop/models/diffusion/samplers_test.py",
    "workshop/models/diffusion/unet_test.py",
    "workshop/models/diffusion/dit_test.py",
    "workshop/models/diffusion/vlb_test.py",
    "workshop/models/flow/models_test.py",
    "workshop/models/flow/bijectors_test.py",
    "workshop/models/flow/spline_test.py",
    "workshop/models/flow/precision_test.py",
    "workshop/models/ebm/ebm_test.py",
    "workshop/models/ebm/samplers_test.py",
    "workshop/models/autoregressive/pixelcnn_test.py",
    "workshop/models/autoregressive/transformer_test.py",
    "workshop/models/autoregressive/wavenet_test.py",
    "workshop/core/losses_test.py",
    "workshop/eval/likelihood_test.py",
    "workshop/eval/frechet_test.py",
    "workshop/generative_models/guide_test.py",
]

# family reference config -> batch size on one GPU (CPU dry run: the config's own, 8 steps).
SPEED_CONFIGS = {
    "vae": 1024,
    "dcgan": 256,
    "ddpm_unet": 256,
    "glow": 256,
    "ebm_fashion_mnist": 256,
    "pixelcnn": 256,
}


def _env(dry_run: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["JAX_PLATFORMS"] = "cpu" if dry_run else "cuda"
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several processes share the GPU
    return env


def _run(cmd: list[str], *, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
        out = proc.stdout + proc.stderr
        code = proc.returncode
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        out += (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        code = "timeout"
    return {"returncode": code, "seconds": round(time.perf_counter() - start, 1), "tail": out[-3000:]}


def _inprocess_stage(stage: str, **flags_: Any) -> list[str]:
    return [sys.executable, "-m", "tools.benchmark.gpu_check", f"--stage={stage}",
            *[f"--{k}={v}" for k, v in flags_.items()]]


# --- the stages that run inside a child process --------------------------------------------------

def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import jax

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain", "pydantic"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        smi = f"nvidia-smi unavailable: {err}"
    return {"python": sys.version.split()[0], "versions": versions, "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()], "nvidia_smi": smi,
            "cpu_count": os.cpu_count()}


def peaks(dry_run: bool) -> dict[str, Any]:
    import jax.numpy as jnp

    from tools.benchmark.benchmark import matmul_peak_flops

    n = 512 if dry_run else 8192
    return {"matmul_n": n, **{f"{name}_tflops": matmul_peak_flops(n, repeats=10, dtype=dtype) / 1e12
                             for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))}}


def convergence(config: str, steps: int, samples: int, out: pathlib.Path) -> dict[str, Any]:
    from tools.benchmark.quality import run_quality
    from workshop.eval.feature_net import FeatureNetworkMissingError, load_feature_net

    try:
        load_feature_net()
    except FeatureNetworkMissingError:  # a fresh machine: train it here (seconds on a GPU)
        subprocess.run([sys.executable, "-m", "workshop.eval.train_feature_net"], cwd=ROOT, check=True)
    return run_quality(config, steps=steps, workdir_root=out / "runs", num_samples=samples)


# --- the driver ----------------------------------------------------------------------------------

def run_tests(files: list[str], *, deadline: float, env: dict[str, str], jobs: int) -> dict[str, Any]:
    env = {**env, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}  # CPU tolerances: no TF32 in the tests
    results: dict[str, Any] = {}

    def one(path: str) -> tuple[str, dict[str, Any]]:
        left = deadline - time.time()
        if left < 20:
            return path, {"returncode": "not run (budget)", "seconds": 0, "tail": ""}
        return path, _run([sys.executable, path], timeout=min(240.0, left), env=env)

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for path, r in pool.map(one, files):
            results[path] = r
            print(f"  {path}: {r['returncode']} ({r['seconds']} s)", flush=True)
    passed = [p for p, r in results.items() if r["returncode"] == 0]
    failed = {p: r["tail"][-1500:] for p, r in results.items() if r["returncode"] != 0}
    return {"passed": len(passed), "failed": len(failed), "files": {p: r["returncode"] for p, r in results.items()},
            "seconds": {p: r["seconds"] for p, r in results.items()}, "failures": failed}


def run_speed(*, deadline: float, env: dict[str, str], dry_run: bool, out: pathlib.Path) -> list[dict[str, Any]]:
    rows = []
    configs = list(SPEED_CONFIGS.items())[:2] if dry_run else SPEED_CONFIGS.items()
    for precision in ("float32", "bfloat16"):
        for model, batch in configs:
            left = deadline - time.time()
            if left < 30:
                rows.append({"model": model, "precision": precision, "error": "not run (budget)"})
                continue
            result = out / f"speed_{model}_{precision}.json"
            args = [f"--model={model}", f"--precision={precision}", "--noextras", f"--output={result}"]
            args += (["--steps=10", "--repeats=1", "--matmul_n=256", "--num_samples=16"] if dry_run else
                     [f"--batch_size={batch}", "--steps=50", "--repeats=2", "--matmul_n=8192", "--num_samples=256"])
            r = _run([sys.executable, "-m", "tools.benchmark.benchmark", *args], timeout=min(120.0, left), env=env)
            if r["returncode"] == 0 and result.is_file():
                row = json.loads(result.read_text())["results"][0]
            else:
                row = {"model": model, "precision": precision, "error": f"{r['returncode']}: {r['tail'][-800:]}"}
            print(f"  {model} {precision}: " + (f"{row['trainer_steps_per_second']:.1f} steps/s"
                                               if "error" not in row else row["error"][:200]), flush=True)
            rows.append(row)
    return rows


def format_markdown(report: dict[str, Any]) -> str:
    env, pk = report.get("environment", {}), report.get("peaks", {})
    lines = [f"{'DRY RUN on the CPU' if report['dry_run'] else 'GPU run'}, {report['seconds']:.0f} s in all.", ""]
    if env and "error" not in env:
        versions = env["versions"]
        lines += [f"Device: {env['devices']} ({env['nvidia_smi']}); jax {versions['jax']}, flax {versions['flax']}, "
                  f"optax {versions['optax']}, orbax {versions['orbax-checkpoint']}, Python {env['python']}.", ""]
    elif env:
        lines += [f"Environment: error: {env['error'][:300]}", ""]
    if "float32_tflops" in pk:
        lines += [f"Matmul peak ({pk['matmul_n']}^3, best of 10): float32 {pk['float32_tflops']:.1f} TFLOP/s, "
                  f"bfloat16 {pk['bfloat16_tflops']:.1f} TFLOP/s.", ""]
    tests = report.get("tests")
    if tests:
        lines += [f"Tests: {tests['passed']} files passed, {tests['failed']} failed"
                  + (f" ({', '.join(sorted(tests['failures']))})" if tests["failures"] else "") + ".", ""]
    speed = report.get("speed")
    if speed:
        lines += ["| Config | precision | batch | Trainer steps/s | examples/s | bare jit steps/s | GFLOP/step "
                  "| TFLOP/s | share of same-dtype matmul peak | generate samples/s | peak memory |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in speed:
            if "error" in r:
                lines.append(f"| `{r['model']}` | {r['precision']} | error: {r['error'][:120]!r} |" + " |" * 8)
                continue
            lines.append(
                f"| `{r['model']}` | {r['precision']} | {r['batch_size']} | {r['trainer_steps_per_second']:.1f} "
                f"| {r['trainer_examples_per_second']:,.0f} | {r['bare_jit_steps_per_second']:.1f} "
                f"| {r['flops_per_step'] / 1e9:.2f} | {r['achieved_gflops'] / 1e3:.2f} "
                f"| {100 * r['share_of_matmul_peak']:.1f} % | {r['samples_per_second']:,.0f} "
                f"| {r['peak_memory_mib']:.0f} MiB |")
        lines.append("")
    conv = report.get("convergence")
    if conv and "error" not in conv:
        lines += [f"Convergence: `{conv['model']}`, {conv['steps']} steps x {conv['batch_size']} in "
                  f"{conv['train_seconds']:.0f} s (train and test-bound evaluation): "
                  f"{conv.get('nll_bits_per_dim', float('nan')):.2f} bits/dim ({conv.get('estimate', '?')}); "
                  f"{conv['num_samples']} samples: FID {conv['fid']:.2f}, KID {conv['kid']:.4g}, "
                  f"precision {conv['precision']:.3f}, recall {conv['recall']:.3f}, density {conv['density']:.3f}, "
                  f"coverage {conv['coverage']:.3f} ({conv['feature_net']}).", ""]
    elif conv:
        lines += [f"Convergence: error: {conv['error'][:300]}", ""]
    return "\n".join(lines)


def drive() -> dict[str, Any]:
    dry_run = _DRY_RUN.value
    out = pathlib.Path(_OUT.value).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = _env(dry_run)
    start = time.time()
    deadline = start + _BUDGET.value
    report: dict[str, Any] = {"dry_run": dry_run, "budget_s": _BUDGET.value}

    def stage_json(stage: str, timeout: float, **kw: Any) -> dict[str, Any]:
        result = out / f"{stage}.json"
        r = _run(_inprocess_stage(stage, result=result, **kw), timeout=timeout, env=env)
        if r["returncode"] == 0 and result.is_file():
            return json.loads(result.read_text())
        return {"error": f"{r['returncode']}: {r['tail'][-2000:]}"}

    stages = set(_STAGES.value)
    if "environment" in stages:
        print("environment ...", flush=True)
        report["environment"] = stage_json("environment", 120)
        print(f"  {report['environment']}", flush=True)
    if "peaks" in stages:
        print("peaks ...", flush=True)
        report["peaks"] = stage_json("peaks", 120, dry_run=dry_run)
        print(f"  {report['peaks']}", flush=True)
    # What is left is shared out: tests 35 %, speed 35 %, convergence the rest.
    left = deadline - time.time()
    if "tests" in stages:
        print("tests ...", flush=True)
        files = TEST_FILES[:3] if dry_run else TEST_FILES
        report["tests"] = run_tests(files, deadline=time.time() + 0.35 * left, env=env, jobs=_JOBS.value)
    if "speed" in stages:
        print("speed ...", flush=True)
        report["speed"] = run_speed(deadline=time.time() + 0.35 * left, env=env, dry_run=dry_run, out=out)
    if "convergence" in stages:
        left = deadline - time.time()
        rate = next((r["trainer_steps_per_second"] for r in report.get("speed", [])
                     if r["model"] == "ddpm_unet" and r.get("precision") == "float32" and "error" not in r), None)
        config = "vae" if dry_run else "ddpm_unet"
        steps = 300 if dry_run else _CONVERGENCE_STEPS.value  # above the configs' warm-up steps
        if rate and not dry_run:  # rate was at batch 256; the config trains at 64: a lower bound on speed
            steps = max(300, min(steps, int(0.5 * left * rate * 256 / 64)))
        print(f"convergence: {config}, {steps} steps ...", flush=True)
        report["convergence"] = stage_json("convergence", max(30.0, left - 5), stage_config=config, stage_steps=steps,
                                           convergence_samples=100 if dry_run else _SAMPLES.value)
    report["seconds"] = time.time() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    markdown = format_markdown(report)
    (out / "gpu_check.md").write_text(markdown + "\n")
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _STAGE.value:  # a child process: one stage, JSON out
        stage = _STAGE.value
        if stage == "environment":
            result = environment()
        elif stage == "peaks":
            result = peaks(_DRY_RUN.value)
        elif stage == "convergence":
            result = convergence(_STAGE_CONFIG.value, _STAGE_STEPS.value, _SAMPLES.value, pathlib.Path(_RESULT.value).parent)
        else:
            raise app.UsageError(f"--stage={stage!r} is unknown; known: environment, peaks, convergence")
        pathlib.Path(_RESULT.value).write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        return
    report = drive()
    print(format_markdown(report))
    print(f"wrote {_OUT.value}/gpu_check.json and gpu_check.md")


if __name__ == "__main__":
    app.run(main)
