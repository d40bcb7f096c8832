"""Test helpers: the real train binary (`python -m workshop.train.main`) as a subprocess on tiny data.

The fault tests (fault_tolerance_test.py, nonfinite_test.py) signal, kill and
corrupt real runs of the binary; the multi-host test (multihost_binary_test.py)
starts it as several processes of one run. The run they use is a small MLP VAE
on a 64-image IDX fixture with dynamic binarization (so the resumed Bernoulli
stream is checked too): 4 steps per epoch, a few ms per step on a CPU.

`python -m workshop.train.train_binary_testing [--record=PATH] [--nan_batches=S,...] -- FLAGS...`
runs the train binary with FLAGS and
* `--record`: writes to PATH (JSON) every path it opened for writing from
  Python (`RunLog(record_writes=...)`); tensorstore's own writes (the
  checkpoint arrays) are C++ and not seen;
* `--nan_batches`: replaces the input `x` of the batches of those data steps
  (1-based, as logged) by NaN (`RunLog(nan_batches=...)`): faults injected by
  the test, outside the production binary.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import signal
import runpy
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

from workshop.data.idx import write_idx

__all__ = ["RunLog", "SigintAt", "checkpoint_steps", "free_port", "shrink_run", "train_losses", "train_records",
           "wait_until", "write_config", "write_fixture_dataset"]

_CONFIG_TEMPLATE = '''"""A tiny VAE run for the fault tests (written by train_binary_testing.py)."""
from workshop.train.configs import vae


def get_config():
    config = vae.get_config()
    config.model.latent_dim = 4
    config.model.encoder_features = [32]
    config.model.decoder_features = [32]
    config.training.update({training!r})
    config.training.optimizer.warmup_steps = 2
    config.data.update(batch_size=16, eval_batch_size=16, prefetch=0)
    config.eval.update({eval_settings!r})
    return config
'''

_TRAINING_DEFAULTS = dict(num_steps=40, log_every=1, eval_every=None, checkpoint_every=10, keep_checkpoints=2,
                          sample_every=None, num_samples=4, progress_bar=False, tensorboard=False)


def shrink_run(config: Any, data_dir: str | os.PathLike | None, *, num_steps: int = 2, batch_size: int = 8,
               **model_parameters: Any) -> Any:
    """A reference config (ml_collections) cut to a test run: `num_steps` steps, checkpoints every 2, quiet.

    Constant learning rate without warm-up, batches of `batch_size` from
    `data_dir` (None: keep the config's), no periodic sampling or evaluation,
    no final likelihood; `model_parameters` update `config.model.parameters`
    (e.g. a tiny DiT: `patch_size=7, hidden_size=16, depth=1, num_heads=2`).
    """
    if model_parameters:
        config.model.parameters.update(model_parameters)
    config.training.update(num_steps=num_steps, log_every=1, eval_every=None, checkpoint_every=2, sample_every=None,
                           progress_bar=False, tensorboard=False)
    config.training.optimizer.update(warmup_steps=0, schedule="constant")
    config.data.update(batch_size=batch_size, eval_batch_size=batch_size, prefetch=0)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    config.eval.final_eval = False
    return config


def write_fixture_dataset(root: pathlib.Path, n_train: int = 64, n_test: int = 32) -> pathlib.Path:
    """Fashion-MNIST-named IDX files of class-dependent blobs, uint8 `[N, 28, 28]`."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        centres = 6 + 1.6 * labels.astype(np.float64)
        images = np.exp(-((yy[None] - centres[:, None, None]) ** 2 + (xx[None] - 14) ** 2) / 30.0) * 255
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def write_config(path: pathlib.Path, *, eval_settings: dict[str, Any] | None = None, **training: Any) -> pathlib.Path:
    """A config file: the tiny VAE with `training` fields over the test defaults.

    `eval_settings` are `config.eval` fields; by default the final evaluation is off.
    """
    path.write_text(_CONFIG_TEMPLATE.format(training={**_TRAINING_DEFAULTS, **training},
                                            eval_settings=eval_settings or {"final_eval": False}))
    return path


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for a coordinator)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class RunLog:
    """One run of the train binary; stderr goes to `<workdir>.<time>.stderr`.

    With `record_writes` the binary records the files it opens for writing
    there (`written()`).
    """

    def __init__(self, config: pathlib.Path, workdir: pathlib.Path, data_dir: pathlib.Path, *,
                 env: dict[str, str] | None = None, flags: tuple[str, ...] = (),
                 record_writes: pathlib.Path | None = None, nan_batches: tuple[int, ...] = ()):
        self.workdir = pathlib.Path(workdir)
        self.stderr_path = self.workdir.with_name(self.workdir.name + f".{time.time_ns()}.stderr")
        child_env = {
            **os.environ,
            # The test's own import path, so the child finds workshop and its deps under Bazel too.
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes may share one GPU
            **(env or {}),
        }
        self.record_writes = record_writes
        binary = ["workshop.train.main"]
        if record_writes is not None or nan_batches:
            binary = [__name__, *([f"--record={record_writes}"] if record_writes is not None else []),
                      *([f"--nan_batches={','.join(map(str, nan_batches))}"] if nan_batches else []), "--"]
        command = [sys.executable, "-m", *binary, f"--config={config}", f"--workdir={workdir}",
                   f"--data_dir={data_dir}", *flags]
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(command, env=child_env, stdout=subprocess.PIPE, stderr=stderr, text=True)

    def wait(self, timeout: float = 300) -> int:
        self.stdout, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def written(self) -> set[str]:
        """The paths the run opened for writing from Python (needs `record_writes`)."""
        return set(json.loads(pathlib.Path(self.record_writes).read_text()))


