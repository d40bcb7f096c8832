"""Generation speed of the autoregressive family: cached against naive decoding.

    PYTHONPATH=. python -m tools.benchmark.autoregressive_generation [--output=ar.json]
    tools/bazel run //tools/benchmark:autoregressive_generation -- --length=512

Measures, in one process, each `generate` compiled once ahead of time (one
`lax.scan` / `fori_loop` over positions) and timed, best of `repeats` calls
(`naive_repeats` for the slow naive decoders):

  * Transformer (the architecture of configs/transformer_text.py, with
    `input_shape=(length,)`): tokens/s of `generate(use_cache=True)` (one
    position per step through the key/value cache) against
    `use_cache=False` (the whole prefix rerun every step); the aim is for the
    cache to win by 10x or more at 512 tokens;
  * WaveNet (the architecture of configs/wavenet_audio.py): audio samples/s
    of the fast algorithm (Paine et al. 2016, arXiv:1611.09482; per-layer
    queues) against the naive one (the whole network every step);
  * PixelCNN (configs/pixelcnn.py, 28x28): images/s and pixels/s.

The models are freshly initialised: weights do not change the cost. On a
shared machine the best of the repeats is the least disturbed figure, and
still a lower bound.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import jax
from absl import app, flags
from flax import nnx
from tools.benchmark.reports import write_report

__all__ = ["format_results", "measure_generation", "run"]

_LENGTH = flags.DEFINE_integer("length", 512, "Transformer tokens per sequence.", lower_bound=2)
_TOKEN_BATCH = flags.DEFINE_integer("token_batch", 4, "Transformer sequences per generate call.", lower_bound=1)
_AUDIO_LENGTH = flags.DEFINE_integer("audio_length", 2048, "WaveNet samples per sequence.", lower_bound=2)
_AUDIO_BATCH = flags.DEFINE_integer("audio_batch", 4, "WaveNet sequences per generate call.", lower_bound=1)
_IMAGE_BATCH = flags.DEFINE_integer("image_batch", 16, "PixelCNN images per generate call.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed calls per measurement; the best is kept.", lower_bound=1)
_NAIVE_REPEATS = flags.DEFINE_integer("naive_repeats", 1, "Timed calls of the naive decoders.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON here too.")


def measure_generation(model: nnx.Module, n_samples: int, *, repeats: int = 2, seed: int = 0,
                       **options: Any) -> dict[str, float]:
    """Compiles `model.generate(n_samples=..., **options)` ahead of time and times its calls.

    Args:
      model: a model with `generate(*, n_samples, rngs, **options)` (put in eval mode here).
      n_samples: sequences per call.
      repeats: timed calls (each with another key); the best is kept.
      seed: the sampling key.
      **options: static keywords of `generate` (e.g. `use_cache=False`).

    Returns:
      `{"seconds": best call, "compile_seconds": ...}`.
    """
    model.eval()
    graphdef, state = nnx.split(model)

    def draw(state, key):
        return nnx.merge(graphdef, state, copy=True).generate(n_samples=n_samples, rngs=nnx.Rngs(key), **options)

    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = jax.jit(draw).lower(state, key).compile()
    compile_seconds = time.perf_counter() - start
    best = float("inf")
    for i in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(compiled(state, jax.random.fold_in(key, i)))
        best = min(best, time.perf_counter() - begin)
    return {"seconds": best, "compile_seconds": compile_seconds}


def _model(config_name: str, input_shape: tuple[int, ...] | None = None) -> nnx.Module:
    from workshop.models.factories import create_model  # pylint: disable=g-import-not-at-top
    from workshop.train.experiment import parse_config  # pylint: disable=g-import-not-at-top

    config = importlib.import_module(f"workshop.train.configs.{config_name}").get_config()
    if input_shape is not None:
        config.model.input_shape = input_shape
        if "max_length" in config.model.parameters:
            config.model.parameters.max_length = max(input_shape[0], config.model.parameters.max_length)
    # The data section may name files absent here; generation does not read them.
    cfg = parse_config(config)
    return create_model(cfg.model, rngs=nnx.Rngs(0))


def run(*, length: int = 512, token_batch: int = 4, audio_length: int = 2048, audio_batch: int = 4,
        image_batch: int = 16, repeats: int = 2, naive_repeats: int = 1) -> dict[str, Any]:
    """All three measurements (see the module docstring); sizes as the flags."""
    results: dict[str, Any] = {"devices": [str(d) for d in jax.devices()]}
    transformer = _model("transformer_text", (length,))
    cached = measure_generation(transformer, token_batch, repeats=repeats, use_cache=True)
    naive = measure_generation(transformer, token_batch, repeats=naive_repeats, use_cache=False)
    tokens = token_batch * length
    results["transformer"] = {
        "length": length, "batch": token_batch,
        "cached_tokens_per_second": tokens / cached["seconds"], "naive_tokens_per_second": tokens / naive["seconds"],
        "cache_speedup": naive["seconds"] / cached["seconds"],
        "cached_seconds": cached["seconds"], "naive_seconds": naive["seconds"],
    }
    wavenet = _model("wavenet_audio", (audio_length,))
    fast = measure_generation(wavenet, audio_batch, repeats=repeats, fast=True)
    slow = measure_generation(wavenet, audio_batch, repeats=naive_repeats, fast=False)
    samples = audio_batch * audio_length
    results["wavenet"] = {
        "length": audio_length, "batch": audio_batch,
        "fast_samples_per_second": samples / fast["seconds"], "naive_samples_per_second": samples / slow["seconds"],
        "fast_speedup": slow["seconds"] / fast["seconds"],
        "fast_seconds": fast["seconds"], "naive_seconds": slow["seconds"],
    }
    pixelcnn = _model("pixelcnn")
    timing = measure_generation(pixelcnn, image_batch, repeats=repeats)
    pixels = image_batch * pixelcnn.input_shape[0] * pixelcnn.input_shape[1] * pixelcnn.input_shape[2]
    results["pixelcnn"] = {
        "batch": image_batch, "images_per_second": image_batch / timing["seconds"],
        "pixels_per_second": pixels / timing["seconds"], "seconds": timing["seconds"],
    }
    return results


def format_results(r: dict[str, Any]) -> str:
    """A Markdown table of `run`'s results."""
    t, w, p = r["transformer"], r["wavenet"], r["pixelcnn"]
    rows = [
        "| model | setting | fast | naive | speed-up |",
        "| --- | --- | --- | --- | --- |",
        f"| Transformer | {t['length']} tokens x {t['batch']} | {t['cached_tokens_per_second']:.0f} tokens/s (KV cache) "
        f"| {t['naive_tokens_per_second']:.0f} tokens/s (full prefix) | {t['cache_speedup']:.1f}x |",
        f"| WaveNet | {w['length']} samples x {w['batch']} | {w['fast_samples_per_second']:.0f} samples/s (queues) "
        f"| {w['naive_samples_per_second']:.0f} samples/s (full network) | {w['fast_speedup']:.1f}x |",
        f"| PixelCNN | 28x28x1 x {p['batch']} | {p['images_per_second']:.2f} images/s "
        f"({p['pixels_per_second']:.0f} pixels/s) | | |",
    ]
    return "\n".join(rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = run(length=_LENGTH.value, token_batch=_TOKEN_BATCH.value, audio_length=_AUDIO_LENGTH.value,
                 audio_batch=_AUDIO_BATCH.value, image_batch=_IMAGE_BATCH.value, repeats=_REPEATS.value,
                 naive_repeats=_NAIVE_REPEATS.value)
    print(format_results(result))
    if _OUTPUT.value:
        write_report(_OUTPUT.value, result)


if __name__ == "__main__":
    app.run(main)
