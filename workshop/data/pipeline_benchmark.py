"""Measures batches/s of `BatchPipeline` (numpy) against grain pipelines.

Workload: Fashion-MNIST training images (60000 x 28 x 28 x 1 uint8), batch 128,
shuffled, converted to float32 in [0, 1]. Each variant first yields `--warmup`
batches (thread start, first permutation), then is timed over `--num_batches`.

    tools/bazel run //workshop/data:pipeline_benchmark -- --num_batches=500
    # or, without Bazel:
    PYTHONPATH=. python3 workshop/data/pipeline_benchmark.py

Variants:
  numpy:              BatchPipeline, prefetch=0 (vectorized gather + cast).
  numpy_prefetch2:    BatchPipeline, two batches ahead in a background thread.
  numpy_dynamic:      BatchPipeline with binarize="dynamic", prefetch=0.
  grain_per_example:  the idiomatic grain pipeline, MapDataset.source(ds)
                      .shuffle().repeat().map(to_float).batch(), iterated
                      through to_iter_dataset with `--grain_threads` threads.
  grain_batch_map:    grain MapDataset.range(steps).map(BatchPipeline.batch),
                      i.e. grain only schedules and prefetches whole batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from absl import app
from absl import flags
import numpy as np

from workshop.data.datasets.image import load_image_dataset
from workshop.data.pipeline import BatchPipeline

_NUM_BATCHES = flags.DEFINE_integer("num_batches", 500, "Batches timed per variant.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Batches yielded before timing starts.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per batch.")
_GRAIN_THREADS = flags.DEFINE_integer("grain_threads", 2, "grain ReadOptions.num_threads.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of the Fashion-MNIST IDX files.")
_VARIANTS = flags.DEFINE_list(
    "variants",
    "numpy,numpy_prefetch2,numpy_dynamic,grain_per_example,grain_batch_map",
    "Variants to measure.",
)


def _numpy(source: dict[str, np.ndarray], batch_size: int, **kwargs) -> Iterator[dict]:
    return BatchPipeline(source, batch_size=batch_size, seed=0, **kwargs)


def _to_float(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": example["x"].astype(np.float32) / np.float32(255), "label": example["label"]}


def _grain_per_example(source: dict[str, np.ndarray], batch_size: int) -> Iterator[dict]:
    import grain  # pylint: disable=g-import-not-at-top

    class _Source:  # A grain RandomAccessDataSource over the arrays.
        def __len__(self) -> int:
            return len(source["label"])

        def __getitem__(self, index: int) -> dict[str, np.ndarray]:
            return {"x": source["x"][index], "label": source["label"][index]}

    dataset = (
        grain.MapDataset.source(_Source())
        .shuffle(seed=0)
        .repeat()
        .map(_to_float)
        .batch(batch_size, drop_remainder=True)
    )
    options = grain.ReadOptions(num_threads=_GRAIN_THREADS.value, prefetch_buffer_size=max(4, _GRAIN_THREADS.value))
    return iter(dataset.to_iter_dataset(options))


def _grain_batch_map(source: dict[str, np.ndarray], batch_size: int) -> Iterator[dict]:
    import grain  # pylint: disable=g-import-not-at-top

    pipeline = BatchPipeline(source, batch_size=batch_size, seed=0, num_epochs=100, prefetch=0)
    dataset = grain.MapDataset.range(pipeline.num_steps).map(pipeline.batch)
    options = grain.ReadOptions(num_threads=_GRAIN_THREADS.value, prefetch_buffer_size=max(4, _GRAIN_THREADS.value))
    return iter(dataset.to_iter_dataset(options))


def measure(make_iterator: Callable[[], Iterator[dict]], num_batches: int, warmup: int) -> float:
    """Returns batches/s over `num_batches` after `warmup` batches."""
    iterator = make_iterator()
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    assert batch["x"].dtype == np.float32 and batch["x"].shape[0] == _BATCH_SIZE.value
    return num_batches / elapsed


def main(argv: list[str]) -> None:
    del argv
    source = load_image_dataset("fashion_mnist", root=_DATA_DIR.value).as_arrays()
    batch_size = _BATCH_SIZE.value
    variants = {
        "numpy": lambda: _numpy(source, batch_size, prefetch=0),
        "numpy_prefetch2": lambda: _numpy(source, batch_size, prefetch=2),
        "numpy_dynamic": lambda: _numpy(source, batch_size, prefetch=0, binarize="dynamic"),
        "grain_per_example": lambda: _grain_per_example(source, batch_size),
        "grain_batch_map": lambda: _grain_batch_map(source, batch_size),
    }
    print(f"{len(source['label'])} images, batch {batch_size}, {_NUM_BATCHES.value} batches timed")
    for name in _VARIANTS.value:
        rate = measure(variants[name], _NUM_BATCHES.value, _WARMUP.value)
        print(f"{name:20s} {rate:10.1f} batches/s  {rate * batch_size:12.0f} images/s")


if __name__ == "__main__":
    app.run(main)
