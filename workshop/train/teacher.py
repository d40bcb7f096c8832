"""Training data made by a teacher: a trained run's model, restored from its workdir (`LearnsFromTeacher`).

Reflow (Liu et al. 2023, arXiv:2209.03003) trains a flow on the (noise,
sample) pairs of a trained flow. `teacher_source` restores the teacher's
workdir (config.json and its newest checkpoint, EMA weights), asks the
student for its data (`teacher_data`) and caches it in the student's workdir
as `teacher_data.npz`, with `teacher_data.json` naming the teacher: its
workdir, checkpoint step and the checkpoint's content fingerprint. A resumed
run reuses the cache; a cache made by another teacher checkpoint is refused
(the student's checkpoints were trained on it), naming both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import time
from typing import Any, Callable

import numpy as np

from workshop.core.protocols import LearnsFromTeacher

__all__ = ["CACHE", "teacher_source"]

_log = logging.getLogger(__name__)

CACHE = "teacher_data.npz"


def _describe(workdir: pathlib.Path, record: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(record.get("fingerprint"), sort_keys=True).encode()).hexdigest()
    return {"teacher_workdir": str(workdir), "teacher_step": int(record["step"]), "teacher_checkpoint_sha256": digest}


def teacher_source(model: LearnsFromTeacher, workdir: pathlib.Path, source: dict[str, np.ndarray], *, seed: int,
                   restore: Callable[[pathlib.Path], tuple[Any, Any, Any, dict[str, Any]]]) -> dict[str, np.ndarray]:
    """The training source of `model`, made by its teacher (`model.teacher_workdir`), cached in `workdir`.

    Args:
      model: the student.
      workdir: the student's workdir (the cache goes there).
      source: the real training data, handed to `model.teacher_data`.
      seed: the student's seed (draws the teacher's noise).
      restore: `workdir -> (config, trainer, state, checkpoint record)`
        (`workshop.train.experiment.restore_workdir`).

    Raises:
      FileNotFoundError: the teacher's workdir has no config.json or no checkpoint.
      ValueError: the teacher cannot teach this model, or the cache was made
        by another teacher checkpoint.
    """
    teacher_dir = pathlib.Path(model.teacher_workdir).expanduser().absolute()
    try:
        _, trainer, state, record = restore(teacher_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"teacher_workdir {model.teacher_workdir}: {err}") from None
    teacher = _describe(teacher_dir, record)
    data_path, meta_path = workdir / CACHE, workdir / CACHE.replace(".npz", ".json")
    if data_path.exists() and meta_path.exists():
        made_by = json.loads(meta_path.read_text())
        if made_by != teacher:
            raise ValueError(f"{data_path} was made by the teacher {made_by}, but teacher_workdir now holds "
                             f"{teacher}; this run's checkpoints were trained on the old data: use a new workdir, "
                             f"or delete {workdir} to start over")
        with np.load(data_path) as cached:
            return {k: cached[k] for k in cached.files}
    start = time.perf_counter()
    data = model.teacher_data(trainer.model_from_state(state), source, seed=seed)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(data_path)
    meta_path.write_text(json.dumps(teacher, indent=2, sort_keys=True) + "\n")
    _log.info("the teacher in %s (step %d) made %d training examples in %.1f s; cached in %s", teacher_dir,
              teacher["teacher_step"], len(data["x"]), time.perf_counter() - start, data_path)
    return data
