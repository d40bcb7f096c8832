"""Helpers shared by the absl binaries: paths, quiet logs, and errors a user can fix in one or two lines.

`run(main)` is `app.run(main)` for the train and sample binaries, except that a
mistake in the command (a bad flag or config override, a config value out of
range, a missing file, a workdir of another model, a full disk) ends the
program with a line or two on stderr that name the problem and the fix, and
exit status 1 (`EXIT_ERROR`); `--verbosity=1` prints the traceback too. An
interrupted training run exits with `EXIT_INTERRUPTED` (75).
"""

import errno
import logging
import os
import pathlib
import shutil
import sys
import traceback
import warnings
from typing import Any, Callable, Sequence

import pydantic
from absl import app, flags
from ml_collections import config_flags

from workshop.core.paths import user_path

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "define_config_flag", "describe_error", "quiet_library_logs", "run",
           "user_path"]

# ml_collections' config_flags loads a config file with SourceFileLoader.load_module(), which
# Python 3.11 deprecates (DeprecationWarning raised from importlib._bootstrap); not ours to fix,
# and an error under PYTHONWARNINGS=error (as the tests run) for every binary given --config.
warnings.filterwarnings("ignore", message=r"the load_module\(\) method is deprecated", category=DeprecationWarning,
                        module=r"importlib\._bootstrap")

EXIT_ERROR = 1
# A run stopped by SIGTERM/SIGINT after writing its checkpoint: sysexits.h's EX_TEMPFAIL ("try again
# later"), so a scheduler can tell it from a finished run (0) and from a failed one (1).
EXIT_INTERRUPTED = 75

# The sections of a config file, by the Pydantic configuration that validates them.
_SECTIONS = {"ModelConfiguration": "model", "TrainingConfiguration": "training", "DataConfiguration": "data",
             "EvaluationConfiguration": "eval", "OptimizerConfiguration": "training.optimizer"}

# Errors met while defining the config flag (config_flags applies overrides of the default config
# file as the flag is defined, at import), reported by `run` like the other flag errors.
_DEFINE_ERRORS: list[BaseException] = []
_NAME = "error"


def quiet_library_logs() -> None:
    """Shows only warnings from libraries that log through absl, unless `--verbosity` was given.

    Orbax writes some forty INFO lines per checkpoint through absl's logger,
    which would bury the progress bar, and the tracebacks of a failed save
    (reported in one line instead); Workshop's own loggers
    (`workshop.*`) keep their INFO lines. Call it in `main`, after flags are
    parsed.
    """
    if not flags.FLAGS["verbosity"].present:
        absl_logger = logging.getLogger("absl")
        absl_logger.setLevel(logging.WARNING)
        absl_logger.addFilter(_without_orbax_tracebacks)


def _without_orbax_tracebacks(record: logging.LogRecord) -> bool:
    """Drops orbax's error logs with a traceback (a failed background save logs three, some 150 lines).

    The checkpointer raises the same error at the next step as
    CheckpointSaveError, which the binaries report in one line.
    """
    return not (record.levelno >= logging.ERROR and record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


def define_config_flag(default: str, help_text: str):
    """`config_flags.DEFINE_config_file("config", default, lock_config=True)`; None if that failed.

    Without `--config`, config_flags loads the default file and applies the
    `--config.*` overrides of `sys.argv` here, at import; an unknown field
    then raises before `app.run`. Such an error is kept and reported by `run`.
    """
    try:
        return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)
    except Exception as err:  # noqa: BLE001 - any error of the command line, reported by run()
        _DEFINE_ERRORS.append(err)
        return None


def run(main: Callable[[list[str]], Any], *, name: str) -> None:
    """`app.run(main)` with the command's mistakes reported in one or two lines (see the module docstring).

    Args:
      main: the binary's main function.
      name: the binary's name, which starts each error line ("train: error: ...").
    """
    global _NAME
    _NAME = name
    app.run(_guarded(main), flags_parser=_parse_flags)


