"""Examples/s of each dataset loader into `BatchPipeline`, against the train step rate of its configs.

    taskset -c 0 python -m tools.benchmark.loaders [--loaders=protein,text] [--configs=vae,protein_backbone]
    tools/bazel run //tools/benchmark:loaders -- --output=/tmp/loaders.json   # under taskset for one core

Run it on one core (`taskset -c 0`): the loaders and the pipeline are
single-threaded numpy/Python, and one core is what a training process can
spare for them. For each loader (data configuration of the first shipped
config that uses it, or the local files named below when none does):

* cold: `workshop.data.sources.load_split` of both splits in a fresh
  process-level cache: finding, reading and decoding every file (IDX gzip,
  CIFAR pickles, text + BPE encoding with the cached tokenizer, WAV decoding +
  resampling + mu-law, PDB parsing + windowing) -> examples/s;
* warm: `BatchPipeline` (shuffled, batch size of the config, `prefetch=0` so
  the batching runs in this thread) over `--num_batches` batches -> examples/s;
* train: for every shipped config that reads the dataset (or `--configs`), the
  Trainer's compiled train step (`trainer.train_step`, the function
  `Trainer.fit` calls) on one device-resident batch, after a warm-up step ->
  examples/s. The loader keeps up when its warm rate exceeds the fastest of
  these; the cold cost is paid once per process.

Files: Fashion-MNIST from Debian's dataset-fashion-mnist; CIFAR-10 written
here in the official python layout (`cifar-10-batches-py/data_batch_1..5`,
`test_batch`, 10000 random images each) since Debian ships no CIFAR; text
from python3.11-doc; audio from asterisk-core-sounds-en-wav (8 kHz WAVs);
proteins from pymol-data.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import pickle
import pkgutil
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx

from workshop.core.configuration import DataConfiguration
from workshop.data import sources
from workshop.data.pipeline import BatchPipeline
from workshop.models.factories import create_model
from workshop.train import configs as config_package
from workshop.train.experiment import make_trainer, parse_config

_LOADERS = flags.DEFINE_list("loaders", ["fashion_mnist", "cifar10", "text", "audio_folder", "protein"],
                             "Datasets to measure.")
_CONFIGS = flags.DEFINE_list("configs", None, "Configs whose train step to time (default: every shipped config "
                             "that reads one of the measured datasets).")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 200, "Batches timed per pipeline.", lower_bound=1)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Train steps timed per config.", lower_bound=1)
_CIFAR_BATCH = flags.DEFINE_integer("cifar_batch_examples", 10000, "Images per generated CIFAR batch file.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON here too.")

# Loaders no shipped config reads: the data configuration measured.
_DEFAULT_DATA = {
    "fashion_mnist": dict(dataset="fashion_mnist", batch_size=128),
    "cifar10": dict(dataset="cifar10", batch_size=128),
    "text": dict(dataset="text", data_dir="/usr/share/doc/python3.11/html/_sources",
                 text=dict(sequence_length=128, vocab_size=4096), batch_size=32),
    "audio_folder": dict(dataset="audio_folder", data_dir="/usr/share/asterisk/sounds/en_US_f_Allison",
                         audio=dict(sample_rate=8000, sequence_length=4096), batch_size=16),
    "protein": dict(dataset="protein", data_dir="/usr/share/pymol/data", protein=dict(sequence_length=32, window_stride=1),
                    skip_bad_files=True, test_fraction=0.15, batch_size=64),
}


def shipped_configs() -> dict[str, object]:
    """name -> parsed config of every module in workshop/train/configs."""
    found = {}
    for module in pkgutil.iter_modules(config_package.__path__):
        try:
            found[module.name] = parse_config(
                importlib.import_module(f"workshop.train.configs.{module.name}").get_config())
        except Exception as e:  # pylint: disable=broad-except
            logging.warning("config %s does not parse (%s); left out", module.name, e)
    return found


def write_cifar10(root: pathlib.Path, per_batch: int) -> None:
    """The official python layout: dicts with bytes keys, b"data" uint8 `[n, 3072]` channel-planar, b"labels"."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [b"img_%d.png" % i for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)  # As re-saved by Python 3 (the originals are protocol 2).


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def measure_loader(data: DataConfiguration, num_batches: int) -> dict:
    """Cold (both splits read and decoded) and warm (batched) examples/s of one data configuration."""
    # Text: the BPE tokenizer is trained once per corpus and cached; cold times without it include training.
    tokenizer_cached = sources.tokenizer_file(data).is_file() if data.modality == "text" else None
    start = time.perf_counter()
    train = sources.load_split(data, train=True)
    test = sources.load_split(data, train=False)
    cold = time.perf_counter() - start
    examples = len(train["x"]) + len(test["x"])
    pipeline = iter(BatchPipeline(train, batch_size=data.batch_size, seed=0, shuffle=True, drop_remainder=True,
                                  binarize=data.binarize, prefetch=0))
    next(pipeline)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(pipeline)
    warm = time.perf_counter() - start
    return {
        "dataset": data.dataset, "data_dir": data.data_dir, "train_examples": len(train["x"]),
        "test_examples": len(test["x"]), "x_shape": list(train["x"].shape[1:]), "x_dtype": str(train["x"].dtype),
        "cold_seconds": cold, "cold_examples_per_second": _rate(examples, cold),
        "tokenizer_cached": tokenizer_cached,
        "batch_size": data.batch_size, "warm_examples_per_second": _rate(num_batches * data.batch_size, warm),
    }, train


