"""Tests of the NaN guard: a NaN/Inf step changes nothing, is counted or raised, and N in a row roll back."""

import math
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration
from workshop.models.vae import VAE
from workshop.train.callbacks import CheckpointCallback
from workshop.train.checkpointing import Checkpointer
from workshop.train.train_binary_testing import RunLog, train_records, write_config, write_fixture_dataset
from workshop.train.trainer import NonFiniteLossError, Trainer


class _Running(nnx.Module):
    """Fits a mean to x; the forward pass also updates a running mean (like batch statistics)."""

    def __init__(self, dim, *, rngs):
        self.mean = nnx.Param(jax.random.normal(rngs.params(), (dim,)))
        self.running = nnx.BatchStat(jnp.zeros((dim,)))

    def __call__(self, x, *, rngs):
        self.running[...] = 0.9 * self.running[...] + 0.1 * jnp.mean(x, axis=0)
        return {"residual": x - self.mean[...] + 0.01 * jax.random.normal(rngs.sample(), x.shape)}

    def loss_fn(self, batch, outputs):
        return {"loss": 0.5 * jnp.mean(jnp.sum(outputs["residual"] ** 2, axis=-1))}

    def generate(self, *, n_samples, rngs):
        return jnp.tile(self.mean[...], (n_samples, 1))


class _Distance(nnx.Module):
    """loss = |x - p|: finite (0) at x == p, where its gradient is 0/0 = NaN."""

    def __init__(self, *, rngs):
        self.p = nnx.Param(jnp.array([1.0, 2.0]))

    def __call__(self, x, *, rngs):
        return {"d": jnp.sqrt(jnp.sum((x - self.p[...]) ** 2, axis=-1))}

    def loss_fn(self, batch, outputs):
        return {"loss": jnp.mean(outputs["d"])}


def _config(**overrides):
    base = dict(num_steps=12, log_every=1, ema_decay=0.9, progress_bar=False, tensorboard=False,
                optimizer=OptimizerConfiguration(learning_rate=0.1, schedule="constant"))
    return TrainingConfiguration(**{**base, **overrides})


def _batches(nan_at=(), n=100):
    rng = np.random.default_rng(0)
    for i in range(n):
        x = rng.normal(2.0, 1.0, (8, 3)).astype(np.float32)
        if i in nan_at:
            x[0, 0] = np.nan
        yield {"x": x}


def _host(state):
    return jax.device_get(state.to_checkpoint())


def _assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


class _Recorder:
    """Host copies of the state after every step, and the logs."""

    def __init__(self):
        self.states, self.logs = {}, {}

    def on_step_end(self, trainer, step, state):
        self.states[step] = _host(state)

    def on_log(self, trainer, step, logs):
        self.logs[step] = logs


