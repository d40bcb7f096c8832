"""Test helpers for GAN training's mesh and precision tests: small ring and image GANs, a few steps.

The two objectives compared everywhere are the non-saturating loss with R1
(Mescheder et al. 2018, arXiv:1801.04406; one critic update per step) and
WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028; here two critic updates).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from workshop.core.configuration import ModelConfiguration, TrainingConfiguration
from workshop.core.device_manager import MatmulSite, matmul_sites
from workshop.data.datasets.toy import sample_toy
from workshop.models.gan import GAN
from workshop.train.trainer import Trainer

__all__ = ["RECIPES", "ADAM", "SGD", "ring_gan", "image_gan", "trainer", "ring_batches", "image_batches", "run",
           "losses", "host", "assert_trees_close", "matmuls"]

# name -> (model_type, parameters)
RECIPES = {"ns_r1": ("dcgan", {"r1_weight": 1.0}), "wgan_gp": ("wgan-gp", {"n_critic": 2})}
ADAM = dict(name="adam", learning_rate=1e-3, b1=0.5, b2=0.9)
SGD = dict(name="sgd", learning_rate=1e-2, momentum=0.9)


def ring_gan(recipe_or_type: str = "wgan_gp", width: int = 32, **parameters) -> GAN:
    """An MLP GAN for 2-D points (latent 16, two hidden layers of `width` per player)."""
    model_type, defaults = RECIPES.get(recipe_or_type, (recipe_or_type, {}))
    config = ModelConfiguration(model_type=model_type, input_shape=(2,), latent_dim=16, encoder_features=[width] * 2,
                                decoder_features=[width] * 2, parameters={**defaults, **parameters})
    return GAN(config, rngs=nnx.Rngs(0))


def image_gan(**parameters) -> GAN:
    """A DCGAN for 8x8x1 images with batch norm in both players."""
    config = ModelConfiguration(model_type="dcgan", input_shape=(8, 8, 1), latent_dim=8, backbone_type="conv",
                                encoder_features=[8, 16], decoder_features=[16, 8], parameters=parameters)
    return GAN(config, rngs=nnx.Rngs(0))


def trainer(model: GAN, parallelism: str = "none", *, optimizer: dict[str, Any] = ADAM, fsdp_min_size: int = 256,
            **overrides) -> Trainer:
    """A `Trainer` logging every step, EMA decay 0.9."""
    config = TrainingConfiguration(num_steps=100, log_every=1, ema_decay=0.9, progress_bar=False,
                                   parallelism=parallelism, fsdp_min_size=fsdp_min_size, optimizer=optimizer,
                                   **overrides)
    return Trainer(model, config)


def ring_batches(n: int, batch: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` batches of the eight-Gaussian ring: `{"x": [batch, 2], "label": [batch]}`."""
    x, labels = sample_toy("eight_gaussians", 4096, seed=0)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(x), batch) for _ in range(n)]
    return [{"x": x[i], "label": labels[i]} for i in idx]


def image_batches(n: int, batch: int = 16) -> list[dict[str, np.ndarray]]:
    """`n` batches of uniform noise images `[batch, 8, 8, 1]` with labels."""
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(size=(batch, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, batch).astype(np.int32)} for _ in range(n)]


def run(gan_trainer: Trainer, batches, state=None):
    """`(final state, [host metrics per step])` after one train step per batch."""
    state = gan_trainer.init_state() if state is None else state
    history = []
    for batch in batches:
        state, metrics = gan_trainer.train_step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def losses(history) -> np.ndarray:
    """`[steps, 2]`: d_loss and g_loss of each step."""
    return np.array([[m["d_loss"], m["g_loss"]] for m in history])


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_close(a, b, atol: float, rtol: float = 2e-5) -> None:
    """Every leaf of `a` within `atol + rtol * |b|` of `b`'s (leaves named on failure)."""
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(host(a))[0], jax.tree.leaves(host(b))):
        np.testing.assert_allclose(x, y, atol=atol, rtol=rtol, err_msg=jax.tree_util.keystr(path))


def matmuls(gan_trainer: Trainer, batch) -> list[MatmulSite]:
    """Every matmul and convolution of the train step's jaxpr, nested ones included (dtype, scope)."""
    return matmul_sites(jax.make_jaxpr(gan_trainer._train_step)(gan_trainer.init_state(), batch))
