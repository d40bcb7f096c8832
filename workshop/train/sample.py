"""Samples from a trained workdir: `tools/bazel run //workshop/train:sample -- --workdir=runs/vae`.

Writes `<output_dir>/samples.png` (a grid) and `<output_dir>/samples.npy`
(`[num_samples, *input_shape]` floats in [0, 1]).
"""

import numpy as np
from absl import app, flags

from workshop.train.cli import quiet_library_logs, user_path
from workshop.train.sampling import restore_workdir, write_samples

_WORKDIR = flags.DEFINE_string("workdir", "runs/vae", "A workdir written by //workshop/train:train.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "How many samples.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (sample i depends only on the seed and i).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write (default: <workdir>/generated).")
_LABELS = flags.DEFINE_list("labels", None, "Class labels for conditional models, e.g. 0,1,2 (cycled).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = user_path(_WORKDIR.value)
    _, trainer, state, record = restore_workdir(workdir, step=_STEP.value)
    labels = None
    if _LABELS.value:
        if not trainer.conditional:
            raise app.UsageError("--labels given, but this model is not conditional")
        labels = np.resize(np.array([int(v) for v in _LABELS.value], np.int32), _NUM_SAMPLES.value)
    output_dir = user_path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else workdir / "generated"
    paths = write_samples(trainer, state, output_dir, num_samples=_NUM_SAMPLES.value, seed=_SEED.value, labels=labels)
    print(f"restored step {record['step']} from {workdir}")
    for kind, path in sorted(paths.items()):
        print(f"wrote {path}")


def run():
    """Console-script entry point (pip installs)."""
    app.run(main)


if __name__ == "__main__":
    run()
