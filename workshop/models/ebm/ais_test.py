"""AIS log Z against closed forms and numerical integration."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.models.ebm import ais

_MEAN = np.array([1.5, -0.5], np.float32)
_COV = np.array([[0.5, 0.2], [0.2, 0.3]], np.float32)
_PRECISION = np.linalg.inv(_COV).astype(np.float32)
_OFFSET = 3.0


def _gaussian_energy(x):
    d = x - _MEAN
    return 0.5 * jnp.einsum("bi,ij,bj->b", d, _PRECISION, d) + _OFFSET


def _gaussian_log_z():
    return math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(_COV.astype(np.float64))) - _OFFSET


def _double_well(x):
    """Two modes at x1 = +-1.5, correlated with x2: not a Gaussian, not separable."""
    return 2.0 * (x[:, 0] ** 2 - 2.25) ** 2 / 2.25 + 0.5 * (x[:, 1] - 0.5 * x[:, 0]) ** 2 / 0.4


def _grid_log_z(energy, extent=6.0, n=1201):
    t = np.linspace(-extent, extent, n)
    xx, yy = np.meshgrid(t, t, indexing="ij")
    e = np.asarray(energy(jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)), np.float64)
    return float(np.log(np.sum(np.exp(-e)) * (t[1] - t[0]) ** 2))


class AISTest(parameterized.TestCase):
    @parameterized.parameters("hmc", "mala")
    def test_gaussian_log_z_within_reported_error(self, transition):
        result = ais.annealed_importance_sampling(
            _gaussian_energy, (2,), key=jax.random.PRNGKey(0), num_chains=512, num_temperatures=100,
            base_std=2.0, transition=transition, step_size=0.3 if transition == "hmc" else 0.1,
        )
        err = abs(float(result.log_z) - _gaussian_log_z())
        self.assertGreater(float(result.stderr), 0.0)
        self.assertLess(float(result.stderr), 0.1)
        self.assertLess(err, 4 * float(result.stderr), (float(result.log_z), _gaussian_log_z(), float(result.stderr)))

    def test_double_well_matches_numerical_integration(self):
        truth = _grid_log_z(_double_well)
        result = ais.annealed_importance_sampling(
            _double_well, (2,), key=jax.random.PRNGKey(1), num_chains=512, num_temperatures=200, base_std=2.0,
            step_size=0.2,
        )
        self.assertLess(abs(float(result.log_z) - truth), max(4 * float(result.stderr), 0.02))
        self.assertLess(float(result.stderr), 0.05)
        # The final chains cover both wells about equally (the energy is symmetric in x -> -x).
        share_right = float(jnp.mean(result.samples[:, 0] > 0))
        self.assertBetween(share_right, 0.4, 0.6)

    def test_annealing_beats_plain_importance_sampling(self):
        """T = 1 is importance sampling from the base: its reported error must be much larger."""
        kwargs = dict(key=jax.random.PRNGKey(2), num_chains=512, base_std=3.0, step_size=0.3)
        plain = ais.annealed_importance_sampling(_gaussian_energy, (2,), num_temperatures=1, **kwargs)
        annealed = ais.annealed_importance_sampling(_gaussian_energy, (2,), num_temperatures=100, **kwargs)
        self.assertGreater(float(plain.stderr), 3 * float(annealed.stderr))

    def test_schedule_and_bad_input(self):
        betas = ais.sigmoid_schedule(10)
        self.assertEqual(betas.shape, (11,))
        self.assertEqual(float(betas[0]), 0.0)
        self.assertAlmostEqual(float(betas[-1]), 1.0, places=6)
        self.assertTrue(bool(jnp.all(jnp.diff(betas) > 0)))
        key = jax.random.PRNGKey(0)
        with self.assertRaisesRegex(ValueError, "num_temperatures must be a positive integer, got 0"):
            ais.annealed_importance_sampling(_gaussian_energy, (2,), key=key, num_chains=4, num_temperatures=0)
        with self.assertRaisesRegex(ValueError, "base_std must be positive"):
            ais.annealed_importance_sampling(_gaussian_energy, (2,), key=key, num_chains=4, num_temperatures=2,
                                             base_std=0.0)
        with self.assertRaisesRegex(ValueError, "transition 'langevin' is unknown; known: hmc, mala"):
            ais.annealed_importance_sampling(_gaussian_energy, (2,), key=key, num_chains=4, num_temperatures=2,
                                             transition="langevin")


if __name__ == "__main__":
    absltest.main()
