"""Orbax checkpoints of a `TrainState`, with a readable shape check on restore.

Each checkpoint is an orbax step directory holding the state pytree and a JSON
record (step, data position, model configuration, the shape of every array).
Orbax writes into a temporary directory and renames it when complete, so a
crash during a save leaves the previous checkpoint usable. Before restoring,
the JSON record is compared with the model being restored into, so a
checkpoint from another configuration fails with the mismatched arrays and
configuration fields named instead of a deep orbax error.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from workshop.train.trainer import TrainState

__all__ = ["CheckpointMismatchError", "Checkpointer", "array_shapes"]


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model it is restored into."""


def array_shapes(tree: Any) -> dict[str, list[int]]:
    """`{"params/encoder/kernel": [3, 3, 1, 32], ...}` for every array leaf."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        if len(parts) > 1 and parts[-1] == "value":  # an nnx.Variable's own leaf
            parts.pop()
        shapes["/".join(parts)] = list(getattr(leaf, "shape", ()))
    return shapes


class Checkpointer:
    """Saves and restores `TrainState`s under `directory` (keeps the newest `max_to_keep`)."""

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state: TrainState, *, metadata: dict[str, Any] | None = None) -> int:
        """Writes `state` at its step (in the background; `wait()` to block)."""
        step = int(state.step)
        tree = state.to_checkpoint()
        record = {"step": step, "shapes": array_shapes(tree), **(metadata or {})}
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(tree), record=ocp.args.JsonSave(record)),
            force=True,
        )
        return step

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
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restores into the structure of `target` (a state of the same model).

        Args:
          target: a state with the shapes and dtypes to restore into.
          step: which checkpoint; the latest by default.
          model_config: the configuration of the model being restored into;
            differences from the checkpoint's are named in a mismatch error.

        Returns:
          `(state, record)`.

        Raises:
          FileNotFoundError: no checkpoint in the directory.
          CheckpointMismatchError: array shapes differ (each one named).
        """
        step = self._resolve(step)
        record = self.read_record(step)
        tree = target.to_checkpoint()
        self._check_shapes(step, record, array_shapes(tree), model_config)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return TrainState.from_checkpoint(dict(restored["state"])), record

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def _resolve(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif step not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
        return step

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
