"""The first stage of a two-stage model: loading it, freezing it, fingerprinting it, scaling its codes.

A latent model (`latent.py`) takes a trained autoencoder as its first stage.
Models must not import the training code, so reading a workdir's config and
checkpoint is left to a loader that the training package installs with
`set_stage_one_loader` (`workshop.train.two_stage`, imported by the train and
sample binaries); the model calls it through `load_stage_one`.

The frozen first stage is held in `FrozenWeight` variables, not `nnx.Param`:
the trainer differentiates, optimizes and averages `nnx.Param`s only, so the
first stage costs no gradient, no optimizer state and no EMA copy, and it is
carried (unchanged) in the state's other variables.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.protocols import Autoencoder

__all__ = [
    "FrozenWeight",
    "StageOne",
    "StageOneChangedError",
    "content_hash",
    "estimate_latent_scale",
    "freeze",
    "load_stage_one",
    "set_stage_one_loader",
]


class FrozenWeight(nnx.Variable):
    """A weight of a frozen first stage: not an `nnx.Param`, so never trained."""


class StageOneChangedError(ValueError):
    """The first stage a model was trained on is not the one found now (path or content hash differ)."""


@dataclasses.dataclass(frozen=True)
class StageOne:
    """A trained first stage as the loader found it.

    Attributes:
      model: the autoencoder, with its trained (EMA) weights.
      checkpoint: the checkpoint directory its weights came from.
      content_hash: `content_hash(model)`.
      model_type: its configuration's model_type (for messages).
    """

    model: nnx.Module
    checkpoint: str
    content_hash: str
    model_type: str


Loader = Callable[[str, "str | None"], StageOne]
_loader: Loader | None = None


def set_stage_one_loader(loader: Loader | None) -> None:
    """Installs `loader(workdir, checkpoint) -> StageOne` (None removes it).

    `checkpoint` is None for the workdir's newest checkpoint, or the path of
    one of its checkpoint directories.
    """
    global _loader
    _loader = loader


def load_stage_one(workdir: str, checkpoint: str | None = None) -> StageOne:
    """The trained first stage in `workdir` (see `set_stage_one_loader`).

    Raises:
      RuntimeError: no loader is installed (import `workshop.train.stage_one`,
        or build the model with an `autoencoder=` in memory).
    """
    if _loader is None:
        raise RuntimeError(
            f"no first-stage loader is installed, so the autoencoder workdir {workdir!r} cannot be read: "
            "import workshop.train.stage_one first (the train and sample binaries do), or pass a trained "
            "autoencoder to the model as autoencoder=")
    return _loader(workdir, checkpoint)


def content_hash(module: nnx.Module) -> str:
    """SHA-256 of every array of `module` (path, dtype, shape and bytes), as hex.

    The same weights give the same hash whatever the variable types (a frozen
    copy hashes as its original) or the device they live on.
    """
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(module))[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        value = np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                           else leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def freeze(module: nnx.Module) -> nnx.Module:
    """A copy of `module` whose every variable is a `FrozenWeight`, in evaluation mode."""
    graphdef, state = nnx.split(module)
    frozen = jax.tree.map(lambda v: FrozenWeight(jnp.asarray(v.get_value())), state,
                          is_leaf=lambda x: isinstance(x, nnx.Variable))
    copy = nnx.merge(graphdef, frozen)
    copy.eval()
    return copy


def estimate_latent_scale(autoencoder: Autoencoder, batches: Iterable[np.ndarray]) -> float:
    """1 / std of the continuous codes of the data: the factor that gives them unit variance.

    Rombach et al. 2022 (arXiv:2112.10752, section 4.3.2 and appendix G)
    rescale the KL autoencoder's latents by the inverse of their standard
    deviation, estimated on data, so the diffusion prior sees unit-variance
    inputs whatever the first stage's KL weight.

    Args:
      autoencoder: a first stage with continuous codes.
      batches: image batches `[b, *input_shape]` in [0, 1] (uint8 are divided by 255).

    Returns:
      1 / std over all code elements of all batches (float).
    """
    encode = jax.jit(autoencoder.encode_codes)
    total = total_sq = count = 0.0
    for x in batches:
        x = np.asarray(x)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        codes = np.asarray(encode(jnp.asarray(x)), np.float64)
        total, total_sq, count = total + codes.sum(), total_sq + np.square(codes).sum(), count + codes.size
    if count == 0:
        raise ValueError("estimate_latent_scale got no data")
    variance = total_sq / count - (total / count) ** 2
    if not np.isfinite(variance) or variance <= 0.0:
        raise ValueError(f"the first stage's codes have variance {variance!r} on the data: is it trained?")
    return float(1.0 / np.sqrt(variance))
