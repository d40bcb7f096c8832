"""Mixed-precision training: bfloat16 close to float32, float16 with dynamic loss scaling, and
every family's train step computing its matmuls and convolutions in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration
from workshop.core.device_manager import FLOAT32_SCOPE_PREFIX, matmul_sites
from workshop.models.factories import create_model
from workshop.train.loss_scaling import DynamicLossScale, all_finite
from workshop.train.trainer import Trainer


def _trainer(precision="float32", **overrides):
    model = create_model(
        ModelConfiguration(model_type="vae", input_shape=(8, 8, 1), latent_dim=8, backbone_type="mlp",
                           encoder_features=[64, 32], decoder_features=[32, 64],
                           parameters={"reconstruction_loss": "bernoulli"}),
        rngs=nnx.Rngs(0),
    )
    config = TrainingConfiguration(num_steps=20, ema_decay=0.9, precision=precision,
                                   optimizer=OptimizerConfiguration(learning_rate=3e-3), **overrides)
    return Trainer(model, config)


def _batches(n, batch=16):
    rng = np.random.default_rng(0)
    return [{"x": (rng.random((batch, 8, 8, 1)) < 0.3).astype(np.float32)} for _ in range(n)]


def _run(trainer, n):
    state, history = trainer.init_state(), []
    for batch in _batches(n):
        state, metrics = trainer.train_step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def _dot_dtypes(trainer):
    """Result dtypes of every matmul in the train step's jaxpr (`c:bf16[16,64] = dot_general ...`)."""
    state, batch = trainer.init_state(), _batches(1)[0]
    text = str(jax.make_jaxpr(trainer._train_step)(state, batch))
    results = [line.split("=")[0] for line in text.splitlines() if "= dot_general" in line]
    return {dtype for lhs in results for dtype in ("bf16", "f16", "f32") if f":{dtype}[" in lhs}


class BFloat16Test(absltest.TestCase):
    def test_bf16_training_stays_close_to_f32(self):
        f32_state, f32 = _run(_trainer(), 5)
        bf16_state, bf16 = _run(_trainer("bfloat16"), 5)
        np.testing.assert_allclose([m["loss"] for m in bf16], [m["loss"] for m in f32], rtol=2e-2)
        self.assertLess(bf16[-1]["loss"], bf16[0]["loss"])
        # float32 master weights, optimizer state and EMA; they moved like float32's.
        for tree in (bf16_state.params, bf16_state.opt_state, bf16_state.ema_params):
            self.assertTrue(all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(tree)))
        kernel = lambda s: np.asarray(s.params["decoder"]["layers"][2]["kernel"][...])  # noqa: E731
        init = kernel(_trainer().init_state())
        moved_bf16, moved_f32 = kernel(bf16_state) - init, kernel(f32_state) - init
        # Adam's normalised steps turn tiny gradient differences into whole steps on a few weights,
        # so compare the update as a whole.
        self.assertLess(np.linalg.norm(moved_bf16 - moved_f32), 0.1 * np.linalg.norm(moved_f32))

    def test_the_step_computes_in_bf16(self):
        self.assertEqual(_dot_dtypes(_trainer()), {"f32"})
        self.assertIn("bf16", _dot_dtypes(_trainer("bfloat16")))

    def test_evaluation_runs_the_model_as_built(self):
        trainer = _trainer("bfloat16")
        state = trainer.init_state()
        self.assertEqual(trainer.model_from_state(state).encoder.layers[0].dtype, jnp.float32)
        train_model = nnx.merge(trainer.graphdef, state.params, state.rest)
        self.assertEqual(train_model.encoder.layers[0].dtype, jnp.bfloat16)
        self.assertTrue(np.isfinite(trainer.evaluate(state, _batches(1))["loss"]))


# The float32 matmuls a bfloat16 train step keeps on purpose, each named by where it sits (a
# `keep_float32` scope, or jax's attention einsum); every other matmul and convolution is bfloat16.
_DELIBERATE_FLOAT32 = {
    # Glow / NSF: W = P L U and W^-1 from the LU factors, whose log_s give log|det W|.
    "invertible_1x1_lu": FLOAT32_SCOPE_PREFIX + "invertible_1x1_lu",
    # VQ-VAE: |z|^2 - 2 z.e + |e|^2 cancels; bf16 would pick the wrong code.
    "vq_code_distances": FLOAT32_SCOPE_PREFIX + "vq_code_distances",
    # VQ-VAE: the EMA codebook sums over the batch.
    "vq_ema_sums": FLOAT32_SCOPE_PREFIX + "vq_ema_sums",
    # Super-resolution: resizing the low-resolution condition (data preparation, no parameters).
    "super_resolution_upsample": FLOAT32_SCOPE_PREFIX + "super_resolution_upsample",
    # jax.nn.dot_product_attention forms q k^T (and its gradients) in float32 for a stable softmax.
    "attention_logits": "BTNH,BSNH->BNTS",
}

