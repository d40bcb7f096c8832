"""Every family's `generate` compiles once: a second call compiles nothing, reads the current parameters,
advances `rngs` as an eager call does and gives the eager call's samples."""

import jax
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.compile_counter import count_compiles
from workshop.core.configuration import ModelConfiguration
from workshop.models.factories import create_model

# name -> (configuration, generate options): one small model per family.
_FAMILIES = {
    "vae": (dict(model_type="vae", input_shape=(6, 6, 1), latent_dim=3, encoder_features=[8],
                 decoder_features=[8]), {}),
    "cvae": (dict(model_type="cvae", input_shape=(6, 6, 1), latent_dim=3, encoder_features=[8],
                  decoder_features=[8], parameters={"num_classes": 3}), {"labels": np.array([0, 2, 1, 2])}),
    "gan": (dict(model_type="dcgan", input_shape=(2,), latent_dim=4, encoder_features=[8], decoder_features=[8]),
            {}),
    "diffusion_ddim": (dict(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=20, backbone_type="dit",
                            parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2, sampling_steps=4)),
                       {"sampler": "ddim", "steps": 4}),
    "flow_matching_heun": (dict(model_type="flow_matching", input_shape=(8, 8, 1), backbone_type="dit",
                                parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2)),
                           {"sampler": "heun", "steps": 3}),
    "edm_stochastic": (dict(model_type="edm", input_shape=(8, 8, 1), backbone_type="dit",
                            parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2)),
                       {"sampler": "stochastic", "steps": 3}),
    "flow": (dict(model_type="realnvp", input_shape=(4,), num_flows=2, parameters=dict(hidden_features=[8])), {}),
    "ebm": (dict(model_type="ebm", input_shape=(2,), encoder_features=[8], backbone_type="mlp",
                 parameters=dict(mcmc_steps=4, buffer_size=16)), {}),
    "autoregressive": (dict(model_type="transformer", input_shape=(6,),
                            parameters=dict(vocab_size=7, num_layers=1, num_heads=2, embed_dim=8)),
                       {"temperature": 0.9}),
}


class CompiledSamplingTest(parameterized.TestCase):
    @parameterized.named_parameters(*((name, name) for name in _FAMILIES))
    def test_second_call_compiles_nothing_and_reads_the_current_parameters(self, name):
        config, options = _FAMILIES[name]
        model = create_model(ModelConfiguration(**config), rngs=nnx.Rngs(0))
        model.eval()
        first = np.asarray(model.generate(n_samples=4, rngs=nnx.Rngs(1), **options))
        rngs = nnx.Rngs(1)
        with count_compiles() as compiles:
            again = np.asarray(model.generate(n_samples=4, rngs=rngs, **options))
        self.assertEqual(compiles.count, 0)
        np.testing.assert_array_equal(again, first)
        # The stream advanced as in an eager call: the next call draws other samples.
        eager_rngs = nnx.Rngs(1)
        eager = np.asarray(type(model).generate.__wrapped__(model, n_samples=4, rngs=eager_rngs, **options))
        self.assertEqual(int(rngs.default.count[...]), int(eager_rngs.default.count[...]))
        np.testing.assert_allclose(again, eager, rtol=1e-5, atol=1e-5)

        # New parameter values (same structure): no compile, and the samples follow them.
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p: p * 1.5 + 0.1, params))
        with count_compiles() as compiles:
            moved = np.asarray(model.generate(n_samples=4, rngs=nnx.Rngs(1), **options))
        self.assertEqual(compiles.count, 0)
        eager = np.asarray(type(model).generate.__wrapped__(model, n_samples=4, rngs=nnx.Rngs(1), **options))
        # 1e-4: EDM's samples start at sigma_max = 80 x noise, so float32 rounding of jit vs eager is larger.
        np.testing.assert_allclose(moved, eager, rtol=1e-4, atol=1e-4)
        self.assertFalse(np.array_equal(moved, first))

    def test_labels_are_checked_before_the_compiled_call(self):
        config, _ = _FAMILIES["cvae"]
        model = create_model(ModelConfiguration(**config), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"labels must lie in \[0, 3\), got values from 0 to 3"):
            model.generate(n_samples=2, rngs=nnx.Rngs(0), labels=np.array([0, 3]))

    def test_inside_a_trace_the_method_runs_as_written(self):
        config, _ = _FAMILIES["vae"]
        model = create_model(ModelConfiguration(**config), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)

        @jax.jit
        def sample(state):
            return nnx.merge(graphdef, state).generate(n_samples=3, rngs=nnx.Rngs(1))

        np.testing.assert_allclose(sample(state), model.generate(n_samples=3, rngs=nnx.Rngs(1)), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