def _verbose(argv: Sequence[str]) -> bool:
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "0")
        if arg.split("=")[0] in ("--verbosity", "-v", "--v"):
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def _fail(message: str, err: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    hint = "" if verbose else " (--verbosity=1 shows the traceback)"
    print(f"{_NAME}: error: {message}{hint}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        if _DEFINE_ERRORS:
            raise _DEFINE_ERRORS[0]
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS:  # config_flags defers a config file's loading error to its first use
            flags.FLAGS["config"].value.keys()
        return remaining
    except Exception as err:  # noqa: BLE001 - flags and config_flags raise many types
        _fail(_describe_flag_error(err, argv), err, _verbose(argv))


def _guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except (app.UsageError, ValueError, OSError, FloatingPointError) as err:
            message = str(err) if isinstance(err, app.UsageError) else describe_error(err)
            _fail(message, err, flags.FLAGS["verbosity"].value >= 1)

    return guarded


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from or while handling, outermost first."""
    chain = [err]
    while (err.__cause__ or err.__context__) is not None and len(chain) < 20:
        err = err.__cause__ or err.__context__
        chain.append(err)
    return chain


def _config_value(argv: Sequence[str]) -> str:
    given = [arg.split("=", 1)[1] for arg in argv if arg.startswith(("--config=", "-config="))]
    return given[-1] if given else "<the default config file>"


def _describe_flag_error(err: BaseException, argv: Sequence[str]) -> str:
    chain = _chain(err)
    inner = chain[-1]
    key_errors = [str(e.args[0]) for e in chain if isinstance(e, KeyError) and e.args]
    if key_errors:
        # ml_collections: KeyError("'num_stepz'\nDid you mean \"num_steps\" instead of \"num_stepz\"?")
        field, _, hint = max(key_errors, key=len).partition("\n")
        field, hint = field.strip("'\""), hint.strip() or "see the config file for its fields"
        for arg in argv:
            parts = arg.split("=", 1)[0].lstrip("-").split(".")
            if parts[0] == "config" and field in parts[1:]:
                at = len(parts) - 1 - parts[::-1].index(field)
                return f"--{'.'.join(parts)}: {'.'.join(parts[:at])} has no field {field!r}. {hint}"
        return f"the config has no field {field!r}. {hint}"
    if "Failed loading config file" in str(err):
        path = _config_value(argv)
        if not os.path.exists(user_path(path)):
            return (f"--config={path}: no such config file; give the path of a file with get_config(), "
                    "e.g. --config=workshop/train/configs/vae.py")
    if isinstance(err, flags.Error):
        return _summary(str(err))
    return _summary(f"{type(inner).__name__}: {inner}")


def _summary(message: str) -> str:
    """A message of many lines as one or two: the first, a count of listed items, the last (often the fix)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return "\n".join(lines)
    head, tail, items = lines[0], lines[-1], [line.strip() for line in lines[1:-1] if line.startswith(" ")]
    if items:
        head = f"{head} {items[0]}" + (f" and {len(items) - 1} more" if len(items) > 1 else "")
    return f"{head}\n{tail}"


def _validation_error(err: pydantic.ValidationError) -> str:
    section = _SECTIONS.get(err.title, err.title)
    parts = []
    for e in err.errors():
        name = ".".join(["config", section, *(str(x) for x in e["loc"])])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append(f"{name}: no such field; remove it (or fix its spelling)")
        elif e["loc"]:
            parts.append(f"{name}={e.get('input')!r}: {message}; set another value, e.g. --{name}=...")
        else:  # a check across fields: its message names them
            parts.append(message if message.startswith(section) else f"config.{section}: {message}")
    return "; ".join(parts)


def describe_error(err: BaseException) -> str:
    """One or two lines for a user: what is wrong and how to fix it, for the errors `run` catches."""
    from workshop.train.checkpointing import CheckpointMismatchError  # the train library: heavy imports

    if isinstance(err, pydantic.ValidationError):
        return _validation_error(err)
    if isinstance(err, CheckpointMismatchError):
        lines = str(err).splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("The model configurations differ")), None)
        differ = ("; the model configuration differs in " + "; ".join(line.strip() for line in lines[start + 1:])
                  if start is not None else f" ({len(lines) - 1} arrays differ)")
        return (f"{lines[0].rstrip(':')}{differ}\nTrain it into another --workdir, or keep the workdir's own "
                "configuration (its config.json)")
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        path = pathlib.Path(os.fsdecode(err.filename))
        if err.errno == errno.ENOSPC:
            return (f"{path}: no space left on device ({_free_bytes(path) / 2**20:.0f} MiB free); free space and "
                    "run the same command again")
        what = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only file system",
                errno.EEXIST: "exists and is not a directory", errno.ENOTDIR: "a part of the path is a file",
                errno.ENOENT: "no such file or directory"}.get(err.errno, err.strerror.lower())
        return f"{path}: {what}; check the path, or pass another (--workdir, --data_dir, --config)"
    return _summary(str(err))


def _free_bytes(path: pathlib.Path) -> int:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0
