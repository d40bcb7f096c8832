"""Fault tests of the real train binary: SIGTERM, kill -9 and a corrupted checkpoint, each then rerun.

Every rerun is the same command, and its losses must equal those of an
uninterrupted run step for step, and its final state the uninterrupted one
(compared by the checkpoints' checksums of every array), which also checks
that the same config and seed give the same losses and that the data order
(shuffle and dynamic binarization) resumes exactly.
"""

import os
import pathlib
import shutil
import signal

from absl.testing import absltest

from workshop.train import experiment
from workshop.train.checkpointing import Checkpointer
from workshop.train.cli import EXIT_INTERRUPTED
from workshop.train.train_binary_testing import (
    RunLog,
    checkpoint_steps,
    train_records,
    wait_until,
    write_config,
    write_fixture_dataset,
)

_STEPS = 300
_EVERY = 50


def _without_time(records):
    return {step: {k: v for k, v in r.items() if k != "time"} for step, r in records.items()}


def _final_fingerprint(workdir):
    checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints")
    try:
        return checkpointer.read_record(_STEPS)["fingerprint"]
    finally:
        checkpointer.close()


def _flip_one_bit(step_dir):
    # The largest array data file (OCDBT's `d/` folders): mostly array bytes.
    files = [p for p in pathlib.Path(step_dir).rglob("*") if p.is_file() and p.parent.name == "d"]
    path = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class FaultToleranceTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = pathlib.Path(absltest.get_default_test_tmpdir()) / "fault_tolerance"
        shutil.rmtree(cls.root, ignore_errors=True)
        cls.data_dir = write_fixture_dataset(cls.root / "fashion")
        cls.config = write_config(cls.root / "tiny_vae.py", num_steps=_STEPS, checkpoint_every=_EVERY)
        cls.reference_dir = cls.root / "uninterrupted"
        run = RunLog(cls.config, cls.reference_dir, cls.data_dir)
        assert run.wait() == 0, run.stderr[-3000:]
        cls.reference = _without_time(train_records(cls.reference_dir)[0])
        assert sorted(cls.reference) == list(range(1, _STEPS + 1)), sorted(cls.reference)[-5:]
        cls.reference_fingerprint = _final_fingerprint(cls.reference_dir)

    def _run(self, workdir, **kwargs):
        return RunLog(self.config, workdir, self.data_dir, **kwargs)

    def _assert_same_as_uninterrupted(self, workdir):
        records, _ = train_records(workdir)
        self.assertEqual(_without_time(records), self.reference)
        self.assertEqual(_final_fingerprint(workdir), self.reference_fingerprint)

    def test_sigterm_writes_a_checkpoint_and_the_rerun_resumes_exactly(self):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        run = self._run(workdir)
        wait_until(lambda: max(train_records(workdir)[0], default=0) >= 120, run, what="step 120")
        run.process.send_signal(signal.SIGTERM)
        self.assertEqual(run.wait(), EXIT_INTERRUPTED, run.stderr[-3000:])  # 75: a scheduler retries it
        self.assertIn("SIGTERM received", run.stderr)
        stopped = max(train_records(workdir)[0])
        self.assertLess(stopped, _STEPS)
        self.assertIn(f"Interrupted at step {stopped}; checkpoint written", run.stdout)
        self.assertEqual(checkpoint_steps(workdir)[-1], stopped)

        rerun = self._run(workdir)
        self.assertEqual(rerun.wait(), 0, rerun.stderr[-3000:])
        self.assertIn(f"resuming {workdir} from step {stopped}", rerun.stderr)
        self._assert_same_as_uninterrupted(workdir)

    def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(self):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        run = self._run(workdir)
        wait_until(lambda: any(s >= 2 * _EVERY for s in checkpoint_steps(workdir)), run, what="a checkpoint")
        run.process.send_signal(signal.SIGKILL)
        self.assertEqual(run.wait(), -signal.SIGKILL)
        last_checkpoint = checkpoint_steps(workdir)[-1]
        last_logged = max(train_records(workdir)[0])
        self.assertLess(last_logged, _STEPS)
        self.assertGreaterEqual(last_logged, last_checkpoint)
        # Unfinished saves (orbax's temporary directories) may be left behind; they are not checkpoints.
        leftovers = [n for n in os.listdir(workdir / "checkpoints") if not n.isdigit()]

        rerun = self._run(workdir)
        self.assertEqual(rerun.wait(), 0, rerun.stderr[-3000:])
        self.assertIn(f"resuming {workdir} from step {last_checkpoint}", rerun.stderr)
        # Only the steps after the last checkpoint were trained twice (the rerun starts
        # there), and metrics.jsonl keeps the rerun's records of them, each step once.
        _, order = train_records(workdir)
        self.assertEqual(sorted(order), sorted(set(order)))
        self.assertEqual(sorted(order)[-1], _STEPS)
        self._assert_same_as_uninterrupted(workdir)
        self.assertFalse([n for n in os.listdir(workdir / "checkpoints") if "tmp" in n], leftovers)

    def test_corrupted_latest_checkpoint_falls_back_to_the_previous(self):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        shutil.copytree(self.reference_dir, workdir)
        self.assertEqual(checkpoint_steps(workdir), [_STEPS - _EVERY, _STEPS])
        _flip_one_bit(workdir / "checkpoints" / str(_STEPS))
        (workdir / "metrics.jsonl").write_text("")  # so the records below are the rerun's alone

        rerun = self._run(workdir)
        self.assertEqual(rerun.wait(), 0, rerun.stderr[-3000:])
        self.assertIn(f"checkpoint {workdir}/checkpoints/{_STEPS} is rejected: the checksum of", rerun.stderr)
        self.assertIn(f"resuming {workdir} from step {_STEPS - _EVERY}", rerun.stderr)
        self.assertTrue((workdir / "checkpoints" / "rejected" / str(_STEPS)).is_dir())
        records, _ = train_records(workdir)
        self.assertEqual(sorted(records), list(range(_STEPS - _EVERY + 1, _STEPS + 1)))
        self.assertEqual(_without_time(records), {s: self.reference[s] for s in records})
        self.assertEqual(_final_fingerprint(workdir), self.reference_fingerprint)

    def test_data_order_is_recorded_and_a_change_is_named(self):
        checkpointer = Checkpointer(self.reference_dir / "checkpoints")
        record = checkpointer.read_record()
        checkpointer.close()
        self.assertEqual(record["data_step"], _STEPS)
        order = record["data_order"]
        self.assertEqual(order, {"dataset": "fashion_mnist", "num_examples": 64, "batch_size": 16,
                                 "shuffle_seed": 0, "binarize": "dynamic"})
        with self.assertLogs("workshop.train.experiment", "WARNING") as logs:
            experiment._warn_if_data_order_changed(order, {**order, "batch_size": 8})
        self.assertIn("batch_size: checkpoint 16 vs now 8", logs.output[0])
        with self.assertNoLogs("workshop.train.experiment", "WARNING"):
            experiment._warn_if_data_order_changed(order, dict(order))


if __name__ == "__main__":
    absltest.main()
