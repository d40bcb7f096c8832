"""Deterministic, resumable batches from in-memory arrays, for training and evaluation.

`BatchPipeline` turns a dict of numpy arrays that share their leading dim N
(e.g. `{"x": uint8 [N, H, W, C], "label": int32 [N]}`) into a stream of
batches. `"x"` is the model input of every modality: images (uint8 grey levels
become float32 in [0, 1]), token or mu-law ids (integers stay int32) and
coordinates (floats become float32). Every batch is a pure function of `(seed, step)`:

* epoch `e = step // steps_per_epoch` visits the examples in the order of a
  permutation drawn from `np.random.default_rng([seed, e])` (identity order when
  `shuffle=False`);
* `binarize="dynamic"` samples each pixel from Bernoulli(grey / 255) with a
  counter-based Philox stream keyed by `(seed, e)` and indexed by the example's
  position in the epoch, so draws do not depend on the batch size (dynamic
  binarization as in Salakhutdinov & Murray, 2008, "On the quantitative
  analysis of deep belief networks");
* `binarize="fixed"` draws once per example from a stream keyed by `seed` and
  indexed by the example index: the same bits in every epoch, for test sets.

With `image_dtype="uint8"` image batches stay uint8 (grey levels; binarized
pixels as 0 or 255) so they cross to the device at a quarter of the float32
bytes, and `model_input` turns them into the same float32 values inside the
compiled step (bit for bit: a lookup of the host's 256 quotients `k / 255`).

So resuming with `start_step=k` (or `set_state({"step": k})`) yields exactly the
batches an uninterrupted run yields from step k on.

Multi-host: with `shard_count=P, shard_index=p` each process gathers, casts and
binarizes only rows `[p * B/P, (p + 1) * B/P)` of every global batch of B
rows; the global batch sequence (order and Bernoulli bits) is the one of a
single-process pipeline, so the union of the P shards at any step is its
batch at that step, whatever P is. (`binarize="fixed"` still draws the bits
of all N examples once, when the pipeline is built.)

Batches are prepared `prefetch` steps ahead in one background thread (numpy's
gathers and casts release the GIL).

Plain numpy rather than grain: for this workload (60000 Fashion-MNIST images,
batch 128, float conversion) one vectorized gather per batch ran at ~25000
batches/s on a 2-core machine, grain's per-example MapDataset pipeline at
~400-460 and grain scheduling these same whole batches at ~11000-15000;
`pipeline_benchmark.py` measures them. The datasets themselves stay grain
`RandomAccessDataSource`s for anyone who wants grain.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["BINARIZE_MODES", "IMAGE_DTYPES", "BatchPipeline", "model_input"]

BINARIZE_MODES = ("none", "dynamic", "fixed")
IMAGE_DTYPES = ("float32", "uint8")

# Third SeedSequence word separating the random streams of one seed. The
# shuffle stream uses `[seed, epoch]`, which SeedSequence treats like
# `[seed, epoch, 0]`, so these tags must be non-zero.
_DYNAMIC_TAG = 1
_FIXED_TAG = 2
# P(pixel = 1) = _THRESHOLDS[grey] / 2**32 for a uniform uint32 draw: exactly 0
# for black, exactly 1 for white, grey / 255 within 2**-32 in between.
_THRESHOLDS = (np.arange(256, dtype=np.uint64) * 2**32 + 254) // 255
_FIXED_CHUNK = 4096  # Examples binarized at once when "fixed" precomputes.
_GREY_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)  # float32 [256]: the model input of each level


def _philox_key(*words: int) -> np.ndarray:
    return np.random.SeedSequence(list(words)).generate_state(2, np.uint64)


def _bernoulli(grey: np.ndarray, key: np.ndarray, first: int) -> np.ndarray:
    """Samples Bernoulli(grey / 255) per pixel, indexed by stream position.

    Args:
      grey: uint8 `[B, ...]` grey levels of B examples at stream positions
        `first, ..., first + B - 1`.
      key: the Philox key (2 uint64) of the stream.
      first: stream position of `grey[0]`.

    Returns:
      uint8 `[B, ...]` of 0s and 1s; example j's bits depend only on
      `(key, first + j)`, never on B.
    """
    size = int(np.prod(grey.shape[1:], dtype=np.int64))
    # One Philox counter step gives 4 uint64 = 8 uint32; give each example a
    # whole number of steps so that it can be reached with `advance`.
    padded = -(-size // 8) * 8
    bit_generator = np.random.Philox(key=key)
    bit_generator.advance(first * padded // 8)
    draws = bit_generator.random_raw(len(grey) * padded // 2).view(np.uint32)
    draws = draws.reshape(len(grey), padded)[:, :size].reshape(grey.shape)
    return (draws < _THRESHOLDS[grey]).astype(np.uint8)


def model_input(x: Any) -> Any:
    """The model's view of a batch's `"x"`: uint8 grey levels become float32 `x / 255`, the rest is unchanged.

    Works on numpy arrays and inside a compiled step (`jax.Array`, tracers),
    where it turns the uint8 batches of `BatchPipeline(image_dtype="uint8")`
    into exactly the float32 batches of the default `image_dtype`.
    """
    if x.dtype != np.uint8:
        return x
    if isinstance(x, np.ndarray):
        return x.astype(np.float32) / np.float32(255)
    import jax.numpy as jnp  # only when given a jax array: the pipeline itself needs no jax

    # A lookup of the host's 256 quotients rather than `x / 255`: XLA turns division by a
    # constant into multiplication by its reciprocal, which is off by one ulp for some levels.
    return jnp.asarray(_GREY_LEVELS)[x.astype(jnp.int32)]


def _produce(pipeline_ref: weakref.ref, step: int, out: queue.Queue, stop: threading.Event) -> None:
    """Background thread: puts batches from `step` on, until the end or `stop`."""
    while not stop.is_set():
        pipeline = pipeline_ref()
        if pipeline is None or pipeline._is_done(step):
            return
        try:
            item: Any = pipeline.batch(step)
        except Exception as e:  # Handed to the consumer, raised there.
            item = e
        del pipeline  # Hold no reference while blocked, so it can be collected.
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, Exception):
            return
        step += 1


class BatchPipeline(Iterator[dict[str, np.ndarray]]):
    """Shuffled, optionally binarized batches of an in-memory dataset.

    An iterator of dicts: `"x"` float32 `[B, H, W, C]` in [0, 1] (uint8 / 255,
    or 0/1 when binarized; with `image_dtype="uint8"` uint8 grey levels, 0/255
    when binarized; integer ids stay int32, other floats become float32),
    `"label"` int32 `[B]`, and every other source key gathered as
    is. B is `batch_size / shard_count` (`local_batch_size`) except for a
    smaller last batch of an epoch when `drop_remainder=False`.

    Training: `BatchPipeline(source, batch_size=128, seed=0)` (shuffled, full
    batches, forever). Evaluation: `BatchPipeline.for_evaluation(source,
    batch_size=500)` gives every example once, in order.
    """

    def __init__(
        self,
        source: Mapping[str, np.ndarray],
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
        binarize: str = "none",
        prefetch: int = 2,
        start_step: int = 0,
        shard_index: int = 0,
        shard_count: int = 1,
        image_dtype: str = "float32",
    ):
        """Builds the pipeline; nothing is computed until the first batch.

        Args:
          source: arrays with the same leading dim N, e.g. `{"x": uint8
            [N, H, W, C], "label": int [N]}`. Kept by reference, not copied.
          batch_size: examples per batch.
          seed: non-negative integer; with the step it determines every batch.
          shuffle: visit each epoch in a fresh random order (else in order).
          drop_remainder: skip the last `N % batch_size` examples of each epoch
            so that all batches are full.
          num_epochs: epochs to yield, or None for forever.
          binarize: "none", "dynamic" (fresh Bernoulli draws per epoch) or
            "fixed" (one draw per example, the same every epoch); needs a uint8
            `"x"`.
          prefetch: batches prepared ahead in a background thread; 0 for none.
          start_step: the step to start from (to resume a run).
          shard_index: which contiguous part of every global batch this
            pipeline yields, 0..shard_count-1 (`jax.process_index()`).
          shard_count: the number of parts (`jax.process_count()`); must
            divide `batch_size` (and the last batch's size when
            `drop_remainder=False`).
          image_dtype: "float32" (uint8 images become float32 in [0, 1]) or
            "uint8" (they stay uint8 grey levels, binarized pixels 0 or 255;
            `model_input` converts them on the device).
        """
        if not source:
            raise ValueError("source is empty; expected a dict of arrays such as {'x': ..., 'label': ...}")
        self._source = {key: np.asarray(value) for key, value in source.items()}
        sizes = {key: (value.shape[0] if value.ndim else None) for key, value in self._source.items()}
        self.num_examples = next(iter(sizes.values()))
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(f"source arrays must share their leading dim N; got leading dims {sizes}")
        if self.num_examples == 0:
            raise ValueError("source has 0 examples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_remainder and batch_size > self.num_examples:
            raise ValueError(
                f"batch_size {batch_size} > {self.num_examples} examples with drop_remainder=True "
                "gives no batch at all; lower batch_size or set drop_remainder=False"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (forever), got {num_epochs}")
        if binarize not in BINARIZE_MODES:
            raise ValueError(f"binarize {binarize!r} is unknown; known: {', '.join(BINARIZE_MODES)}")
        if binarize != "none" and self._source.get("x", np.empty(0)).dtype != np.uint8:
            raise ValueError(f"binarize={binarize!r} needs a uint8 'x' array in source (grey levels 0..255)")
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype {image_dtype!r} is unknown; known: {', '.join(IMAGE_DTYPES)}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if not isinstance(shard_count, (int, np.integer)) or shard_count < 1:
            raise ValueError(f"shard_count must be a positive integer (the process count), got {shard_count!r}")
        if not isinstance(shard_index, (int, np.integer)) or not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index must be in 0..{shard_count - 1} (shard_count={shard_count}), "
                             f"got {shard_index!r}")
        last = self.num_examples % batch_size
        for size in (batch_size, last if not drop_remainder and last else batch_size):
            if size % shard_count:
                lower = batch_size // shard_count * shard_count
                raise ValueError(
                    f"a batch of {size} examples cannot be split into shard_count={shard_count} equal shards "
                    f"(one per process): set batch_size to a multiple of {shard_count}, e.g. "
                    f"{max(lower, shard_count)} or {lower + shard_count}"
                    + ("" if size == batch_size else ", with drop_remainder=True")
                )

        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.num_epochs = num_epochs
        self.binarize = binarize
        self.image_dtype = image_dtype
        self.prefetch = int(prefetch)
        self.shard_index = int(shard_index)
        self.shard_count = int(shard_count)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._fixed_bits = self._binarize_all() if binarize == "fixed" else None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._step = 0
        self.set_state({"step": start_step})

    @classmethod
    def for_evaluation(
        cls, source: Mapping[str, np.ndarray], *, batch_size: int, seed: int = 0, binarize: str = "none"
    ) -> BatchPipeline:
        """Every example exactly once, in order; the last batch may be smaller."""
        return cls(
            source,
            batch_size=batch_size,
            seed=seed,
            shuffle=False,
            drop_remainder=False,
            num_epochs=1,
            binarize=binarize,
            prefetch=0,
        )

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch."""
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    @property
    def local_batch_size(self) -> int:
        """Rows of each full batch this shard yields: `batch_size / shard_count`."""
        return self.batch_size // self.shard_count

    @property
    def num_steps(self) -> int | None:
        """Batches over all epochs, or None when the pipeline runs forever."""
        return None if self.num_epochs is None else self.num_epochs * self.steps_per_epoch

    def state(self) -> dict[str, int]:
        """The resume point: `{"step": batches handed out so far}`."""
        return {"step": self._step}

    def set_state(self, state: Mapping[str, int]) -> None:
        """Continues from `state` (from `state()`); prefetched batches are dropped."""
        step = int(state["step"])
        if step < 0 or (self.num_steps is not None and step > self.num_steps):
            raise ValueError(f"step {step} is outside this pipeline's 0..{self.num_steps} steps")
        self.close()
        self._step = step

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch at `step`, a pure function of `(seed, step)` and the settings.

        Args:
          step: 0 <= step < num_steps.

        Returns:
          `{"x": float32 (or uint8) [B, H, W, C], "label": int32 [B], ...}`: this
          shard's rows of the global batch (all of them when `shard_count=1`).
        """
        if step < 0 or self._is_done(step):
            raise IndexError(f"step {step} is outside this pipeline's 0..{self.num_steps} steps")
        epoch, index = divmod(step, self.steps_per_epoch)
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.num_examples)
        # This shard's contiguous part of the global batch's epoch positions [start, stop).
        share = (stop - start) // self.shard_count
        start, stop = start + self.shard_index * share, start + (self.shard_index + 1) * share
        # Basic slicing (a view) when in order; a gather when shuffled.
        rows = self._epoch_order(epoch)[start:stop] if self.shuffle else slice(start, stop)
        batch = {}
        for key, values in self._source.items():
            if key != "x":
                dtype = np.int32 if key == "label" else values.dtype
                batch[key] = values[rows].astype(dtype)  # A copy, never a view of source.
            elif self.binarize != "none":
                if self.binarize == "dynamic":
                    bits = _bernoulli(values[rows], _philox_key(self.seed, epoch, _DYNAMIC_TAG), start)
                else:
                    bits = self._fixed_bits[rows]
                batch[key] = bits * np.uint8(255) if self.image_dtype == "uint8" else bits.astype(np.float32)
            elif values.dtype == np.uint8:
                grey = values[rows]
                if self.image_dtype == "uint8":
                    batch[key] = grey.copy() if isinstance(rows, slice) else grey  # never a view of source
                else:
                    batch[key] = model_input(grey)
            elif np.issubdtype(values.dtype, np.integer):  # Token or class ids: kept as ids.
                batch[key] = values[rows].astype(np.int32)
            else:
                batch[key] = values[rows].astype(np.float32)
        return batch

    def __iter__(self) -> BatchPipeline:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._is_done(self._step):
            raise StopIteration
        if self.prefetch == 0:
            batch = self.batch(self._step)
        else:
            if self._thread is None:
                self._start_thread()
            batch = self._queue.get()
            if isinstance(batch, Exception):
                self.close()
                raise batch
        self._step += 1
        return batch

    def close(self) -> None:
        """Stops the prefetch thread; iterating again restarts it at `state()`."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> BatchPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # The thread holds only a weak reference; tell it to stop.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def _is_done(self, step: int) -> bool:
        return self.num_steps is not None and step >= self.num_steps

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(
            target=_produce,
            args=(weakref.ref(self), self._step, self._queue, self._stop),
            name="BatchPipeline-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """int `[N]`: the example indices of `epoch` in the order they are visited."""
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        self._order_cache = (epoch, order)
        return order

    def _binarize_all(self) -> np.ndarray:
        """uint8 `[N, H, W, C]`: one Bernoulli draw per example, keyed by its index."""
        images = self._source["x"]
        key = _philox_key(self.seed, 0, _FIXED_TAG)
        bits = np.empty_like(images)
        for first in range(0, len(images), _FIXED_CHUNK):
            bits[first : first + _FIXED_CHUNK] = _bernoulli(images[first : first + _FIXED_CHUNK], key, first)
        return bits
