"""End to end on tiny IDX fixtures: train, interrupt with SIGINT, resume, sample, refuse."""

import json
import os
import pathlib

import jax
import numpy as np
from absl.testing import absltest

from workshop.core import dataset_registry
from workshop.train import experiment, train_binary_testing
from workshop.train.checkpointing import CheckpointMismatchError
from workshop.train.configs import edm as edm_config
from workshop.train.configs import flow_matching as flow_matching_config
from workshop.train.configs import vae as vae_config
from workshop.train.sampling import restore_workdir, write_samples


def _config(data_dir):
    config = vae_config.get_config()
    config.model.backbone_type = "mlp"
    config.model.latent_dim = 4
    config.model.encoder_features = [32]
    config.model.decoder_features = [32]
    config.training.num_steps = 6
    config.training.log_every = 1
    config.training.eval_every = 3
    config.training.eval_batches = 1
    config.training.checkpoint_every = 3
    config.training.sample_every = 3
    config.training.num_samples = 4
    config.training.progress_bar = False
    config.training.optimizer.warmup_steps = 2
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.data.data_dir = str(data_dir)
    config.data.prefetch = 0
    config.eval.likelihood_samples = 8
    return config




class ExperimentTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = pathlib.Path(absltest.get_default_test_tmpdir()) / "fashion"
        cls.data_dir.mkdir(parents=True, exist_ok=True)
        train_binary_testing.write_fixture_dataset(cls.data_dir)

    def test_end_to_end_outputs(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        result = experiment.train_and_evaluate(_config(self.data_dir), workdir)
        self.assertIsNone(result.stop_reason)
        self.assertEqual(int(result.state.step), 6)
        self.assertEqual(sorted(train_binary_testing.train_losses(workdir)), [1, 2, 3, 4, 5, 6])
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        self.assertEqual([r["step"] for r in records if r["split"] == "eval"], [3, 6])
        self.assertTrue((workdir / "samples" / "step_0000006.png").exists())
        self.assertTrue(list((workdir / "tensorboard").glob("events.*")))
        self.assertEqual(sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), [3, 6])
        final = json.loads((workdir / "final_metrics.json").read_text())
        self.assertEqual(final["num_examples"], 32)
        # The importance-weighted bound is at least as tight as the ELBO.
        self.assertLessEqual(final["nll"], final["negative_elbo"] + 1e-3)
        self.assertEqual(experiment.load_experiment_config(workdir).model.latent_dim, 4)

    def test_interrupt_then_resume_equals_uninterrupted(self):
        config = _config(self.data_dir)
        full_dir = self.create_tempdir().full_path
        full = experiment.train_and_evaluate(config, full_dir)

        workdir = self.create_tempdir().full_path
        cut = experiment.train_and_evaluate(config, workdir, callbacks=[train_binary_testing.SigintAt(2)])
        self.assertEqual(cut.stop_reason, "interrupted by SIGINT")
        self.assertEqual(int(cut.state.step), 2)
        self.assertIsNone(cut.final_metrics)
        self.assertIn("2", os.listdir(os.path.join(workdir, "checkpoints")))

        resumed = experiment.train_and_evaluate(config, workdir)
        self.assertEqual(int(resumed.state.step), 6)
        self.assertEqual(train_binary_testing.train_losses(workdir), train_binary_testing.train_losses(full_dir))
        jax.tree.map(np.testing.assert_array_equal, resumed.state.params, full.state.params)

        # The same command on a finished run trains no further and evaluates again.
        again = experiment.train_and_evaluate(config, workdir)
        self.assertEqual(int(again.state.step), 6)
        self.assertEqual(again.final_metrics["num_examples"], resumed.final_metrics["num_examples"])

    def test_flow_matching_and_edm_resume_exactly(self):
        # Their time and noise draws come from the run's seed and step: a resumed run redraws the same ones.
        for module in (flow_matching_config, edm_config):
            config = train_binary_testing.shrink_run(module.get_config("dit"), self.data_dir, num_steps=4,
                                                     patch_size=7, hidden_size=16, depth=1, num_heads=2)
            full_dir = self.create_tempdir().full_path
            full = experiment.train_and_evaluate(config, full_dir)
            workdir = self.create_tempdir().full_path
            cut = experiment.train_and_evaluate(config, workdir, callbacks=[train_binary_testing.SigintAt(2)])
            self.assertEqual(int(cut.state.step), 2)
            resumed = experiment.train_and_evaluate(config, workdir)
            self.assertEqual(int(resumed.state.step), 4)
            self.assertEqual(train_binary_testing.train_losses(workdir), train_binary_testing.train_losses(full_dir))
            jax.tree.map(np.testing.assert_array_equal, resumed.state.params, full.state.params)

    def test_sample_from_workdir(self):
        workdir = self.create_tempdir().full_path
        experiment.train_and_evaluate(_config(self.data_dir), workdir)
        cfg, trainer, state, record = restore_workdir(workdir)
        self.assertEqual(record["step"], 6)
        paths = write_samples(trainer, state, os.path.join(workdir, "out"), num_samples=5, seed=3)
        samples = np.load(paths["npy"])
        self.assertEqual(samples.shape, (5, 28, 28, 1))
        self.assertTrue(((samples >= 0) & (samples <= 1)).all())
        self.assertTrue(paths["png"].exists())

    def test_a_dataset_registered_in_a_test_trains(self):
        yy, xx = np.mgrid[:28, :28]
        blobs = {}
        for train, n in ((True, 48), (False, 24)):
            centres = np.random.default_rng(int(train)).uniform(6, 22, size=(n, 2, 1, 1))
            images = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 30.0) * 255
            blobs[train] = {"x": images[..., None].astype(np.uint8)}  # [N, 28, 28, 1]
        dataset_registry.register_dataset("test-blobs", modality="image", loader=lambda data, train: blobs[train])
        self.addCleanup(dataset_registry.unregister_dataset, "test-blobs")
        config = _config(self.data_dir)
        config.data.dataset = "test-blobs"
        workdir = pathlib.Path(self.create_tempdir().full_path)
        result = experiment.train_and_evaluate(config, workdir)
        self.assertEqual(int(result.state.step), 6)
        self.assertEqual(result.final_metrics["num_examples"], 24)  # the loader's test split, not the fixture's 32
        self.assertEqual(experiment.load_experiment_config(workdir).data.dataset, "test-blobs")

    def test_a_workdir_with_the_flat_data_fields_of_older_runs_restores(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        experiment.train_and_evaluate(_config(self.data_dir), workdir)
        saved = json.loads((workdir / "config.json").read_text())
        sections = {"image": saved["data"].pop("image"), **{k: saved["data"].pop(k) for k in ("text", "audio", "protein")}}
        self.assertEqual(sections, {"image": {"binarize": "dynamic"}, "text": None, "audio": None, "protein": None})
        # config.json as written before the sections: every field flat.
        saved["data"].update(binarize="dynamic", sequence_length=None, vocab_size=8192, tokenizer_path=None,
                             sample_rate=16000, quantization_channels=256, subset="train-clean-100",
                             test_subset="test-clean", window_stride=None, protein_frame="centred",
                             coordinate_scale=1.0, coordinate_noise=0.0, noise_copies=1)
        (workdir / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
        cfg, _, state, record = restore_workdir(workdir)
        self.assertEqual((record["step"], int(state.step)), (6, 6))
        self.assertEqual((cfg.data.image.binarize, cfg.data.binarize, cfg.data.text), ("dynamic", "dynamic", None))
        resumed = experiment.train_and_evaluate(_config(self.data_dir), workdir)  # the finished run, evaluated again
        self.assertEqual(int(resumed.state.step), 6)

    def test_checkpoint_of_another_config_is_refused_by_name(self):
        workdir = self.create_tempdir().full_path
        experiment.train_and_evaluate(_config(self.data_dir), workdir)
        other = _config(self.data_dir)
        other.model.latent_dim = 6
        with self.assertRaises(CheckpointMismatchError) as ctx:
            experiment.train_and_evaluate(other, workdir)
        self.assertIn("latent_dim: checkpoint 4 vs now 6", str(ctx.exception))
        # Nothing was lost: the original configuration still restores.
        self.assertEqual(restore_workdir(workdir)[3]["step"], 6)

    def test_missing_dataset_names_the_path(self):
        empty = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, empty):
            experiment.train_and_evaluate(_config(empty), self.create_tempdir().full_path)

    def test_config_errors(self):
        with self.assertRaisesRegex(ValueError, "unknown sections"):
            experiment.parse_config({"model": {"model_type": "vae"}, "trainig": {}})
        with self.assertRaisesRegex(ValueError, "iwae_sample"):
            experiment.parse_config({"model": {"model_type": "vae"}, "eval": {"iwae_sample": 3}})


if __name__ == "__main__":
    absltest.main()
