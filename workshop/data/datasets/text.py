"""Token sequences for language models: Wikipedia dumps and plain-text corpora.

Each dataset reads documents, tokenizes them with a byte-level BPE tokenizer
(`workshop.data.bpe`, trained on the same documents unless a saved one is
given) and packs them as in GPT-2/3 pretraining (Brown et al., 2020,
"Language Models are Few-Shot Learners", arXiv:2005.14165): documents are
concatenated, each followed by the separator token `<|endoftext|>`, and the
stream is cut into rows of exactly `max_length` ids; the final partial row is
dropped. So a row may hold the end of one document, a separator and the start
of the next.

* `WikipediaDataset`: a MediaWiki XML dump (`*pages-articles*.xml[.bz2]`,
  streamed) or WikiExtractor JSONL files, markup stripped (see `wikitext`).
* `PlainTextDataset`: every `*.txt` file under a folder is one document.

Without a saved tokenizer the documents are read twice (once to train BPE,
once to encode); pass `tokenizer_path` to train once and reuse. The packed ids,
int32 `[N, max_length]`, are held in memory (4 bytes per token).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import tokenizers

from workshop.data import bpe
from workshop.core import paths
from workshop.data.datasets.wikitext import Article, iter_mediawiki_dump, iter_wikiextractor_jsonl, strip_wiki_markup
from workshop.data.idx import DatasetFormatError

__all__ = [
    "Article",  # Re-exported from wikitext.py.
    "PlainTextDataset",
    "WikipediaDataset",
    "iter_packed_sequences",
    "pack_sequences",
    "strip_wiki_markup",  # Re-exported from wikitext.py.
]

_DATA_DIR_ENV = paths.DATA_DIR_ENV


def iter_packed_sequences(
    documents: Iterable[Sequence[int]], max_length: int, separator_id: int
) -> Iterator[np.ndarray]:
    """Packs token ids into rows of exactly `max_length`, a separator after each document.

    Args:
      documents: the token ids of each document, in order.
      max_length: the row length.
      separator_id: the id appended after every document.

    Yields:
      int32 `[max_length]` rows; the last, partial row is not yielded.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    pending = np.empty(0, np.int32)
    for ids in documents:
        pending = np.concatenate([pending, np.asarray(ids, np.int32), np.array([separator_id], np.int32)])
        full = len(pending) // max_length
        if full:
            yield from pending[: full * max_length].reshape(full, max_length)
            pending = pending[full * max_length:]


def pack_sequences(documents: Iterable[Sequence[int]], max_length: int, separator_id: int) -> np.ndarray:
    """`iter_packed_sequences` gathered into int32 `[N, max_length]`."""
    rows = list(iter_packed_sequences(documents, max_length, separator_id))
    return np.stack(rows) if rows else np.zeros((0, max_length), np.int32)


