"""A Python toolchain whose interpreter is the virtualenv tools/bazel made.

tools/bazel exports WORKSHOP_PYTHON (the venv's python3, built from
requirements_lock.txt, or from requirements_gpu_lock.txt under --config=gpu);
the repository is re-made whenever that path changes.
"""

def _local_python_impl(rctx):
    python = rctx.os.environ.get("WORKSHOP_PYTHON", "")
    if not python:
        fail("WORKSHOP_PYTHON is not set. Run Bazel through tools/bazel, which " +
             "makes the virtualenv from requirements_lock.txt and sets it.")
    if not rctx.path(python).exists:
        fail("WORKSHOP_PYTHON=%s does not exist; rerun tools/bazel to rebuild the virtualenv." % python)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = python))

local_python = repository_rule(
    implementation = _local_python_impl,
    environ = ["WORKSHOP_PYTHON"],
    local = True,
)
