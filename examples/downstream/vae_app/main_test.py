"""The py_binary end to end: a few steps on tiny IDX data, then its samples and metrics files."""

import json
import os
import pathlib
import subprocess
import tempfile

from absl.testing import absltest
import numpy as np

from vae_app.tiny_data import write_two_shapes


def _binary() -> pathlib.Path:
    return pathlib.Path(os.environ["TEST_SRCDIR"]) / os.environ["TEST_WORKSPACE"] / "vae_app" / "train_and_sample"


class MainTest(absltest.TestCase):

    def test_trains_and_writes_samples(self):
        tmp = pathlib.Path(tempfile.mkdtemp())
        data_dir = write_two_shapes(tmp / "data")
        workdir = tmp / "run"
        done = subprocess.run([str(_binary()), f"--data_dir={data_dir}", f"--workdir={workdir}", "--steps=4",
                               "--num_samples=5"], capture_output=True, text=True, check=False)
        self.assertEqual(done.returncode, 0, msg=done.stderr[-4000:])
        samples = np.load(workdir / "samples.npy")
        self.assertEqual(samples.shape, (5, 28, 28, 1))
        self.assertTrue(np.all((samples >= 0.0) & (samples <= 1.0)))
        metrics = json.loads((workdir / "metrics.json").read_text())
        self.assertLen(metrics["train_losses"], 4)  # log_every = max(1, 4 // 10) = 1
        self.assertTrue(np.isfinite(metrics["test_nll_after"]))
        self.assertIn("test NLL", done.stdout)


if __name__ == "__main__":
    absltest.main()
