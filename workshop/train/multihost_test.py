"""Two processes on localhost (JAX's distributed runtime, gloo CPU collectives) train like one.

Each worker process joins through `main.initialize_distributed` (what the
train binary's `--coordinator_address/--num_processes/--process_id` call),
sees 2 local CPU devices of a 4-device FSDP mesh, feeds only its own half of
every batch (`process_local_batches`), and reports its losses; they must equal
a one-process run on the same global batches.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

_STEPS = 3


def _setup(parallelism, num_devices=None):
    from flax import nnx

    from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration
    from workshop.models.factories import create_model
    from workshop.train.trainer import Trainer

    def build():  # On a mesh the Trainer builds the state directly sharded from this.
        return create_model(ModelConfiguration(model_type="vae", input_shape=(8, 8, 1), latent_dim=8,
                                               backbone_type="mlp", encoder_features=[64, 32],
                                               decoder_features=[32, 64],
                                               parameters={"reconstruction_loss": "bernoulli"}), rngs=nnx.Rngs(0))

    config = TrainingConfiguration(num_steps=_STEPS, ema_decay=0.9, parallelism=parallelism, num_devices=num_devices,
                                   fsdp_min_size=256, optimizer=OptimizerConfiguration(learning_rate=3e-3))
    rng = np.random.default_rng(0)
    batches = [{"x": (rng.random((16, 8, 8, 1)) < 0.3).astype(np.float32)} for _ in range(_STEPS)]
    return Trainer(build, config), batches


def _worker(process_id: int, port: int, out: str) -> None:
    import jax

    from workshop.train.main import initialize_distributed
    from workshop.train.distributed import process_local_batches

    assert initialize_distributed(f"localhost:{port}", 2, process_id)
    trainer, batches = _setup("fsdp")
    state, losses = trainer.init_state(), []
    for batch in process_local_batches(batches):
        assert batch["x"].shape[0] == 8  # this process's half
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    kernel = state.params["encoder"]["layers"][0]["kernel"][...]
    report = {
        "losses": losses,
        "process_count": jax.process_count(),
        "global_devices": jax.device_count(),
        "kernel_spec": str(kernel.sharding.spec),
        "local_shards": [list(s.data.shape) for s in kernel.addressable_shards],
    }
    pathlib.Path(out, f"{process_id}.json").write_text(json.dumps(report))
    jax.distributed.shutdown()


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    sys.exit(0)

import jax  # noqa: E402
from absl import app  # noqa: E402
from absl.testing import absltest  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from workshop.train.main import initialize_distributed  # noqa: E402
from workshop.train.train_binary_testing import free_port  # noqa: E402


class MultiHostTest(absltest.TestCase):
    def test_two_processes_train_like_one(self):
        if jax.default_backend() != "cpu":  # the reference must use the workers' (CPU) arithmetic
            self.skipTest("the two workers run on CPU; run the CPU target")
        port = free_port()
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(sys.path),
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        with tempfile.TemporaryDirectory() as out:
            workers = [subprocess.Popen([sys.executable, __file__, "worker", str(p), str(port), out], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                       for p in range(2)]
            logs = []
            for w in workers:
                try:
                    logs.append(w.communicate(timeout=240)[0])
                except subprocess.TimeoutExpired:
                    for other in workers:
                        other.kill()
                    self.fail("the two processes did not finish in 240 s")
            for p, (w, log) in enumerate(zip(workers, logs)):
                self.assertEqual(w.returncode, 0, f"process {p} failed:\n{log[-3000:]}")
            reports = [json.loads(pathlib.Path(out, f"{p}.json").read_text()) for p in range(2)]

        trainer, batches = _setup("none")
        state, single = trainer.init_state(), []
        for batch in batches:
            state, metrics = trainer.train_step(state, batch)
            single.append(float(metrics["loss"]))
        for report in reports:
            self.assertEqual((report["process_count"], report["global_devices"]), (2, 4))
            self.assertEqual(report["kernel_spec"], str(PartitionSpec("fsdp", None)))
            self.assertEqual(report["local_shards"], [[16, 64], [16, 64]])  # 2 of the 4 quarters
            np.testing.assert_allclose(report["losses"], single, rtol=2e-5)

    def test_flags_must_come_together(self):
        self.assertFalse(initialize_distributed(None, None, None))
        with self.assertRaisesRegex(app.UsageError, "--num_processes need.*--coordinator_address"):
            initialize_distributed(None, 2, None)
        with self.assertRaisesRegex(app.UsageError, "needs --process_id too"):
            initialize_distributed("localhost:1234", 2, None)
        with self.assertRaisesRegex(app.UsageError, "--process_id=2 must be below --num_processes=2"):
            initialize_distributed("localhost:1234", 2, 2)


if __name__ == "__main__":
    absltest.main()