class _PackedTextDataset:
    """Documents -> BPE ids -> packed rows. Subclasses provide `_documents()`.

    Attributes:
      sequences: int32 `[N, max_length]` packed token ids.
      tokenizer: the `tokenizers.Tokenizer` used.
      separator_id: the id of `<|endoftext|>` between documents.
      vocab_size: the tokenizer's vocabulary size (ids are below it).
      num_documents: documents read; num_tokens: their ids, separators included.
      skipped: `(path, problem)` of each bad file left out (`skip_bad_files=True`).
    """

    skipped: list[tuple[pathlib.Path, str]]

    def _documents(self) -> Iterator[str]:
        raise NotImplementedError

    def _build(
        self,
        tokenizer: str | tokenizers.Tokenizer,
        max_length: int,
        vocab_size: int,
        tokenizer_path: str | os.PathLike | None,
    ) -> None:
        self.max_length = max_length
        if isinstance(tokenizer, tokenizers.Tokenizer):
            self.tokenizer = tokenizer
        elif tokenizer != "bpe":
            raise ValueError(f"tokenizer {tokenizer!r} is unknown; known: 'bpe' or a tokenizers.Tokenizer")
        elif tokenizer_path is not None and os.path.isfile(tokenizer_path):
            self.tokenizer = bpe.load_tokenizer(tokenizer_path)
        else:
            self.tokenizer = bpe.train_bpe_tokenizer(self._documents(), vocab_size=vocab_size)
            if tokenizer_path is not None:
                bpe.save_tokenizer(self.tokenizer, tokenizer_path)
        self.separator_id = self.tokenizer.token_to_id(bpe.SEPARATOR_TOKEN)
        if self.separator_id is None:
            raise ValueError(f"the tokenizer has no {bpe.SEPARATOR_TOKEN} token to separate documents")
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.num_documents = self.num_tokens = 0

        def counted(ids_per_document: Iterable[Sequence[int]]) -> Iterator[Sequence[int]]:
            for ids in ids_per_document:
                self.num_documents += 1
                self.num_tokens += len(ids) + 1
                yield ids

        self.sequences = pack_sequences(
            counted(bpe.encode_documents(self.tokenizer, self._documents())), max_length, self.separator_id
        )
        if self.num_documents == 0:
            raise FileNotFoundError(f"{self!r}: no documents were read; skipped files: {self.skipped}")

    def _guard(self, path: pathlib.Path, read: Callable[[], Iterator[str]], skip: bool) -> Iterator[str]:
        """Yields `read()`'s documents; a bad file raises, or is recorded and left when `skip`."""
        try:
            yield from read()
        except (DatasetFormatError, UnicodeDecodeError) as e:
            if not skip:
                if isinstance(e, UnicodeDecodeError):
                    raise DatasetFormatError(f"{path}: expected UTF-8 text; {e}") from e
                raise
            self.skipped.append((path, str(e)))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (separators shown as `<|endoftext|>`)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """`{"tokens": int32 [max_length]}` of row `index`."""
        return {"tokens": self.sequences[index]}

    def as_arrays(self) -> dict[str, np.ndarray]:
        """`{"tokens": int32 [N, max_length]}`, e.g. for `BatchPipeline`."""
        return {"tokens": self.sequences}


class PlainTextDataset(_PackedTextDataset):
    """Every file matching `pattern` under `root` is one document (UTF-8)."""

    def __init__(
        self,
        root: str | os.PathLike,
        tokenizer: str | tokenizers.Tokenizer = "bpe",
        max_length: int = 512,
        *,
        pattern: str = "**/*.txt",
        vocab_size: int = 8192,
        tokenizer_path: str | os.PathLike | None = None,
        skip_bad_files: bool = False,
    ):
        """Reads, tokenizes and packs the corpus.

        Args:
          root: a folder (or one text file).
          tokenizer: "bpe" (trained here unless `tokenizer_path` exists) or a tokenizer.
          max_length: the row length of `sequences`.
          pattern: the glob of document files under `root`.
          vocab_size: BPE vocabulary size when training.
          tokenizer_path: where a trained tokenizer is saved, or read from if present.
          skip_bad_files: leave out files that are not UTF-8 (listed in `skipped`).

        Raises:
          FileNotFoundError: `root` is missing or holds no matching file.
          DatasetFormatError: a file is not UTF-8 text (unless skipped).
        """
        self.data_dir = pathlib.Path(root)
        if self.data_dir.is_file():
            self.paths = [self.data_dir]
        elif self.data_dir.is_dir():
            self.paths = sorted(p for p in self.data_dir.glob(pattern) if p.is_file())
        else:
            raise FileNotFoundError(f"text corpus not found: {self.data_dir} (expected a folder of {pattern} files)")
        if not self.paths:
            raise FileNotFoundError(f"no {pattern} files under {self.data_dir} (expected UTF-8 text documents)")
        self._skip = skip_bad_files
        self.skipped = []
        self._build(tokenizer, max_length, vocab_size, tokenizer_path)

    def _documents(self) -> Iterator[str]:
        self.skipped = []
        for path in self.paths:
            yield from self._guard(path, lambda path=path: iter([path.read_text(encoding="utf-8")]), self._skip)

    def __repr__(self) -> str:
        return f"PlainTextDataset({len(self.paths)} files, {len(self)} rows of {self.max_length} from {self.data_dir})"


