"""Tests for inpainting (workshop.models.diffusion.inpainting)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.diffusion import DDPM
from workshop.models.diffusion.inpainting import inpaint


def _model():
    model = DDPM(ModelConfiguration(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=40, backbone_type="dit",
                                    parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2,
                                                    sampling_steps=8)),
                 rngs=nnx.Rngs(0))
    model.backbone.final_linear.kernel[...] = 0.2 * jax.random.normal(
        jax.random.PRNGKey(0), model.backbone.final_linear.kernel.shape)
    return model


class InpaintingTest(absltest.TestCase):
    def test_known_pixels_are_kept_exactly(self):
        model = _model()
        images = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 8, 1))
        mask = jnp.zeros((8, 8)).at[:, :4].set(1.0)  # left half known
        run = nnx.jit(lambda m, x, r, s: inpaint(m, x, mask, rngs=nnx.Rngs(2), resample_steps=r, sampler=s),
                      static_argnums=(2, 3))
        for r, sampler in ((1, "ddpm"), (3, "ddpm"), (2, "ddim")):
            out = np.asarray(run(model, images, r, sampler))
            np.testing.assert_array_equal(out[:, :, :4], np.asarray(images)[:, :, :4])
            # The unknown half is generated, not copied.
            self.assertGreater(np.abs(out[:, :, 4:] - np.asarray(images)[:, :, 4:]).mean(), 0.05)
            self.assertTrue(np.all((out >= 0) & (out <= 1)))

    def test_bad_mask_and_sampler(self):
        model = _model()
        images = jnp.zeros((2, 8, 8, 1))
        with self.assertRaisesRegex(ValueError, r"mask of shape \(7, 8\) does not fit images of shape \(2, 8, 8, 1\)"):
            inpaint(model, images, jnp.ones((7, 8)), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "sampler 'heun' is not supported; known: ddpm, ddim"):
            inpaint(model, images, jnp.ones((8, 8)), rngs=nnx.Rngs(0), sampler="heun")
        with self.assertRaisesRegex(ValueError, "resample_steps must be >= 1"):
            inpaint(model, images, jnp.ones((8, 8)), rngs=nnx.Rngs(0), resample_steps=0)
        with self.assertRaisesRegex(ValueError, "steps=41 exceeds num_timesteps=40"):
            inpaint(model, images, jnp.ones((8, 8)), rngs=nnx.Rngs(0), steps=41)


if __name__ == "__main__":
    absltest.main()
