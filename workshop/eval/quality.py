"""FID, KID and precision/recall/density/coverage of a model's samples against a dataset.

`sample_quality(model_or_samples, dataset="fashion_mnist", num_samples=N)`
embeds N samples and the dataset's test images with the feature network of
`feature_net.py` and reports

* `fid`: the Frechet distance of Gaussians fitted to the two feature sets
  (Heusel et al. 2017, arXiv:1706.08500; frechet.py), against the statistics
  of all test images;
* `kid`, `kid_std`: the unbiased polynomial-kernel MMD^2 over subsets
  (Binkowski et al. 2018, arXiv:1801.01401; kid.py);
* `precision`, `recall`, `density`, `coverage` with k = 5 (Naeem et al.
  2020, arXiv:2002.09797; prdc.py), against N test images (a seeded subset),
  since the k-NN radii and so the values depend on the set sizes;

with the sample counts, the feature network and the weights' fingerprint
beside them: scores are comparable only for the same feature network and
similar sample counts (FID is biased upwards at small N, Chong & Forsyth
2020, arXiv:1911.07023). Fewer than `MIN_RECOMMENDED_SAMPLES` samples log
a warning. The reference features of a dataset are computed once and cached
under `cache_dir()/reference_stats/`, keyed by the weights' fingerprint and
the test images' content.

The same seed gives the same scores: samples are drawn with
`fold_in(PRNGKey(seed), batch)` and KID's subsets and the PRDC reference
subset with `seed` too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from workshop.eval import feature_net as feature_net_lib
from workshop.eval.frechet import frechet_distance, gaussian_statistics
from workshop.eval.kid import kernel_inception_distance
from workshop.eval.prdc import precision_recall_density_coverage

__all__ = [
    "MIN_RECOMMENDED_SAMPLES",
    "REFERENCE_DATASETS",
    "draw_samples",
    "quality_from_features",
    "reference_features",
    "sample_quality",
]

_log = logging.getLogger(__name__)

# Below this, FID's small-sample bias dominates the differences between
# reasonable models (with 128-d features it is about 15 x D samples).
MIN_RECOMMENDED_SAMPLES = 2000
REFERENCE_DATASETS = ("fashion_mnist",)


def _check_dataset(dataset: str) -> str:
    name = dataset.lower().replace("-", "_")
    if name not in REFERENCE_DATASETS:
        raise ValueError(
            f"sample quality has no feature network for dataset {dataset!r}; known: {', '.join(REFERENCE_DATASETS)}"
        )
    return name


def reference_features(
    dataset: str = "fashion_mnist",
    *,
    net: nnx.Module | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """Features of the dataset's test images, with their mean and covariance (cached).

    Args:
      dataset: "fashion_mnist".
      net: the feature network (default: `load_feature_net()`).
      data_dir: the dataset folder (default: `default_data_dir`).
      cache: read/write `cache_dir()/reference_stats/<dataset>_test_<net>_<sha>_<images>.npz`
        (`<images>`: a SHA-256 prefix of the test images themselves, so another
        copy of the dataset, or a fixture of the same name, gets its own entry).

    Returns:
      `{"features": [N, D] float32, "mu": [D], "sigma": [D, D]}` (float64 statistics).
    """
    dataset = _check_dataset(dataset)
    net = feature_net_lib.load_feature_net() if net is None else net
    from workshop.data.datasets.image import load_image_dataset

    images = load_image_dataset(dataset, root=data_dir, train=False).images
    fingerprint = getattr(net, "fingerprint", None)
    path = None
    if cache and fingerprint is not None:
        content = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
        path = (feature_net_lib.cache_dir() / "reference_stats"
                / f"{dataset}_test_{net.name}_{fingerprint}_{content}.npz")
        if path.is_file():
            with np.load(path) as stored:
                return {k: stored[k] for k in ("features", "mu", "sigma")}
    features = feature_net_lib.extract_features(net, images)
    mu, sigma = gaussian_statistics(features)
    result = {"features": features, "mu": mu, "sigma": sigma}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        with open(tmp, "wb") as f:
            np.savez(f, **result)
        os.replace(tmp, path)
    return result


@functools.partial(jax.jit, static_argnames=("graphdef", "n"))
def _generate(graphdef, state, key, *, n: int):
    return nnx.merge(graphdef, state, copy=True).generate(n_samples=n, rngs=nnx.Rngs(key))


def draw_samples(model: nnx.Module, num_samples: int, *, seed: int = 0, batch_size: int = 500) -> np.ndarray:
    """`model.generate` in batches of `batch_size` (one compiled call each): `[num_samples, ...]`.

    Batch i draws with `fold_in(PRNGKey(seed), i)`. Conditional models get
    their labels from their own `generate` defaults (or are refused there).
    """
    graphdef, state = nnx.split(model)
    key = jax.random.PRNGKey(seed)
    size = min(batch_size, num_samples)
    batches = [
        np.asarray(_generate(graphdef, state, jax.random.fold_in(key, i), n=size))
        for i in range(-(-num_samples // size))
    ]
    return np.concatenate(batches)[:num_samples]


def quality_from_features(
    real: dict[str, np.ndarray], fake_features: np.ndarray, *, seed: int = 0, prdc_k: int = 5,
    kid_subsets: int = 100, kid_subset_size: int = 1000,
) -> dict[str, Any]:
    """FID, KID and PRDC from features already extracted.

    Args:
      real: `reference_features` output (`features [N, D]`, `mu`, `sigma`).
      fake_features: `[M, D]`.

    Returns:
      The scores with `num_samples` (M) and `num_reference` (N).
    """
    fake_features = np.asarray(fake_features, np.float32)
    m = fake_features.shape[0]
    if m < 2:
        raise ValueError(f"sample quality needs at least 2 samples, got {m}")
    if m < MIN_RECOMMENDED_SAMPLES:
        _log.warning(
            "sample quality from %d samples: below %d, FID and KID are noisy and FID is biased upwards; "
            "compare only scores with the same sample count", m, MIN_RECOMMENDED_SAMPLES,
        )
    fid = frechet_distance(real["mu"], real["sigma"], *gaussian_statistics(fake_features))
    kid, kid_std = kernel_inception_distance(real["features"], fake_features, num_subsets=kid_subsets,
                                             subset_size=kid_subset_size, seed=seed)
    n_real = real["features"].shape[0]
    subset = np.random.default_rng(seed).permutation(n_real)[: min(m, n_real)]
    prdc = precision_recall_density_coverage(real["features"][np.sort(subset)], fake_features, k=prdc_k)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, **prdc, "prdc_k": prdc_k,
            "num_samples": m, "num_reference": int(n_real), "kid_subset_size": min(kid_subset_size, m, n_real)}


def sample_quality(
    model_or_samples,
    *,
    dataset: str = "fashion_mnist",
    num_samples: int | None = 10000,
    seed: int = 0,
    weights_path: str | os.PathLike | None = None,
    net: nnx.Module | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 500,
    reference: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """FID / KID / PRDC of a model's samples (or given images) against `dataset`'s test set.

    Args:
      model_or_samples (GenerativeModel | np.ndarray): a `GenerativeModel` (sampled with `generate`) or
        images `[M, 28, 28, 1]` in [0, 1] (uint8 is scaled by 1/255).
      dataset: the reference dataset ("fashion_mnist").
      num_samples: how many samples to draw (models) or to use (the first
        ones of given images; None uses all of them).
      seed: sampling, KID subsets and the PRDC reference subset.
      weights_path: the feature network's weights (default: the cached classifier).
      net: the feature network itself, instead of `weights_path`;
        `net=workshop.eval.inception.load_inception(path)` gives the
        standard InceptionV3 features (reference features are then cached
        under its own name and fingerprint).
      data_dir: the dataset folder.
      batch_size: samples per `generate` call and per feature batch (the
        samples depend on it: the same seed and batch size give the same scores).
      reference: `reference_features(...)` computed already with the same `net`
        (periodic evaluation keeps it between calls); default: the cached one.

    Returns:
      `{"fid", "kid", "kid_std", "precision", "recall", "density", "coverage",
      "prdc_k", "num_samples", "num_reference", "kid_subset_size", "dataset",
      "feature_net", "feature_net_sha256"}`.

    Raises:
      FeatureNetworkMissingError: the feature network is not trained yet
        (the message gives the command).
    """
    dataset = _check_dataset(dataset)
    net = feature_net_lib.load_feature_net(weights_path) if net is None else net
    if isinstance(model_or_samples, nnx.Module):
        if num_samples is None:
            raise ValueError("num_samples is required when sampling from a model")
        samples = draw_samples(model_or_samples, num_samples, seed=seed, batch_size=batch_size)
    else:
        samples = np.asarray(model_or_samples)
        samples = samples if num_samples is None else samples[:num_samples]
    if samples.dtype == np.uint8:
        samples = samples.astype(np.float32) / 255.0
    expected = getattr(net, "input_shape", None)  # None: any size (InceptionV3 resizes)
    if samples.ndim != 4 or (expected is not None and samples.shape[1:] != tuple(expected)):
        shape = ", ".join(map(str, expected)) if expected is not None else "H, W, C"
        raise ValueError(f"samples have shape {list(samples.shape)}; {net.name} takes [M, {shape}]")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"{int(np.sum(~np.isfinite(samples)))} sample values are NaN or infinite")
    fake = feature_net_lib.extract_features(net, np.clip(samples, 0.0, 1.0), batch_size=batch_size)
    real = reference_features(dataset, net=net, data_dir=data_dir) if reference is None else reference
    scores = quality_from_features(real, fake, seed=seed)
    return {**scores, "dataset": dataset, "feature_net": net.name,
            "feature_net_sha256": getattr(net, "fingerprint", None)}
