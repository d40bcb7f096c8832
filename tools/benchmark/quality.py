"""Quality mode of the benchmark: train a config for a fixed budget, then score it.

    tools/bazel run //tools/benchmark -- --mode=quality --model=all --quality_steps=300

For each config (on Fashion-MNIST): `train_and_evaluate` for `steps` train
steps in `<workdir_root>/<config>` (a fresh run; progress bar, TensorBoard and
intermediate checkpoints off), the test likelihood of the EMA model on
`test_examples` test images where the family defines one
(`workshop.eval.log_likelihood`: nats, bits/dim and the kind of estimate), and
FID / KID / PRDC of `num_samples` samples against the test set with the
Fashion-MNIST feature network (`workshop.eval.sample_quality`).
"""

from __future__ import annotations

import importlib
import pathlib
import shutil
import time
from typing import Any

import numpy as np

from workshop.eval import quality as quality_lib
from workshop.eval.feature_net import load_feature_net
from workshop.eval.likelihood import likelihood_estimate
from workshop.train.experiment import parse_config, train_and_evaluate

__all__ = ["format_quality_table", "run_quality"]


def run_quality(config_name: str, *, steps: int, workdir_root: str | pathlib.Path, num_samples: int = 2000,
                test_examples: int = 1000, seed: int = 0, sample_batch_size: int = 250) -> dict[str, Any]:
    """Trains `workshop/train/configs/<config_name>.py` for `steps` steps and scores it.

    Returns:
      `{"model", "family", "steps", "train_seconds", "nll", "nll_bits_per_dim",
      "estimate", "fid", "kid", ..., "num_samples"}` (likelihood keys only for
      families with `log_prob`).
    """
    raw = importlib.import_module(f"workshop.train.configs.{config_name}").get_config().to_dict()
    data = raw.get("data", {})
    if data.get("dataset") != "fashion_mnist":
        raise ValueError(f"quality mode scores Fashion-MNIST models; config {config_name!r} trains on "
                         f"{data.get('dataset')!r}")
    net = load_feature_net()  # fails early, naming the command, when the weights are missing
    raw["training"] = {**raw.get("training", {}), "num_steps": steps, "progress_bar": False, "tensorboard": False,
                       "checkpoint_every": None, "sample_every": None, "eval_every": None}
    eval_batch_size = data.get("eval_batch_size", 500)
    raw["eval"] = {**raw.get("eval", {}), "max_test_batches": max(1, test_examples // eval_batch_size)}
    cfg = parse_config(raw)
    workdir = pathlib.Path(workdir_root) / config_name
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run: the budget is exactly `steps`
    start = time.perf_counter()
    run = train_and_evaluate(cfg, workdir)
    train_seconds = time.perf_counter() - start
    result: dict[str, Any] = {"model": config_name, "family": cfg.model.family, "steps": steps,
                              "batch_size": cfg.data.batch_size, "train_seconds": train_seconds,
                              "binarize": cfg.data.binarize}
    model = run.trainer.model_from_state(run.state)
    if run.final_metrics is not None:
        result.update({k: run.final_metrics[k] for k in ("nll", "nll_bits_per_dim", "num_examples")},
                      **likelihood_estimate(model))
    elif hasattr(model, "log_prob"):
        result["likelihood_note"] = "not evaluated (the config sets eval.final_eval=False)"
    size = min(sample_batch_size, num_samples)
    samples = np.concatenate([run.trainer.generate(run.state, size, seed=seed + i)
                              for i in range(-(-num_samples // size))])[:num_samples]
    scores = quality_lib.sample_quality(samples, num_samples=None, seed=seed, net=net)
    result.update({k: scores[k] for k in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage",
                                          "num_samples", "num_reference", "feature_net", "feature_net_sha256")})
    return result


def format_quality_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of `run_quality` results (errors as their own rows)."""
    lines = ["| Config | family | steps x batch | train time | bits/dim (estimate) | FID | KID | "
             "precision | recall | density | coverage | samples |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| `{r['model']}` | error: {r['error']} |" + " |" * 10)
            continue
        if "nll_bits_per_dim" in r:
            bpd = f"{r['nll_bits_per_dim']:.3f} ({r['estimate']}, {r['num_examples']} images)"
        else:
            bpd = r.get("likelihood_note", "n/a (no likelihood)")
        lines.append(
            f"| `{r['model']}` | {r['family']} | {r['steps']} x {r['batch_size']} | {r['train_seconds']:.0f} s | {bpd} "
            f"| {r['fid']:.2f} | {r['kid']:.4g} +- {r['kid_std']:.2g} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | {r['num_samples']} |")
    return "\n".join(lines)
