"""Mixed-precision training: bfloat16 close to float32, float16 with dynamic loss scaling."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration
from workshop.models.factories import create_model
from workshop.train.loss_scaling import DynamicLossScale, all_finite
from workshop.train.trainer import Trainer


def _trainer(precision="float32", **overrides):
    model = create_model(
        ModelConfiguration(model_type="vae", input_shape=(8, 8, 1), latent_dim=8, backbone_type="mlp",
                           encoder_features=[64, 32], decoder_features=[32, 64],
                           parameters={"reconstruction_loss": "bernoulli"}),
        rngs=nnx.Rngs(0),
    )
    config = TrainingConfiguration(num_steps=20, ema_decay=0.9, precision=precision,
                                   optimizer=OptimizerConfiguration(learning_rate=3e-3), **overrides)
    return Trainer(model, config)


def _batches(n, batch=16):
    rng = np.random.default_rng(0)
    return [{"x": (rng.random((batch, 8, 8, 1)) < 0.3).astype(np.float32)} for _ in range(n)]


def _run(trainer, n):
    state, history = trainer.init_state(), []
    for batch in _batches(n):
        state, metrics = trainer.train_step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def _dot_dtypes(trainer):
    """Result dtypes of every matmul in the train step's jaxpr (`c:bf16[16,64] = dot_general ...`)."""
    state, batch = trainer.init_state(), _batches(1)[0]
    text = str(jax.make_jaxpr(trainer._train_step)(state, batch))
    results = [line.split("=")[0] for line in text.splitlines() if "= dot_general" in line]
    return {dtype for lhs in results for dtype in ("bf16", "f16", "f32") if f":{dtype}[" in lhs}


class BFloat16Test(absltest.TestCase):
    def test_bf16_training_stays_close_to_f32(self):
        f32_state, f32 = _run(_trainer(), 5)
        bf16_state, bf16 = _run(_trainer("bfloat16"), 5)
        np.testing.assert_allclose([m["loss"] for m in bf16], [m["loss"] for m in f32], rtol=2e-2)
        self.assertLess(bf16[-1]["loss"], bf16[0]["loss"])
        # float32 master weights, optimizer state and EMA; they moved like float32's.
        for tree in (bf16_state.params, bf16_state.opt_state, bf16_state.ema_params):
            self.assertTrue(all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(tree)))
        kernel = lambda s: np.asarray(s.params["decoder"]["layers"][2]["kernel"][...])  # noqa: E731
        init = kernel(_trainer().init_state())
        moved_bf16, moved_f32 = kernel(bf16_state) - init, kernel(f32_state) - init
        # Adam's normalised steps turn tiny gradient differences into whole steps on a few weights,
        # so compare the update as a whole.
        self.assertLess(np.linalg.norm(moved_bf16 - moved_f32), 0.1 * np.linalg.norm(moved_f32))

    def test_the_step_computes_in_bf16(self):
        self.assertEqual(_dot_dtypes(_trainer()), {"f32"})
        self.assertIn("bf16", _dot_dtypes(_trainer("bfloat16")))

    def test_evaluation_runs_the_model_as_built(self):
        trainer = _trainer("bfloat16")
        state = trainer.init_state()
        self.assertEqual(trainer.model_from_state(state).encoder.layers[0].dtype, jnp.float32)
        train_model = nnx.merge(trainer.graphdef, state.params, state.rest)
        self.assertEqual(train_model.encoder.layers[0].dtype, jnp.bfloat16)
        self.assertTrue(np.isfinite(trainer.evaluate(state, _batches(1))["loss"]))


class Float16Test(absltest.TestCase):
    def test_f16_without_overflow_stays_close_to_f32(self):
        _, f32 = _run(_trainer(), 4)
        _, f16 = _run(_trainer("float16", loss_scale_init=2.0**8), 4)
        self.assertEqual([m["grads_finite"] for m in f16], [1.0] * 4)
        np.testing.assert_allclose([m["loss"] for m in f16], [m["loss"] for m in f32], rtol=2e-2)

    def test_loss_scaling_recovers_from_overflow(self):
        # d loss / d logits is about 0.3 / 16 per pixel: times 2**24 it overflows float16 (max 65504).
        trainer = _trainer("float16", loss_scale_init=2.0**24, loss_scale_period=1000)
        first = trainer.init_state()
        start = jax.device_get(first.params)
        state, metrics = trainer.train_step(first, _batches(1)[0])
        self.assertEqual(float(metrics["grads_finite"]), 0.0)
        self.assertEqual(float(metrics["loss_scale"]), 2.0**24)
        self.assertEqual(float(state.loss_scale["scale"]), 2.0**23)
        self.assertEqual(int(state.step), 1)
        for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(start)):
            np.testing.assert_array_equal(a, b)  # the overflow step was skipped
        history = []
        for batch in _batches(12):
            state, metrics = trainer.train_step(state, batch)
            history.append(jax.device_get(metrics))
        finite = [m["grads_finite"] for m in history]
        self.assertEqual(finite[-4:], [1.0] * 4)  # recovered and stays finite
        skipped = 1 + finite.index(1.0)
        self.assertEqual(float(state.loss_scale["scale"]), 2.0 ** (24 - skipped))
        self.assertTrue(all(np.isfinite(m["loss"]) for m in history))
        self.assertLess(history[-1]["loss"], history[finite.index(1.0)]["loss"])


class DynamicLossScaleTest(absltest.TestCase):
    def test_schedule(self):
        rule = DynamicLossScale(initial_scale=8.0, period=2)
        state, scales = rule.init(), []
        for finite in (True, True, True, False, True, True):
            state = rule.adjust(state, jnp.array(finite))
            scales.append(float(state["scale"]))
        self.assertEqual(scales, [8.0, 16.0, 16.0, 8.0, 8.0, 16.0])
        floor = DynamicLossScale(initial_scale=2.0, min_scale=1.0)
        self.assertEqual(float(floor.adjust(floor.adjust(floor.init(), jnp.array(False)), jnp.array(False))["scale"]),
                         1.0)

    def test_scale_and_unscale_round_trip(self):
        rule = DynamicLossScale(initial_scale=1024.0)
        state = rule.init()
        grads = jax.grad(lambda w: rule.scale(state, jnp.sum(w**2)))(jnp.arange(3.0))
        np.testing.assert_allclose(rule.unscale(state, grads), 2 * jnp.arange(3.0))
        self.assertFalse(bool(all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.inf])})))
        self.assertTrue(bool(all_finite({"a": jnp.ones(2)})))

    def test_bad_rule(self):
        with self.assertRaisesRegex(ValueError, "factor > 1"):
            DynamicLossScale(factor=1.0)


if __name__ == "__main__":
    absltest.main()
