"""`train_and_evaluate`: data, model, trainer, callbacks and resume for one workdir.

The absl binary (`main.py`) only parses flags and calls this. A workdir holds:

    config.json          the validated model/training/data/eval configuration
    checkpoints/<step>/  orbax checkpoints (state + JSON record)
    metrics.jsonl        train and eval metrics, one JSON object a line
    tensorboard/         TensorBoard event files
    samples/*.png        sample grids from the EMA model
    final_metrics.json   test-set likelihood at the end of the run

Running the same command again resumes from the latest checkpoint: the data
pipeline is positioned at the checkpoint's step and the step keys are
`fold_in(seed, step)`, so the resumed run reproduces the uninterrupted one
(the record also holds the data order, and a resume with another one says so).
SIGINT/SIGTERM end the run after the current step with a checkpoint (on
several hosts, a SIGTERM to any: all after the same step); after a
`kill -9` the rerun resumes from the newest finished checkpoint (saves run in
the background, one at a time, and one still being written is lost: up to
2 x checkpoint_every - 1 steps are redone). A checkpoint
that does not read back intact (checkpointing.py checks every array's
checksum) is moved to checkpoints/rejected/ with a warning and the next older
one is used. Non-finite steps: `training.max_bad_steps` (Trainer.fit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
from jax.experimental import multihost_utils
from flax import nnx

from workshop.core.configuration import (DataConfiguration, EvaluationConfiguration, ModelConfiguration,
                                         TrainingConfiguration)
from workshop.core.protocols import InputChecks, LearnsFromTeacher, LikelihoodModel
from workshop.data import sources
from workshop.data.pipeline import BatchPipeline
from workshop.eval.likelihood import evaluate_likelihood
from workshop.models.factories import create_model
from workshop.train import callbacks as cb
from workshop.train.checkpointing import Checkpointer
from workshop.train.periodic_eval import PeriodicEvaluation
from workshop.train.teacher import initial_weights, teacher_source
from workshop.train.trainer import Trainer, TrainState
from workshop.train.two_stage import prepare_two_stage  # also installs the first-stage loader of latent models

__all__ = [
    "ExperimentConfig",
    "RunResult",
    "data_source",
    "load_experiment_config",
    "make_trainer",
    "parse_config",
    "restore_workdir",
    "train_and_evaluate",
]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The validated parts of an ml_collections config file."""

    name: str
    model: ModelConfiguration
    training: TrainingConfiguration
    data: DataConfiguration
    eval: EvaluationConfiguration

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "training": self.training.to_dict(),
            "data": self.data.to_dict(),
            "eval": self.eval.to_dict(),
        }


@dataclasses.dataclass
class RunResult:
    state: TrainState
    trainer: Trainer
    stop_reason: str | None
    final_metrics: dict[str, Any] | None
    workdir: pathlib.Path


def parse_config(config: ml_collections.ConfigDict | dict[str, Any]) -> ExperimentConfig:
    """Validates a config (ConfigDict or dict with model/training/data/eval)."""
    raw = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    unknown = set(raw) - {"name", "model", "training", "data", "eval"}
    if unknown:
        raise ValueError(f"config has unknown sections {sorted(unknown)}; known: name, model, training, data, eval")
    if "model" not in raw:
        raise ValueError("config has no 'model' section")
    cfg = ExperimentConfig(
        name=raw.get("name", raw["model"].get("model_type", "run")),
        # Config files hold list fields as tuples (overridable as --config.model.encoder_features=64,64).
        model=ModelConfiguration.model_validate(_tuples_to_lists(raw["model"])),
        training=TrainingConfiguration.model_validate(raw.get("training", {})),
        data=DataConfiguration.model_validate(raw.get("data", {})),
        eval=EvaluationConfiguration.model_validate(raw.get("eval", {})),
    )
    cfg.model.family  # noqa: B018 - an unknown model_type fails here, naming the known ones
    return cfg


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples_to_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tuples_to_lists(v) for v in value]
    return value


