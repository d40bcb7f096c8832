"""Every config file parses, builds its model and takes one finite train step."""

import importlib
import pathlib

import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.models.factories import create_model
from workshop.train.experiment import parse_config
from workshop.train.trainer import Trainer

_CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parent / "configs").glob("*.py") if p.stem != "__init__")


class ConfigsTest(parameterized.TestCase):
    def test_configs_were_found(self):
        self.assertIn("vae", _CONFIGS)

    @parameterized.parameters(*_CONFIGS)
    def test_config_builds_and_steps(self, name):
        cfg = parse_config(importlib.import_module(f"workshop.train.configs.{name}").get_config())
        trainer = Trainer(create_model(cfg.model, rngs=nnx.Rngs(0)), cfg.training)
        rng = np.random.default_rng(0)
        batch = {
            "image": rng.random((4, *cfg.model.input_shape)).astype(np.float32),
            "label": rng.integers(0, 10, 4).astype(np.int32),
        }
        if cfg.data.binarize != "none":
            batch["image"] = (batch["image"] > 0.5).astype(np.float32)
        state, metrics = trainer.train_step(trainer.init_state(), batch)
        self.assertEqual(int(state.step), 1)
        self.assertTrue(np.isfinite(float(metrics["loss"])), f"{name}: loss {metrics['loss']}")
        samples = trainer.generate(state, 3)
        self.assertEqual(samples.shape, (3, *cfg.model.input_shape))


if __name__ == "__main__":
    absltest.main()
