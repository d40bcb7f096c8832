"""Two-stage runs end to end on tiny fixtures: train a first stage, then each second-stage config on it."""

import json
import pathlib
import shutil

import jax
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core.configuration import ModelConfiguration, TrainingConfiguration
from workshop.models.factories import create_model
from workshop.models.latent import LatentModel, StageOneChangedError
from workshop.train import experiment, train_binary_testing
from workshop.train.configs import kl_autoencoder, latent_ddpm, vqvae, vqvae_pixelcnn_prior, vqvae_transformer_prior
from workshop.train.sampling import restore_workdir, write_samples
from workshop.train.trainer import Trainer


def _tiny(config, data_dir, *, steps=2):
    t = config.training
    t.num_steps, t.log_every, t.eval_every, t.eval_batches = steps, 1, steps, 1
    t.checkpoint_every, t.sample_every, t.num_samples = steps, None, 4
    t.progress_bar, t.tensorboard, t.optimizer.warmup_steps = False, False, 1
    config.data.batch_size, config.data.eval_batch_size, config.data.prefetch = 8, 16, 0
    config.data.data_dir = str(data_dir)
    config.eval.max_test_batches = 1
    return config


def _kl_autoencoder(data_dir, seed=0):
    config = _tiny(kl_autoencoder.get_config(), data_dir)
    config.model.encoder_features, config.model.decoder_features = (8, 8), (8, 8)
    config.training.seed = seed
    return config


def _vqvae(data_dir):
    config = _tiny(vqvae.get_config(), data_dir)
    config.model.encoder_features, config.model.decoder_features, config.model.latent_dim = (8, 8), (8, 8), 4
    config.model.parameters.num_embeddings = 16
    return config


def _latent_ddpm(data_dir, autoencoder_workdir):
    config = _tiny(latent_ddpm.get_config(), data_dir)
    config.model.parameters.autoencoder_workdir = str(autoencoder_workdir)
    prior = config.model.parameters.prior
    prior.num_timesteps = 20
    prior.parameters.hidden_size, prior.parameters.depth, prior.parameters.num_heads = 16, 1, 2
    prior.parameters.sampling_steps = 4
    config.eval.likelihood_samples = 2
    return config


def _code_prior(module, data_dir, autoencoder_workdir):
    config = _tiny(module.get_config(), data_dir)
    config.model.parameters.autoencoder_workdir = str(autoencoder_workdir)
    prior = config.model.parameters.prior.parameters
    if config.model.parameters.prior.model_type == "pixelcnn":
        prior.num_layers, prior.features = 2, 8
    else:
        prior.num_layers, prior.embed_dim, prior.num_heads = 1, 16, 2
    return config


