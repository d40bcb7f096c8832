"""Tests for the Trainer on a toy model with a known loss, written against the protocol."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.compile_counter import count_compiles
from workshop.core.configuration import OptimizerConfiguration, TrainingConfiguration
from workshop.train.checkpointing import Checkpointer
from workshop.train.trainer import NonFiniteLossError, Trainer, cycled_class_labels


class _Counter(nnx.Variable):
    """Non-parameter state the forward pass updates (like batch statistics)."""


class _NoisyGaussian(nnx.Module):
    """x ~ N(mean, 1) fitted by a loss with injected noise, so the step's RNG matters."""

    def __init__(self, dim, *, rngs):
        self.mean = nnx.Param(jax.random.normal(rngs.params(), (dim,)))
        self.calls = _Counter(jnp.zeros((), jnp.int32))

    def __call__(self, x, *, rngs):
        self.calls[...] += 1
        return {"residual": x - self.mean[...] + 0.01 * jax.random.normal(rngs.sample(), x.shape)}

    def loss_fn(self, batch, outputs):
        loss = 0.5 * jnp.mean(jnp.sum(outputs["residual"] ** 2, axis=-1))
        return {"loss": loss, "mean_norm": jnp.linalg.norm(self.mean[...])}

    def generate(self, *, n_samples, rngs):
        return self.mean[...] + jax.random.normal(rngs.sample(), (n_samples, self.mean[...].shape[0]))


class _Labelled(_NoisyGaussian):
    num_classes = 3

    def __call__(self, x, *, rngs, labels):
        out = super().__call__(x, rngs=rngs)
        out["residual"] = out["residual"] - labels[:, None].astype(jnp.float32)
        return out


def _batches(seed=0, dim=3, batch=8):
    rng = np.random.default_rng(seed)
    while True:
        yield {"x": rng.normal(2.0, 1.0, (batch, dim)).astype(np.float32),
               "label": rng.integers(0, 3, batch).astype(np.int32)}


def _config(**overrides):
    base = dict(num_steps=6, log_every=1, ema_decay=0.9,
                optimizer=OptimizerConfiguration(learning_rate=0.1, schedule="cosine"))
    return TrainingConfiguration(**{**base, **overrides})


class _Recorder:
    def __init__(self):
        self.logs = {}

    def on_log(self, trainer, step, logs):
        self.logs[step] = logs


