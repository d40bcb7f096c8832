"""The VAE's loss falls on real Fashion-MNIST (Debian's dataset-fashion-mnist)."""

import os

import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration, OptimizerConfiguration, TrainingConfiguration
from workshop.data.datasets.image import load_image_dataset
from workshop.data.pipeline import BatchPipeline
from workshop.models.factories import create_model
from workshop.train.trainer import Trainer


class _Losses:
    def __init__(self):
        self.values = []

    def on_log(self, trainer, step, logs):
        self.values.append(logs["loss"])


class RealDataTest(absltest.TestCase):
    def test_vae_loss_falls_on_fashion_mnist(self):
        try:
            dataset = load_image_dataset("fashion_mnist", train=True)
        except FileNotFoundError as err:
            if os.environ.get("WORKSHOP_REQUIRE_REAL_DATA"):
                raise
            self.skipTest(f"Fashion-MNIST not installed: {err}")
        source = {"x": dataset.images[:4096], "label": dataset.labels[:4096]}
        batches = iter(BatchPipeline(source, batch_size=64, seed=0, shuffle=True, drop_remainder=True,
                                     binarize="dynamic", prefetch=0))
        model = create_model(
            ModelConfiguration(model_type="vae", latent_dim=8, backbone_type="mlp",
                               encoder_features=[128], decoder_features=[128]),
            rngs=nnx.Rngs(0),
        )
        trainer = Trainer(model, TrainingConfiguration(num_steps=150, log_every=10, ema_decay=None,
                                                       optimizer=OptimizerConfiguration(learning_rate=2e-3)))
        losses = _Losses()
        trainer.fit(trainer.init_state(), batches, callbacks=[losses])
        # A Bernoulli decoder starts near 784*log(2) = 543 nats; after 150 steps a
        # VAE is well under 300 on binarized Fashion-MNIST.
        self.assertGreater(losses.values[0], 400.0)
        self.assertLess(np.mean(losses.values[-3:]), 300.0)


if __name__ == "__main__":
    absltest.main()
