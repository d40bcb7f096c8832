"""Tests for super-resolution (workshop.models.diffusion.super_resolution)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.diffusion import DDPM, SuperResolutionDDPM, super_resolve
from workshop.models.diffusion.super_resolution import average_pool, project_to_low_res
from workshop.models.factories import create_model
from workshop.models.training_testing import adam_steps


def _config(**parameters):
    base = dict(patch_size=2, hidden_size=16, depth=1, num_heads=2, sampling_steps=6, downsample_factor=2)
    base.update(parameters)
    return ModelConfiguration(model_type="ddpm_super_resolution", input_shape=(8, 8, 1), num_timesteps=30,
                              backbone_type="dit", parameters=base)


def _images(n, seed=0):
    """Blocky smooth images in [0.2, 0.8]: a few 2x2-block patterns plus noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.2, 0.8, (n, 4, 4, 1))
    return np.repeat(np.repeat(low, 2, axis=1), 2, axis=2).astype(np.float32)


def _trained_model(steps=60):
    """A tiny model trained for a few Adam steps, so its output depends on its input."""
    model = SuperResolutionDDPM(_config(condition_dropout=0.2), rngs=nnx.Rngs(0))
    adam_steps(model, ({"x": _images(32, seed=i)} for i in range(steps)), learning_rate=3e-3)
    return model


