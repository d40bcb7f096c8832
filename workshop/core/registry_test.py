"""Tests for workshop.core.registry."""

import pydantic
from absl.testing import absltest

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    width: int = 4


class RegistryTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(registry.unregister_model, "toy-registry-flow")

    def test_register_and_look_up(self):
        @registry.register_model("Toy-Registry-Flow", family="flow", parameters=_Params, description="toy")
        class ToyFlow:
            def __init__(self, config, *, rngs):
                self.width = config.typed_parameters().width

        spec = registry.get_model_spec("toy-registry-flow")
        self.assertEqual(spec.family, "flow")
        self.assertIs(spec.builder, ToyFlow)
        self.assertIn("toy-registry-flow", registry.registered_model_types("flow"))
        self.assertNotIn("toy-registry-flow", registry.registered_model_types("vae"))
        model = spec.builder(ModelConfiguration(model_type="toy-registry-flow", parameters={"width": 7}), rngs=None)
        self.assertEqual(model.width, 7)

    def test_unknown_type_lists_known_ones(self):
        registry.register_model("toy-registry-flow", family="flow")(lambda c, *, rngs: None)
        with self.assertRaises(ValueError) as ctx:
            registry.get_model_spec("glwo")
        self.assertIn("'glwo' is unknown", str(ctx.exception))
        self.assertIn("toy-registry-flow", str(ctx.exception))

    def test_double_registration_needs_override(self):
        registry.register_model("toy-registry-flow", family="flow")(lambda c, *, rngs: 1)
        with self.assertRaisesRegex(ValueError, "already registered"):
            registry.register_model("toy-registry-flow", family="flow")(lambda c, *, rngs: 2)
        registry.register_model("toy-registry-flow", family="flow", override=True)(lambda c, *, rngs: 2)
        self.assertEqual(registry.get_model_spec("toy-registry-flow").builder(None, rngs=None), 2)

    def test_bad_family_and_permissive_schema_are_refused(self):
        with self.assertRaisesRegex(ValueError, "family 'Flow Model' must be a lower-case identifier"):
            registry.register_model("x", family="Flow Model")

        class Loose(pydantic.BaseModel):
            width: int = 1

        with self.assertRaisesRegex(ValueError, "forbid extra keys"):
            registry.register_model("x", family="vae", parameters=Loose)

    def test_model_without_parameters_rejects_any(self):
        registry.register_model("toy-registry-flow", family="flow")(lambda c, *, rngs: None)
        with self.assertRaisesRegex(ValueError, "takes no parameters"):
            registry.validate_parameters("toy-registry-flow", {"depth": 3})


if __name__ == "__main__":
    absltest.main()
