"""GAN training (the adversarial objective in the Trainer): the compiled step, resume, and mode coverage on the ring."""

import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration, TrainingConfiguration
from workshop.data.datasets.toy import eight_gaussians_modes, sample_toy
from workshop.models.gan import GAN
from workshop.train.callbacks import MetricsWriter
from workshop.train.checkpointing import Checkpointer
from workshop.train.trainer import Trainer

# std of each ring mode in workshop.data.datasets.toy ("eight_gaussians").
_MODE_STD = 0.04


def _ring_gan(model_type="wgan-gp", width=128, **parameters):
    config = ModelConfiguration(model_type=model_type, input_shape=(2,), latent_dim=16, encoder_features=[width] * 3,
                                decoder_features=[width] * 3, parameters=parameters)
    return GAN(config, rngs=nnx.Rngs(0))


def _image_gan(model_type="dcgan", **parameters):
    config = ModelConfiguration(model_type=model_type, input_shape=(8, 8, 1), latent_dim=4, backbone_type="conv",
                                encoder_features=[4, 6], decoder_features=[6, 4], parameters=parameters)
    return GAN(config, rngs=nnx.Rngs(0))


def _image_batch(n, num_classes=None, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes or 1, n).astype(np.int32)
    return {"x": rng.uniform(size=(n, 8, 8, 1)).astype(np.float32), "label": labels}


def _training(num_steps, ema_decay=0.99, **kw):
    return TrainingConfiguration(num_steps=num_steps, ema_decay=ema_decay, progress_bar=False,
                                 log_every=max(1, num_steps // 4),
                                 optimizer=dict(name="adam", learning_rate=1e-3, b1=0.5, b2=0.9), **kw)


def _ring_batches(batch_size, seed=0):
    x, labels = sample_toy("eight_gaussians", 50_000, seed=0)
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.integers(0, len(x), batch_size)
        yield {"x": x[idx], "label": labels[idx]}


def samples_near_modes(samples: np.ndarray, modes: np.ndarray, radius: float) -> np.ndarray:
    """How many of `samples` `[N, 2]` lie within `radius` of each of `modes` `[K, 2]`: `[K]` counts."""
    d = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)
    return (d < radius).sum(axis=0)


class _Recorder:
    def __init__(self):
        self.logs, self.hooks = [], []

    def on_train_begin(self, trainer, state):
        self.hooks.append("begin")

    def on_log(self, trainer, step, logs):
        self.logs.append((step, logs))

    def on_train_end(self, trainer, step, state):
        self.hooks.append("end")


