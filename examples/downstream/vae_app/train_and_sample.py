"""A team's own program on Workshop: train a small VAE for a few steps, then sample.

It uses Workshop only through its public targets (the guide's import paths, the
trainer, the data and eval APIs): the data are Fashion-MNIST-format IDX files
(`workshop.data.datasets.image`), batched by `workshop.data.pipeline`; the model
is an MLP VAE (Kingma & Welling 2013, arXiv:1312.6114) made by the guide's
`create_vae`; `workshop.train.trainer.Trainer` trains it; `workshop.eval` scores
the test split before and after (importance-weighted bound, Burda et al. 2015,
arXiv:1509.00519).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from flax import nnx

import workshop.eval
from workshop.data.datasets.image import FashionMNISTDataset
from workshop.data.pipeline import BatchPipeline
from workshop.generative_models.core.configuration import (ModelConfiguration, OptimizerConfiguration,
                                                           TrainingConfiguration)
from workshop.generative_models.factories import create_vae
from workshop.train.trainer import Trainer

__all__ = ["Result", "train_and_sample"]


@dataclasses.dataclass(frozen=True)
class Result:
    """What `train_and_sample` returns.

    Attributes:
      samples: float32 `[num_samples, 28, 28, 1]` in [0, 1], the decoder's means.
      train_losses: the logged training loss (negative ELBO, nats), one per logging step.
      test_nll_before: test-split -log p(x) bound (nats/example) of the untrained model.
      test_nll_after: the same after training.
    """

    samples: np.ndarray
    train_losses: list[float]
    test_nll_before: float
    test_nll_after: float


class _LossLog:
    """A `Trainer.fit` callback that keeps the logged training loss."""

    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, trainer, step, logs):
        del trainer, step
        self.losses.append(float(logs["loss"]))


def _test_nll(model: nnx.Module, images: np.ndarray, *, batch_size: int) -> float:
    batches = BatchPipeline({"x": images}, batch_size=batch_size, shuffle=False, drop_remainder=False,
                            num_epochs=1, binarize="fixed", prefetch=0)
    return workshop.eval.evaluate_likelihood(model, batches, num_samples=8)["nll"]


def train_and_sample(
    data_dir: str | os.PathLike,
    *,
    steps: int = 50,
    batch_size: int = 32,
    num_samples: int = 16,
    seed: int = 0,
) -> Result:
    """Trains an MLP VAE on the IDX files in `data_dir` for `steps` steps, then samples it.

    Args:
      data_dir: a folder with Fashion-MNIST's four IDX files
        (`train-images-idx3-ubyte[.gz]`, ..., `t10k-labels-idx1-ubyte[.gz]`).
      steps: training steps.
      batch_size: examples per step; at most the training split's size.
      num_samples: samples drawn after training.
      seed: seeds the parameters, the batches and the samples.

    Returns:
      The samples `[num_samples, 28, 28, 1]`, the training losses and the test NLL.
    """
    train = FashionMNISTDataset(root=data_dir, train=True)
    test = FashionMNISTDataset(root=data_dir, train=False)
    model_config = ModelConfiguration(
        model_type="vae",
        input_shape=(28, 28, 1),
        latent_dim=8,
        backbone_type="mlp",
        encoder_features=[128],
        decoder_features=[128],
    )
    training = TrainingConfiguration(
        num_steps=steps,
        seed=seed,
        optimizer=OptimizerConfiguration(learning_rate=3e-3),
        ema_decay=None,
        log_every=max(1, steps // 10),
        eval_every=None,
        checkpoint_every=None,
        sample_every=None,
        progress_bar=False,
        tensorboard=False,
    )
    trainer = Trainer(lambda: create_vae(model_config, rngs=nnx.Rngs(seed)), training)
    state = trainer.init_state(seed)
    eval_batch = min(len(test.images), 256)
    nll_before = _test_nll(trainer.model_from_state(state), test.images, batch_size=eval_batch)
    log = _LossLog()
    with BatchPipeline({"x": train.images, "label": train.labels}, batch_size=batch_size, seed=seed,
                       binarize="dynamic") as batches:
        state = trainer.fit(state, batches, callbacks=[log])
    nll_after = _test_nll(trainer.model_from_state(state), test.images, batch_size=eval_batch)
    samples = trainer.generate(state, num_samples, seed=seed)
    return Result(samples=np.asarray(samples, np.float32), train_losses=log.losses,
                  test_nll_before=float(nll_before), test_nll_after=float(nll_after))