def _wikipedia_files(root: pathlib.Path) -> list[pathlib.Path]:
    if root.is_file():
        return [root]
    dumps = [p for p in root.rglob("*pages-articles*.xml*") if p.name.endswith((".xml", ".xml.bz2"))]
    extracted = [p for p in root.rglob("*") if p.is_file() and (p.name.startswith("wiki_") or p.name.endswith(".jsonl"))]
    return sorted(set(dumps) | set(extracted))


class WikipediaDataset(_PackedTextDataset):
    """Wikipedia articles (namespace 0, no redirects) as packed BPE token rows."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        tokenizer: str | tokenizers.Tokenizer = "bpe",
        max_length: int = 512,
        *,
        vocab_size: int = 8192,
        tokenizer_path: str | os.PathLike | None = None,
        max_articles: int | None = None,
        skip_bad_files: bool = False,
    ):
        """Streams the articles, tokenizes and packs them.

        Args:
          root: a dump file (`*pages-articles*.xml[.bz2]`), a WikiExtractor JSON
            file, or a folder searched for both; None means
            `$WORKSHOP_DATA_DIR/wikipedia`.
          tokenizer: "bpe" (trained here unless `tokenizer_path` exists) or a tokenizer.
          max_length: the row length of `sequences`.
          vocab_size: BPE vocabulary size when training.
          tokenizer_path: where a trained tokenizer is saved, or read from if present.
          max_articles: stop after this many articles (all files together).
          skip_bad_files: a truncated or corrupt file keeps the articles read
            before the problem and is listed in `skipped` instead of raising.

        Raises:
          FileNotFoundError: no dump or JSONL file; the message says where it looked.
          DatasetFormatError: a file is malformed or truncated (unless skipped).
        """
        if root is None:
            base = paths.env_data_dir()
            if not base:
                raise FileNotFoundError(
                    f"WikipediaDataset needs root= (a pages-articles*.xml[.bz2] dump or WikiExtractor JSON) "
                    f"or ${_DATA_DIR_ENV} with a wikipedia/ folder; nothing is downloaded"
                )
            root = pathlib.Path(base) / "wikipedia"
        self.data_dir = pathlib.Path(root)
        if not self.data_dir.exists():
            raise FileNotFoundError(f"Wikipedia data not found: {self.data_dir} (expected a pages-articles*.xml[.bz2] dump or WikiExtractor JSON)")
        self.paths = _wikipedia_files(self.data_dir)
        if not self.paths:
            raise FileNotFoundError(
                f"no *pages-articles*.xml, *pages-articles*.xml.bz2, wiki_* or *.jsonl files under {self.data_dir}"
            )
        self.max_articles = max_articles
        self._skip = skip_bad_files
        self.skipped = []
        self._build(tokenizer, max_length, vocab_size, tokenizer_path)

    def _documents(self) -> Iterator[str]:
        self.skipped = []
        count = 0
        for path in self.paths:
            is_dump = path.name.endswith((".xml", ".xml.bz2"))

            def read(path=path, is_dump=is_dump) -> Iterator[str]:
                articles = iter_mediawiki_dump(path) if is_dump else iter_wikiextractor_jsonl(path)
                return (article.text for article in articles if article.text)

            for text in self._guard(path, read, self._skip):
                if self.max_articles is not None and count >= self.max_articles:
                    return
                count += 1
                yield text

    def __repr__(self) -> str:
        return f"WikipediaDataset({self.num_documents} articles, {len(self)} rows of {self.max_length} from {self.data_dir})"
