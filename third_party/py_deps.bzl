"""The one table that maps logical Python dependency names to Bazel labels.

BUILD files never name the pip backend: they write `pip_deps = ["jax", "optax"]`
through the macros in //tools:build_defs.bzl. Switching from the local
virtualenv (Bazel 4, offline) to a rules_python pip hub (Bazel 7+, MODULE.bazel)
is a change of PIP_BACKEND below and nothing else.
"""

# "venv": packages come from the interpreter's virtualenv (tools/bazel makes it
#         from requirements_lock.txt); //third_party/pypi holds one target each.
# "hub":  packages come from the rules_python hub declared in MODULE.bazel.
PIP_BACKEND = "venv"

# logical name -> distribution name in requirements.in
PIP_PACKAGES = {
    "absl": "absl-py",
    "diffrax": "diffrax",
    "flax": "flax",
    "gemmi": "gemmi",
    "grain": "grain",
    "jax": "jax",
    "ml_collections": "ml-collections",
    "numpy": "numpy",
    "optax": "optax",
    "orbax_checkpoint": "orbax-checkpoint",
    "pillow": "pillow",
    "pydantic": "pydantic",
    "pyyaml": "pyyaml",
    "soundfile": "soundfile",
    "soxr": "soxr",
    "tensorboardx": "tensorboardx",
    "tokenizers": "tokenizers",
    "tqdm": "tqdm",
}

def _hub_name(distribution):
    return distribution.replace("-", "_").lower()

def py_deps(names):
    """Returns the Bazel labels of the named third-party Python packages."""
    labels = []
    for name in names:
        if name not in PIP_PACKAGES:
            fail("unknown Python dependency '%s'; known: %s (add it to third_party/py_deps.bzl and requirements.in)" % (name, ", ".join(sorted(PIP_PACKAGES.keys()))))
        if PIP_BACKEND == "venv":
            # Label(): resolved in this repository even when another workspace calls the macros.
            labels.append(Label("//third_party/pypi:" + name))
        else:
            labels.append("@pypi//" + _hub_name(PIP_PACKAGES[name]))
    return labels
