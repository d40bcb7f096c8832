"""The sample binary (`//workshop/train:sample`) on a tiny super-resolution workdir: flags, outputs, refusals."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

import jax.numpy as jnp
import numpy as np
from absl import app
from absl.testing import absltest, flagsaver
from flax import nnx
from PIL import Image

from workshop.eval import feature_net
from workshop.models.diffusion.super_resolution import average_pool
from workshop.train import experiment, sample, train_binary_testing
from workshop.train.configs import ddpm_super_resolution


def _config(data_dir):
    config = ddpm_super_resolution.get_config()
    config.model.num_timesteps = 20
    return train_binary_testing.shrink_run(config, data_dir, hidden_size=16, depth=1, num_heads=2, sampling_steps=4)


class SampleBinaryTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = pathlib.Path(absltest.get_default_test_tmpdir())
        data_dir = train_binary_testing.write_fixture_dataset(root / "fashion", n_train=16, n_test=8)
        cls.workdir = root / "sr"
        experiment.train_and_evaluate(_config(data_dir), cls.workdir)
        cls.low_res = np.random.default_rng(0).uniform(size=(3, 7, 7, 1)).astype(np.float32)
        cls.low_res_path = root / "low_res.npy"
        np.save(cls.low_res_path, cls.low_res)

    def _run(self, **flags):
        with flagsaver.flagsaver(workdir=str(self.workdir), **flags):
            sample.main(["sample"])

    def test_low_res_gives_one_consistent_sample_per_image_and_a_side_by_side_picture(self):
        out = pathlib.Path(self.create_tempdir().full_path)
        self._run(low_res=str(self.low_res_path), consistency=True, sampler="ddim", steps=3, output_dir=str(out))
        samples = np.load(out / "samples.npy")
        self.assertEqual(samples.shape, (3, 28, 28, 1))
        # --consistency: each 4x4 block mean of the result is its low-resolution pixel.
        np.testing.assert_allclose(np.asarray(average_pool(jnp.asarray(samples), 4)), self.low_res, atol=1e-5)
        with Image.open(out / "super_resolution.png") as picture, Image.open(out / "samples.png") as grid:
            # Panels enlarged 3x under an 18-pixel title band; samples.png is enlarged 2x.
            self.assertEqual(picture.height, grid.height // 2 * 3 + 18)

    def test_test_images_are_averaged_down_and_shown_beside_their_samples(self):
        out = pathlib.Path(self.create_tempdir().full_path)
        self._run(test_images=2, consistency=True, sampler="ddim", steps=3, output_dir=str(out))
        samples = np.load(out / "samples.npy")
        self.assertEqual(samples.shape, (2, 28, 28, 1))
        originals = np.asarray(experiment.data_source(experiment.load_experiment_config(self.workdir).data,
                                                      train=False)["x"][:2], np.float32) / 255.0
        np.testing.assert_allclose(np.asarray(average_pool(jnp.asarray(samples), 4)),
                                   np.asarray(average_pool(jnp.asarray(originals), 4)), atol=1e-5)
        with Image.open(out / "super_resolution.png") as picture, Image.open(out / "samples.png") as grid:
            self.assertEqual(picture.width, 3 * (grid.width // 2 * 3) + 2 * 12)  # three panels, 12-pixel gaps

    def test_quality_scores_the_samples_against_the_test_set(self):
        out = pathlib.Path(self.create_tempdir().full_path)
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: self.create_tempdir().full_path}):
            with self.assertRaisesRegex(app.UsageError, "(?s)--quality: feature network weights not found.*train_feature_net"):
                self._run(quality=True, num_samples=8, sampler="ddim", steps=2, output_dir=str(out))
            net = feature_net.FashionMNISTClassifier(rngs=nnx.Rngs(0))  # random weights: a fixture
            feature_net.save_feature_net(net, feature_net.default_weights_path(), {})
            with self.assertLogs(level="WARNING"):  # fewer than 2000 samples
                self._run(quality=True, num_samples=8, sampler="ddim", steps=2, output_dir=str(out))
        scores = json.loads((out / "quality.json").read_text())
        self.assertEqual((scores["num_samples"], scores["num_reference"]), (8, 8))  # the fixture's 8 test images
        self.assertGreater(scores["fid"], 0.0)
        for name in ("precision", "recall", "density", "coverage"):
            self.assertBetween(scores[name], 0.0, 8.0)

    def test_compare_draws_each_sampler_from_the_same_seed(self):
        out = pathlib.Path(self.create_tempdir().full_path)
        self._run(compare=["ddim:3", "dpm_solver_pp_2m:2"], num_samples=2, output_dir=str(out))
        self.assertTrue((out / "samplers.png").exists())
        ddim = np.load(out / "ddim_3" / "samples.npy")
        self.assertEqual(ddim.shape, (2, 28, 28, 1))
        again = pathlib.Path(self.create_tempdir().full_path)
        self._run(sampler="ddim", steps=3, num_samples=2, output_dir=str(again))
        np.testing.assert_array_equal(np.load(again / "samples.npy"), ddim)

    def test_bad_flags_name_the_flag_and_what_was_expected(self):
        out = self.create_tempdir().full_path
        wrong = pathlib.Path(out) / "wrong.npy"
        np.save(wrong, np.zeros((2, 14, 14, 1), np.float32))
        with self.assertRaisesRegex(app.UsageError, r"--low_res=.*wrong\.npy.*\[B, 7, 7, 1\]"):
            self._run(low_res=str(wrong), output_dir=out)
        with self.assertRaisesRegex(app.UsageError, "--low_res or --test_images, not both"):
            self._run(low_res=str(wrong), test_images=2, output_dir=out)
        with self.assertRaisesRegex(app.UsageError, "--test_images=9, but the test split .* has 8 images"):
            self._run(test_images=9, output_dir=out)
        with self.assertRaisesRegex(app.UsageError, "must be sampler:steps"):
            self._run(compare=["ddim"], output_dir=out)
        with self.assertRaisesRegex(app.UsageError, "not conditional"):
            self._run(labels=["1"], output_dir=out)
        with self.assertRaisesRegex(app.UsageError, "steps"):
            self._run(sampler="ddim", steps=21, num_samples=1, output_dir=out)

    def test_workdir_without_a_checkpoint_is_refused_in_one_line_and_left_as_it_was(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        shutil.copy(self.workdir / "config.json", workdir / "config.json")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        run = subprocess.run([sys.executable, "-m", "workshop.train.sample", f"--workdir={workdir}"], env=env,
                             capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertNotIn("Traceback", run.stderr)
        self.assertRegex(run.stderr.splitlines()[-1],
                         rf"^sample: error: {workdir} has no checkpoint yet: train it first "
                         rf"\(//workshop/train:train --workdir={workdir}\)")
        self.assertEqual(sorted(p.name for p in workdir.iterdir()), ["config.json"])  # no checkpoints/, generated/


if __name__ == "__main__":
    absltest.main()