def _write_cifar10_binary(root: pathlib.Path, per_batch=4, test=8):
    """The official binary layout: records of a label byte and 3072 planar image bytes."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", test)]:
        records = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1)
        (folder / name).write_bytes(records.astype(np.uint8).tobytes())
    return root


def _size(tree):
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(tree))


class TwoStageTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = pathlib.Path(absltest.get_default_test_tmpdir())
        cls.data_dir = train_binary_testing.write_fixture_dataset(root / "fashion")
        cls.kl_dir = root / "kl_autoencoder"
        experiment.train_and_evaluate(_kl_autoencoder(cls.data_dir), cls.kl_dir)
        cls.vq_dir = root / "vqvae"
        experiment.train_and_evaluate(_vqvae(cls.data_dir), cls.vq_dir)

    def test_latent_ddpm_trains_records_its_first_stage_samples_and_resumes(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        config = _latent_ddpm(self.data_dir, self.kl_dir)
        result = experiment.train_and_evaluate(config, workdir)
        self.assertEqual(int(result.state.step), 2)
        params = json.loads((workdir / "config.json").read_text())["model"]["parameters"]
        self.assertEqual(params["autoencoder_checkpoint"], str(self.kl_dir / "checkpoints" / "2"))
        self.assertLen(params["autoencoder_hash"], 64)
        # The recorded scale gives the training codes unit variance.
        model = result.trainer.model_from_state(result.state)
        x = experiment.data_source(experiment.parse_config(config).data, train=True)["x"].astype(np.float32) / 255
        codes = np.asarray(model.autoencoder.encode_codes(x))
        self.assertAlmostEqual(float(np.std(codes * params["latent_scale"])), 1.0, places=3)
        self.assertTrue(np.isfinite(result.final_metrics["nll"]))
        self.assertIn("through the decoder", model.likelihood_estimate)
        # Only the prior is trained: its parameters are the whole of params and EMA.
        self.assertEqual(_size(result.state.params), _size(nnx.state(model.prior, nnx.Param)))
        self.assertEqual(_size(result.state.ema_params), _size(result.state.params))
        # The sample binary's path: rebuilt from config.json, the first stage found and checked.
        cfg, trainer, state, record = restore_workdir(workdir)
        self.assertEqual(record["model_config"]["parameters"]["autoencoder_hash"], params["autoencoder_hash"])
        paths = write_samples(trainer, state, workdir / "generated", num_samples=3, options={"steps": 2})
        samples = np.load(paths["npy"])
        self.assertEqual(samples.shape, (3, 28, 28, 1))
        self.assertTrue(np.all((samples >= 0) & (samples <= 1)))
        # Resume to more steps from the same first stage.
        config.training.num_steps = 3
        self.assertEqual(int(experiment.train_and_evaluate(config, workdir).state.step), 3)

    @parameterized.named_parameters(("pixelcnn", vqvae_pixelcnn_prior), ("transformer", vqvae_transformer_prior))
    def test_code_prior_trains_on_the_vqvae_codes_and_samples(self, module):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        result = experiment.train_and_evaluate(_code_prior(module, self.data_dir, self.vq_dir), workdir)
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        bits = [r["prior_nll_bits_per_dim"] for r in records if "prior_nll_bits_per_dim" in r]
        self.assertNotEmpty(bits)
        # Exact bits per code: at most log2(16) + what the untrained softmax wastes, and positive.
        self.assertTrue(all(0 < b < 10 for b in bits))
        params = json.loads((workdir / "config.json").read_text())["model"]["parameters"]
        self.assertNotIn("latent_scale", {k for k, v in params.items() if v is not None})
        self.assertTrue(np.isfinite(result.final_metrics["nll"]))
        _, trainer, state, _ = restore_workdir(workdir)
        samples = trainer.generate(state, 2)
        self.assertEqual(samples.shape, (2, 28, 28, 1))

    def test_a_changed_first_stage_is_refused(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        first, second = root / "first", root / "second"
        shutil.copytree(self.kl_dir, first)
        config = _latent_ddpm(self.data_dir, first)
        experiment.train_and_evaluate(config, second)
        # The first stage retrained (another seed) into the same workdir and step.
        shutil.rmtree(first)
        experiment.train_and_evaluate(_kl_autoencoder(self.data_dir, seed=1), first)
        with self.assertRaisesRegex(StageOneChangedError, "has changed since"):
            restore_workdir(second)
        config.training.num_steps = 3
        with self.assertRaisesRegex(StageOneChangedError, "has changed since"):
            experiment.train_and_evaluate(config, second)

    def test_clear_errors_for_a_bad_first_stage(self):
        empty = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, "no config.json"):
            experiment.train_and_evaluate(_latent_ddpm(self.data_dir, empty), self.create_tempdir().full_path)
        no_checkpoint = pathlib.Path(self.create_tempdir().full_path)
        shutil.copy(self.kl_dir / "config.json", no_checkpoint / "config.json")
        with self.assertRaisesRegex(FileNotFoundError, "has no checkpoint yet"):
            experiment.train_and_evaluate(_latent_ddpm(self.data_dir, no_checkpoint),
                                          self.create_tempdir().full_path)
        # A second stage is not an autoencoder.
        second = pathlib.Path(self.create_tempdir().full_path)
        experiment.train_and_evaluate(_code_prior(vqvae_pixelcnn_prior, self.data_dir, self.vq_dir), second)
        with self.assertRaisesRegex(ValueError, "model_type 'latent' is not an autoencoder"):
            experiment.train_and_evaluate(_latent_ddpm(self.data_dir, second), self.create_tempdir().full_path)
        config = _latent_ddpm(self.data_dir, self.kl_dir)
        config.model.input_shape = (32, 32, 1)
        with self.assertRaisesRegex(ValueError, r"input_shape \(32, 32, 1\) differs from the first stage's"):
            experiment.train_and_evaluate(config, self.create_tempdir().full_path)

    def test_the_trainer_keeps_the_first_stage_out_of_the_optimizer(self):
        ae = create_model(ModelConfiguration(**experiment.parse_config(_kl_autoencoder(self.data_dir)).model.to_dict()),
                          rngs=nnx.Rngs(0))
        config = experiment.parse_config(_latent_ddpm(self.data_dir, self.kl_dir)).model
        model = LatentModel(config, rngs=nnx.Rngs(1), autoencoder=ae)
        prior_params = _size(nnx.state(model.prior, nnx.Param))
        self.assertEqual(_size(nnx.state(model, nnx.Param)), prior_params)
        trainer = Trainer(model, TrainingConfiguration(num_steps=2, optimizer={"name": "adam", "learning_rate": 1e-2}))
        state = trainer.init_state()
        # Adam's two moments (and a few scalar counts) for the prior's parameters only; the first
        # stage's weights would add twice their number.
        self.assertGreater(_size(nnx.state(ae)), 100)
        self.assertLessEqual(_size(state.opt_state), 2 * prior_params + 16)
        self.assertGreaterEqual(_size(state.rest), _size(nnx.state(ae)))
        before = jax.tree.map(np.asarray, nnx.state(model.autoencoder))
        prior_before = jax.tree.map(np.asarray, state.params)
        x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype(np.uint8)
        state, metrics = trainer.train_step(state, {"x": x})
        self.assertTrue(np.isfinite(float(metrics["loss"])))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(trainer.model_from_state(state).autoencoder))):
            np.testing.assert_array_equal(a, b)
        self.assertFalse(all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(prior_before),
                                                                    jax.tree.leaves(state.params))))
        # The gradient of the compiled loss has one entry per prior parameter: none for the first stage.
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params):
            m = nnx.merge(graphdef, params, rest)
            return m.loss_fn({"x": x / 255.0}, m(x / 255.0, rngs=nnx.Rngs(0)))["loss"]

        self.assertEqual(_size(jax.eval_shape(jax.grad(loss), params)), prior_params)

    def test_cifar10_layout_with_an_input_shape_override(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        data_dir = _write_cifar10_binary(root / "cifar")
        first = _kl_autoencoder(data_dir)
        first.data.dataset, first.model.input_shape = "cifar10", (32, 32, 3)
        experiment.train_and_evaluate(first, root / "first")
        second = _latent_ddpm(data_dir, root / "first")
        second.data.dataset, second.model.input_shape = "cifar10", (32, 32, 3)
        result = experiment.train_and_evaluate(second, root / "second")
        model = result.trainer.model_from_state(result.state)
        self.assertEqual((model.code_shape, model.prior_shape), ((8, 8, 4), (8, 8, 4)))
        self.assertEqual(result.trainer.generate(result.state, 2).shape, (2, 32, 32, 3))


if __name__ == "__main__":
    absltest.main()