def measure_train_step(cfg, train: dict, steps: int) -> dict:
    """Examples/s of the config's compiled train step on one device-resident batch."""
    trainer = make_trainer(create_model(cfg.model, rngs=nnx.Rngs(0)), cfg)
    batch = next(iter(BatchPipeline(train, batch_size=cfg.data.batch_size, seed=0, shuffle=True,
                                    drop_remainder=True, binarize=cfg.data.binarize, prefetch=0)))
    batch = jax.device_put(batch)
    state = trainer.init_state()
    start = time.perf_counter()
    state, _ = trainer.train_step(state, batch)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = trainer.train_step(state, batch)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    return {"config": cfg.name, "batch_size": cfg.data.batch_size, "first_step_seconds": compile_seconds,
            "train_steps_per_second": _rate(steps, seconds),
            "train_examples_per_second": _rate(steps * cfg.data.batch_size, seconds)}


def format_table(results: list[dict]) -> str:
    rows = [f"{'loader':<14s}{'examples':>9s}{'cold s':>8s}{'cold ex/s':>11s}{'warm ex/s':>12s}  "
            f"{'config':<18s}{'train ex/s':>11s}{'warm/train':>11s}"]
    for r in results:
        steps = r["train"] or [{"config": "(none ships)", "train_examples_per_second": float("nan")}]
        for i, step in enumerate(steps):
            head = (f"{r['dataset']:<14s}{r['train_examples'] + r['test_examples']:>9d}{r['cold_seconds']:>8.2f}"
                    f"{r['cold_examples_per_second']:>11.0f}{r['warm_examples_per_second']:>12.0f}") if i == 0 else " " * 54
            ratio = r["warm_examples_per_second"] / step["train_examples_per_second"]
            rows.append(f"{head}  {step['config']:<18s}{step['train_examples_per_second']:>11.1f}{ratio:>11.1f}")
    return "\n".join(rows)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_LOADERS.value) - set(_DEFAULT_DATA))
    if unknown:
        raise app.UsageError(f"--loaders: unknown {unknown}; known: {', '.join(_DEFAULT_DATA)}")
    cores = len(os.sched_getaffinity(0))
    if cores > 1:
        logging.warning("this process may use %d cores; run it under `taskset -c 0` to measure one core", cores)
    configs = shipped_configs()
    if _CONFIGS.value:
        missing = sorted(set(_CONFIGS.value) - set(configs))
        if missing:
            raise app.UsageError(f"--configs: {missing} not in workshop/train/configs; found {sorted(configs)}")
        configs = {name: configs[name] for name in _CONFIGS.value}
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in _LOADERS.value:
            users = [cfg for cfg in configs.values() if cfg.data.dataset == dataset]
            if users:
                data = users[0].data
            else:
                raw = dict(_DEFAULT_DATA[dataset])
                if dataset == "cifar10":
                    write_cifar10(pathlib.Path(scratch), _CIFAR_BATCH.value)
                    raw["data_dir"] = scratch
                data = DataConfiguration.model_validate(raw)
            result, train = measure_loader(data, _NUM_BATCHES.value)
            result["cores"] = cores
            result["train"] = []
            for cfg in users:
                # The config's own batch size, on the arrays just read (its data section may differ
                # only in batching fields from the one measured).
                result["train"].append(measure_train_step(cfg, sources.load_split(cfg.data, train=True)
                                                          if cfg.data != data else train, _TRAIN_STEPS.value))
            results.append(result)
            print(format_table([result]), flush=True)
    print(f"\n{cores} core(s), jax {jax.__version__} on {jax.devices()[0].platform}")
    print(format_table(results))
    if _OUTPUT.value:
        pathlib.Path(_OUTPUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
