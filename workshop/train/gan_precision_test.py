"""GAN training in mixed precision: bfloat16 compute close to float32, float16 with dynamic loss scaling."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from workshop.train import gan_testing as gt
from workshop.train.loss_scaling import DynamicLossScale, scaled_value_and_grad

_STEPS = 4


def _moved(state, start, player):
    """All of a player's parameter changes since `start`, as one vector."""
    return np.concatenate([(a - b).ravel() for a, b in zip(jax.tree.leaves(gt.host(state.params[player])),
                                                           jax.tree.leaves(gt.host(start.params[player])))])


class MixedPrecisionTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.batches = gt.ring_batches(_STEPS)
        cls.f32 = {}
        for recipe in gt.RECIPES:
            trainer = gt.trainer(gt.ring_gan(recipe))
            cls.f32[recipe] = (trainer, *gt.run(trainer, cls.batches))

    @parameterized.named_parameters(("ns_r1", "ns_r1"), ("wgan_gp", "wgan_gp"))
    def test_bf16_computes_in_bf16_and_stays_close_to_f32(self, recipe):
        f32_trainer, f32_state, f32 = self.f32[recipe]
        trainer = gt.trainer(gt.ring_gan(recipe), precision="bfloat16")
        self.assertEqual({site.dtype for site in gt.matmuls(f32_trainer, self.batches[0])}, {"float32"})
        # Every matmul of both players (forward, backward, and the penalty's double backward) runs in bf16.
        self.assertEqual({site.dtype for site in gt.matmuls(trainer, self.batches[0])}, {"bfloat16"})
        state, bf16 = gt.run(trainer, self.batches)
        np.testing.assert_allclose(gt.losses(bf16), gt.losses(f32), rtol=3e-2, atol=3e-2)
        # float32 master weights, optimizer states, EMA and statistics.
        for tree in (state.params, state.opt_state, state.ema_params, state.rest):
            self.assertTrue(all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(tree)))
        # The players moved like float32's (Adam turns bf16 gradient rounding into whole steps on a few
        # weights, so the update is compared as a whole; a broken bf16 pass would be off by ~100 %).
        start = trainer.init_state()
        for player in ("generator", "discriminator"):
            reference = _moved(f32_state, start, player)
            self.assertLess(np.linalg.norm(_moved(state, start, player) - reference),
                            0.35 * np.linalg.norm(reference), player)
        # Evaluation and sampling run the model as built.
        self.assertEqual(trainer.generate(state, 3).dtype, np.float32)
        self.assertTrue(np.isfinite(trainer.evaluate(state, self.batches[:1])["d_loss"]))

    def test_spectral_norm_layers_take_the_compute_dtype(self):
        trainer = gt.trainer(gt.ring_gan("sngan"), precision="bfloat16")
        sites = gt.matmuls(trainer, self.batches[0])
        self.assertNotEmpty([site for site in sites if site.dtype == "bfloat16"])  # the layers' matmuls
        # What stays float32 is the power iteration of the spectral norm estimate (w @ u, w.T @ v,
        # v @ W @ u and its gradient), on purpose and marked so.
        kept = [site for site in sites if site.dtype == "float32"]
        self.assertNotEmpty(kept)
        for site in kept:
            self.assertIn("float32_spectral_norm_power_iteration", site.scope, site)
        self.assertEqual({site.dtype for site in sites}, {"bfloat16", "float32"})
        _, history = gt.run(trainer, self.batches[:2])
        self.assertTrue(np.isfinite(gt.losses(history)).all())

    def test_f16_loss_scaling_skips_an_overflow_and_recovers(self):
        # d loss / d score is about 1 / m per example; times 2**24 it overflows float16 (max 65504) on its
        # way into the players, so the first steps overflow until the scale has halved far enough.
        trainer = gt.trainer(gt.ring_gan("wgan_gp"), precision="float16", loss_scale_init=2.0**24,
                             loss_scale_period=1000)
        first = trainer.init_state()
        start = gt.host((first.params, first.opt_state, first.ema_params, first.rest))
        state, metrics = trainer.train_step(first, self.batches[0])
        self.assertEqual(float(metrics["grads_finite"]), 0.0)
        self.assertEqual(float(metrics["loss_scale"]), 2.0**24)
        self.assertEqual(int(metrics["skipped"]), 0)  # an overflow is not a bad step for the NaN guard
        self.assertTrue(np.isfinite(float(metrics["d_loss"])) and np.isfinite(float(metrics["g_loss"])))
        self.assertEqual(int(state.step), 1)
        self.assertEqual(float(state.loss_scale["scale"]), 2.0**23)
        jax.tree.map(np.testing.assert_array_equal,
                     gt.host((state.params, state.opt_state, state.ema_params, state.rest)), start)
        history = []
        for batch in gt.ring_batches(14, seed=1):
            state, metrics = trainer.train_step(state, batch)
            history.append(jax.device_get(metrics))
        # Step 0 above overflowed; then the 14 below.
        finite = np.array([False] + [float(m["grads_finite"]) == 1.0 for m in history])
        recovered = int(np.argmax(finite))
        self.assertGreater(recovered, 1)  # a few more halvings were needed
        self.assertTrue(finite[recovered:].mean() >= 0.75, finite)  # recovered; the scale sits near the edge
        # Every overflow halved the scale (no growth: period 1000).
        self.assertEqual(float(state.loss_scale["scale"]), 2.0 ** (24 - int((~finite).sum())))
        self.assertTrue(np.isfinite(gt.losses(history)).all())
        self.assertTrue(all(int(m["skipped"]) == 0 for m in history))
        for player in ("generator", "discriminator"):
            self.assertGreater(np.abs(_moved(state, trainer.init_state(), player)).max(), 0.0, player)

    def test_f16_without_overflow_stays_close_to_f32(self):
        trainer = gt.trainer(gt.ring_gan("ns_r1"), precision="float16", loss_scale_init=2.0**8)
        _, f16 = gt.run(trainer, self.batches)
        self.assertEqual([float(m["grads_finite"]) for m in f16], [1.0] * _STEPS)
        np.testing.assert_allclose(gt.losses(f16), gt.losses(self.f32["ns_r1"][2]), rtol=3e-2, atol=3e-2)