_IMG = (8, 8, 1)
# One small model per family and layer kind -> the deliberate float32 matmuls its train step has
# (MADE's masked layers: maf; coupling conditioners: realnvp; 1x1 convolutions: glow, nsf).
_FAMILY_CASES = {
    "vae": (dict(model_type="vae", input_shape=_IMG, latent_dim=4, backbone_type="mlp",
                 encoder_features=[16], decoder_features=[16]), set()),
    "vqvae": (dict(model_type="vqvae", input_shape=_IMG, latent_dim=4, encoder_features=[8, 16],
                   decoder_features=[16, 8], parameters=dict(num_embeddings=8, ema_decay=0.99)),
              {"vq_code_distances", "vq_ema_sums"}),
    "ddpm_unet": (dict(model_type="ddpm", input_shape=_IMG, backbone_type="unet", encoder_features=[8, 16],
                       parameters=dict(num_res_blocks=1, attention_resolutions=[4], num_heads=2)),
                  {"attention_logits"}),
    "ddpm_dit": (dict(model_type="ddpm", input_shape=_IMG, backbone_type="dit",
                      parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2)), {"attention_logits"}),
    "flow_matching_dit": (dict(model_type="flow_matching", input_shape=_IMG, backbone_type="dit",
                               parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2)),
                          {"attention_logits"}),
    "edm_unet": (dict(model_type="edm", input_shape=_IMG, backbone_type="unet", encoder_features=[8, 16],
                      parameters=dict(num_res_blocks=1, attention_resolutions=[4], num_heads=2)),
                 {"attention_logits"}),
    "ddpm_super_resolution": (dict(model_type="ddpm_super_resolution", input_shape=_IMG, backbone_type="unet",
                                   encoder_features=[8, 16],
                                   parameters=dict(num_res_blocks=1, num_heads=2, downsample_factor=2)),
                              {"super_resolution_upsample", "attention_logits"}),
    "ebm": (dict(model_type="ebm", input_shape=(2,), backbone_type="mlp", encoder_features=[16],
                 parameters=dict(mcmc_steps=2)), set()),
    "pixelcnn": (dict(model_type="pixelcnn", input_shape=_IMG, parameters=dict(num_layers=2, features=8)), set()),
    "transformer": (dict(model_type="transformer", input_shape=(8,),
                         parameters=dict(vocab_size=16, num_layers=1, num_heads=2, embed_dim=16)),
                    {"attention_logits"}),
    "wavenet": (dict(model_type="wavenet", input_shape=(16,),
                     parameters=dict(num_levels=16, input_format="mu_law_codes", num_blocks=1, layers_per_block=2,
                                     residual_channels=8, dilation_channels=8, skip_channels=8)), set()),
    "maf": (dict(model_type="maf", input_shape=(4,), num_flows=2, parameters=dict(hidden_features=[16])), set()),
    "nsf_coupling": (dict(model_type="nsf", input_shape=(4, 4, 2), num_flows=2,
                          parameters=dict(transform="coupling", hidden_channels=8)), {"invertible_1x1_lu"}),
    "realnvp": (dict(model_type="realnvp", input_shape=_IMG, num_flows=1,
                     parameters=dict(hidden_channels=8, num_levels=2)), set()),
    "glow": (dict(model_type="glow", input_shape=_IMG, num_flows=1,
                  parameters=dict(hidden_channels=8, num_levels=2)), {"invertible_1x1_lu"}),
}


def _family_batch(model, config):
    rng = np.random.default_rng(0)
    shape = tuple(config.input_shape)
    x = rng.random((4, *shape)).astype(np.float32)
    if config.model_type in ("transformer", "wavenet"):  # token ids / mu-law codes
        size = getattr(model, "vocab_size", None) or model.num_levels
        x = rng.integers(0, size, (4, *shape)).astype(np.int32)
    return {"x": x, "label": np.zeros((4,), np.int32)}


