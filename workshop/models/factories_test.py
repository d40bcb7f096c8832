"""Tests for the model factories and custom-model registration."""

import pydantic
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration
from workshop.core.protocols import GenerativeModel, LatentModel, LikelihoodModel
from workshop.models import factories


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    scale: float = 1.0


class FactoriesTest(parameterized.TestCase):
    @parameterized.parameters("vae", "beta-vae", "cvae", "vqvae")
    def test_builtin_vaes_build_and_follow_the_protocols(self, model_type):
        config = ModelConfiguration(model_type=model_type, latent_dim=4, encoder_features=[8, 8], decoder_features=[8, 8])
        model = factories.create_vae(config, rngs=nnx.Rngs(0))
        self.assertIsInstance(model, GenerativeModel)
        self.assertIsInstance(model, LatentModel)
        self.assertIsInstance(model, LikelihoodModel)
        self.assertIs(type(factories.create_model(config, rngs=nnx.Rngs(0))), type(model))

    def test_dict_configs_are_validated(self):
        model = factories.create_model({"model_type": "vae", "latent_dim": 3}, rngs=nnx.Rngs(0))
        self.assertIsInstance(model, GenerativeModel)
        with self.assertRaisesRegex(ValueError, "latent_dim"):
            factories.create_model({"model_type": "vae", "latent_dim": 0}, rngs=nnx.Rngs(0))

    def test_unknown_model_type_lists_known(self):
        with self.assertRaises(ValueError) as ctx:
            factories.create_model(ModelConfiguration(model_type="glwo"), rngs=nnx.Rngs(0))
        self.assertIn("'glwo' is unknown", str(ctx.exception))
        self.assertIn("vae", str(ctx.exception))
        self.assertIn("glow", str(ctx.exception))
        with self.assertRaisesRegex(ValueError, "'glwo' is unknown or not built yet; known flow models: glow, iaf"):
            factories.create_flow(ModelConfiguration(model_type="glwo"), rngs=nnx.Rngs(0))

    def test_family_factory_refuses_other_families(self):
        with self.assertRaisesRegex(ValueError, "'vae', which is a vae model; use create_vae"):
            factories.create_gan(ModelConfiguration(model_type="vae"), rngs=nnx.Rngs(0))

    def test_custom_model_with_one_decorator(self):
        @registry.register_model("toy-custom-ebm", family="ebm", parameters=_Params)
        class ToyEBM(nnx.Module):
            def __init__(self, config, *, rngs):
                self.scale = config.typed_parameters().scale
                self.w = nnx.Param(nnx.initializers.ones(rngs.params(), (config.latent_dim,)))

        self.addCleanup(registry.unregister_model, "toy-custom-ebm")
        config = ModelConfiguration(model_type="toy-custom-ebm", latent_dim=5, parameters={"scale": 2.0})
        model = factories.create_ebm(config, rngs=nnx.Rngs(0))
        self.assertIsInstance(model, ToyEBM)
        self.assertEqual(model.scale, 2.0)
        with self.assertRaisesRegex(ValueError, "'scal' is not valid.*Valid keys for 'toy-custom-ebm': scale"):
            ModelConfiguration(model_type="toy-custom-ebm", parameters={"scal": 2.0})


if __name__ == "__main__":
    absltest.main()
