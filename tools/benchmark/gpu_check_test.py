"""Smoke test of tools/gpu_check: its first stages run on the CPU and the report says what they measured."""

import json
import pathlib
import subprocess
import sys

from absl.testing import absltest

from tools.benchmark import gpu_check


class GpuCheckTest(absltest.TestCase):

    def test_environment_and_peaks_dry_run(self):
        out = pathlib.Path(self.create_tempdir().full_path)
        proc = subprocess.run([sys.executable, "-m", "tools.benchmark.gpu_check", "--dry_run",
                               "--stages=environment,peaks", f"--out={out}", "--budget_s=200"],
                              cwd=gpu_check.ROOT, env=gpu_check._env(dry_run=True), capture_output=True, text=True,
                              timeout=240)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        report = json.loads((out / "gpu_check.json").read_text())
        self.assertEqual(report["environment"]["backend"], "cpu")
        self.assertIsNotNone(report["environment"]["versions"]["jax"])
        self.assertGreater(report["peaks"]["float32_tflops"], 0)
        self.assertGreater(report["peaks"]["bfloat16_tflops"], 0)
        markdown = (out / "gpu_check.md").read_text()
        self.assertIn("DRY RUN on the CPU", markdown)
        self.assertIn("Matmul peak (512^3", markdown)


if __name__ == "__main__":
    absltest.main()
