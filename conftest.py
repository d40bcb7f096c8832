"""pytest set-up for `pip install -e . && pytest` (Bazel runs each test file as a main).

The tests are absltest cases; absl flags such as --test_tmpdir must count as
parsed before pytest runs them, and JAX stays on the CPU unless told otherwise.

pytest runs every test file in one process: the multi-device tests
(workshop/train/distributed_test.py and others) need 8 simulated CPU devices,
which XLA reads from XLA_FLAGS when jax starts, so they are set here, before
any test module imports jax. Tests without a mesh use the first device.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"


def pytest_configure(config):
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
