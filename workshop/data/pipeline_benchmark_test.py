"""Smoke test: `pipeline_benchmark` runs every variant on a tiny IDX dataset."""

from __future__ import annotations

import contextlib
import io
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
import numpy as np

from workshop.data import idx
from workshop.data import pipeline_benchmark


class PipelineBenchmarkTest(absltest.TestCase):

    def test_every_variant_runs_and_reports_a_rate(self):
        folder = self.create_tempdir().full_path
        rng = np.random.default_rng(0)
        idx.write_idx(os.path.join(folder, "train-images-idx3-ubyte"), rng.integers(0, 256, (16, 28, 28), np.uint8))
        idx.write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), rng.integers(0, 10, (16,), np.uint8))
        variants = ["numpy", "numpy_prefetch2", "numpy_dynamic"]
        try:
            import grain  # pylint: disable=g-import-not-at-top,unused-import

            variants += ["grain_per_example", "grain_batch_map"]
        except ImportError:
            pass
        flags.FLAGS.mark_as_parsed()
        out = io.StringIO()
        with flagsaver.flagsaver(
            data_dir=folder, num_batches=3, warmup=1, batch_size=4, grain_threads=1, variants=variants
        ), contextlib.redirect_stdout(out):
            pipeline_benchmark.main([])
        lines = out.getvalue().splitlines()
        self.assertIn("16 images, batch 4", lines[0])
        self.assertEqual([line.split()[0] for line in lines[1:]], variants)
        for line in lines[1:]:
            self.assertGreater(float(line.split()[1]), 0.0)


if __name__ == "__main__":
    absltest.main()
