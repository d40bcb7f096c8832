"""Helpers shared by the absl binaries."""

import logging
import os
import pathlib

from absl import flags

__all__ = ["quiet_library_logs", "user_path"]


def quiet_library_logs() -> None:
    """Shows only warnings from libraries that log through absl, unless `--verbosity` was given.

    Orbax writes some forty INFO lines per checkpoint through absl's logger,
    which would bury the progress bar; Workshop's own loggers
    (`workshop.*`) keep their INFO lines. Call it in `main`, after flags are
    parsed.
    """
    if not flags.FLAGS["verbosity"].present:
        logging.getLogger("absl").setLevel(logging.WARNING)


def user_path(path: str) -> pathlib.Path:
    """A path as the user meant it: relative to where they typed `bazel run`.

    `bazel run` starts binaries in their runfiles tree and passes the user's
    directory as BUILD_WORKING_DIRECTORY.
    """
    base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
    return pathlib.Path(base, os.path.expanduser(path))
