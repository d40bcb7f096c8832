"""Noise schedules and prediction targets against their closed forms (workshop.models.diffusion.schedules)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.diffusion import schedules


class SchedulesTest(parameterized.TestCase):
    def test_linear_endpoints(self):
        s = schedules.make_schedule("linear", 1000)
        np.testing.assert_allclose([s.betas[0], s.betas[-1]], [1e-4, 0.02], rtol=1e-12)
        np.testing.assert_allclose(s.alpha_bars[0], 1 - 1e-4, rtol=1e-12)
        expected_last = np.prod(1.0 - np.linspace(1e-4, 0.02, 1000))
        np.testing.assert_allclose(s.alpha_bars[-1], expected_last, rtol=1e-10)
        self.assertLess(s.alpha_bars[-1], 1e-4)
        # Scaled by 1000 / T for other lengths (Nichol & Dhariwal 2021).
        np.testing.assert_allclose(schedules.make_schedule("linear", 100).betas[[0, -1]], [1e-3, 0.2], rtol=1e-12)

    def test_cosine_matches_its_formula(self):
        T, s = 1000, 0.008
        sched = schedules.make_schedule("cosine", T)
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        unclipped = sched.betas < 0.999
        for t in np.flatnonzero(unclipped)[::97]:
            np.testing.assert_allclose(sched.alpha_bars[t], f((t + 1) / T) / f(0.0), rtol=1e-9)
        self.assertTrue(unclipped[: T - 1].all())  # only the very last beta hits the 0.999 cap
        self.assertLess(sched.alpha_bars[-1], 1e-6)

    def test_sigmoid_matches_its_formula(self):
        T = 200
        sched = schedules.make_schedule("sigmoid", T)
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        gamma = lambda u: (sig(3.0) - sig(6.0 * u - 3.0)) / (sig(3.0) - sig(-3.0))  # noqa: E731
        for t in (0, 50, 120, T - 2):
            np.testing.assert_allclose(sched.alpha_bars[t], gamma((t + 1) / T), rtol=1e-9)

    @parameterized.parameters("linear", "cosine", "sigmoid")
    def test_snr_strictly_decreasing_and_alpha_bar_in_unit_interval(self, name):
        for T in (10, 1000):
            sched = schedules.make_schedule(name, T)
            self.assertTrue(np.all(np.diff(sched.log_snrs) < 0))
            self.assertTrue(np.all((sched.alpha_bars > 0) & (sched.alpha_bars < 1)))

    def test_fractional_timesteps_interpolate_and_invert(self):
        sched = schedules.make_schedule("cosine", 50)
        t_int = jnp.arange(50.0)
        a, s = sched.alpha_sigma(t_int)
        np.testing.assert_allclose(np.asarray(a) ** 2, sched.alpha_bars, rtol=2e-5)
        np.testing.assert_allclose(np.asarray(a**2 + s**2), 1.0, rtol=1e-6)
        t = jnp.array([0.0, 0.25, 7.5, 31.9, 49.0])
        np.testing.assert_allclose(sched.timestep_of_log_snr(sched.log_snr(t)), t, atol=2e-4)

    def test_q_sample_moments(self):
        sched = schedules.make_schedule("linear", 1000)
        x0 = jnp.full((20000, 1), 0.7)
        t = jnp.full((20000,), 300)
        x = np.asarray(sched.q_sample(x0, t, jax.random.normal(jax.random.PRNGKey(0), x0.shape)))
        abar = sched.alpha_bars[300]
        np.testing.assert_allclose(x.mean(), math.sqrt(abar) * 0.7, atol=0.015)
        np.testing.assert_allclose(x.var(), 1 - abar, rtol=0.03)

    @parameterized.parameters("epsilon", "x0", "v")
    def test_prediction_targets_convert_exactly(self, kind):
        key = jax.random.PRNGKey(1)
        x0 = jax.random.uniform(key, (6, 3, 3, 1), minval=-1, maxval=1)
        eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
        sched = schedules.make_schedule("cosine", 1000)
        alpha, sigma = sched.alpha_sigma(jnp.array([0.0, 10, 200, 500, 900, 999]))
        x_t = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
        target = schedules.prediction_target(kind, x0, eps, alpha, sigma)
        x0_back, eps_back = schedules.to_x0_and_eps(kind, target, x_t, alpha, sigma)
        # x0 from eps at t=999 divides by alpha ~ 1e-4, so compare x_t-consistent combinations too.
        np.testing.assert_allclose(x0_back[:5], x0[:5], atol=2e-3 if kind == "epsilon" else 1e-5)
        np.testing.assert_allclose(eps_back[1:], eps[1:], atol=1e-3 if kind == "x0" else 1e-5)
        # The three targets of the same (x0, eps) convert into each other exactly.
        for other in schedules.PREDICTION_TYPES:
            converted = schedules.prediction_target(other, x0_back, eps_back, alpha, sigma)
            np.testing.assert_allclose(converted[1:5], schedules.prediction_target(other, x0, eps, alpha, sigma)[1:5],
                                       atol=1e-4)

    def test_min_snr_weights_give_the_same_x0_weight(self):
        sched = schedules.make_schedule("linear", 1000)
        alpha, sigma = sched.alpha_sigma(jnp.array([0.0, 100, 500, 999]))
        snr = np.asarray(alpha**2 / sigma**2)
        w = {k: np.asarray(schedules.loss_weight("min_snr", k, alpha, sigma, 5.0)) for k in schedules.PREDICTION_TYPES}
        np.testing.assert_allclose(w["x0"], np.minimum(snr, 5.0), rtol=1e-5)
        np.testing.assert_allclose(w["epsilon"] * snr, w["x0"], rtol=1e-5)
        np.testing.assert_allclose(w["v"] * (snr + 1), w["x0"], rtol=1e-5)
        np.testing.assert_array_equal(schedules.loss_weight("plain", "v", alpha, sigma), 1.0)

    def test_bad_names_list_the_known_ones(self):
        with self.assertRaisesRegex(ValueError, "'quadratic' is unknown; known: linear, cosine, sigmoid"):
            schedules.make_schedule("quadratic", 10)
        with self.assertRaisesRegex(ValueError, "known: epsilon, x0, v"):
            schedules.prediction_target("score", 0.0, 0.0, jnp.ones(1), jnp.ones(1))
        with self.assertRaisesRegex(ValueError, "known: plain, min_snr"):
            schedules.loss_weight("p2", "epsilon", jnp.ones(1), jnp.ones(1))


if __name__ == "__main__":
    absltest.main()
