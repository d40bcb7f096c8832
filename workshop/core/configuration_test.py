"""Tests for workshop.core.configuration: validation, round-trips, rejections."""

import datetime
import json
import pathlib
import tempfile

import numpy as np
import pydantic
from absl.testing import absltest, parameterized

from workshop.core import dataset_registry, registry
from workshop.core.configuration import (
    DEFAULT_INPUT_SHAPE,
    SCHEMA_VERSION,
    AudioData,
    DataConfiguration,
    ImageData,
    ModelConfiguration,
    OptimizerConfiguration,
    ProteinData,
    TextData,
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
        ("binarize", lambda: DataConfiguration(image={"binarize": "sometimes"}), "binarize"),
    )
    def test_rejections(self, make, expected_in_message):
        with self.assertRaises(ValueError) as ctx:
            make()
        self.assertIn(expected_in_message, str(ctx.exception))


# `DataConfiguration().to_dict()` before the modality sections: every field flat, at these defaults.
_FLAT_DEFAULTS = {
    "schema_version": 1, "dataset": "fashion_mnist", "data_dir": None, "batch_size": 128, "eval_batch_size": 500,
    "shuffle_seed": 0, "binarize": "none", "prefetch": 2, "sequence_length": None, "vocab_size": 8192,
    "tokenizer_path": None, "sample_rate": 16000, "quantization_channels": 256, "subset": "train-clean-100",
    "test_subset": "test-clean", "test_fraction": 0.05, "skip_bad_files": False, "window_stride": None,
    "protein_frame": "centred", "coordinate_scale": 1.0, "coordinate_noise": 0.0, "noise_copies": 1, "flatten": False,
}


