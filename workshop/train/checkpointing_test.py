"""Tests for checkpoint round-trips (model state beyond parameters included), the mismatch error, corruption checks
and fallback, crashes mid-save."""

import errno
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from workshop.core.configuration import ModelConfiguration, TrainingConfiguration
from workshop.data.datasets.toy import sample_toy
from workshop.models.ebm import EBM
from workshop.train.callbacks import CheckpointCallback
from workshop.train.checkpointing import (
    CheckpointMismatchError,
    CheckpointSaveError,
    Checkpointer,
    InvalidCheckpointError,
    NoValidCheckpointError,
    array_shapes,
    fingerprint,
)
from workshop.train.trainer import Trainer


class _Linear(nnx.Module):
    def __init__(self, din, dout, *, rngs):
        self.layer = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x, *, rngs):
        return {"y": self.layer(x)}

    def loss_fn(self, batch, outputs):
        return {"loss": jnp.mean(outputs["y"] ** 2)}

    def generate(self, *, n_samples, rngs):
        return jnp.zeros((n_samples, 1))


def _state(din=3, dout=2, seed=0):
    trainer = Trainer(_Linear(din, dout, rngs=nnx.Rngs(seed)), TrainingConfiguration(num_steps=5))
    return trainer, trainer.init_state()


def _biggest_file(directory):
    """The largest array data file (OCDBT's `d/` folders): mostly array bytes."""
    files = [p for p in pathlib.Path(directory).rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_one_bit(step_dir):
    path = _biggest_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(step_dir):
    path = _biggest_file(step_dir)
    os.truncate(path, path.stat().st_size // 2)


def _garble_record(step_dir):
    (pathlib.Path(step_dir) / "record" / "metadata").write_text("{garbage")


def _two_checkpoints(directory, din=300, dout=200):
    """Checkpoints at steps 1 and 2 (different parameters); returns (trainer, states by step)."""
    trainer, state = _state(din, dout)
    ckpt = Checkpointer(directory)
    saved = {}
    for _ in range(2):
        state, _ = trainer.train_step(state, {"x": np.ones((4, din), np.float32)})
        ckpt.save(state)
        ckpt.wait()
        saved[int(state.step)] = jax.device_get(state.to_checkpoint())
    ckpt.close()
    return trainer, saved


def _disk_full_at(step):
    """Patches orbax's writer of the JSON record to fail with ENOSPC in the background save of `step`."""
    real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def save_fn(self, x, directory):
        if pathlib.Path(directory).parent.name.startswith(f"{step}.orbax-checkpoint-tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return await real(self, x, directory)

    return mock.patch.object(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)


def _wait_for_background_save(ckpt):
    deadline = time.monotonic() + 60
    while ckpt._manager.is_saving_in_progress() and time.monotonic() < deadline:
        time.sleep(0.01)


class _WaitForSaveAt:
    """A callback that lets the background save of `step` end before the next step starts."""

    def __init__(self, ckpt, step):
        self.ckpt, self.step, self.steps = ckpt, step, []

    def on_step_end(self, trainer, step, state):
        self.steps.append(step)
        if step == self.step:
            _wait_for_background_save(self.ckpt)


class CheckpointingTest(parameterized.TestCase):
    def test_round_trip_is_exact(self):
        trainer, state = _state()
        state, _ = trainer.train_step(state, {"x": np.ones((4, 3), np.float32)})
        ckpt = Checkpointer(self.create_tempdir().full_path)
        ckpt.save(state, metadata={"data_step": 1, "note": "x"})
        ckpt.wait()
        _, fresh = _state(seed=1)
        restored, record = ckpt.restore(fresh)
        self.assertEqual(record["data_step"], 1)
        self.assertEqual(record["note"], "x")
        self.assertEqual(int(restored.step), 1)
        jax.tree.map(np.testing.assert_array_equal, restored.to_checkpoint(), state.to_checkpoint())
        ckpt.close()

    def test_keeps_the_newest(self):
        trainer, state = _state()
        ckpt = Checkpointer(self.create_tempdir().full_path, max_to_keep=2)
        for _ in range(3):
            state, _ = trainer.train_step(state, {"x": np.ones((4, 3), np.float32)})
            ckpt.save(state)
            ckpt.wait()
        self.assertEqual(ckpt.all_steps(), [2, 3])
        self.assertEqual(ckpt.latest_step(), 3)
        ckpt.close()

    def test_mismatch_names_arrays_and_config_fields(self):
        _, state = _state(din=3, dout=2)
        ckpt = Checkpointer(self.create_tempdir().full_path)
        ckpt.save(state, metadata={"model_config": {"latent_dim": 2, "model_type": "toy"}})
        ckpt.wait()
        _, other = _state(din=3, dout=5)
        with self.assertRaises(CheckpointMismatchError) as ctx:
            ckpt.restore(other, model_config={"latent_dim": 5, "model_type": "toy"})
        message = str(ctx.exception)
        self.assertIn("params/layer/kernel: checkpoint [3, 2] vs model [3, 5]", message)
        self.assertIn("latent_dim: checkpoint 2 vs now 5", message)
        # The refused restore left the checkpoint readable.
        restored, _ = ckpt.restore(_state(din=3, dout=2)[1])
        self.assertEqual(restored.params["layer"]["kernel"][...].shape, (3, 2))
        ckpt.close()

    def test_unfinished_save_is_ignored(self):
        _, state = _state()
        directory = self.create_tempdir().full_path
        ckpt = Checkpointer(directory)
        ckpt.save(state)
        ckpt.close()
        # What a crash mid-save leaves behind: orbax's temporary directory.
        os.makedirs(os.path.join(directory, "7.orbax-checkpoint-tmp-1234", "state"))
        again = Checkpointer(directory)
        self.assertEqual(again.latest_step(), 0)
        again.restore(_state()[1])
        again.close()

    @parameterized.named_parameters(
        ("flipped_bit", _flip_one_bit, "checksum of"),
        ("truncated_data", _truncate, "arrays are unreadable"),
        ("garbled_record", _garble_record, "record is unreadable"),
    )
    def test_corrupted_latest_falls_back_to_the_previous(self, corrupt, reason):
        directory = self.create_tempdir().full_path
        trainer, saved = _two_checkpoints(directory)
        corrupt(os.path.join(directory, "2"))
        ckpt = Checkpointer(directory)
        with self.assertLogs("workshop.train.checkpointing", "WARNING") as logs:
            restored, record = ckpt.restore(trainer.init_state())
        self.assertIn(f"checkpoint {directory}/2 is rejected", logs.output[0])
        self.assertIn(reason, logs.output[0])
        self.assertEqual(record["step"], 1)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.to_checkpoint()), saved[1])
        # Asked for by its step, the corrupted checkpoint is an error, not a fallback.
        with self.assertRaisesRegex(InvalidCheckpointError, f"{directory}/2 is rejected.*{reason}"):
            ckpt.restore(trainer.init_state(), step=2)
        ckpt.close()

    def test_rejected_checkpoint_is_set_aside_and_its_step_saved_again(self):
        directory = self.create_tempdir().full_path
        trainer, saved = _two_checkpoints(directory)
        _flip_one_bit(os.path.join(directory, "2"))
        ckpt = Checkpointer(directory)
        with self.assertLogs("workshop.train.checkpointing", "WARNING"):
            state, _ = ckpt.restore(trainer.init_state(), set_aside_rejected=True)
        self.assertEqual(ckpt.all_steps(), [1])
        self.assertTrue(os.path.isdir(os.path.join(directory, "rejected", "2")))
        state, _ = trainer.train_step(state, {"x": np.ones((4, 300), np.float32)})
        ckpt.save(state)
        ckpt.wait()
        self.assertEqual(ckpt.all_steps(), [1, 2])
        restored, _ = ckpt.restore(trainer.init_state())
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.to_checkpoint()), saved[2])
        ckpt.close()

    def test_every_checkpoint_rejected_lists_them_all(self):
        directory = self.create_tempdir().full_path
        trainer, _ = _two_checkpoints(directory)
        _flip_one_bit(os.path.join(directory, "2"))
        _garble_record(os.path.join(directory, "1"))
        ckpt = Checkpointer(directory)
        with self.assertLogs("workshop.train.checkpointing", "WARNING"):
            with self.assertRaisesRegex(NoValidCheckpointError, r"(?s)every checkpoint.*/2 is rejected.*/1 is "):
                ckpt.restore(trainer.init_state())
        ckpt.close()

    def test_checkpoint_holding_nan_is_rejected(self):
        directory = self.create_tempdir().full_path
        trainer, state = _state()
        ckpt = Checkpointer(directory)
        ckpt.save(state)
        ckpt.wait()
        kernel = state.params["layer"]["kernel"]
        kernel[...] = kernel[...].at[0, 0].set(np.nan)
        ckpt.save(state.replace(step=state.step + 1))
        ckpt.wait()
        with self.assertLogs("workshop.train.checkpointing", "WARNING") as logs:
            _, record = ckpt.restore(trainer.init_state())
        self.assertEqual(record["step"], 0)
        self.assertIn("NaN/Inf values in params/layer/kernel (1)", logs.output[0])
        ckpt.close()

    def test_restore_before_and_discard_from(self):
        directory = self.create_tempdir().full_path
        trainer, saved = _two_checkpoints(directory)
        ckpt = Checkpointer(directory)
        _, record = ckpt.restore(trainer.init_state(), before=2)
        self.assertEqual(record["step"], 1)
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint before step 1 in"):
            ckpt.restore(trainer.init_state(), before=1)
        self.assertEqual(ckpt.discard_from(2), [2])
        self.assertEqual(ckpt.all_steps(), [1])
        ckpt.close()

    def test_crash_during_a_save_leaves_the_previous_checkpoint_usable(self):
        # A real orbax save cut short: the child process exits while the
        # background write of step 2 is still running.
        directory = self.create_tempdir().full_path
        child = textwrap.dedent(f"""
            import os, time, numpy as np
            from flax import nnx
            from workshop.core.configuration import TrainingConfiguration
            from workshop.train.checkpointing import Checkpointer
            from workshop.train.trainer import Trainer

            class Big(nnx.Module):
                def __init__(self):
                    self.layer = nnx.Linear(1000, 2000, rngs=nnx.Rngs(0))
                def __call__(self, x, *, rngs):
                    return {{"y": self.layer(x)}}
                def loss_fn(self, batch, outputs):
                    return {{"loss": (outputs["y"] ** 2).mean()}}

            trainer = Trainer(Big(), TrainingConfiguration(num_steps=5))
            state = trainer.init_state()
            ckpt = Checkpointer({directory!r})
            for _ in range(2):
                state, _ = trainer.train_step(state, {{"x": np.ones((2, 1000), np.float32)}})
                ckpt.save(state)
                if int(state.step) == 1:
                    ckpt.wait()
            # Die once the background write of step 2 has begun (on a busy machine the
            # thread may not have started when save() returns), before it can finish.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    n.startswith("2.orbax-checkpoint-tmp") for n in os.listdir({directory!r})):
                time.sleep(0.0005)
            os._exit(3)  # the process dies mid-save, like kill -9
        """)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 3, done.stderr[-3000:])
        leftovers = [n for n in os.listdir(directory) if n.startswith("2.orbax-checkpoint-tmp")]
        self.assertTrue(leftovers, f"expected an unfinished save of step 2, found {os.listdir(directory)}")
        self.assertNotIn("2", os.listdir(directory))

        class Big(nnx.Module):
            def __init__(self):
                self.layer = nnx.Linear(1000, 2000, rngs=nnx.Rngs(1))

            def __call__(self, x, *, rngs):
                return {"y": self.layer(x)}

            def loss_fn(self, batch, outputs):
                return {"loss": (outputs["y"] ** 2).mean()}

        trainer = Trainer(Big(), TrainingConfiguration(num_steps=5))
        reader = Checkpointer(directory)  # a reader leaves it: a live run may be writing it
        self.assertEqual(reader.all_steps(), [1])
        reader.close()
        self.assertTrue(all(os.path.isdir(os.path.join(directory, n)) for n in leftovers))
        ckpt = Checkpointer(directory, remove_unfinished_saves=True)  # the writer removes the leftover
        self.assertEqual(ckpt.all_steps(), [1])
        restored, record = ckpt.restore(trainer.init_state())
        self.assertEqual((record["step"], int(restored.step)), (1, 1))
        ckpt.save(restored.replace(step=restored.step + 1))
        ckpt.wait()
        self.assertEqual(ckpt.all_steps(), [1, 2])
        self.assertFalse([n for n in os.listdir(directory) if "tmp" in n])
        ckpt.close()

    def test_fingerprint_sees_one_bit_and_every_dtype(self):
        tree = {
            "f32": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
            "bf16": jnp.ones(4, jnp.bfloat16),
            "i32": jnp.array(7, jnp.int32),
            "flag": jnp.array([True, False]),
            "u8": jnp.arange(3, dtype=jnp.uint8),
        }
        base = fingerprint(tree)
        self.assertEqual(sorted(base), ["bf16", "f32", "flag", "i32", "u8"])
        self.assertEqual(fingerprint(jax.tree.map(jnp.copy, tree)), base)
        flipped = np.asarray(tree["f32"]).copy()
        flipped.view(np.uint32)[1, 2] ^= 1
        self.assertNotEqual(fingerprint({**tree, "f32": jnp.asarray(flipped)})["f32"], base["f32"])
        # Swapping two words keeps the plain sum; the position-weighted one sees it.
        swapped = fingerprint({**tree, "f32": jnp.arange(6, dtype=jnp.float32)[::-1].reshape(2, 3)})["f32"]
        self.assertEqual(swapped[0], base["f32"][0])
        self.assertNotEqual(swapped[1], base["f32"][1])
        self.assertNotEqual(fingerprint({**tree, "flag": jnp.array([True, True])})["flag"], base["flag"])

    def test_missing_checkpoint(self):
        ckpt = Checkpointer(self.create_tempdir().full_path)
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint in"):
            ckpt.restore(_state()[1])
        ckpt.close()

    def test_a_failed_background_save_is_reported_in_one_line_and_the_older_checkpoints_stay(self):
        directory = pathlib.Path(self.create_tempdir().full_path)
        trainer, state = _state()
        ckpt = Checkpointer(directory, remove_unfinished_saves=True)
        state, _ = trainer.train_step(state, {"x": np.ones((4, 3), np.float32)})
        ckpt.save(state)
        ckpt.wait()
        state, _ = trainer.train_step(state, {"x": np.ones((4, 3), np.float32)})
        with _disk_full_at(2):
            ckpt.save(state)  # returns; the write fails in the background
            _wait_for_background_save(ckpt)
            with self.assertRaises(CheckpointSaveError) as ctx:
                ckpt.check_saves()
        message = str(ctx.exception)
        self.assertRegex(message, rf"^could not write the checkpoint of step 2 to {directory}: No space left on "
                                  r"device \(\d+ MiB free there\); the checkpoints of steps \[1\] are intact: free "
                                  r"space, then run the same command to resume from step 1$")
        self.assertNotIn("\n", message)
        with self.assertRaises(CheckpointSaveError):  # every later use says so too
            ckpt.wait()
        ckpt.close()  # does not raise the reported error again
        # Nothing is lost: the unfinished save is only a temporary directory; the next run restores step 1.
        self.assertEqual(sorted(p.name for p in directory.iterdir()), ["1", "2.orbax-checkpoint-tmp"])
        again = Checkpointer(directory, remove_unfinished_saves=True)
        self.assertEqual(again.all_steps(), [1])
        self.assertEqual(again.restore(trainer.abstract_state())[1]["step"], 1)
        again.close()

    def test_training_stops_at_the_step_after_a_failed_save(self):
        # Saves every 2 steps; the save of step 4 fails: the run stops at step 5, not at step 6's save.
        directory = pathlib.Path(self.create_tempdir().full_path)
        trainer, state = _state()
        ckpt = Checkpointer(directory)
        waiter = _WaitForSaveAt(ckpt, 4)
        batches = iter([{"x": np.ones((4, 3), np.float32)}] * 5)
        with _disk_full_at(4), self.assertRaisesRegex(CheckpointSaveError, "checkpoint of step 4 .* steps \\[2\\]"):
            trainer.fit(state, batches, callbacks=[CheckpointCallback(ckpt, 2), waiter])
        self.assertEqual(waiter.steps, [1, 2, 3, 4])
        ckpt.close()
        self.assertEqual(Checkpointer(directory).all_steps(), [2])

    def test_array_shapes_paths(self):
        self.assertEqual(array_shapes({"a": {"b": jnp.zeros((2, 3))}, "c": [jnp.zeros(4)]}), {"a/b": [2, 3], "c/0": [4]})


