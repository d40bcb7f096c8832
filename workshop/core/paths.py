"""Paths as the user typed them on the command line of a `bazel run` binary.

Shared by the train, sample and evaluation binaries (so that `eval/` needs
nothing from `train/`).
"""

import os
import pathlib

__all__ = ["user_path"]


def user_path(path: str) -> pathlib.Path:
    """A path as the user meant it: relative to where they typed `bazel run`.

    `bazel run` starts binaries in their runfiles tree and passes the user's
    directory as BUILD_WORKING_DIRECTORY; outside Bazel the base is the
    current directory. A leading `~` is expanded.
    """
    base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
    return pathlib.Path(base, os.path.expanduser(path))