def load_experiment_config(workdir: str | pathlib.Path) -> ExperimentConfig:
    """The configuration a workdir was trained with (its config.json)."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {workdir} a workdir written by //workshop/train:train?")
    return parse_config(json.loads(path.read_text()))


def restore_workdir(
    workdir: str | pathlib.Path, *, step: int | None = None
) -> tuple[ExperimentConfig, Trainer, TrainState, dict[str, Any]]:
    """Rebuilds the model of a workdir from its config.json and restores a checkpoint.

    Returns:
      `(config, trainer, state, checkpoint_record)`.
    """
    workdir = pathlib.Path(workdir)
    cfg = load_experiment_config(workdir)
    if not any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*")):  # creates nothing, unlike orbax
        raise FileNotFoundError(f"{workdir} has no checkpoint yet: train it first (//workshop/train:train "
                                f"--workdir={workdir}), or pass the workdir of a run that wrote one")
    # Sampling runs on one device, whatever mesh trained the checkpoint (it restores onto any).
    cfg = dataclasses.replace(cfg, training=cfg.training.model_copy(update={"parallelism": "none", "num_devices": None}))
    trainer = make_trainer(create_model(cfg.model, rngs=nnx.Rngs(cfg.training.seed)), cfg)
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.training.keep_checkpoints)
    try:
        state, record = checkpointer.restore(trainer.abstract_state(), step=step, model_config=cfg.model.to_dict())
    finally:
        checkpointer.close()
    return cfg, trainer, state, record


def data_source(data: DataConfiguration, *, train: bool) -> dict[str, Any]:
    """The arrays of the configured dataset's split: `{"x": [N, ...], ...}` (see `workshop.data.sources`)."""
    return sources.load_split(data, train=train)


def _train_batches(cfg: ExperimentConfig, source, start_step: int) -> BatchPipeline:
    """This process's rows of every global training batch from `start_step` on (all of them on one host).

    Process p of P reads rows `[p * B/P, (p + 1) * B/P)` of each batch: the
    rows its devices hold in the mesh (devices are ordered by process), so P
    hosts train on the batches of one.
    """
    return BatchPipeline(
        source,
        batch_size=cfg.data.batch_size,
        seed=cfg.data.shuffle_seed,
        shuffle=True,
        drop_remainder=True,
        binarize=cfg.data.binarize,
        prefetch=cfg.data.prefetch,
        start_step=start_step,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        image_dtype="uint8",  # converted on the device, inside the train step
    )


def _test_batches(cfg: ExperimentConfig, source, *, max_batches: int | None) -> Iterator[dict[str, Any]]:
    # Test data under a dynamically binarized training set is binarized once,
    # with a fixed seed, so every evaluation sees the same test set.
    binarize = "none" if cfg.data.binarize == "none" else cfg.eval.test_binarize
    pipeline = BatchPipeline.for_evaluation(
        source, batch_size=cfg.data.eval_batch_size, seed=cfg.data.shuffle_seed, binarize=binarize
    )
    for i, batch in enumerate(pipeline):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def make_trainer(model: nnx.Module | Callable[[], nnx.Module], cfg: ExperimentConfig) -> Trainer:
    """The `Trainer` of `model` (or of a function of no arguments that builds it) with `cfg.training`.

    On a mesh such a function builds the model straight into its shardings
    (sharded construction, see `Trainer`).
    """
    return Trainer(model, cfg.training)


class _PreemptionSync:
    """Several processes: after a SIGTERM to any of them, all stop after the same step.

    Every process must take the same steps (each is a collective, and so is
    the final checkpoint), so the step is agreed by JAX's preemption service:
    its own SIGTERM handler (installed by `jax.distributed.initialize`) tells
    the coordinator, and `multihost_utils.reached_preemption_sync_point`,
    called by every process after every step (a local check until a notice
    arrives), is True on all of them after the same step.
    """

    def on_step_end(self, trainer: Trainer, step: int, state: TrainState) -> None:
        if multihost_utils.reached_preemption_sync_point(step):
            _log.warning("a process received SIGTERM: every process stops after step %d and writes a checkpoint",
                         step)
            trainer.request_stop("interrupted by SIGTERM (JAX preemption notice)")


