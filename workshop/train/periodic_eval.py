"""A training callback that evaluates the test likelihood and sample quality every N steps.

`PeriodicEvaluation` implements the callback protocol of `Trainer.fit`
(callbacks.py). Every `every_steps` steps it averages the EMA model's
`log_prob` over the test batches (`workshop.eval.evaluate_likelihood`:
`test_nll` in nats per example, `test_nll_bits_per_dim`, and
`test_negative_elbo*` where the model has an ELBO), and every
`sample_quality_every` steps it draws `sample_quality_samples` samples and
scores them against the test set with the feature network
(`workshop.eval.sample_quality`: `fid`, `kid`, `kid_std`, `precision`,
`recall`, `density`, `coverage`, `sample_quality_samples`). The values go to
its sinks' `on_eval(trainer, step, logs)`, which in `train_and_evaluate` are
the metrics writer (metrics.jsonl, split "eval", and TensorBoard) and the
progress bar.

Sample quality needs the feature network's weights
(`tools/bazel run //workshop/eval:train_feature_net`); without them the run
goes on, logs one warning naming that command, and reports likelihoods only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from workshop.core.protocols import LikelihoodModel
from workshop.eval import feature_net as feature_net_lib
from workshop.eval import quality as quality_lib
from workshop.eval.likelihood import evaluate_likelihood

__all__ = ["PeriodicEvaluation"]

_log = logging.getLogger(__name__)


class PeriodicEvaluation:
    """Test likelihood every `every_steps` and sample quality every `sample_quality_every` steps.

    Args:
      test_batches: returns a fresh pass over the test batches (`{"x", "label"}`).
      sinks: objects with `on_eval(trainer, step, logs)` that receive the values.
      every_steps: likelihood interval in steps (None: never); skipped for
        models without `log_prob` (GANs).
      likelihood_samples: `num_samples` of `log_prob` (None: the model's default).
      sample_quality_every: sample-quality interval in steps (None: never).
      sample_quality_samples: samples per evaluation (below
        `MIN_RECOMMENDED_SAMPLES` the scores come with a warning in the log).
      dataset: the reference dataset of the sample-quality metrics.
      data_dir: its folder (None: the default search).
      seed: likelihood estimator and sampling seed (the same at every step, so
        changes between evaluations are the model's).
      sample_batch_size: samples per `generate` call.
      feature_net / reference: the feature network and reference features
        (default: loaded from the cache on first use).
    """

    def __init__(
        self,
        test_batches: Callable[[], Iterable[dict[str, Any]]],
        *,
        sinks: Sequence[Any] = (),
        every_steps: int | None = None,
        likelihood_samples: int | None = None,
        sample_quality_every: int | None = None,
        sample_quality_samples: int = 1000,
        dataset: str = "fashion_mnist",
        data_dir: str | None = None,
        seed: int = 0,
        sample_batch_size: int = 250,
        feature_net: Any = None,
        reference: dict[str, np.ndarray] | None = None,
    ):
        for name, value in (("every_steps", every_steps), ("sample_quality_every", sample_quality_every)):
            if value is not None and value < 1:
                raise ValueError(f"config.eval.{name} must be a positive number of steps or None, got {value}")
        if sample_quality_samples < 2:
            raise ValueError(f"config.eval.sample_quality_samples must be >= 2, got {sample_quality_samples}")
        self.test_batches = test_batches
        self.sinks = list(sinks)
        self.every_steps = every_steps
        self.likelihood_samples = likelihood_samples
        self.sample_quality_every = sample_quality_every
        self.sample_quality_samples = sample_quality_samples
        self.dataset = dataset
        self.data_dir = data_dir
        self.seed = seed
        self.sample_batch_size = sample_batch_size
        self._net = feature_net
        self._reference = reference
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_train_begin(self, trainer, state) -> None:
        if self.sample_quality_every is None:
            return
        if self.dataset not in quality_lib.REFERENCE_DATASETS:
            _log.warning("sample quality is only defined for %s, not %r: reporting likelihoods only",
                         ", ".join(quality_lib.REFERENCE_DATASETS), self.dataset)
            self.sample_quality_every = None
            return
        if self._net is None:
            try:
                self._net = feature_net_lib.load_feature_net()
            except feature_net_lib.FeatureNetworkMissingError as err:
                _log.warning("no sample quality during training: %s", err)
                self.sample_quality_every = None

    def _likelihood(self, trainer, state) -> dict[str, float]:
        model = trainer.model_from_state(state)
        if not isinstance(model, LikelihoodModel):
            return {}
        result = evaluate_likelihood(model, self.test_batches(), num_samples=self.likelihood_samples, seed=self.seed)
        return {f"test_{k}": float(v) for k, v in result.items() if k != "num_examples"}

    def _sample_quality(self, trainer, state) -> dict[str, float]:
        n, size = self.sample_quality_samples, min(self.sample_batch_size, self.sample_quality_samples)
        samples = np.concatenate([trainer.generate(state, size, seed=self.seed + i) for i in range(-(-n // size))])[:n]
        if self._reference is None:
            self._reference = quality_lib.reference_features(self.dataset, net=self._net, data_dir=self.data_dir)
        scores = quality_lib.sample_quality(samples, dataset=self.dataset, num_samples=None, seed=self.seed,
                                                   net=self._net, reference=self._reference)
        logs = {k: float(scores[k]) for k in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")}
        logs["sample_quality_samples"] = float(scores["num_samples"])
        return logs

    def on_step_end(self, trainer, step, state) -> None:
        logs: dict[str, float] = {}
        if self.every_steps and step % self.every_steps == 0:
            logs.update(self._likelihood(trainer, state))
        if self.sample_quality_every and step % self.sample_quality_every == 0:
            logs.update(self._sample_quality(trainer, state))
        if logs:
            self.history.append((step, logs))
            for sink in self.sinks:
                sink.on_eval(trainer, step, logs)
