"""Sample quality against network evaluations (NFE), and the ODE likelihood, of trained diffusion-family runs.

    tools/bazel run //tools/benchmark:nfe_quality -- --workdirs=runs/ddpm,runs/fm,runs/edm,runs/reflow \
        --nfe=1,2,4,10,20,50 --num_samples=2000 --likelihood_images=100 --output=nfe_quality.json

For each workdir (a `ddpm`, `edm` or `flow_matching` run, reflow included) and
each NFE budget: `num_samples` samples through the sample binary's path
(`sampling.write_samples`, EMA weights, one compiled loop), scored against the
run's test set with the Fashion-MNIST feature net (FID, KID, precision / recall /
density / coverage), with the sampling time and the network evaluations the
sampler actually spent. The sampler for a budget of n evaluations:

| family | n <= 4 | n > 4 |
| --- | --- | --- |
| ddpm | DDIM, n steps (n NFE) | DDIM, n steps |
| flow_matching | Euler, n steps (n NFE) | Heun, n / 2 steps (n NFE) |
| edm | Euler, n steps (n NFE) | Heun, (n + 1) / 2 steps (2 steps - 1 NFE: 9, 19, 49) |

`--samplers=fm:euler` (a workdir's folder name, then a sampler) forces one for that run.

Then the test likelihood of the first `likelihood_images` test images through
the probability-flow ODE (`workshop.eval.log_likelihood`: dopri5, Hutchinson's
divergence estimate with one Rademacher probe, uniform dequantisation of the
8-bit pixels, the models' own settings), and for DDPM also Ho et al.'s
variational bound of the same images (`--vlb_timesteps` stratified timesteps
per image). The ODE likelihood of a DDPM run is that of its weights rebuilt with
`parameters.likelihood="ode"`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from tools.benchmark.diffusion_sampling import ddpm_nfe
from tools.benchmark.reports import write_report

from workshop.core.paths import user_path
from workshop.eval.feature_net import load_feature_net
from workshop.eval.likelihood import log_likelihood
from workshop.models.diffusion import DDPM, EDM, FlowMatching
from workshop.models.factories import create_model
from workshop.train.experiment import restore_workdir
from workshop.train.sample_requests import first_test_images, score_samples
from workshop.train.sampling import write_samples

__all__ = ["format_nfe_table", "likelihoods", "nfe_quality", "sampler_for"]

_FAMILIES = (DDPM, EDM, FlowMatching)


def sampler_for(model: Any, nfe: int, override: str | None = None) -> tuple[str, int]:
    """(sampler, steps) that spend about `nfe` network evaluations (the table in the module docstring)."""
    if nfe < 1:
        raise ValueError(f"NFE budget {nfe}: expected a whole number >= 1")
    if isinstance(model, DDPM):
        return override or "ddim", nfe
    if not isinstance(model, (EDM, FlowMatching)):
        raise TypeError(f"{type(model).__name__} is not a diffusion-family model (ddpm, edm or flow_matching)")
    sampler = override or ("euler" if nfe <= 4 else "heun")
    if sampler != "heun":
        return sampler, nfe
    return sampler, max(1, nfe // 2 if isinstance(model, FlowMatching) else (nfe + 1) // 2)


def _spent_nfe(model: Any, sampler: str, steps: int) -> int:
    """The network evaluations one sampling call spends (counted by the solver for EDM and flow matching)."""
    if isinstance(model, DDPM):
        return ddpm_nfe(sampler, steps)
    graphdef, state = nnx.split(model)
    count = jax.jit(lambda s: nnx.merge(graphdef, s).sample(n_samples=1, rngs=nnx.Rngs(0), sampler=sampler,
                                                              steps=steps)[1])
    return int(count(state))


@dataclasses.dataclass(frozen=True)
class Run:
    """A restored workdir: its name (the folder's), config, trainer, state and EMA model."""

    name: str
    cfg: Any
    trainer: Any
    state: Any
    model: Any

    @classmethod
    def restore(cls, workdir: str | pathlib.Path) -> "Run":
        path = user_path(workdir)
        cfg, trainer, state, _ = restore_workdir(path)
        model = trainer.model_from_state(state)
        if not isinstance(model, _FAMILIES):
            raise ValueError(f"{path}: a {cfg.model.model_type} run; NFE scoring needs ddpm, edm or flow_matching")
        return cls(path.name, cfg, trainer, state, model)


def nfe_quality(run: Run, nfe: Sequence[int], *, num_samples: int, output_dir: str | pathlib.Path, seed: int = 0,
                override: str | None = None) -> list[dict[str, Any]]:
    """Scores `num_samples` samples of `run` at each NFE budget (see the module docstring).

    Returns:
      One row per budget: `{"run", "model_type", "nfe_budget", "sampler", "steps", "nfe",
      "sampling_seconds" (compilation included), "fid", "kid", ..., "num_samples"}`.
    """
    rows = []
    for budget in nfe:
        sampler, steps = sampler_for(run.model, budget, override)
        start = time.perf_counter()
        paths = write_samples(run.trainer, run.state, pathlib.Path(output_dir) / run.name / f"{sampler}_{steps}",
                              num_samples=num_samples, seed=seed, options={"sampler": sampler, "steps": steps})
        seconds = time.perf_counter() - start
        _, scores = score_samples(run.cfg.data, np.load(paths["npy"]), paths["npy"].parent, seed=seed)
        rows.append({"run": run.name, "model_type": run.cfg.model.model_type, "nfe_budget": budget,
                     "sampler": sampler, "steps": steps, "nfe": _spent_nfe(run.model, sampler, steps),
                     "sampling_seconds": seconds,
                     **{k: scores[k] for k in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage",
                                               "num_samples", "num_reference", "feature_net_sha256")}})
        print(f"{run.name} {sampler}:{steps} ({rows[-1]['nfe']} NFE, {seconds:.0f} s): "
              f"FID {scores['fid']:.2f}, KID {scores['kid']:.4f}", flush=True)
    return rows


