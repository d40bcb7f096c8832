"""Upstream runs: found with clear errors, fingerprinted by their weights (a copy is the same run), changes refused."""

import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.latent import content_hash
from workshop.train import experiment, train_binary_testing, upstream
from workshop.train.configs import vae


class _Trainer:
    """Stands in for a restored trainer: `model_from_state` returns the model it holds."""

    def __init__(self, model):
        self.model = model

    def model_from_state(self, state):
        return self.model


def _fake_workdir(root: pathlib.Path, steps=(2,)) -> pathlib.Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    for step in steps:
        (root / "checkpoints" / str(step)).mkdir()
    return root


def _restoring(model):
    """A `restore` that returns `model` for any workdir and step."""
    return lambda workdir, step: ("cfg", _Trainer(model), None, {"step": step})


def _tiny_vae(data_dir, num_steps):
    config = vae.get_config()
    config.model.update(latent_dim=2, encoder_features=[8], decoder_features=[8])
    return train_binary_testing.shrink_run(config, data_dir, num_steps=num_steps)


class FindUpstreamTest(absltest.TestCase):
    def test_steps_are_the_digit_directories_ascending(self):
        root = _fake_workdir(pathlib.Path(self.create_tempdir().full_path), steps=(10, 2, 4))
        (root / "checkpoints" / "6.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save
        (root / "checkpoints" / "8").write_text("")  # not a directory
        path, steps = upstream.find_upstream(root, field="teacher_workdir", role="teacher")
        self.assertEqual((path, steps), (root, [2, 4, 10]))
        self.assertEqual(upstream.checkpoint_steps(root / "nowhere"), [])

    def test_missing_config_or_checkpoint_names_the_field_and_the_path(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        with self.assertRaisesRegex(FileNotFoundError, rf"^teacher_workdir {root}: {root} is not a workdir written by "
                                                       rf"//workshop/train:train \(no config.json: .*does not exist\);"
                                                       " train the teacher there first"):
            upstream.find_upstream(str(root), field="teacher_workdir", role="teacher")
        (root / "config.json").write_text("{}")
        with self.assertRaisesRegex(FileNotFoundError, f"autoencoder_workdir {root}: {root} has no checkpoint yet; "
                                                       "train the first stage there first"):
            upstream.find_upstream(str(root), field="autoencoder_workdir", role="first stage")


class FingerprintTest(absltest.TestCase):
    def test_the_fingerprint_follows_the_weights_not_the_workdir(self):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        first = _fake_workdir(pathlib.Path(self.create_tempdir().full_path))
        copy = pathlib.Path(self.create_tempdir().full_path) / "copy"
        shutil.copytree(first, copy)
        found = upstream.load_upstream(first, field="teacher_workdir", role="teacher", restore=_restoring(model))
        moved = upstream.load_upstream(copy, field="teacher_workdir", role="teacher", restore=_restoring(model))
        self.assertLen(found.sha256, 64)
        self.assertEqual(moved.sha256, found.sha256)
        self.assertEqual((found.step, found.checkpoint), (2, first / "checkpoints" / "2"))
        self.assertEqual(moved.record("teacher"), {"teacher_workdir": str(copy),
                                                   "teacher_checkpoint": str(copy / "checkpoints" / "2"),
                                                   "teacher_hash": found.sha256})
        # One weight changed by one float32 ulp is another upstream.
        kernel = np.asarray(model.kernel[...])
        model.kernel[...] = jnp.asarray(kernel).at[0, 0].set(np.nextafter(kernel[0, 0], np.float32(np.inf)))
        changed = upstream.load_upstream(copy, field="teacher_workdir", role="teacher", restore=_restoring(model))
        self.assertNotEqual(changed.sha256, found.sha256)

    def test_a_changed_upstream_is_refused_naming_both_checkpoints_and_hashes(self):
        found = upstream.Upstream(field="teacher_workdir", role="teacher", workdir=pathlib.Path("/runs/fm"),
                                  checkpoint=pathlib.Path("/runs/fm/checkpoints/4"), step=4, config=None, model=None,
                                  sha256="b" * 64)
        for recorded in (None, "b" * 64):  # nothing recorded yet, or the same weights
            upstream.check_unchanged(found, recorded_checkpoint="/runs/fm/checkpoints/2", recorded_hash=recorded,
                                     since="x was made from it", remedy="start over")
        with self.assertRaisesRegex(upstream.UpstreamChangedError,
                                    r"^the teacher \(teacher_workdir /runs/fm\) has changed since x was made from it: "
                                    r"the recorded checkpoint /runs/fm/checkpoints/2 had weights SHA-256 a{16}\.\.\., "
                                    r"/runs/fm/checkpoints/4 has b{16}\.\.\.; start over$"):
            upstream.check_unchanged(found, recorded_checkpoint="/runs/fm/checkpoints/2", recorded_hash="a" * 64,
                                     since="x was made from it", remedy="start over")

        class Changed(ValueError):
            pass

        with self.assertRaises(Changed):
            upstream.check_unchanged(found, recorded_checkpoint=None, recorded_hash="a" * 64, since="x", remedy="y",
                                     error=Changed)


class TrainedUpstreamTest(absltest.TestCase):
    def test_a_copied_run_is_the_same_upstream_and_a_run_trained_further_is_not(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        data_dir = train_binary_testing.write_fixture_dataset(root / "fashion", n_train=16, n_test=8)
        workdir = root / "vae"
        experiment.train_and_evaluate(_tiny_vae(data_dir, 2), workdir)
        found = upstream.load_upstream(workdir, field="teacher_workdir", role="teacher",
                                       restore=experiment.restore_workdir)
        _, trainer, state, _ = experiment.restore_workdir(workdir)
        # The weights hashed are the restored model's (EMA) weights, what a downstream run uses.
        self.assertEqual(found.sha256, content_hash(trainer.model_from_state(state)))
        shutil.copytree(workdir, root / "copy")
        copied = upstream.load_upstream(root / "copy", field="teacher_workdir", role="teacher",
                                        restore=experiment.restore_workdir)
        self.assertEqual(copied.sha256, found.sha256)
        self.assertEqual(copied.checkpoint, root / "copy" / "checkpoints" / "2")
        experiment.train_and_evaluate(_tiny_vae(data_dir, 4), workdir)
        further = upstream.load_upstream(workdir, field="teacher_workdir", role="teacher",
                                         restore=experiment.restore_workdir)
        self.assertEqual(further.step, 4)
        self.assertNotEqual(further.sha256, found.sha256)
        with self.assertRaisesRegex(upstream.UpstreamChangedError,
                                    f"checkpoints/2 had weights SHA-256 {found.sha256[:16]}.*checkpoints/4 has "
                                    f"{further.sha256[:16]}"):
            upstream.check_unchanged(further, recorded_checkpoint=str(found.checkpoint), recorded_hash=found.sha256,
                                     since="the student was made from it", remedy="use a new workdir")


if __name__ == "__main__":
    absltest.main()
