"""Tests of the "ebm" model: objectives, replay buffer, divergence, AIS likelihood, training.

Its checkpoint round trip (the replay buffer resumes) is tested with the trainer, in
workshop/train/checkpointing_test.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.data.datasets.toy import eight_gaussians_modes, sample_toy
from workshop.generative_models.factories import create_ebm
from workshop.models.ebm import EBM
from workshop.models.ebm.samplers import chain_normal
from workshop.models.training_testing import adam_steps


def _config(**parameters):
    features = parameters.pop("features", [16, 16])
    defaults = dict(mcmc_steps=5, step_size=0.01, buffer_size=64, init_range=(-3.0, 3.0), prior_std=2.0)
    defaults.update(parameters)
    return ModelConfiguration(model_type="ebm", input_shape=(2,), encoder_features=features, backbone_type="mlp",
                              parameters=defaults)


def _gaussian_ebm(w, b, prior_std, **parameters):
    """No hidden layer: E(x) = w.x + b + 0.5 |x|^2 / prior_std^2, the Gaussian N(-prior_std^2 w, prior_std^2 I)."""
    model = EBM(_config(features=[], prior_std=prior_std, **parameters), rngs=nnx.Rngs(0))
    model.network.head.layers[0].kernel[...] = jnp.asarray(w, jnp.float32).reshape(2, 1)
    model.network.head.layers[0].bias[...] = jnp.asarray([b], jnp.float32)
    return model


class ConfigurationTest(absltest.TestCase):
    def test_guide_snippet(self):
        config = ModelConfiguration(model_type="ebm", parameters={"mcmc_steps": 60, "step_size": 0.01})
        model = create_ebm(config, rngs=nnx.Rngs(0))
        self.assertEqual(model.replay_buffer[...].shape, (10000, 28, 28, 1))
        self.assertEqual(model.network.backbone, "conv")
        self.assertEqual(model.energy(jnp.zeros((3, 28, 28, 1))).shape, (3,))
        # The buffer is state, not a parameter: the optimizer never sees it.
        self.assertNotIn("replay_buffer", nnx.state(model, nnx.Param))

    def test_bad_parameters_name_the_field(self):
        for params, field in (({"step_size": 0.0}, "step_size"), ({"step_size": -0.1}, "step_size"),
                              ({"mcmc_steps": 0}, "mcmc_steps"), ({"reinit_fraction": 1.5}, "reinit_fraction"),
                              ({"init_range": (1.0, 0.0)}, "init_range"), ({"sampler": "gibbs"}, "sampler"),
                              ({"stepsize": 0.1}, "stepsize")):
            with self.assertRaisesRegex(ValueError, field):
                ModelConfiguration(model_type="ebm", parameters=params)

    def test_bad_inputs(self):
        model = EBM(_config(), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"expects inputs \[B, 2\] \(input_shape \(2,\)\), got shape \(4, 3\)"):
            model.energy(jnp.zeros((4, 3)))
        with self.assertRaisesRegex(ValueError, "unconditional and takes no labels"):
            model.energy(jnp.zeros((4, 2)), jnp.zeros((4,), jnp.int32))
        with self.assertRaisesRegex(ValueError, "larger than parameters.buffer_size 64"):
            model(jnp.zeros((65, 2)), rngs=nnx.Rngs(0))
        conditional = EBM(_config(num_classes=3), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "labels are required"):
            conditional.energy(jnp.zeros((4, 2)))
        with self.assertRaisesRegex(ValueError, "backbone_type 'conv' needs an"):
            EBM(_config().model_copy(update={"backbone_type": "conv"}), rngs=nnx.Rngs(0))


class ObjectiveTest(absltest.TestCase):
    def test_cd_loss_and_divergence_flag(self):
        model = EBM(_config(energy_reg=0.5, max_energy=10.0), rngs=nnx.Rngs(0))
        e_pos, e_neg = np.array([1.0, -2.0]), np.array([3.0, 0.5])
        out = {"energy_pos": jnp.asarray(e_pos), "energy_neg": jnp.asarray(e_neg), "acceptance_rate": jnp.ones(())}
        m = model.loss_fn({}, out)
        expected = e_pos.mean() - e_neg.mean() + 0.5 * ((e_pos**2).mean() + (e_neg**2).mean())
        self.assertAlmostEqual(float(m["loss"]), expected, places=5)
        self.assertAlmostEqual(float(m["cd_gap"]), e_pos.mean() - e_neg.mean(), places=5)
        self.assertEqual(float(m["energy_abs_max"]), 3.0)
        out["energy_neg"] = jnp.asarray([30.0, 0.0])
        self.assertEqual(float(model.loss_fn({}, out)["energy_abs_max"]), np.inf)

    def test_no_gradient_flows_through_the_chains(self):
        """d loss / d theta equals the gradient with the negative samples held as constants."""
        model = EBM(_config(mcmc_steps=10, step_size=0.05), rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        x = jnp.asarray(sample_toy("two_moons", 8)[0])

        def through_model(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            outputs = m(x, rngs=nnx.Rngs(3))
            return m.loss_fn({"x": x}, outputs)["loss"], outputs["samples"]

        (_, x_neg), grads = jax.jit(jax.value_and_grad(through_model, has_aux=True))(params)

        def fixed_negatives(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            e_pos, e_neg = m.energy(x), m.energy(x_neg)
            return jnp.mean(e_pos) - jnp.mean(e_neg) + jnp.mean(e_pos**2) + jnp.mean(e_neg**2)

        expected = jax.grad(fixed_negatives)(params)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        self.assertGreater(float(jnp.abs(x_neg - x).max()), 0.0)

    def test_dsm_loss_matches_closed_form(self):
        """E(x) = w.x + b + |x|^2 / (2 s^2): grad E(y) = w + y / s^2, so the residual is known."""
        w, s, sigma = np.array([0.3, -0.7]), 1.5, 0.2
        model = _gaussian_ebm(w, 0.1, s, objective="dsm", dsm_noise_std=sigma, init_range=(-1.0, 1.0))
        x = jnp.asarray([[0.5, -1.0], [2.0, 0.0], [0.0, 0.3]])
        out = model(x, rngs=nnx.Rngs(4))
        # The model's noise is chain_normal on the sample stream's first key.
        eps = np.asarray(chain_normal(nnx.Rngs(4).sample(), x.shape))
        residual = eps - sigma * (w + (np.asarray(x) + sigma * eps) / s**2)
        np.testing.assert_allclose(out["dsm_loss"], 0.5 * (residual**2).sum(1), rtol=1e-5)
        metrics = model.loss_fn({"x": x}, out)
        self.assertAlmostEqual(float(metrics["loss"]), float(np.mean(0.5 * (residual**2).sum(1))), places=5)


class ReplayBufferTest(absltest.TestCase):
    def test_train_step_writes_its_chains_back_and_eval_does_not(self):
        model = EBM(_config(reinit_fraction=0.0), rngs=nnx.Rngs(0))
        before = np.asarray(model.replay_buffer[...]).copy()
        x = jnp.asarray(sample_toy("two_moons", 16)[0])
        out = model(x, rngs=nnx.Rngs(1))
        after = np.asarray(model.replay_buffer[...])
        changed = np.flatnonzero(np.any(before != after, axis=1))
        self.assertLen(changed, 16)
        np.testing.assert_array_equal(np.sort(after[changed], 0), np.sort(np.asarray(out["samples"]), 0))
        model.eval()
        model(x, rngs=nnx.Rngs(2))
        np.testing.assert_array_equal(np.asarray(model.replay_buffer[...]), after)


class DivergenceTest(absltest.TestCase):
    def test_exploding_energies_turn_energy_abs_max_to_inf(self):
        # No energy regularisation and a large learning rate: E+ -> -inf, E- -> +inf. Once |E|
        # passes max_energy the metric is +inf, so a trainer's non-finite guard stops the run.
        cfg = _config(energy_reg=0.0, max_energy=50.0, prior_std=None)
        data = sample_toy("eight_gaussians", 16 * 200)[0]
        batches = [{"x": data[i * 16:(i + 1) * 16]} for i in range(200)]
        history = adam_steps(EBM(cfg, rngs=nnx.Rngs(0)), batches, learning_rate=0.5)
        energy_abs_max = np.array([m["energy_abs_max"] for m in history])
        self.assertTrue(np.isfinite(energy_abs_max[0]))
        self.assertLess(energy_abs_max[0], 50.0)
        first_inf = int(np.argmax(np.isposinf(energy_abs_max)))
        self.assertTrue(np.isposinf(energy_abs_max[first_inf]))
        self.assertTrue(np.all(np.isfinite(energy_abs_max[:first_inf])))


class LikelihoodTest(absltest.TestCase):
    def test_ais_log_prob_of_a_gaussian_energy(self):
        w, b, s = np.array([0.5, -1.0]), 0.7, 0.8
        model = _gaussian_ebm(w, b, s, init_range=(-1.0, 1.0), ais_chains=256, ais_temperatures=100,
                              ais_step_size=0.3)
        x = jnp.asarray([[0.0, 0.0], [-0.3, 0.9], [1.0, 1.0]])
        mean = -(s**2) * w
        expected = -0.5 * ((np.asarray(x) - mean) ** 2).sum(1) / s**2 - math.log(2 * math.pi * s**2)

        @nnx.jit
        def estimate(model, x):
            return model.log_prob(x, rngs=nnx.Rngs(0)), model.log_partition(rngs=nnx.Rngs(0))

        log_p, result = estimate(model, x)
        np.testing.assert_allclose(log_p, -model.energy(x) - result.log_z, rtol=1e-6)  # the same AIS run
        np.testing.assert_allclose(log_p, expected, atol=max(4 * float(result.stderr), 1e-3))
        self.assertLess(float(result.stderr), 0.05)

    def test_conditional_log_prob_uses_each_label_partition(self):
        model = EBM(_config(num_classes=2, ais_chains=32, ais_temperatures=10), rngs=nnx.Rngs(0))
        x = jnp.asarray([[0.0, 0.0], [0.5, 0.5], [1.0, -1.0], [-1.0, 0.2]])
        labels = jnp.asarray([0, 1, 0, 1])
        log_p = nnx.jit(lambda m, x, y: m.log_prob(x, rngs=nnx.Rngs(0), labels=y))(model, x, labels)
        log_z = -np.asarray(log_p) - np.asarray(model.energy(x, labels))  # one log Z per label
        self.assertAlmostEqual(log_z[0], log_z[2], places=4)
        self.assertAlmostEqual(log_z[1], log_z[3], places=4)
        self.assertNotAlmostEqual(log_z[0], log_z[1], places=3)


class TrainingTest(absltest.TestCase):
    def test_cd_learns_eight_gaussians(self):
        cfg = ModelConfiguration(
            model_type="ebm", input_shape=(2,), encoder_features=[64, 64], backbone_type="mlp",
            parameters=dict(mcmc_steps=30, step_size=0.002, init_range=(-4.0, 4.0), prior_std=4.0,
                            buffer_size=4096, energy_reg=0.01, generate_steps=60),
        )
        model = EBM(cfg, rngs=nnx.Rngs(0))
        data = sample_toy("eight_gaussians", 20000)[0]
        rng = np.random.default_rng(0)
        batches = ({"x": data[rng.integers(0, len(data), 128)]} for _ in range(600))
        history = adam_steps(model, batches, learning_rate=2e-3, b1=0.0)
        # Over the last 100 steps, data gets lower energy than the chains, and the energies stay bounded.
        self.assertLess(np.mean([m["cd_gap"] for m in history[-100:]]), -0.2)
        self.assertLess(np.mean([m["energy_abs_max"] for m in history[-100:]]), 50.0)
        model.eval()
        samples = np.asarray(nnx.jit(lambda m: m.generate(n_samples=500, rngs=nnx.Rngs(1)))(model))
        distance = np.min(np.linalg.norm(samples[:, None] - eight_gaussians_modes()[None], axis=-1), axis=1)
        self.assertGreater(np.mean(distance < 0.5), 0.7)
        # Every mode is visited (no mode collapse).
        self.assertLen(np.unique(np.argmin(np.linalg.norm(samples[:, None] - eight_gaussians_modes()[None],
                                                          axis=-1), axis=1)), 8)


if __name__ == "__main__":
    absltest.main()
