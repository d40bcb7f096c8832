"""The sample binary's --prompt / --prompt_file on a tiny text Transformer workdir: the samples continue the prompt."""

import os
import pathlib
from unittest import mock

import numpy as np
from absl import app
from absl.testing import absltest, flagsaver

from workshop.data import sources
from workshop.train import experiment, sample, train_binary_testing
from workshop.train.configs import transformer_text


class SamplePromptTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = pathlib.Path(absltest.get_default_test_tmpdir()) / "prompt"
        corpus = root / "corpus"
        corpus.mkdir(parents=True)
        for i in range(6):
            (corpus / f"doc{i}.txt").write_text(f"Section {i}: the quick brown fox jumps over {i} lazy dogs. " * 8)
        cls.env = mock.patch.dict(os.environ, {sources.TOKENIZER_CACHE_ENV: str(root / "cache")})
        cls.env.start()
        config = transformer_text.get_config()
        config.model.input_shape = (16,)
        config.model.parameters.update(vocab_size=300, num_layers=1, num_heads=2, embed_dim=16)
        train_binary_testing.shrink_run(config, corpus, batch_size=4)
        config.data.text.update(sequence_length=16, vocab_size=300)
        cls.workdir = root / "run"
        experiment.train_and_evaluate(config, cls.workdir)
        cls.prompt_ids = sources.encode_text_prompt(experiment.load_experiment_config(cls.workdir).data,
                                                    "the quick brown fox")

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()
        super().tearDownClass()

    def _run(self, **flags):
        out = pathlib.Path(self.create_tempdir().full_path)
        with flagsaver.flagsaver(workdir=str(self.workdir), output_dir=str(out), num_samples=2, **flags):
            sample.main(["sample"])
        return out

    def test_text_prompt_starts_every_sample(self):
        out = self._run(prompt="the quick brown fox")
        samples = np.load(out / "samples.npy")
        self.assertEqual(samples.shape, (2, 16))
        np.testing.assert_array_equal(samples[:, :len(self.prompt_ids)], np.stack([self.prompt_ids] * 2))
        texts = (out / "samples.txt").read_text().split("=== sample ")[1:]
        self.assertLen(texts, 2)
        for i, text in enumerate(texts):
            self.assertTrue(text.startswith(f"{i} ===\nthe quick brown fox"), text)

    def test_prompt_file_gives_the_same_samples_as_the_text(self):
        ids_path = pathlib.Path(self.create_tempdir().full_path) / "ids.npy"
        text_out = self._run(prompt="the quick brown fox", seed=3)
        np.save(ids_path, self.prompt_ids)
        file_out = self._run(prompt_file=str(ids_path), seed=3)
        np.testing.assert_array_equal(np.load(file_out / "samples.npy"), np.load(text_out / "samples.npy"))

    def test_bad_prompts_name_the_flag(self):
        with self.assertRaisesRegex(app.UsageError, "--prompt .* or --prompt_file .*, not both"):
            self._run(prompt="the", prompt_file="x.npy")
        with self.assertRaisesRegex(app.UsageError, "--prompt_file=/nonexistent.npy: cannot read a .npy array"):
            self._run(prompt_file="/nonexistent.npy")
        long_text = "the quick brown fox " * 6
        count = len(sources.encode_text_prompt(experiment.load_experiment_config(self.workdir).data, long_text))
        with self.assertRaisesRegex(app.UsageError, f"the prompt has {count} tokens, more than the 16"):
            self._run(prompt=long_text)


if __name__ == "__main__":
    absltest.main()
