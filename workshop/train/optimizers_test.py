"""Tests for the optimizer and schedule factory."""

import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from workshop.core.configuration import OptimizerConfiguration
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


if __name__ == "__main__":
    absltest.main()
