"""Test-set likelihood of any `LikelihoodModel`, in nats per example and bits/dim.

`evaluate_likelihood` averages `model.log_prob` (exact for flows and
autoregressive models, the importance-weighted bound of Burda et al. 2015,
arXiv:1509.00519, for VAEs) and, where the model has one, `model.elbo`, over a
pass of batches. Bits per dimension is nats / (D ln 2) for D dimensions per
example (Theis et al. 2016, arXiv:1511.01844), of the data exactly as the
model sees it: state the data's discretisation (binarized, 8-bit) beside it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import jax
import numpy as np
from flax import nnx

__all__ = ["bits_per_dim", "evaluate_likelihood"]


def bits_per_dim(nats_per_example: float, num_dims: int) -> float:
    """Converts a negative log-likelihood in nats per example to bits per dimension."""
    return nats_per_example / (num_dims * math.log(2.0))


def evaluate_likelihood(
    model: nnx.Module,
    batches: Iterable[dict[str, Any]],
    *,
    num_samples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Mean negative log-likelihood (and negative ELBO where defined) over `batches`.

    Args:
      model: a model with `log_prob(x, *, rngs, ...) -> [B]`; conditional
        models (with `num_classes`) get `labels=batch["label"]`.
      batches: dicts with `"x"` `[B, *input_shape]` (and `"label"`).
      num_samples: importance samples for models that take `num_samples`.
      seed: seeds the estimator's randomness (batch i uses fold_in(seed, i)).

    Returns:
      `{"nll": nats/example, "nll_bits_per_dim": ..., "negative_elbo": ...,
      "negative_elbo_bits_per_dim": ..., "num_examples": N}` (ELBO keys only
      for models with `elbo`).
    """
    graphdef, state = nnx.split(model)
    conditional = hasattr(model, "num_classes")
    has_elbo = hasattr(model, "elbo")
    kwargs = {"num_samples": num_samples} if num_samples is not None else {}

    @jax.jit
    def per_example(state, batch, key):
        m = nnx.merge(graphdef, state, copy=True)
        cond = {"labels": batch["label"]} if conditional else {}
        out = {"log_prob": m.log_prob(batch["x"], rngs=nnx.Rngs(key), **kwargs, **cond)}
        if has_elbo:
            out["elbo"] = m.elbo(batch["x"], rngs=nnx.Rngs(jax.random.fold_in(key, 1)), **cond)
        return out

    key = jax.random.PRNGKey(seed)
    sums: dict[str, float] = {}
    count, dims = 0, None
    for i, batch in enumerate(batches):
        values = jax.device_get(per_example(state, batch, jax.random.fold_in(key, i)))
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(v, dtype=np.float64))
        count += int(batch["x"].shape[0])
        dims = int(np.prod(batch["x"].shape[1:]))
    if count == 0:
        raise ValueError("evaluate_likelihood got no batches")
    result = {"num_examples": count, "nll": -sums["log_prob"] / count}
    result["nll_bits_per_dim"] = bits_per_dim(result["nll"], dims)
    if has_elbo:
        result["negative_elbo"] = -sums["elbo"] / count
        result["negative_elbo_bits_per_dim"] = bits_per_dim(result["negative_elbo"], dims)
    return result
