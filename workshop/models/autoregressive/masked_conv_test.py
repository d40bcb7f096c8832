"""Masks of MaskedConv2D, and the blind spot of stacked masked kernels that the gated layer removes."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.autoregressive.masked_conv import GatedMaskedConv2D, MaskedConv2D, autoregressive_mask

_SIZE = 7


def _dependence(fn, in_features: int) -> np.ndarray:
    """|d out[center pixel] / d x| summed over features: `[H, W]` for the centre output."""
    x = jax.random.normal(jax.random.key(0), (1, _SIZE, _SIZE, in_features))
    c = _SIZE // 2
    grad = jax.jit(jax.grad(lambda x: jnp.sum(fn(x)[0, c, c])))(x)
    return np.abs(np.asarray(grad[0])).sum(-1)


def _previous_pixels(c: int) -> np.ndarray:
    idx = np.arange(_SIZE * _SIZE).reshape(_SIZE, _SIZE)
    return idx < c * _SIZE + c


class MaskTest(absltest.TestCase):
    def test_spatial_and_channel_rules(self):
        a = autoregressive_mask((3, 3), 3, 6, mask_type="A", num_channels=3)
        b = autoregressive_mask((3, 3), 3, 6, mask_type="B", num_channels=3)
        np.testing.assert_array_equal(a[0], 1.0)  # the row above is open
        np.testing.assert_array_equal(a[1, 0], 1.0)  # the pixel to the left is open
        np.testing.assert_array_equal(a[1, 2], 0.0)  # the pixel to the right is closed
        np.testing.assert_array_equal(a[2], 0.0)  # the row below is closed
        # Centre: output features 0..5 are groups R, G, B, R, G, B.
        expected_a = np.array([[0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32)
        np.testing.assert_array_equal(a[1, 1], expected_a)
        np.testing.assert_array_equal(b[1, 1], expected_a + np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0],
                                                                       [0, 0, 1, 0, 0, 1]], np.float32))

    def test_unknown_mask_type_is_refused(self):
        with self.assertRaisesRegex(ValueError, "'C'"):
            autoregressive_mask((3, 3), 1, 1, mask_type="C")


class BlindSpotTest(absltest.TestCase):
    def test_stacked_masked_convs_have_a_blind_spot(self):
        rngs = nnx.Rngs(0)
        layers = [MaskedConv2D(1, 8, 3, mask_type="A", rngs=rngs)] + [
            MaskedConv2D(8, 8, 3, mask_type="B", rngs=rngs) for _ in range(3)
        ]

        def stack(x):
            for layer in layers:
                x = jnp.tanh(layer(x))
            return x

        dep = _dependence(stack, 1) > 0
        previous = _previous_pixels(_SIZE // 2)
        self.assertFalse((dep & ~previous).any(), "masked stack saw a future pixel")
        # PixelCNN's blind spot (van den Oord et al. 2016b, fig. 1): pixels above
        # and to the right of the centre are previous but never seen.
        blind = previous & ~dep
        self.assertTrue(blind.any())
        self.assertTrue(blind[_SIZE // 2 - 1, -1])

    def test_gated_stacks_see_every_previous_pixel(self):
        rngs = nnx.Rngs(0)
        layers = [GatedMaskedConv2D(1, 8, 3, mask_type="A", rngs=rngs)] + [
            GatedMaskedConv2D(8, 8, 3, mask_type="B", rngs=rngs) for _ in range(3)
        ]

        def stack(x):
            v = h = x
            for layer in layers:
                v, h = layer(v, h)
            return h

        dep = _dependence(stack, 1) > 0
        np.testing.assert_array_equal(dep, _previous_pixels(_SIZE // 2))


if __name__ == "__main__":
    absltest.main()