class ScaledValueAndGradTest(absltest.TestCase):
    def test_matches_value_and_grad_and_flags_overflow(self):
        def fun(w, x):
            loss = jnp.sum((w * x) ** 2)
            return loss, {"loss": loss}

        w, x = jnp.arange(1.0, 4.0), jnp.array([0.5, -1.0, 2.0])
        (value, aux), grads = jax.value_and_grad(fun, has_aux=True)(w, x)
        rule = DynamicLossScale(initial_scale=2.0**10)
        for scaler in (None, rule):
            state = None if scaler is None else rule.init()
            (v, a), g, finite = scaled_value_and_grad(fun, scaler, state, has_aux=True)(w, x)
            self.assertEqual(float(v), float(value))  # the loss comes back unscaled
            self.assertEqual(float(a["loss"]), float(aux["loss"]))
            np.testing.assert_allclose(g, grads, rtol=1e-6)
            self.assertTrue(bool(finite))
        # float16 gradients of a scaled loss overflow: flagged, not hidden.
        w16 = w.astype(jnp.float16)
        _, g, finite = scaled_value_and_grad(lambda w: jnp.sum(w * 1000.0).astype(jnp.float32), rule,
                                             {"scale": jnp.float32(2.0**10), "good_steps": jnp.int32(0)})(w16)
        self.assertFalse(bool(finite))
        self.assertEqual(g.dtype, jnp.float16)
        self.assertIsNone(DynamicLossScale.from_config(gt.trainer(gt.ring_gan(), precision="bfloat16").config))
        self.assertEqual(DynamicLossScale.from_config(gt.trainer(gt.ring_gan(), precision="float16",
                                                                 loss_scale_init=8.0).config).initial_scale, 8.0)


if __name__ == "__main__":
    absltest.main()
