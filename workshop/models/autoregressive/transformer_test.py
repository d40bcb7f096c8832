"""Transformer: causality by gradients, cached decoding equals the full pass, likelihood, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.autoregressive.attention import apply_rotary
from workshop.models.autoregressive import Transformer
from workshop.models.autoregressive.sampling import sample_categorical

_T, _V = 8, 11


def _model(shape=(_T,), **params):
    params = {"vocab_size": _V, "num_layers": 2, "num_heads": 2, "embed_dim": 16, **params}
    if len(shape) == 3:
        params.pop("vocab_size")
    return Transformer(ModelConfiguration(model_type="transformer", input_shape=shape, parameters=params),
                        rngs=nnx.Rngs(0))


def _tokens(n=3, length=_T, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, _V, (n, length)), jnp.int32)


class TransformerTest(parameterized.TestCase):
    @parameterized.parameters("learned", "rotary")
    def test_logits_at_t_depend_only_on_inputs_up_to_t(self, positions):
        """Input t holds token t-1, so logits t see tokens < t (and every one of them)."""
        model = _model(positions=positions)
        h = model.embed_inputs(_tokens(1))
        proj = jax.random.normal(jax.random.key(1), (_V,))
        jac = jax.jit(jax.jacrev(lambda h: model.transform(h)[0] @ proj))(h)  # [T, 1, T, D]
        dep = np.abs(np.asarray(jac[:, 0])).sum(-1)  # [out t, in s]
        causal = np.tril(np.ones((_T, _T), bool))
        self.assertEqual(float(dep[~causal].max()), 0.0)
        self.assertGreater(float(dep[causal].min()), 0.0)

    @parameterized.parameters(("learned", None), ("rotary", None), ("rotary", 3))
    def test_cached_decoding_matches_the_full_pass(self, positions, num_classes):
        model = _model(positions=positions, num_classes=num_classes)
        tokens = _tokens(2)
        labels = None if num_classes is None else jnp.array([0, 2])
        full = model(tokens, labels=labels)["logits"]
        inputs = model.embed_inputs(tokens, labels)
        if model.learned_positions:  # decode_step adds the position itself
            inputs = inputs - model.position_embed(jnp.arange(_T))[None]

        def step(caches, t):
            logits, caches = model.decode_step(jax.lax.dynamic_slice_in_dim(inputs, t, 1, axis=1), caches, t)
            return caches, logits

        _, cached = jax.jit(lambda: jax.lax.scan(step, model.init_cache(2), jnp.arange(_T)))()
        np.testing.assert_allclose(jnp.swapaxes(cached, 0, 1), full, atol=1e-5)

    def test_generation_with_and_without_cache_agree(self):
        model = _model(positions="rotary", max_length=12)
        gen = jax.jit(lambda use_cache: model.generate(n_samples=3, rngs=nnx.Rngs(4), top_k=6, top_p=0.9,
                                                       use_cache=use_cache), static_argnums=0)
        with_cache, without = gen(True), gen(False)
        self.assertEqual(with_cache.shape, (3, _T))
        np.testing.assert_array_equal(with_cache, without)
        self.assertTrue(((with_cache >= 0) & (with_cache < _V)).all())

    @parameterized.parameters(("learned", True), ("rotary", True), ("rotary", False))
    def test_prompt_is_kept_and_continued_as_a_decode_step_loop(self, positions, use_cache):
        """generate(prompt=...) equals feeding the prompt through decode_step by hand, then sampling."""
        model = _model(positions=positions, max_length=12)
        prompt = np.array([[3, 1, 4], [1, 5, 9]], np.int32)
        out = np.asarray(jax.jit(lambda: model.generate(n_samples=2, rngs=nnx.Rngs(4), prompt=prompt, length=11,
                                                        top_k=6, use_cache=use_cache))())
        self.assertEqual(out.shape, (2, 11))
        np.testing.assert_array_equal(out[:, :3], prompt)
        # By hand: the start token, then each known or drawn token through the cache.
        key = nnx.Rngs(4).sample()
        caches, h, expected = model.init_cache(2), model._start(None, 2)[:, None, :], []
        for t in range(11):
            logits, caches = model.decode_step(h, caches, t)
            if t < 3:
                token = jnp.asarray(prompt[:, t])
            else:
                token = jnp.stack([sample_categorical(jax.random.fold_in(jax.random.fold_in(key, i), t), logits[i],
                                                      top_k=6) for i in range(2)])
            expected.append(token)
            h = model.embed(token)[:, None, :]
        np.testing.assert_array_equal(out, np.stack(expected, axis=1))
        # A shared prompt [P] is every sample's.
        shared = model.generate(n_samples=2, rngs=nnx.Rngs(4), prompt=prompt[0], length=11, top_k=6)
        np.testing.assert_array_equal(shared[0], out[0])
        np.testing.assert_array_equal(shared[1, :3], prompt[0])

    def test_image_prompt_keeps_the_top_rows(self):
        model = _model((3, 2, 1), num_levels=4)
        top = np.array([[[[1 / 3], [1.0]]], [[[0.0], [2 / 3]]]], np.float32)  # [2, 1 row, 2, 1]
        samples = model.generate(n_samples=2, rngs=nnx.Rngs(0), prompt=top)
        np.testing.assert_allclose(samples[:, :1], top, atol=1e-6)
        free = model.generate(n_samples=2, rngs=nnx.Rngs(0))
        self.assertEqual(samples.shape, free.shape)
        with self.assertRaisesRegex(ValueError, r"top rows \[n_samples, R, 2, 1\] with R <= 3; got shape \(2, 1, 3, 1\)"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), prompt=np.zeros((2, 1, 3, 1), np.float32))

    @parameterized.parameters("learned", "rotary")
    def test_decoding_past_max_length_is_refused(self, positions):
        model = _model(positions=positions)  # max_length = T = 8
        h = model._start(None, 1)[:, None, :]
        logits, _ = model.decode_step(h, model.init_cache(1), 7)
        self.assertTrue(np.isfinite(np.asarray(logits)).all())
        with self.assertRaisesRegex(ValueError, r"decode position 8 is outside \[0, max_length=8\)"):
            model.decode_step(h, model.init_cache(1), 8)
        with self.assertRaisesRegex(ValueError, "decode position -1"):
            model.decode_step(h, model.init_cache(1), jnp.array(-1))
        with self.assertRaisesRegex(ValueError, "caches hold 9 positions but max_length is 8"):
            model.decode_step(h, [b.attn.init_cache(1, 9) for b in model.blocks], 0)
        with self.assertRaisesRegex(ValueError, r"length 9 must lie in \[1, max_length=8\]"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), length=9)
        with self.assertRaisesRegex(ValueError, "the prompt has 6 tokens, more than the 5"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), prompt=np.arange(6), length=5)
        with self.assertRaisesRegex(ValueError, r"prompt: tokens \(vocab_size 11\) must lie in"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), prompt=np.array([3, 11]))
        with self.assertRaisesRegex(ValueError, r"\[P\] or \[n_samples, P\] token ids; got shape \(3, 2\)"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), prompt=np.zeros((3, 2), np.int32))

    def test_rotary_scores_depend_only_on_the_offset(self):
        q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))
        score = lambda i, j: jnp.sum(apply_rotary(q, jnp.array([i])) * apply_rotary(k, jnp.array([j])))  # noqa: E731
        np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-5)
        self.assertGreater(abs(float(score(3, 1) - score(3, 2))), 1e-4)

    def test_uniform_model_gives_log_vocab_per_token(self):
        model = _model()
        model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
        model.head.bias[...] = jnp.zeros_like(model.head.bias[...])
        np.testing.assert_allclose(model.log_prob(_tokens(), num_samples=5), -_T * math.log(_V), rtol=1e-6)
        metrics = model.loss_fn({"x": _tokens()}, model(_tokens()))
        np.testing.assert_allclose(metrics["perplexity"], _V, rtol=1e-5)  # uniform over the vocabulary
        np.testing.assert_allclose(metrics["nll_bits_per_dim"], math.log2(_V), rtol=1e-6)

    def test_images_as_pixel_sequences(self):
        model = _model((3, 2, 1), num_levels=4)
        images = np.random.default_rng(0).integers(0, 4, (2, 3, 2, 1)).astype(np.float32) / 3
        out = model(images)
        self.assertEqual(out["logits"].shape, (2, 6, 4))
        np.testing.assert_array_equal(out["tokens"], np.round(images * 3).reshape(2, 6))
        metrics = model.loss_fn({"x": images}, out)
        np.testing.assert_allclose(metrics["nll_bits_per_dim"], -model.log_prob(images).mean() / (6 * math.log(2)),
                                   rtol=1e-5)
        # Every one of the 4^6 images: the probabilities sum to one.
        all_levels = np.stack(np.meshgrid(*[np.arange(4)] * 6, indexing="ij"), -1).reshape(-1, 3, 2, 1)
        total = jax.nn.logsumexp(jax.jit(model.log_prob)(all_levels.astype(np.int32)))
        self.assertAlmostEqual(float(total), 0.0, places=3)
        samples = model.generate(n_samples=2, rngs=nnx.Rngs(0))
        self.assertEqual(samples.shape, (2, 3, 2, 1))
        np.testing.assert_allclose(samples * 3, np.round(samples * 3), atol=1e-5)

    def test_dropout_only_in_training_mode(self):
        model = _model(dropout_rate=0.5)
        tokens = _tokens(2)
        reference = model(tokens, deterministic=True)["logits"]
        # Training mode (after construction): masks come from rngs, so different keys differ, equal keys agree.
        a, b = model(tokens, rngs=nnx.Rngs(1))["logits"], model(tokens, rngs=nnx.Rngs(2))["logits"]
        self.assertGreater(float(jnp.abs(a - b).max()), 1e-3)
        np.testing.assert_array_equal(a, model(tokens, rngs=nnx.Rngs(1))["logits"])
        self.assertGreater(float(jnp.abs(a - reference).max()), 1e-3)
        with self.assertRaisesRegex(ValueError, "dropout_rate=0.5 in training mode needs rngs="):
            model(tokens)
        # Only attention dropout: the masked attention weights still see the past only.
        attn_only = _model(dropout_rate=0.5)
        attn_only.set_attributes(nnx.Dropout, deterministic=True)
        h = attn_only.embed_inputs(_tokens(1))
        jac = jax.jacrev(lambda h: attn_only.transform(h, rngs=nnx.Rngs(3))[0].sum(-1))(h)  # [T, 1, T, D]
        dep = np.abs(np.asarray(jac[:, 0])).sum(-1)
        self.assertEqual(float(dep[~np.tril(np.ones((_T, _T), bool))].max()), 0.0)
        self.assertGreater(float(jnp.abs(attn_only.transform(h, rngs=nnx.Rngs(3))
                                         - attn_only.transform(h, deterministic=True)).max()), 1e-3)
        # log_prob and generation never drop, in either mode.
        np.testing.assert_allclose(model.log_prob(tokens), Transformer._log_prob({"logits": reference, "tokens": tokens}),
                                   rtol=1e-6)
        train_samples = model.generate(n_samples=2, rngs=nnx.Rngs(5), use_cache=False)
        model.eval()
        for _ in range(2):  # eval mode is deterministic without rngs
            np.testing.assert_array_equal(model(tokens)["logits"], reference)
        np.testing.assert_array_equal(model.generate(n_samples=2, rngs=nnx.Rngs(5)), train_samples)
        model.train()
        self.assertGreater(float(jnp.abs(model(tokens, rngs=nnx.Rngs(1))["logits"] - reference).max()), 1e-3)

    def test_bad_input_is_named(self):
        model = _model()
        with self.assertRaisesRegex(ValueError, "sequence length 9 exceeds max_length 8"):
            model.log_prob(_tokens(length=9))
        bad = np.zeros((1, _T), np.int32)
        bad[0, 5] = 11
        with self.assertRaisesRegex(ValueError, r"vocab_size 11\) must lie in \[0, 11\); got 11 at index \(0, 5\)"):
            model.log_prob(bad)
        with self.assertRaisesRegex(ValueError, "tokens must be integers"):
            model.log_prob(np.zeros((1, _T), np.float32))
        with self.assertRaisesRegex(ValueError, r"values in \[0, 1\].*got -0.5"):
            _model((2, 2, 1)).log_prob(np.full((1, 2, 2, 1), -0.5, np.float32))
        with self.assertRaisesRegex(ValueError, "needs parameters.vocab_size"):
            Transformer(ModelConfiguration(model_type="transformer", input_shape=(4,)), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "top_p must lie in"):
            model.generate(n_samples=1, rngs=nnx.Rngs(0), top_p=1.5)
        # A whole data set, checked on the host before training (jit cannot name a value).
        data = np.zeros((100, _T), np.int32)
        model.check_inputs(data)
        data[73, 2] = -1
        with self.assertRaisesRegex(ValueError, r"must lie in \[0, 11\); got -1 at index \(73, 2\)"):
            model.check_inputs(data)
        with self.assertRaisesRegex(ValueError, "sequence length 9 exceeds max_length 8"):
            model.check_inputs(np.zeros((2, 9), np.int32))
        with self.assertRaisesRegex(ValueError, r"token ids \[N, T\], got shape \(2, 8, 1\)"):
            model.check_inputs(np.zeros((2, _T, 1), np.int32))


if __name__ == "__main__":
    absltest.main()
