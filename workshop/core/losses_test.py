"""Tests for workshop.core.losses against closed forms and numeric integrals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.core import losses


def _log_sigmoid64(v):
    v = np.asarray(v, np.float64)
    return -np.logaddexp(0.0, -v)


def _grid_kl(mq, vq, mp, vp):
    """KL(q || p) of two 1-D Gaussians by the trapezoid rule on a fine grid."""
    z = np.linspace(-30.0, 30.0, 600_001)
    log_q = -0.5 * (np.log(2 * np.pi * vq) + (z - mq) ** 2 / vq)
    log_p = -0.5 * (np.log(2 * np.pi * vp) + (z - mp) ** 2 / vp)
    return np.trapezoid(np.exp(log_q) * (log_q - log_p), z)


class SumExceptBatchTest(absltest.TestCase):
    def test_sums_all_but_first_axis(self):
        x = jnp.arange(24.0).reshape(2, 3, 4)
        np.testing.assert_allclose(losses.sum_except_batch(x), [66.0, 210.0])
        np.testing.assert_allclose(losses.sum_except_batch(jnp.array([1.0, 2.0])), [1.0, 2.0])
        self.assertEqual(losses.sum_except_batch(x.astype(jnp.bfloat16)).dtype, jnp.float32)

    def test_scalar_is_refused(self):
        with self.assertRaisesRegex(ValueError, "batch axis"):
            losses.sum_except_batch(jnp.float32(1.0))


class BernoulliTest(absltest.TestCase):
    def test_matches_log_sigmoid_by_hand(self):
        logits = np.array([[-3.0, -0.5, 0.0, 0.7, 4.0], [1.0, 2.0, -2.0, 0.1, -0.1]], np.float32)
        x = np.array([[0.0, 1.0, 1.0, 0.0, 1.0], [0.25, 0.5, 1.0, 0.0, 0.9]], np.float32)
        expected = (x * _log_sigmoid64(logits) + (1 - x) * _log_sigmoid64(-logits)).sum(-1)
        np.testing.assert_allclose(losses.bernoulli_log_likelihood(logits, x), expected, rtol=1e-6)

    def test_stable_for_extreme_logits(self):
        logits = jnp.array([[100.0], [100.0], [-100.0], [-100.0]])
        x = jnp.array([[1.0], [0.0], [1.0], [0.0]])
        np.testing.assert_allclose(losses.bernoulli_log_likelihood(logits, x), [0.0, -100.0, -100.0, 0.0], atol=1e-6)
        grad = jax.grad(lambda l: losses.bernoulli_log_likelihood(l, x).sum())(logits)
        self.assertTrue(np.all(np.isfinite(grad)))
        np.testing.assert_allclose(grad[:, 0], [0.0, -1.0, 1.0, 0.0], atol=1e-6)


class GaussianTest(absltest.TestCase):
    def test_matches_formula(self):
        x = np.array([[0.3, -1.2], [2.0, 0.0]], np.float32)
        mean = np.array([[0.1, -1.0], [0.0, 0.5]], np.float32)
        log_std = np.array([[0.0, -0.5], [0.7, -2.0]], np.float32)
        std = np.exp(log_std.astype(np.float64))
        expected = (-0.5 * np.log(2 * np.pi) - np.log(std) - 0.5 * ((x - mean) / std) ** 2).sum(-1)
        np.testing.assert_allclose(losses.gaussian_log_likelihood(x, mean, log_std), expected, rtol=1e-6)

    def test_scalar_log_std_broadcasts_and_integrates_to_one(self):
        grid = jnp.linspace(-3.0, 4.0, 70_001)[:, None]
        density = jnp.exp(losses.gaussian_log_likelihood(grid, 0.5, jnp.log(0.4)))
        self.assertAlmostEqual(float(jnp.trapezoid(density, grid[:, 0])), 1.0, places=4)


class DiscretizedLogisticTest(parameterized.TestCase):
    @parameterized.parameters((0.5, 0.0), (0.5, -7.0), (0.0, -3.0), (1.0, -4.0), (-3.0, 1.0), (4.0, -2.0),
                              (0.3, 3.0))
    def test_probabilities_of_all_bins_sum_to_one(self, mean, log_scale):
        x = (jnp.arange(256.0) / 255.0)[:, None]
        logp = losses.discretized_logistic_log_likelihood(x, jnp.full_like(x, mean), jnp.full_like(x, log_scale))
        self.assertTrue(np.all(np.isfinite(logp)))
        self.assertAlmostEqual(float(jnp.exp(logp).sum()), 1.0, places=4)

    def test_matches_sigmoid_differences_by_hand(self):
        x = np.array([[0.0, 10 / 255, 128 / 255, 1.0]], np.float64)
        mean = np.array([[0.05, 0.02, 0.5, 0.9]], np.float64)
        log_scale = np.array([[-3.0, -4.0, -2.5, -1.0]], np.float64)
        s, h = np.exp(log_scale), 0.5 / 255
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        p = sig((x + h - mean) / s) - sig((x - h - mean) / s)
        p[0, 0] = sig((h - mean[0, 0]) / s[0, 0])
        p[0, 3] = 1 - sig((1 - h - mean[0, 3]) / s[0, 3])
        got = losses.discretized_logistic_log_likelihood(x, mean, log_scale)
        np.testing.assert_allclose(got, np.log(p).sum(-1), rtol=1e-5)

    def test_stable_far_in_the_tails(self):
        # A bin 0.8 away from a sharp logistic: naive sigmoid differences give log(0).
        x, mean, log_scale = jnp.array([[0.9]]), jnp.array([[0.1]]), jnp.array([[-6.0]])
        logp = losses.discretized_logistic_log_likelihood(x, mean, log_scale)
        inv_s = math.exp(6.0)
        # Far tail: log P ~= log(width * pdf) with pdf ~= inv_s * exp(-(x - mean) * inv_s).
        approx = math.log(inv_s / 255.0) - 0.8 * inv_s
        self.assertTrue(np.isfinite(float(logp[0])))
        np.testing.assert_allclose(float(logp[0]), approx, rtol=1e-3)
        grads = jax.grad(lambda m, ls: losses.discretized_logistic_log_likelihood(x, m, ls).sum(), argnums=(0, 1))(
            mean, log_scale
        )
        self.assertTrue(all(np.all(np.isfinite(g)) for g in grads))

    def test_other_bin_counts(self):
        x = (jnp.arange(4.0) / 3.0)[:, None]
        logp = losses.discretized_logistic_log_likelihood(x, jnp.full_like(x, 0.4), jnp.full_like(x, -1.0), num_bins=4)
        self.assertAlmostEqual(float(jnp.exp(logp).sum()), 1.0, places=5)
        with self.assertRaisesRegex(ValueError, "num_bins"):
            losses.discretized_logistic_log_likelihood(x, x, x, num_bins=1)


class NormalAndKLTest(parameterized.TestCase):
    def test_log_normal_diag_matches_formula(self):
        z = np.array([[0.5, -1.0, 2.0]], np.float32)
        mean = np.array([[0.0, 1.0, 2.5]], np.float32)
        logvar = np.array([[0.0, -1.0, 1.5]], np.float32)
        var = np.exp(logvar.astype(np.float64))
        expected = (-0.5 * (np.log(2 * np.pi * var) + (z - mean) ** 2 / var)).sum(-1)
        np.testing.assert_allclose(losses.log_normal_diag(z, mean, logvar), expected, rtol=1e-6)
        np.testing.assert_allclose(
            losses.log_standard_normal(z), losses.log_normal_diag(z, jnp.zeros_like(z), jnp.zeros_like(z)), rtol=1e-6
        )
        np.testing.assert_allclose(losses.log_standard_normal(jnp.zeros((1, 4))), [-2 * math.log(2 * math.pi)])

    @parameterized.parameters((0.0, 0.0), (1.5, -1.0), (-0.7, 0.8), (2.0, -3.0))
    def test_kl_standard_normal_against_numeric_integral(self, mean, logvar):
        kl = losses.kl_standard_normal(jnp.array([[mean]]), jnp.array([[logvar]]))
        np.testing.assert_allclose(kl, [_grid_kl(mean, math.exp(logvar), 0.0, 1.0)], rtol=1e-4, atol=1e-6)

    @parameterized.parameters((0.3, -0.5, 1.0, 0.4), (-1.0, 1.0, 0.5, -1.0), (0.0, 0.0, 0.0, 0.0))
    def test_kl_diagonal_gaussians_against_numeric_integral(self, mq, lq, mp, lp):
        kl = losses.kl_diagonal_gaussians(jnp.array([[mq]]), jnp.array([[lq]]), jnp.array([[mp]]), jnp.array([[lp]]))
        np.testing.assert_allclose(kl, [_grid_kl(mq, math.exp(lq), mp, math.exp(lp))], rtol=1e-4, atol=1e-6)

    def test_kl_diagonal_reduces_to_standard_normal_and_sums_dimensions(self):
        mean = jnp.array([[0.3, -1.0], [2.0, 0.1]])
        logvar = jnp.array([[0.2, -0.4], [1.0, -2.0]])
        zeros = jnp.zeros_like(mean)
        np.testing.assert_allclose(
            losses.kl_diagonal_gaussians(mean, logvar, zeros, zeros), losses.kl_standard_normal(mean, logvar), rtol=1e-6
        )
        per_dim = [losses.kl_standard_normal(mean[:, i : i + 1], logvar[:, i : i + 1]) for i in range(2)]
        np.testing.assert_allclose(losses.kl_standard_normal(mean, logvar), per_dim[0] + per_dim[1], rtol=1e-6)

    def test_squared_error(self):
        x = jnp.array([[[1.0, 2.0]], [[0.0, -1.0]]])
        y = jnp.array([[[0.0, 0.0]], [[0.5, 1.0]]])
        np.testing.assert_allclose(losses.squared_error(x, y), [5.0, 4.25])


class JitTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("bernoulli", losses.bernoulli_log_likelihood, 2),
        ("gaussian", losses.gaussian_log_likelihood, 3),
        ("discretized_logistic", losses.discretized_logistic_log_likelihood, 3),
        ("log_normal_diag", losses.log_normal_diag, 3),
        ("log_standard_normal", losses.log_standard_normal, 1),
        ("kl_standard_normal", losses.kl_standard_normal, 2),
        ("kl_diagonal_gaussians", losses.kl_diagonal_gaussians, 4),
        ("squared_error", losses.squared_error, 2),
    )
    def test_jit_matches_eager(self, fn, num_args):
        keys = jax.random.split(jax.random.PRNGKey(0), num_args)
        args = [jax.random.uniform(k, (3, 4, 5), minval=-1.0, maxval=1.0) for k in keys]
        if fn is losses.discretized_logistic_log_likelihood or fn is losses.bernoulli_log_likelihood:
            data = jnp.round(jax.random.uniform(keys[0], (3, 4, 5)) * 255.0) / 255.0
            args[0 if fn is losses.discretized_logistic_log_likelihood else 1] = data
        eager = fn(*args)
        jitted = jax.jit(fn)(*args)
        self.assertEqual(eager.shape, (3,))
        self.assertEqual(jitted.dtype, jnp.float32)
        np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)



class AdversarialLossTest(parameterized.TestCase):
    # Scores chosen so every branch of the hinge is hit; expected values by hand.
    REAL = np.array([2.0, 0.5, -1.0], np.float32)
    FAKE = np.array([-2.0, 0.0, 1.5], np.float32)

    def test_non_saturating_by_hand(self):
        sp = lambda v: np.log1p(np.exp(v))  # noqa: E731
        np.testing.assert_allclose(
            losses.discriminator_loss("non-saturating", self.REAL, self.FAKE),
            [sp(-2.0) + sp(-2.0), sp(-0.5) + np.log(2.0), sp(1.0) + sp(1.5)], rtol=1e-6)
        np.testing.assert_allclose(losses.generator_loss("non-saturating", self.FAKE),
                                   [sp(2.0), np.log(2.0), sp(-1.5)], rtol=1e-6)
        # -log sigmoid(l) of a huge logit stays finite.
        self.assertTrue(np.isfinite(losses.non_saturating_generator_loss(jnp.array([-1e4]))).all())

    def test_wasserstein_by_hand(self):
        np.testing.assert_allclose(losses.discriminator_loss("wasserstein", self.REAL, self.FAKE), [-4.0, -0.5, 2.5])
        np.testing.assert_allclose(losses.generator_loss("wasserstein", self.FAKE), [2.0, 0.0, -1.5])

    def test_hinge_by_hand(self):
        # relu(1 - r) + relu(1 + f): (0 + 0), (0.5 + 1), (2 + 2.5)
        np.testing.assert_allclose(losses.discriminator_loss("hinge", self.REAL, self.FAKE), [0.0, 1.5, 4.5])
        np.testing.assert_allclose(losses.generator_loss("hinge", self.FAKE), [2.0, 0.0, -1.5])

    def test_least_squares_by_hand(self):
        # (r - 1)^2 / 2 + f^2 / 2: (0.5 + 2), (0.125 + 0), (2 + 1.125)
        np.testing.assert_allclose(losses.discriminator_loss("least-squares", self.REAL, self.FAKE),
                                   [2.5, 0.125, 3.125], rtol=1e-6)
        np.testing.assert_allclose(losses.generator_loss("least-squares", self.FAKE), [4.5, 0.5, 0.125], rtol=1e-6)

    def test_unknown_loss_lists_the_known_ones(self):
        with self.assertRaisesRegex(ValueError, "'vanilla' is unknown; known: non-saturating, wasserstein, hinge"):
            losses.discriminator_loss("vanilla", self.REAL, self.FAKE)
        with self.assertRaisesRegex(ValueError, "least-squares"):
            losses.generator_loss("vanilla", self.FAKE)

    @parameterized.parameters(*losses.ADVERSARIAL_LOSSES)
    def test_jit_and_bfloat16(self, kind):
        d = jax.jit(lambda r, f: losses.discriminator_loss(kind, r, f))(self.REAL.astype(jnp.bfloat16), self.FAKE)
        self.assertEqual(d.dtype, jnp.float32)
        self.assertEqual(d.shape, (3,))


class RegulariserTest(absltest.TestCase):
    def test_gradient_penalty_of_a_linear_critic(self):
        # D(x) = <w, x> + b has gradient w everywhere, so the penalty is (||w|| - 1)^2
        # at every interpolate, whatever the interpolation weights.
        w = jnp.array([[3.0, 0.0], [0.0, 4.0]])  # ||w||_F = 5
        critic = lambda x: jnp.sum(x * w, axis=(1, 2)) + 0.7  # noqa: E731
        real = jax.random.normal(jax.random.PRNGKey(0), (6, 2, 2))
        fake = jax.random.normal(jax.random.PRNGKey(1), (6, 2, 2))
        gp = losses.gradient_penalty(critic, real, fake, jax.random.PRNGKey(2))
        np.testing.assert_allclose(gp, np.full(6, (5.0 - 1.0) ** 2), rtol=1e-5)
        gp2 = jax.jit(lambda r, f: losses.gradient_penalty(critic, r, f, jax.random.PRNGKey(3), target=5.0))(real, fake)
        np.testing.assert_allclose(gp2, np.zeros(6), atol=1e-4)

    def test_gradient_penalty_of_a_quadratic_critic(self):
        # D(x) = ||x||^2 / 2 has gradient x: the penalty is (||x_hat|| - 1)^2 with
        # x_hat = e real + (1 - e) fake and e drawn as the function draws it.
        critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=-1)  # noqa: E731
        real = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        fake = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
        key = jax.random.PRNGKey(7)
        eps = np.asarray(jax.random.uniform(key, (5, 1)))
        x_hat = eps * np.asarray(real) + (1 - eps) * np.asarray(fake)
        np.testing.assert_allclose(losses.gradient_penalty(critic, real, fake, key),
                                   (np.linalg.norm(x_hat, axis=-1) - 1.0) ** 2, rtol=1e-5)

    def test_r1_of_a_quadratic_critic(self):
        critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=-1) + jnp.sum(x, axis=-1)  # noqa: E731
        real = jnp.array([[1.0, 2.0], [0.0, -1.0]])
        # gradient x + 1: [2, 3] -> 13, [1, 0] -> 1
        np.testing.assert_allclose(losses.r1_penalty(critic, real), [13.0, 1.0], rtol=1e-6)


if __name__ == "__main__":
    absltest.main()
