"""ODE solvers and the ODE log-likelihood against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.diffusion import ode

# A correlated Gaussian N(mu, R diag(s^2) R^T): its Jacobians are not diagonal, so
# Hutchinson's estimator has a variance to average out.
_MU = np.array([0.5, -1.0, 2.0])
_S = np.array([0.3, 1.5, 0.8])
_R = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]


def _ot_velocity(x, t):
    """E[eps - x0 | x_t] for x_t = (1 - t) x0 + t eps, x0 ~ N(mu, R diag(s^2) R^T), eps ~ N(0, I)."""
    r, mu, s2 = jnp.asarray(_R, jnp.float32), jnp.asarray(_MU, jnp.float32), jnp.asarray(_S**2, jnp.float32)
    y, m = x @ r, mu @ r  # coordinates where the covariance is diagonal
    a, b = 1.0 - t, t
    var = a**2 * s2 + b**2
    e_x0 = m + a * s2 / var * (y - a * m)
    e_eps = b / var * (y - a * m)
    return (e_eps - e_x0) @ r.T


def _analytic_log_prob(x):
    y = (x - _MU) @ _R
    return np.sum(-0.5 * y**2 / _S**2 - np.log(_S) - 0.5 * math.log(2 * math.pi), axis=1)


class CountedField:
    """dy/dt = -y with a host-side count of its evaluations (a check on `integrate`'s nfe)."""

    def __init__(self):
        self.calls = 0

    def _count(self):
        self.calls += 1

    def __call__(self, t, y):
        jax.debug.callback(self._count)
        return -y


class IntegrateTest(parameterized.TestCase):
    @parameterized.parameters(("euler", 10, 10), ("heun", 10, 20), ("euler", 3, 3), ("heun", 1, 2))
    def test_fixed_steps_spend_the_stated_evaluations(self, solver, steps, nfe):
        field = CountedField()
        y1, reported = jax.jit(lambda y: ode.integrate(field, y, 0.0, 1.0, solver=solver, steps=steps))(jnp.ones(2))
        jax.block_until_ready(y1)
        self.assertEqual(int(reported), nfe)
        self.assertEqual(field.calls, nfe)

    @parameterized.parameters((4, 1e-7), (200, 1e-5))  # a first step too long (a step is rejected), then short
    def test_dopri5_counts_its_evaluations_and_meets_its_tolerance(self, steps, tol):
        field = CountedField()
        y1, nfe = jax.jit(lambda y: ode.integrate(field, y, 0.0, 2.0, solver="dopri5", steps=steps, rtol=tol,
                                                  atol=tol))(jnp.array([1.0, -3.0]))
        jax.block_until_ready(y1)
        self.assertEqual(int(nfe), field.calls)
        np.testing.assert_allclose(y1, np.array([1.0, -3.0]) * math.exp(-2.0), rtol=30 * tol)

    def test_orders_of_the_fixed_solvers(self):
        exact = math.exp(-1.0)
        err = {}
        for solver in ("euler", "heun"):
            for steps in (10, 20):
                y1, _ = ode.integrate(lambda t, y: -y, jnp.ones(()), 0.0, 1.0, solver=solver, steps=steps)
                err[solver, steps] = abs(float(y1) - exact)
        # Halving the step halves Euler's error (order 1) and quarters Heun's (order 2).
        self.assertAlmostEqual(err["euler", 10] / err["euler", 20], 2.0, delta=0.15)
        self.assertAlmostEqual(err["heun", 10] / err["heun", 20], 4.0, delta=0.3)
        self.assertLess(err["heun", 10], err["euler", 20] / 10)

    def test_integrates_backwards_in_time(self):
        y0, _ = ode.integrate(lambda t, y: -y, jnp.ones(()), 1.0, 0.0, solver="dopri5", steps=2)
        self.assertAlmostEqual(float(y0), math.e, places=4)

    @parameterized.parameters(("rk4", 5, "sampler 'rk4' is unknown; known: euler, heun, dopri5"),
                              ("euler", 0, "steps must be a positive integer, got 0"),
                              ("heun", -3, "steps must be a positive integer, got -3"))
    def test_bad_solver_or_steps(self, solver, steps, message):
        with self.assertRaisesRegex(ValueError, message):
            ode.check_solver(solver, steps)


class DivergenceTest(absltest.TestCase):
    def test_exact_divergence_is_the_jacobian_trace(self):
        w = jax.random.normal(jax.random.PRNGKey(0), (6, 6))
        f = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w).reshape(x.shape)  # noqa: E731
        x = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 3))
        fx, div = ode.divergence_exact(f, x)
        want = [jnp.trace(jax.jacfwd(lambda z: f(z[None])[0].reshape(-1))(x[b]).reshape(6, 6)) for b in range(4)]
        np.testing.assert_allclose(div, np.array(want), rtol=1e-5)
        np.testing.assert_allclose(fx, f(x))


class OdeLogLikelihoodTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.x = _MU + (np.random.default_rng(1).normal(size=(8, 3)) * _S) @ _R.T

    def test_exact_divergence_gives_the_gaussian_log_density(self):
        log_p, nfe = jax.jit(lambda x: ode.ode_log_likelihood(
            _ot_velocity, x, divergence="exact", solver="dopri5", rtol=1e-6, atol=1e-6))(jnp.asarray(self.x, jnp.float32))
        np.testing.assert_allclose(log_p, _analytic_log_prob(self.x), atol=1e-3)
        self.assertGreater(int(nfe), 6)

    def test_hutchinson_agrees_in_expectation(self):
        x = jnp.asarray(self.x, jnp.float32)

        def one_probe(key):
            return ode.ode_log_likelihood(_ot_velocity, x, divergence="hutchinson", key=key, num_probes=1,
                                          solver="dopri5", rtol=1e-6, atol=1e-6)[0]

        draws = np.asarray(jax.jit(jax.vmap(one_probe))(jax.random.split(jax.random.PRNGKey(0), 128)))  # [128, 8]
        analytic = _analytic_log_prob(self.x)
        spread = draws.std(axis=0)
        self.assertGreater(spread.min(), 0.01)  # one probe is noisy: the Jacobians are not diagonal
        stderr = spread / math.sqrt(draws.shape[0])
        # The mean of 128 single-probe estimates is within 4 standard errors (and 0.15 nats) of the truth.
        np.testing.assert_array_less(np.abs(draws.mean(axis=0) - analytic), 4 * stderr + 1e-3)
        np.testing.assert_array_less(np.abs(draws.mean(axis=0) - analytic), 0.15)

    def test_unknown_divergence_and_missing_key(self):
        with self.assertRaisesRegex(ValueError, "divergence 'trace' is unknown; known: exact, hutchinson"):
            ode.ode_log_likelihood(_ot_velocity, jnp.zeros((1, 3)), divergence="trace")
        with self.assertRaisesRegex(ValueError, "needs a key"):
            ode.ode_log_likelihood(_ot_velocity, jnp.zeros((1, 3)), divergence="hutchinson")


if __name__ == "__main__":
    absltest.main()
