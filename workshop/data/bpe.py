"""Byte-level BPE tokenizers trained on a corpus, saved and reloaded (HF `tokenizers`).

Byte-pair encoding for subwords: Sennrich, Haddow & Birch (2016), "Neural
Machine Translation of Rare Words with Subword Units", arXiv:1508.07909; on
bytes, as in GPT-2 (Radford et al., 2019, "Language Models are Unsupervised
Multitask Learners"). Every text maps to ids and back exactly: the byte-level
pre-tokenizer covers all 256 bytes, so there is no unknown token.

Ids 0 and 1 are the special tokens `PAD_TOKEN` and `SEPARATOR_TOKEN` (the
document separator of packed sequences); the learned vocabulary follows.
A tokenizer is saved as the single JSON file of `tokenizers.Tokenizer.save`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

__all__ = [
    "PAD_TOKEN",
    "SEPARATOR_TOKEN",
    "encode_documents",
    "load_tokenizer",
    "save_tokenizer",
    "train_bpe_tokenizer",
]

PAD_TOKEN = "<|pad|>"
SEPARATOR_TOKEN = "<|endoftext|>"
_SPECIAL_TOKENS = (PAD_TOKEN, SEPARATOR_TOKEN)


def train_bpe_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2
) -> tokenizers.Tokenizer:
    """Learns byte-level BPE merges from `texts`.

    Args:
      texts: the training documents (any iterable; read once).
      vocab_size: the size of the final vocabulary, special tokens and the 256
        byte symbols included (so at least 258).
      min_frequency: a pair must occur this often to be merged.

    Returns:
      The trained tokenizer; `token_to_id(SEPARATOR_TOKEN) == 1`.
    """
    if vocab_size < 256 + len(_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(_SPECIAL_TOKENS)} (256 bytes + specials), got {vocab_size}")
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: tokenizers.Tokenizer, path: str | os.PathLike) -> None:
    """Writes `tokenizer` as one JSON file (parent folders are made)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tokenizer.save(os.fspath(path))


def load_tokenizer(path: str | os.PathLike) -> tokenizers.Tokenizer:
    """Reads a tokenizer written by `save_tokenizer`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a `tokenizers` JSON file; the message names it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {os.fspath(path)} (expected a tokenizers JSON file)")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(os.fspath(path))
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON.
        raise ValueError(f"{os.fspath(path)}: expected a tokenizers JSON file (Tokenizer.save); {e}") from e
    if tokenizer.token_to_id(SEPARATOR_TOKEN) is None:
        raise ValueError(f"{os.fspath(path)}: the tokenizer has no {SEPARATOR_TOKEN} token to separate documents")
    return tokenizer


def encode_documents(
    tokenizer: tokenizers.Tokenizer, texts: Iterable[str], *, batch_size: int = 256
) -> Iterable[Sequence[int]]:
    """Yields the ids of each text, encoding `batch_size` texts at a time (in parallel in Rust)."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield from (encoding.ids for encoding in tokenizer.encode_batch(batch, add_special_tokens=False))
            batch = []
    if batch:
        yield from (encoding.ids for encoding in tokenizer.encode_batch(batch, add_special_tokens=False))
