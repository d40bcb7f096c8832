"""Sharded construction on 8 simulated CPU devices: the state is created in its shardings.

A `Trainer` given a model-building function on a mesh builds the model with
`nnx.eval_shape` and creates parameters, optimizer state and EMA in one
`jax.jit` with `out_shardings` (`Trainer.build_state`). Checked here: the
values equal a one-device build of the same seed, no device holds a whole
FSDP-sharded array (shards, and the compiled init's own memory analysis), and
`train_and_evaluate` trains, checkpoints and resumes this way with the losses
of a one-device run.
"""

import os

# Before jax is imported: the host platform then exposes 8 devices.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import math  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from absl.testing import absltest  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration  # noqa: E402
from workshop.models.factories import create_model  # noqa: E402
from workshop.train import distributed, experiment, train_binary_testing  # noqa: E402
from workshop.train.checkpointing import Checkpointer  # noqa: E402
from workshop.train.configs import vae as vae_config  # noqa: E402
from workshop.train.trainer import Trainer  # noqa: E402

# An MLP VAE whose large kernels ([256, 512], [512, 256], ...) dominate the state.
_MODEL = ModelConfiguration(model_type="vae", input_shape=(16, 16, 1), latent_dim=8, backbone_type="mlp",
                            encoder_features=[512, 256], decoder_features=[256, 512],
                            parameters={"reconstruction_loss": "bernoulli"})
_MIN_SIZE = 4096


def _build():
    return create_model(_MODEL, rngs=nnx.Rngs(7))


def _config(parallelism="none", min_size=_MIN_SIZE, **overrides):
    return TrainingConfiguration(num_steps=4, ema_decay=0.9, parallelism=parallelism, fsdp_min_size=min_size,
                                 optimizer=OptimizerConfiguration(learning_rate=1e-3), seed=3, **overrides)


def setUpModule():
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    # The _gpu twin of this target sees the machine's GPUs, usually fewer than 8.
    if jax.device_count() < 8:
        raise absltest.SkipTest(f"needs 8 devices (the CPU target simulates them); this run has {jax.device_count()}")


def _leaves(state):
    return jax.tree_util.tree_flatten_with_path(state.to_checkpoint())[0]


class ShardedConstructionTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.single = Trainer(_build(), _config()).init_state()  # eager, on one device
        cls.fsdp_trainer = Trainer(_build, _config("fsdp"))
        cls.fsdp = cls.fsdp_trainer.init_state()
        cls.data_trainer = Trainer(_build, _config("data"))

    def test_sharded_init_equals_one_device_init(self):
        self.assertIsNotNone(self.fsdp_trainer.build_state)
        single = dict(_leaves(self.single))
        sharded = _leaves(self.fsdp)
        self.assertEqual(len(sharded), len(single))
        for path, leaf in sharded:
            name = jax.tree_util.keystr(path)
            np.testing.assert_allclose(np.asarray(leaf), np.asarray(single[path]), atol=1e-6, rtol=0, err_msg=name)
        # Not trivially equal: the kernels are random and the EMA starts at the parameters.
        kernel = self.fsdp.params["encoder"]["layers"][0]["kernel"][...]
        self.assertGreater(float(np.std(np.asarray(kernel))), 1e-3)
        np.testing.assert_array_equal(np.asarray(self.fsdp.ema_params["encoder"]["layers"][0]["kernel"][...]),
                                      np.asarray(kernel))

    def test_data_parallel_init_is_replicated_and_equal(self):
        state = self.data_trainer.init_state()
        kernel = state.params["decoder"]["layers"][1]["kernel"][...]
        self.assertTrue(kernel.sharding.is_fully_replicated)
        np.testing.assert_allclose(np.asarray(kernel),
                                   np.asarray(self.single.params["decoder"]["layers"][1]["kernel"][...]), atol=1e-6)

    def test_no_device_holds_a_whole_sharded_array(self):
        sharded = 0
        for path, leaf in _leaves(self.fsdp):
            shard_sizes = {s.data.size for s in leaf.addressable_shards}
            if leaf.size >= _MIN_SIZE:  # every such array of this model has an axis divisible by 8
                self.assertNotEqual(leaf.sharding.spec, P(), jax.tree_util.keystr(path))
                self.assertEqual(shard_sizes, {leaf.size // 8}, jax.tree_util.keystr(path))
                self.assertLen({s.device for s in leaf.addressable_shards}, 8)
                sharded += 1
            else:
                self.assertTrue(leaf.sharding.is_fully_replicated, jax.tree_util.keystr(path))
        self.assertGreaterEqual(sharded, 4 * 4)  # >= 4 kernels, each in params, Adam mu and nu, EMA

    def test_state_bytes_per_device(self):
        # Closed form: sharded arrays contribute 1/8 of their bytes, replicated ones all of them.
        leaves = [leaf for _, leaf in _leaves(self.fsdp)]
        expected = sum(x.nbytes // 8 if not x.sharding.is_fully_replicated else x.nbytes for x in leaves)
        whole = sum(x.nbytes for x in leaves)
        self.assertEqual(distributed.bytes_per_device(self.fsdp), expected)
        self.assertEqual(distributed.bytes_per_device(self.single), whole)
        self.assertLess(expected, 0.135 * whole)  # 1/8, plus the small replicated arrays

    def test_compiled_init_holds_only_shards(self):
        rng = self.fsdp_trainer.mesh_sharding.place(np.asarray(jax.random.PRNGKey(0)),
                                                    self.fsdp_trainer.state_sharding.rng)
        compiled = self.fsdp_trainer.build_state.lower(rng).compile()
        # The per-device program after SPMD partitioning: no value (random bits, initialiser
        # output) has the full shape of an array that is sharded.
        hlo_shapes = set(re.findall(r"\[([0-9,]*)\]", compiled.as_text()))
        sharded_shapes = {",".join(map(str, x.shape)) for _, x in _leaves(self.fsdp)
                          if not x.sharding.is_fully_replicated}
        replicated_shapes = {",".join(map(str, x.shape)) for _, x in _leaves(self.fsdp)
                             if x.sharding.is_fully_replicated}
        self.assertEqual(sharded_shapes & replicated_shapes, set())  # else the check below would be ambiguous
        self.assertIn("256,64", hlo_shapes)  # the first kernel's shard [256, 512] / 8
        self.assertEqual(sharded_shapes & hlo_shapes, set())

        fsdp = compiled.memory_analysis()
        replicated = self.data_trainer.build_state.lower(rng).compile().memory_analysis()
        if fsdp is None or replicated is None:
            self.skipTest("this backend reports no memory analysis")
        whole = sum(x.nbytes for _, x in _leaves(self.single))
        # Per device: the outputs are the state's shards (replicated: the whole state) ...
        self.assertAlmostEqual(fsdp.output_size_in_bytes / distributed.bytes_per_device(self.fsdp), 1.0, delta=0.01)
        self.assertAlmostEqual(replicated.output_size_in_bytes / whole, 1.0, delta=0.01)
        # ... and the scratch space of the initialisers shrinks the same way: no whole array is materialised.
        peak_fsdp = fsdp.output_size_in_bytes + fsdp.temp_size_in_bytes
        peak_replicated = replicated.output_size_in_bytes + replicated.temp_size_in_bytes
        self.assertLess(peak_fsdp, 0.15 * peak_replicated)
        self.assertLess(fsdp.temp_size_in_bytes, 0.15 * replicated.temp_size_in_bytes)

    def test_unshardable_array_is_named_before_anything_is_built(self):
        odd = _MODEL.model_copy(update={"input_shape": (6, 6, 1), "encoder_features": [30], "decoder_features": [30]})
        built = []

        def build():
            model = create_model(odd, rngs=nnx.Rngs(0))
            built.append(isinstance(jax.tree.leaves(nnx.state(model, nnx.Param))[0], jax.core.Tracer))
            return model

        with self.assertRaisesRegex(ValueError, r"FSDP over 8 devices cannot shard params/(de|en)coder/layers/\d/"
                                                r"kernel \[(36, 30|30, 36)\].*num_devices in \[2, 3, 4, 5, 6\]"):
            Trainer(build, _config("fsdp", min_size=256))
        self.assertEqual(built, [True])  # built once, abstractly (nnx.eval_shape): no array was created

    def test_checkpoint_restores_into_the_abstract_state_of_another_mesh(self):
        # 8-way FSDP checkpoint -> the abstract (no arrays) state of 2-way FSDP: read straight into 2 shards.
        target = Trainer(_build, _config("fsdp", num_devices=2)).abstract_state()
        self.assertTrue(all(isinstance(x, jax.ShapeDtypeStruct) for _, x in _leaves(target)))
        checkpointer = Checkpointer(self.create_tempdir().full_path)
        try:
            checkpointer.save(self.fsdp)
            restored, record = checkpointer.restore(target)
        finally:
            checkpointer.close()
        self.assertEqual(record["step"], 0)
        kernel = restored.params["encoder"]["layers"][1]["kernel"][...]  # [512, 256]
        self.assertEqual(kernel.sharding.spec, P("fsdp", None))
        self.assertEqual({s.data.shape for s in kernel.addressable_shards}, {(256, 256)})
        for (path, a), (_, b) in zip(_leaves(restored), _leaves(self.single)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))

    def test_not_a_model(self):
        with self.assertRaisesRegex(TypeError, "nnx.Module or a function of no arguments.*got int"):
            Trainer(42, _config("fsdp"))


def _experiment_config(data_dir, parallelism):
    config = vae_config.get_config()
    config.model.latent_dim = 4
    config.model.encoder_features = [32]  # kernels [784, 32], [32, 8], [4, 32], [32, 784]
    config.model.decoder_features = [32]
    config.training.num_steps = 6
    config.training.log_every = 1
    config.training.eval_every = None
    config.training.checkpoint_every = 3
    config.training.sample_every = None
    config.training.progress_bar = False
    config.training.tensorboard = False
    config.training.optimizer.warmup_steps = 2
    config.training.parallelism = parallelism
    config.training.num_devices = None if parallelism == "none" else 8
    config.data.batch_size = 16
    config.data.data_dir = str(data_dir)
    config.data.prefetch = 0
    config.eval.final_eval = False
    return config




class TrainBinaryPathTest(absltest.TestCase):
    def test_fsdp_run_with_resume_matches_one_device(self):
        data_dir = pathlib.Path(self.create_tempdir().full_path)
        train_binary_testing.write_fixture_dataset(data_dir)
        single_dir, fsdp_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
        single = experiment.train_and_evaluate(_experiment_config(data_dir, "none"), single_dir)
        self.assertIsNone(single.trainer.build_state)

        cut = experiment.train_and_evaluate(_experiment_config(data_dir, "fsdp"), fsdp_dir,
                                            callbacks=[train_binary_testing.SigintAt(3)])
        self.assertEqual(int(cut.state.step), 3)
        self.assertIsNotNone(cut.trainer.build_state)  # the state was created sharded
        # Resumed from the step-3 checkpoint, read straight into the sharded layout.
        resumed = experiment.train_and_evaluate(_experiment_config(data_dir, "fsdp"), fsdp_dir)
        self.assertIsNone(resumed.stop_reason)
        self.assertEqual(int(resumed.state.step), 6)
        kernel = resumed.state.params["decoder"]["layers"][1]["kernel"][...]  # [32, 784]
        self.assertEqual(kernel.sharding.spec, P(None, "fsdp"))
        self.assertEqual({s.data.shape for s in kernel.addressable_shards}, {(32, 98)})
        moments = [x for x in jax.tree.leaves(resumed.state.opt_state) if x.shape == (32, 784)]
        self.assertLen(moments, 2)  # Adam's mu and nu
        self.assertEqual({m.sharding.spec for m in moments}, {P(None, "fsdp")})

        expected, got = train_binary_testing.train_losses(single_dir), train_binary_testing.train_losses(fsdp_dir)
        self.assertEqual(sorted(got), list(range(1, 7)))
        np.testing.assert_allclose([got[s] for s in range(1, 7)], [expected[s] for s in range(1, 7)], rtol=2e-5)
        np.testing.assert_allclose(np.asarray(kernel),
                                   np.asarray(single.state.params["decoder"]["layers"][1]["kernel"][...]), atol=1e-5)
        self.assertTrue(math.isfinite(got[6]) and got[6] < got[1])  # it trained


if __name__ == "__main__":
    absltest.main()
