"""Tests for workshop.models.vae.vector_quantizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.models.vae.vector_quantizer import CodebookEMA, VectorQuantizer

_CODEBOOK = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)


def _quantizer(ema_decay=0.9, codebook=_CODEBOOK, **kwargs):
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], ema_decay=ema_decay, rngs=nnx.Rngs(0), **kwargs)
    vq.codebook[...] = jnp.asarray(codebook)
    if ema_decay is not None:
        vq.ema_embedding_sum[...] = jnp.asarray(codebook)
    return vq


class VectorQuantizerTest(parameterized.TestCase):
    def test_nearest_codes_and_losses_by_hand(self):
        # (0.1, 0.2) is nearest code 0 (squared distance 0.05); (0.9, 1.3) code 1 (0.10);
        # (-0.8, 1.5) code 2 (0.04 + 0.25 = 0.29).
        z_e = jnp.array([[[0.1, 0.2], [0.9, 1.3]], [[-0.8, 1.5], [0.0, 0.0]]])
        for ema_decay, codebook_term in ((None, 1.0), (0.9, 0.0)):
            out = _quantizer(ema_decay, commitment_cost=0.25)(z_e, use_running_average=True)
            np.testing.assert_array_equal(out["indices"], [[0, 1], [2, 0]])
            np.testing.assert_allclose(out["quantized"], _CODEBOOK[np.array([[0, 1], [2, 0]])], atol=1e-7)
            np.testing.assert_allclose(out["codebook_loss"], [0.15, 0.29], rtol=1e-5)
            np.testing.assert_allclose(out["commitment_loss"], [0.15, 0.29], rtol=1e-5)
            np.testing.assert_allclose(out["loss"], np.array([0.15, 0.29]) * (codebook_term + 0.25), rtol=1e-5)

    def test_straight_through_gradient(self):
        vq = VectorQuantizer(5, 3, ema_decay=None, rngs=nnx.Rngs(0))
        z_e = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3))
        w = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 3))
        grad = jax.grad(lambda z: jnp.sum(vq(z)["quantized"] * w))(z_e)
        np.testing.assert_allclose(grad, w, rtol=1e-6)

    def test_codebook_loss_moves_only_used_codes_and_commitment_only_the_encoder(self):
        vq = _quantizer(None)
        z_e = jnp.array([[[0.1, 0.2], [0.9, 1.3]]])
        graphdef, params, rest = nnx.split(vq, nnx.Param, ...)

        def codebook_loss(params, z):
            return nnx.merge(graphdef, params, rest)(z)["codebook_loss"].sum()

        g_codebook = jax.grad(codebook_loss)(params, z_e)["codebook"][...]
        # d/de ||z - e||^2 = 2 (e - z) for the used codes, 0 for the unused code 2.
        np.testing.assert_allclose(g_codebook, [[-0.2, -0.4], [0.2, -0.6], [0.0, 0.0]], atol=1e-6)
        self.assertEqual(float(jnp.abs(jax.grad(codebook_loss, argnums=1)(params, z_e)).max()), 0.0)
        commitment = lambda p, z: nnx.merge(graphdef, p, rest)(z)["commitment_loss"].sum()  # noqa: E731
        self.assertEqual(float(jnp.abs(jax.grad(commitment)(params, z_e)["codebook"][...]).max()), 0.0)
        np.testing.assert_allclose(jax.grad(commitment, argnums=1)(params, z_e), 2 * (z_e - _CODEBOOK[None, :2]),
                                   atol=1e-6)

    def test_one_ema_step_by_hand(self):
        decay, eps = 0.9, 1e-5
        vq = _quantizer(decay, epsilon=eps)
        vq.ema_cluster_size[...] = jnp.array([2.0, 1.0, 0.0])
        z_e = jnp.array([[[0.2, 0.0], [0.0, 0.4]], [[1.0, 1.4], [-1.0, 1.0]]])  # codes 0, 0, 1, 2
        out = vq(z_e)
        np.testing.assert_array_equal(out["indices"], [[0, 0], [1, 2]])
        # Cluster sizes: 0.9 * [2, 1, 0] + 0.1 * [2, 1, 1] = [2.0, 1.0, 0.1].
        n = np.array([2.0, 1.0, 0.1])
        # Sums: 0.9 * old codebook + 0.1 * [[0.2, 0.4], [1.0, 1.4], [-1.0, 1.0]].
        m = 0.9 * _CODEBOOK + 0.1 * np.array([[0.2, 0.4], [1.0, 1.4], [-1.0, 1.0]])
        total = 3.1
        smoothed = (n + eps) / (total + 3 * eps) * total
        np.testing.assert_allclose(vq.ema_cluster_size[...], n, rtol=1e-6)
        np.testing.assert_allclose(vq.ema_embedding_sum[...], m, rtol=1e-6)
        np.testing.assert_allclose(vq.codebook[...], m / smoothed[:, None], rtol=1e-5)
        np.testing.assert_allclose(vq.codebook[...][0], [0.01, 0.02], rtol=1e-3)  # m_0 = (0.02, 0.04), N_0 = 2
        # The outputs of the call used the codebook from before the update.
        np.testing.assert_allclose(out["quantized"][1, 0], _CODEBOOK[1], atol=1e-7)

    def test_frozen_statistics_do_not_change(self):
        vq = _quantizer(0.9)
        vq.eval()
        self.assertTrue(vq.use_running_average)
        vq(jnp.ones((2, 3, 2)))
        np.testing.assert_array_equal(vq.codebook[...], _CODEBOOK)
        np.testing.assert_array_equal(vq.ema_cluster_size[...], np.zeros(3))
        vq.train()
        vq(jnp.ones((2, 3, 2)))
        self.assertFalse(np.allclose(vq.codebook[...], _CODEBOOK))

    def test_ema_state_is_not_a_param(self):
        ema = VectorQuantizer(4, 2, ema_decay=0.99, rngs=nnx.Rngs(0))
        self.assertEmpty(jax.tree.leaves(nnx.state(ema, nnx.Param)))
        self.assertLen(jax.tree.leaves(nnx.state(ema, CodebookEMA)), 3)
        learned = VectorQuantizer(4, 2, ema_decay=None, rngs=nnx.Rngs(0))
        self.assertLen(jax.tree.leaves(nnx.state(learned, nnx.Param)), 1)
        with self.assertRaisesRegex(ValueError, "ema_decay"):
            VectorQuantizer(4, 2, ema_decay=1.0, rngs=nnx.Rngs(0))

    @parameterized.parameters(1, 3, 8)
    def test_perplexity_of_uniform_assignment_is_k(self, k):
        codebook = np.stack([np.arange(k, dtype=np.float32) * 3.0, np.zeros(k, np.float32)], axis=1)
        vq = _quantizer(None, codebook=codebook)
        z_e = jnp.asarray(np.tile(codebook, (2, 1)))[None]  # every code twice
        self.assertAlmostEqual(float(vq(z_e)["perplexity"]), k, places=3)

    def test_perplexity_of_one_code_is_one(self):
        vq = _quantizer(None)
        self.assertAlmostEqual(float(vq(jnp.zeros((4, 5, 2)))["perplexity"]), 1.0, places=5)

    def test_entropy_formula(self):
        vq = _quantizer(None)
        z_e = jnp.asarray(_CODEBOOK[np.array([0, 0, 0, 1])])[None]  # usage (3/4, 1/4)
        expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
        self.assertAlmostEqual(float(vq(z_e)["perplexity"]), expected, places=4)


if __name__ == "__main__":
    absltest.main()
