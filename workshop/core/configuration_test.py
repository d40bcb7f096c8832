"""Tests for workshop.core.configuration: validation, round-trips, rejections."""

import datetime
import json
import pathlib
import tempfile

import numpy as np
import pydantic
from absl.testing import absltest, parameterized

from workshop.core import registry
from workshop.core.configuration import (
    DEFAULT_INPUT_SHAPE,
    SCHEMA_VERSION,
    DataConfiguration,
    ModelConfiguration,
    OptimizerConfiguration,
    TrainingConfiguration,
)


class _ToyParameters(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    beta: float = 1.0
    reconstruction_loss: str = "bernoulli"


class ModelConfigurationTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        registry.register_model("toy-config-vae", family="vae", parameters=_ToyParameters)(lambda c, *, rngs: None)
        self.addCleanup(registry.unregister_model, "toy-config-vae")

    def test_guide_example_is_accepted(self):
        config = ModelConfiguration(
            model_type="vae",
            input_shape=(28, 28, 1),
            latent_dim=128,
            encoder_features=[64, 128],
            decoder_features=[128, 64],
            parameters={"beta": 1.0, "kl_weight": 1.0, "reconstruction_loss": "mse"},
            metadata={"experiment_id": "vae_001", "dataset": "mnist"},
        )
        self.assertEqual(config.latent_dim, 128)
        self.assertEqual(config.schema_version, SCHEMA_VERSION)

    def test_metadata_must_be_json_data(self):
        config = ModelConfiguration(model_type="vae", metadata={"lr": np.float32(0.5), "steps": np.int64(3),
                                                                 "curve": np.arange(3.0), "tags": ("a", 1)})
        self.assertEqual(config.metadata, {"lr": 0.5, "steps": 3, "curve": [0.0, 1.0, 2.0], "tags": ["a", 1]})
        self.assertIs(type(config.metadata["lr"]), float)
        with tempfile.TemporaryDirectory() as tmp:  # converted values save and load back unchanged
            self.assertEqual(ModelConfiguration.load(config.save(pathlib.Path(tmp) / "c.json")).metadata,
                             config.metadata)
        with self.assertRaisesRegex(ValueError, r"metadata\['run'\]\['started'\] is a datetime.date .*"
                                                r"cannot hold; use str, int, float"):
            ModelConfiguration(model_type="vae", metadata={"run": {"started": datetime.date(2026, 1, 1)}})
        with self.assertRaisesRegex(ValueError, r"metadata has the key 3 \(int\); JSON keys must be strings"):
            ModelConfiguration(model_type="vae", metadata={3: "x"})

    def test_input_shape_default_is_one_fashion_mnist_image(self):
        self.assertEqual(ModelConfiguration(model_type="vae").input_shape, DEFAULT_INPUT_SHAPE)
        self.assertEqual(DEFAULT_INPUT_SHAPE, (28, 28, 1))

    def test_model_type_is_normalised(self):
        self.assertEqual(ModelConfiguration(model_type="  VAE ").model_type, "vae")

    @parameterized.named_parameters(
        ("negative_latent", {"latent_dim": -3}, "latent_dim"),
        ("zero_feature", {"encoder_features": [32, 0]}, "encoder_features"),
        ("four_d_input", {"input_shape": (1, 2, 3, 4)}, "input_shape"),
        ("unknown_field", {"latent_size": 3}, "latent_size"),
        ("empty_model_type", {"model_type": ""}, "model_type"),
        ("future_schema", {"schema_version": SCHEMA_VERSION + 1}, "newer Workshop"),
    )
    def test_invalid_fields_are_rejected_by_name(self, overrides, expected_in_message):
        kwargs = {"model_type": "vae", **overrides}
        with self.assertRaises(ValueError) as ctx:
            ModelConfiguration(**kwargs)
        self.assertIn(expected_in_message, str(ctx.exception))

    def test_assignment_is_validated(self):
        config = ModelConfiguration(model_type="vae")
        with self.assertRaisesRegex(ValueError, "latent_dim"):
            config.latent_dim = 0

    def test_unknown_parameter_of_a_registered_model_lists_valid_keys(self):
        with self.assertRaises(ValueError) as ctx:
            ModelConfiguration(model_type="toy-config-vae", parameters={"betta": 2.0})
        message = str(ctx.exception)
        self.assertIn("'betta'", message)
        self.assertIn("beta, reconstruction_loss", message)

    def test_wrong_parameter_type_names_the_key(self):
        with self.assertRaisesRegex(ValueError, "parameters.beta"):
            ModelConfiguration(model_type="toy-config-vae", parameters={"beta": "lots"})

    def test_typed_parameters_fill_defaults(self):
        params = ModelConfiguration(model_type="toy-config-vae", parameters={"beta": 2.0}).typed_parameters()
        self.assertEqual(params.beta, 2.0)
        self.assertEqual(params.reconstruction_loss, "bernoulli")

    @parameterized.parameters("config.json", "config.yaml", "config.yml")
    def test_file_round_trip(self, filename):
        config = ModelConfiguration(
            model_type="toy-config-vae",
            input_shape=(32, 32, 3),
            latent_dim=16,
            encoder_features=[8, 16],
            parameters={"beta": 4.0},
            metadata={"dataset": "cifar10", "tags": ["a", "b"]},
        )
        path = config.save(self.create_tempdir().full_path + "/" + filename)
        restored = ModelConfiguration.load(path)
        self.assertEqual(restored, config)
        self.assertEqual(restored.input_shape, (32, 32, 3))

    def test_json_carries_the_schema_version(self):
        path = ModelConfiguration(model_type="vae").save(self.create_tempdir().full_path + "/c.json")
        self.assertEqual(json.loads(path.read_text())["schema_version"], SCHEMA_VERSION)

    def test_load_errors_name_the_file(self):
        tmp = self.create_tempdir()
        with self.assertRaisesRegex(FileNotFoundError, "missing.json"):
            ModelConfiguration.load(tmp.full_path + "/missing.json")
        bad = tmp.create_file("bad.json", content="{not json")
        with self.assertRaisesRegex(ValueError, "bad.json: not valid JSON"):
            ModelConfiguration.load(bad.full_path)
        with self.assertRaisesRegex(ValueError, "must end in"):
            ModelConfiguration(model_type="vae").save(tmp.full_path + "/c.toml")


class TrainingConfigurationTest(parameterized.TestCase):
    def test_defaults_and_nested_round_trip(self):
        config = TrainingConfiguration(num_steps=10, optimizer=OptimizerConfiguration(name="adamw", weight_decay=0.01))
        path = config.save(self.create_tempdir().full_path + "/t.yaml")
        self.assertEqual(TrainingConfiguration.load(path), config)

    @parameterized.named_parameters(
        ("optimizer_name", lambda: OptimizerConfiguration(name="adamm"), "'adam', 'adamw'"),
        ("negative_lr", lambda: OptimizerConfiguration(learning_rate=-1.0), "learning_rate"),
        ("ema_one", lambda: TrainingConfiguration(ema_decay=1.0), "ema_decay"),
        ("zero_steps", lambda: TrainingConfiguration(num_steps=0), "num_steps"),
        ("dataset", lambda: DataConfiguration(dataset="imagenet"), "fashion_mnist"),
        ("binarize", lambda: DataConfiguration(binarize="sometimes"), "binarize"),
    )
    def test_rejections(self, make, expected_in_message):
        with self.assertRaises(ValueError) as ctx:
            make()
        self.assertIn(expected_in_message, str(ctx.exception))


if __name__ == "__main__":
    absltest.main()
