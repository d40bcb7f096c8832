"""Draws a training run's loss curve from its workdir's metrics.jsonl (docs/samples/*.png).

The training binary appends one JSON object a line to `<workdir>/metrics.jsonl`
(`"split": "train"` every `log_every` steps, `"split": "eval"` every
`eval_every`) and writes the test-set figures to `final_metrics.json`. This
script plots the negative ELBO of both splits against the step, with the
final test-set negative ELBO and importance-weighted NLL as horizontal lines.
It needs matplotlib, which the docs virtualenv has (requirements_docs.in):

    "$(tools/venv --docs)" docs/loss_curve.py --workdir=docs/runs/vae_6000steps \
        --output=docs/samples/vae_loss_curve.png

The run behind docs/samples/vae_loss_curve.png (its two files are kept in
docs/runs/vae_6000steps/) is the README's train command, shortened to fit a
few minutes of a shared CPU:

    tools/bazel run //workshop/train:train -- --workdir=runs/vae \
        --config.training.num_steps=6000 --config.training.eval_every=1000
"""

from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def read_metrics(workdir: pathlib.Path) -> dict[str, list[dict]]:
  """The rows of `workdir/metrics.jsonl` by split ("train", "eval"), in step order."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: --workdir must be a training run's workdir")
  rows: dict[str, list[dict]] = {}
  for line in path.read_text().splitlines():
    if line.strip():
      row = json.loads(line)
      rows.setdefault(row.get("split", "train"), []).append(row)
  for split in rows.values():
    split.sort(key=lambda r: r["step"])
  return rows


def plot(workdir: pathlib.Path, output: pathlib.Path, metric: str = "loss") -> None:
  rows = read_metrics(workdir)
  if not rows.get("train"):
    raise ValueError(f"{workdir / 'metrics.jsonl'} has no train rows")
  fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=120)
  train = rows["train"]
  ax.plot([r["step"] for r in train], [r[metric] for r in train], color="#1f77b4", lw=1.4,
          label="train (mean over the last log_every steps)")
  if rows.get("eval"):
    ev = rows["eval"]
    ax.plot([r["step"] for r in ev], [r[metric] for r in ev], "o-", color="#d62728", ms=4, lw=1.2,
            label="test batches (EMA weights)")
  final_path = workdir / "final_metrics.json"
  if final_path.exists():
    final = json.loads(final_path.read_text())
    for key, style, name in (("negative_elbo", "--", "test negative ELBO"),
                             ("nll", ":", f"test NLL, k={final.get('likelihood_samples', '?')}")):
      if key in final:
        ax.axhline(final[key], color="0.3", ls=style, lw=1.0, label=f"{name}: {final[key]:.1f}")
  values = [r[metric] for r in train]
  # The first logged steps are far above the rest: the axis starts at the value a tenth of
  # the way into the run, so the first steps leave the top instead of flattening the curve.
  low, high = min(values), values[len(values) // 10]
  ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
  ax.set_xlabel("step")
  ax.set_ylabel("negative ELBO (nats per image)" if metric == "loss" else metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, frameon=False)
  fig.tight_layout()
  output.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(output, metadata={"Software": None})
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", type=pathlib.Path, required=True, help="a training run's workdir")
  parser.add_argument("--output", type=pathlib.Path, required=True, help="the PNG to write")
  parser.add_argument("--metric", default="loss", help="the metrics.jsonl key to plot (default: loss)")
  args = parser.parse_args()
  plot(args.workdir, args.output, args.metric)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
