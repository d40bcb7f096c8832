"""Test-set likelihood of any `LikelihoodModel`, in nats per example and bits/dim.

`log_likelihood(model, dataset_or_batches)` is the one entry point: it
averages the model's `log_prob` and names beside the number the kind of
estimate (`likelihood_estimate`) and the data it is a likelihood of (the
discretisation or dequantisation). `anomaly_scores` gives the per-example
negative log-likelihoods. Both are built on `evaluate_likelihood`, which
averages `model.log_prob` (exact for flows and
autoregressive models, the importance-weighted bound of Burda et al. 2015,
arXiv:1509.00519, for VAEs) and, where the model has one, `model.elbo`, over a
pass of batches. Bits per dimension is nats / (D ln 2) for D dimensions per
example (Theis et al. 2016, arXiv:1511.01844), of the data exactly as the
model sees it: state the data's discretisation (binarized, 8-bit) beside it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from flax import nnx

from workshop.core.protocols import (ConditionalModel, DescribedLikelihood, ElboModel, JointElboModel,
                                     LikelihoodModel)
from workshop.data.pipeline import model_input

__all__ = [
    "anomaly_scores",
    "as_batches",
    "bits_per_dim",
    "evaluate_likelihood",
    "likelihood_estimate",
    "log_likelihood",
]

def bits_per_dim(nats_per_example: float, num_dims: int) -> float:
    """Converts a negative log-likelihood in nats per example to bits per dimension."""
    return nats_per_example / (num_dims * math.log(2.0))


def likelihood_estimate(model: nnx.Module) -> dict[str, str]:
    """What `model.log_prob` estimates: `{"estimate": kind, "data": what it is a likelihood of}`.

    Every built-in family says it (`DescribedLikelihood`: "exact", "exact
    (ODE)", "importance-weighted bound", "variational bound", "dequantisation
    bound", "AIS estimate"); another model's estimate is "unspecified".

    Raises:
      TypeError: the model has no `log_prob` (GANs: use sample quality).
    """
    if not isinstance(model, LikelihoodModel):
        raise TypeError(
            f"{type(model).__name__} has no log_prob, so its likelihood is undefined; "
            "evaluate its samples with workshop.eval.sample_quality instead"
        )
    if isinstance(model, DescribedLikelihood):
        return {"estimate": model.likelihood_estimate, "data": model.likelihood_data}
    return {"estimate": "unspecified", "data": "as defined by the model's log_prob"}


def as_batches(dataset_or_batches: Any, *, batch_size: int = 500, binarize: str = "none",
               train: bool = False) -> Iterable[dict[str, Any]]:
    """Evaluation batches `{"x": [B, ...], "label"?: [B]}` from any of the forms users hold.

    Args:
      dataset_or_batches: a dataset name ("fashion_mnist", a toy dataset; its
        test split unless `train`), a dataset object with `images` and
        `labels` (uint8 images are scaled to [0, 1]), an array `[N, ...]`, a
        dict of arrays `{"x": [N, ...], "label": [N]}`, or an iterable of
        batch dicts (returned as is).
      batch_size: examples per batch (the last one may be smaller).
      binarize: "none", or "fixed" (a seeded, reproducible binarization).
    """
    from workshop.data.pipeline import BatchPipeline

    source = dataset_or_batches
    if isinstance(source, str):  # the registered loader, as a run with `data.dataset=<name>` reads it
        from workshop.core.configuration import DataConfiguration
        from workshop.data.sources import load_split

        source = load_split(DataConfiguration(dataset=source), train=train)
    if hasattr(source, "images") and hasattr(source, "labels"):
        source = {"x": source.images, "label": source.labels}
    elif isinstance(source, (np.ndarray, jax.Array)):
        source = {"x": np.asarray(source)}
    if isinstance(source, dict):
        if "x" not in source:
            raise KeyError(f"a dict of arrays needs the model input under 'x'; it has keys {sorted(source)}")
        return BatchPipeline.for_evaluation(source, batch_size=batch_size, seed=0, binarize=binarize)
    return source


def log_likelihood(
    model: nnx.Module,
    dataset_or_batches: Any,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    binarize: str = "none",
) -> dict[str, Any]:
    """The model's log-likelihood of a dataset, with the kind of estimate beside it.

    Args:
      model: a `LikelihoodModel` (`log_prob(x, *, rngs, num_samples) -> [B]`).
      dataset_or_batches: see `as_batches` (a name such as "fashion_mnist"
        means its test split).
      num_samples: importance samples (VAE), timesteps (diffusion), AIS
        chains (EBM), dequantisation draws (flows); None: the model's default.
      seed: the estimator's randomness; the same seed gives the same value.
      batch_size: examples per batch when arrays or a dataset are given.
      binarize: how arrays and datasets are binarized ("fixed" binarizes with
        a fixed seed, as the training runs' test sets).

    Returns:
      `{"nll": nats/example, "nll_bits_per_dim", "num_examples",
      "estimate": "exact" | "dequantisation bound" | "importance-weighted bound" |
      "variational bound" | "AIS estimate", "data": the discretisation the
      likelihood refers to, "binarize", "num_samples"}` plus
      `"negative_elbo"(_bits_per_dim)` for models with an `elbo`. For bounds
      the true nll is at most the value. VAEs compute both figures from the
      same importance samples (the ELBO as their mean log weight), so the
      nll never exceeds the negative ELBO.
    """
    described = likelihood_estimate(model)
    batches = as_batches(dataset_or_batches, batch_size=batch_size, binarize=binarize)
    result = evaluate_likelihood(model, batches, num_samples=num_samples, seed=seed)
    return {**result, **described, "binarize": binarize,
            "num_samples": num_samples if num_samples is not None else "model default"}


def _per_example(model: nnx.Module, batches: Iterable[dict[str, Any]], *, num_samples: int | None, seed: int,
                 with_elbo: bool) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Yields `({"log_prob": [B], "elbo": [B]?}, batch)` per batch, from one compiled function."""
    graphdef, state = nnx.split(model)
    conditional = isinstance(model, ConditionalModel)
    has_elbo = with_elbo and isinstance(model, ElboModel)
    # Both figures from the same importance samples, so that IWAE >= ELBO holds for every example.
    joint = has_elbo and isinstance(model, JointElboModel)
    kwargs = {"num_samples": num_samples} if num_samples is not None else {}

    @jax.jit
    def per_example(state, batch, key):
        m = nnx.merge(graphdef, state, copy=True)
        batch = {**batch, "x": model_input(batch["x"])}
        cond = {"labels": batch["label"]} if conditional else {}
        if joint:
            log_prob, elbo = m.log_prob_and_elbo(batch["x"], rngs=nnx.Rngs(key), **kwargs, **cond)
            return {"log_prob": log_prob, "elbo": elbo}
        out = {"log_prob": m.log_prob(batch["x"], rngs=nnx.Rngs(key), **kwargs, **cond)}
        if has_elbo:
            out["elbo"] = m.elbo(batch["x"], rngs=nnx.Rngs(jax.random.fold_in(key, 1)), **cond)
        return out

    key = jax.random.PRNGKey(seed)
    for i, batch in enumerate(batches):
        if "x" not in batch:
            raise KeyError(f"likelihood batches need the model input under 'x'; batch {i} has keys {sorted(batch)}")
        if conditional and batch.get("label") is None:
            raise ValueError(
                f"{type(model).__name__} is class-conditional: its likelihood needs each example's label, but batch {i} "
                f"has none (keys {sorted(batch)}); pass {{'x': inputs, 'label': labels}} ([N] integers in "
                f"[0, {model.num_classes})), a dataset with labels, or a dataset name such as 'fashion_mnist'"
            )
        yield jax.device_get(per_example(state, batch, jax.random.fold_in(key, i))), batch


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
      for models with `elbo`; `"perplexity"` for integer token/code inputs).
    """
    sums: dict[str, float] = {}
    count, dims, ids = 0, None, False
    for values, batch in _per_example(model, batches, num_samples=num_samples, seed=seed, with_elbo=True):
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(v, dtype=np.float64))
        count += int(batch["x"].shape[0])
        dims = int(np.prod(batch["x"].shape[1:]))
        ids = np.issubdtype(np.asarray(batch["x"]).dtype, np.integer)
    if count == 0:
        raise ValueError("evaluate_likelihood got no batches")
    result = {"num_examples": count, "nll": -sums["log_prob"] / count}
    result["nll_bits_per_dim"] = bits_per_dim(result["nll"], dims)
    if ids:  # Token (or mu-law code) sequences: exp of the mean nats per position.
        result["perplexity"] = math.exp(result["nll"] / dims)
    if "elbo" in sums:
        result["negative_elbo"] = -sums["elbo"] / count
        result["negative_elbo_bits_per_dim"] = bits_per_dim(result["negative_elbo"], dims)
    return result


def anomaly_scores(
    model: nnx.Module,
    dataset_or_batches: Any,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    binarize: str = "none",
) -> np.ndarray:
    """Per-example anomaly scores: the negative log-likelihood -log p(x) in nats, `[N]`.

    Higher is more anomalous (less likely under the model), in the order of
    the data. The estimate is the model's `log_prob` (see
    `likelihood_estimate`): for bounds the score is an upper bound on -log p(x).

    Args:
      model: a `LikelihoodModel`.
      dataset_or_batches: as for `log_likelihood`.
      num_samples: as for `evaluate_likelihood`.
      seed: as for `evaluate_likelihood`.
      batch_size: examples per batch when arrays or a dataset are given.
      binarize: as for `log_likelihood`.

    Returns:
      float64 `[N]`.
    """
    batches = as_batches(dataset_or_batches, batch_size=batch_size, binarize=binarize)
    scores = [-np.asarray(v["log_prob"], np.float64)
              for v, _ in _per_example(model, batches, num_samples=num_samples, seed=seed, with_elbo=False)]
    if not scores:
        raise ValueError("anomaly_scores got no batches")
    return np.concatenate(scores)
