"""Trains a model: `tools/bazel run //workshop/train:train -- [--config=...] [--workdir=...]`.

With no flags it trains the default VAE config on Fashion-MNIST into runs/vae.
Override any config field on the command line, e.g.
`--config.training.num_steps=500`. Running the same command again resumes.
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from workshop.train import experiment
from workshop.train.cli import quiet_library_logs, user_path

_DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "vae.py")

_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config name>).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory with the dataset files (default: $WORKSHOP_DATA_DIR or the Debian package's)."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    config = _CONFIG.value
    workdir = user_path(_WORKDIR.value or f"runs/{config.get('name', 'run')}")
    data_dir = str(user_path(_DATA_DIR.value)) if _DATA_DIR.value else None
    result = experiment.train_and_evaluate(config, workdir, data_dir=data_dir)
    if result.stop_reason:
        logging.warning("stopped at step %d: %s", int(result.state.step), result.stop_reason)
        if result.stop_reason.startswith("interrupted"):
            print(f"Interrupted at step {int(result.state.step)}; checkpoint written. Run the same command to resume.")
    print(f"workdir: {result.workdir}")
    if result.final_metrics:
        print("test set: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in sorted(result.final_metrics.items())))


def run():
    """Console-script entry point (pip installs)."""
    app.run(main)


if __name__ == "__main__":
    run()
