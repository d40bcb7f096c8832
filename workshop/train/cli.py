"""Helpers shared by the absl binaries."""

import os
import pathlib

__all__ = ["user_path"]


def user_path(path: str) -> pathlib.Path:
    """A path as the user meant it: relative to where they typed `bazel run`.

    `bazel run` starts binaries in their runfiles tree and passes the user's
    directory as BUILD_WORKING_DIRECTORY.
    """
    base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
    return pathlib.Path(base, os.path.expanduser(path))
