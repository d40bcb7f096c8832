"""WaveNet: causality and receptive field by gradients, fast == naive generation, likelihood, mu-law."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.autoregressive.quantization import mu_law_decode, mu_law_encode
from workshop.models.autoregressive import WaveNet
from workshop.models.autoregressive.sampling import sample_categorical

_T = 12


def _model(**params):
    params = {"num_blocks": 2, "layers_per_block": 2, "residual_channels": 8, "dilation_channels": 8,
              "skip_channels": 8, **params}
    return WaveNet(ModelConfiguration(model_type="wavenet", input_shape=(_T,), parameters=params),
                        rngs=nnx.Rngs(0))


def _codes(n=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, _T)), jnp.int32)


class WaveNetTest(absltest.TestCase):
    def test_output_t_sees_exactly_the_receptive_field_before_it(self):
        model = _model()  # dilations 1, 2, 1, 2: receptive field 7 inputs
        self.assertEqual(model.receptive_field, 7)
        h = model.embed_inputs(_codes(1))  # input s holds code s-1
        proj = jax.random.normal(jax.random.key(1), (256,))
        jac = jax.jit(jax.jacrev(lambda h: model.network(h)[0] @ proj))(h)  # [T, 1, T, R]
        dep = np.abs(np.asarray(jac[:, 0])).sum(-1) > 0  # [out t, in s]
        t, s = np.meshgrid(np.arange(_T), np.arange(_T), indexing="ij")
        np.testing.assert_array_equal(dep, (s <= t) & (t - s < model.receptive_field))

    def test_fast_generation_equals_naive_generation(self):
        model = _model(num_classes=3)
        gen = jax.jit(lambda fast: model.generate(n_samples=3, rngs=nnx.Rngs(7), labels=jnp.array([0, 1, 2]),
                                                  fast=fast), static_argnums=0)
        fast, naive = gen(True), gen(False)
        self.assertEqual(fast.shape, (3, _T))
        np.testing.assert_array_equal(fast, naive)
        self.assertGreater(len(np.unique(np.asarray(fast))), 3)  # not a constant sequence

    def test_prompt_is_kept_and_continued_as_the_network_would(self):
        """Fast generation from a prompt equals sampling by hand from the full network's logits."""
        model = _model(num_classes=3)
        prompt = np.array([[200, 13, 77, 5, 128], [0, 255, 31, 64, 90]], np.int32)
        labels = jnp.array([2, 0])
        out = np.asarray(jax.jit(lambda: model.generate(n_samples=2, rngs=nnx.Rngs(7), labels=labels,
                                                        prompt=prompt))())
        np.testing.assert_array_equal(out[:, :5], prompt)
        key = nnx.Rngs(7).sample()
        codes = np.zeros((2, _T), np.int32)
        codes[:, :5] = prompt
        for t in range(5, _T):
            logits = model.network(model.embed_inputs(jnp.asarray(codes)), labels)[:, t]
            codes[:, t] = [int(sample_categorical(jax.random.fold_in(jax.random.fold_in(key, i), t), logits[i]))
                           for i in range(2)]
        np.testing.assert_array_equal(out, codes)
        wave_model = _model(input_format="waveform")
        wave = np.linspace(-0.9, 0.9, 4, dtype=np.float32)
        waves = wave_model.generate(n_samples=2, rngs=nnx.Rngs(1), prompt=wave)  # one prompt for both
        np.testing.assert_allclose(waves[:, :4], np.broadcast_to(mu_law_decode(mu_law_encode(wave)), (2, 4)),
                                   atol=1e-6)
        with self.assertRaisesRegex(ValueError, "the prompt has 13 samples, more than the 12"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=labels, prompt=np.zeros(13, np.int32))
        with self.assertRaisesRegex(ValueError, r"waveform values must lie in \[-1, 1\]"):
            wave_model.generate(n_samples=1, rngs=nnx.Rngs(0), prompt=np.array([0.5, 1.5], np.float32))

    def test_uniform_model_gives_log_256_per_sample(self):
        model = _model()
        model.out.kernel[...] = jnp.zeros_like(model.out.kernel[...])
        model.out.bias[...] = jnp.zeros_like(model.out.bias[...])
        np.testing.assert_allclose(model.log_prob(_codes(3), num_samples=4), -_T * math.log(256), rtol=1e-6)
        metrics = model.loss_fn({}, model(_codes(3)))
        np.testing.assert_allclose(metrics["nll_bits_per_dim"], 8.0, rtol=1e-6)

    def test_mu_law_round_trip(self):
        x = jnp.linspace(-1.0, 1.0, 1001)
        codes = mu_law_encode(x)
        self.assertEqual(int(codes.min()), 0)
        self.assertEqual(int(codes.max()), 255)
        self.assertEqual(int(mu_law_encode(jnp.array(0.0))), 128)
        # Quantisation error is relative: small near zero, larger at the extremes.
        err = jnp.abs(mu_law_decode(codes) - x)
        self.assertLess(float(err[jnp.abs(x) < 0.01].max()), 5e-4)
        self.assertLess(float(err.max()), 0.03)

    def test_waveform_inputs(self):
        model = _model(input_format="waveform")
        wave = jnp.sin(jnp.linspace(0.0, 6.0, _T))[None]
        # Same seed, same weights: the waveform model scores the mu-law codes of its input.
        np.testing.assert_allclose(model.log_prob(wave), _model().log_prob(mu_law_encode(wave)), rtol=1e-6)
        samples = model.generate(n_samples=1, rngs=nnx.Rngs(0))
        self.assertTrue(((samples >= -1.0) & (samples <= 1.0)).all())
        self.assertEqual(samples.dtype, jnp.float32)

    def test_bad_input_is_named(self):
        model = _model()
        bad = np.zeros((1, _T), np.int32)
        bad[0, 3] = 256
        with self.assertRaisesRegex(ValueError, r"must lie in \[0, 256\); got 256 at index \(0, 3\)"):
            model.log_prob(bad)
        with self.assertRaisesRegex(ValueError, r"\[-1, 1\]; got 1.5 at index \(0, 2\)"):
            _model(input_format="waveform").log_prob(jnp.zeros((1, _T)).at[0, 2].set(1.5))
        with self.assertRaisesRegex(ValueError, "unconditional and takes no labels"):
            model.log_prob(_codes(1), labels=jnp.array([0]))
        data = np.zeros((50, _T), np.int32)
        data[41, 1] = 300
        with self.assertRaisesRegex(ValueError, r"\[0, 256\); got 300 at index \(41, 1\)"):
            model.check_inputs(data)
        with self.assertRaisesRegex(ValueError, r"\[-1, 1\]; got -2.0 at index \(1, 0\)"):
            _model(input_format="waveform").check_inputs(np.array([[0.0], [-2.0]], np.float32))


if __name__ == "__main__":
    absltest.main()
