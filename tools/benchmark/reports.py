"""Writing a benchmark's JSON report where the user asked (`--output`), for every benchmark binary."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from workshop.core.paths import user_path

__all__ = ["write_report"]


def write_report(output: str, report: Any) -> pathlib.Path:
    """Writes `report` as indented JSON to `output` and says where.

    `output` is read as the user typed it: relative to the directory `bazel run`
    was started from (`workshop.core.paths.user_path`), `~` expanded. Values JSON
    cannot hold (paths, dtypes) are written as their `str`.
    """
    path = user_path(output)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path}")
    return path
