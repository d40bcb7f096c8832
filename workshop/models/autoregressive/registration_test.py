"""The three model types are registered in the family; the guide's PixelCNN configuration builds."""

from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration
from workshop.models.factories import create_autoregressive


class GuideTest(absltest.TestCase):
    def test_guide_snippet(self):
        config = ModelConfiguration(model_type="pixelcnn", parameters={"num_layers": 12})
        # nnx.eval_shape runs the constructor abstractly: the same code path, no FLOPs.
        model = nnx.eval_shape(lambda: create_autoregressive(config, rngs=nnx.Rngs(0)))
        self.assertLen(model.layers, 12)
        self.assertEqual(model.input_shape, (28, 28, 1))
        self.assertTrue(hasattr(model, "log_prob") and hasattr(model, "generate"))

    def test_every_model_type_is_registered_in_the_family(self):
        for model_type, shape, params in [("transformer", (16,), {"vocab_size": 10}), ("wavenet", (16,), {})]:
            model = nnx.eval_shape(lambda: create_autoregressive(  # noqa: B023
                ModelConfiguration(model_type=model_type, input_shape=shape, parameters=params), rngs=nnx.Rngs(0)))
            self.assertEqual(model.input_shape, shape)

    def test_typos_and_other_families_are_refused(self):
        with self.assertRaisesRegex(ValueError, "'num_layer' is not valid for model_type 'pixelcnn'"):
            ModelConfiguration(model_type="pixelcnn", parameters={"num_layer": 12})
        with self.assertRaisesRegex(ValueError, "create_autoregressive got model_type 'vae'"):
            create_autoregressive(ModelConfiguration(model_type="vae"), rngs=nnx.Rngs(0))


if __name__ == "__main__":
    absltest.main()