class ProjectionTest(absltest.TestCase):
    def test_projection_hits_block_means_and_is_the_nearest_point(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(-1.5, 1.5, (2, 4, 6, 2)).astype(np.float32)
        y = rng.uniform(-0.9, 0.9, (2, 2, 3, 2)).astype(np.float32)
        p = np.asarray(project_to_low_res(jnp.asarray(x), jnp.asarray(y), 2))
        np.testing.assert_allclose(np.asarray(average_pool(jnp.asarray(p), 2)), y, atol=1e-6)
        self.assertTrue(np.all(np.abs(p) <= 1.0))
        # Idempotent: a consistent image is left where it is.
        np.testing.assert_allclose(np.asarray(project_to_low_res(jnp.asarray(p), jnp.asarray(y), 2)), p, atol=1e-6)
        # Brute force on one block: no point of a fine grid of the feasible set is closer.
        block, target = x[0, :2, :2, 0].ravel(), y[0, 0, 0, 0]
        best = np.sum((p[0, :2, :2, 0].ravel() - block) ** 2)
        a, b, c = (g.ravel() for g in np.meshgrid(*[np.linspace(-1.0, 1.0, 41)] * 3))
        points = np.stack([a, b, c, 4 * target - a - b - c], axis=1)
        points = points[np.abs(points[:, 3]) <= 1.0]
        self.assertGreater(len(points), 1000)
        self.assertGreaterEqual(np.min(np.sum((points - block) ** 2, axis=1)), best - 1e-5)


class SuperResolutionTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.trained = _trained_model(steps=80)
    def test_factory_and_bad_configs(self):
        model = create_model(_config(), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, SuperResolutionDDPM)
        self.assertEqual(model.low_res_shape, (4, 4, 1))
        with self.assertRaisesRegex(ValueError, "downsample_factor=3 must divide"):
            SuperResolutionDDPM(_config(downsample_factor=3), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "downsample_facto"):
            DDPM(ModelConfiguration(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=30,
                                    parameters=dict(downsample_factor=2)), rngs=nnx.Rngs(0))

    def test_bad_low_res_images(self):
        model = SuperResolutionDDPM(_config(), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"low_res must be \[B, 4, 4, 1\].*got shape \(2, 8, 8, 1\)"):
            super_resolve(model, jnp.zeros((2, 8, 8, 1)), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"got shape \(4, 4, 1\)"):
            super_resolve(model, jnp.zeros((4, 4, 1)), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"must lie in \[0, 1\]"):
            super_resolve(model, jnp.full((1, 4, 4, 1), 2.0), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "steps=31 exceeds num_timesteps=30"):
            super_resolve(model, jnp.zeros((1, 4, 4, 1)), rngs=nnx.Rngs(0), steps=31)
        with self.assertRaisesRegex(ValueError, "holds 1 images but 3"):
            model.generate(n_samples=3, rngs=nnx.Rngs(0), low_res=jnp.zeros((1, 4, 4, 1)))
        plain = DDPM(ModelConfiguration(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=30,
                                        backbone_type="dit", parameters=dict(patch_size=2, hidden_size=16, depth=1,
                                                                             num_heads=2, sampling_steps=6)),
                     rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(TypeError, "ddpm_super_resolution"):
            super_resolve(plain, jnp.zeros((1, 4, 4, 1)), rngs=nnx.Rngs(0))
        strict = SuperResolutionDDPM(_config(condition_dropout=0.0), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "needs low_res"):
            strict.generate(n_samples=2, rngs=nnx.Rngs(0))

    def test_condition_reaches_the_denoiser(self):
        model = self.trained
        x_t = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
        t = jnp.array([5.0, 20.0])
        low = jnp.asarray(_images(2, seed=99)[:, ::2, ::2])

        def out(low_res, present=True):
            cond = model.condition(low_res, 2) if present else model.condition(None, 2)
            return jnp.sum(model.denoiser(condition=cond)(x_t, t)[1] ** 2)

        grad = jax.grad(out)(low)
        self.assertGreater(float(jnp.abs(grad).max()), 1e-3)
        # The dropped ("no image") condition ignores low_res entirely.
        np.testing.assert_array_equal(np.asarray(jax.grad(lambda y: out(y, False))(low)), 0.0)

    def test_training_lowers_the_loss_and_the_condition_is_used(self):
        model = nnx.clone(self.trained)
        x = jnp.asarray(_images(64, seed=1234))
        key = jax.random.PRNGKey(7)
        model.condition_dropout = 0.0
        right = float(model.loss_fn({"x": x}, model(x, rngs=nnx.Rngs(key)))["mse"])
        wrong_low = model.downsample(jnp.asarray(_images(64, seed=4321)))
        wrong = float(model.loss_fn({"x": x}, model(x, rngs=nnx.Rngs(key), low_res=wrong_low))["mse"])
        # Same t and noise; only the low-resolution image differs, and the right one helps.
        self.assertLess(right, 0.9 * wrong)

    def test_consistency_reproduces_the_low_res_input(self):
        model = self.trained
        low = jnp.asarray(np.random.default_rng(3).uniform(0.0, 1.0, (3, 4, 4, 1)).astype(np.float32))
        for sampler in ("ddim", "ddpm", "dpm_solver_pp_2m", "heun"):
            out = np.asarray(super_resolve(model, low, rngs=nnx.Rngs(1), sampler=sampler, steps=5, consistency=True))
            self.assertEqual(out.shape, (3, 8, 8, 1))
            self.assertTrue(np.all((out >= 0.0) & (out <= 1.0)))
            np.testing.assert_allclose(np.asarray(average_pool(jnp.asarray(out), 2)), np.asarray(low), atol=1e-5,
                                       err_msg=sampler)

    def test_same_seed_same_output_whatever_the_batch(self):
        model = self.trained
        low = jnp.asarray(_images(4, seed=5)[:, ::2, ::2])
        big = np.asarray(super_resolve(model, low, rngs=nnx.Rngs(3), sampler="ddpm", steps=4))
        small = np.asarray(super_resolve(model, low[:2], rngs=nnx.Rngs(3), sampler="ddpm", steps=4))
        np.testing.assert_allclose(big[:2], small, atol=1e-5)
        self.assertEqual(model.generate(n_samples=2, rngs=nnx.Rngs(0)).shape, (2, 8, 8, 1))

    def test_log_prob_is_a_conditional_bound(self):
        model = self.trained
        x = jnp.asarray(np.round(_images(2, seed=8) * 255) / 255)
        lp = model.log_prob(x, rngs=nnx.Rngs(0), num_samples=4)
        self.assertEqual(lp.shape, (2,))
        self.assertTrue(np.all(np.isfinite(np.asarray(lp))))
        self.assertTrue(np.all(np.asarray(lp) < 0.0))


if __name__ == "__main__":
    absltest.main()
