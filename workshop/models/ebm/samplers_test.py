"""Tests of the MCMC samplers on analytic (Gaussian) energies."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.ebm import samplers

_MEAN = np.array([1.0, -2.0], np.float32)
_COV = np.array([[1.0, 0.6], [0.6, 2.0]], np.float32)
_PRECISION = np.linalg.inv(_COV).astype(np.float32)


def _gaussian_energy(x):
    d = x - _MEAN
    return 0.5 * jnp.einsum("bi,ij,bj->b", d, _PRECISION, d)


def _standard_normal_energy(x):
    return 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)


@functools.lru_cache(maxsize=None)
def _compiled(name, energy_fn, num_steps, **static):
    """One compiled chain per (sampler, energy, length, static options); the step size stays traced."""
    return jax.jit(lambda x0, key, step_size: samplers.run_sampler(name, energy_fn, x0, key=key, num_steps=num_steps,
                                                                   step_size=step_size, **static))


def _run(name, energy_fn, x0, *, key, num_steps, step_size, **static):
    return _compiled(name, energy_fn, num_steps, **static)(x0, key, jnp.float32(step_size))


def _ula_stationary_cov(step):
    """Exact stationary covariance of x' = x - step*P(x-m) + sqrt(2 step) xi: S = A S A^T + 2 step I."""
    a = np.eye(2) - step * _PRECISION.astype(np.float64)
    # vec(S) = (I - A kron A)^-1 vec(2 step I)
    s = np.linalg.solve(np.eye(4) - np.kron(a, a), (2 * step * np.eye(2)).ravel())
    return s.reshape(2, 2)


class GaussianTargetTest(parameterized.TestCase):
    """4000 independent chains from a far start; their final states are compared with N(m, S)."""

    @parameterized.named_parameters(
        ("langevin", "langevin", dict(num_steps=300, step_size=0.05)),
        ("mala", "mala", dict(num_steps=150, step_size=0.3)),
        ("hmc", "hmc", dict(num_steps=40, step_size=0.3, num_leapfrog_steps=5)),
    )
    def test_mean_and_covariance_match(self, name, kwargs):
        x0 = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (4000, 2)) - 4.0
        result = _run(name, _gaussian_energy, x0, key=jax.random.PRNGKey(2), **kwargs)
        x = np.asarray(result.samples, np.float64)
        # Unadjusted Langevin is biased by O(step); its exact stationary law is known for a Gaussian.
        cov = _ula_stationary_cov(kwargs["step_size"]) if name == "langevin" else _COV
        np.testing.assert_allclose(x.mean(0), _MEAN, atol=0.1)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.12)
        self.assertEqual(result.energy_trace.shape, (kwargs["num_steps"] + 1, 4000))
        np.testing.assert_allclose(result.energy_trace[-1], _gaussian_energy(result.samples), rtol=1e-4, atol=1e-4)
        # At stationarity the mean energy of a d-dim Gaussian is d/2.
        self.assertAlmostEqual(float(jnp.mean(result.energy_trace[-1])), 1.0, delta=0.1)


def _mala_expected_acceptance(step, dim, seed=0):
    """E min(1, r) for MALA on N(0, I_dim) at stationarity, by plain Monte Carlo in numpy."""
    n = 2_000_000 // dim  # Monte Carlo error of the mean below 0.002
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    y = (1 - step) * x + np.sqrt(2 * step) * rng.standard_normal((n, dim))
    log_r = 0.5 * (x**2).sum(1) - 0.5 * (y**2).sum(1)
    log_r += (-((x - (1 - step) * y) ** 2).sum(1) + ((y - (1 - step) * x) ** 2).sum(1)) / (4 * step)
    return np.minimum(1.0, np.exp(log_r)).mean()


def _hmc_expected_acceptance(step, num_leapfrog, dim, seed=0):
    """E min(1, exp(-dH)) for HMC on N(0, I_dim): leapfrog on x^2/2 is a linear map M, applied L times."""
    m = np.array([[1 - step**2 / 2, step], [-step * (1 - step**2 / 4), 1 - step**2 / 2]])
    ml = np.linalg.matrix_power(m, num_leapfrog)
    n = 2_000_000 // dim
    rng = np.random.default_rng(seed)
    x, p = rng.standard_normal((2, n, dim))
    x_end, p_end = ml[0, 0] * x + ml[0, 1] * p, ml[1, 0] * x + ml[1, 1] * p
    dh = 0.5 * ((x_end**2 + p_end**2) - (x**2 + p**2)).sum(1)
    return np.minimum(1.0, np.exp(-dh)).mean()