class TrainerTest(parameterized.TestCase):
    def test_step_updates_params_state_and_ema(self):
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config())
        state = trainer.init_state()
        before = np.asarray(state.params["mean"][...])
        new, metrics = trainer.train_step(state, next(_batches()))
        self.assertEqual(int(new.step), 1)
        self.assertEqual(int(new.rest["calls"][...]), 1)
        self.assertFalse(np.allclose(new.params["mean"][...], before))
        # EMA warm-up: decay = min(0.9, 1/10) at step 0, so ema = 0.1*old + 0.9*new.
        np.testing.assert_allclose(new.ema_params["mean"][...], 0.1 * before + 0.9 * new.params["mean"][...], rtol=1e-6)
        self.assertIn("grad_norm", metrics)
        np.testing.assert_allclose(metrics["learning_rate"], 0.1)

    def test_init_state_survives_a_donated_step(self):
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config())
        first = trainer.init_state()
        trainer.train_step(first, next(_batches()))  # donates `first`
        again = trainer.init_state()
        np.testing.assert_array_equal(again.params["mean"][...], trainer.init_state().params["mean"][...])
        trainer.train_step(again, next(_batches()))

    def test_loss_falls_and_mean_moves_to_the_data(self):
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config(num_steps=200, log_every=200, ema_decay=None))
        state = trainer.fit(trainer.init_state(), _batches(batch=64))
        np.testing.assert_allclose(state.params["mean"][...], 2.0, atol=0.15)

    def test_resumed_run_equals_uninterrupted_run(self):
        make = lambda: Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config())  # noqa: E731
        full, full_log = make(), _Recorder()
        full_state = full.fit(full.init_state(), _batches(), callbacks=[full_log])

        first = make()
        first.config = first.config.model_copy(update={"num_steps": 6})
        stopper = type("Stop", (), {"on_step_end": lambda self, t, step, s: step == 3 and t.request_stop("test")})()
        log_a = _Recorder()
        state = first.fit(first.init_state(), _batches(), callbacks=[stopper, log_a])
        self.assertEqual(int(state.step), 3)
        ckpt = Checkpointer(self.create_tempdir().full_path)
        ckpt.save(state)
        ckpt.wait()

        second = make()
        restored, record = ckpt.restore(second.init_state())
        self.assertEqual(record["step"], 3)
        data = _batches()
        for _ in range(3):  # the data pipeline resumes at the checkpoint's step
            next(data)
        log_b = _Recorder()
        resumed = second.fit(restored, data, callbacks=[log_b])
        self.assertEqual({**log_a.logs, **log_b.logs}, full_log.logs)
        jax.tree.map(np.testing.assert_array_equal, resumed.params, full_state.params)
        jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, full_state.ema_params)
        ckpt.close()

    def test_logging_windows_of_any_length_compile_nothing(self):
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config(num_steps=100, log_every=4))
        recorder, data = _Recorder(), _batches()
        state = trainer.fit(trainer.init_state(), itertools.islice(data, 5), callbacks=[recorder])  # windows 4, 1
        with count_compiles() as compiles:
            # Windows of 3 pending steps (6-8, and 9-11 where the data runs out): a length not seen before.
            state = trainer.fit(state, itertools.islice(data, 6), callbacks=[recorder])
            state = trainer.fit(state, itertools.islice(data, 2), callbacks=[recorder])
        self.assertEqual(compiles.count, 0)
        self.assertEqual(sorted(recorder.logs), [4, 5, 8, 11, 12, 13])
        self.assertEqual(int(state.step), 13)

    def test_uint8_images_train_and_evaluate_as_their_float32_values(self):
        # BatchPipeline(image_dtype="uint8") hands over grey levels; the step converts them on the device.
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config())
        grey = [np.random.default_rng(i).integers(0, 256, (8, 3), dtype=np.uint8) for i in range(3)]
        results = {}
        for dtype in (np.uint8, np.float32):
            state, metrics = trainer.init_state(), []
            for x in grey:
                state, m = trainer.train_step(state, {"x": x if dtype == np.uint8 else x / np.float32(255)})
                metrics.append(m)
            evaluated = trainer.evaluate(state, [{"x": x if dtype == np.uint8 else x / np.float32(255)} for x in grey])
            results[dtype] = jax.device_get((state.to_checkpoint(), metrics, evaluated))
        jax.tree.map(np.testing.assert_array_equal, results[np.uint8], results[np.float32])
        args = trainer.train_step.lower(trainer.init_state(), {"x": grey[0]}).args_info[0][1]
        self.assertEqual(args["x"].dtype, np.uint8)  # what crosses to the device

    def test_nan_is_reported_with_its_step(self):
        trainer = Trainer(_NoisyGaussian(3, rngs=nnx.Rngs(0)), _config(log_every=5))

        def poisoned():
            for i, batch in enumerate(_batches()):
                if i == 3:
                    batch["x"][0, 0] = np.nan
                yield batch

        with self.assertRaisesRegex(NonFiniteLossError, "'loss' became nan at step 4"):
            trainer.fit(trainer.init_state(), poisoned())

    def test_conditional_models_get_labels(self):
        trainer = Trainer(_Labelled(3, rngs=nnx.Rngs(0)), _config())
        self.assertTrue(trainer.conditional)
        state, metrics = trainer.train_step(trainer.init_state(), next(_batches()))
        self.assertTrue(np.isfinite(metrics["loss"]))

    def test_default_labels_cycle_through_the_classes(self):
        labels = cycled_class_labels(7, 3)
        np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2, 0])
        self.assertEqual(labels.dtype, np.int32)

    def test_evaluate_weights_batches_by_size(self):
        trainer = Trainer(_NoisyGaussian(2, rngs=nnx.Rngs(0)), _config(ema_decay=None))
        state = trainer.init_state()
        mean = np.asarray(state.params["mean"][...])
        a = {"x": np.tile(mean + 1.0, (3, 1)).astype(np.float32)}  # loss 1.0 each (plus tiny noise)
        b = {"x": np.tile(mean + 3.0, (1, 1)).astype(np.float32)}  # loss 9.0
        logs = trainer.evaluate(state, [a, b])
        np.testing.assert_allclose(logs["loss"], (3 * 1.0 + 9.0) / 4, rtol=1e-2)

    def test_generate_uses_ema_params(self):
        trainer = Trainer(_NoisyGaussian(2, rngs=nnx.Rngs(0)), _config())
        state = trainer.init_state()
        state = state.replace(ema_params=jax.tree.map(lambda p: p + 100.0, state.ema_params))
        self.assertGreater(trainer.generate(state, 16).mean(), 50.0)


if __name__ == "__main__":
    absltest.main()
