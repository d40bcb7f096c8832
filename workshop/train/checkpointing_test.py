"""Tests for checkpoint round-trips and the mismatch error."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import TrainingConfiguration
from workshop.train.checkpointing import CheckpointMismatchError, Checkpointer, array_shapes
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


class CheckpointingTest(absltest.TestCase):
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

    def test_missing_checkpoint(self):
        ckpt = Checkpointer(self.create_tempdir().full_path)
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint in"):
            ckpt.restore(_state()[1])
        ckpt.close()

    def test_array_shapes_paths(self):
        self.assertEqual(array_shapes({"a": {"b": jnp.zeros((2, 3))}, "c": [jnp.zeros(4)]}), {"a/b": [2, 3], "c/0": [4]})


if __name__ == "__main__":
    absltest.main()