class DataConfigurationTest(parameterized.TestCase):

    def test_the_section_of_the_modality_is_filled_in(self):
        data = DataConfiguration()
        self.assertEqual((data.dataset, data.modality, data.image, data.binarize), ("fashion_mnist", "image", ImageData(), "none"))
        self.assertEqual((data.text, data.audio, data.protein), (None, None, None))
        text = DataConfiguration(dataset="wikipedia", data_dir="/corpus", text={"sequence_length": 64})
        self.assertEqual(text.text, TextData(sequence_length=64, vocab_size=8192))
        self.assertEqual((text.image, text.binarize), (None, "none"))
        self.assertEqual(DataConfiguration(dataset="protein", data_dir="/pdb").protein, ProteinData())
        self.assertEqual(DataConfiguration(dataset="two_moons").modality, "vector")
        self.assertIsNone(DataConfiguration(dataset="two_moons").image)

    def test_a_section_of_another_modality_names_the_field_and_the_dataset(self):
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.protein.sequence_length=8 is set, but data.dataset "
                                                              r"'mnist' is an image dataset; data.protein applies to "
                                                              r"protein datasets \(protein\)"):
            DataConfiguration(dataset="mnist", protein={"window_stride": 2, "sequence_length": 8})
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.image.binarize='dynamic' is set, but data.dataset "
                                                              r"'two_moons' is a vector dataset"):
            DataConfiguration(dataset="two_moons", image=ImageData(binarize="dynamic"))
        # A section at its defaults (as with_defaults writes every section) says nothing, and is dropped.
        data = DataConfiguration(dataset="text", data_dir="/c", text={"sequence_length": 8}, image={"binarize": "none"},
                                 audio=AudioData(), protein={"sequence_length": None})
        self.assertEqual((data.image, data.audio, data.protein), (None, None, None))
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.text.sequence_length=8 is set, but data.dataset "
                                                              r"'fashion_mnist' is an image dataset"):
            DataConfiguration(text={"sequence_length": 8})
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.audio.sample_rate=-1: Input should be greater than 0"):
            DataConfiguration(audio={"sample_rate": -1})

    def test_modality_requirements(self):
        with self.assertRaisesRegex(pydantic.ValidationError, r"'text' needs data.text.sequence_length \(tokens per row\)"):
            DataConfiguration(dataset="text", data_dir="/c")
        with self.assertRaisesRegex(pydantic.ValidationError, r"'audio_folder' reads local files: set data.data_dir"):
            DataConfiguration(dataset="audio_folder", audio={"sequence_length": 8})
        with self.assertRaisesRegex(pydantic.ValidationError, "needs whole windows: set data.protein.window_stride"):
            DataConfiguration(dataset="protein", data_dir="/pdb", protein={"frame": "first_residues"})
        with self.assertRaisesRegex(pydantic.ValidationError, "set data.protein.sequence_length"):
            DataConfiguration(dataset="protein", data_dir="/pdb", protein={"window_stride": 2})

    def test_unknown_dataset_lists_the_registered_ones(self):
        with self.assertRaises(pydantic.ValidationError) as ctx:
            DataConfiguration(dataset="fashion_mnsit")
        message = str(ctx.exception)
        self.assertIn("data.dataset 'fashion_mnsit' is not a registered dataset (did you mean 'fashion_mnist'?)", message)
        self.assertIn("image: cifar10, cifar100, fashion_mnist, mnist; vector: checkerboard, eight_gaussians, pinwheel, "
                      "two_moons; text: text, wikipedia; audio: audio_folder, librispeech; protein: protein", message)

    def test_a_registered_dataset_is_validated_like_a_built_in_one(self):
        dataset_registry.register_dataset("test-clips", modality="audio", loader=lambda data, train: {},
                                          needs_data_dir=True)
        self.addCleanup(dataset_registry.unregister_dataset, "test-clips")
        data = DataConfiguration(dataset="test-clips", data_dir="/clips", audio={"sequence_length": 100})
        self.assertEqual((data.modality, data.audio.sample_rate), ("audio", 16000))
        with self.assertRaisesRegex(pydantic.ValidationError, "'test-clips' reads local files"):
            DataConfiguration(dataset="test-clips", audio={"sequence_length": 100})
        with self.assertRaisesRegex(ValueError, "'test-clips' is already registered"):
            dataset_registry.register_dataset("test-clips", modality="audio", loader=lambda data, train: {})
        with self.assertRaisesRegex(ValueError, "modality 'video' is unknown; known: image, vector, text, audio, protein"):
            dataset_registry.register_dataset("test-video", modality="video", loader=lambda data, train: {})

    @parameterized.named_parameters(
        ("image", {"dataset": "mnist", "binarize": "dynamic", "batch_size": 64},
         {"dataset": "mnist", "batch_size": 64, "image": {"binarize": "dynamic"}}),
        ("text", {"dataset": "text", "data_dir": "/corpus", "sequence_length": 128, "vocab_size": 4096,
                  "tokenizer_path": "/tok.json", "test_fraction": 0.1},
         {"dataset": "text", "data_dir": "/corpus", "test_fraction": 0.1,
          "text": {"sequence_length": 128, "vocab_size": 4096, "tokenizer_path": "/tok.json"}}),
        ("audio", {"dataset": "librispeech", "data_dir": "/ls", "sequence_length": 16000, "sample_rate": 8000,
                   "quantization_channels": None, "subset": "dev-clean", "test_subset": "test-other"},
         {"dataset": "librispeech", "data_dir": "/ls", "audio": {"sequence_length": 16000, "sample_rate": 8000,
          "quantization_channels": None, "subset": "dev-clean", "test_subset": "test-other"}}),
        ("protein", {"dataset": "protein", "data_dir": "/pdb", "sequence_length": 16, "window_stride": 1,
                     "protein_frame": "principal_axes", "coordinate_scale": 10.0, "coordinate_noise": 0.5,
                     "noise_copies": 16, "flatten": True, "skip_bad_files": True},
         {"dataset": "protein", "data_dir": "/pdb", "flatten": True, "skip_bad_files": True,
          "protein": {"sequence_length": 16, "window_stride": 1, "frame": "principal_axes", "coordinate_scale": 10.0,
                      "coordinate_noise": 0.5, "noise_copies": 16}}),
    )
    def test_flat_config_json_of_older_workdirs_is_read(self, flat, expected):
        path = pathlib.Path(self.create_tempdir().full_path) / "config.json"
        path.write_text(json.dumps({**_FLAT_DEFAULTS, **flat}, indent=2, sort_keys=True))
        data = DataConfiguration.load(path)
        self.assertEqual(data, DataConfiguration(**expected))
        self.assertEqual(DataConfiguration.load(data.save(path)), data)  # Saved with sections, read back the same.
        self.assertNotIn("sequence_length", json.loads(path.read_text()))

    def test_flat_fields_that_do_not_fit_are_refused_by_name(self):
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.window_stride=2 \(now data.protein.window_stride\) "
                                                              r"does not apply to data.dataset 'text', a text dataset"):
            DataConfiguration.model_validate({**_FLAT_DEFAULTS, "dataset": "text", "data_dir": "/c",
                                              "sequence_length": 8, "window_stride": 2})
        with self.assertRaisesRegex(pydantic.ValidationError, r"data has no field 'crop_size'; fields: schema_version, "
                                                              r"dataset, data_dir, .*and the sections data.image, "
                                                              r"data.text, data.audio, data.protein"):
            DataConfiguration.model_validate({"dataset": "mnist", "crop_size": 3})
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.vocab_size=10 and data.text.vocab_size=20 disagree"):
            DataConfiguration(dataset="text", data_dir="/c", vocab_size=10, text={"sequence_length": 8, "vocab_size": 20})


if __name__ == "__main__":
    absltest.main()
