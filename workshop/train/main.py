"""Trains a model: `tools/bazel run //workshop/train:train -- [--config=...] [--workdir=...]`.

With no flags it trains the default VAE config on Fashion-MNIST into runs/vae.
Override any config field on the command line, e.g.
`--config.training.num_steps=500`. Running the same command again resumes.

Multi-host (JAX's distributed runtime): start the same command on every host
with `--coordinator_address=HOST:PORT` (process 0's host and a free port),
`--num_processes=N` and `--process_id=0..N-1`, and
`--config.training.parallelism=data` (or fsdp); the mesh then spans every
device of every host, and each host reads (gathers and decodes) only its own
rows of every batch, so the run trains on the batches of a one-host run.
Process 0 alone writes metrics.jsonl, config.json and final_metrics.json;
every process writes its part of each checkpoint. A SIGTERM to any host (a
preemption notice) or Ctrl-C stops every host after the same step, with a
checkpoint (JAX's preemption service); the same commands resume.

Exit status: 0 when the run finished (or stopped early on its own, e.g. early
stopping), 75 (EX_TEMPFAIL, `cli.EXIT_INTERRUPTED`) when SIGTERM/SIGINT
stopped it after writing a checkpoint (rerun the same command), 1 for an
error, printed in a line or two (`--verbosity=1` adds the traceback).
"""

import pathlib
import sys

import jax
from absl import app, flags, logging

from workshop.train import cli, experiment
from workshop.train.cli import quiet_library_logs, user_path

_DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "vae.py")

_CONFIG = cli.define_config_flag(_DEFAULT_CONFIG, "ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config name>).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory with the dataset files (default: $WORKSHOP_DATA_DIR or the Debian package's)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: HOST:PORT of process 0, where the coordination service listens."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (hosts).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0..num_processes-1.",
                                   lower_bound=0)


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> bool:
    """Joins JAX's distributed runtime when a coordinator is given; True if it did.

    Must run before anything touches a JAX device. On CPU the cross-process
    collectives are gloo's.

    Raises:
      app.UsageError: an incomplete or inconsistent set of the three flags.
    """
    given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
             "--process_id": process_id}
    if coordinator_address is None:
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise app.UsageError(f"{', '.join(extra)} need(s) --coordinator_address=HOST:PORT (process 0's)")
        return False
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise app.UsageError(f"--coordinator_address needs {' and '.join(missing)} too")
    if process_id >= num_processes:
        raise app.UsageError(f"--process_id={process_id} must be below --num_processes={num_processes}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
    logging.info("process %d of %d joined %s", jax.process_index(), jax.process_count(), coordinator_address)
    return True


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _CONFIG.value
    workdir = user_path(_WORKDIR.value or f"runs/{config.get('name', 'run')}")
    data_dir = str(user_path(_DATA_DIR.value)) if _DATA_DIR.value else None
    result = experiment.train_and_evaluate(config, workdir, data_dir=data_dir)
    if result.stop_reason:
        logging.warning("stopped at step %d: %s", int(result.state.step), result.stop_reason)
    print(f"workdir: {result.workdir}")
    if result.stop_reason and result.stop_reason.startswith("interrupted"):
        print(f"Interrupted at step {int(result.state.step)}; checkpoint written. Run the same command to resume "
              f"(exit status {cli.EXIT_INTERRUPTED}).")
        sys.exit(cli.EXIT_INTERRUPTED)
    if result.final_metrics:
        print("test set: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in sorted(result.final_metrics.items())))


def run():
    """Console-script entry point (pip installs)."""
    cli.run(main, name="train")


if __name__ == "__main__":
    run()