class NonFiniteTest(parameterized.TestCase):
    def test_nan_batch_changes_nothing_but_the_step(self):
        trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), _config())
        batches = _batches(nan_at=(1,))
        state, metrics = trainer.train_step(trainer.init_state(), next(batches))
        self.assertEqual(int(metrics["skipped"]), 0)
        before = _host(state)
        state, metrics = trainer.train_step(state, next(batches))
        self.assertEqual(int(metrics["skipped"]), 1)
        self.assertTrue(np.isnan(metrics["loss"]))
        after = _host(state)
        self.assertEqual(int(after.pop("step")), 2)
        before.pop("step")
        # Parameters, Adam moments and count, EMA and the running mean are untouched.
        _assert_trees_equal(after, before)
        state, metrics = trainer.train_step(state, next(batches))
        self.assertEqual(int(metrics["skipped"]), 0)
        self.assertFalse(np.array_equal(_host(state)["params"]["mean"], before["params"]["mean"]))

    def test_nan_gradient_with_a_finite_loss_is_skipped(self):
        trainer = Trainer(_Distance(rngs=nnx.Rngs(0)), _config(ema_decay=None))
        state = trainer.init_state()
        before = _host(state)["params"]
        state, metrics = trainer.train_step(state, {"x": np.array([[1.0, 2.0]], np.float32)})
        self.assertEqual(float(metrics["loss"]), 0.0)
        self.assertTrue(np.isnan(metrics["grad_norm"]))
        self.assertEqual(int(metrics["skipped"]), 1)
        _assert_trees_equal(_host(state)["params"], before)

    def test_by_default_the_run_stops_and_no_state_holds_nan(self):
        trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), _config(log_every=5))
        recorder = _Recorder()
        with self.assertRaisesRegex(NonFiniteLossError, "'loss' became nan at step 3.*training.max_bad_steps"):
            trainer.fit(trainer.init_state(), _batches(nan_at=(2,)), callbacks=[recorder])
        self.assertEqual(sorted(recorder.states), [1, 2, 3, 4])
        for state in recorder.states.values():
            self.assertTrue(all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state)))
        _assert_trees_equal(recorder.states[3]["params"], recorder.states[2]["params"])

    def test_skipped_steps_are_counted_and_left_out_of_the_means(self):
        config = _config(num_steps=9, log_every=3, max_bad_steps=3)
        nan_at = (1, 4)  # steps 2 and 5: never 3 in a row
        trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), config)
        recorder = _Recorder()
        with self.assertLogs("workshop.train.bad_steps", "WARNING") as logs:
            state = trainer.fit(trainer.init_state(), _batches(nan_at), callbacks=[recorder])
        self.assertIn("skipped 1 step(s) with a NaN/Inf loss or gradient among steps 1-3", logs.output[0])
        self.assertEqual(int(state.step), 9)
        self.assertEqual({s: (l["skipped_steps"], l["rollbacks"]) for s, l in recorder.logs.items()},
                         {3: (1, 0), 6: (1, 0), 9: (0, 0)})
        _assert_trees_equal(recorder.states[2]["params"], recorder.states[1]["params"])
        _assert_trees_equal(recorder.states[5]["params"], recorder.states[4]["params"])
        # The same run logged every step: the window means are over the applied steps only.
        twin = Trainer(_Running(3, rngs=nnx.Rngs(0)), config.model_copy(update={"log_every": 1}))
        per_step = _Recorder()
        twin.fit(twin.init_state(), _batches(nan_at), callbacks=[per_step])
        self.assertNotIn("loss", per_step.logs[2])
        for window_end, applied in ((3, (1, 3)), (6, (4, 6)), (9, (7, 8, 9))):
            expected = np.mean([per_step.logs[s]["loss"] for s in applied])
            np.testing.assert_allclose(recorder.logs[window_end]["loss"], expected, rtol=1e-6)

    @parameterized.parameters((1, 8, [2, 4, 8, 10, 12]), (3, 9, [2, 4, 9, 10, 12]))
    def test_bad_steps_in_a_row_roll_back_to_the_checkpoint_before_them(self, log_every, detected, kept):
        # Steps 6, 7, 8 are NaN; the parameters that failed are those after step 5, so the
        # rollback goes to the checkpoint of step 4. The saves due at steps 6 and 8 wait for an
        # applied step (the rolled-back state at the detection step), so nothing is deleted.
        config = _config(num_steps=12, log_every=log_every, max_bad_steps=3)
        trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), config)
        checkpointer = Checkpointer(self.create_tempdir().full_path, max_to_keep=10)
        recorder = _Recorder()
        with self.assertLogs("workshop.train.bad_steps", "WARNING") as logs:
            state = trainer.fit(trainer.init_state(), _batches(nan_at=(5, 6, 7)),
                                callbacks=[CheckpointCallback(checkpointer, 2), recorder], checkpointer=checkpointer)
        rollback = [line for line in logs.output if "rolled back" in line]
        self.assertLen(rollback, 1)
        self.assertIn("3 steps in a row with a NaN/Inf loss or gradient (steps 6-8)", rollback[0])
        self.assertIn("rolled back to the checkpoint of step 4", rollback[0])
        self.assertNotIn("deleted the checkpoints", rollback[0])
        self.assertEqual(recorder.logs[detected]["rollbacks"], 1)
        self.assertEqual(recorder.logs[12]["rollbacks"], 1)
        # The state handed on at the detection step holds the step-4 parameters, moments and EMA.
        rolled = dict(recorder.states[detected])
        self.assertEqual(int(rolled.pop("step")), detected)
        at_4 = dict(recorder.states[4])
        at_4.pop("step")
        _assert_trees_equal(rolled, at_4)
        # ... and training goes on from there with the batches that follow.
        self.assertFalse(np.array_equal(recorder.states[detected + 1]["params"]["mean"], at_4["params"]["mean"]))
        self.assertEqual(int(state.step), 12)
        self.assertEqual(checkpointer.all_steps(), kept)
        checkpointer.close()

    def test_no_checkpoint_holds_a_state_that_took_bad_steps_whatever_log_every(self):
        # The steps from 6 on all go NaN (a diverged run) and are noticed only at
        # the logging step 12; saving every 2 steps and keeping 3 used to save the frozen state
        # as 8, 10, 12 and delete 2 and 4: "nothing to roll back to ... have [8, 10, 12]".
        nan_at = tuple(range(5, 12))
        for max_bad_steps in (None, 3):
            with self.subTest(max_bad_steps=max_bad_steps):
                config = _config(num_steps=12, log_every=12, max_bad_steps=max_bad_steps)
                trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), config)
                checkpointer = Checkpointer(self.create_tempdir().full_path, max_to_keep=3)
                callbacks = [CheckpointCallback(checkpointer, 2)]
                with self.assertLogs("workshop.train.callbacks", "WARNING") as logs:
                    if max_bad_steps is None:  # the default stop: its advice is a rerun on this workdir
                        with self.assertRaises(NonFiniteLossError):
                            trainer.fit(trainer.init_state(), _batches(nan_at), callbacks=callbacks,
                                        checkpointer=checkpointer)
                        checkpointer.wait()
                        self.assertEqual(checkpointer.all_steps(), [2, 4])
                    else:
                        state = trainer.fit(trainer.init_state(), _batches(nan_at), callbacks=callbacks,
                                            checkpointer=checkpointer)
                        self.assertEqual(int(state.step), 12)
                        self.assertEqual(trainer.bad_steps.rollbacks, 1)
                        # 12 holds the rolled-back (step-4) parameters, written after the rollback.
                        self.assertEqual(checkpointer.all_steps(), [2, 4, 12])
                self.assertIn("not writing the checkpoint of step 6: its last 1 step(s) had a NaN/Inf loss",
                              logs.output[0])
                self.assertIn("the newest checkpoint stays that of step 4", logs.output[0])
                checkpointer.close()

    def test_rollback_that_cannot_happen_is_an_error(self):
        config = _config(num_steps=12, max_bad_steps=2)
        trainer = Trainer(_Running(3, rngs=nnx.Rngs(0)), config)
        with self.assertRaisesRegex(NonFiniteLossError, r"steps 3-4\); no checkpointer to roll back to"):
            trainer.fit(trainer.init_state(), _batches(nan_at=(2, 3)))
        checkpointer = Checkpointer(self.create_tempdir().full_path)
        with self.assertRaisesRegex(NonFiniteLossError, "nothing to roll back to: no checkpoint before step 2"):
            trainer.fit(trainer.init_state(), _batches(nan_at=(2, 3)), checkpointer=checkpointer)
        no_rollbacks = Trainer(_Running(3, rngs=nnx.Rngs(0)), config.model_copy(update={"max_rollbacks": 0}))
        with self.assertRaisesRegex(NonFiniteLossError, "after 0 rollback.*max_rollbacks=0"):
            no_rollbacks.fit(no_rollbacks.init_state(), _batches(nan_at=(2, 3)), checkpointer=checkpointer)
        checkpointer.close()

    def test_binary_skips_an_injected_nan_stretch_and_rolls_back(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        data_dir = write_fixture_dataset(root / "fashion")
        config = write_config(root / "tiny_vae.py", num_steps=40, checkpoint_every=10, max_bad_steps=3)
        workdir = root / "run"
        run = RunLog(config, workdir, data_dir, nan_batches=(26, 27, 28))
        self.assertEqual(run.wait(), 0, run.stderr[-3000:])
        self.assertIn("the batches of data steps [26, 27, 28] are NaN", run.stderr)
        self.assertIn("(steps 26-28): rolled back to the checkpoint of step 20", run.stderr)
        records, _ = train_records(workdir)
        self.assertEqual(sorted(records), list(range(1, 41)))
        self.assertEqual([s for s, r in records.items() if r["skipped_steps"]], [26, 27, 28])
        self.assertNotIn("loss", records[27])
        self.assertEqual({r["rollbacks"] for s, r in records.items() if s >= 28}, {1})
        self.assertTrue(all(np.isfinite(r["loss"]) for s, r in records.items() if s not in (26, 27, 28)))


def _copied_shapes(hlo_text: str, dtype: str = "f32") -> list[tuple[int, ...]]:
    """Shapes of the `copy` instructions of `dtype` in compiled HLO text."""
    shapes = []
    for match in re.finditer(rf"= {dtype}\[([\d,]*)\]\S* copy\(", hlo_text):
        shapes.append(tuple(int(d) for d in match.group(1).split(",") if d))
    return shapes


class GuardCostTest(parameterized.TestCase):
    """The guard costs no copy of the state: the compiled step updates the donated buffers in place."""

    @parameterized.named_parameters(("adam", None, None), ("clip_cosine_ema", 100.0, 0.999))
    def test_compiled_step_copies_no_state_and_uses_every_donated_buffer(self, clip, ema):
        model = VAE(ModelConfiguration(model_type="vae", input_shape=(8, 8, 1), latent_dim=4, backbone_type="mlp",
                                       encoder_features=[48, 24], decoder_features=[24, 48]), rngs=nnx.Rngs(0))
        config = _config(ema_decay=ema, optimizer=OptimizerConfiguration(
            learning_rate=1e-3, schedule="warmup_cosine" if clip else "constant", warmup_steps=10 if clip else 0,
            grad_clip_norm=clip))
        trainer = Trainer(model, config)
        state = trainer.init_state()
        batch = {"x": np.zeros((16, 8, 8, 1), np.float32)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = trainer.train_step.lower(state, batch).compile()
            trainer.train_step(state, batch)
        self.assertEqual([str(w.message) for w in caught if "donat" in str(w.message)], [])
        # Every state leaf larger than a scalar has a shape no other array of the step has: a copy
        # of that shape is a copy of the parameters, the Adam moments or the EMA.
        state_shapes = {leaf.shape for leaf in jax.tree.leaves(state.to_checkpoint()) if leaf.ndim}
        copied = [s for s in _copied_shapes(compiled.as_text()) if s in state_shapes]
        self.assertEqual(copied, [])
        # The whole float state (parameters, moments, EMA) is updated in place: its bytes are aliased.
        float_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves((state.params, state.opt_state, state.ema_params))
                          if jnp.issubdtype(leaf.dtype, jnp.floating))
        self.assertGreaterEqual(compiled.memory_analysis().alias_size_in_bytes, float_bytes)
        self.assertGreater(float_bytes, 4 * math.prod((64, 48)))


if __name__ == "__main__":
    absltest.main()
