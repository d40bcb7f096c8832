"""Tests for EDM (workshop.models.diffusion.edm): preconditioning, loss, samplers on Gaussian data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.diffusion import EDM, ode
from workshop.models.diffusion.edm import edm_loss_weight, edm_preconditioning
from workshop.models.diffusion.samplers import karras_sampler, karras_sigmas
from workshop.models.factories import create_model


def _config(backbone="dit", shape=(4, 4, 1), **params):
    defaults = dict(patch_size=2, hidden_size=16, depth=1, num_heads=2, sampling_steps=8, attention_resolutions=[4])
    defaults.update(params)
    return ModelConfiguration(model_type="edm", input_shape=shape, backbone_type=backbone, encoder_features=[8],
                              parameters=defaults)


def _gaussian_denoiser(mu, s):
    """The exact D(x; sigma) = E[x0 | x0 + sigma n] for x0 ~ N(mu, s^2)."""
    return lambda x, sigma: (s**2 * x + sigma**2 * mu) / (s**2 + sigma**2)


class PreconditioningTest(absltest.TestCase):
    def test_coefficients_keep_input_and_target_at_unit_variance(self):
        sigma_data = 0.5
        sigma = jnp.array([0.002, 0.1, 0.5, 2.0, 80.0])
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
        # Karras et al. Appendix B.6: for Var[x0] = sigma_data^2, c_in makes Var[c_in (x0 + sigma n)] = 1 ...
        np.testing.assert_allclose(c_in**2 * (sigma_data**2 + sigma**2), 1.0, rtol=1e-5)
        # ... c_skip minimises the variance of F's target (x0 - c_skip x) / c_out, and c_out makes it 1.
        target_var = lambda cs: (1 - cs) ** 2 * sigma_data**2 + cs**2 * sigma**2  # noqa: E731
        np.testing.assert_allclose(target_var(c_skip) / c_out**2, 1.0, rtol=1e-5)
        for eps in (1e-3, -1e-3):
            self.assertTrue(bool(jnp.all(target_var(c_skip + eps) > target_var(c_skip))))
        np.testing.assert_allclose(c_noise, np.log(np.asarray(sigma)) / 4, rtol=1e-6)
        # lambda(sigma) c_out^2 = 1: the loss weights F's error equally at every noise level.
        np.testing.assert_allclose(edm_loss_weight(sigma, sigma_data) * c_out**2, 1.0, rtol=1e-5)
        # The limits: no noise passes x through, much noise predicts from F alone.
        self.assertAlmostEqual(float(c_skip[0]), 1.0, places=4)
        self.assertAlmostEqual(float(c_out[-1]), sigma_data, places=3)


class KarrasSamplerTest(absltest.TestCase):
    mu, s = 0.3, 0.4

    def _run(self, steps, **kw):
        z = jax.random.normal(jax.random.PRNGKey(0), (4000, 1))
        sigmas = karras_sigmas(0.002, 80.0, steps)
        keys = jax.random.split(jax.random.PRNGKey(1), 4000)
        out = jax.jit(lambda z: karras_sampler(_gaussian_denoiser(self.mu, self.s), z * 80.0, sigmas, keys=keys,
                                               **kw))(z)
        # The exact probability-flow map from sigma_max to 0 for this Gaussian.
        exact = self.mu + self.s / math.sqrt(self.s**2 + 80.0**2) * (np.asarray(z) * 80.0 - self.mu)
        return np.asarray(out), exact

    def test_deterministic_heun_error_falls_with_steps(self):
        errors = []
        for steps in (4, 8, 16, 32):
            out, exact = self._run(steps)
            errors.append(np.abs(out - exact).max())
        # Second order: each doubling of the steps cuts the error by well over 2 (4 in the limit).
        self.assertTrue(all(b < a / 2.5 for a, b in zip(errors, errors[1:])), errors)
        # 32 steps: 0.025 at |z| = 3.7 (float64 gives the same: the method's error, not rounding).
        self.assertLess(errors[-1], 0.03)
        out, _ = self._run(64)
        self.assertAlmostEqual(out.mean(), self.mu, delta=0.02)  # 4000 samples: standard error 0.006
        self.assertAlmostEqual(out.std(), self.s, delta=0.015)

    def test_euler_is_first_order_and_worse(self):
        heun, exact = self._run(16)
        euler, _ = self._run(16, second_order=False)
        self.assertGreater(np.abs(euler - exact).max(), 2 * np.abs(heun - exact).max())

    def test_stochastic_sampler_keeps_the_distribution(self):
        # The churn's extra error needs more steps to vanish (std 0.419 at 32 steps, 0.400 at 128).
        out, exact = self._run(128, s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.0)
        self.assertGreater(np.abs(out - exact).max(), 0.05)  # the churn moved the samples ...
        self.assertAlmostEqual(out.mean(), self.mu, delta=0.02)  # ... not their distribution
        self.assertAlmostEqual(out.std(), self.s, delta=0.02)
        with self.assertRaisesRegex(ValueError, "pass keys"):
            karras_sampler(lambda x, s: x, jnp.zeros((1, 1)), karras_sigmas(0.1, 1.0, 2), s_churn=1.0)


class EDMTest(parameterized.TestCase):
    @parameterized.parameters("unet", "dit")
    def test_registered_with_the_ddpm_backbones(self, backbone):
        model = create_model(_config(backbone, shape=(8, 8, 1)), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, EDM)
        self.assertEqual(type(model.backbone).__name__, {"unet": "UNet", "dit": "DiT"}[backbone])

    def test_loss_is_the_weighted_denoising_error(self):
        model = create_model(_config(), rngs=nnx.Rngs(0))
        x = jax.random.uniform(jax.random.PRNGKey(0), (256, 4, 4, 1))
        out = model(x, rngs=nnx.Rngs(1))
        rngs = nnx.Rngs(1)
        sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(rngs.sample(), (256,)))
        noisy = (2 * x - 1) + sigma[:, None, None, None] * jax.random.normal(rngs.sample(), x.shape)
        np.testing.assert_allclose(out["sigma"], sigma, rtol=1e-6)
        # A fresh network outputs F = 0 (zero-initialised head), so D = c_skip x.
        c_skip = 0.25 / (sigma**2 + 0.25)
        np.testing.assert_allclose(out["prediction"], c_skip[:, None, None, None] * noisy, rtol=1e-5, atol=1e-6)
        err = jnp.mean(jnp.square(out["prediction"] - (2 * x - 1)), axis=(1, 2, 3))
        np.testing.assert_allclose(model.loss_fn({"x": x}, out)["loss"], jnp.mean(out["weight"] * err), rtol=1e-5)
        log_sigma = np.log(np.asarray(out["sigma"]))
        self.assertAlmostEqual(log_sigma.mean(), -1.2, delta=0.25)  # P_mean, P_std over 256 draws
        self.assertAlmostEqual(log_sigma.std(), 1.2, delta=0.2)

    @parameterized.parameters(("heun", 32, 63), ("euler", 64, 64), ("stochastic", 32, 63), ("dopri5", 4, None))
    def test_fresh_model_samples_the_gaussian_its_denoiser_is_exact_for(self, sampler, steps, nfe):
        # F = 0 makes D(x; sigma) = c_skip x, the exact denoiser of N(0, sigma_data^2) data: every
        # sampler must return pixels (x + 1) / 2 with mean 1/2 and std sigma_data / 2 = 1/4.
        model = create_model(_config(), rngs=nnx.Rngs(0))
        draw = nnx.jit(lambda m: m.sample(n_samples=256, rngs=nnx.Rngs(3), sampler=sampler, steps=steps))
        x, count = draw(model)
        pixels = np.asarray((x + 1) / 2)
        self.assertAlmostEqual(pixels.mean(), 0.5, delta=0.01)
        self.assertAlmostEqual(pixels.std(), 0.25, delta=0.015)
        if nfe is not None:
            self.assertEqual(int(count), nfe)
        else:
            self.assertGreater(int(count), 7)
        images = model.generate(n_samples=3, rngs=nnx.Rngs(3), sampler="heun", steps=4)
        self.assertTrue(bool(jnp.all((images >= 0) & (images <= 1))))

    def test_ode_log_prob_is_exact_for_gaussian_data(self):
        # F = 0 at initialisation: D(x; sigma) = c_skip x is the exact denoiser of x0 ~ N(0, sigma_data^2),
        # whose marginal at sigma_min is N(0, sigma_data^2 + sigma_min^2) per pixel: the ODE must give it.
        model = create_model(_config(likelihood_divergence="exact"), rngs=nnx.Rngs(0))
        self.assertEqual(model.likelihood_estimate, "exact (ODE)")
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 1)) * 255) / 255
        log_p = model.log_prob(x, rngs=nnx.Rngs(4))
        z = np.asarray(ode.dequantize(x, nnx.Rngs(4).sample())).reshape(3, -1)
        var = 0.5**2 + 0.002**2
        want = np.sum(-0.5 * z**2 / var - 0.5 * np.log(2 * np.pi * var), axis=1) - 16 * np.log(128)
        np.testing.assert_allclose(log_p, want, atol=0.02)
        self.assertGreater(float(jnp.abs(log_p - model.log_prob(x, rngs=nnx.Rngs(5))).max()), 0.01)  # u matters
        # A denoiser that is not the optimal one for this data gives another density.
        model.sigma_data = 0.3
        self.assertGreater(float(jnp.abs(model.log_prob(x, rngs=nnx.Rngs(4)) - log_p).min()), 1.0)

    def test_hutchinson_is_exact_for_a_diagonal_jacobian(self):
        # With F = 0 the Jacobian of x - c_skip x is diagonal with equal entries: eps^T J eps = trace J
        # for every Rademacher probe, so one probe gives the exact log-likelihood.
        exact = create_model(_config(likelihood_divergence="exact"), rngs=nnx.Rngs(0))
        probe = create_model(_config(likelihood_divergence="hutchinson"), rngs=nnx.Rngs(0))
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 1)) * 255) / 255
        np.testing.assert_allclose(probe.log_prob(x, rngs=nnx.Rngs(7)), exact.log_prob(x, rngs=nnx.Rngs(7)),
                                   rtol=1e-5)
        self.assertIn("Hutchinson", probe.likelihood_data)

    def test_guidance_mixes_conditional_and_unconditional_denoisers(self):
        model = create_model(_config(num_classes=3), rngs=nnx.Rngs(0))
        model.backbone.final_linear.kernel[...] = 0.3 * jax.random.normal(
            jax.random.PRNGKey(0), model.backbone.final_linear.kernel.shape)
        for block in model.backbone.blocks:
            block.modulation.kernel[...] = 0.3 * jnp.ones(block.modulation.kernel.shape)
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 1))
        sigma, labels = jnp.array([0.3, 5.0]), jnp.array([0, 2])
        cond = model.denoise(x, sigma, labels=labels)
        uncond = model.denoise(x, sigma, labels=jnp.full((2,), 3))
        guided = model.denoise(x, sigma, labels=labels, guidance_scale=2.5)
        np.testing.assert_allclose(guided, uncond + 2.5 * (cond - uncond), atol=1e-4)
        self.assertGreater(float(jnp.abs(cond - uncond).max()), 1e-3)

    def test_bad_input_gives_clear_errors(self):
        with self.assertRaisesRegex(ValueError, "'sigma_dat' is not valid.*sigma_data"):
            create_model(_config(sigma_dat=0.5), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "sigma_min=5.0 must be below sigma_max=1.0"):
            create_model(_config(sigma_min=5.0, sigma_max=1.0), rngs=nnx.Rngs(0))
        model = create_model(_config(), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "sampler 'ddim' is unknown; known: heun, euler, stochastic, dopri5"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), sampler="ddim")
        with self.assertRaisesRegex(ValueError, "steps must be a positive integer, got 0"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), steps=0)
        with self.assertRaisesRegex(ValueError, "guidance_scale=2.0 needs a class-conditional model"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), guidance_scale=2.0)


if __name__ == "__main__":
    absltest.main()
