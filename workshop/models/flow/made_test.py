"""Tests of MADE and the autoregressive layers (workshop.models.flow.made)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.models.flow.made import MADE, AutoregressiveLayer, made_masks
from workshop.models.flow.test_util import check_bijector, randomize_params

_D = 5


class MADETest(parameterized.TestCase):
    @parameterized.parameters(((16,), 0), ((16, 12), 3))
    def test_jacobian_is_strictly_lower_triangular(self, hidden, cond_features):
        made = randomize_params(MADE(_D, hidden, 2, cond_features, rngs=nnx.Rngs(0)), scale=0.5)
        cond = jnp.ones((1, cond_features)) if cond_features else None
        x = jax.random.normal(jax.random.key(1), (_D,))
        jac = jax.jacfwd(lambda v: made(v[None], cond)[0])(x)  # [D, P, D]: output (i, p) wrt input j
        dependence = np.asarray(jnp.max(jnp.abs(jac), axis=1))
        np.testing.assert_array_equal(np.triu(dependence), 0.0)  # output i never sees inputs >= i
        self.assertTrue(np.all(dependence[np.tril_indices(_D, -1)] > 0), "a permitted connection is missing")

    def test_masks_connect_every_output_to_all_earlier_inputs(self):
        masks = made_masks(4, [6, 6], 1)
        connectivity = masks[0]
        for m in masks[1:]:
            connectivity = (connectivity @ m > 0).astype(np.float32)
        np.testing.assert_array_equal(connectivity, np.tril(np.ones((4, 4)), -1).T)

    @parameterized.parameters(((128, 128),), ((128, 64),), ((40,),))
    def test_narrow_hidden_layers_still_reach_every_earlier_input(self, hidden):
        """Default image sizes (D = 784) with hidden widths below D - 1, checked by the Jacobian."""
        d = 784
        made = MADE(d, hidden, 1, rngs=nnx.Rngs(0))
        # Positive weights and inputs keep every ReLU active, so a zero in the
        # Jacobian is a missing connection, not a dead unit.
        params = nnx.state(made, nnx.Param)
        keys = jax.random.split(jax.random.key(0), len(jax.tree.leaves(params)))
        nnx.update(made, jax.tree.unflatten(jax.tree.structure(params), [
            jnp.abs(jax.random.normal(k, p.shape)) + 0.1 for p, k in zip(jax.tree.leaves(params), keys)]))
        x = jax.random.uniform(jax.random.key(1), (d,), minval=0.5, maxval=1.0)
        jac = np.asarray(jax.jit(jax.jacfwd(lambda v: made(v[None])[0, :, 0]))(x))  # [out i, in j]
        seen = jac != 0
        np.testing.assert_array_equal(np.triu(seen), False)  # output i never sees inputs >= i
        reach = seen.sum(axis=1)  # each row must see a prefix 0..reach-1 of the inputs
        np.testing.assert_array_equal(seen, np.arange(d)[None, :] < reach[:, None])
        self.assertEqual(reach[-1], d - 1, "the last output must see all its predecessors")
        # Each layer's evenly spaced degrees lose at most ceil((D - 1) / width) on the way.
        max_gap = sum(-(-(d - 1) // h) for h in hidden)
        self.assertLessEqual(int(np.max(np.arange(d) - reach)), max_gap)

    def test_empty_hidden_layers_are_refused(self):
        with self.assertRaisesRegex(ValueError, "hidden"):
            MADE(3, [], 2, rngs=nnx.Rngs(0))


class AutoregressiveLayerTest(parameterized.TestCase):
    @parameterized.product(transform=("affine", "spline"), inverted=(False, True))
    def test_round_trip_and_log_det(self, transform, inverted):
        layer = randomize_params(AutoregressiveLayer(_D, transform, hidden_features=(16,), num_bins=4,
                                                     inverted=inverted, rngs=nnx.Rngs(0)), scale=0.4)
        check_bijector(self, layer, jax.random.normal(jax.random.key(2), (3, _D)))

    def test_conditioned_layer_round_trip(self):
        layer = randomize_params(AutoregressiveLayer(_D, "affine", hidden_features=(16,), cond_features=2,
                                                     rngs=nnx.Rngs(0)), scale=0.4)
        cond = jnp.array([[1.0, -1.0], [0.5, 2.0]])
        check_bijector(self, layer, jax.random.normal(jax.random.key(3), (2, _D)), cond=cond)

    def test_iaf_samples_in_one_pass_as_maf_evaluates(self):
        maf = randomize_params(AutoregressiveLayer(_D, "affine", hidden_features=(16,), rngs=nnx.Rngs(0)))
        iaf = AutoregressiveLayer(_D, "affine", hidden_features=(16,), inverted=True, rngs=nnx.Rngs(0))
        nnx.update(iaf, nnx.state(maf, nnx.Param))
        u = jax.random.normal(jax.random.key(4), (3, _D))
        np.testing.assert_allclose(iaf.inverse(u)[0], maf.forward(u)[0], atol=1e-6)

    def test_additive_is_refused(self):
        with self.assertRaisesRegex(ValueError, "affine' or 'spline"):
            AutoregressiveLayer(_D, "additive", rngs=nnx.Rngs(0))


if __name__ == "__main__":
    absltest.main()