class StepTest(absltest.TestCase):
    def test_a_nan_batch_changes_neither_player(self):
        trainer = Trainer(_ring_gan("wgan-gp", width=16, n_critic=2), _training(10))
        state = trainer.init_state()
        before = jax.tree.map(np.asarray, (state.params, state.opt_state, state.ema_params))
        nan_batch = {"x": np.full((8, 2), np.nan, np.float32), "label": np.zeros(8, np.int32)}
        state, metrics = trainer.train_step(state, nan_batch)
        self.assertFalse(np.isfinite(float(metrics["d_loss"])))
        self.assertEqual(int(state.step), 1)  # The data position moves on.
        jax.tree.map(np.testing.assert_array_equal, (state.params, state.opt_state, state.ema_params), before)

    def test_compiled_step_updates_both_players(self):
        model = _ring_gan("wgan-gp", width=16, n_critic=3)
        trainer = Trainer(model, _training(10))
        state = trainer.init_state()
        before = jax.tree.map(np.asarray, state.params)
        batch = next(_ring_batches(3 * 8))
        state, metrics = trainer.train_step(state, batch)
        self.assertEqual(int(state.step), 1)
        after = jax.tree.map(np.asarray, state.params)
        for player in ("generator", "discriminator"):
            for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(before[player])[0],
                                    jax.tree.leaves(after[player])):
                name = jax.tree_util.keystr(path)
                if player == "discriminator" and "head" in name and "bias" in name:
                    # D(x) - D(G(z)) and the penalty do not depend on the score's offset.
                    np.testing.assert_array_equal(a, b)
                    continue
                self.assertFalse(np.allclose(a, b), f"{player} {name} did not change")
        # Three critic updates happened: the critic's Adam count is 3, the generator's 1.
        counts = [int(leaf) for leaf in jax.tree.leaves(state.opt_state["discriminator"]) if jnp.ndim(leaf) == 0]
        self.assertIn(3, counts)
        self.assertIn(1, [int(leaf) for leaf in jax.tree.leaves(state.opt_state["generator"]) if jnp.ndim(leaf) == 0])
        for name in ("d_loss", "g_loss", "wasserstein_estimate", "d_grad_norm", "g_grad_norm", "gradient_penalty"):
            self.assertTrue(np.isfinite(float(metrics[name])), name)
        self.assertGreater(float(metrics["gradient_penalty"]), 0.0)
        # The EMA generator moved towards the new weights but not all the way.
        self.assertFalse(np.allclose(jax.tree.leaves(state.ema_params)[0], jax.tree.leaves(before["generator"])[0]))

    def test_ttur_learning_rates(self):
        trainer = Trainer(_ring_gan("hinge-gan", width=8, d_lr_multiplier=4.0), _training(5))
        np.testing.assert_allclose(float(trainer.schedules["discriminator"](0)), 4e-3, rtol=1e-6)
        np.testing.assert_allclose(float(trainer.schedules["generator"](0)), 1e-3, rtol=1e-6)

    def test_batch_must_split_into_critic_chunks(self):
        trainer = Trainer(_ring_gan("wgan-gp", width=8), _training(5))
        with self.assertRaisesRegex(ValueError, "makes 5 'critic' updates.*multiple of 5 \\(got 12\\)"):
            trainer.train_step(trainer.init_state(), next(_ring_batches(12)))

    def test_unconditional_gan_refuses_labels(self):
        plain = Trainer(_ring_gan("dcgan", width=8), _training(3))
        with self.assertRaisesRegex(ValueError, "unconditional and takes no labels"):
            plain.generate(plain.init_state(), 2, labels=np.array([0, 1]))

    def test_conditional_fit_callbacks_checkpoint_and_resume(self):
        # A conditional SN-GAN: labels reach both players, and the power-iteration
        # vectors (non-Param state) go through the checkpoint.
        model = _ring_gan("sngan", width=16, num_classes=8)
        trainer = Trainer(model, _training(6))
        recorder = _Recorder()
        with tempfile.TemporaryDirectory() as tmp:
            checkpointer = Checkpointer(tmp)
            state = trainer.fit(trainer.init_state(), _ring_batches(16), callbacks=[recorder])
            checkpointer.save(state)
            checkpointer.wait()
            restored, record = checkpointer.restore(trainer.init_state())
            checkpointer.close()
        self.assertEqual(record["step"], 6)
        self.assertIn("rest/discriminator/layers/0/u", record["shapes"])
        self.assertEqual(recorder.hooks, ["begin", "end"])
        self.assertEqual([s for s, _ in recorder.logs], [1, 2, 3, 4, 5, 6])
        self.assertTrue(np.isfinite(recorder.logs[-1][1]["wasserstein_estimate"]))
        for a, b in zip(jax.tree.leaves(state.to_checkpoint()), jax.tree.leaves(restored.to_checkpoint())):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        samples = trainer.generate(state, 4, seed=1)  # labels cycle through the classes
        self.assertEqual(samples.shape, (4, 2))
        np.testing.assert_allclose(samples, trainer.generate(restored, 4, seed=1))
        # The resumed state steps exactly as the uninterrupted one.
        cont_a, _ = trainer.train_step(state, next(_ring_batches(16, seed=9)))
        cont_b, _ = trainer.train_step(restored, next(_ring_batches(16, seed=9)))
        np.testing.assert_allclose(jax.tree.leaves(cont_a.params)[0], jax.tree.leaves(cont_b.params)[0], rtol=1e-6)


class BatchNormTest(absltest.TestCase):
    def test_dcgan_step_and_ema_generator_statistics(self):
        # ema_decay 0: the averaged generator's weights equal the new ones, so its
        # statistics can be recomputed by hand: one training-mode pass on the latents
        # of the generator update, starting from the initial running averages.
        trainer = Trainer(_image_gan("dcgan"), _training(5, ema_decay=0.0))
        self.assertTrue(trainer.objective.separate_scoring and trainer.objective.generator_statistics)
        state = trainer.init_state()
        init_stats = jax.tree.map(jnp.array, state.ema_rest)  # copies: the step donates
        state, metrics = trainer.train_step(state, _image_batch(8))
        for name in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm", "wasserstein_estimate"):
            self.assertTrue(np.isfinite(float(metrics[name])), name)
        key = jax.random.fold_in(jax.random.PRNGKey(trainer.config.seed), 0)
        z = jax.random.normal(jax.random.fold_in(key, 1), (8, 4))  # n_critic = 1
        model = trainer.model_from_state(state)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, nnx.state(model.generator, nnx.Param)),
                     jax.tree.map(np.asarray, nnx.state(trainer.model_from_state(state, use_ema=False).generator,
                                                        nnx.Param)))
        nnx.update(model.generator, init_stats["generator"])
        model.train()
        model.generator(z)
        expected = nnx.state(model.generator, nnx.BatchStat)
        got = state.ema_rest["generator"]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), expected, got)
        # The raw generator ran more passes (critic fakes, generator update): other statistics.
        raw = state.rest["generator"]
        self.assertFalse(np.allclose(raw["net"]["norms"][0]["mean"][...], got["net"]["norms"][0]["mean"][...]))
        # Sampling is in evaluation mode: a sample does not depend on the others drawn with it.
        np.testing.assert_allclose(trainer.generate(state, 3, seed=2), trainer.generate(state, 9, seed=2)[:3],
                                   rtol=1e-5, atol=1e-6)

    def test_trainer_refuses_a_batch_normalised_penalised_critic(self):
        model = _image_gan("dcgan")
        model.gp_weight = 10.0  # a model built around the configuration check
        with self.assertRaisesRegex(ValueError, "batch-normalised discriminator cannot take the gradient penalty"):
            Trainer(model, _training(3))


