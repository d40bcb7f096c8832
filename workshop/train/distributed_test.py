"""Data-parallel and FSDP training on 8 simulated CPU devices, against one device."""

import os

# Before jax is imported: the host platform then exposes 8 devices.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pydantic  # noqa: E402
from absl import logging  # noqa: E402
from absl.testing import absltest  # noqa: E402
from flax import nnx  # noqa: E402

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration  # noqa: E402
from workshop.models.factories import create_model  # noqa: E402
from workshop.train import distributed  # noqa: E402
from workshop.train.checkpointing import Checkpointer  # noqa: E402
from workshop.train.trainer import Trainer  # noqa: E402

_STEPS = 4


def _model(shape=(8, 8, 1), encoder=(64, 32), decoder=(32, 64)):
    config = ModelConfiguration(model_type="vae", input_shape=shape, latent_dim=8, backbone_type="mlp",
                                encoder_features=list(encoder), decoder_features=list(decoder),
                                parameters={"reconstruction_loss": "bernoulli"})
    return create_model(config, rngs=nnx.Rngs(0))


def _trainer(parallelism="none", num_devices=None, model=None, **overrides):
    config = TrainingConfiguration(num_steps=_STEPS, log_every=1, ema_decay=0.9, parallelism=parallelism,
                                   num_devices=num_devices, fsdp_min_size=256,
                                   optimizer=OptimizerConfiguration(learning_rate=3e-3), **overrides)
    return Trainer(model or _model(), config)


def _batches(n=_STEPS, batch=16, dims=(8, 8, 1)):
    rng = np.random.default_rng(0)
    return [{"x": (rng.random((batch, *dims)) < 0.3).astype(np.float32),
             "label": rng.integers(0, 10, batch).astype(np.int32)} for _ in range(n)]


def _run(trainer, state=None, batches=None):
    state = trainer.init_state() if state is None else state
    losses = []
    for batch in batches or _batches():
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, np.array(losses)


def _kernel(state, layer=0):
    return state.params["encoder"]["layers"][layer]["kernel"][...]


def setUpModule():
    # The _gpu twin of this target sees the machine's GPUs, usually fewer than 8.
    if jax.device_count() < 8:
        raise absltest.SkipTest(f"needs 8 devices (the CPU target simulates them); this run has {jax.device_count()}")


