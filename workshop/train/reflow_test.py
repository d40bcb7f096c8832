"""Reflow (Liu et al. 2023): a flow trained on its teacher's (noise, sample) pairs has straighter paths.

The model test trains a small flow-matching teacher on two prototype images,
then a student on the teacher's pairs, and compares one Euler step of each
with the teacher's accurate ODE solution from the same noise: the student's
single step lands far closer (the teacher's lands near the mean of the
prototypes). The run test goes through the train binary's code path: the
reflow config reads the teacher's workdir, caches the pairs, resumes with
them, and refuses a changed teacher.
"""

import json
import pathlib
import types

import jax
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core.configuration import ModelConfiguration, TrainingConfiguration
from workshop.models.diffusion import FlowMatching
from workshop.models.factories import create_model
from workshop.train import experiment, train_binary_testing
from workshop.train import teacher as teacher_lib
from workshop.train.configs import flow_matching as flow_matching_config
from workshop.train.configs import reflow as reflow_config
from workshop.train.trainer import Trainer

_SHAPE = (8, 8, 1)


def _model(**params) -> FlowMatching:
    parameters = dict(patch_size=4, hidden_size=32, depth=2, num_heads=2, dequantize=False, time_sampling="uniform",
                      sampler="heun", sampling_steps=16, **params)
    return create_model(ModelConfiguration(model_type="flow_matching", input_shape=_SHAPE, backbone_type="dit",
                                           parameters=parameters), rngs=nnx.Rngs(0))


def _train(model, source, steps=400, seed=0):
    trainer = Trainer(model, TrainingConfiguration(num_steps=steps, ema_decay=None, log_every=steps,
                                                   progress_bar=False,
                                                   optimizer=dict(learning_rate=2e-3, schedule="constant")))
    rng = np.random.default_rng(seed)
    n = len(source["x"])

    def batches():
        while True:
            idx = rng.integers(0, n, 64)
            yield {k: v[idx] for k, v in source.items()}

    state = trainer.fit(trainer.init_state(), batches())
    return trainer.model_from_state(state)


