"""Trains the Fashion-MNIST feature network of the sample-quality metrics and caches its weights.

    tools/bazel run //workshop/eval:train_feature_net [-- --steps=3000 --output=PATH]

Adam on the cross-entropy of the 60000 training images (batch 128, cosine
decay, seed 0: the same command gives the same weights on the same machine),
then the accuracy on the 10000 test images, written to `info.json` beside the
weights (`workshop.eval.feature_net.default_weights_path()` unless
`--output`). The data folder is found as for training
(`workshop.data.datasets.image.default_data_dir`; `--data_dir` overrides).
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from workshop.eval.feature_net import (
    FashionMNISTClassifier,
    TRAIN_COMMAND,
    default_weights_path,
    save_feature_net,
)

__all__ = ["accuracy", "train_classifier"]

_log = logging.getLogger(__name__)


def train_classifier(images: np.ndarray, labels: np.ndarray, *, steps: int, batch_size: int = 128,
                     learning_rate: float = 1e-3, seed: int = 0) -> FashionMNISTClassifier:
    """Trains `FashionMNISTClassifier` with Adam; one compiled function per step.

    Args:
      images: uint8 `[N, 28, 28, 1]` (or floats in [0, 1]).
      labels: int `[N]` in 0..9.
      steps: optimizer steps; epochs are reshuffled with `default_rng(seed)`.

    Returns:
      The trained model.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    model = FashionMNISTClassifier(rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    opt_state = tx.init(params)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    order, position = rng.permutation(len(images)), 0
    for i in range(steps):
        if position + batch_size > len(order):
            order, position = rng.permutation(len(images)), 0
        idx = order[position:position + batch_size]
        position += batch_size
        params, opt_state, loss = step(params, opt_state, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
        if (i + 1) % 250 == 0:
            _log.info("step %d: loss %.4f", i + 1, float(loss))
    return nnx.merge(graphdef, params)


def accuracy(model: FashionMNISTClassifier, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 1000) -> float:
    """The share of `images` whose arg-max logit is the label."""
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda state, x: jnp.argmax(nnx.merge(graphdef, state)(x), -1))
    correct = 0
    for start in range(0, len(images), batch_size):
        correct += int(np.sum(np.asarray(predict(state, images[start:start + batch_size])) == labels[start:start + batch_size]))
    return correct / len(images)


_STEPS = flags.DEFINE_integer("steps", 3000, "Optimizer steps (batch 128; 469 steps are one epoch).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed.")
_OUTPUT = flags.DEFINE_string("output", None, "weights.npz path (default: the cache the metrics read).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the Fashion-MNIST IDX files.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO)
    from workshop.data.datasets.image import FashionMNISTDataset
    from workshop.core.paths import user_path

    train, test = FashionMNISTDataset(_DATA_DIR.value, train=True), FashionMNISTDataset(_DATA_DIR.value, train=False)
    start = time.perf_counter()
    model = train_classifier(train.images, train.labels, steps=_STEPS.value, seed=_SEED.value)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, test.images, test.labels)
    path = user_path(_OUTPUT.value) if _OUTPUT.value else default_weights_path()
    info = {"dataset": "fashion_mnist", "test_accuracy": test_accuracy, "steps": _STEPS.value, "batch_size": 128,
            "seed": _SEED.value, "train_seconds": round(seconds, 1), "command": TRAIN_COMMAND,
            "jax_version": jax.__version__}
    save_feature_net(model, path, info)
    print(f"test accuracy {test_accuracy:.4f} after {_STEPS.value} steps ({seconds:.0f} s); wrote {path}")


if __name__ == "__main__":
    app.run(main)
