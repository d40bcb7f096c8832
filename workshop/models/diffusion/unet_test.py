"""Tests for the U-Net denoiser (workshop.models.diffusion.unet)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.diffusion.unet import UNet
from workshop.models.layers import SpatialSelfAttention


def _unet(**kw):
    args = dict(num_res_blocks=1, attention_resolutions=[4], height=7, num_heads=2)
    args.update(kw)
    return UNet(1, 1, (8, 16), rngs=nnx.Rngs(0), **args)


def _randomise_zero_inits(model):
    model.out_conv.kernel[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(9), model.out_conv.kernel.shape)
    for i, block in enumerate([*model.down, *model.middle, *model.up]):
        block.conv2.kernel[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(i), block.conv2.kernel.shape)
        if block.attention is not None:
            out = block.attention.attention.out.kernel
            out[...] = 0.1 * jax.random.normal(jax.random.PRNGKey(100 + i), out.shape)


class UNetTest(absltest.TestCase):
    def test_odd_sides_come_back_to_the_input_size(self):
        model = _unet()
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 1))
        out = nnx.jit(lambda m, x, t: m(x, t))(model, x, jnp.array([1.0, 2.0]))
        self.assertEqual(out.shape, (2, 7, 7, 1))
        np.testing.assert_array_equal(np.asarray(out), 0.0)  # zero-initialised output convolution

    def test_attention_only_at_the_chosen_resolutions(self):
        def count(model):
            return sum(isinstance(m, SpatialSelfAttention) for _, m in nnx.iter_graph(model))

        # Levels at 7 and 4: with attention at 4, one block down, two up, plus the middle block.
        self.assertEqual(count(_unet(attention_resolutions=[4])), 1 + 2 + 1)
        self.assertEqual(count(_unet(attention_resolutions=[7, 4])), 2 + 4 + 1)

    def test_output_depends_on_time_label_and_input(self):
        model = _unet(num_classes=3)
        _randomise_zero_inits(model)
        run = nnx.jit(lambda m, x, t, y: m(x, t, y))
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 1))
        t = jnp.array([3.0, 300.0])
        a = run(model, x, t, jnp.array([0, 1]))
        self.assertGreater(float(jnp.abs(a - run(model, x, t[::-1], jnp.array([0, 1]))).max()), 1e-4)
        c = run(model, x, t, jnp.array([2, 1]))
        self.assertGreater(float(jnp.abs(a[0] - c[0]).max()), 1e-4)
        np.testing.assert_allclose(a[1], c[1], atol=1e-5)  # example 1 kept its label
        self.assertGreater(float(jnp.abs(a - run(model, x * 0.5, t, jnp.array([0, 1]))).max()), 1e-4)

    def test_gradients_reach_every_parameter(self):
        model = _unet(num_classes=2)
        _randomise_zero_inits(model)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 1))
        graphdef, params = nnx.split(model, nnx.Param)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x, jnp.array([1.0, 2.0]), jnp.array([0, 1])) ** 2)  # noqa: E731
        grads = jax.jit(jax.grad(loss))(params)
        leaves = jax.tree_util.tree_leaves_with_path(grads)
        dead = [jax.tree_util.keystr(path) for path, g in leaves if float(jnp.abs(g).max()) == 0.0]
        # The null-label row of the class table gets no gradient from labels 0 and 1.
        self.assertEqual(dead, [], dead)


if __name__ == "__main__":
    absltest.main()