class ModelStateTest(absltest.TestCase):
    """State that is not a parameter (an EBM's replay buffer of MCMC chains) is checkpointed and resumes."""

    def test_ebm_round_trip_resumes_the_same_chains(self):
        cfg = ModelConfiguration(model_type="ebm", input_shape=(2,), encoder_features=[16, 16], backbone_type="mlp",
                                 parameters=dict(mcmc_steps=5, step_size=0.01, buffer_size=64, init_range=(-3.0, 3.0),
                                                 prior_std=2.0))
        training = TrainingConfiguration(num_steps=10, ema_decay=0.9)
        data = sample_toy("eight_gaussians", 64)[0]
        batches = [{"x": data[i * 16:(i + 1) * 16], "label": np.zeros(16, np.int32)} for i in range(4)]
        trainer = Trainer(EBM(cfg, rngs=nnx.Rngs(0)), training)
        state = trainer.init_state()
        for batch in batches[:2]:
            state, _ = trainer.train_step(state, batch)
        ckpt = Checkpointer(self.create_tempdir().full_path)
        ckpt.save(state)
        ckpt.wait()
        fresh = Trainer(EBM(cfg, rngs=nnx.Rngs(1)), training)  # other initial weights and buffer
        restored, record = ckpt.restore(fresh.init_state())
        ckpt.close()
        self.assertIn("rest/replay_buffer", record["shapes"])
        np.testing.assert_array_equal(restored.rest["replay_buffer"][...], state.rest["replay_buffer"][...])
        # The buffer differs from a fresh one, so equal chains below come from the restored buffer.
        fresh_buffer = fresh.init_state().rest["replay_buffer"][...]
        self.assertFalse(np.array_equal(fresh_buffer, state.rest["replay_buffer"][...]))
        resumed = restored
        for batch in batches[2:]:
            state, m1 = trainer.train_step(state, batch)
            resumed, m2 = fresh.train_step(resumed, batch)
        np.testing.assert_allclose(resumed.rest["replay_buffer"][...], state.rest["replay_buffer"][...], atol=1e-6)
        self.assertAlmostEqual(float(m1["loss"]), float(m2["loss"]), places=5)


if __name__ == "__main__":
    absltest.main()
