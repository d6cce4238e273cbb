"""Word-level tokenizer and vocabulary for AttentionXML, built from the training texts.

It travels inside the checkpoint (``state_dict()``), so a checkpoint alone can score raw text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+", re.UNICODE)
_MEMO_SIZE = 1 << 18  # whitespace chunks whose ids encode() remembers (~30 MB at most)


class WordTokenizer:
    """Lower-cased ``\\w+`` words mapped to ids; 0 is padding, 1 is unknown (also the attack's mask)."""

    pad_id = 0
    unk_id = 1

    def __init__(self, vocab: Sequence[str], lowercase: bool = True, max_length: int = 500) -> None:
        if list(vocab[:2]) != [PAD, UNK]:
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}; got {list(vocab[:2])}")
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.max_length = max_length
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self._memo: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower() if self.lowercase else text)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of the first ``max_length`` words (at least one id, so no sequence is empty).

        The same ids as looking up ``words(text)``, memoised per whitespace-separated chunk (``\\w+`` never
        spans whitespace) and looked up without a Python loop: an attack encodes thousands of texts that
        differ in one chunk.
        """
        ids = self._ids(text, self.max_length)
        return np.asarray(ids or [self.unk_id], dtype=np.int64)

    def _ids(self, text: str, limit: int) -> list[int]:
        chunks = text.split(None, limit)  # a chunk has >= 0 ids: `limit` of them nearly always suffice
        rest = chunks.pop() if len(chunks) > limit else ""
        memo = self._memo
        try:  # nearly always every chunk is known: no membership pass first
            ids = list(chain.from_iterable(map(memo.__getitem__, chunks)))
        except KeyError:
            missing = [c for c in chunks if c not in memo]
            if len(memo) + len(missing) > _MEMO_SIZE:
                memo.clear()
                missing = chunks
            get, unk = self.index.get, self.unk_id
            memo.update((c, tuple(get(w, unk) for w in self.words(c))) for c in missing)
            ids = list(chain.from_iterable(map(memo.__getitem__, chunks)))
        if len(ids) < limit and rest:  # punctuation-only chunks: read on
            ids += self._ids(rest, limit - len(ids))
        del ids[limit:]
        return ids

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        max_size: int = 100_000,
        min_freq: int = 1,
        lowercase: bool = True,
        max_length: int = 500,
    ) -> WordTokenizer:
        """Most frequent words first; ties by first appearance (Counter order), so builds are repeatable."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_WORD.findall(text.lower() if lowercase else text))
        words = [w for w, n in counts.most_common(max_size) if n >= min_freq]
        return cls([PAD, UNK, *words], lowercase=lowercase, max_length=max_length)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "lowercase": self.lowercase, "max_length": self.max_length}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> WordTokenizer:
        return cls(state["vocab"], lowercase=state["lowercase"], max_length=state["max_length"])


def load_word_vectors(path: str | Path, tokenizer: WordTokenizer, dim: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Embedding matrix from a GloVe-format text file (``word v1 ... vd`` per line).

    Words missing from the file keep a small random vector; returns the matrix and how many
    vocabulary words were found. Streams the file: GloVe 840B is 5 GB.
    """
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise FileNotFoundError(
            f"word vector file {state}: {path} (model.init_args.word_vectors); give a GloVe-format text file "
            "(README: the paper's datasets, GloVe 840B), or null for random embeddings")
    g = torch.Generator().manual_seed(seed)
    weight = torch.empty(len(tokenizer), dim).uniform_(-0.1, 0.1, generator=g)
    weight[tokenizer.pad_id] = 0.0
    found: set[int] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if len(parts) < dim + 1:
                if lineno == 1 and len(parts) == 2:  # word2vec-style header "count dim"
                    continue
                raise ValueError(f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts) - 1}")
            word = " ".join(parts[:-dim])  # GloVe 840B has a few words containing spaces
            key = word.lower() if tokenizer.lowercase else word
            idx = tokenizer.index.get(key)
            if idx is None or idx <= tokenizer.unk_id or idx in found:
                continue  # first spelling wins: GloVe lists frequent (usually lower-case) forms first
            try:
                weight[idx] = torch.tensor([float(x) for x in parts[-dim:]])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            found.add(idx)
    return weight, len(found)
