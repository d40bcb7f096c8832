"""Tests of the flow models: realnvp, glow, maf, iaf, nsf (workshop.models.flow)."""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration
from workshop.models.factories import create_flow
from workshop.models.flow.test_util import randomize_params
from workshop.models.training_testing import adam_steps

_TINY = dict(hidden_channels=4, hidden_features=[8])


def _model(model_type, shape, num_flows=2, seed=0, **params):
    config = ModelConfiguration(model_type=model_type, input_shape=shape, num_flows=num_flows,
                                parameters={**_TINY, **params})
    return create_flow(config, rngs=nnx.Rngs(seed))


def _data(shape, n=3, seed=0):
    if len(shape) == 3:  # 8-bit images as the pipeline gives them, k / 255
        return jnp.round(jax.random.uniform(jax.random.key(seed), (n, *shape)) * 255.0) / 255.0
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def _jit_log_prob(model, **kwargs):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s, copy=True).log_prob(x, **kwargs)), state


class RegistryTest(absltest.TestCase):
    def test_flow_model_types_are_registered(self):
        self.assertEqual(registry.registered_model_types("flow"), ["glow", "iaf", "maf", "nsf", "realnvp"])

    def test_the_guide_snippet_builds_quickly(self):
        start = time.perf_counter()
        config = ModelConfiguration(model_type="glow", num_flows=32, parameters={"coupling_type": "affine"})
        model = create_flow(config, rngs=nnx.Rngs(0))
        elapsed = time.perf_counter() - start
        self.assertLess(elapsed, 20.0, f"building the guide's Glow took {elapsed:.1f} s")
        self.assertEqual([lvl.post.num_steps for lvl in model.levels], [32, 32])
        self.assertEqual(model.input_shape, (28, 28, 1))


class ModelTest(parameterized.TestCase):
    # Vector maf/realnvp/glow/nsf-coupling are covered by the change-of-variables test below.
    @parameterized.parameters(
        ("realnvp", (4, 4, 1), {}), ("glow", (4, 4, 2), {"coupling_type": "additive"}),
        ("iaf", (3,), {}), ("nsf", (2, 2, 1), {"transform": "autoregressive"}),
    )
    def test_round_trip_and_log_prob_under_jit(self, model_type, shape, params):
        model = _model(model_type, shape, **params)
        x = _data(shape)
        model(x, rngs=nnx.Rngs(0))  # initialises any ActNorm on a batch
        randomize_params(model, scale=0.1)
        z = model.encode(x)
        self.assertEqual(z.shape, x.shape)
        expected = (x * 255.0 + 0.5) / 256.0 if len(shape) == 3 else x
        np.testing.assert_allclose(model.decode(z), expected, atol=1e-4)
        log_prob, state = _jit_log_prob(model)
        jitted = log_prob(state, x)
        np.testing.assert_allclose(jitted, model.log_prob(x), rtol=1e-5, atol=1e-3)
        self.assertTrue(bool(jnp.all(jnp.isfinite(jitted))))
        if len(shape) == 1:  # also the full change of variables, by brute force
            graphdef, state = nnx.split(model)
            jac = jax.vmap(jax.jacfwd(lambda v: nnx.merge(graphdef, state, copy=True).encode(v[None])[0]))(x)
            expected = (-0.5 * jnp.sum(z**2, -1) - 0.5 * shape[0] * math.log(2 * math.pi)
                        + jnp.linalg.slogdet(jac)[1])
            np.testing.assert_allclose(jitted, expected, atol=1e-4)

    @parameterized.parameters("glow", "maf", "nsf")
    def test_vector_log_prob_is_the_change_of_variables(self, model_type):
        model = randomize_params(_model(model_type, (3,)), scale=0.3)
        x = _data((3,), n=2)
        model(x, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        # The functional NNX pattern: rebuild the model inside the transform.
        jac = jax.vmap(jax.jacfwd(lambda v: nnx.merge(graphdef, state, copy=True).encode(v[None])[0]))(x)
        expected = -0.5 * jnp.sum(model.encode(x) ** 2, -1) - 1.5 * math.log(2 * math.pi) + \
            jnp.linalg.slogdet(jac)[1]
        np.testing.assert_allclose(model.log_prob(x), expected, atol=1e-4)

    @parameterized.parameters(("maf", {}), ("nsf", {"tail_bound": 2.0}), ("realnvp", {}))
    def test_density_integrates_to_one_on_a_grid(self, model_type, params):
        model = randomize_params(_model(model_type, (2,), num_flows=3, **params), seed=1, scale=0.2)
        edge, n = 8.0, 801  # fine enough to resolve the steep parts of the splines
        axis = jnp.linspace(-edge, edge, n)
        grid = jnp.stack(jnp.meshgrid(axis, axis), -1).reshape(-1, 2)
        log_prob, state = _jit_log_prob(model)
        mass = float(jnp.sum(jnp.exp(log_prob(state, grid)))) * (axis[1] - axis[0]) ** 2
        self.assertAlmostEqual(mass, 1.0, delta=0.02)

    def test_image_log_prob_is_the_likelihood_of_the_8bit_data(self):
        x = _data((4, 4, 1))
        y = (x * 255.0 + 0.5) / 256.0
        d = 16
        # Zero-initialised couplings are the identity, so only preprocessing and the base remain.
        centred = _model("realnvp", (4, 4, 1), logit_alpha=0.0)
        expected = jnp.sum(-0.5 * (y - 0.5) ** 2, axis=(1, 2, 3)) - 0.5 * d * math.log(2 * math.pi) - d * math.log(256)
        np.testing.assert_allclose(centred.log_prob(x), expected, rtol=1e-5)
        a = 0.05
        logit = _model("realnvp", (4, 4, 1), logit_alpha=a)
        s = a + (1 - 2 * a) * y
        h = jnp.log(s / (1 - s))
        log_det = jnp.sum(math.log(1 - 2 * a) - jnp.log(s * (1 - s)), axis=(1, 2, 3))
        expected = jnp.sum(-0.5 * h**2, axis=(1, 2, 3)) - 0.5 * d * math.log(2 * math.pi) + log_det - d * math.log(256)
        np.testing.assert_allclose(logit.log_prob(x), expected, rtol=1e-5)
        outputs = logit(x, rngs=nnx.Rngs(0))
        metrics = logit.loss_fn({"x": x}, outputs)
        np.testing.assert_allclose(metrics["nll_bits_per_dim"], metrics["loss"] / (d * math.log(2)), rtol=1e-6)
        # Averaging K dequantisation draws inside the log is a tighter bound than one draw on average.
        several = logit.log_prob(x, rngs=nnx.Rngs(1), num_samples=8)
        self.assertTrue(bool(jnp.all(jnp.isfinite(several))))

    def test_generate(self):
        model = randomize_params(_model("glow", (4, 4, 1)), scale=0.1)
        few = model.generate(n_samples=2, rngs=nnx.Rngs(3))
        many = model.generate(n_samples=5, rngs=nnx.Rngs(3))
        self.assertEqual(many.shape, (5, 4, 4, 1))
        np.testing.assert_allclose(many[:2], few, atol=1e-6)
        self.assertTrue(bool(jnp.all((many >= 0) & (many <= 1))))
        cold = model.generate(n_samples=3, rngs=nnx.Rngs(3), temperature=0.0)
        np.testing.assert_allclose(cold, jnp.broadcast_to(cold[:1], cold.shape))

    def test_conditional_model(self):
        model = randomize_params(_model("realnvp", (4,), num_classes=3), scale=0.3)
        x = _data((4,), n=2)
        a = model.log_prob(x, labels=jnp.array([0, 0]))
        b = model.log_prob(x, labels=jnp.array([2, 2]))
        self.assertGreater(float(jnp.max(jnp.abs(a - b))), 1e-3)
        self.assertEqual(model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=jnp.array([1, 2])).shape, (2, 4))
        with self.assertRaisesRegex(ValueError, "labels are required"):
            model.log_prob(x)
        with self.assertRaisesRegex(ValueError, "unconditional"):
            _model("maf", (4,)).log_prob(x, labels=jnp.array([0, 1]))


