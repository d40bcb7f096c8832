"""Every config file parses, builds its model and takes one finite train step."""

import importlib
import pathlib
import sys
import warnings
from unittest import mock

import numpy as np
from absl import flags
from absl.testing import absltest, parameterized
from flax import nnx
from ml_collections import config_flags

from workshop.core.configuration import (DATA_SECTIONS, DataConfiguration, EvaluationConfiguration,
                                         TrainingConfiguration)
from workshop.models.factories import create_model
from workshop.train.experiment import make_trainer, parse_config

_CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parent / "configs").glob("*.py") if p.stem != "__init__")


class ConfigsTest(parameterized.TestCase):
    def test_configs_were_found(self):
        self.assertIn("vae", _CONFIGS)

    def test_every_training_data_and_eval_field_can_be_set_from_the_command_line(self):
        for name in _CONFIGS:
            config = importlib.import_module(f"workshop.train.configs.{name}").get_config()
            for section, schema in (("training", TrainingConfiguration), ("data", DataConfiguration),
                                    ("eval", EvaluationConfiguration)):
                missing = set(schema.model_fields) - {"schema_version"} - set(config[section])
                self.assertEmpty(missing, f"{name}: config.{section} lacks {sorted(missing)}")
            for modality, schema in DATA_SECTIONS.items():  # every modality's section, whatever the dataset
                missing = set(schema.model_fields) - set(config.data[modality])
                self.assertEmpty(missing, f"{name}: config.data.{modality} lacks {sorted(missing)}")
        # A None default is a typed placeholder: it takes a value like a flag override does.
        config = importlib.import_module("workshop.train.configs.vae").get_config()
        config.lock()
        config.training.max_bad_steps = 5
        with self.assertRaises(TypeError):
            config.training.max_bad_steps = "five"
        self.assertEqual(parse_config(config).training.max_bad_steps, 5)

    def test_eval_and_list_fields_through_the_flags_of_the_train_binary(self):
        configs = pathlib.Path(__file__).parent / "configs"

        def parse(config_file, *overrides):
            argv = ["train", *overrides]
            flag_values = flags.FlagValues()
            with mock.patch.object(sys, "argv", argv), warnings.catch_warnings():  # config_flags defines the
                # override flags from sys.argv, and loads the file with importlib's deprecated load_module()
                # (ml_collections; the train binary filters it in cli.py).
                warnings.filterwarnings("ignore", message=r"the load_module\(\) method is deprecated",
                                        category=DeprecationWarning)
                flag = config_flags.DEFINE_config_file("config", str(configs / config_file),
                                                       flag_values=flag_values, lock_config=True)
                flag_values(argv)
            return parse_config(flag.value)

        cfg = parse("vae.py", "--config.eval.every_steps=100", "--config.eval.max_test_batches=1",
                    "--config.model.encoder_features=256,128", "--config.model.decoder_features=[64]")
        self.assertEqual((cfg.eval.every_steps, cfg.eval.max_test_batches), (100, 1))
        self.assertEqual((cfg.model.encoder_features, cfg.model.decoder_features), ([256, 128], [64]))
        cfg = parse("maf.py", "--config.model.parameters.hidden_features=48,48")
        self.assertEqual(cfg.model.parameters["hidden_features"], [48, 48])
        self.assertEqual(cfg.model.typed_parameters().hidden_features, [48, 48])
        with self.assertRaisesRegex(ValueError, "every_steps"):
            parse("vae.py", "--config.eval.every_steps=0")
        # The config argument picks the backbone; a model parameter whose default is None is a
        # typed placeholder that the command line sets.
        cfg = parse("reflow.py:dit", "--config.model.parameters.teacher_steps=10")
        self.assertEqual((cfg.model.backbone_type, cfg.model.parameters["teacher_steps"]), ("dit", 10))
        self.assertEqual(cfg.model.parameters["hidden_size"], 128)
        self.assertIsNone(parse("reflow.py").model.parameters["teacher_sampler"])
        self.assertEqual(parse("edm.py:dit").model.parameters["patch_size"], 4)
        # The data of each modality is set in its section; a field of another modality is refused by name.
        cfg = parse("vae.py", "--config.data.image.binarize=fixed", "--config.data.dataset=mnist")
        self.assertEqual((cfg.data.dataset, cfg.data.image.binarize, cfg.data.text), ("mnist", "fixed", None))
        cfg = parse("transformer_text.py", "--config.data.text.sequence_length=64",
                    "--config.data.text.tokenizer_path=/tmp/tok.json")
        self.assertEqual((cfg.data.text.sequence_length, cfg.data.text.tokenizer_path), (64, "/tmp/tok.json"))
        self.assertEqual((cfg.data.image, cfg.data.audio, cfg.data.protein), (None, None, None))
        with self.assertRaisesRegex(ValueError, "data.text.sequence_length=8 is set, but data.dataset 'fashion_mnist' "
                                                "is an image dataset"):
            parse("vae.py", "--config.data.text.sequence_length=8")

    @parameterized.parameters(*_CONFIGS)
    def test_config_builds_and_steps(self, name):
        cfg = parse_config(importlib.import_module(f"workshop.train.configs.{name}").get_config())
        if cfg.model.model_type == "latent":
            self.skipTest("a second stage needs a trained first stage: two_stage_test.py trains each one")
        model = create_model(cfg.model, rngs=nnx.Rngs(0))
        trainer = make_trainer(model, cfg)
        # A GAN step takes n_critic chunks of examples, one per critic update.
        n = 4 * getattr(model, "n_critic", 1)
        rng = np.random.default_rng(0)
        batch = {
            "x": rng.random((n, *cfg.model.input_shape)).astype(np.float32),
            "label": rng.integers(0, 10, n).astype(np.int32),
        }
        if cfg.data.binarize != "none":
            batch["x"] = (batch["x"] > 0.5).astype(np.float32)
        if cfg.model.family == "autoregressive" and len(cfg.model.input_shape) == 1:  # token ids / mu-law codes
            size = getattr(model, "vocab_size", None) or model.num_levels
            batch["x"] = rng.integers(0, size, (n, *cfg.model.input_shape)).astype(np.int32)
        state, metrics = trainer.train_step(trainer.init_state(), batch)
        self.assertEqual(int(state.step), 1)
        for key in ("d_loss", "g_loss") if cfg.model.family == "gan" else ("loss",):
            self.assertTrue(np.isfinite(float(metrics[key])), f"{name}: {key} {metrics[key]}")
        samples = trainer.generate(state, 3)
        self.assertEqual(samples.shape, (3, *cfg.model.input_shape))


if __name__ == "__main__":
    absltest.main()
