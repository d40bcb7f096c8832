"""The variational bound's pieces against closed forms (workshop.models.diffusion.vlb)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from workshop.models.diffusion import vlb
from workshop.models.diffusion.schedules import make_schedule


class VLBTest(absltest.TestCase):
    def test_discretized_gaussian_sums_to_one_over_the_256_bins(self):
        grid = (2.0 * jnp.arange(256.0) / 255.0 - 1.0)[None, :]
        for mean, std in ((0.1, 0.3), (-0.99, 0.01), (1.2, 0.004), (0.0, 1e-3)):
            logp = vlb.discretized_gaussian_log_likelihood(grid, jnp.full_like(grid, mean), std)
            np.testing.assert_allclose(float(jnp.sum(jnp.exp(logp))), 1.0, rtol=1e-4)
        # A narrow Gaussian centred in a bin puts ~all its mass there (finite, no log(0)).
        logp = vlb.discretized_gaussian_log_likelihood(grid, grid, 2e-4)
        self.assertTrue(bool(jnp.all(jnp.isfinite(logp))))
        np.testing.assert_allclose(np.asarray(logp), 0.0, atol=1e-6)

    def test_prior_kl_closed_form(self):
        sched = make_schedule("linear", 10)
        abar = sched.alpha_bars[-1]
        x0 = jnp.array([[0.5, -1.0]])
        expected = sum(0.5 * (abar * v * v + (1 - abar) - 1 - math.log(1 - abar)) for v in (0.5, -1.0))
        np.testing.assert_allclose(float(vlb.prior_kl(sched, x0)[0]), expected, rtol=1e-5)

    def test_stratified_estimate_is_unbiased(self):
        """Averaged over keys, K-timestep estimates match the exact T-1-term sum."""
        sched = make_schedule("linear", 20)
        x0 = jnp.array([[0.2, -0.6, 0.9]])

        def predict_x0(x_t, t):  # a deliberately imperfect denoiser
            alpha, sigma = sched.alpha_sigma(t)
            return 0.8 * x_t / alpha[:, None]

        def mean_bound(k):
            keys = jax.random.split(jax.random.PRNGKey(0), 4000)
            f = jax.vmap(lambda key: vlb.variational_bound(predict_x0, sched, x0, key, num_samples=k)[0])
            return float(jnp.mean(jax.jit(f)(keys)))

        exact = mean_bound(None)
        np.testing.assert_allclose(mean_bound(3), exact, rtol=0.02)
        np.testing.assert_allclose(mean_bound(19), exact, rtol=1e-6)  # K = T-1 is the full sum


if __name__ == "__main__":
    absltest.main()
