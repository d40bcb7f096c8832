"""Which matmuls and convolutions of each config's train step run in bfloat16.

    tools/bazel run //tools/benchmark:precision_audit -- --model=all

Builds every config's trainer with
`training.precision="bfloat16"`, traces one train step on a small batch and
counts its `dot_general`/`conv_general_dilated` results by dtype
(`workshop.core.device_manager.matmul_sites`, nested jits and scans
included). Every float32 one is listed with its scope: the deliberate ones
sit under a `float32_<name>` scope (`device_manager.keep_float32`), and jax's
`dot_product_attention` computes its logits in float32 itself. Tracing only:
nothing is compiled or run, so this works on any machine.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import pathlib

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from workshop.core.device_manager import matmul_sites
from workshop.models.factories import create_model
from workshop.train.cli import quiet_library_logs
from workshop.train.experiment import make_trainer, parse_config

_MODEL = flags.DEFINE_list("model", ["all"], "Config names in workshop/train/configs, or 'all'.")
_PRECISION = flags.DEFINE_enum("precision", "bfloat16", ["bfloat16", "float16"], "The mixed precision to audit.")

_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "workshop" / "train" / "configs"


def audit(name: str, precision: str = "bfloat16") -> dict:
    """`{"counts": {dtype: n}, "float32": {(scope, operand dtypes): n}}` of one config's train step."""
    cfg = parse_config(importlib.import_module(f"workshop.train.configs.{name}").get_config())
    cfg = dataclasses.replace(cfg, training=cfg.training.model_copy(update={"precision": precision}))
    model = create_model(cfg.model, rngs=nnx.Rngs(0))
    trainer = make_trainer(model, cfg)
    rows = 4 * int(getattr(model, "n_critic", 1))  # a GAN step takes n_critic batches of m examples
    shape = tuple(cfg.model.input_shape)
    integer = cfg.model.family == "autoregressive" and cfg.model.model_type != "pixelcnn"
    batch = {"x": np.zeros((rows, *shape), np.int32 if integer else np.float32),
             "label": np.zeros((rows,), np.int32)}
    sites = matmul_sites(jax.make_jaxpr(trainer._train_step)(trainer.init_state(), batch))
    return {"counts": dict(collections.Counter(s.dtype for s in sites)),
            "float32": dict(collections.Counter((s.scope, s.operand_dtypes) for s in sites if s.dtype == "float32"))}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    names = _MODEL.value
    if names == ["all"]:
        names = sorted(p.stem for p in _CONFIGS.glob("*.py") if p.stem != "__init__")
    for name in names:
        result = audit(name, _PRECISION.value)
        print(name, result["counts"], flush=True)
        for (scope, operands), n in sorted(result["float32"].items()):
            print(f"    float32 x{n}: {scope or '(no scope)'} {operands}", flush=True)


if __name__ == "__main__":
    app.run(main)
