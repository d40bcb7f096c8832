"""Tests for workshop.data.datasets.text: packing and the Wikipedia / plain-text datasets."""

import bz2
import json
import os
from unittest import mock

from absl.testing import absltest
import numpy as np

from workshop.data import bpe
from workshop.data.datasets import text
from workshop.data.datasets.wikitext_test import DUMP_PAGES, write_dump
from workshop.data.idx import DatasetFormatError
from workshop.data.pipeline import BatchPipeline

SEP = 1


class PackingTest(absltest.TestCase):

    def test_separators_between_documents_and_exact_rows(self):
        documents = [[10, 11, 12], [20], [30, 31, 32, 33, 34], [40, 41]]
        rows = text.pack_sequences(documents, max_length=4, separator_id=SEP)
        # Stream: 10 11 12 | 20 | 30 31 32 33 34 | 40 41 |  (15 ids) -> 3 full rows, 3 ids dropped.
        np.testing.assert_array_equal(rows, [[10, 11, 12, SEP], [20, SEP, 30, 31], [32, 33, 34, SEP]])
        self.assertEqual(rows.dtype, np.int32)

    def test_long_document_spans_rows_and_nothing_is_lost_but_the_tail(self):
        documents = [list(range(2, 12)), list(range(12, 15))]  # 10 + 1 + 3 + 1 = 15 ids.
        rows = text.pack_sequences(documents, max_length=5, separator_id=SEP)
        self.assertEqual(rows.shape, (3, 5))
        np.testing.assert_array_equal(rows.ravel(), list(range(2, 12)) + [SEP] + list(range(12, 15)) + [SEP])
        self.assertEqual(text.pack_sequences([[5]], 4, SEP).shape, (0, 4))


class WikipediaDatasetTest(absltest.TestCase):

    def test_dump_and_bz2_and_jsonl_folder(self):
        root = self.create_tempdir().full_path
        write_dump(os.path.join(root, "enwiki-pages-articles1.xml"), DUMP_PAGES)
        write_dump(os.path.join(root, "enwiki-pages-articles2.xml.bz2"), DUMP_PAGES[3:4])
        os.makedirs(os.path.join(root, "extracted", "AA"))
        with open(os.path.join(root, "extracted", "AA", "wiki_00"), "w") as f:
            f.write(json.dumps({"id": "9", "title": "J", "text": "Jsonl article text."}) + "\n")
        tokenizer_path = os.path.join(root, "tok", "bpe.json")
        dataset = text.WikipediaDataset(root, tokenizer="bpe", max_length=16, vocab_size=300, tokenizer_path=tokenizer_path)
        self.assertEqual(dataset.num_documents, 4)  # Anarchism, Albedo, Albedo again (bz2), the JSONL one.
        self.assertTrue(os.path.isfile(tokenizer_path))
        self.assertEqual(dataset.sequences.shape[1], 16)
        self.assertEqual(dataset.sequences.dtype, np.int32)
        self.assertLen(dataset, dataset.num_tokens // 16)
        decoded = dataset.decode(dataset.sequences.ravel())
        self.assertEqual(decoded.count(bpe.SEPARATOR_TOKEN), int((dataset.sequences == dataset.separator_id).sum()))
        self.assertIn("Anarchism is a political philosophy", decoded)
        self.assertNotIn("{{", decoded)
        self.assertNotIn("Talk page", decoded)
        self.assertNotIn("REDIRECT", decoded.upper())
        # A reloaded tokenizer gives the same rows; max_articles stops early.
        again = text.WikipediaDataset(root, max_length=16, tokenizer_path=tokenizer_path)
        np.testing.assert_array_equal(again.sequences, dataset.sequences)
        self.assertEqual(text.WikipediaDataset(root, max_length=16, tokenizer_path=tokenizer_path, max_articles=2).num_documents, 2)
        # Into the pipeline.
        with BatchPipeline(dataset.as_arrays(), batch_size=2, seed=0) as pipeline:
            self.assertEqual(next(pipeline)["tokens"].shape, (2, 16))

    def test_truncated_dump_raises_or_is_skipped_with_count(self):
        root = self.create_tempdir().full_path
        good, bad = os.path.join(root, "a-pages-articles.xml"), os.path.join(root, "b-pages-articles.xml.bz2")
        write_dump(good, DUMP_PAGES)
        write_dump(bad, DUMP_PAGES)
        with open(bad, "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[:-30])
        with self.assertRaisesRegex(DatasetFormatError, r"b-pages-articles.xml.bz2: expected a MediaWiki XML dump"):
            text.WikipediaDataset(root, max_length=8, vocab_size=280)
        dataset = text.WikipediaDataset(root, max_length=8, vocab_size=280, skip_bad_files=True)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [bad])
        self.assertEqual(dataset.num_documents, 2)

    def test_missing_data_says_where(self):
        with mock.patch.dict(os.environ, {"WORKSHOP_DATA_DIR": ""}):
            with self.assertRaisesRegex(FileNotFoundError, "needs root=.*nothing is downloaded"):
                text.WikipediaDataset(tokenizer="bpe", max_length=512)
        empty = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, r"no \*pages-articles\*.xml.*under " + empty):
            text.WikipediaDataset(empty)


class PlainTextDatasetTest(absltest.TestCase):

    def test_files_are_documents_and_bad_utf8_is_named(self):
        root = self.create_tempdir().full_path
        docs = {"a.txt": "First document about cats. " * 5, "sub/b.txt": "Second document about dogs. " * 5}
        for name, content in docs.items():
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            with open(os.path.join(root, name), "w") as f:
                f.write(content)
        dataset = text.PlainTextDataset(root, max_length=8, vocab_size=300)
        self.assertEqual(dataset.num_documents, 2)
        stream = list(bpe.encode_documents(dataset.tokenizer, docs.values()))
        expected = text.pack_sequences(stream, 8, dataset.separator_id)
        np.testing.assert_array_equal(dataset.sequences, expected)
        with open(os.path.join(root, "c.txt"), "wb") as f:
            f.write(b"caf\xe9 latin-1")
        with self.assertRaisesRegex(DatasetFormatError, r"c.txt: expected UTF-8 text"):
            text.PlainTextDataset(root, max_length=8, vocab_size=300)
        skipping = text.PlainTextDataset(root, max_length=8, tokenizer=dataset.tokenizer, skip_bad_files=True)
        self.assertLen(skipping.skipped, 1)
        np.testing.assert_array_equal(skipping.sequences, expected)


_PYTHON_DOCS = "/usr/share/doc/python3.11/html/_sources/tutorial"


@absltest.skipUnless(os.path.isdir(_PYTHON_DOCS), f"{_PYTHON_DOCS} is missing: apt-get install python3.11-doc")
class RealPythonDocsTest(absltest.TestCase):

    def test_tutorial_sources(self):
        dataset = text.PlainTextDataset(_PYTHON_DOCS, max_length=256, vocab_size=2000)
        self.assertGreater(dataset.num_documents, 10)
        self.assertGreater(len(dataset), 100)
        # Trained on English prose, BPE needs well under one token per 3 bytes.
        num_bytes = sum(p.stat().st_size for p in dataset.paths)
        self.assertLess(dataset.num_tokens, num_bytes / 3)


if __name__ == "__main__":
    absltest.main()
