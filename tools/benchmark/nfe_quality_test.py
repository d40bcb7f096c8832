"""The NFE-vs-quality benchmark (tools/benchmark/nfe_quality.py) end to end on tiny runs; no timing assertions."""

import json
import os
import pathlib
import tempfile
from unittest import mock

import numpy as np
from absl import flags
from absl.testing import absltest, flagsaver
from flax import nnx

from tools.benchmark import nfe_quality
from workshop.eval import feature_net
from workshop.train import experiment, train_binary_testing
from workshop.train.configs import ddpm_dit, edm, flow_matching


def _tiny(config, data_dir):
    return train_binary_testing.shrink_run(config, data_dir, patch_size=7, hidden_size=16, depth=1, num_heads=2)


class NfeQualityTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = pathlib.Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        data_dir = train_binary_testing.write_fixture_dataset(root / "fashion")
        cls.workdirs = {}
        for name, module in (("ddpm", ddpm_dit), ("fm", flow_matching), ("edm", edm)):
            config = module.get_config() if module is ddpm_dit else module.get_config("dit")
            cls.workdirs[name] = root / name
            experiment.train_and_evaluate(_tiny(config, data_dir), cls.workdirs[name])
        cls.cache = root / "cache"
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: str(cls.cache)}):
            net = feature_net.FashionMNISTClassifier(rngs=nnx.Rngs(0))  # random weights: a fixture
            feature_net.save_feature_net(net, feature_net.default_weights_path(), {})

    def test_each_budget_picks_its_sampler_and_counts_the_evaluations(self):
        runs = {name: nfe_quality.Run.restore(path) for name, path in self.workdirs.items()}
        # (sampler, steps, NFE spent) at budgets 2 and 6: Euler below 5, then Heun (EDM's spends 2 N - 1).
        expected = {"ddpm": [("ddim", 2, 2), ("ddim", 6, 6)], "fm": [("euler", 2, 2), ("heun", 3, 6)],
                    "edm": [("euler", 2, 2), ("heun", 3, 5)]}
        out, table = self.create_tempdir().full_path, {}
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: str(self.cache)}):
            for name, run in runs.items():
                with self.assertLogs(level="WARNING"):  # fewer than 2000 samples
                    rows = nfe_quality.nfe_quality(run, [2, 6], num_samples=8, output_dir=out)
                self.assertEqual([(r["sampler"], r["steps"], r["nfe"]) for r in rows], expected[name], name)
                for r in rows:
                    self.assertTrue(np.isfinite(r["fid"]) and r["fid"] > 0, name)
                    self.assertEqual((r["num_samples"], r["num_reference"]), (8, 32))  # the fixture has 32 test images
                    written = pathlib.Path(out) / name / f"{r['sampler']}_{r['steps']}"
                    self.assertTrue((written / "samples.npy").exists() and (written / "quality.json").exists())
                table[name] = nfe_quality.format_nfe_table(rows)
        self.assertIn("| `fm` (flow_matching) | heun:3 | 6 |", table["fm"])

    def test_likelihoods_by_the_ode_and_the_bound_for_ddpm(self):
        ddpm = nfe_quality.likelihoods(nfe_quality.Run.restore(self.workdirs["ddpm"]), images=2)
        self.assertEqual((ddpm["ode"]["estimate"], ddpm["vlb"]["estimate"]), ("exact (ODE)", "variational bound"))
        fm = nfe_quality.likelihoods(nfe_quality.Run.restore(self.workdirs["fm"]), images=2)
        self.assertNotIn("vlb", fm)
        for result in (ddpm["ode"], ddpm["vlb"], fm["ode"]):
            self.assertEqual(result["num_examples"], 2)
            self.assertTrue(np.isfinite(result["nll_bits_per_dim"]) and result["nll_bits_per_dim"] > 0)

    def test_the_binary_writes_its_report_and_refuses_bad_input(self):
        output = pathlib.Path(self.create_tempdir().full_path) / "report.json"
        flags.FLAGS.mark_as_parsed()
        with mock.patch.dict(os.environ, {feature_net.CACHE_DIR_ENV: str(self.cache)}), flagsaver.flagsaver(
                workdirs=[str(self.workdirs["fm"])], nfe=["1"], num_samples=8, likelihood_images=0,
                output_dir=self.create_tempdir().full_path, output=str(output), samplers=["fm:heun"]):
            nfe_quality.main([])
        report = json.loads(output.read_text())
        self.assertEqual([(r["sampler"], r["steps"], r["nfe"]) for r in report["rows"]], [("heun", 1, 2)])
        with self.assertRaisesRegex(ValueError, "NFE budget 0: expected a whole number >= 1"):
            nfe_quality.sampler_for(nfe_quality.Run.restore(self.workdirs["fm"]).model, 0)
        with flagsaver.flagsaver(workdirs=[str(self.workdirs["fm"])], nfe=["ten"]):
            with self.assertRaisesRegex(Exception, "--nfe=ten: expected whole numbers"):
                nfe_quality.main([])


if __name__ == "__main__":
    absltest.main()
