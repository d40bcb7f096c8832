"""Training callbacks: progress bar, metric files, checkpoints, sample grids, early stopping.

A callback implements any of the hooks `Trainer.fit` calls:
`on_train_begin(trainer, state)`, `on_step_end(trainer, step, state)`,
`on_log(trainer, step, logs)`, `on_eval(trainer, step, logs)` and
`on_train_end(trainer, step, state)`. Logging hooks receive host floats;
`on_step_end` must not force a device sync except at its own intervals.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Any

import numpy as np

from workshop.train.checkpointing import Checkpointer
from workshop.train.image_grid import save_sample_picture

__all__ = ["CheckpointCallback", "EarlyStopping", "MetricsWriter", "ProgressBar", "SampleGrid"]


_log = logging.getLogger(__name__)

# Metrics the progress bar shows when a model reports them (VAE, GAN, likelihood models).
_PROGRESS_METRICS = ("loss", "kl", "elbo", "nll_bits_per_dim", "d_loss", "g_loss", "wasserstein_estimate")


class ProgressBar:
    """A tqdm bar with step rate, ETA and the latest logged loss."""

    def __init__(self, total_steps: int, *, disable: bool = False):
        self.total_steps = total_steps
        self.disable = disable
        self._bar = None

    def on_train_begin(self, trainer, state) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.total_steps, initial=int(state.step), unit="step", dynamic_ncols=True,
            disable=self.disable, mininterval=0.5,
        )

    def on_step_end(self, trainer, step, state) -> None:
        self._bar.update(1)

    def on_log(self, trainer, step, logs) -> None:
        shown = [k for k in _PROGRESS_METRICS if k in logs]
        self._bar.set_postfix({k: f"{logs[k]:.4g}" for k in shown}, refresh=False)

    def on_eval(self, trainer, step, logs) -> None:
        self._bar.write(f"step {step} eval: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())))

    def on_train_end(self, trainer, step, state) -> None:
        self._bar.close()


class MetricsWriter:
    """Appends train and eval metrics to `metrics.jsonl` and TensorBoard event files."""

    def __init__(self, workdir: str | pathlib.Path, *, tensorboard: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self._tensorboard = tensorboard
        self._writer = None
        self._started = time.time()

    def on_train_begin(self, trainer, state) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        start = int(state.step)
        self._drop_records_after(start)
        if self._tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step hides the events a killed run logged after its last checkpoint.
            self._writer = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=start or None)

    def _drop_records_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: their old records go (atomically).

        So does a line that a killed run left half-written.
        """
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)

        def keep(line: str) -> bool:
            try:
                return line.endswith("\n") and json.loads(line).get("step", 0) <= step
            except json.JSONDecodeError:
                return False

        kept = [line for line in lines if keep(line)]
        if len(kept) != len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)

    def _write(self, split: str, step: int, logs: dict[str, float]) -> None:
        record = {"step": step, "split": split, "time": round(time.time() - self._started, 3), **logs}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in logs.items():
                self._writer.add_scalar(f"{split}/{name}", value, step)
            self._writer.flush()

    def on_log(self, trainer, step, logs) -> None:
        self._write("train", step, logs)

    def on_eval(self, trainer, step, logs) -> None:
        self._write("eval", step, logs)

    def on_train_end(self, trainer, step, state) -> None:
        if self._writer is not None:
            self._writer.close()


class CheckpointCallback:
    """Saves every `every` steps and always at the end of `fit` (also when interrupted).

    Never of a state whose latest steps the NaN guard skipped
    (`trainer.bad_steps_in_a_row()`, asked before each save): such a state
    holds the parameters that failed, and saving it under later step numbers
    would push the good checkpoints out of `keep_checkpoints`. A save due then
    is put off to the first step after the stretch that was applied (logged
    as a warning); at the end of `fit` it is left out, so the rerun resumes
    from the newest checkpoint before the stretch.
    """

    def __init__(self, checkpointer: Checkpointer, every: int | None, *, metadata: dict[str, Any] | None = None):
        self.checkpointer = checkpointer
        self.every = every
        self.metadata = metadata or {}
        self.last_saved: int | None = None
        self._put_off: int | None = None  # the step whose save waits for an applied step

    def _save(self, trainer, step, state) -> None:
        if self.last_saved == step:
            return
        bad = trainer.bad_steps_in_a_row()
        if bad:
            if self._put_off is None:
                _log.warning(
                    "not writing the checkpoint of step %d: its last %d step(s) had a NaN/Inf loss or gradient and "
                    "were skipped, so it holds the parameters that failed; the newest checkpoint stays that of "
                    "step %s", step, bad, self.last_saved)
                self._put_off = step
            return
        self.checkpointer.save(state, metadata={**self.metadata, "data_step": step})
        if self._put_off is not None:
            _log.warning("wrote the checkpoint put off at step %d at step %d, after a step that was applied",
                         self._put_off, step)
        self.last_saved, self._put_off = step, None

    def on_train_begin(self, trainer, state) -> None:
        # A resumed run starts at a saved step: saving it again would fail.
        self.last_saved = self.checkpointer.latest_step()
        self._put_off = None

    def on_step_end(self, trainer, step, state) -> None:
        # A background save that failed (a full disk) stops the run now, not at the next save.
        self.checkpointer.check_saves()
        if self._put_off is not None or (self.every and step % self.every == 0):
            self._save(trainer, step, state)

    def on_train_end(self, trainer, step, state) -> None:
        self._save(trainer, step, state)
        self.checkpointer.wait()


class SampleGrid:
    """Writes `samples/step_XXXXXXX.png` from the EMA model every `every` steps and at the end.

    With `write=False` it still draws the samples but writes nothing: on
    several hosts every process must take part in the drawing (one computation
    over the whole mesh; under FSDP it all-gathers the weights), and only
    process 0 writes.
    """

    def __init__(self, workdir: str | pathlib.Path, every: int | None, *, num_samples: int = 64, seed: int = 0,
                 write: bool = True):
        self.directory = pathlib.Path(workdir) / "samples"
        self.every = every
        self.num_samples = num_samples
        self.seed = seed
        self.write = write
        self.last_step: int | None = None

    def _write(self, trainer, step, state) -> None:
        samples = trainer.generate(state, self.num_samples, seed=self.seed)
        self.last_step = step
        if self.write:
            save_sample_picture(samples, self.directory / f"step_{step:07d}.png")

    def on_step_end(self, trainer, step, state) -> None:
        if self.every and step % self.every == 0:
            self._write(trainer, step, state)

    def on_train_end(self, trainer, step, state) -> None:
        if self.last_step != step:
            self._write(trainer, step, state)


class EarlyStopping:
    """Stops training when an eval metric has not improved for `patience` evaluations."""

    def __init__(self, metric: str = "loss", *, patience: int, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best = np.inf if mode == "min" else -np.inf
        self.bad_evals = 0

    def on_eval(self, trainer, step, logs) -> None:
        if self.metric not in logs:
            raise KeyError(f"early stopping watches {self.metric!r}, which evaluation does not report; it has {sorted(logs)}")
        value = logs[self.metric]
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.bad_evals = value, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            trainer.request_stop(
                f"early stopping: eval {self.metric} has not improved on {self.best:.6g} for {self.patience} evaluations"
            )
