"""Tokenized data: every example encoded once, then cut into length-sorted, dynamically padded batches (fast);
callers map results back to the original row order so predictions compare across engines."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from qbert.data import Dataset
from qbert.errors import ConfigError


@dataclass
class Encoded:
    """Token ids of every example (unpadded), ready to be cut into padded batches."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids])

    def subset(self, idx) -> "Encoded":
        idx = list(idx)
        return Encoded([self.input_ids[i] for i in idx], [self.token_type_ids[i] for i in idx])


def is_tokenizer_file(name: str) -> bool:
    """A file Hugging Face's AutoTokenizer reads: its JSON files, a WordPiece/BPE vocabulary and merges, a
    SentencePiece model."""
    stem, _, suffix = name.partition(".")
    return (stem in ("tokenizer", "tokenizer_config", "vocab", "merges", "special_tokens_map", "added_tokens",
                     "spiece") and suffix in ("json", "txt", "model")) or name.startswith("sentencepiece") \
        and name.endswith(".model")  # not a backup beside them (tokenizer.json.bak), which nothing reads


def encode(dataset: Dataset, tokenizer, max_length: int) -> Encoded:
    enc = tokenizer([e.first for e in dataset.examples], [e.second for e in dataset.examples],
                    truncation=True, max_length=max_length)
    type_ids = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return Encoded([np.asarray(x, dtype=np.int64) for x in enc["input_ids"]],
                   [np.asarray(x, dtype=np.int64) for x in type_ids])


def encode_texts(texts: Sequence[str], tokenizer, max_length: int) -> Encoded:
    """Single sentences (an embedding model's input): one token type throughout."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    return Encoded(ids, [np.zeros_like(x) for x in ids])


def pad_batch(encoded: Encoded, idx: Sequence[int], pad_id: int = 0, length: int | None = None
              ) -> dict[str, np.ndarray]:
    """Right-pad rows `idx` to the longest among them (or to `length`)."""
    seq = length or max(len(encoded.input_ids[i]) for i in idx)
    ids = np.full((len(idx), seq), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), seq), dtype=np.int64)
    types = np.zeros((len(idx), seq), dtype=np.int64)
    for r, i in enumerate(idx):
        n = min(len(encoded.input_ids[i]), seq)
        ids[r, :n] = encoded.input_ids[i][:n]
        types[r, :n] = encoded.token_type_ids[i][:n]
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def batches(encoded: Encoded, batch_size: int, sort: bool = True, pad_id: int = 0,
            pad_to: int | None = None) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield (row indices, padded feeds); length-sorted so each batch pads little."""
    if batch_size < 1:
        raise ConfigError("batch_size", batch_size, "must be at least 1")
    order = np.argsort(encoded.lengths, kind="stable") if sort else np.arange(len(encoded))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, pad_batch(encoded, idx, pad_id, pad_to)


def random_feeds(batch: int, seq: int, vocab: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids in [vocab/10, vocab) — clear of the special tokens at the start of BERT vocabularies.
    Token types are all 0, the one type every model has (RoBERTa-style checkpoints have no type 1): timing and
    kernel counts do not depend on the values."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(vocab // 10, vocab, size=(batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), dtype=np.int64), "token_type_ids": types}
