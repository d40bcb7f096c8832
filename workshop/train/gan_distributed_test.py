"""GAN training on a mesh of 8 simulated CPU devices (data parallelism, FSDP) against one device."""

import os

# Before jax is imported: the host platform then exposes 8 devices.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from absl.testing import absltest  # noqa: E402

from workshop.train import distributed  # noqa: E402
from workshop.train import gan_testing as gt  # noqa: E402
from workshop.train.checkpointing import Checkpointer  # noqa: E402

_STEPS = 3
P = jax.sharding.PartitionSpec
# Adam turns the rounding noise of an exactly-zero gradient into a whole step of size lr. A WGAN-GP
# critic has such gradients (the bias of a unit that is linear on every example gets exactly 0 from both
# the loss and the penalty), so another summation order on a mesh moves that bias by +-lr. Momentum SGD
# does not amplify noise, and its momentum buffers are sharded like Adam's moments.
_OPTIMIZERS = {"ns_r1": gt.ADAM, "wgan_gp": gt.SGD}


def _kernel(state, player, layer=1):
    # [32, 32] in both players of the ring GAN.
    params = state.params
    if player == "generator":
        return params["generator"]["generator"]["net"]["layers"][layer]["kernel"][...]
    return params["discriminator"]["discriminator"]["layers"][layer]["kernel"][...]


def setUpModule():
    # The _gpu twin of this target sees the machine's GPUs, usually fewer than 8.
    if jax.device_count() < 8:
        raise absltest.SkipTest(f"needs 8 devices (the CPU target simulates them); this run has {jax.device_count()}")