def _prototypes(n: int) -> np.ndarray:
    """Two images, left or right half lit, with a little noise: `[n, 8, 8, 1]` in [0, 1]."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, *_SHAPE), np.float32)
    left = rng.random(n) < 0.5
    images[left, :, :4] = 1.0
    images[~left, :, 4:] = 1.0
    return np.clip(images + 0.02 * rng.standard_normal(images.shape), 0.0, 1.0).astype(np.float32)


class ReflowModelTest(absltest.TestCase):
    def test_one_euler_step_of_the_student_is_closer_to_the_teacher_ode(self):
        teacher = _train(_model(), {"x": _prototypes(2048)})
        student = _model(teacher_workdir="(in memory)", reflow_pairs=1024)
        pairs = student.teacher_data(teacher, {"x": _prototypes(8)}, seed=1)
        self.assertEqual((pairs["x"].shape, pairs["noise"].shape), ((1024, *_SHAPE), (1024, *_SHAPE)))
        student = _train(student, pairs, seed=1)

        noise = teacher.prior_noise(256, jax.random.PRNGKey(7))
        solve = lambda m, sampler, steps: np.asarray(  # noqa: E731
            m.solve(noise, labels=None, sampler=sampler, steps=steps)[0])
        reference = solve(teacher, "heun", 32)
        teacher_error = np.mean((solve(teacher, "euler", 1) - reference) ** 2)
        student_error = np.mean((solve(student, "euler", 1) - reference) ** 2)
        print(f"one Euler step vs the teacher's ODE: teacher {teacher_error:.4f}, reflowed student {student_error:.4f}")
        self.assertLess(student_error, 0.5 * teacher_error)

    def test_a_teacher_of_another_kind_is_refused(self):
        student = _model(teacher_workdir="runs/x")
        other = create_model(ModelConfiguration(model_type="vae", input_shape=_SHAPE, latent_dim=2,
                                                encoder_features=[8], decoder_features=[8]), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "teacher_workdir runs/x: reflow needs a flow_matching teacher, got VAE"):
            student.teacher_data(other, {"x": _prototypes(4)}, seed=0)
        wider = create_model(ModelConfiguration(model_type="flow_matching", input_shape=(8, 4, 1), backbone_type="dit",
                                                parameters=dict(patch_size=4, hidden_size=8, depth=1, num_heads=2)),
                             rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"input_shape \(8, 4, 1\), this model \(8, 8, 1\)"):
            student.teacher_data(wider, {"x": _prototypes(4)}, seed=0)

    def test_a_teacher_with_another_network_cannot_initialise_the_student(self):
        student = _model(teacher_workdir="runs/x")
        wider = create_model(ModelConfiguration(model_type="flow_matching", input_shape=_SHAPE, backbone_type="dit",
                                                parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2)),
                             rngs=nnx.Rngs(0))
        upstream = types.SimpleNamespace(model=wider, workdir=pathlib.Path("runs/x"))
        with self.assertRaisesRegex(ValueError, r"init_from_teacher: the teacher in runs/x has another network "
                                                r"\(\d+ parameters\) than this model \(\d+\).*init_from_teacher=False"):
            teacher_lib.initial_weights(student, upstream)
        same = teacher_lib.initial_weights(student, types.SimpleNamespace(model=_model(), workdir=None))
        self.assertEqual(jax.tree.structure(same), jax.tree.structure(nnx.state(student, nnx.Param)))


def _tiny(config, data_dir, num_steps):
    config.model.backbone_type = "dit"
    return train_binary_testing.shrink_run(config, data_dir, num_steps=num_steps, patch_size=7, hidden_size=16,
                                           depth=1, num_heads=2, sampling_steps=2)


class ReflowRunTest(absltest.TestCase):
    def test_reflow_config_reads_caches_resumes_and_refuses_a_changed_teacher(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        data_dir = train_binary_testing.write_fixture_dataset(root / "fashion")
        teacher_dir, student_dir = root / "fm", root / "reflow"
        experiment.train_and_evaluate(_tiny(flow_matching_config.get_config(), data_dir, 2), teacher_dir)

        def student(num_steps, teacher=teacher_dir):
            config = _tiny(reflow_config.get_config(), data_dir, num_steps)
            config.model.parameters.update(teacher_workdir=str(teacher), reflow_pairs=16, teacher_steps=2)
            config.training.seed = 1  # random weights unlike the teacher's, but it starts from the teacher's
            return experiment.train_and_evaluate(config, student_dir)

        with self.assertRaisesRegex(FileNotFoundError, f"teacher_workdir {root / 'none'}: .*config.json does not "
                                                       "exist"):
            student(2, teacher=root / "none")
        self.assertFalse(student_dir.exists())  # a failed start leaves nothing behind

        result = student(2)
        self.assertIsNone(result.stop_reason)
        # The student started from the teacher's EMA weights (Liu et al.): two Adam steps of
        # learning rate 1e-3 from them move no weight by more than about 2e-3.
        _, teacher_trainer, teacher_state, _ = experiment.restore_workdir(teacher_dir)
        start = nnx.state(teacher_trainer.model_from_state(teacher_state), nnx.Param)
        now = nnx.state(result.trainer.model_from_state(result.state), nnx.Param)
        drift = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(now)))
        self.assertLess(drift, 3e-3)
        with np.load(student_dir / "teacher_data.npz") as pairs:
            self.assertEqual(pairs["x"].shape, (16, 28, 28, 1))
            self.assertEqual(pairs["noise"].shape, (16, 28, 28, 1))
            cached = pairs["x"].copy()
        made_by = json.loads((student_dir / "teacher_data.json").read_text())
        self.assertEqual((made_by["teacher_workdir"], made_by["teacher_step"]), (str(teacher_dir), 2))
        self.assertEqual(made_by["teacher_checkpoint"], str(teacher_dir / "checkpoints" / "2"))
        self.assertLen(made_by["teacher_hash"], 64)

        # Resuming reuses the cached pairs (the teacher is not asked again).
        resumed = student(4)
        self.assertEqual(int(resumed.state.step), 4)
        with np.load(student_dir / "teacher_data.npz") as pairs:
            np.testing.assert_array_equal(pairs["x"], cached)

        # A teacher trained further is another teacher: its pairs would differ.
        experiment.train_and_evaluate(_tiny(flow_matching_config.get_config(), data_dir, 4), teacher_dir)
        with self.assertRaisesRegex(ValueError, "the teacher .* has changed since .*teacher_data.npz was made from "
                                                "it: the recorded checkpoint .*checkpoints/2 had weights SHA-256 "
                                                "[0-9a-f]{16}.*, .*checkpoints/4 has [0-9a-f]{16}"):
            student(6)


if __name__ == "__main__":
    absltest.main()
