"""Orbax checkpoints of a `TrainState`, checked on restore, with fallback to older ones.

Each checkpoint is an orbax step directory `<directory>/<step>/` holding the
state pytree and a JSON record: the step, the data position (`data_step`),
the model configuration, the shape of every array and a checksum of its
contents (`fingerprint`).

What orbax guarantees (orbax-checkpoint 0.12, `AtomicRenameTemporaryPath`,
the default on local and POSIX file systems): a save writes into
`<step>.orbax-checkpoint-tmp/` and renames it to `<step>/` only once every
item is complete, so a crash or `kill -9` during a save leaves the previous
checkpoints as they were and an unfinished temporary directory that
`all_steps()` ignores. A later save of the same step replaces it, and the
writer of a run (`remove_unfinished_saves=True`, orbax's
`cleanup_tmp_directories`) removes all of them when it opens the directory;
readers must not, as a run may be writing one at that moment. (File systems without an atomic rename, such as GCS, use
a `commit_success.txt` marker instead; orbax picks that by itself.)

What orbax does not guarantee: that the bytes of a finished checkpoint stay
intact. A flipped byte in a data file restores silently as a wrong value
(orbax 0.12 compresses the arrays with zstd but keeps no checksum of them).
So `save` records a checksum of every array, computed on the device, and
`restore` recomputes it after reading: a checkpoint whose record or arrays
cannot be read, whose checksum differs, or whose floating-point arrays hold
NaN/Inf is rejected. `restore()` without a step then falls back to the next
older checkpoint, logging a warning that names the rejected step and why.
A checkpoint that reads fine but belongs to another model configuration is
never skipped: it raises CheckpointMismatchError with the mismatched arrays
and configuration fields named.

A save that fails (a full disk, a directory gone read-only) raises
CheckpointSaveError, naming the step, the directory, the reason and the free
space, and the checkpoints that stay intact: from `save` when it fails at
once, else from the next `wait`, `save` or `check_saves` (which the training
callback calls after every step, so the run stops at the step after the
background write failed). The failed save leaves only an unfinished
temporary directory, which the next run removes.
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import shutil
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from workshop.train.trainer import TrainState

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "Checkpointer",
    "InvalidCheckpointError",
    "NoValidCheckpointError",
    "array_shapes",
    "fingerprint",
]

_log = logging.getLogger(__name__)

# Rejected checkpoints are moved here (inside the manager's directory; orbax
# only lists numeric names, so it ignores this folder).
REJECTED_DIR = "rejected"


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model it is restored into."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); names the step, the directory and why."""


class InvalidCheckpointError(ValueError):
    """A checkpoint is unreadable, corrupted (checksum) or holds NaN/Inf; names the step and why."""


class NoValidCheckpointError(FileNotFoundError):
    """Every candidate checkpoint was rejected; lists each step and why."""


def _leaf_names(tree: Any) -> list[tuple[str, Any]]:
    named = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        if len(parts) > 1 and parts[-1] == "value":  # an nnx.Variable's own leaf
            parts.pop()
        named.append(("/".join(parts), leaf))
    return named


