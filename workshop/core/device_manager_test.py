"""Tests for workshop.core.device_manager."""

import os
import subprocess
import sys
import textwrap
import warnings
from unittest import mock

import jax
import jax.numpy as jnp
from absl.testing import absltest

from workshop.core import device_manager as dm


class DeviceManagerTest(absltest.TestCase):
    def tearDown(self):
        dm.set_precision_policy(dm.PrecisionPolicy())
        super().tearDown()

    def test_strategy_fractions(self):
        self.assertEqual(dm.MemoryStrategy.CONSERVATIVE.fraction, 0.6)
        self.assertEqual(dm.MemoryStrategy.BALANCED.fraction, 0.75)
        self.assertEqual(dm.MemoryStrategy.AGGRESSIVE.fraction, 0.9)

    def test_strategy_before_backend_start_sets_xla_fraction(self):
        # A fresh interpreter, so no JAX backend has started yet.
        script = textwrap.dedent("""
            import os, warnings
            warnings.simplefilter("error")
            from workshop.core import device_manager as dm
            assert not dm._backends_started()
            dm.configure_for_generative_models(memory_strategy="conservative")
            print(os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"])
        """)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "0.6")

    def test_a_fraction_before_backend_start_sets_xla_fraction(self):
        script = textwrap.dedent("""
            import os, warnings
            warnings.simplefilter("error")
            from workshop.core import device_manager as dm
            dm.configure_for_generative_models(memory_strategy=0.5)
            print(os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"])
        """)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "0.5")

    def test_strategy_after_backend_start_warns_with_an_accelerator(self):
        jnp.zeros(1).block_until_ready()
        with mock.patch.object(dm, "_has_accelerator", return_value=True), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dm.configure_for_generative_models(memory_strategy=dm.MemoryStrategy.AGGRESSIVE)
        self.assertTrue(any("memory_strategy=AGGRESSIVE (0.9)" in str(w.message) and "cannot take effect"
                            in str(w.message) for w in caught))

    def test_strategy_after_backend_start_is_quiet_on_cpu(self):
        jnp.zeros(1).block_until_ready()
        if any(d.platform != "cpu" for d in jax.devices()):
            self.skipTest("this backend has an accelerator")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dm.configure_for_generative_models(memory_strategy=0.5)
            dm.configure_for_generative_models(memory_strategy="balanced")
        self.assertEqual([str(w.message) for w in caught if "memory" in str(w.message)], [])

    def test_detection_matches_jax(self):
        manager = dm.get_device_manager()
        self.assertIs(manager, dm.get_device_manager())
        expected = {"cuda": "gpu", "rocm": "gpu"}.get(jax.default_backend(), jax.default_backend())
        self.assertEqual(manager.get_device(), expected)
        self.assertEqual(manager.device_count, len(jax.devices()))

    def test_mixed_precision_policy(self):
        dm.configure_for_generative_models(enable_mixed_precision=True)
        policy = dm.get_precision_policy()
        self.assertEqual(policy.param_dtype, jnp.float32)
        self.assertEqual(policy.compute_dtype, jnp.bfloat16)
        self.assertTrue(policy.is_mixed)
        self.assertEqual(policy.cast_to_compute(jnp.ones(2)).dtype, jnp.bfloat16)
        self.assertEqual(policy.cast_to_compute(jnp.ones(2, jnp.int32)).dtype, jnp.int32)
        dm.configure_for_generative_models(enable_mixed_precision=True, mixed_precision_dtype="float16")
        self.assertEqual(dm.get_precision_policy().compute_dtype, jnp.float16)
        dm.configure_for_generative_models(enable_mixed_precision=False)
        self.assertFalse(dm.get_precision_policy().is_mixed)

    def test_precision_policy_of_a_training_configuration(self):
        self.assertFalse(dm.precision_policy("float32").is_mixed)
        policy = dm.precision_policy("bfloat16")
        self.assertEqual((policy.param_dtype, policy.compute_dtype, policy.output_dtype),
                         (jnp.float32, jnp.bfloat16, jnp.float32))
        self.assertEqual(dm.precision_policy("float16").compute_dtype, jnp.float16)
        with self.assertRaisesRegex(ValueError, "precision 'fp8' is unknown; known: float32, bfloat16, float16"):
            dm.precision_policy("fp8")

    def test_bf16_on_a_platform_without_it(self):
        bf16, f16 = dm.precision_policy("bfloat16"), dm.precision_policy("float16")
        with self.assertRaisesRegex(ValueError, r"bfloat16.*compute capability 8\.0 or newer.*this one is 7\.0.*"
                                                r"Use precision='float16'"):
            dm.check_precision_supported(bf16, platform="gpu", compute_capability="7.0")
        dm.check_precision_supported(bf16, platform="gpu", compute_capability="8.0")
        dm.check_precision_supported(f16, platform="gpu", compute_capability="7.0")
        with self.assertRaisesRegex(ValueError, "float16' is not supported on TPUs; use 'bfloat16'"):
            dm.check_precision_supported(f16, platform="tpu")
        dm.check_precision_supported(bf16, platform="tpu")
        dm.check_precision_supported(bf16, platform="cpu")
        dm.check_precision_supported(bf16)  # this machine's default device

    def test_apply_compute_dtype(self):
        from flax import nnx

        class Net(nnx.Module):
            def __init__(self, rngs):
                self.dense = nnx.Linear(4, 3, rngs=rngs)
                self.norm = nnx.LayerNorm(3, rngs=rngs)
                self.dtype = "not a layer's"  # a Workshop module's own attribute is left alone

            def __call__(self, x):
                return self.norm(self.dense(x))

        net = Net(nnx.Rngs(0))
        x = jnp.ones((2, 4))
        expected = net(x)
        changed = dm.apply_compute_dtype(net, jnp.bfloat16)
        self.assertEqual(sorted(changed), ["dense", "norm"])
        self.assertEqual(net.dtype, "not a layer's")
        out = net(x)
        self.assertEqual(out.dtype, jnp.bfloat16)
        self.assertEqual(net.dense.kernel[...].dtype, jnp.float32)  # parameters untouched
        self.assertLess(float(jnp.max(jnp.abs(out.astype(jnp.float32) - expected))), 0.05)
        self.assertEqual(dm.apply_compute_dtype(net, jnp.bfloat16), [])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "known: conservative, balanced, aggressive, or a fraction"):
            dm.configure_for_generative_models(memory_strategy="greedy")
        for bad in (0.0, 1.5, -0.2):
            with self.assertRaisesRegex(ValueError, r"must lie in \(0, 1\]"):
                dm.configure_for_generative_models(memory_strategy=bad)
        with self.assertRaisesRegex(ValueError, "a fraction in \\(0, 1\\]; got True"):
            dm.configure_for_generative_models(memory_strategy=True)
        with self.assertRaisesRegex(ValueError, "mixed_precision_dtype"):
            dm.configure_for_generative_models(mixed_precision_dtype="int8")


if __name__ == "__main__":
    absltest.main()
