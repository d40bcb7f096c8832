"""Tests of the rational-quadratic spline (workshop.models.flow.spline)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.flow.spline import num_spline_params, rational_quadratic_spline

_K, _B = 5, 3.0
_N = 256  # one array size throughout: each jitted shape compiles once
_spline = jax.jit(rational_quadratic_spline, static_argnames=("inverse", "tail_bound"))


def _params(seed, shape, scale=0.7):
    return scale * jax.random.normal(jax.random.key(seed), (*shape, num_spline_params(_K)))


class SplineTest(parameterized.TestCase):
    def test_zero_params_is_identity(self):
        x = jnp.linspace(-5.0, 5.0, _N)
        y, log_det = _spline(x, jnp.zeros((_N, num_spline_params(_K))), tail_bound=_B)
        np.testing.assert_allclose(y, x, atol=1e-5)
        np.testing.assert_allclose(log_det, 0.0, atol=1e-5)

    @parameterized.parameters(0, 1, 2)
    def test_monotone_and_maps_interval_onto_itself(self, seed):
        x = jnp.linspace(-_B - 1.0, _B + 1.0, _N).at[:2].set(jnp.array([-_B, _B]))
        params = jnp.broadcast_to(_params(seed, ()), (_N, num_spline_params(_K)))
        y, _ = _spline(x, params, tail_bound=_B)
        np.testing.assert_allclose(y[:2], [-_B, _B], atol=1e-5)
        self.assertTrue(bool(jnp.all(jnp.diff(y[2:]) > 0)), "spline is not strictly increasing")

    @parameterized.parameters(0, 1)
    def test_log_det_matches_finite_differences(self, seed):
        x = jnp.linspace(-_B + 0.05, _B - 0.05, _N)
        params = _params(seed, (_N,))
        h = 1e-3
        _, log_det = _spline(x, params, tail_bound=_B)
        y_plus, _ = _spline(x + h, params, tail_bound=_B)
        y_minus, _ = _spline(x - h, params, tail_bound=_B)
        finite = (y_plus - y_minus) / (2 * h)
        np.testing.assert_allclose(jnp.exp(log_det), finite, rtol=1e-2, atol=1e-3)
        autodiff = jax.jit(jax.vmap(jax.grad(lambda v, p: rational_quadratic_spline(v, p, tail_bound=_B)[0])))(
            x, params)
        np.testing.assert_allclose(jnp.exp(log_det), autodiff, rtol=1e-4)

    @parameterized.parameters(0, 1, 2)
    def test_inverse_round_trip_and_log_det(self, seed):
        x = jax.random.uniform(jax.random.key(10 + seed), (_N,), minval=-4.0, maxval=4.0)
        params = _params(seed, (_N,))
        y, log_det = _spline(x, params, tail_bound=_B)
        x_back, inv_log_det = _spline(y, params, inverse=True, tail_bound=_B)
        np.testing.assert_allclose(x_back, x, atol=1e-5)
        np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)

    def test_tails_are_identity(self):
        x = jnp.concatenate([jnp.linspace(-10.0, -3.01, _N // 2), jnp.linspace(3.01, 10.0, _N // 2)])
        y, log_det = _spline(x, _params(0, (_N,)), tail_bound=_B)
        np.testing.assert_allclose(y, x)
        np.testing.assert_allclose(log_det, 0.0)

    def test_gradients_are_finite_everywhere(self):
        x = jnp.linspace(-6.0, 6.0, _N)
        grads = jax.jit(jax.grad(lambda p: jnp.sum(rational_quadratic_spline(x, p, tail_bound=_B)[1])))(
            _params(0, (_N,)))
        self.assertTrue(bool(jnp.all(jnp.isfinite(grads))))

    def test_bad_param_count_is_explained(self):
        with self.assertRaisesRegex(ValueError, "3K-1"):
            rational_quadratic_spline(jnp.zeros(3), jnp.zeros((3, 7)))

    def test_jit_matches_eager(self):
        x, params = jnp.linspace(-2.0, 2.0, 4), _params(3, (4,))
        eager = rational_quadratic_spline(x, params)
        jitted = _spline(x, params)
        np.testing.assert_allclose(jitted[0], eager[0], atol=1e-6)
        np.testing.assert_allclose(jitted[1], eager[1], atol=1e-6)


if __name__ == "__main__":
    absltest.main()
