"""The train binary's mistakes of the command: a line or two that name the problem and the fix, exit 1.

Each case runs the binary (`python -m workshop.train.main`) on the tiny fixture
run of `train_binary_testing`; all of them fail before any training step.
"""

import hashlib
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest, parameterized

from workshop.train import experiment
from workshop.train.cli import EXIT_ERROR
from workshop.train.train_binary_testing import RunLog, write_config, write_fixture_dataset


def _tree_digest(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class TrainBinaryErrorsTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = pathlib.Path(absltest.get_default_test_tmpdir()) / "main_test"
        cls.data_dir = write_fixture_dataset(cls.root / "fashion", n_train=32, n_test=16)
        cls.config = write_config(cls.root / "tiny_vae.py", num_steps=4, checkpoint_every=2)

    def _fails(self, *flags: str, workdir: pathlib.Path | None = None, data_dir=None) -> str:
        """Runs the binary, checks it failed in one or two lines without a traceback; returns them."""
        workdir = workdir or pathlib.Path(self.create_tempdir().full_path) / "run"
        # Not RunLog: it writes its stderr file beside the workdir, which may not be writable here.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        run = subprocess.run([sys.executable, "-m", "workshop.train.main", f"--config={self.config}",
                              f"--workdir={workdir}", f"--data_dir={data_dir or self.data_dir}", *flags],
                             env=env, capture_output=True, text=True, timeout=300)
        stderr = run.stderr
        self.assertEqual(run.returncode, EXIT_ERROR, stderr[-3000:])
        self.assertNotIn("Traceback", stderr)
        lines = stderr.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("train: error: ")), None)
        self.assertIsNotNone(first, stderr)
        self.assertLessEqual(len(lines) - first, 2, stderr)
        return "\n".join(lines[first:])

    @parameterized.named_parameters(
        ("unknown_model_type", ("--config.model.model_type=vea",), "model_type 'vea' is unknown.*known: .*vae"),
        ("negative_batch_size", ("--config.data.batch_size=-1",),
         r"config.data.batch_size=-1: Input should be greater than 0; .*--config.data.batch_size="),
        ("zero_steps", ("--config.training.num_steps=0",), r"config.training.num_steps=0: Input should be greater"),
        ("unknown_override", ("--config.training.num_stepz=5",),
         r"--config.training.num_stepz: config.training has no field 'num_stepz'. Did you mean \"num_steps\""),
        ("missing_config_file", ("--config=/nonexistent/tiny.py",),
         r"--config=/nonexistent/tiny.py: no such config file; .*--config=workshop/train/configs/vae.py"),
        ("num_steps_below_warm_up", ("--config.training.num_steps=2",),
         r"training.optimizer.warmup_steps=2 must be below training.num_steps=2 .*set "
         r"training.optimizer.warmup_steps below 2 or train longer"),
    )
    def test_bad_command_prints_the_problem_and_the_fix_and_creates_nothing(self, flags, message):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        self.assertRegex(self._fails(*flags, workdir=workdir), message)
        self.assertFalse(workdir.exists())

    def test_missing_data_dir(self):
        missing = self.root / "no_such_data"
        self.assertRegex(self._fails(data_dir=missing),
                         rf"IDX files not found; tried: {missing}/\S+ and \d+ more\nTo fix: .*--data_dir")

    def test_workdir_that_is_a_file_or_cannot_be_written(self):
        afile = self.root / "a_file"
        afile.write_text("not a workdir")
        self.assertRegex(self._fails(workdir=afile), f"workdir {afile} is a file: pass a directory")
        self.assertEqual(afile.read_text(), "not a workdir")
        locked = pathlib.Path(self.create_tempdir().full_path)
        locked.chmod(0o500)
        if os.access(locked, os.W_OK):  # root writes anywhere; /sys takes no new directories
            locked = pathlib.Path("/sys")
        if os.access(locked, os.W_OK) and not locked.is_mount():
            self.skipTest("no directory here refuses writes")
        self.assertRegex(self._fails(workdir=locked / "run"),
                         rf"{locked}/run: (permission denied|not permitted|read-only file system); check the path")

    def test_another_model_on_an_existing_workdir_leaves_the_run_untouched(self):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        run = RunLog(self.config, workdir, self.data_dir)
        self.assertEqual(run.wait(), 0, run.stderr[-3000:])
        before = _tree_digest(workdir)
        message = self._fails("--config.model.latent_dim=6", workdir=workdir)
        self.assertRegex(message, r"does not fit this model; the model configuration differs in latent_dim: "
                                  r"checkpoint 4 vs now 6\nTrain it into another --workdir")
        self.assertEqual(_tree_digest(workdir), before)

    def test_verbosity_1_shows_the_traceback(self):
        run = RunLog(self.config, pathlib.Path(self.create_tempdir().full_path) / "run", self.data_dir,
                     flags=("--config.data.batch_size=-1", "--verbosity=1"))
        self.assertEqual(run.wait(), EXIT_ERROR)
        self.assertIn("Traceback", run.stderr)
        self.assertIn("pydantic_core._pydantic_core.ValidationError", run.stderr)
        self.assertNotIn("--verbosity=1 shows the traceback", run.stderr)

    def test_parse_config_names_an_unknown_model_type(self):
        with self.assertRaisesRegex(ValueError, "model_type 'vea' is unknown"):
            experiment.parse_config({"model": {"model_type": "vea"}})


if __name__ == "__main__":
    absltest.main()
