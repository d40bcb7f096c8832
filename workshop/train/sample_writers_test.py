"""Tests of the sample binary's writers: text decoded with the run's tokenizer, audio as WAV."""

import os

import numpy as np
import soundfile
from absl.testing import absltest

from workshop.core.configuration import DataConfiguration
from workshop.data import sources
from workshop.train.sample_writers import write_decoded_samples


class WriteDecodedSamplesTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        # Tokenizers trained here are cached in the test's own folder.
        self.enter_context(absltest.mock.patch.dict(os.environ, {sources.TOKENIZER_CACHE_ENV:
                                                                 self.create_tempdir().full_path}))

    def test_text_samples_are_decoded_with_the_run_tokenizer(self):
        root = self.create_tempdir().full_path
        docs = [f"Section {i}: the quick brown fox jumps over {i} lazy dogs. " * 8 for i in range(6)]
        for i, doc in enumerate(docs):
            with open(os.path.join(root, f"doc{i}.txt"), "w") as f:
                f.write(doc)
        data = DataConfiguration(dataset="text", data_dir=root, text=dict(sequence_length=12, vocab_size=300))
        train = sources.load_split(data, train=True)  # trains and saves the tokenizer
        out = self.create_tempdir().full_path
        text = write_decoded_samples(data, train["x"][:3], out)["txt"].read_text()
        corpus = "".join(doc + "<|endoftext|>" for doc in docs)
        chunks = text.split("=== sample ")[1:]
        self.assertLen(chunks, 3)
        for i, chunk in enumerate(chunks):
            decoded = chunk.split("\n", 1)[1][:-2]  # after "i ===", before the blank line
            self.assertTrue(chunk.startswith(f"{i} ===\n"))
            self.assertIn(decoded, corpus)  # packed rows are consecutive corpus text
            self.assertGreater(len(decoded), 12)
        prompt = sources.encode_text_prompt(data, "the quick brown fox")
        decoded = write_decoded_samples(data, prompt[None], out)["txt"].read_text()
        self.assertEqual(decoded, "=== sample 0 ===\nthe quick brown fox\n\n")
        missing = data.model_copy(update={"text": data.text.model_copy(update={"tokenizer_path": os.path.join(root, "missing.json")})})
        with self.assertRaisesRegex(FileNotFoundError, "tokenizer .* not found"):
            write_decoded_samples(missing, train["x"][:1], out)

    def test_audio_samples_are_written_as_wav(self):
        data = DataConfiguration(dataset="audio_folder", data_dir="/unused", audio=dict(sequence_length=64, sample_rate=8000))
        codes = np.random.default_rng(0).integers(0, 256, (2, 64)).astype(np.int32)
        out = self.create_tempdir().full_path
        paths = write_decoded_samples(data, codes, out)
        self.assertEqual(sorted(paths), ["wav_0", "wav_1"])
        wave, rate = soundfile.read(paths["wav_1"], dtype="float32")
        self.assertEqual(rate, 8000)
        mu = 255.0
        expected = np.sign(2 * codes[1] / mu - 1) * np.expm1(np.abs(2 * codes[1] / mu - 1) * np.log1p(mu)) / mu
        np.testing.assert_allclose(wave, expected, atol=1.0 / 32767)
        self.assertEqual(write_decoded_samples(DataConfiguration(), np.zeros((1, 28, 28, 1)), out), {})


if __name__ == "__main__":
    absltest.main()
