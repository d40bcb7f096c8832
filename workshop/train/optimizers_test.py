"""Tests for the optimizer and schedule factory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from workshop.core.configuration import OptimizerConfiguration
from workshop.train.bad_steps import skip_nonfinite_update
from workshop.train.optimizers import make_optimizer, make_schedule


class OptimizersTest(parameterized.TestCase):
    def test_warmup_cosine_values(self):
        schedule = make_schedule(
            OptimizerConfiguration(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10, final_lr_fraction=0.1),
            num_steps=110,
        )
        np.testing.assert_allclose(schedule(0), 0.0)
        np.testing.assert_allclose(schedule(5), 0.5)
        np.testing.assert_allclose(schedule(10), 1.0)
        np.testing.assert_allclose(schedule(60), 0.1 + 0.9 * 0.5, rtol=1e-5)  # half way down the cosine
        np.testing.assert_allclose(schedule(110), 0.1, rtol=1e-5)

    def test_constant_with_warmup(self):
        schedule = make_schedule(OptimizerConfiguration(learning_rate=2.0, warmup_steps=4), num_steps=100)
        np.testing.assert_allclose([schedule(s) for s in (0, 2, 4, 50)], [0.0, 1.0, 2.0, 2.0])

    def test_warmup_longer_than_run_is_refused(self):
        with self.assertRaisesRegex(ValueError, "warmup_steps"):
            make_schedule(OptimizerConfiguration(schedule="warmup_cosine", warmup_steps=10), num_steps=10)

    def test_clipping_bounds_the_update(self):
        tx, _ = make_optimizer(OptimizerConfiguration(name="sgd", learning_rate=1.0, momentum=0.0, grad_clip_norm=1.0), 10)
        params = {"w": jnp.zeros(2)}
        updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)

    @parameterized.parameters("adam", "adamw", "sgd", "rmsprop", "lamb")
    def test_each_optimizer_descends_a_quadratic(self, name):
        tx, _ = make_optimizer(OptimizerConfiguration(name=name, learning_rate=0.05), 200)
        params = {"w": jnp.array([3.0, -2.0])}
        state = tx.init(params)
        for _ in range(200):
            grads = {"w": 2 * params["w"]}
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        self.assertLess(float(jnp.linalg.norm(params["w"])), 0.5)

    @parameterized.parameters(np.nan, np.inf, -np.inf)
    def test_nonfinite_metric_keeps_the_old_state_under_jit(self, bad):
        old = {"w": jnp.array([1.0, 2.0]), "count": jnp.array(3, jnp.int32), "none": None}
        new = {"w": jnp.array([5.0, 6.0]), "count": jnp.array(4, jnp.int32), "none": None}
        # The update replaces the state by `new` (an input), as an optimizer step would.
        guard = jax.jit(lambda m, new, old: skip_nonfinite_update(m, lambda o, n: n, old, new))
        state, metrics = guard({"loss": jnp.float32(bad), "grad_norm": jnp.float32(1.0)}, new, old)
        np.testing.assert_array_equal(state["w"], [1.0, 2.0])
        self.assertEqual(int(state["count"]), 3)
        self.assertEqual(int(metrics["skipped"]), 1)
        state, metrics = guard({"loss": jnp.float32(0.5), "grad_norm": jnp.float32(bad)}, new, old)
        self.assertEqual(int(metrics["skipped"]), 1)
        state, metrics = guard({"loss": jnp.float32(0.5), "grad_norm": jnp.float32(1.0)}, new, old)
        np.testing.assert_array_equal(state["w"], [5.0, 6.0])
        self.assertEqual(int(state["count"]), 4)
        self.assertEqual(int(metrics["skipped"]), 0)
        self.assertEqual(float(metrics["loss"]), 0.5)


if __name__ == "__main__":
    absltest.main()
