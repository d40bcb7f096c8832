"""Samplers with the exact denoiser of Gaussian data (workshop.models.diffusion.samplers).

For x0 ~ N(mu, s^2 I) and x_t = alpha x0 + sigma eps, the posterior mean is
E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu), the
optimal denoiser; every sampler run with it must reproduce mu and s.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.diffusion import samplers
from workshop.models.diffusion.schedules import make_schedule

_MU = jnp.array([0.4, -0.3])
_S = jnp.array([0.5, 0.2])


def _gaussian_denoiser(schedule):
    def denoise(x, t):
        alpha, sigma = schedule.alpha_sigma(t)
        a, s = alpha[:, None], sigma[:, None]
        x0 = _MU + a * _S**2 / (a**2 * _S**2 + s**2) * (x - a * _MU)
        return x0, (x - a * x0) / s

    return denoise


def _run(name, steps, n=4000, seed=0, eta=0.0, schedule="cosine", num_timesteps=1000):
    sched = make_schedule(schedule, num_timesteps)
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, n)
    x_T = jax.random.normal(jax.random.fold_in(key, 7), (n, 2))
    fn = jax.jit(lambda x, k: samplers.run_sampler(_gaussian_denoiser(sched), sched, x, k, sampler=name,
                                                   steps=steps, eta=eta))
    return np.asarray(fn(x_T, keys))


class SamplersTest(parameterized.TestCase):
    @parameterized.parameters(
        ("ddpm", 1000, "linear"),
        ("ddpm", 100, "cosine"),
        ("ddim", 200, "cosine"),
        ("ddim", 200, "sigmoid"),
        ("dpm_solver_pp_2m", 50, "cosine"),
        ("dpm_solver_pp_2m", 50, "linear"),
        ("heun", 25, "cosine"),
        ("heun", 25, "linear"),
    )
    def test_exact_denoiser_recovers_data_moments(self, name, steps, schedule):
        x = _run(name, steps, schedule=schedule)
        np.testing.assert_allclose(x.mean(0), _MU, atol=0.03)
        np.testing.assert_allclose(x.std(0), _S, rtol=0.06)

    def test_ddim_eta1_is_stochastic_and_matches_moments(self):
        a, b = _run("ddim", 200, eta=1.0, seed=0), _run("ddim", 200, eta=1.0, seed=1)
        self.assertGreater(np.abs(a - b).max(), 0.1)
        np.testing.assert_allclose(a.std(0), _S, rtol=0.06)

    @parameterized.parameters(("ddim", 1.7), ("dpm_solver_pp_2m", 2.8), ("heun", 2.5))
    def test_deterministic_samplers_converge_to_the_exact_flow(self, name, min_ratio):
        """For Gaussian data the probability-flow ODE maps x_T to mu + s (x_T - a mu) / sqrt(a^2 s^2 + sigma^2).

        The error must shrink with the steps at the sampler's order: halving
        for DDIM (first order), about a quarter for the second-order solvers.
        """
        sched = make_schedule("linear", 1000)
        x_T = jax.random.normal(jax.random.PRNGKey(0), (200, 2))
        a, s = sched.alpha_sigma(jnp.array(999.0))
        if name != "ddim":  # these start from sigma / alpha = 80 (Karras et al.), not from t = 999
            a, s = 1.0 / np.sqrt(1.0 + 80.0**2), 80.0 / np.sqrt(1.0 + 80.0**2)
        exact = _MU + _S / jnp.sqrt(a**2 * _S**2 + s**2) * (x_T - a * _MU)
        keys = jax.random.split(jax.random.PRNGKey(1), 200)
        errors = [
            float(jnp.mean(jnp.abs(samplers.run_sampler(_gaussian_denoiser(sched), sched, x_T, keys, sampler=name,
                                                         steps=steps) - exact)))
            for steps in (40, 80)
        ]
        self.assertLess(errors[1], 0.015)
        self.assertGreater(errors[0] / errors[1], min_ratio)

    @parameterized.parameters("cosine", "linear")
    def test_dpm_solver_error_falls_with_steps(self, schedule):
        """DPM-Solver++ 2M against the exact flow from its own first noise level: more steps, smaller error.

        Unclipped, the cosine schedule's log SNR of -19.8 at t = 999 put 3 of
        10 steps inside the last timestep and 20 steps did worse than 10.
        """
        sched = make_schedule(schedule, 1000)
        x_T = jax.random.normal(jax.random.PRNGKey(0), (200, 2))
        keys = jax.random.split(jax.random.PRNGKey(1), 200)
        errors = []
        for steps in (5, 10, 20, 50):
            tables = samplers.discrete_tables(sched, steps, log_snr_uniform=True)
            self.assertLess(tables["t"][0], 999.0)
            self.assertLess(np.sum(tables["t"] > 998.0), 1, "steps spent inside the last timestep")
            a, s = np.sqrt(tables["abar_t"][0]), np.sqrt(1.0 - tables["abar_t"][0])
            self.assertAlmostEqual(float(s / a), 80.0, delta=1e-3)  # Karras et al.'s sigma_max, as "heun"
            exact = _MU + _S / jnp.sqrt(a**2 * _S**2 + s**2) * (x_T - a * _MU)
            x = samplers.run_sampler(_gaussian_denoiser(sched), sched, x_T, keys, sampler="dpm_solver_pp_2m",
                                     steps=steps)
            errors.append(float(jnp.mean(jnp.abs(x - exact))))
        for fewer, more in zip(errors, errors[1:]):
            self.assertLess(more, 0.7 * fewer, f"errors for 5, 10, 20, 50 steps: {errors}")
        self.assertLess(errors[-1], 1e-3)

    def test_ddim_eta0_is_deterministic_in_step_noise(self):
        sched = make_schedule("cosine", 100)
        x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
        run = lambda keys: samplers.run_sampler(_gaussian_denoiser(sched), sched, x_T, keys,  # noqa: E731
                                                sampler="ddim", steps=20)
        a = run(jax.random.split(jax.random.PRNGKey(1), 8))
        b = run(jax.random.split(jax.random.PRNGKey(2), 8))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def test_ddim_eta0_is_invertible(self):
        """Running the DDIM ODE backwards (x0 -> x_T) and forwards again returns the start."""
        sched = make_schedule("cosine", 1000)
        denoise = _gaussian_denoiser(sched)
        steps = 200
        t = samplers.respaced_timesteps(1000, steps)[::-1]
        abar = jnp.asarray(sched.alpha_bars[t], jnp.float32)
        x0 = jnp.array([[0.9, -0.1], [0.0, -0.5]])
        # Deterministic encoding: x_{t_{k+1}} = sqrt(abar') x0_hat + sqrt(1 - abar') eps_hat, from x_{t_0}.
        x = jnp.sqrt(abar[0]) * x0 + jnp.sqrt(1 - abar[0]) * denoise(x0 * 0 + x0 * jnp.sqrt(abar[0]),
                                                                      jnp.full((2,), float(t[0])))[1]
        for k in range(steps - 1):
            x0_hat, eps_hat = denoise(x, jnp.full((2,), float(t[k])))
            x = jnp.sqrt(abar[k + 1]) * x0_hat + jnp.sqrt(1 - abar[k + 1]) * eps_hat
        back = samplers.run_sampler(denoise, sched, x, jax.random.split(jax.random.PRNGKey(0), 2),
                                    sampler="ddim", steps=steps)
        np.testing.assert_allclose(np.asarray(back), np.asarray(x0), atol=2e-2)

    def test_respaced_timesteps(self):
        np.testing.assert_array_equal(samplers.respaced_timesteps(10, 4), [9, 6, 3, 0])
        t = samplers.respaced_timesteps(1000, 1000)
        np.testing.assert_array_equal(t, np.arange(999, -1, -1))

    def test_karras_sigmas(self):
        s = samplers.karras_sigmas(0.01, 80.0, 5)
        self.assertEqual(s.shape, (6,))
        np.testing.assert_allclose([s[0], s[-2], s[-1]], [80.0, 0.01, 0.0], rtol=1e-12)
        self.assertTrue(np.all(np.diff(s) < 0))

    def test_bad_sampler_and_steps(self):
        with self.assertRaisesRegex(ValueError, "ddpm, ddim, dpm_solver_pp_2m, heun"):
            samplers.check_sampler("euler", 10, 100)
        with self.assertRaisesRegex(ValueError, "exceeds num_timesteps=100"):
            samplers.check_sampler("ddim", 101, 100)
        with self.assertRaisesRegex(ValueError, "positive integer"):
            samplers.check_sampler("ddim", 0, 100)


if __name__ == "__main__":
    absltest.main()
