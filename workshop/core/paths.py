"""The paths of Workshop, read in one place.

* `user_path`: a path as the user typed it on the command line of a `bazel run`
  binary (shared by the train, sample and evaluation binaries, so that `eval/`
  needs nothing from `train/`).
* `$WORKSHOP_DATA_DIR` (`DATA_DIR_ENV`): the folder of the datasets' files; the
  image and text loaders look in it (and in a subfolder named after the
  dataset) when no folder is given. Unset or empty means "not set".
* `$WORKSHOP_CACHE_DIR` (`CACHE_DIR_ENV`): derived files (trained BPE
  tokenizers, the feature network of the quality metrics); defaults to
  `~/.cache/workshop`.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["CACHE_DIR_ENV", "DATA_DIR_ENV", "cache_dir", "env_data_dir", "user_path"]

DATA_DIR_ENV = "WORKSHOP_DATA_DIR"
CACHE_DIR_ENV = "WORKSHOP_CACHE_DIR"

def user_path(path: str) -> pathlib.Path:
    """A path as the user meant it: relative to where they typed `bazel run`.

    `bazel run` starts binaries in their runfiles tree and passes the user's
    directory as BUILD_WORKING_DIRECTORY; outside Bazel the base is the
    current directory. A leading `~` is expanded.
    """
    base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
    return pathlib.Path(base, os.path.expanduser(path))

def env_data_dir() -> str | None:
    """`$WORKSHOP_DATA_DIR`, or None when it is unset or empty."""
    return os.environ.get(DATA_DIR_ENV) or None


def cache_dir() -> pathlib.Path:
    """`$WORKSHOP_CACHE_DIR`, else `~/.cache/workshop`."""
    return pathlib.Path(os.environ.get(CACHE_DIR_ENV) or pathlib.Path.home() / ".cache" / "workshop")
