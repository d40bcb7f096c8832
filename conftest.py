"""pytest set-up for `pip install -e . && pytest` (Bazel runs each test file as a main).

The tests are absltest cases; absl flags such as --test_tmpdir must count as
parsed before pytest runs them, and JAX stays on the CPU unless told otherwise.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_configure(config):
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
