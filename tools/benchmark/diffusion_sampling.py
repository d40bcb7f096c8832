"""Loop overhead of a diffusion sampler: one compiled sampling loop against NFE x one network forward.

    PYTHONPATH=. python -m tools.benchmark.diffusion_sampling --model=ddpm_unet
    tools/bazel run //tools/benchmark:diffusion_sampling -- --model=ddpm_dit --batch_size=64 --steps=50

The aim: sampling DDIM with 50 steps at batch 64 takes no more than
10 % longer than 50 forward passes of the denoiser on the same batch, measured
in the same process: the `lax.scan` loop, the per-step noise and the update
arithmetic must add (almost) nothing. Both sides are `jax.jit`-compiled
functions of the model's state (so XLA cannot fold the weights), timed after a
warm-up, and measured alternately `repeats` times; the best of each is kept,
which on a shared machine is the least disturbed run. The forward side is
`steps` back-to-back calls of the jitted denoiser, with one
`block_until_ready` at the end, i.e. exactly what a Python loop of jitted
steps would cost without the loop's own arithmetic.

The continuous-time models count their network evaluations (NFE) as they
sample (flow matching's velocity, EDM's denoiser; Dormand-Prince's count
depends on the tolerances), so their forward side is NFE forwards of that
network at one time; DDPM's samplers call the denoiser once per step (twice
for Heun, counted likewise).

`measure_sampling_overhead(model)` is the library entry point (the main
benchmark calls it for diffusion configs); `main` runs it on a config's
freshly initialised model (weights do not change the cost).

    PYTHONPATH=. python -m tools.benchmark.diffusion_sampling --model=flow_matching --sampler=euler --steps=20
    PYTHONPATH=. python -m tools.benchmark.diffusion_sampling --model=edm --sampler=heun --steps=18
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from tools.benchmark.reports import write_report

from workshop.models.diffusion import DDPM, EDM, FlowMatching

__all__ = ["ddpm_nfe", "format_result", "measure_config", "measure_sampling_overhead"]


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def ddpm_nfe(sampler: str, steps: int) -> int:
    """Denoiser calls of `steps` steps of a DDPM sampler: Heun 2 N - 1 (Karras et al.), the others N."""
    return 2 * steps - 1 if sampler == "heun" else steps


def measure_sampling_overhead(model: Any, *, batch_size: int = 64, steps: int = 50, sampler: str | None = None,
                              repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Times `model.generate(sampler, steps)` against `steps` jitted denoiser forwards, same batch.

    Args:
      model: a diffusion model with `generate(*, n_samples, rngs, sampler, steps)`,
        `denoiser()` and `input_shape` (`DDPM`), or a `FlowMatching` or `EDM`.
      batch_size: B, samples per call and the forward's batch.
      steps: sampler steps; the forward side runs the network NFE times.
      sampler: the sampler to time; None: "ddim" for DDPM (one denoiser call
        per step), the model's own for flow matching and EDM.
      repeats: alternating measurements of each side; the best is kept.
      seed: PRNG seed of the inputs.

    Returns:
      `sampling_seconds` (one whole sampling call), `forward_seconds` (one
      forward), `nfe`, `forwards_seconds` (`nfe` forwards), `ratio` =
      sampling / forwards (1.0 = the loop adds nothing), compile times and
      XLA's FLOPs of one forward.
    """
    if not isinstance(model, (DDPM, FlowMatching, EDM)):
        raise TypeError(f"{type(model).__name__} is not a diffusion model (ddpm, flow_matching or edm)")
    if repeats < 1 or steps < 1 or batch_size < 1:
        raise ValueError(f"batch_size, steps and repeats must be >= 1, got {batch_size}, {steps}, {repeats}")
    model.eval()
    graphdef, state = nnx.split(model)
    continuous = isinstance(model, (FlowMatching, EDM))
    if sampler is None:
        sampler = model.sampler if continuous else "ddim"

    def sample(state, key):
        m = nnx.merge(graphdef, state, copy=True)
        if continuous:  # (samples, the network evaluations the solver spent)
            return m.sample(n_samples=batch_size, rngs=nnx.Rngs(key), sampler=sampler, steps=steps)
        return m.generate(n_samples=batch_size, rngs=nnx.Rngs(key), sampler=sampler, steps=steps), None

    def forward(state, x, t):
        m = nnx.merge(graphdef, state, copy=True)
        if isinstance(m, FlowMatching):
            return m.velocity(x, t)
        if isinstance(m, EDM):
            return m.denoise(x, t)
        return m.denoiser()(x, t)

    key = jax.random.PRNGKey(seed)
    x = jax.random.normal(key, (batch_size, *model.input_shape), jnp.float32)
    middle = {FlowMatching: 0.5, EDM: 1.0}.get(type(model), 0.5 * getattr(model, "num_timesteps", 0))
    t = jnp.full((batch_size,), middle, jnp.float32)

    start = time.perf_counter()
    sample_c = jax.jit(sample).lower(state, key).compile()
    sample_compile = time.perf_counter() - start
    start = time.perf_counter()
    forward_c = jax.jit(forward).lower(state, x, t).compile()
    forward_compile = time.perf_counter() - start
    _, nfe = jax.block_until_ready(sample_c(state, key))
    nfe = int(nfe) if nfe is not None else ddpm_nfe(sampler, steps)
    jax.block_until_ready(forward_c(state, x, t))

    def run_forwards():
        out = None
        for _ in range(nfe):
            out = forward_c(state, x, t)
        jax.block_until_ready(out)

    best_sample = best_forwards = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(sample_c(state, key))
        best_sample = min(best_sample, time.perf_counter() - begin)
        begin = time.perf_counter()
        run_forwards()
        best_forwards = min(best_forwards, time.perf_counter() - begin)
    return {
        "model_type": getattr(model, "model_type", type(model).__name__),
        "backbone": getattr(model, "backbone_type", None),
        "sampler": sampler,
        "steps": steps,
        "nfe": nfe,
        "batch_size": batch_size,
        "repeats": repeats,
        "sampling_seconds": best_sample,
        "forwards_seconds": best_forwards,
        "forward_seconds": best_forwards / nfe,
        "ratio": best_sample / best_forwards,
        "sampling_compile_seconds": sample_compile,
        "forward_compile_seconds": forward_compile,
        "forward_gflop": _flops(forward_c) / 1e9,
        "forward_gflop_per_second": _flops(forward_c) / 1e9 / (best_forwards / nfe),
    }


