"""Tests for callbacks and image grids."""

import json
import pathlib
import types

import numpy as np
from absl.testing import absltest
from PIL import Image

from workshop.train import callbacks as cb
from workshop.train.image_grid import (density_image, image_grid, labelled_panels, save_image_grid,
                                       save_sample_picture)


class _FakeTrainer:
    def __init__(self):
        self.stopped = None

    def request_stop(self, reason):
        self.stopped = reason

    def generate(self, state, n, seed=0):
        return np.linspace(0, 1, n * 4 * 4).reshape(n, 4, 4, 1)


class ImageGridTest(absltest.TestCase):
    def test_layout_and_values(self):
        images = np.zeros((5, 2, 3, 1), np.float32)
        images[4] = 1.0
        grid = image_grid(images, ncols=2, padding=1)
        self.assertEqual(grid.shape, (3 * 3 + 1, 2 * 4 + 1, 1))
        # Image 4 sits in row 2, column 0: white pixels, everything else black or padding.
        np.testing.assert_array_equal(grid[7:9, 1:4, 0], 255)
        np.testing.assert_array_equal(grid[1:3, 1:4, 0], 0)

    def test_png_round_trip_and_bad_shape(self):
        path = save_image_grid(np.full((4, 2, 2, 1), 0.5), self.create_tempdir().full_path + "/g.png", scale=1)
        pixels = np.asarray(Image.open(path))
        self.assertIn(128, pixels)
        with self.assertRaisesRegex(ValueError, r"\[N, H, W, C\]"):
            image_grid(np.zeros((2, 3, 3, 2)))

    def test_labelled_panels_place_each_enlarged_grid_under_its_title(self):
        black, white = np.zeros((1, 2, 2, 1)), np.ones((4, 4, 4, 1))
        picture = np.asarray(labelled_panels([("a", black), ("b", white)], scale=2, band=18, gap=5))
        (h1, w1), (h2, w2) = image_grid(black).shape[:2], image_grid(white).shape[:2]
        self.assertEqual(picture.shape, (max(h1, h2) * 2 + 18, (w1 + w2) * 2 + 5, 3))
        # The first panel's image (2 px padding, then 2x2 black pixels, enlarged twice) and the second's.
        np.testing.assert_array_equal(picture[18 + 4 : 18 + 8, 4:8], 0)
        x2 = w1 * 2 + 5
        np.testing.assert_array_equal(picture[18:, x2 : x2 + w2 * 2], np.asarray(
            Image.fromarray(image_grid(white)[..., 0]).convert("RGB").resize((w2 * 2, h2 * 2), Image.NEAREST)))
        self.assertLess(picture[:18, :w1 * 2].min(), 255)  # the title's ink
        with self.assertRaisesRegex(ValueError, "at least one"):
            labelled_panels([])

    def test_density_image_is_dark_where_the_points_are(self):
        # 100 points at (3, 3): upper right of the [-4, 4]^2 square; y grows upwards.
        picture = density_image(np.full((100, 2), 3.0), extent=4.0, size=8)
        self.assertEqual(picture[0, 7], 0)  # bin [3, 4) of both axes: top row, last column
        self.assertEqual(int((picture < 255).sum()), 1)
        tmp = self.create_tempdir().full_path
        self.assertIsNotNone(save_sample_picture(np.zeros((10, 2)), tmp + "/p.png"))
        self.assertIsNone(save_sample_picture(np.zeros((10, 5)), tmp + "/q.png"))


class CallbacksTest(absltest.TestCase):
    def test_metrics_writer_jsonl_and_tensorboard(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        writer = cb.MetricsWriter(workdir)
        writer.on_train_begin(None, types.SimpleNamespace(step=0))
        writer.on_log(None, 10, {"loss": 1.5})
        writer.on_eval(None, 10, {"loss": 1.25})
        writer.on_train_end(None, 10, None)
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        self.assertEqual([(r["split"], r["step"], r["loss"]) for r in records], [("train", 10, 1.5), ("eval", 10, 1.25)])
        self.assertTrue(list((workdir / "tensorboard").glob("events.out.tfevents.*")))

    def test_metrics_writer_drops_the_steps_a_resumed_run_repeats(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        killed = cb.MetricsWriter(workdir, tensorboard=False)
        killed.on_train_begin(None, types.SimpleNamespace(step=0))
        for step in (10, 20, 30):
            killed.on_log(None, step, {"loss": float(step)})
        with (workdir / "metrics.jsonl").open("a") as f:
            f.write('{"step": 40, "split": "tr')  # Cut off by kill -9.
        resumed = cb.MetricsWriter(workdir, tensorboard=False)  # Its checkpoint was at step 20.
        resumed.on_train_begin(None, types.SimpleNamespace(step=20))
        resumed.on_log(None, 30, {"loss": 3.0})
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        self.assertEqual([(r["step"], r["loss"]) for r in records], [(10, 10.0), (20, 20.0), (30, 3.0)])

    def test_early_stopping_after_patience(self):
        trainer = _FakeTrainer()
        stopper = cb.EarlyStopping("loss", patience=2)
        for step, loss in enumerate([3.0, 2.0, 2.5, 2.1]):
            stopper.on_eval(trainer, step, {"loss": loss})
        self.assertIn("not improved on 2 for 2 evaluations", trainer.stopped)
        with self.assertRaisesRegex(KeyError, "watches 'nll'"):
            cb.EarlyStopping("nll", patience=1).on_eval(trainer, 0, {"loss": 1.0})

    def test_sample_grid_every_and_at_end(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        grid = cb.SampleGrid(workdir, every=2, num_samples=4)
        trainer = _FakeTrainer()
        for step in (1, 2, 3):
            grid.on_step_end(trainer, step, None)
        grid.on_train_end(trainer, 3, None)
        self.assertEqual(sorted(p.name for p in (workdir / "samples").iterdir()), ["step_0000002.png", "step_0000003.png"])


if __name__ == "__main__":
    absltest.main()
