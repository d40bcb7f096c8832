"""Training data made by a teacher: a trained run's model, restored from its workdir (`LearnsFromTeacher`).

Reflow (Liu et al. 2023, arXiv:2209.03003) trains a flow on the (noise,
sample) pairs of a trained flow. `teacher_source` restores the teacher's
workdir (config.json and its newest checkpoint, EMA weights;
`workshop.train.upstream`), asks the student for its data (`teacher_data`) and
caches it in the student's workdir as `teacher_data.npz`, with
`teacher_data.json` naming the teacher: its workdir, checkpoint and step, and
the SHA-256 of its weights (`teacher_workdir`, `teacher_checkpoint`,
`teacher_step`, `teacher_hash`). A resumed run reuses the cache; a teacher
whose weights changed since is refused (the student's checkpoints were trained
on the old pairs), naming both checkpoints and both hashes. A copy of the
teacher's workdir elsewhere is the same teacher.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from workshop.core.protocols import LearnsFromTeacher
from workshop.train.upstream import Restore, Upstream, check_unchanged, load_upstream

__all__ = ["CACHE", "initial_weights", "teacher_source"]

_log = logging.getLogger(__name__)

CACHE = "teacher_data.npz"


def teacher_source(model: LearnsFromTeacher, workdir: pathlib.Path, source: dict[str, np.ndarray], *, seed: int,
                   restore: Restore) -> tuple[dict[str, np.ndarray], Upstream]:
    """The training source of `model`, made by its teacher (`model.teacher_workdir`), cached in `workdir`.

    Args:
      model: the student.
      workdir: the student's workdir (the cache goes there).
      source: the real training data, handed to `model.teacher_data`.
      seed: the student's seed (draws the teacher's noise).
      restore: `restore(workdir, step=step) -> (config, trainer, state, checkpoint record)`
        (`workshop.train.experiment.restore_workdir`).

    Returns:
      `model.teacher_data(teacher, source, seed=seed)` (arrays with a leading
      example axis, `{"x": [N, *input_shape], ...}`), and the restored teacher.

    Raises:
      FileNotFoundError: the teacher's workdir has no config.json or no checkpoint.
      ValueError: the teacher cannot teach this model, or the cache was made
        by a teacher with other weights (`upstream.UpstreamChangedError`).
    """
    teacher = load_upstream(model.teacher_workdir, field="teacher_workdir", role="teacher", restore=restore)
    data_path, meta_path = workdir / CACHE, workdir / CACHE.replace(".npz", ".json")
    if data_path.exists() and meta_path.exists():
        made_by = json.loads(meta_path.read_text())
        # A cache of an older format names no hash: refused too, as its teacher cannot be checked.
        check_unchanged(teacher, recorded_checkpoint=made_by.get("teacher_checkpoint", made_by.get("teacher_workdir")),
                        recorded_hash=made_by.get("teacher_hash", "(not recorded)"),
                        since=f"{data_path} was made from it",
                        remedy=f"this run's checkpoints were trained on the old data: use a new workdir, or delete "
                               f"{workdir} to start over")
        with np.load(data_path) as cached:
            return {k: cached[k] for k in cached.files}, teacher
    start = time.perf_counter()
    data = model.teacher_data(teacher.model, source, seed=seed)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(data_path)
    meta_path.write_text(json.dumps({**teacher.record("teacher"), "teacher_step": teacher.step}, indent=2,
                                    sort_keys=True) + "\n")
    _log.info("the teacher in %s (step %d) made %d training examples in %.1f s; cached in %s", teacher.workdir,
              teacher.step, len(data["x"]), time.perf_counter() - start, data_path)
    return data, teacher


def initial_weights(model: LearnsFromTeacher, teacher: Upstream) -> nnx.State:
    """The teacher's parameters (its EMA weights) for `model` to start from.

    Liu et al. (2023) initialise the 2-rectified flow from the 1-rectified
    one: the student then only straightens paths the teacher already knows.

    Raises:
      ValueError: the teacher's network differs from the student's (another
        backbone or width), naming both parameter counts and the way out.
    """
    mine, theirs = nnx.state(model, nnx.Param), nnx.state(teacher.model, nnx.Param)
    same = jax.tree.structure(mine) == jax.tree.structure(theirs) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)))
    if not same:
        count = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))  # noqa: E731
        raise ValueError(f"init_from_teacher: the teacher in {teacher.workdir} has another network "
                         f"({count(theirs)} parameters) than this model ({count(mine)}): use the teacher's backbone "
                         f"and sizes, or set model.parameters.init_from_teacher=False to start from random weights")
    return theirs
