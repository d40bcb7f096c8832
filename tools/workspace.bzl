"""The external repositories of Workshop's offline build, for its WORKSPACE and for workspaces that use it.

Debian's bazel-bootstrap (4.2.3) builds offline with `platforms` and `rules_java`
from Debian's packages, a `rules_cc` shim whose `cc/defs.bzl` forwards to the
native C++ rules, a `remote_coverage_tools` shim, and the Python interpreter of
the virtualenv tools/bazel makes (WORKSHOP_PYTHON). Another workspace declares
`@workshop_repo` first, then:

    load("@workshop_repo//tools:workspace.bzl", "workshop_dependencies")
    workshop_dependencies(workshop_path = "../..")
"""

load("//third_party/python:python_repository.bzl", "local_python")

def workshop_dependencies(workshop_path = "."):
    """Declares the repositories above and registers the Python toolchain.

    Args:
      workshop_path: Workshop's folder, relative to the calling workspace's root
        (as `local_repository` paths are) or absolute.
    """
    prefix = "" if workshop_path in (".", "") else workshop_path.rstrip("/") + "/"
    native.local_repository(
        name = "platforms",
        path = "/usr/share/bazel/platforms",  # Debian: bazel-platforms
    )
    native.local_repository(
        name = "rules_java",
        path = "/usr/share/bazel/rules/java",  # Debian: bazel-rules-java
    )

    # bazel_tools loads @rules_cc; the shim forwards to the native C++ rules.
    native.local_repository(
        name = "rules_cc",
        path = prefix + "third_party/rules_cc",
    )

    # Test actions name the coverage tools even when coverage is off.
    native.local_repository(
        name = "remote_coverage_tools",
        path = prefix + "third_party/remote_coverage_tools",
    )
    local_python(name = "local_python")
    native.register_toolchains("@local_python//:toolchain")