def likelihoods(run: Run, *, images: int, seed: int = 0, vlb_timesteps: int = 16) -> dict[str, Any]:
    """Test bits/dim of the first `images` test images: by the ODE, and the VLB too for DDPM."""
    x = first_test_images(run.cfg.data, images)
    result: dict[str, Any] = {}
    model = run.model
    if isinstance(model, DDPM):
        start = time.perf_counter()
        vlb = log_likelihood(model, x, num_samples=vlb_timesteps, seed=seed, batch_size=100)
        result["vlb"] = {**vlb, "seconds": time.perf_counter() - start}
        if model.likelihood != "ode":
            parameters = {**run.cfg.model.parameters, "likelihood": "ode"}
            ode_model = create_model(run.cfg.model.model_copy(update={"parameters": parameters}), rngs=nnx.Rngs(0))
            nnx.update(ode_model, nnx.state(model))
            ode_model.eval()
            model = ode_model
    start = time.perf_counter()
    ode = log_likelihood(model, x, num_samples=1, seed=seed, batch_size=100)
    result["ode"] = {**ode, "seconds": time.perf_counter() - start}
    print(f"{run.name}: {ode['nll_bits_per_dim']:.3f} bits/dim ({ode['estimate']}, {ode['num_examples']} images)"
          + (f", variational bound {result['vlb']['nll_bits_per_dim']:.3f}" if "vlb" in result else ""), flush=True)
    return result


def format_nfe_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `nfe_quality` rows."""
    lines = ["| run | sampler:steps | NFE | FID | KID | precision | recall | density | coverage | sampling time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['run']}` ({r['model_type']}) | {r['sampler']}:{r['steps']} | {r['nfe']} | {r['fid']:.2f} "
                     f"| {r['kid']:.4g} +- {r['kid_std']:.2g} | {r['precision']:.3f} | {r['recall']:.3f} "
                     f"| {r['density']:.3f} | {r['coverage']:.3f} | {r['sampling_seconds']:.0f} s |")
    return "\n".join(lines)


def _overrides(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, _, sampler = item.partition(":")
        if not name or not sampler:
            raise app.UsageError(f"--samplers entry {item!r}: expected run_name:sampler, e.g. fm:euler")
        pairs[name] = sampler
    return pairs


_WORKDIRS = flags.DEFINE_list("workdirs", None, "Workdirs of ddpm, edm or flow_matching runs (required).")
_NFE = flags.DEFINE_list("nfe", ["1", "2", "4", "10", "20", "50"], "NFE budgets.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Samples per budget.", lower_bound=2)
_LIKELIHOOD_IMAGES = flags.DEFINE_integer("likelihood_images", 100, "Test images of the ODE likelihood (0: none).",
                                          lower_bound=0)
_VLB_TIMESTEPS = flags.DEFINE_integer("vlb_timesteps", 16, "DDPM: stratified timesteps per image of the bound.",
                                      lower_bound=1)
_SAMPLERS = flags.DEFINE_list("samplers", [], "run_name:sampler, forcing a run's sampler at every budget.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling and estimator seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "/tmp/nfe_quality", "Where the samples go.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the report as JSON here.")


def main(argv):
    del argv
    if not _WORKDIRS.value:
        raise app.UsageError("--workdirs: give the workdirs of ddpm, edm or flow_matching runs, e.g. runs/ddpm,runs/fm")
    try:
        budgets = [int(n) for n in _NFE.value]
    except ValueError:
        raise app.UsageError(f"--nfe={','.join(_NFE.value)}: expected whole numbers, e.g. 1,2,4,10") from None
    overrides = _overrides(_SAMPLERS.value)
    load_feature_net()  # fails early, naming the command that trains it
    report: dict[str, Any] = {"rows": [], "likelihood": {}, "load_at_start": os.getloadavg()[0]}
    for workdir in _WORKDIRS.value:
        run = Run.restore(workdir)
        report["rows"] += nfe_quality(run, budgets, num_samples=_NUM_SAMPLES.value, output_dir=_OUTPUT_DIR.value,
                                      seed=_SEED.value, override=overrides.get(run.name))
        if _LIKELIHOOD_IMAGES.value:
            report["likelihood"][run.name] = likelihoods(run, images=_LIKELIHOOD_IMAGES.value, seed=_SEED.value,
                                                         vlb_timesteps=_VLB_TIMESTEPS.value)
    report["load_at_end"] = os.getloadavg()[0]
    print(format_nfe_table(report["rows"]))
    if _OUTPUT.value:
        write_report(_OUTPUT.value, report)


if __name__ == "__main__":
    app.run(main)