class BadInputTest(absltest.TestCase):
    def test_unknown_coupling_type_lists_the_valid_ones(self):
        with self.assertRaisesRegex(ValueError, "coupling_type.*'affine' or 'additive'"):
            ModelConfiguration(model_type="glow", parameters={"coupling_type": "affinne"})

    def test_unknown_parameter_is_refused(self):
        with self.assertRaisesRegex(ValueError, "num_bins.*not valid for model_type 'glow'"):
            ModelConfiguration(model_type="glow", parameters={"num_bins": 4})

    def test_image_size_that_cannot_be_squeezed_names_the_shape(self):
        with self.assertRaisesRegex(ValueError, r"\(7, 7, 1\)"):
            _model("glow", (7, 7, 1))
        with self.assertRaisesRegex(ValueError, r"num_levels=3 .*divisible by 8.*\(28, 28, 1\)"):
            _model("glow", (28, 28, 1), num_levels=3)
        with self.assertRaisesRegex(ValueError, r"num_levels applies to images"):
            _model("realnvp", (4,), num_levels=2)

    def test_wrong_batch_shape_names_both_shapes(self):
        model = _model("maf", (3,))
        with self.assertRaisesRegex(ValueError, r"input_shape \(3,\).*got shape \(2, 4\)"):
            model.log_prob(jnp.zeros((2, 4)))

    def test_sequence_shapes_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"images \(H, W, C\) or vectors \(D,\)"):
            _model("maf", (5, 2))


class TrainingTest(absltest.TestCase):
    def test_one_layer_maf_reaches_the_analytic_nll_of_gaussian_data(self):
        mean, std = np.array([1.0, -2.0], np.float32), np.array([0.5, 2.0], np.float32)
        model = _model("maf", (2,), num_flows=1)
        rng = np.random.default_rng(0)
        batches = [{"x": (mean + std * rng.standard_normal((256, 2))).astype(np.float32)} for _ in range(400)]
        adam_steps(model, batches, learning_rate=2e-2)
        test = (mean + std * rng.standard_normal((4000, 2))).astype(np.float32)
        nll = -float(jnp.mean(model.log_prob(test)))
        analytic = float(np.sum(0.5 * np.log(2 * np.pi * np.e * std**2)))
        self.assertAlmostEqual(nll, analytic, delta=0.05)

    def test_actnorm_initialises_inside_the_compiled_train_step(self):
        def initialized_flags(model):
            return [bool(jnp.all(v)) for path, v in jax.tree_util.tree_leaves_with_path(nnx.state(model))
                    if "initialized" in str(path)]

        model = _model("glow", (4, 4, 1))
        self.assertTrue(initialized_flags(model) and not any(initialized_flags(model)))
        (metrics,) = adam_steps(model, [{"x": np.asarray(_data((4, 4, 1), n=8))}])
        self.assertTrue(all(initialized_flags(model)))
        self.assertTrue(np.isfinite(metrics["loss"]))

if __name__ == "__main__":
    absltest.main()
