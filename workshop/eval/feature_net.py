"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of FID/KID/PRDC.

FID (Heusel et al. 2017, arXiv:1706.08500) compares generated and real images
in the 2048-d pool3 features of an ImageNet InceptionV3. Those features know
little about 28x28 grey garments, and the weights are not shipped with
Workshop; a classifier trained on the dataset itself is the usual stand-in for
such data (e.g. the "FID with a domain classifier" of Lucic et al. 2018,
arXiv:1711.10337, for MNIST-like sets). Scores are only comparable when they
use the same feature network: every score reports which one.

Architecture (`FashionMNISTClassifier`): two 3x3 convolutions (32, 64
channels, ReLU, 2x2 average pooling) and a 128-unit linear layer whose
pre-activation output is the feature vector (`features`, `[B, 128]`), then a
ReLU and a 10-way linear classifier. Trained by

    tools/bazel run //workshop/eval:train_feature_net

(fixed seed, a few minutes on a CPU), which writes

    $WORKSHOP_CACHE_DIR/feature_nets/fashion_mnist_classifier/weights.npz
    $WORKSHOP_CACHE_DIR/feature_nets/fashion_mnist_classifier/info.json

with `$WORKSHOP_CACHE_DIR` defaulting to `~/.cache/workshop`. `weights.npz`
holds one array per parameter, keyed by its path in the module
(`conv1/kernel`, ...); `info.json` the test accuracy and how it was trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.paths import CACHE_DIR_ENV, cache_dir

__all__ = [
    "CACHE_DIR_ENV",
    "FEATURE_NET_NAME",
    "FashionMNISTClassifier",
    "FeatureNetworkMissingError",
    "cache_dir",
    "default_weights_path",
    "extract_features",
    "load_feature_net",
    "save_feature_net",
]

FEATURE_NET_NAME = "fashion_mnist_classifier"
TRAIN_COMMAND = "tools/bazel run //workshop/eval:train_feature_net"


class FeatureNetworkMissingError(FileNotFoundError):
    """The feature network's weights are not where the metrics look for them."""


def default_weights_path() -> pathlib.Path:
    """Where `train_feature_net` writes and `load_feature_net` reads the weights."""
    return cache_dir() / "feature_nets" / FEATURE_NET_NAME / "weights.npz"


class FashionMNISTClassifier(nnx.Module):
    """A 28x28x1 image classifier: `[B, 28, 28, 1]` in [0, 1] -> logits `[B, 10]`.

    Attributes:
      feature_dim: 128, the size of `features`.
      name: "fashion_mnist_classifier", reported with every score.
    """

    input_shape = (28, 28, 1)
    num_classes = 10
    feature_dim = 128
    name = FEATURE_NET_NAME

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
        self.hidden = nnx.Linear(7 * 7 * 64, self.feature_dim, rngs=rngs)
        self.head = nnx.Linear(self.feature_dim, self.num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The pre-activation of the hidden layer: `[B, 28, 28, 1] -> [B, 128]`."""
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"{self.name} takes images [B, 28, 28, 1] with values in [0, 1], got shape {list(x.shape)}"
            )
        h = 2.0 * x - 1.0
        h = nnx.avg_pool(jax.nn.relu(self.conv1(h)), (2, 2), strides=(2, 2))
        h = nnx.avg_pool(jax.nn.relu(self.conv2(h)), (2, 2), strides=(2, 2))
        return self.hidden(h.reshape(h.shape[0], -1))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Class logits `[B, 10]`."""
        return self.head(jax.nn.relu(self.features(x)))


def _flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(str(p) for p in path): np.asarray(var.get_value()) for path, var in flat}


def save_feature_net(model: FashionMNISTClassifier, path: str | os.PathLike, info: dict[str, Any]) -> pathlib.Path:
    """Writes `weights.npz` (one array per parameter path) and `info.json` beside it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **_flat_params(model))
    info = {**info, "feature_net": model.name, "sha256": weights_fingerprint(path)}
    (path.parent / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the weights file's SHA-256 (keys cached reference statistics)."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def load_feature_net(path: str | os.PathLike | None = None) -> FashionMNISTClassifier:
    """The trained classifier from `path` (default `default_weights_path()`).

    Raises:
      FeatureNetworkMissingError: no file there; the message gives the command
        that makes it.
      ValueError: the file's arrays do not match the architecture (names the keys).
    """
    path = pathlib.Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FeatureNetworkMissingError(
            f"feature network weights not found at {path}. Train them once (a few minutes on a CPU) with\n"
            f"    {TRAIN_COMMAND}\n"
            f"or point ${CACHE_DIR_ENV} at a cache that holds feature_nets/{FEATURE_NET_NAME}/weights.npz"
        )
    model = FashionMNISTClassifier(rngs=nnx.Rngs(0))
    expected = _flat_params(model)
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{path} does not hold {FEATURE_NET_NAME} weights: missing {missing}, unexpected {extra}")
    for key, value in expected.items():
        if arrays[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {list(arrays[key].shape)}, expected {list(value.shape)}")
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    loaded = [(parts, var.replace(jnp.asarray(arrays["/".join(str(p) for p in parts)]))) for parts, var in flat]
    nnx.update(model, nnx.from_flat_state(loaded))
    model.fingerprint = weights_fingerprint(path)
    return model


def extract_features(net: nnx.Module, images, *, batch_size: int = 500) -> np.ndarray:
    """`net.features` over `images` `[N, H, W, C]` in [0, 1], in batches: `[N, D]` float32.

    uint8 images are scaled by 1/255. The last, smaller batch is padded so
    one compiled function serves every batch.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    n = images.shape[0]
    if n == 0:
        raise ValueError("extract_features got no images")
    graphdef, state = nnx.split(net)
    step = jax.jit(lambda state, x: nnx.merge(graphdef, state).features(x))
    size = min(batch_size, n)
    out = []
    for start in range(0, n, size):
        chunk = images[start:start + size]
        pad = size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(step(state, jnp.asarray(chunk, jnp.float32)))[: size - pad])
    return np.concatenate(out)
