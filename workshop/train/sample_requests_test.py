"""The sample binary's library functions: labels, prompts, super-resolution inputs and panel, sampler lists, scores.

The binary end to end (a trained workdir, --compare and --quality included) is
sample_test.py and sample_prompt_test.py.
"""

import pathlib

import numpy as np
from absl.testing import absltest
from flax import nnx
from PIL import Image

from workshop.models.factories import create_model
from workshop.train import experiment, sample_requests
from workshop.train.configs import ddpm_super_resolution, vae


class _Trainer:
    def __init__(self, conditional):
        self.conditional = conditional


def _model(module, **parameters):
    config = module.get_config()
    config.model.parameters.update(parameters)
    return create_model(experiment.parse_config(config).model, rngs=nnx.Rngs(0))


class LabelsAndPromptsTest(absltest.TestCase):
    def test_labels_are_cycled_over_the_samples(self):
        labels = sample_requests.class_labels(_Trainer(True), ["0", "1", "2"], 5)
        np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
        self.assertEqual(labels.dtype, np.int32)
        with self.assertRaisesRegex(ValueError, "not conditional"):
            sample_requests.class_labels(_Trainer(False), ["0"], 5)
        with self.assertRaisesRegex(ValueError, r"class labels must be integers, got \['1', 'shoe'\]"):
            sample_requests.class_labels(_Trainer(True), ["1", "shoe"], 5)

    def test_prompt_files_are_read_and_bad_ones_explained(self):
        path = pathlib.Path(self.create_tempdir().full_path) / "prompt.npy"
        np.save(path, np.arange(5, dtype=np.int32))
        np.testing.assert_array_equal(sample_requests.read_prompt(None, path=path), np.arange(5))
        path.with_suffix(".txt").write_text("not an array")
        with self.assertRaisesRegex(ValueError, "^cannot read a .npy array"):
            sample_requests.read_npy(path.with_suffix(".txt"))
        with self.assertRaisesRegex(ValueError, "^cannot read a .npy array .*No such file"):
            sample_requests.read_prompt(None, path=path.parent / "missing.npy")
        with self.assertRaisesRegex(ValueError, "exactly one"):
            sample_requests.read_prompt(None, text="a", path=path)


class SuperResolutionTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _model(ddpm_super_resolution, hidden_size=16, depth=1, num_heads=2)

    def test_originals_are_averaged_over_the_model_blocks(self):
        originals = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
        low_res = sample_requests.super_resolution_input(self.model, originals=originals)
        np.testing.assert_allclose(low_res, originals.reshape(2, 7, 4, 7, 4, 1).mean(axis=(2, 4)), atol=1e-6)
        given = np.random.default_rng(1).integers(0, 256, (3, 7, 7, 1)).astype(np.uint8)
        np.testing.assert_allclose(sample_requests.super_resolution_input(self.model, low_res=given), given / 255.0,
                                   atol=1e-6)

    def test_wrong_inputs_and_models_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"low_res must be \[B, 7, 7, 1\] images .*got shape \(2, 14, 14, 1\)"):
            sample_requests.super_resolution_input(self.model, low_res=np.zeros((2, 14, 14, 1), np.float32))
        with self.assertRaisesRegex(ValueError, r"values must lie in \[0, 1\]"):
            sample_requests.super_resolution_input(self.model, low_res=np.full((1, 7, 7, 1), 2.0, np.float32))
        with self.assertRaisesRegex(ValueError, "model_type 'vae' is not a super-resolution model"):
            sample_requests.super_resolution_input(_model(vae), low_res=np.zeros((1, 7, 7, 1), np.float32))

    def test_the_panel_shows_each_input_enlarged_beside_its_sample_and_original(self):
        low_res = np.random.default_rng(0).integers(0, 256, (1, 7, 7, 1)) / 255.0
        samples = np.zeros((1, 28, 28, 1), np.float32)
        out = pathlib.Path(self.create_tempdir().full_path)
        two = sample_requests.save_super_resolution_panel(low_res, samples, out / "two.png")
        three = sample_requests.save_super_resolution_panel(low_res, samples, out / "three.png", originals=samples)
        with Image.open(two) as two, Image.open(three) as picture:
            # One 28x28 image per grid (2-pixel padding), enlarged 3x under an 18-pixel title band, 12-pixel gaps.
            self.assertEqual((two.width, picture.width, picture.height), (2 * 96 + 12, 3 * 96 + 2 * 12, 96 + 18))
            for r, c in ((0, 0), (5, 13), (27, 27)):  # input pixel (r, c) is low-resolution pixel (r // 4, c // 4)
                self.assertEqual(picture.getpixel((3 * (2 + c) + 1, 18 + 3 * (2 + r) + 1))[0],
                                 round(low_res[0, r // 4, c // 4, 0] * 255))


class CompareAndQualityTest(absltest.TestCase):
    def test_sampler_steps_pairs(self):
        self.assertEqual(sample_requests.parse_sampler_steps(["ddim:50", "dpm_solver_pp_2m:20"]),
                         [("ddim", 50), ("dpm_solver_pp_2m", 20)])
        for bad in ("ddim", "ddim:", ":50", "ddim:5.5", "ddim:-3"):
            with self.assertRaisesRegex(ValueError, f"entry '{bad}' must be sampler:steps, e.g. ddim:50"):
                sample_requests.parse_sampler_steps(["heun:10", bad])

    def test_quality_line(self):
        scores = dict(fid=12.5, kid=0.01234, kid_std=0.00056, precision=0.5, recall=0.25, density=1.125,
                      coverage=0.75, num_samples=2000, num_reference=10000)
        self.assertEqual(sample_requests.describe_quality(scores),
                         "FID 12.50, KID 0.0123 +- 0.0006, precision 0.500, recall 0.250, density 1.125, coverage "
                         "0.750 (2000 samples vs 10000 test images)")


if __name__ == "__main__":
    absltest.main()
