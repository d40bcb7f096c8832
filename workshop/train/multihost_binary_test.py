"""Multi-host training through the real train binary: two processes on localhost train like one.

Two processes of `python -m workshop.train.main ... --coordinator_address=
localhost:PORT --num_processes=2 --process_id=i` (JAX's distributed runtime,
gloo CPU collectives, 2 simulated CPU devices each) train one run into one
workdir, each process reading only its own half of every batch
(`BatchPipeline(shard_index=, shard_count=)`). Against one process of the same
config on the same 4 devices:

* both exit 0, and only process 0 writes metrics.jsonl, config.json and
  final_metrics.json (each process records the files it opens for writing);
* the logged train and eval losses (and the final test likelihood) agree
  within float tolerance, under data parallelism and under FSDP;
* the checkpoint the two processes wrote together restores, checksums
  verified, into a one-device state, close to the reference run's;
* a SIGTERM to one process (a preemption notice) stops both after the same
  step with a checkpoint (JAX's preemption service), and the same
  two-process command, rerun, resumes from it and logs the reference losses.
"""

import json
import os
import pathlib
import shutil
import signal
import sys

import jax
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.models.factories import create_model
from workshop.train import experiment
from workshop.train.checkpointing import Checkpointer
from workshop.train.cli import EXIT_INTERRUPTED
from workshop.train.train_binary_testing import (
    RunLog,
    checkpoint_steps,
    free_port,
    train_records,
    wait_until,
    write_config,
    write_fixture_dataset,
)
from workshop.train.trainer import Trainer

_STEPS = 24
_EVERY = 8
_RTOL = 2e-5  # as multihost_test.py: float32 sums in another order (gloo all-reduce vs one process)
_LEAD_ONLY = ("metrics.jsonl", "config.json", "final_metrics.json")  # written by process 0 alone
_TIMEOUT = 240


def _env(devices: int) -> dict[str, str]:
    return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _losses(workdir) -> dict[int, float]:
    return {step: record["loss"] for step, record in train_records(workdir)[0].items()}


def _eval_losses(workdir) -> dict[int, float]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "eval"}


def _restore_on_one_device(workdir, step: int):
    """The checkpoint of `step`, restored into a one-device state of the run's model (checksums checked)."""
    cfg = experiment.load_experiment_config(workdir)
    model = create_model(cfg.model, rngs=nnx.Rngs(cfg.training.seed))
    trainer = Trainer(model, cfg.training.model_copy(update={"parallelism": "none", "num_devices": None}))
    checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints")
    try:
        state, record = checkpointer.restore(trainer.init_state(), step=step)
    finally:
        checkpointer.close()
    return jax.device_get(state.to_checkpoint()), record


class MultiHostBinaryTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = pathlib.Path(absltest.get_default_test_tmpdir()) / "multihost_binary"
        shutil.rmtree(cls.root, ignore_errors=True)
        cls.data_dir = write_fixture_dataset(cls.root / "fashion")
        cls.config = write_config(cls.root / "tiny_vae.py", num_steps=_STEPS, checkpoint_every=_EVERY,
                                  eval_every=_EVERY, parallelism="data",
                                  eval_settings={"final_eval": True, "likelihood_samples": 4})
        # The reference: one process with all 4 devices.
        cls.reference_dir = cls.root / "one_process"
        run = RunLog(cls.config, cls.reference_dir, cls.data_dir, env=_env(4))
        assert run.wait(_TIMEOUT) == 0, run.stderr[-3000:]
        cls.reference = _losses(cls.reference_dir)
        cls.reference_eval = _eval_losses(cls.reference_dir)
        assert sorted(cls.reference_eval) == list(range(_EVERY, _STEPS + 1, _EVERY)), cls.reference_eval
        assert sorted(cls.reference) == list(range(1, _STEPS + 1)), sorted(cls.reference)
        cls.reference_final = json.loads((cls.reference_dir / "final_metrics.json").read_text())

    def _start_two_processes(self, workdir: pathlib.Path, *flags: str) -> list[RunLog]:
        port = free_port()
        return [
            RunLog(self.config, workdir, self.data_dir, env=_env(2),
                   record_writes=workdir.with_name(f"{workdir.name}.writes.{p}.json"),
                   flags=(f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={p}",
                          *flags))
            for p in range(2)
        ]

    def _wait(self, runs: list[RunLog], expected: int = 0) -> list[RunLog]:
        codes = []
        try:
            for run in runs:
                codes.append(run.wait(_TIMEOUT))
        finally:
            for run in runs:
                if run.process.poll() is None:
                    run.process.kill()
                    run.process.wait()
        for p, (run, code) in enumerate(zip(runs, codes)):
            self.assertEqual(code, expected, f"process {p} exited {code}, not {expected}:\n{run.stderr[-3000:]}")
        return runs

    def _assert_losses_match_reference(self, workdir):
        losses = _losses(workdir)
        self.assertEqual(sorted(losses), sorted(self.reference))
        steps = sorted(losses)
        np.testing.assert_allclose([losses[s] for s in steps], [self.reference[s] for s in steps], rtol=_RTOL)
        worst = max(abs(losses[s] - self.reference[s]) / abs(self.reference[s]) for s in steps)
        evals = _eval_losses(workdir)  # the test-set evaluation every _EVERY steps
        self.assertEqual(sorted(evals), sorted(self.reference_eval))
        np.testing.assert_allclose([evals[s] for s in sorted(evals)],
                                   [self.reference_eval[s] for s in sorted(evals)], rtol=_RTOL)
        print(f"{workdir.name}: largest relative loss difference from one process over {len(steps)} steps: "
              f"{worst:.2e}", file=sys.stderr)

    def _assert_only_process_0_wrote_the_logs(self, runs, workdir, names):
        written = [{os.path.relpath(path, workdir) for path in run.written()} for run in runs]
        for name in names:
            self.assertIn(name, written[0])
            self.assertNotIn(name, written[1])
        # Process 1 writes only its part of each checkpoint.
        others = sorted(p for p in written[1] if not p.startswith(("..", "checkpoints/")))
        self.assertEqual(others, [])

    def test_data_parallel_two_processes_train_preempt_resume_and_checkpoint_like_one(self):
        workdir = self.root / "two_processes_data"
        runs = self._start_two_processes(workdir)
        # A preemption notice to process 1 once it trains: JAX's handler is installed by then.
        wait_until(lambda: "training with data parallelism" in runs[1].stderr, runs[1], timeout=_TIMEOUT,
                   what="process 1 to start training")
        runs[1].process.send_signal(signal.SIGTERM)
        self._wait(runs, expected=EXIT_INTERRUPTED)
        self.assertIn("over 2 process(es)", runs[0].stderr)
        stopped = checkpoint_steps(workdir)[-1]
        self.assertLess(stopped, _STEPS)
        for run in runs:
            self.assertIn(f"Interrupted at step {stopped}; checkpoint written", run.stdout)
        self.assertEqual(max(train_records(workdir)[0]), stopped)
        self._assert_only_process_0_wrote_the_logs(runs, workdir, ("metrics.jsonl", "config.json"))

        # The same command again resumes from there and ends as one uninterrupted process does.
        reruns = self._wait(self._start_two_processes(workdir))
        for run in reruns:
            self.assertIn(f"resuming {workdir} from step {stopped}", run.stderr)
            self.assertIn(f"workdir: {workdir}", run.stdout)
        self._assert_only_process_0_wrote_the_logs(reruns, workdir, _LEAD_ONLY)
        _, order = train_records(workdir)
        self.assertEqual(order, list(range(1, _STEPS + 1)))  # each step logged once
        self._assert_losses_match_reference(workdir)
        final = json.loads((workdir / "final_metrics.json").read_text())
        self.assertEqual(final["step"], _STEPS)
        for name, value in self.reference_final.items():
            if isinstance(value, float):
                np.testing.assert_allclose(final[name], value, rtol=1e-4, err_msg=name)

        # The checkpoint the two processes wrote together (each its own shards) reads back whole.
        self.assertEqual(checkpoint_steps(workdir)[-1], _STEPS)
        state, record = _restore_on_one_device(workdir, _STEPS)
        self.assertEqual(record["data_step"], _STEPS)
        reference_state, _ = _restore_on_one_device(self.reference_dir, _STEPS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state, reference_state)

    def test_fsdp_two_processes_train_like_one(self):
        workdir = self.root / "two_processes_fsdp"
        runs = self._wait(self._start_two_processes(
            workdir, "--config.training.parallelism=fsdp", "--config.training.fsdp_min_size=256",
            "--config.eval.final_eval=false"))
        self.assertIn("fsdp parallelism on a mesh (data=1, fsdp=4) over 2 process(es)", runs[0].stderr)
        self._assert_losses_match_reference(workdir)
        state, _ = _restore_on_one_device(workdir, _STEPS)
        reference_state, _ = _restore_on_one_device(self.reference_dir, _STEPS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state, reference_state)


if __name__ == "__main__":
    absltest.main()
