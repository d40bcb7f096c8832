"""Tests for the DDPM model (workshop.models.diffusion.ddpm): API, errors, guidance, real-data training."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration
from workshop.data.datasets.image import load_image_dataset
from workshop.models.diffusion import DDPM
from workshop.models.factories import create_diffusion
from workshop.models.training_testing import adam_steps


def _tiny(backbone="dit", num_timesteps=50, shape=(8, 8, 1), **params):
    defaults = dict(patch_size=4, hidden_size=16, depth=1, num_heads=2, sampling_steps=5,
                    attention_resolutions=[4])
    defaults.update(params)
    return DDPM(ModelConfiguration(model_type="ddpm", input_shape=shape, num_timesteps=num_timesteps,
                                   backbone_type=backbone, encoder_features=[8], parameters=defaults),
                rngs=nnx.Rngs(0))


class DDPMTest(absltest.TestCase):
    def test_the_guide_snippet(self):
        config = ModelConfiguration(model_type="ddpm", num_timesteps=1000, backbone_type="dit",
                                    parameters={"beta_schedule": "cosine"})
        model = create_diffusion(config, rngs=nnx.Rngs(0))
        self.assertIsInstance(model, DDPM)
        self.assertEqual((model.schedule.name, model.num_timesteps, model.backbone_type), ("cosine", 1000, "dit"))
        self.assertEqual(registry.get_model_spec("ddpm").family, "diffusion")

    def test_loss_is_the_weighted_target_error(self):
        model = _tiny(prediction_type="v", loss_weighting="min_snr")
        x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
        out = model(x, rngs=nnx.Rngs(1))
        self.assertTrue(bool(jnp.all(out["prediction"] == 0.0)))  # zero-initialised head
        metrics = model.loss_fn({"x": x}, out)
        err = jnp.mean(jnp.square(out["target"]), axis=(1, 2, 3))
        np.testing.assert_allclose(metrics["loss"], jnp.mean(out["weight"] * err), rtol=1e-6)
        alpha, sigma = model.schedule.alpha_sigma(out["t"])
        snr = alpha**2 / sigma**2
        np.testing.assert_allclose(out["weight"], jnp.minimum(snr, 5.0) / (snr + 1.0), rtol=1e-5)

    def test_same_seed_same_sample_whatever_the_batch_size(self):
        model = _tiny()
        model.backbone.final_linear.kernel[...] = 0.1 * jnp.ones(model.backbone.final_linear.kernel.shape)
        gen = nnx.jit(lambda m, n: m.generate(n_samples=n, rngs=nnx.Rngs(3), sampler="ddpm"), static_argnums=1)
        small, large = np.asarray(gen(model, 2)), np.asarray(gen(model, 5))
        np.testing.assert_allclose(small, large[:2], atol=1e-5)
        self.assertGreater(np.abs(large[2] - large[3]).max(), 1e-2)

    def test_guidance_mixes_conditional_and_unconditional_predictions(self):
        model = _tiny(num_classes=3)
        model.backbone.final_linear.kernel[...] = 0.3 * jax.random.normal(
            jax.random.PRNGKey(0), model.backbone.final_linear.kernel.shape)
        for block in model.backbone.blocks:
            block.modulation.kernel[...] = 0.3 * jnp.ones(block.modulation.kernel.shape)
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
        t = jnp.array([10.0, 30.0])
        labels = jnp.array([0, 2])
        cond = model.denoiser(labels=labels, guidance_scale=1.0)(x, t)[0]
        uncond = model.denoiser(labels=jnp.full((2,), 3), guidance_scale=1.0)(x, t)[0]
        guided = model.denoiser(labels=labels, guidance_scale=3.0)(x, t)[0]
        np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)
        self.assertGreater(float(jnp.abs(cond - uncond).max()), 1e-3)
        # Label dropout 1 trains only the "no label" row.
        dropped = _tiny(num_classes=3, label_dropout=1.0)
        img = jax.random.uniform(jax.random.PRNGKey(2), (2, 8, 8, 1))
        dropped.backbone.final_linear.kernel[...] = model.backbone.final_linear.kernel[...]
        for b_src, b_dst in zip(model.backbone.blocks, dropped.backbone.blocks):
            b_dst.modulation.kernel[...] = b_src.modulation.kernel[...]
        a = dropped(img, rngs=nnx.Rngs(5), labels=jnp.array([0, 1]))["prediction"]
        b = dropped(img, rngs=nnx.Rngs(5), labels=jnp.array([2, 2]))["prediction"]
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def test_extra_condition_channels_reach_the_denoiser(self):
        model = DDPM(ModelConfiguration(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=20,
                                        backbone_type="dit",
                                        parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2,
                                                        sampling_steps=4)),
                     rngs=nnx.Rngs(0), condition_channels=1)
        model.backbone.final_linear.kernel[...] = 0.3 * jax.random.normal(
            jax.random.PRNGKey(5), model.backbone.final_linear.kernel.shape)
        x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
        cond = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 1))
        a = model(x, rngs=nnx.Rngs(2), condition=cond)["prediction"]
        b = model(x, rngs=nnx.Rngs(2), condition=1.0 - cond)["prediction"]
        self.assertGreater(float(jnp.abs(a - b).max()), 1e-3)
        samples = model.generate(n_samples=2, rngs=nnx.Rngs(0), condition=cond)
        self.assertTrue(bool(jnp.all((samples >= 0) & (samples <= 1))))

    def test_bad_input_gives_clear_errors(self):
        def config(**kw):
            return ModelConfiguration(model_type="ddpm", **kw)

        with self.assertRaisesRegex(ValueError, "beta_schedule.*'linear', 'cosine' or 'sigmoid'"):
            config(parameters={"beta_schedule": "quadratic"})
        with self.assertRaisesRegex(ValueError, "backbone_type 'resnet' .* known: unet, dit"):
            create_diffusion(config(backbone_type="resnet"), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "'patch_sz' is not valid.*patch_size"):
            config(parameters={"patch_sz": 4})
        with self.assertRaisesRegex(ValueError, "not divisible by 3"):
            create_diffusion(config(backbone_type="dit", parameters={"patch_size": 3}), rngs=nnx.Rngs(0))
        model = _tiny()
        with self.assertRaisesRegex(ValueError, "sampler 'euler' is unknown; known: ddpm, ddim, dpm_solver_pp_2m"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), sampler="euler")
        with self.assertRaisesRegex(ValueError, "steps=51 exceeds num_timesteps=50"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), steps=51)
        with self.assertRaisesRegex(ValueError, "unconditional and takes no labels"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 1]))
        with self.assertRaisesRegex(ValueError, "guidance_scale=2.0 needs a class-conditional model"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), guidance_scale=2.0)
        with self.assertRaisesRegex(ValueError, "labels are required"):
            _tiny(num_classes=3).generate(n_samples=2, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"labels must lie in \[0, 3\)"):
            _tiny(num_classes=3).generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([0, 3]))

    def test_ode_log_prob_is_exact_for_gaussian_data(self):
        # With the exact epsilon of x0 ~ N(mu, s^2) per pixel (in [-1, 1]) the marginal of
        # x~ = x_t / alpha_t at the first timestep is N(mu, s^2 + sigma~_0^2): the ODE must give it.
        model = _tiny(num_timesteps=1000, shape=(4, 4, 1), patch_size=2, likelihood="ode",
                      likelihood_divergence="exact")
        self.assertEqual(model.likelihood_estimate, "exact (ODE)")
        mu, s = 0.2, 0.3

        def exact_eps(x_t, t, labels, condition):
            alpha, sigma = model.schedule.alpha_sigma(t)
            a, sg = alpha[:, None, None, None], sigma[:, None, None, None]
            return sg / (a**2 * s**2 + sg**2) * (x_t - a * mu)

        model._network = exact_eps
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 1)) * 255) / 255
        log_p = model.log_prob(x, rngs=nnx.Rngs(4))
        z = (2 * (255 * x + jax.random.uniform(nnx.Rngs(4).sample(), x.shape)) / 256 - 1).reshape(3, -1)
        abar0 = float(model.schedule.alpha_bars[0])
        var = s**2 + (1 - abar0) / abar0
        want = np.sum(-0.5 * (np.asarray(z) - mu) ** 2 / var - 0.5 * np.log(2 * np.pi * var), axis=1)
        # 0.05 nats over 16 pixels: the float32 solve spans sigma~ 0.01 .. 158 (measured error 0.02).
        np.testing.assert_allclose(log_p, want - 16 * np.log(128), atol=0.05)
        self.assertGreater(float(jnp.abs(log_p - model.log_prob(x, rngs=nnx.Rngs(5))).max()), 0.1)  # u matters

    def test_loss_and_bound_fall_on_fashion_mnist(self):
        try:
            dataset = load_image_dataset("fashion_mnist", train=True)
        except FileNotFoundError as err:
            if os.environ.get("WORKSHOP_REQUIRE_REAL_DATA"):
                raise
            self.skipTest(f"Fashion-MNIST not installed: {err}")
        images = np.asarray(dataset.images[:640], np.float32) / 255.0
        train, test = images[:512], jnp.asarray(images[512:])
        model = _tiny(num_timesteps=100, shape=(28, 28, 1), patch_size=7, hidden_size=32, depth=2,
                      beta_schedule="cosine")
        bound = nnx.jit(lambda m: jnp.mean(m.log_prob(test, rngs=nnx.Rngs(0), num_samples=20)))
        before = float(bound(model))
        order = np.random.default_rng(0).permutation(np.tile(np.arange(512), 8))
        history = adam_steps(model, ({"x": train[order[32 * i:32 * (i + 1)]]} for i in range(120)),
                             learning_rate=3e-3)
        losses = [m["loss"] for m in history]
        after = float(bound(model))
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"loss {first:.4f} -> {last:.4f}; bound {before:.1f} -> {after:.1f} nats per image")
        self.assertLess(last, 0.7 * first)
        self.assertTrue(np.isfinite(before) and np.isfinite(after))
        # nats per image: the bound must improve by far more than its Monte Carlo noise.
        self.assertGreater(after, before + 0.2 * abs(before))
        self.assertLess(after, 0.0)


if __name__ == "__main__":
    absltest.main()