def measure_config(name: str, **kwargs) -> dict[str, Any]:
    """`measure_sampling_overhead` on a freshly built model of `workshop/train/configs/<name>.py`."""
    from workshop.models.factories import create_model
    from workshop.train.experiment import parse_config

    try:
        module = importlib.import_module(f"workshop.train.configs.{name}")
    except ModuleNotFoundError as err:
        raise ValueError(f"no config workshop/train/configs/{name}.py ({err})") from None
    cfg = parse_config(module.get_config())
    if cfg.model.family != "diffusion":
        raise ValueError(f"config {name!r} is of family {cfg.model.family!r}; the sampling benchmark needs a "
                         "diffusion config (e.g. ddpm_unet, ddpm_dit)")
    result = measure_sampling_overhead(create_model(cfg.model, rngs=nnx.Rngs(0)), **kwargs)
    result["config"] = name
    return result


def format_result(r: dict[str, Any]) -> str:
    """One Markdown table row (with header) of a result."""
    header = ("| config | sampler, steps, batch | NFE | one sampling call | NFE x forward | ratio | one forward "
              "| forward GFLOP/s |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    row = (f"| {r.get('config', r['model_type'])} ({r['backbone']}) | {r['sampler']}, {r['steps']}, "
           f"{r['batch_size']} | {r['nfe']} | {r['sampling_seconds']:.3f} s | {r['forwards_seconds']:.3f} s | {r['ratio']:.3f} "
           f"| {1e3 * r['forward_seconds']:.1f} ms | {r['forward_gflop_per_second']:.1f} |")
    return header + "\n" + row


def main(argv, flags_module) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags_module.FLAGS
    try:
        result = measure_config(f.model, batch_size=f.batch_size, steps=f.steps, sampler=f.sampler,
                                repeats=f.repeats)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    result["devices"] = [str(d) for d in jax.devices()]
    print(format_result(result))
    if f.output:
        write_report(f.output, result)


def _run() -> None:
    # Flags are defined here, not at import, so tools/benchmark/benchmark.py can import this module.
    from absl import app, flags

    flags.DEFINE_string("model", "ddpm_unet", "Diffusion config module in workshop/train/configs (ddpm_*, "
                        "flow_matching, edm, reflow).")
    flags.DEFINE_integer("batch_size", 64, "Samples per call.", lower_bound=1)
    flags.DEFINE_integer("steps", 50, "Sampler steps.", lower_bound=1)
    flags.DEFINE_string("sampler", None, "Sampler (default: ddim for DDPM, the model's own otherwise): ddpm, ddim, dpm_solver_pp_2m, heun (DDPM); euler, heun, dopri5 "
                        "(flow matching); heun, euler, stochastic, dopri5 (EDM).")
    flags.DEFINE_integer("repeats", 3, "Alternating measurements of each side; the best is kept.", lower_bound=1)
    flags.DEFINE_string("output", None, "Write the result as JSON here too.")
    app.run(lambda argv: main(argv, flags))


if __name__ == "__main__":
    _run()