class ShardedGANTest(absltest.TestCase):
    """Each objective trained on one device, on a data mesh and on an FSDP mesh (shared by the tests)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
        cls.tmp = tempfile.TemporaryDirectory()
        cls.trainers, cls.states, cls.history = {}, {}, {}
        batches = gt.ring_batches(_STEPS)
        for recipe in gt.RECIPES:
            for parallelism in ("none", "data", "fsdp"):
                trainer = gt.trainer(gt.ring_gan(recipe), parallelism, optimizer=_OPTIMIZERS[recipe])
                state, first = gt.run(trainer, batches[:2])
                if parallelism == "fsdp" and recipe == "wgan_gp":  # a sharded checkpoint at step 2
                    cls.checkpointer = Checkpointer(cls.tmp.name)
                    cls.checkpointer.save(state)
                    cls.checkpointer.wait()
                state, second = gt.run(trainer, batches[2:], state)
                key = (recipe, parallelism)
                cls.trainers[key], cls.states[key], cls.history[key] = trainer, state, first + second

    @classmethod
    def tearDownClass(cls):
        cls.checkpointer.close()
        cls.tmp.cleanup()
        super().tearDownClass()

    def test_losses_and_state_match_one_device(self):
        for recipe in gt.RECIPES:
            one = self.states[(recipe, "none")]
            single = gt.losses(self.history[(recipe, "none")])
            self.assertTrue(np.isfinite(single).all())
            for parallelism in ("data", "fsdp"):
                key = (recipe, parallelism)
                np.testing.assert_allclose(gt.losses(self.history[key]), single, rtol=2e-5, atol=1e-6,
                                           err_msg=str(key))
                for tree in ("params", "opt_state", "ema_params", "rest"):
                    gt.assert_trees_close(getattr(self.states[key], tree), getattr(one, tree), atol=1e-5)
            # Both players moved.
            start = self.trainers[(recipe, "none")].init_state()
            for player in ("generator", "discriminator"):
                self.assertFalse(np.allclose(gt.host(_kernel(one, player)), gt.host(_kernel(start, player))))

    def test_fsdp_shards_both_players_optimizers_and_ema(self):
        state = self.states[("wgan_gp", "fsdp")]
        ema_kernel = state.ema_params["generator"]["generator"]["net"]["layers"][1]["kernel"][...]
        for kernel in (_kernel(state, "generator"), _kernel(state, "discriminator"), ema_kernel):
            self.assertEqual(kernel.sharding.spec, P("fsdp", None))
            self.assertEqual({s.data.shape for s in kernel.addressable_shards}, {(4, 32)})
            self.assertLen({s.device for s in kernel.addressable_shards}, 8)
        for recipe in gt.RECIPES:  # Adam's moments and SGD's momentum buffers
            opt_state = self.states[(recipe, "fsdp")].opt_state
            for player in ("generator", "discriminator"):
                large = [leaf for leaf in jax.tree.leaves(opt_state[player]) if leaf.size >= 256]
                self.assertNotEmpty(large)
                for leaf in large:
                    self.assertIn("fsdp", leaf.sharding.spec, (recipe, player))
                    self.assertLen({s.device for s in leaf.addressable_shards}, 8)
        bias = state.params["discriminator"]["discriminator"]["layers"][1]["bias"][...]  # 32 elements: replicated
        self.assertTrue(bias.sharding.is_fully_replicated)
        replicated = self.states[("wgan_gp", "data")]
        self.assertTrue(_kernel(replicated, "generator").sharding.is_fully_replicated)
        self.assertLess(distributed.bytes_per_device(state), 0.5 * distributed.bytes_per_device(replicated))

    def test_sharded_construction_from_a_builder_equals_the_built_model(self):
        # Given a function, the FSDP trainer builds the GAN abstractly and creates the state sharded.
        built = gt.trainer(gt.ring_gan("wgan_gp"), "fsdp").init_state()
        lazy = gt.trainer(lambda: gt.ring_gan("wgan_gp"), "fsdp")
        self.assertIsNotNone(lazy.build_state)
        state = lazy.init_state()
        gt.assert_trees_close(state, built, atol=0)
        self.assertEqual(_kernel(state, "discriminator").sharding.spec, P("fsdp", None))
        self.assertEqual({s.data.shape for s in _kernel(state, "generator").addressable_shards}, {(4, 32)})

    def test_sharded_checkpoint_restores_onto_one_device(self):
        single = self.trainers[("wgan_gp", "none")]
        restored, record = self.checkpointer.restore(single.init_state())
        self.assertEqual(record["step"], 2)
        self.assertLen({s.device for s in _kernel(restored, "discriminator").addressable_shards}, 1)
        _, continued = gt.run(single, gt.ring_batches(_STEPS)[2:], restored)
        np.testing.assert_allclose(gt.losses(continued), gt.losses(self.history[("wgan_gp", "fsdp")])[2:],
                                   rtol=2e-5, atol=1e-6)

    def test_generate_and_evaluate_on_the_mesh(self):
        single, fsdp = self.trainers[("ns_r1", "none")], self.trainers[("ns_r1", "fsdp")]
        s1, s8 = self.states[("ns_r1", "none")], self.states[("ns_r1", "fsdp")]
        np.testing.assert_allclose(fsdp.generate(s8, 5, seed=3), single.generate(s1, 5, seed=3), atol=1e-5)
        odd = [{"x": b["x"][:5], "label": b["label"][:5]} for b in gt.ring_batches(2)]  # 5 does not divide 8: fine
        expected = single.evaluate(s1, odd)
        for name, value in fsdp.evaluate(s8, odd).items():
            self.assertAlmostEqual(value, expected[name], places=4, msg=name)

    def test_bf16_on_fsdp_stays_close_to_f32_on_one_device(self):
        trainer = gt.trainer(gt.ring_gan("wgan_gp"), "fsdp", optimizer=gt.SGD, precision="bfloat16")
        state, history = gt.run(trainer, gt.ring_batches(_STEPS))
        np.testing.assert_allclose(gt.losses(history), gt.losses(self.history[("wgan_gp", "none")]),
                                   rtol=3e-2, atol=3e-2)
        kernel = _kernel(state, "discriminator")  # float32 master weights, sharded
        self.assertEqual((kernel.sharding.spec, kernel.dtype), (P("fsdp", None), np.float32))

    def test_critic_chunks_must_split_over_the_mesh(self):
        trainer = self.trainers[("wgan_gp", "data")]
        # 24 examples split over 8 devices, but each of the 2 critic updates would get 12.
        with self.assertRaisesRegex(ValueError, r"2 'critic' updates on parts of 12 examples, split over 8 devices: "
                                                r"set data.batch_size to a multiple of 16"):
            trainer.train_step(trainer.init_state(), gt.ring_batches(1, batch=24)[0])
        with self.assertRaisesRegex(ValueError, r"12 examples cannot be split over the 8 devices"):
            trainer.train_step(trainer.init_state(), gt.ring_batches(1, batch=12)[0])


class BatchNormOnAMeshTest(absltest.TestCase):
    def test_batch_norm_dcgan_on_fsdp_matches_one_device(self):
        # Batch statistics are the global batch's, so the mesh changes nothing; FSDP shards the convolutions.
        # (A convolution's bias before batch norm has an exactly-zero gradient: SGD, see _OPTIMIZERS.)
        batches = gt.image_batches(2)
        single, single_h = gt.run(gt.trainer(gt.image_gan(), optimizer=gt.SGD), batches)
        trainer = gt.trainer(gt.image_gan(), "fsdp", fsdp_min_size=1024, optimizer=gt.SGD)
        sharded, sharded_h = gt.run(trainer, batches)
        np.testing.assert_allclose(gt.losses(sharded_h), gt.losses(single_h), rtol=2e-5, atol=1e-6)
        for tree in ("params", "rest", "ema_params", "ema_rest"):
            gt.assert_trees_close(getattr(sharded, tree), getattr(single, tree), atol=1e-5)
        conv = sharded.params["discriminator"]["discriminator"]["layers"][1]["kernel"][...]  # [4, 4, 8, 16]
        self.assertEqual(conv.sharding.spec, P(None, None, None, "fsdp"))
        # The running statistics of both players and of the EMA generator moved.
        start = trainer.init_state()
        for now, before in ((sharded.rest, start.rest), (sharded.ema_rest, start.ema_rest)):
            self.assertFalse(np.allclose(np.concatenate([a.ravel() for a in jax.tree.leaves(gt.host(now))]),
                                         np.concatenate([a.ravel() for a in jax.tree.leaves(gt.host(before))])))


if __name__ == "__main__":
    absltest.main()