class AcceptanceTest(parameterized.TestCase):
    def test_mala_acceptance_tends_to_one_as_step_shrinks(self):
        x0 = jax.random.normal(jax.random.PRNGKey(0), (500, 10))
        rates = [float(_run("mala", _standard_normal_energy, x0, key=jax.random.PRNGKey(1), num_steps=5,
                            step_size=s).acceptance_rate) for s in (1e-4, 1e-2, 0.3, 1.0)]
        self.assertGreater(rates[0], 0.999)
        self.assertTrue(all(a > b for a, b in zip(rates, rates[1:])), rates)

    @parameterized.parameters((0.3, 10), (0.5, 50))
    def test_mala_acceptance_matches_gaussian_rate(self, step, dim):
        x0 = jax.random.normal(jax.random.PRNGKey(0), (1000, dim))  # start at stationarity
        result = _run("mala", _standard_normal_energy, x0, key=jax.random.PRNGKey(1), num_steps=20, step_size=step)
        self.assertAlmostEqual(float(result.acceptance_rate), _mala_expected_acceptance(step, dim), delta=0.015)

    @parameterized.parameters((0.5, 5, 10), (0.25, 10, 100), (1.9, 1, 2))
    def test_hmc_acceptance_matches_exact_gaussian_rate(self, step, num_leapfrog, dim):
        x0 = jax.random.normal(jax.random.PRNGKey(0), (1000, dim))
        result = _run("hmc", _standard_normal_energy, x0, key=jax.random.PRNGKey(1), num_steps=20,
                      step_size=step, num_leapfrog_steps=num_leapfrog)
        expected = _hmc_expected_acceptance(step, num_leapfrog, dim)
        self.assertAlmostEqual(float(result.acceptance_rate), expected, delta=0.015)

    def test_langevin_accepts_everything(self):
        result = _run("langevin", _standard_normal_energy, jnp.zeros((4, 3)), key=jax.random.PRNGKey(0),
                      num_steps=3, step_size=0.1)
        self.assertEqual(float(result.acceptance_rate), 1.0)


class OptionsTest(absltest.TestCase):
    def test_chain_paths_do_not_depend_on_batch_size(self):
        x0 = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
        for name in samplers.SAMPLERS:
            small = _run(name, _standard_normal_energy, x0[:2], key=jax.random.PRNGKey(3), num_steps=4, step_size=0.1)
            large = _run(name, _standard_normal_energy, x0, key=jax.random.PRNGKey(3), num_steps=4, step_size=0.1)
            np.testing.assert_allclose(small.samples, large.samples[:2], rtol=1e-6, err_msg=name)

    def test_grad_clip_and_clip_range(self):
        # A steep slope: each step moves by exactly step * grad_clip without noise; the range caps it.
        energy = lambda x: 1000.0 * jnp.sum(x, axis=-1)  # noqa: E731
        result = _run("langevin", energy, jnp.zeros((2, 2)), key=jax.random.PRNGKey(0), num_steps=3,
                      step_size=1.0, noise_scale=0.0, grad_clip=0.1)
        np.testing.assert_allclose(result.samples, -0.3 * np.ones((2, 2)), rtol=1e-6)
        result = _run("langevin", energy, jnp.zeros((2, 2)), key=jax.random.PRNGKey(0), num_steps=3,
                      step_size=1.0, noise_scale=0.0, grad_clip=0.1, clip_range=(-0.15, 1.0))
        np.testing.assert_allclose(result.samples, -0.15 * np.ones((2, 2)), rtol=1e-6)

    def test_bad_input_names_the_argument(self):
        x0 = jnp.zeros((2, 2))
        key = jax.random.PRNGKey(0)
        for name in samplers.SAMPLERS:
            with self.assertRaisesRegex(ValueError, "num_steps must be a positive integer, got 0"):
                samplers.run_sampler(name, _standard_normal_energy, x0, key=key, num_steps=0, step_size=0.1)
            with self.assertRaisesRegex(ValueError, "step_size must be positive, got -0.1"):
                samplers.run_sampler(name, _standard_normal_energy, x0, key=key, num_steps=2, step_size=-0.1)
            with self.assertRaisesRegex(ValueError, r"energy_fn must map a batch \[B, ...\] to energies \[B\]"):
                samplers.run_sampler(name, lambda x: x, x0, key=key, num_steps=2, step_size=0.1)
        with self.assertRaisesRegex(ValueError, "num_leapfrog_steps must be a positive integer"):
            samplers.hmc(_standard_normal_energy, x0, key=key, num_steps=2, step_size=0.1, num_leapfrog_steps=0)
        with self.assertRaisesRegex(ValueError, "sampler 'gibbs' is unknown; known: langevin, mala, hmc"):
            samplers.run_sampler("gibbs", _standard_normal_energy, x0, key=key, num_steps=2, step_size=0.1)


if __name__ == "__main__":
    absltest.main()