class ConditionalTest(absltest.TestCase):
    def test_labels_reach_both_players(self):
        # Every example has class 2: Adam's update is zero where the gradient is, so only
        # row 2 of the generator's label embedding and of the projection can move.
        trainer = Trainer(_image_gan("dcgan", num_classes=4), _training(3))
        state = trainer.init_state()
        before = jax.tree.map(np.asarray, state.params)
        batch = _image_batch(8)
        batch["label"] = np.full(8, 2, np.int32)
        state, _ = trainer.train_step(state, batch)
        g_table = ("generator", "generator", "label_embedding", "embed", "embedding")
        d_table = ("discriminator", "discriminator", "projection", "embedding")
        for path in (g_table, d_table):
            old, new = before, state.params
            for key in path:
                old, new = old[key], new[key]
            moved = np.abs(np.asarray(new[...]) - np.asarray(old[...])).sum(axis=1) > 0
            np.testing.assert_array_equal(moved, [False, False, True, False], err_msg="/".join(path))
        samples = trainer.generate(state, 4, labels=np.array([0, 1, 2, 3]))
        self.assertEqual(samples.shape, (4, 8, 8, 1))
        with self.assertRaisesRegex(ValueError, r"labels must lie in \[0, 4\)"):
            trainer.generate(state, 2, labels=np.array([1, 7]))
        with self.assertRaisesRegex(ValueError, "labels"):
            trainer.generate(state, 3, labels=np.array([1, 2]))


class StabilitySignalsTest(absltest.TestCase):
    def test_metrics_jsonl_has_both_players_signals(self):
        trainer = Trainer(_ring_gan("wgan-gp", width=8, n_critic=2), _training(4))
        with tempfile.TemporaryDirectory() as tmp:
            trainer.fit(trainer.init_state(), _ring_batches(2 * 8), callbacks=[MetricsWriter(tmp, tensorboard=False)])
            with open(f"{tmp}/metrics.jsonl") as f:
                records = [json.loads(line) for line in f]
        self.assertEqual([r["step"] for r in records], [1, 2, 3, 4])
        for name in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm", "wasserstein_estimate", "gradient_penalty",
                     "d_real", "d_fake", "d_learning_rate", "g_learning_rate"):
            self.assertIn(name, records[-1])
            self.assertTrue(np.isfinite(records[-1][name]), name)
        # The Wasserstein estimate is the gap of the critic's mean scores.
        self.assertAlmostEqual(records[-1]["wasserstein_estimate"], records[-1]["d_real"] - records[-1]["d_fake"],
                               places=4)


class RingCoverageTest(absltest.TestCase):
    def test_r1_regularised_gan_covers_all_eight_modes(self):
        # The non-saturating GAN with the R1 penalty (gamma = 1, Mescheder et al. 2018)
        # converges smoothly here (d_loss -> log 4); 3000 steps of 256 take ~20-30 s on 2 CPU cores.
        model = _ring_gan("dcgan", r1_weight=1.0)
        trainer = Trainer(model, _training(3000))
        start = time.time()
        state = trainer.fit(trainer.init_state(), _ring_batches(256))
        n = 2000
        samples = trainer.generate(state, n, seed=1)
        modes = eight_gaussians_modes()
        counts = samples_near_modes(samples, modes, 3 * _MODE_STD)
        print(f"ring: {time.time() - start:.1f} s; of {n} EMA samples within 3 std of each mode: {counts.tolist()}")
        # A uniform share is n / 8 = 250; a dropped mode gets ~0.
        self.assertTrue((counts >= 50).all(), f"some mode is not covered: {counts.tolist()}")
        self.assertGreater(counts.sum(), n // 2, "most samples should sit on a mode")
        # The same count sees a collapsed generator: the untrained one puts (almost)
        # nothing on the ring, and one that found a single mode covers one.
        untrained = trainer.generate(trainer.init_state(), n, seed=1)
        self.assertEqual(int((samples_near_modes(untrained, modes, 3 * _MODE_STD) >= 50).sum()), 0)
        collapsed = modes[0] + _MODE_STD * np.random.default_rng(0).standard_normal((n, 2))
        self.assertEqual(int((samples_near_modes(collapsed, modes, 3 * _MODE_STD) >= 50).sum()), 1)


if __name__ == "__main__":
    absltest.main()