class ShardedTrainingTest(absltest.TestCase):
    """One run of each kind, shared by the tests (each compile costs seconds on CPU)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
        cls.tmp = tempfile.TemporaryDirectory()
        cls.trainers = {"none": _trainer(), "data": _trainer("data"), "fsdp": _trainer("fsdp")}
        batches = _batches()
        cls.losses, cls.states = {}, {}
        for name, trainer in cls.trainers.items():
            state, first = _run(trainer, batches=batches[:2])
            if name == "fsdp":  # a sharded checkpoint at step 2
                cls.checkpointer = Checkpointer(cls.tmp.name)
                cls.checkpointer.save(state)
                cls.checkpointer.wait()
            state, second = _run(trainer, state, batches[2:])
            cls.losses[name], cls.states[name] = np.concatenate([first, second]), state

    @classmethod
    def tearDownClass(cls):
        cls.checkpointer.close()
        cls.tmp.cleanup()
        super().tearDownClass()

    def test_eight_devices(self):
        self.assertEqual(jax.device_count(), 8)

    def test_data_and_fsdp_losses_match_one_device(self):
        single = self.losses["none"]
        for parallelism in ("data", "fsdp"):
            np.testing.assert_allclose(self.losses[parallelism], single, rtol=2e-5, err_msg=parallelism)
        self.assertLess(single[-1], single[0])  # the steps did train

    def test_final_parameters_match_one_device(self):
        single, fsdp = self.states["none"], self.states["fsdp"]
        np.testing.assert_allclose(np.asarray(_kernel(fsdp)), np.asarray(_kernel(single)), atol=1e-5)
        np.testing.assert_allclose(np.asarray(fsdp.ema_params["decoder"]["layers"][2]["kernel"][...]),
                                   np.asarray(single.ema_params["decoder"]["layers"][2]["kernel"][...]), atol=1e-5)

    def test_fsdp_shards_parameters_and_optimizer_state(self):
        state = self.states["fsdp"]
        kernel = _kernel(state)  # [64, 64]: both axes divisible; the first is cut
        self.assertEqual(kernel.sharding.spec, jax.sharding.PartitionSpec("fsdp", None))
        self.assertEqual({s.data.shape for s in kernel.addressable_shards}, {(8, 64)})
        self.assertLen({s.device for s in kernel.addressable_shards}, 8)
        head = _kernel(state, 2)  # [32, 16]: 512 elements, the larger axis is cut
        self.assertEqual(head.sharding.spec, jax.sharding.PartitionSpec("fsdp", None))
        bias = state.params["encoder"]["layers"][0]["bias"][...]  # 64 elements: replicated
        self.assertTrue(bias.sharding.is_fully_replicated)
        adam_mu = state.opt_state[0].mu["encoder"]["layers"][0]["kernel"][...]
        self.assertEqual(adam_mu.sharding.spec, jax.sharding.PartitionSpec("fsdp", None))
        self.assertEqual(state.ema_params["encoder"]["layers"][0]["kernel"][...].sharding.spec,
                         jax.sharding.PartitionSpec("fsdp", None))
        # Each device holds a small share of what data parallelism replicates.
        dp_state = self.states["data"]
        self.assertTrue(_kernel(dp_state).sharding.is_fully_replicated)
        self.assertLess(distributed.bytes_per_device(state), 0.3 * distributed.bytes_per_device(dp_state))

    def test_batch_is_split_over_the_mesh(self):
        batch = self.trainers["data"].mesh_sharding.put_batch(_batches(1)[0])
        self.assertEqual(batch["x"].shape, (16, 8, 8, 1))
        self.assertEqual({s.data.shape for s in batch["x"].addressable_shards}, {(2, 8, 8, 1)})
        np.testing.assert_array_equal(np.asarray(batch["label"]), _batches(1)[0]["label"])

    def test_fsdp_checkpoint_restores_onto_fewer_devices(self):
        # Saved from 8-way FSDP at step 2; restored onto 2-way FSDP and onto one device.
        for target, devices in ((_trainer("fsdp", num_devices=2), 2), (self.trainers["none"], 1)):
            restored, record = self.checkpointer.restore(target.init_state())
            self.assertEqual(record["step"], 2)
            self.assertLen({s.device for s in _kernel(restored).addressable_shards}, devices)
            _, continued = _run(target, restored, _batches()[2:])
            np.testing.assert_allclose(continued, self.losses["fsdp"][2:], rtol=2e-5)

    def test_generate_and_evaluate_on_the_mesh(self):
        single, fsdp = self.trainers["none"], self.trainers["fsdp"]
        s1, s8 = self.states["none"], self.states["fsdp"]
        np.testing.assert_allclose(fsdp.generate(s8, 5, seed=3), single.generate(s1, 5, seed=3), atol=1e-4)
        odd = [{"x": b["x"][:5], "label": b["label"][:5]} for b in _batches(2)]  # 5 does not divide 8: fine here
        self.assertAlmostEqual(fsdp.evaluate(s8, odd)["loss"], single.evaluate(s1, odd)["loss"], places=3)

    def test_batch_not_divisible_by_the_mesh(self):
        trainer = self.trainers["data"]
        with self.assertRaisesRegex(ValueError, r"12 examples cannot be split over the 8 devices.*multiple of 8 "
                                                r"\(e\.g\. 8 or 16\)"):
            trainer.train_step(trainer.init_state(), _batches(1, batch=12)[0])


class ContinuousTimeFamiliesTest(absltest.TestCase):
    """Flow matching and EDM (their own time and noise draws) train the same under FSDP as on one device."""

    def test_fsdp_losses_and_parameters_match_one_device(self):
        dit = dict(patch_size=4, hidden_size=32, depth=1, num_heads=2)
        for model_type in ("flow_matching", "edm"):
            config = ModelConfiguration(model_type=model_type, input_shape=(8, 8, 1), backbone_type="dit",
                                        parameters=dit)
            runs = {}
            for parallelism in ("none", "fsdp"):
                runs[parallelism] = _run(_trainer(parallelism, model=create_model(config, rngs=nnx.Rngs(0))))
            (single, single_losses), (fsdp, fsdp_losses) = runs["none"], runs["fsdp"]
            self.assertTrue(np.all(np.isfinite(single_losses)), model_type)
            np.testing.assert_allclose(fsdp_losses, single_losses, rtol=2e-4, err_msg=model_type)
            for a, b in zip(jax.tree.leaves(fsdp.params), jax.tree.leaves(single.params)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=model_type)


class BadInputTest(absltest.TestCase):
    def test_fsdp_on_a_device_count_that_divides_no_axis(self):
        model = _model(shape=(6, 6, 1), encoder=(30,), decoder=(30,))  # kernel [36, 30]
        with self.assertRaisesRegex(ValueError, r"FSDP over 8 devices cannot shard "
                                                r"params/(de|en)coder/layers/\d/kernel \[(36, 30|30, 36)\].*"
                                                r"num_devices in \[2, 3, 4, 5, 6\].*fsdp_min_size above 1080"):
            _trainer("fsdp", model=model)
        # The suggested fixes work: 6 devices, or data parallelism.
        _trainer("fsdp", num_devices=6, model=_model(shape=(6, 6, 1), encoder=(30,), decoder=(30,)))
        _trainer("data", model=_model(shape=(6, 6, 1), encoder=(30,), decoder=(30,)))

    def test_more_devices_than_exist(self):
        with self.assertRaisesRegex(ValueError, "num_devices=16 but 8 devices"):
            _trainer("data", num_devices=16)

    def test_num_devices_without_parallelism(self):
        with self.assertRaisesRegex(pydantic.ValidationError, "num_devices=4 needs training.parallelism"):
            TrainingConfiguration(num_devices=4)
        with self.assertRaisesRegex(pydantic.ValidationError, "parallelism"):
            TrainingConfiguration(parallelism="pipeline")


class PartitionRuleTest(absltest.TestCase):
    def test_rule(self):
        P = jax.sharding.PartitionSpec
        self.assertEqual(distributed.fsdp_partition_spec("w", (3, 3, 16, 64), 8, 1), P(None, None, None, "fsdp"))
        self.assertEqual(distributed.fsdp_partition_spec("w", (64, 64), 8, 1), P("fsdp", None))
        self.assertEqual(distributed.fsdp_partition_spec("w", (12, 40), 4, 1), P(None, "fsdp"))
        self.assertEqual(distributed.fsdp_partition_spec("w", (100,), 8, 256), P())  # small: replicated
        self.assertEqual(distributed.fsdp_partition_spec("w", (1000, 3), 1, 1), P())  # one device

    def test_process_local_batches(self):
        batches = [{"x": np.arange(8).reshape(8, 1), "label": np.arange(8)}]
        parts = [next(distributed.process_local_batches(batches, process_index=p, process_count=4)) for p in range(4)]
        np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), batches[0]["x"])
        np.testing.assert_array_equal(parts[1]["label"], [2, 3])
        with self.assertRaisesRegex(ValueError, "8 examples cannot be split over 3 processes"):
            next(distributed.process_local_batches(batches, process_index=0, process_count=3))


if __name__ == "__main__":
    absltest.main()
