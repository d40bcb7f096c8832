"""Products of EBMs: energies add, conditional parts take their labels, the product samples correctly."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.ebm import EBM, ProductOfEBMs


def _ebm(seed, input_shape=(2,), features=(8,), **parameters):
    params = {**dict(buffer_size=0, init_range=(-2.0, 2.0), prior_std=1.5), **parameters}
    config = ModelConfiguration(model_type="ebm", input_shape=input_shape, encoder_features=list(features),
                                backbone_type="mlp", parameters=params)
    return EBM(config, rngs=nnx.Rngs(seed))


def _gaussian(w, prior_std):
    """E(x) = w.x + |x|^2 / (2 s^2), i.e. N(-s^2 w, s^2 I) (no hidden layer)."""
    model = _ebm(0, features=(), prior_std=prior_std)
    model.network.head.layers[0].kernel[...] = jnp.asarray(w, jnp.float32).reshape(2, 1)
    model.network.head.layers[0].bias[...] = jnp.zeros((1,))
    return model


class ProductTest(absltest.TestCase):
    def test_energy_is_the_weighted_sum_of_the_parts(self):
        a, b = _ebm(1), _ebm(2)
        conditional = _ebm(3, num_classes=4)
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
        product = ProductOfEBMs([a, b, conditional], labels=[None, None, 2], weights=[1.0, 0.5, 2.0])
        expected = a.energy(x) + 0.5 * b.energy(x) + 2.0 * conditional.energy(x, jnp.full((5,), 2))
        np.testing.assert_allclose(product.energy(x), expected, rtol=1e-6)
        # The label matters: another class gives another energy.
        other = ProductOfEBMs([a, b, conditional], labels=[None, None, 0], weights=[1.0, 0.5, 2.0])
        self.assertGreater(float(jnp.max(jnp.abs(other.energy(x) - product.energy(x)))), 1e-4)
        # Products nest: (a * b) * c has the energy of a * b * c.
        nested = ProductOfEBMs([ProductOfEBMs([a, b]), conditional], labels=[None, 2])
        flat = ProductOfEBMs([a, b, conditional], labels=[None, None, 2])
        np.testing.assert_allclose(nested.energy(x), flat.energy(x), rtol=1e-6)

    def test_product_of_gaussians_is_sampled_exactly(self):
        """N(m1, s1^2) N(m2, s2^2) is N(m, s^2) with 1/s^2 = 1/s1^2 + 1/s2^2, m = s^2 (m1/s1^2 + m2/s2^2)."""
        s1, s2 = 1.0, 0.5
        w1, w2 = np.array([1.0, 0.0]), np.array([0.0, -4.0])  # means -s^2 w: (-1, 0) and (0, 1)
        product = ProductOfEBMs([_gaussian(w1, s1), _gaussian(w2, s2)])
        var = 1.0 / (1 / s1**2 + 1 / s2**2)
        mean = var * (-w1 - w2)
        run = nnx.jit(lambda p, k: p.generate(n_samples=2000, rngs=nnx.Rngs(k), num_steps=100, step_size=0.3,
                                               sampler="mala", init_range=(-2.0, 2.0)))
        x = np.asarray(run(product, jax.random.PRNGKey(0)))
        np.testing.assert_allclose(x.mean(0), mean, atol=0.05)
        np.testing.assert_allclose(np.cov(x.T), var * np.eye(2), atol=0.05)

    def test_bad_compositions(self):
        with self.assertRaisesRegex(ValueError, r"cannot compose EBMs of different input shapes "
                                                r"\(component 0: \(2,\), component 1: \(3,\)\)"):
            ProductOfEBMs([_ebm(0), _ebm(1, input_shape=(3,))])
        with self.assertRaisesRegex(ValueError, "labels has 1 entries for 2 components"):
            ProductOfEBMs([_ebm(0), _ebm(1)], labels=[None])
        with self.assertRaisesRegex(ValueError, "labels are required"):
            ProductOfEBMs([_ebm(0, num_classes=3)]).energy(jnp.zeros((2, 2)))
        with self.assertRaisesRegex(ValueError, "at least one component"):
            ProductOfEBMs([])
        with self.assertRaisesRegex(ValueError, "weights must be positive"):
            ProductOfEBMs([_ebm(0)], weights=[0.0])


if __name__ == "__main__":
    absltest.main()
