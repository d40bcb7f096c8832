"""Trains the team's small VAE for a few steps and writes samples.

    bazel run //vae_app:train_and_sample -- --data_dir=/usr/share/datasets/fashion-mnist \
        --workdir=/tmp/vae_app --steps=50

Writes `<workdir>/samples.npy` (float32 `[num_samples, 28, 28, 1]` in [0, 1])
and `<workdir>/metrics.json` (training losses, test NLL before and after).
"""

import json
import os
import pathlib

from absl import app, flags
import numpy as np

from vae_app.train_and_sample import train_and_sample

_DATA_DIR = flags.DEFINE_string("data_dir", None, "folder with Fashion-MNIST's IDX files", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder", required=True)
_STEPS = flags.DEFINE_integer("steps", 50, "training steps")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "samples to draw")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # `bazel run` starts in the runfiles: relative paths are the caller's.
    base = pathlib.Path(os.environ.get("BUILD_WORKING_DIRECTORY", "."))
    workdir = base / _WORKDIR.value
    workdir.mkdir(parents=True, exist_ok=True)
    result = train_and_sample(base / _DATA_DIR.value, steps=_STEPS.value, num_samples=_NUM_SAMPLES.value)
    np.save(workdir / "samples.npy", result.samples)
    metrics = {"train_losses": result.train_losses, "test_nll_before": result.test_nll_before,
               "test_nll_after": result.test_nll_after}
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"test NLL {result.test_nll_before:.1f} -> {result.test_nll_after:.1f} nats; samples in {workdir}")


if __name__ == "__main__":
    app.run(main)