def _coordinated_stop() -> bool:
    """Whether signals go through JAX's preemption service (several processes, the service on)."""
    if jax.process_count() == 1:
        return False
    if not jax.config.jax_enable_preemption_service:
        _log.warning("jax_enable_preemption_service is off: a signal stops only the process that receives it, "
                     "and the other processes wait for it at their next step")
        return False
    return True


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, *, coordinated: bool = False):
    """SIGINT/SIGTERM ask the trainer to stop after the current step.

    `coordinated` (several processes, `_coordinated_stop()`): SIGTERM is left
    to JAX's preemption service (`_PreemptionSync`), and SIGINT is passed on to
    it as a SIGTERM of this process, so that every process stops after the
    same step.
    """
    passed_on = False

    def handler(signum, frame):
        nonlocal passed_on
        name = signal.Signals(signum).name
        if trainer.stop_reason is not None or passed_on:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if coordinated:
            passed_on = True
            _log.warning("%s received: passed on to JAX's preemption service as SIGTERM; every process stops "
                         "after the same step and writes a checkpoint", name)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _log.warning("%s received: finishing the current step and writing a checkpoint", name)
        trainer.request_stop(f"interrupted by {name}")

    # A Python SIGTERM handler would replace JAX's (C++) one, which it cannot chain to.
    signals = (signal.SIGINT,) if coordinated else (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _data_order(cfg: ExperimentConfig, source: dict[str, Any]) -> dict[str, Any]:
    """What, besides the checkpoint's `data_step`, fixes the order and bits of the training batches."""
    d = cfg.data
    return {"dataset": d.dataset, "num_examples": int(len(source["x"])), "batch_size": d.batch_size,
            "shuffle_seed": d.shuffle_seed, "binarize": d.binarize}


def _warn_if_data_order_changed(saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if saved is None:  # a checkpoint from before the data order was recorded
        return
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
             for k in sorted(now) if saved.get(k) != now.get(k)]
    if diffs:
        _log.warning("the training data order differs from the checkpoint's (%s): the resumed run continues at "
                     "its data_step but will not reproduce an uninterrupted run", "; ".join(diffs))


def train_and_evaluate(
    config: ml_collections.ConfigDict | dict[str, Any] | ExperimentConfig,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | None = None,
    callbacks: Sequence[Any] = (),
) -> RunResult:
    """Trains (or resumes) the configured model in `workdir`, then evaluates it.

    Args:
      config: an ml_collections config (see workshop/train/configs) or its parse.
      workdir: output directory; an existing one with checkpoints is resumed.
      data_dir: overrides `config.data.data_dir`.
      callbacks: extra callbacks, run after the built-in ones.

    Returns:
      The final state, the trainer, why training stopped early (or None), and
      the final test metrics (None when interrupted or disabled).
    """
    if isinstance(config, ExperimentConfig):
        cfg = config
        if data_dir is not None:
            cfg = dataclasses.replace(cfg, data=cfg.data.model_copy(update={"data_dir": data_dir}))
    else:
        if data_dir is not None:  # Before validation: datasets read from files need data.data_dir.
            raw = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
            config = {**raw, "data": {**raw.get("data", {}), "data_dir": data_dir}}
        cfg = parse_config(config)
    workdir = pathlib.Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"workdir {workdir} is a file: pass a directory (a new one or a run's workdir)")

    train_source = data_source(cfg.data, train=True)
    test_source = data_source(cfg.data, train=False)
    cfg = prepare_two_stage(cfg, workdir, train_source)  # a second stage: its first stage resolved and recorded

    warm_start = None  # reflow's student: its teacher's weights (set below)

    def build_model() -> nnx.Module:
        built = create_model(cfg.model, rngs=nnx.Rngs(cfg.training.seed))
        if warm_start is not None:
            nnx.update(built, warm_start)
        return built

    # On a mesh the trainer creates the parameters straight into their shardings
    # (no device holds a whole FSDP-sharded array); here the model is only needed abstractly.
    on_mesh = cfg.training.parallelism != "none"
    model = nnx.eval_shape(build_model) if on_mesh else build_model()
    if isinstance(model, InputChecks):  # Token models: every id inside the vocabulary, before any step.
        model.check_inputs(train_source["x"])
        model.check_inputs(test_source["x"])
    if isinstance(model, LearnsFromTeacher) and model.teacher_workdir:  # reflow: the teacher's pairs
        train_source, teacher = teacher_source(model, workdir, train_source, seed=cfg.training.seed,
                                               restore=restore_workdir)
        if model.init_from_teacher:  # a resumed run reads its checkpoint instead
            warm_start = initial_weights(model, teacher)
            if not on_mesh:
                nnx.update(model, warm_start)
    trainer = make_trainer(build_model if on_mesh else model, cfg)
    data_order = _data_order(cfg, train_source)
    # Created only now: a command that fails before (config, data, model) leaves nothing behind.
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.training.keep_checkpoints,
                                metadata={"data_order": data_order}, remove_unfinished_saves=True)

    resume = checkpointer.latest_step() is not None
    # A resumed run reads its checkpoint straight into the state's layout (sharded on a mesh).
    state = trainer.abstract_state() if resume else trainer.init_state()
    start_step = 0
    if resume:
        # The newest checkpoint that reads back intact; rejected (corrupted) ones are
        # moved to checkpoints/rejected/ with a warning naming their step.
        state, record = checkpointer.restore(state, model_config=cfg.model.to_dict(), set_aside_rejected=True)
        start_step = int(record.get("data_step", record["step"]))
        _warn_if_data_order_changed(record.get("data_order"), data_order)
        _log.info("resuming %s from step %d", workdir, start_step)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")

    t = cfg.training
    # On several hosts every process trains and checkpoints (orbax coordinates the
    # sharded writes); only process 0 writes logs, metrics and reports.
    lead = jax.process_index() == 0
    writers = [cb.ProgressBar(t.num_steps, disable=not t.progress_bar), cb.MetricsWriter(workdir, tensorboard=t.tensorboard)]
    writers = writers if lead else []
    callbacks_list: list[Any] = [
        *writers,
        cb.CheckpointCallback(checkpointer, t.checkpoint_every, metadata={"model_config": cfg.model.to_dict()}),
    ]
    # Every process samples: it is one computation over the whole mesh (under FSDP it
    # all-gathers the weights), which would wait forever for processes that skip it.
    callbacks_list.append(cb.SampleGrid(workdir, t.sample_every, num_samples=t.num_samples, seed=t.seed, write=lead))
    if t.early_stopping_patience is not None:
        callbacks_list.append(cb.EarlyStopping(t.early_stopping_metric, patience=t.early_stopping_patience))
    if cfg.eval.every_steps or cfg.eval.sample_quality_every:
        callbacks_list.append(PeriodicEvaluation(
            lambda: _test_batches(cfg, test_source, max_batches=t.eval_batches),
            sinks=writers,  # the progress bar and the metrics writer
            every_steps=cfg.eval.every_steps, likelihood_samples=cfg.eval.likelihood_samples,
            sample_quality_every=cfg.eval.sample_quality_every,
            sample_quality_samples=cfg.eval.sample_quality_samples,
            dataset=cfg.data.dataset, data_dir=cfg.data.data_dir, seed=t.seed,
        ))

    coordinated = _coordinated_stop()
    if coordinated:
        callbacks_list.append(_PreemptionSync())
    callbacks = [*callbacks_list, *callbacks]
    train_batches = iter(_train_batches(cfg, train_source, start_step))
    eval_batches = lambda: _test_batches(cfg, test_source, max_batches=t.eval_batches)  # noqa: E731
    try:
        with _stop_on_signals(trainer, coordinated=coordinated):
            state = trainer.fit(state, train_batches, callbacks=callbacks, eval_batches=eval_batches,
                                checkpointer=checkpointer)
    finally:
        checkpointer.close()

    final = None
    interrupted = trainer.stop_reason is not None and trainer.stop_reason.startswith("interrupted")
    if cfg.eval.final_eval and not interrupted and isinstance(model, LikelihoodModel):
        final = evaluate_likelihood(
            trainer.model_from_state(state),
            _test_batches(cfg, test_source, max_batches=cfg.eval.max_test_batches),
            num_samples=cfg.eval.likelihood_samples,
            seed=t.seed,
        )
        final["step"] = int(state.step)
        if cfg.eval.likelihood_samples is not None:
            final["likelihood_samples"] = cfg.eval.likelihood_samples
        if cfg.data.binarize != "none":
            final["test_binarize"] = cfg.eval.test_binarize
        if jax.process_index() == 0:
            (workdir / "final_metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
    return RunResult(state=state, trainer=trainer, stop_reason=trainer.stop_reason, final_metrics=final, workdir=workdir)