class EveryFamilyComputesInBF16Test(parameterized.TestCase):
    """The bf16 train step of every non-GAN family (GANs: gan_precision_test)."""

    def test_the_cases_cover_every_family_but_gan(self):
        from workshop.core import registry

        families = {registry.get_model_spec(c["model_type"]).family for c, _ in _FAMILY_CASES.values()}
        self.assertEqual(families, set(registry.FAMILIES) - {"gan"})
        used = set().union(*(expected for _, expected in _FAMILY_CASES.values()))
        self.assertEqual(used, set(_DELIBERATE_FLOAT32))  # no stale entries in the allow-list

    @parameterized.named_parameters(*[(name, name) for name in _FAMILY_CASES])
    def test_train_step_matmuls_are_bf16_but_the_deliberate_ones(self, name):
        config_kwargs, expected = _FAMILY_CASES[name]
        config = ModelConfiguration(**config_kwargs)
        model = create_model(config, rngs=nnx.Rngs(0))
        trainer = Trainer(model, TrainingConfiguration(num_steps=1, precision="bfloat16"))
        batch = _family_batch(model, config)
        sites = matmul_sites(jax.make_jaxpr(trainer._train_step)(trainer.init_state(), batch))
        self.assertTrue(any(site.dtype == "bfloat16" for site in sites), f"{name}: no bf16 matmul at all")
        found = set()
        for site in sites:
            if site.dtype == "bfloat16":
                continue
            reasons = [key for key, marker in _DELIBERATE_FLOAT32.items() if marker in site.scope]
            self.assertTrue(reasons, f"{name}: a {site.dtype} {site.primitive} of {site.operand_dtypes} at "
                                     f"{site.source or '?'} (scope {site.scope!r}) ignores the precision policy")
            found.update(reasons)
        self.assertEqual(found, expected)


class Float16Test(absltest.TestCase):
    def test_f16_without_overflow_stays_close_to_f32(self):
        _, f32 = _run(_trainer(), 4)
        _, f16 = _run(_trainer("float16", loss_scale_init=2.0**8), 4)
        self.assertEqual([m["grads_finite"] for m in f16], [1.0] * 4)
        np.testing.assert_allclose([m["loss"] for m in f16], [m["loss"] for m in f32], rtol=2e-2)

    def test_loss_scaling_recovers_from_overflow(self):
        # d loss / d logits is about 0.3 / 16 per pixel: times 2**24 it overflows float16 (max 65504).
        trainer = _trainer("float16", loss_scale_init=2.0**24, loss_scale_period=1000)
        first = trainer.init_state()
        start = jax.device_get(first.params)
        state, metrics = trainer.train_step(first, _batches(1)[0])
        self.assertEqual(float(metrics["grads_finite"]), 0.0)
        self.assertEqual(float(metrics["loss_scale"]), 2.0**24)
        self.assertEqual(float(state.loss_scale["scale"]), 2.0**23)
        self.assertEqual(int(state.step), 1)
        for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(start)):
            np.testing.assert_array_equal(a, b)  # the overflow step was skipped
        history = []
        for batch in _batches(12):
            state, metrics = trainer.train_step(state, batch)
            history.append(jax.device_get(metrics))
        finite = [m["grads_finite"] for m in history]
        self.assertEqual(finite[-4:], [1.0] * 4)  # recovered and stays finite
        skipped = 1 + finite.index(1.0)
        self.assertEqual(float(state.loss_scale["scale"]), 2.0 ** (24 - skipped))
        self.assertTrue(all(np.isfinite(m["loss"]) for m in history))
        self.assertLess(history[-1]["loss"], history[finite.index(1.0)]["loss"])


class DynamicLossScaleTest(absltest.TestCase):
    def test_schedule(self):
        rule = DynamicLossScale(initial_scale=8.0, period=2)
        state, scales = rule.init(), []
        for finite in (True, True, True, False, True, True):
            state = rule.adjust(state, jnp.array(finite))
            scales.append(float(state["scale"]))
        self.assertEqual(scales, [8.0, 16.0, 16.0, 8.0, 8.0, 16.0])
        floor = DynamicLossScale(initial_scale=2.0, min_scale=1.0)
        self.assertEqual(float(floor.adjust(floor.adjust(floor.init(), jnp.array(False)), jnp.array(False))["scale"]),
                         1.0)

    def test_scale_and_unscale_round_trip(self):
        rule = DynamicLossScale(initial_scale=1024.0)
        state = rule.init()
        grads = jax.grad(lambda w: rule.scale(state, jnp.sum(w**2)))(jnp.arange(3.0))
        np.testing.assert_allclose(rule.unscale(state, grads), 2 * jnp.arange(3.0))
        self.assertFalse(bool(all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.inf])})))
        self.assertTrue(bool(all_finite({"a": jnp.ones(2)})))

    def test_bad_rule(self):
        with self.assertRaisesRegex(ValueError, "factor > 1"):
            DynamicLossScale(factor=1.0)


if __name__ == "__main__":
    absltest.main()
