"""Class-label conditioning: a learned embedding and eager label checks.

Conditional models (e.g. the CVAE of Sohn, Lee & Yan 2015, "Learning
Structured Output Representation using Deep Conditional Generative Models")
embed integer labels in `[0, num_classes)` and concatenate them to their
inputs. `validate_labels` gives a readable error for missing, misshaped or
out-of-range labels; the range check runs only on concrete arrays (eagerly),
since values are unknown under `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy

__all__ = ["LabelEmbedding", "class_labels", "validate_labels"]


def validate_labels(labels, num_classes: int, batch_size: int, *, model_name: str = "this model") -> jax.Array:
    """Checks integer class labels and broadcasts a scalar to the batch.

    Args:
      labels: `[B]` (or a scalar) integer array, or None.
      num_classes: labels must lie in `[0, num_classes)`.
      batch_size: B, the number of examples the labels go with.
      model_name: named in the error messages.

    Returns:
      `[B]` int32 labels.

    Raises:
      ValueError: labels missing, of the wrong shape or dtype, or (when
        concrete) out of range.
    """
    if labels is None:
        raise ValueError(
            f"{model_name} is conditional: labels are required (pass labels= integer class labels "
            f"of shape [{batch_size}] in [0, {num_classes}))"
        )
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{model_name}: labels must be integers, got dtype {labels.dtype}")
    if labels.ndim == 0:
        labels = jnp.broadcast_to(labels, (batch_size,))
    if labels.shape != (batch_size,):
        raise ValueError(f"{model_name}: labels must have shape [{batch_size}], got {tuple(labels.shape)}")
    if not isinstance(labels, jax.core.Tracer):
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{model_name}: labels must lie in [0, {num_classes}), got values from {values.min()} to {values.max()}"
            )
    return labels.astype(jnp.int32)


def class_labels(labels, num_classes: int | None, batch_size: int, *, model_name: str,
                 unconditional_hint: str) -> jax.Array | None:
    """The labels a model takes: checked `[B]` int32 when conditional, None when not.

    Args:
      labels: what the caller passed (None, a scalar or `[B]` integers).
      num_classes: the model's number of classes, None for an unconditional model.
      batch_size: B.
      model_name: named in the error messages.
      unconditional_hint: how to get a conditional model, appended to the
        error an unconditional model raises when given labels.

    Raises:
      ValueError: labels given to an unconditional model, or the errors of
        `validate_labels` for a conditional one.
    """
    if num_classes is not None:
        return validate_labels(labels, num_classes, batch_size, model_name=model_name)
    if labels is not None:
        raise ValueError(f"{model_name} is unconditional and takes no labels; {unconditional_hint}")
    return None


class LabelEmbedding(nnx.Module):
    """A learned vector per class: `[B] int -> [B, features]` (compute dtype).

    Args:
      num_classes: number of classes.
      features: embedding width.
      rngs: `params` stream (or default) for the initialiser.
    """

    def __init__(self, num_classes: int, features: int, *, rngs: nnx.Rngs):
        policy = get_precision_policy()
        self.num_classes = int(num_classes)
        self.features = int(features)
        self.embed = nnx.Embed(
            self.num_classes, self.features, dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs
        )

    def __call__(self, labels: jax.Array) -> jax.Array:
        return self.embed(labels)
