"""Tests for workshop.data.bpe: training, exact round trips, save and reload."""

import os

from absl.testing import absltest

from workshop.data import bpe

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Generative models learn a distribution and sample from it. " * 20,
    "Naïve café résumé — ünïcödé and emoji 🦊 survive byte-level BPE.\n\tTabs too.",
]


class BpeTest(absltest.TestCase):

    def test_train_save_reload_round_trip(self):
        tokenizer = bpe.train_bpe_tokenizer(_CORPUS, vocab_size=300)
        self.assertEqual(tokenizer.token_to_id(bpe.PAD_TOKEN), 0)
        self.assertEqual(tokenizer.token_to_id(bpe.SEPARATOR_TOKEN), 1)
        self.assertEqual(tokenizer.get_vocab_size(), 300)
        path = os.path.join(self.create_tempdir().full_path, "sub", "tokenizer.json")
        bpe.save_tokenizer(tokenizer, path)
        reloaded = bpe.load_tokenizer(path)
        unseen = "Unseen text: 3.14159 ≠ π, 日本語, <tags> & 'quotes'  double  spaces\n"
        for text in _CORPUS + [unseen]:
            ids = reloaded.encode(text).ids
            self.assertEqual(ids, tokenizer.encode(text).ids)
            self.assertEqual(reloaded.decode(ids), text)
        # 42 merges (300 - 256 bytes - 2 specials) already shorten the frequent text.
        self.assertLess(len(tokenizer.encode(_CORPUS[0]).ids), 0.6 * len(_CORPUS[0].encode()))
        self.assertEqual(bpe.train_bpe_tokenizer(_CORPUS, vocab_size=400).encode(" quick").tokens, ["Ġquick"])

    def test_encode_documents_batches(self):
        tokenizer = bpe.train_bpe_tokenizer(_CORPUS, vocab_size=280)
        ids = list(bpe.encode_documents(tokenizer, _CORPUS, batch_size=2))
        self.assertEqual(ids, [tokenizer.encode(t).ids for t in _CORPUS])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "vocab_size must be at least 258"):
            bpe.train_bpe_tokenizer(_CORPUS, vocab_size=100)
        folder = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, "tokenizer file not found: .*nope.json"):
            bpe.load_tokenizer(os.path.join(folder, "nope.json"))
        bad = os.path.join(folder, "bad.json")
        with open(bad, "w") as f:
            f.write('{"version": "1.0", "trunc')
        with self.assertRaisesRegex(ValueError, "bad.json: expected a tokenizers JSON file"):
            bpe.load_tokenizer(bad)


if __name__ == "__main__":
    absltest.main()