def array_shapes(tree: Any) -> dict[str, list[int]]:
    """`{"params/encoder/kernel": [3, 3, 1, 32], ...}` for every array leaf."""
    return {name: list(getattr(leaf, "shape", ())) for name, leaf in _leaf_names(tree)}


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words `[n]` (8/16-bit elements widened, bools as 0/1)."""
    x = jnp.ravel(jnp.asarray(x))
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jnp.ravel(jax.random.key_data(x))
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    bits = x.dtype.itemsize * 8
    if bits == 32:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if bits in (8, 16):
        return jax.lax.bitcast_convert_type(x, {8: jnp.uint8, 16: jnp.uint16}[bits]).astype(jnp.uint32)
    return jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))  # 64-bit: [n, 2] words


@jax.jit
def _digests(leaves: list[jax.Array]) -> jax.Array:
    """uint32 `[len(leaves), 3]`: word sum, position-weighted word sum (both mod 2**32), NaN/Inf count."""
    rows = []
    for leaf in leaves:
        words = _words(leaf)
        position = jnp.arange(1, words.size + 1, dtype=jnp.uint32)
        inexact = jnp.issubdtype(leaf.dtype, jnp.inexact)
        nonfinite = jnp.sum(~jnp.isfinite(leaf)) if inexact else jnp.zeros((), jnp.int32)
        rows.append(jnp.stack([
            jnp.sum(words, dtype=jnp.uint32),
            jnp.sum(words * position, dtype=jnp.uint32),
            nonfinite.astype(jnp.uint32),
        ]))
    return jnp.stack(rows) if rows else jnp.zeros((0, 3), jnp.uint32)


def _fingerprint_and_nonfinite(tree: Any) -> tuple[dict[str, list[int]], dict[str, int]]:
    named = _leaf_names(tree)
    digests = jax.device_get(_digests([leaf for _, leaf in named])).tolist()
    sums = {name: [int(d[0]), int(d[1])] for (name, _), d in zip(named, digests)}
    nonfinite = {name: int(d[2]) for (name, _), d in zip(named, digests) if d[2]}
    return sums, nonfinite


def fingerprint(tree: Any) -> dict[str, list[int]]:
    """A Fletcher-style checksum of every array: `{"params/w": [sum, weighted_sum], ...}`.

    Both sums run over the array's bits as uint32 words modulo 2**32, the
    second weighting word i by i + 1, so any change of one word, and all but
    ~2**-64 of the changes of many, alter it. Computed on the device in one
    compiled reduction (only 2 numbers per array reach the host) and
    independent of sharding and reduction order (integer addition).
    """
    return _fingerprint_and_nonfinite(tree)[0]


class Checkpointer:
    """Saves and restores `TrainState`s under `directory` (keeps the newest `max_to_keep`).

    Args:
      directory: the checkpoint directory (created if missing).
      max_to_keep: how many of the newest checkpoints to keep.
      metadata: JSON-able entries added to the record of every save (e.g.
        the data order, so a resumed run can check it).
      remove_unfinished_saves: delete the temporary directories of saves cut
        short by a crash now; only for the process that trains into
        `directory` (another one may be writing them).
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        max_to_keep: int = 3,
        metadata: dict[str, Any] | None = None,
        remove_unfinished_saves: bool = False,
    ):
        self.directory = pathlib.Path(directory).absolute()
        self.metadata = dict(metadata or {})
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=remove_unfinished_saves
            ),
        )
        self._in_flight: int | None = None  # the step of the save running in the background
        self._failed: CheckpointSaveError | None = None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, *, metadata: dict[str, Any] | None = None) -> int:
        """Writes `state` at its step (in the background; `wait()` to block)."""
        step = int(state.step)
        tree = state.to_checkpoint()
        record = {
            "step": step,
            "shapes": array_shapes(tree),
            "fingerprint": fingerprint(tree),
            **self.metadata,
            **(metadata or {}),
        }
        self._raise_if_failed()
        previous = self._in_flight
        try:
            self._manager.save(  # waits for the previous save first
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(tree), record=ocp.args.JsonSave(record)),
                force=True,
            )
        except Exception as err:  # orbax re-raises a background failure of the previous save here
            failed = previous if previous is not None and self._in_flight_failed(previous) else step
            self._in_flight = None
            raise self._save_error(failed, err) from err
        self._in_flight = step
        return step

    def check_saves(self) -> None:
        """Raises CheckpointSaveError if the save running in the background has failed; never blocks.

        On several hosts it checks nothing (one host could stop a step before
        the others, which would then wait for it forever); `wait` and `save`,
        which every host calls at the same step, report the failure there.
        """
        self._raise_if_failed()
        if self._in_flight is None or jax.process_count() > 1 or self._manager.is_saving_in_progress():
            return
        self.wait()

    def _in_flight_failed(self, step: int) -> bool:
        return not (self.directory / str(step)).is_dir()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _save_error(self, step: int, err: BaseException) -> CheckpointSaveError:
        """One line: which checkpoint, where, why, the free space, what is intact and what to do."""
        cause = err
        while not (isinstance(cause, OSError) and cause.errno) and (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        reason = os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno else _first_line(err)
        try:
            free = f"{shutil.disk_usage(self.directory).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        self._manager.reload()
        kept = self.all_steps()
        fix = "free space, then" if isinstance(cause, OSError) and cause.errno == errno.ENOSPC else "fix that, then"
        intact = (f"the checkpoints of steps {kept} are intact: {fix} run the same command to resume from step "
                  f"{kept[-1]}" if kept else f"no earlier checkpoint: {fix} run the same command to start again")
        self._failed = CheckpointSaveError(
            f"could not write the checkpoint of step {step} to {self.directory}: {reason} ({free}); {intact}")
        return self._failed

    def read_record(self, step: int | None = None) -> dict[str, Any]:
        """The JSON record of a checkpoint (latest by default)."""
        step = self._resolve(step)
        return dict(self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"])

    def restore(
        self,
        target: TrainState,
        *,
        step: int | None = None,
        model_config: dict[str, Any] | None = None,
        before: int | None = None,
        set_aside_rejected: bool = False,
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restores into the structure of `target` (a state of the same model), checked.

        Args:
          target: a state with the shapes, dtypes (and shardings) to restore into.
          step: which checkpoint, exactly (no fallback); by default the newest
            valid one, falling back past rejected ones with a warning each.
          model_config: the configuration of the model being restored into;
            differences from the checkpoint's are named in a mismatch error.
          before: only consider checkpoints of steps < `before` (rollback).
          set_aside_rejected: move rejected checkpoints to
            `<directory>/rejected/<step>` (kept for inspection), so they stop
            being the latest and their step can be saved again.

        Returns:
          `(state, record)`.

        Raises:
          FileNotFoundError: no checkpoint (before `before`) in the directory;
            NoValidCheckpointError (a subclass) when all were rejected.
          InvalidCheckpointError: the requested `step` is unreadable, corrupted
            or holds NaN/Inf.
          CheckpointMismatchError: array shapes differ (each one named).
        """
        self.wait()
        if step is not None:
            return self._restore_step(self._resolve(step), target, model_config)
        candidates = [s for s in reversed(self.all_steps()) if before is None or s < before]
        if not candidates:
            where = "" if before is None else f" before step {before}"
            raise FileNotFoundError(f"no checkpoint{where} in {self.directory}; have {self.all_steps()}")
        rejected: list[tuple[int, str]] = []
        try:
            for candidate in candidates:
                try:
                    return self._restore_step(candidate, target, model_config)
                except InvalidCheckpointError as e:
                    rejected.append((candidate, str(e)))
                    _log.warning("%s; falling back to an older checkpoint", e)
            raise NoValidCheckpointError(
                f"every checkpoint in {self.directory} was rejected:\n  " + "\n  ".join(r for _, r in rejected)
                + "\nMove the directory away to start afresh."
            )
        finally:
            if set_aside_rejected and rejected:
                self._set_aside([s for s, _ in rejected])

    def discard_from(self, step: int) -> list[int]:
        """Deletes every checkpoint of step >= `step` (after a rollback); returns their steps."""
        self.wait()
        doomed = [s for s in self.all_steps() if s >= step]
        for s in doomed:
            self._manager.delete(s)
        self._manager.reload()
        return doomed

    def wait(self) -> None:
        """Blocks until the background save is written; CheckpointSaveError if it failed."""
        self._raise_if_failed()
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            step, self._in_flight = self._in_flight, None
            raise self._save_error(step if step is not None else -1, err) from err
        self._in_flight = None

    def close(self) -> None:
        """Waits for the background save and closes; after a failed save (already raised) only closes."""
        if self._failed is None:
            self.wait()
        try:
            self._manager.close()
        except Exception:  # orbax raises the failed save's error again: it was reported
            if self._failed is None:
                raise

    def _resolve(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif step not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
        return step

    def _restore_step(self, step: int, target: TrainState, model_config) -> tuple[TrainState, dict[str, Any]]:
        where = f"checkpoint {self.directory}/{step}"
        try:
            record = self.read_record(step)
        except Exception as e:  # orbax/tensorstore raise bare Exceptions
            raise InvalidCheckpointError(f"{where} is rejected: its record is unreadable ({_first_line(e)})") from e
        if record.get("step") != step:
            raise InvalidCheckpointError(f"{where} is rejected: its record says step {record.get('step')!r}")
        tree = target.to_checkpoint()
        self._check_shapes(step, record, array_shapes(tree), model_config)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            raise InvalidCheckpointError(f"{where} is rejected: its arrays are unreadable ({_first_line(e)})") from e
        state_tree = dict(restored["state"])
        sums, nonfinite = _fingerprint_and_nonfinite(state_tree)
        saved = record.get("fingerprint")
        if saved is not None:  # records written before checksums existed have none
            changed = sorted(name for name in saved if sums.get(name) != list(saved[name]))
            if changed:
                raise InvalidCheckpointError(
                    f"{where} is rejected: the checksum of {', '.join(changed[:5])}"
                    f"{' and more' if len(changed) > 5 else ''} differs from the one saved (corrupted files)"
                )
        if nonfinite:
            listed = ", ".join(f"{name} ({n})" for name, n in sorted(nonfinite.items())[:5])
            raise InvalidCheckpointError(f"{where} is rejected: it holds NaN/Inf values in {listed}")
        return TrainState.from_checkpoint(state_tree), record

    def _set_aside(self, steps: Iterable[int]) -> None:
        # On several hosts process 0 moves the folders while the others wait, then all reload.
        if jax.process_index() == 0:
            self._move_to_rejected(steps)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("workshop_checkpoint_set_aside")
        self._manager.reload()

    def _move_to_rejected(self, steps: Iterable[int]) -> None:
        folder = self.directory / REJECTED_DIR
        folder.mkdir(exist_ok=True)
        for step in steps:
            source = self.directory / str(step)
            if not source.exists():
                continue
            destination, n = folder / str(step), 1
            while destination.exists():
                destination, n = folder / f"{step}.{n}", n + 1
            os.replace(source, destination)
            _log.warning("moved the rejected checkpoint %s to %s", source, destination)

    def _check_shapes(self, step, record, expected, model_config) -> None:
        saved = record.get("shapes", {})
        problems = []
        # Parameters first: they are what a reader recognises.
        for name in sorted(set(saved) | set(expected), key=lambda n: (not n.startswith("params/"), n)):
            if name not in expected:
                problems.append(f"{name}: in the checkpoint {saved[name]}, not in the model")
            elif name not in saved:
                problems.append(f"{name}: in the model {expected[name]}, not in the checkpoint")
            elif list(saved[name]) != list(expected[name]):
                problems.append(f"{name}: checkpoint {saved[name]} vs model {expected[name]}")
        if not problems:
            return
        message = f"checkpoint {self.directory}/{step} does not fit this model:\n  " + "\n  ".join(problems[:20])
        if len(problems) > 20:
            message += f"\n  ... and {len(problems) - 20} more"
        saved_config = record.get("model_config")
        if model_config is not None and saved_config is not None:
            diffs = [
                f"{k}: checkpoint {saved_config.get(k)!r} vs now {model_config.get(k)!r}"
                for k in sorted(set(saved_config) | set(model_config))
                if saved_config.get(k) != model_config.get(k)
            ]
            if diffs:
                message += "\nThe model configurations differ in:\n  " + "\n  ".join(diffs)
        raise CheckpointMismatchError(message)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"
