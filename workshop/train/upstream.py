"""The trained run that another run depends on: a latent model's first stage, reflow's teacher.

A downstream run reads its upstream run from the upstream's workdir
(config.json and a checkpoint, restored with the EMA weights that the sample
binary uses), records which one it used, and refuses to go on with another:

* `find_upstream` resolves the workdir as the user typed it (`user_path`) and
  checks that //workshop/train:train wrote it and that it has a checkpoint.
* `restore_upstream` (or `load_upstream`, both steps at once) restores one of
  its checkpoints and fingerprints the model.
* `Upstream.record(prefix)` is what the downstream run records:
  `<prefix>_workdir` and `<prefix>_checkpoint` (absolute paths) and
  `<prefix>_hash` (the fingerprint).
* `check_unchanged` refuses an upstream whose fingerprint is not the recorded
  one, naming both checkpoints and both hashes.

The fingerprint is the SHA-256 of the restored model's weights
(`workshop.models.latent.content_hash`: every array's path, dtype, shape and
bytes). It changes when any weight changes (the upstream retrained, or trained
further), not when the workdir is copied or moved elsewhere, and not with the
optimizer state: a copy with the same weights is the same upstream. The
recorded paths say where it was found, for people and for the error messages.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable

from flax import nnx

from workshop.core.paths import user_path
from workshop.models.latent import content_hash

__all__ = [
    "Restore",
    "Upstream",
    "UpstreamChangedError",
    "check_unchanged",
    "checkpoint_steps",
    "find_upstream",
    "load_upstream",
    "restore_upstream",
]

# `workdir, step -> (config, trainer, state, checkpoint record)`: `workshop.train.experiment.restore_workdir`,
# passed in by the callers (the experiment imports them, so they cannot import it at module level).
Restore = Callable[..., tuple[Any, Any, Any, dict[str, Any]]]


class UpstreamChangedError(ValueError):
    """An upstream run's weights are not the ones a downstream run recorded."""


@dataclasses.dataclass(frozen=True)
class Upstream:
    """A trained upstream run, restored from one of its checkpoints.

    Attributes:
      field: the downstream configuration field that names it (for messages),
        e.g. "teacher_workdir".
      role: what it is to the downstream run (for messages), e.g. "teacher".
      workdir: its workdir, absolute.
      checkpoint: the checkpoint directory restored, `<workdir>/checkpoints/<step>`.
      step: that checkpoint's step.
      config: its `ExperimentConfig` (config.json).
      model: its model in evaluation mode, with the EMA weights.
      sha256: the fingerprint, SHA-256 of the model's weights as hex (see the module docstring).
    """

    field: str
    role: str
    workdir: pathlib.Path
    checkpoint: pathlib.Path
    step: int
    config: Any
    model: nnx.Module
    sha256: str

    def record(self, prefix: str) -> dict[str, str]:
        """What a downstream run records: `{"<prefix>_workdir", "<prefix>_checkpoint", "<prefix>_hash"}` (strings)."""
        return {f"{prefix}_workdir": str(self.workdir), f"{prefix}_checkpoint": str(self.checkpoint),
                f"{prefix}_hash": self.sha256}


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    """The steps of the checkpoint directories `<workdir>/checkpoints/<step>`, ascending (creates nothing)."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit() and p.is_dir())


def find_upstream(workdir: str | os.PathLike, *, field: str, role: str) -> tuple[pathlib.Path, list[int]]:
    """The absolute path of an upstream workdir and its checkpoint steps (ascending, at least one).

    Args:
      workdir: the workdir as the user typed it (relative to where they ran
        the binary; `~` expanded).
      field: the configuration field that named it, e.g. "autoencoder_workdir".
      role: what it is, e.g. "first stage".

    Raises:
      FileNotFoundError: it has no config.json (it is not a workdir written by
        //workshop/train:train), or no checkpoint yet; the message names
        `field`, the path and what to do.
    """
    path = user_path(os.fspath(workdir)).absolute()
    what = f"{field} {os.fspath(workdir)}"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {path} is not a workdir written by //workshop/train:train (no config.json: "
                                f"{path / 'config.json'} does not exist); train the {role} there first")
    steps = checkpoint_steps(path)
    if not steps:
        raise FileNotFoundError(f"{what}: {path} has no checkpoint yet; train the {role} there first")
    return path, steps


def restore_upstream(workdir: pathlib.Path, step: int, *, field: str, role: str, restore: Restore) -> Upstream:
    """Restores checkpoint `step` of the upstream `workdir` (from `find_upstream`) and fingerprints its model.

    Args:
      workdir: the upstream's absolute workdir.
      step: one of its checkpoint steps.
      field, role: as for `find_upstream`.
      restore: `restore(workdir, step=step) -> (config, trainer, state, record)`
        (`workshop.train.experiment.restore_workdir`).
    """
    cfg, trainer, state, record = restore(workdir, step=step)
    model = trainer.model_from_state(state)
    step = int(record["step"])
    return Upstream(field=field, role=role, workdir=workdir, checkpoint=workdir / "checkpoints" / str(step), step=step,
                    config=cfg, model=model, sha256=content_hash(model))


def load_upstream(workdir: str | os.PathLike, *, field: str, role: str, restore: Restore) -> Upstream:
    """The newest checkpoint of an upstream workdir: `find_upstream` then `restore_upstream`."""
    path, steps = find_upstream(workdir, field=field, role=role)
    return restore_upstream(path, steps[-1], field=field, role=role, restore=restore)


def _short(sha256: str) -> str:
    return f"{sha256[:16]}..." if len(sha256) > 16 else sha256


def check_unchanged(
    found: Upstream,
    *,
    recorded_checkpoint: str | None,
    recorded_hash: str | None,
    since: str,
    remedy: str,
    error: type[ValueError] = UpstreamChangedError,
) -> None:
    """Refuses an upstream whose fingerprint is not the one recorded; nothing recorded accepts any.

    Args:
      found: the upstream as found now.
      recorded_checkpoint: the checkpoint directory recorded with the hash.
      recorded_hash: the recorded fingerprint (`Upstream.sha256` of the
        upstream the downstream run was made from), or None when none was
        recorded yet.
      since: ends "the <role> has changed since ...", e.g. "runs/latent was trained on it".
      remedy: what the user can do, ending the message.
      error: the exception type raised (a `ValueError`).

    Raises:
      error: the hashes differ; the message names both checkpoints and both hashes.
    """
    if recorded_hash is None or recorded_hash == found.sha256:
        return
    raise error(f"the {found.role} ({found.field} {found.workdir}) has changed since {since}: the recorded "
                f"checkpoint {recorded_checkpoint} had weights SHA-256 {_short(recorded_hash)}, {found.checkpoint} "
                f"has {_short(found.sha256)}; {remedy}")
