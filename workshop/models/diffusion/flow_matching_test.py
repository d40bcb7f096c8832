"""Tests for flow matching (workshop.models.diffusion.flow_matching): path, samplers, likelihood, errors."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration
from workshop.data.datasets.image import load_image_dataset
from workshop.eval.likelihood import log_likelihood
from workshop.models.diffusion import FlowMatching, ode
from workshop.models.diffusion.flow_matching import sample_times
from workshop.models.factories import create_diffusion, create_model
from workshop.models.training_testing import adam_steps


def _config(backbone="dit", shape=(8, 8, 1), **params):
    defaults = dict(patch_size=4, hidden_size=16, depth=1, num_heads=2, sampling_steps=4, attention_resolutions=[4])
    defaults.update(params)
    return ModelConfiguration(model_type="flow_matching", input_shape=shape, backbone_type=backbone,
                              encoder_features=[8], parameters=defaults)


def _tiny(**params):
    model = create_model(_config(**params), rngs=nnx.Rngs(0))
    # Wake the zero-initialised output head so the velocity depends on x, t and the label.
    model.backbone.final_linear.kernel[...] = 0.3 * jax.random.normal(
        jax.random.PRNGKey(0), model.backbone.final_linear.kernel.shape)
    for block in model.backbone.blocks:
        block.modulation.kernel[...] = 0.3 * jnp.ones(block.modulation.kernel.shape)
    return model


class FlowMatchingTest(parameterized.TestCase):
    @parameterized.parameters("unet", "dit")
    def test_registered_with_the_ddpm_backbones(self, backbone):
        model = create_diffusion(_config(backbone), rngs=nnx.Rngs(0))
        self.assertIsInstance(model, FlowMatching)
        self.assertEqual(registry.get_model_spec("flow_matching").family, "diffusion")
        self.assertEqual(type(model.backbone).__name__, {"unet": "UNet", "dit": "DiT"}[backbone])

    def test_target_is_the_ot_velocity_and_loss_its_error(self):
        model = create_model(_config(dequantize=False, time_sampling="uniform"), rngs=nnx.Rngs(0))
        x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
        out = model(x, rngs=nnx.Rngs(1))
        # Replay the draws of the "sample" stream: t, then eps.
        rngs = nnx.Rngs(1)
        t = jax.random.uniform(rngs.sample(), (4,))
        eps = jax.random.normal(rngs.sample(), x.shape)
        np.testing.assert_allclose(out["t"], t)
        np.testing.assert_allclose(out["target"], eps - (2 * x - 1), rtol=1e-6)
        self.assertTrue(bool(jnp.all(out["prediction"] == 0.0)))  # zero-initialised head
        np.testing.assert_allclose(model.loss_fn({"x": x}, out)["loss"], jnp.mean(jnp.square(out["target"])),
                                   rtol=1e-6)

    def test_time_samplings(self):
        key = jax.random.PRNGKey(0)
        t = np.asarray(sample_times(key, 20000, "logit_normal", 0.5, 2.0))
        logit = np.log(t) - np.log1p(-t)
        self.assertAlmostEqual(logit.mean(), 0.5, delta=0.05)
        self.assertAlmostEqual(logit.std(), 2.0, delta=0.05)
        u = np.asarray(sample_times(key, 20000, "uniform"))
        self.assertAlmostEqual(u.mean(), 0.5, delta=0.01)
        self.assertAlmostEqual(u.var(), 1 / 12, delta=0.003)
        with self.assertRaisesRegex(ValueError, "time_sampling 'beta' is unknown; known: uniform, logit_normal"):
            sample_times(key, 2, "beta")

    def test_samplers_report_their_evaluations_and_agree(self):
        model = _tiny()
        draw = nnx.jit(lambda m, s, n: m.sample(n_samples=3, rngs=nnx.Rngs(2), sampler=s, steps=n),
                       static_argnums=(1, 2))
        euler, nfe_e = draw(model, "euler", 4)
        heun, nfe_h = draw(model, "heun", 4)
        dopri, nfe_d = draw(model, "dopri5", 4)
        self.assertEqual((int(nfe_e), int(nfe_h)), (4, 8))
        self.assertGreaterEqual(int(nfe_d), 7)
        fine, _ = draw(model, "euler", 64)
        # Against the adaptive solution, Heun-4 beats Euler-4 and Euler-64 beats Euler-4.
        err = lambda a: float(jnp.abs(a - dopri).max())  # noqa: E731
        self.assertLess(err(heun), err(euler))
        self.assertLess(err(fine), err(euler) / 4)
        self.assertTrue(bool(jnp.all((euler >= 0) & (euler <= 1))))
        # generate is the samples of sample; one sample does not depend on the batch it is in.
        gen = nnx.jit(lambda m, n: m.generate(n_samples=n, rngs=nnx.Rngs(2), sampler="euler", steps=4),
                      static_argnums=1)
        np.testing.assert_allclose(gen(model, 3), euler, atol=1e-6)
        np.testing.assert_allclose(gen(model, 5)[:3], euler, atol=1e-5)

    def test_guidance_mixes_conditional_and_unconditional_velocities(self):
        model = _tiny(num_classes=3)
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
        t = jnp.array([0.2, 0.7])
        labels = jnp.array([0, 2])
        cond = model.velocity(x, t, labels=labels)
        uncond = model.velocity(x, t, labels=jnp.full((2,), 3))
        guided = model.velocity(x, t, labels=labels, guidance_scale=3.0)
        np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)
        self.assertGreater(float(jnp.abs(cond - uncond).max()), 1e-3)
        # Label dropout 1 trains only the "no label" row.
        dropped = _tiny(num_classes=3, label_dropout=1.0)
        img = jax.random.uniform(jax.random.PRNGKey(2), (2, 8, 8, 1))
        a = dropped(img, rngs=nnx.Rngs(5), labels=jnp.array([0, 1]))["prediction"]
        b = dropped(img, rngs=nnx.Rngs(5), labels=jnp.array([2, 2]))["prediction"]
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        samples = model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=labels, guidance_scale=2.0)
        self.assertEqual(samples.shape, (2, 8, 8, 1))

    def test_log_prob_of_the_zero_field_is_the_prior_with_the_bin_volume(self):
        # A fresh model's velocity is 0 (zero-initialised head): x_1 = z, the divergence is 0, and
        # log P(x) = log N(z; 0, I) - D log 128 for the dequantised z = 2 (255 x + u) / 256 - 1.
        model = create_model(_config(likelihood_divergence="exact"), rngs=nnx.Rngs(0))
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1)) * 255) / 255
        log_p = model.log_prob(x, rngs=nnx.Rngs(4))
        u = jax.random.uniform(nnx.Rngs(4).sample(), x.shape)
        z = (2 * (255 * x + u) / 256 - 1).reshape(3, -1)
        want = -0.5 * jnp.sum(z**2, 1) - 64 * 0.5 * math.log(2 * math.pi) - 64 * math.log(128)
        np.testing.assert_allclose(log_p, want, rtol=1e-5)

    def test_hutchinson_log_prob_agrees_with_the_exact_one(self):
        model = _tiny(shape=(4, 4, 1), patch_size=2, likelihood_divergence="exact", likelihood_solver="heun",
                      sampling_steps=6)
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 1)) * 255) / 255
        want = np.asarray(model.log_prob(x, rngs=nnx.Rngs(7)))
        # The same dequantised z and Heun discretisation; 48 single-probe Hutchinson estimates.
        z = ode.dequantize(x, nnx.Rngs(7).sample())

        @jax.jit
        def one_probe(key):
            log_pz, _ = ode.ode_log_likelihood(lambda y, t: model.velocity(y, t), z, divergence="hutchinson",
                                               key=key, solver="heun", steps=6)
            return log_pz - 16 * math.log(128)

        draws = np.asarray(jax.vmap(one_probe)(jax.random.split(jax.random.PRNGKey(1), 48)))
        self.assertGreater(draws.std(axis=0).min(), 1e-2)  # a real estimate, not the trace itself
        stderr = draws.std(axis=0) / math.sqrt(len(draws))
        np.testing.assert_array_less(np.abs(draws.mean(axis=0) - want), 4 * stderr + 1e-3)

    def test_log_likelihood_states_the_estimate(self):
        model = create_model(_config(sampling_steps=2, likelihood_solver="euler"), rngs=nnx.Rngs(0))
        x = np.round(np.random.default_rng(0).random((4, 8, 8, 1)) * 255) / 255
        result = log_likelihood(model, x.astype(np.float32), batch_size=4)
        self.assertEqual(result["estimate"], "exact (ODE)")
        self.assertIn("uniform dequantisation", result["data"])
        self.assertIn("Hutchinson", result["data"])
        self.assertTrue(np.isfinite(result["nll_bits_per_dim"]))

    def test_bad_input_gives_clear_errors(self):
        with self.assertRaisesRegex(ValueError, "'time_samplng' is not valid.*time_sampling"):
            create_model(_config(time_samplng="uniform"), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "time_sampling"):
            create_model(_config(time_sampling="beta"), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "backbone_type 'resnet' .* known: unet, dit"):
            create_model(_config("resnet"), rngs=nnx.Rngs(0))
        model = _tiny()
        with self.assertRaisesRegex(ValueError, "sampler 'ddim' is unknown; known: euler, heun, dopri5"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), sampler="ddim")
        with self.assertRaisesRegex(ValueError, "steps must be a positive integer, got -2"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), steps=-2)
        with self.assertRaisesRegex(ValueError, "guidance_scale=2.0 needs a class-conditional model"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), guidance_scale=2.0)
        with self.assertRaisesRegex(ValueError, "labels are required"):
            _tiny(num_classes=3).generate(n_samples=2, rngs=nnx.Rngs(0))

    def test_loss_and_likelihood_improve_on_fashion_mnist(self):
        try:
            dataset = load_image_dataset("fashion_mnist", train=True)
        except FileNotFoundError as err:
            if os.environ.get("WORKSHOP_REQUIRE_REAL_DATA"):
                raise
            self.skipTest(f"Fashion-MNIST not installed: {err}")
        images = np.asarray(dataset.images[:528], np.float32) / 255.0
        train, test = images[:512], jnp.asarray(images[512:])
        model = create_model(_config(shape=(28, 28, 1), patch_size=7, hidden_size=32, depth=2,
                                     likelihood_solver="heun", sampling_steps=4), rngs=nnx.Rngs(0))
        log_p = nnx.jit(lambda m: jnp.mean(m.log_prob(test, rngs=nnx.Rngs(0))))
        before = float(log_p(model))
        order = np.random.default_rng(0).permutation(np.tile(np.arange(512), 8))
        history = adam_steps(model, ({"x": train[order[32 * i:32 * (i + 1)]]} for i in range(100)),
                             learning_rate=3e-3)
        losses = [m["loss"] for m in history]
        after = float(log_p(model))
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"loss {first:.4f} -> {last:.4f}; log-likelihood {before:.1f} -> {after:.1f} nats per image")
        self.assertLess(last, 0.65 * first)
        self.assertGreater(after, before + 0.1 * abs(before))


if __name__ == "__main__":
    absltest.main()
