"""Build macros for Workshop. BUILD files call these, never the raw rules.

Pattern after JAX's `jax_multiplatform_test`: one test file becomes one target
per backend. `name` runs on CPU; `name_gpu` is tagged `gpu` and runs with
`tools/bazel test --config=gpu //...` (which also selects the CUDA jaxlib venv).
"""

load("//third_party:py_deps.bzl", "py_deps")

def ws_py_library(name, srcs = [], deps = [], pip_deps = [], **kwargs):
    native.py_library(
        name = name,
        srcs = srcs,
        deps = deps + py_deps(pip_deps),
        srcs_version = "PY3",
        **kwargs
    )

def ws_py_binary(name, srcs, main = None, deps = [], pip_deps = [], **kwargs):
    native.py_binary(
        name = name,
        srcs = srcs,
        main = main or srcs[0],
        deps = deps + py_deps(pip_deps),
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

# size -> time limit: one Bazel timeout class above the size's default
# (short 60 s, moderate 300 s, long 900 s, eternal 3600 s).
_TIMEOUTS = {"small": "moderate", "medium": "long", "large": "eternal", "enormous": "eternal"}

def ws_py_test(
        name,
        srcs = None,
        deps = [],
        pip_deps = [],
        env = {},
        tags = [],
        size = "small",
        cpu_devices = None,
        **kwargs):
    """A CPU test `name` and a GPU test `name_gpu` from one test file.

    Args:
      name: target name; the file defaults to `name + ".py"`.
      srcs: test sources (default `[name + ".py"]`).
      deps, pip_deps: Bazel deps and logical third-party names (third_party/py_deps.bzl).
      env: extra environment for both backends (PYTHONWARNINGS defaults to "error").
      tags: extra tags for both backends.
      size: Bazel test size, chosen by the test's time on a quiet 2-core CPU: "small"
        up to ~20 s, "medium" up to ~75 s, "large" longer. The time limit is the
        next Bazel timeout above the size's own (`_TIMEOUTS`): a 4x margin or
        more, so the suite passes on a busy machine (load ~13) too.
      cpu_devices: if set, the CPU target simulates this many devices
        (XLA_FLAGS=--xla_force_host_platform_device_count=N).
      **kwargs: passed to py_test.
    """
    srcs = srcs or [name + ".py"]
    kwargs.setdefault("timeout", _TIMEOUTS[size])
    all_deps = deps + py_deps(pip_deps + ([] if "absl" in pip_deps else ["absl"]))
    # As JAX's tests: every warning is an error (a deprecation fails the test that
    # meets it, and the subprocesses it starts inherit the setting). A third-party
    # warning that cannot be fixed gets a narrow filter where it is raised.
    env = dict({"PYTHONWARNINGS": "error"}, **env)
    cpu_env = dict(env)
    cpu_env["JAX_PLATFORMS"] = "cpu"
    if cpu_devices:
        cpu_env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=%d" % cpu_devices
    native.py_test(
        name = name,
        srcs = srcs,
        main = srcs[0],
        deps = all_deps,
        env = cpu_env,
        tags = tags + ["cpu"],
        size = size,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
    gpu_env = dict(env)
    gpu_env["JAX_PLATFORMS"] = "cuda"
    # The tests' tolerances are float32's: no TF32 for float32 matmuls on the GPU.
    gpu_env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    native.py_test(
        name = name + "_gpu",
        srcs = srcs,
        main = srcs[0],
        deps = all_deps,
        env = gpu_env,
        tags = tags + ["gpu", "requires-gpu"],
        size = size,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