class SigintAt:
    """A callback that presses Ctrl-C (a real SIGINT to this process) after a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, state) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def train_losses(workdir: pathlib.Path) -> dict[int, float]:
    """`{step: train loss}` from a workdir's metrics.jsonl."""
    return {step: record["loss"] for step, record in train_records(workdir)[0].items()}


def train_records(workdir: pathlib.Path) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """`({step: the last train record of that step}, every logged step in file order)`.

    A line cut by `kill -9` (no newline yet) is skipped.
    """
    path = pathlib.Path(workdir) / "metrics.jsonl"
    records, order = {}, []
    if not path.exists():
        return records, order
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("split") == "train":
            records[record["step"]] = record
            order.append(record["step"])
    return records, order


def wait_until(condition: Callable[[], bool], run: RunLog, *, timeout: float = 300, what: str = "") -> None:
    """Polls `condition` every 10 ms while `run` is alive; fails if the run ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run.process.poll() is not None:
            raise AssertionError(f"the run ended (exit {run.process.returncode}) before {what}:\n{run.stderr[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    """The finished checkpoints' steps (orbax's temporary directories excluded)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


_WRITE_MODE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record_writes(record: str) -> None:
    """At exit, writes to `record` the paths this process opened for writing from Python."""
    written: set[str] = set()

    def audit(event: str, args: tuple) -> None:
        # "open" comes from open()/io.open (path, mode str, flags) and os.open (path, None, flags).
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode, flags_ = args[1], args[2]
        if (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags_ & _WRITE_MODE):
            written.add(os.path.abspath(os.fsdecode(args[0])))

    atexit.register(lambda: pathlib.Path(record).write_text(json.dumps(sorted(written))))
    sys.addaudithook(audit)


def _inject_nan_batches(steps: set[int]) -> None:
    """Makes the experiment's training batches of data steps `steps` NaN (1-based: step s reads batch s - 1)."""
    from workshop.train import experiment

    original = experiment._train_batches

    def poisoned(cfg, source, start_step):
        for step, batch in enumerate(original(cfg, source, start_step), start_step + 1):
            if step in steps:
                x = batch["x"].astype(np.float32) if batch["x"].dtype == np.uint8 else batch["x"]
                batch = {**batch, "x": np.full_like(x, np.nan)}
            yield batch

    experiment._train_batches = poisoned
    print(f"test harness: the batches of data steps {sorted(steps)} are NaN", file=sys.stderr, flush=True)


def _main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: python -m workshop.train.train_binary_testing [--record=PATH] [--nan_batches=S,...] -- "
                 "TRAIN_FLAGS...")
    split = argv.index("--")
    for option in argv[:split]:
        name, _, value = option.partition("=")
        if name == "--record":
            _record_writes(value)
        elif name == "--nan_batches":
            _inject_nan_batches({int(s) for s in value.split(",")})
        else:
            sys.exit(f"unknown option {option!r}")
    sys.argv = [sys.argv[0], *argv[split + 1:]]
    runpy.run_module("workshop.train.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
