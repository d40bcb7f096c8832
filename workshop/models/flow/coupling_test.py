"""Tests of the coupling layers and their masks (workshop.models.flow.coupling)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.models.flow.coupling import Coupling, coupling_mask
from workshop.models.flow.test_util import check_bijector, randomize_params

_SMALL = dict(hidden_channels=4, hidden_features=(8,), num_bins=4)


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), (2, *shape))


class MaskTest(absltest.TestCase):
    def test_checkerboard_image_mask(self):
        mask = coupling_mask((2, 3, 2), "checkerboard", 0)
        np.testing.assert_array_equal(mask[..., 0], [[1, 0, 1], [0, 1, 0]])
        np.testing.assert_array_equal(mask[..., 1], mask[..., 0])
        np.testing.assert_array_equal(coupling_mask((2, 3, 2), "checkerboard", 1), 1 - mask)

    def test_channel_and_vector_masks(self):
        np.testing.assert_array_equal(coupling_mask((1, 1, 4), "channel", 0)[0, 0], [1, 1, 0, 0])
        np.testing.assert_array_equal(coupling_mask((5,), "channel", 1), [0, 0, 1, 1, 1])
        np.testing.assert_array_equal(coupling_mask((5,), "checkerboard", 0), [1, 0, 1, 0, 1])

    def test_channel_mask_needs_two_channels(self):
        with self.assertRaisesRegex(ValueError, r"at least 2 .* \(4, 4, 1\)"):
            coupling_mask((4, 4, 1), "channel")

    def test_unknown_names_list_the_valid_ones(self):
        with self.assertRaisesRegex(ValueError, "checkerboard, channel"):
            coupling_mask((4,), "stripes")
        with self.assertRaisesRegex(ValueError, "affine, affine_sigmoid, additive, spline"):
            Coupling((4,), transform="quadratic", rngs=nnx.Rngs(0))


class CouplingTest(parameterized.TestCase):
    # Every transform on a vector and on an image, every mask type on both.
    @parameterized.parameters(
        ((3,), "checkerboard", "affine"), ((2, 2, 2), "channel", "affine"),
        ((4,), "channel", "additive"), ((2, 2, 1), "checkerboard", "additive"),
        ((3,), "checkerboard", "spline"), ((2, 2, 2), "channel", "spline"),
        ((2, 2, 2), "channel", "affine_sigmoid"),
    )
    def test_round_trip_log_det_and_kept_half(self, shape, mask_type, transform):
        # Moderate weights: steep splines lose float32 precision in the inverse.
        layer = randomize_params(Coupling(shape, mask_type, 1, transform, rngs=nnx.Rngs(0), **_SMALL), scale=0.25)
        x = _x(shape)
        z, _ = check_bijector(self, layer, x)
        mask = coupling_mask(shape, mask_type, 1)
        np.testing.assert_array_equal(z * mask, x * mask)
        self.assertGreater(float(jnp.max(jnp.abs((z - x) * (1 - mask)))), 1e-3, "transformed half did not change")

    def test_zero_initialised_layer_is_the_identity(self):
        layer = Coupling((2, 2, 2), "channel", 0, "affine", rngs=nnx.Rngs(0), **_SMALL)
        x = _x((2, 2, 2))
        z, log_det = layer.forward(x)
        np.testing.assert_allclose(z, x)
        np.testing.assert_allclose(log_det, 0.0)

    @parameterized.parameters(((4,),), ((2, 2, 2),))
    def test_conditioning_changes_the_map_and_still_inverts(self, shape):
        layer = randomize_params(Coupling(shape, "channel", 0, "affine", cond_features=3, rngs=nnx.Rngs(0),
                                          **_SMALL), scale=0.5)
        x = _x(shape)
        cond = jax.random.normal(jax.random.key(7), (2, 3))
        z, _ = check_bijector(self, layer, x, cond=cond)
        z_other, _ = layer.forward(x, cond=cond + 1.0)
        self.assertGreater(float(jnp.max(jnp.abs(z - z_other))), 1e-3)

    def test_wrong_event_shape_is_explained(self):
        layer = Coupling((4,), rngs=nnx.Rngs(0), **_SMALL)
        with self.assertRaisesRegex(ValueError, r"\(4,\).*\(2, 5\)"):
            layer.forward(jnp.zeros((2, 5)))

    def test_affine_scales_are_bounded(self):
        layer = randomize_params(Coupling((4,), "channel", 0, "affine", rngs=nnx.Rngs(0), **_SMALL), scale=50.0)
        z, log_det = layer.forward(100.0 * _x((4,)))
        self.assertTrue(bool(jnp.all(jnp.isfinite(z))) and bool(jnp.all(jnp.isfinite(log_det))))
        self.assertLessEqual(float(jnp.max(jnp.abs(log_det))), 2 * 3.0 + 1e-4)


if __name__ == "__main__":
    absltest.main()
