"""Word substitutions from nearest neighbours in a word-vector space, as TextFooler does (Jin et al., 2020).

TextFooler proposes, for a word, its nearest neighbours by cosine similarity in counter-fitted word vectors
(Mrkšić et al., 2016; https://github.com/nmrksic/counter-fitting, ``counter-fitted-vectors.txt``, 65,713
lower-case words x 300): counter-fitting pulls synonyms together and pushes antonyms apart, so neighbours are
near-synonyms rather than merely related words. GloVe vectors (https://nlp.stanford.edu/projects/glove/) work
the same way with more related-but-not-synonymous neighbours. Nothing is downloaded: the file is given.

Two text formats are read, optionally gzip-compressed (recognised by content, not by name):

* GloVe: one ``word v1 ... vD`` line per word, no header;
* word2vec text (also fastText ``.vec``): a first line ``N D``, then the same lines.

Files are usually sorted by word frequency, so ``max_vectors`` keeps the most frequent words, and when
lower-casing makes two entries the same word the first (more frequent) one is kept.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import Tensor

from xmtc.attack.transformation import WordSubstitution, split_word, usable_word

#: similarity-matrix entries computed at a time (queries x vocabulary): bounds memory for large vocabularies
_CHUNK_ENTRIES = 1 << 25


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain or gzip-compressed UTF-8 file; each line is decoded on its own so a
    decoding error names its line."""
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
        line_no = 0
        try:
            for line_no, raw in enumerate(f, start=1):
                try:
                    yield line_no, raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not UTF-8 text ({err.reason})") from None
        except (OSError, EOFError) as err:  # a truncated or corrupt gzip stream
            raise ValueError(f"{path}:{line_no + 1}: cannot be read: {err}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_word_vectors(
    path: str | Path, max_vectors: int | None = None, lowercase: bool = True
) -> tuple[list[str], Tensor]:
    """Words and their vectors (float32, one row each, as in the file) from a GloVe or word2vec text file.

    ``lowercase`` lower-cases the words (the first of several entries that become the same word is kept);
    ``max_vectors`` stops after that many distinct words. Entries whose word contains spaces (a few in
    GloVe 840B) are skipped: they can never be a whitespace-separated word. Malformed lines, dimensions that
    differ from the first line's or the header's, and values that are not finite numbers raise ``ValueError``
    naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word vectors file not found: {path}")
    if max_vectors is not None and max_vectors < 1:
        raise ValueError(f"max_vectors must be >= 1 or None, got {max_vectors}")
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim: int | None = None
    dim_from = "the header"
    announced: int | None = None  # the word2vec header's vector count
    read = 0  # vector lines read (kept or not), to check the header's count
    for line_no, text in _numbered_lines(path):
        line = text.rstrip()
        if not line:
            continue
        if dim is None:
            fields = line.split(" ")
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                announced, dim = int(fields[0]), int(fields[1])
                if dim < 1:
                    raise ValueError(f"{path}:{line_no}: the header announces {dim} dimensions")
                continue
            dim, dim_from = len(fields) - 1, f"line {line_no}"
            if dim < 1:
                raise ValueError(f"{path}:{line_no}: expected 'word v1 ... vD', got one field")
        word, *values = line.rsplit(" ", dim)
        read += 1
        if len(values) != dim or not word:
            raise ValueError(f"{path}:{line_no}: expected a word and {dim} values ({dim_from} has {dim}), "
                             f"got {len(line.split())} fields")
        if " " in word:
            if _is_number(word.rsplit(" ", 1)[1]):
                raise ValueError(f"{path}:{line_no}: more than {dim} values ({dim_from} has {dim})")
            continue  # a word with spaces: never a candidate, never looked up
        try:
            vector = np.array(values, dtype=np.float32)
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise ValueError(f"{path}:{line_no}: {bad!r} is not a number") from None
        if not np.isfinite(vector).all():
            raise ValueError(f"{path}:{line_no}: the vector of {word!r} has a value that is not finite")
        if lowercase:
            word = word.lower()
        if word in seen:
            continue
        seen.add(word)
        words.append(word)
        rows.append(vector)
        if max_vectors is not None and len(words) >= max_vectors:
            break
    if not words:
        raise ValueError(f"{path}: no word vectors in the file")
    truncated = max_vectors is not None and len(words) >= max_vectors
    if announced is not None and not truncated and read != announced:
        raise ValueError(f"{path}: the header announces {announced} vectors, the file has {read}")
    return words, torch.from_numpy(np.stack(rows))


class WordVectorNeighbours(WordSubstitution):
    """``Transformation`` proposing a word's nearest neighbours in a word-vector space (TextFooler).

    Neighbours are ranked by cosine similarity, only those with cosine >= ``min_cosine`` are proposed
    (TextFooler's δ = 0.5; None: no threshold), and only whole words that are not stop words (the same
    ``usable_word`` rule as the masked LM's vocabulary). Case and punctuation follow the original word
    (``WordSubstitution``). A word missing from the file gets no candidates. With ``lowercase`` the file's
    words and the looked-up words are lower-cased; without it a word is looked up as it is, then lower-cased.

    All the words asked for in one ``candidates`` call are answered by one matrix product with the
    L2-normalised vectors and one top-k (in chunks for very large vocabularies); the answers are cached per
    word, since a word's neighbours do not depend on its text. With ``prefetch`` the first question about a
    text answers every attackable word of it at once: the search asks one position at a time, and one product
    over many rows costs a fraction of as many one-row products (memory-bound on the vocabulary matrix).
    """

    def __init__(
        self,
        path: str | Path,
        k: int = 48,
        min_cosine: float | None = 0.5,
        max_vectors: int | None = None,
        lowercase: bool = True,
        prefetch: bool = True,
    ) -> None:
        super().__init__(k)
        if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1] or None, got {min_cosine}")
        self.path = str(path)  # the attributes named like the arguments describe the part (run.json)
        self.min_cosine = min_cosine
        self.max_vectors = max_vectors
        self.lowercase = lowercase
        self.prefetch = prefetch
        self.words, vectors = read_word_vectors(path, max_vectors, lowercase)
        self.index = {w: i for i, w in enumerate(self.words)}
        norms = vectors.norm(dim=1, keepdim=True)
        self.vectors = vectors / norms.clamp_min(1e-12)  # zero vectors stay zero: cosine 0 with everything
        # a zero vector says nothing about a word: never proposed (it has no neighbours either)
        usable = torch.tensor([usable_word(w) for w in self.words]) & (norms[:, 0] > 0)
        self._bias = torch.where(usable, 0.0, -math.inf)  # added to similarities: non-words never come out
        self._num_usable = int(usable.sum())
        self._cache: dict[str, list[str]] = {}
        self._prefetched: tuple[str, ...] = ()  # the last text prefetched: asked again, nothing to look up

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def to(self, device: str | torch.device) -> Self:
        """Move the vectors to ``device`` (the similarity products run there)."""
        self.vectors = self.vectors.to(device)
        self._bias = self._bias.to(device)
        return self

    def clear_cache(self) -> None:
        """Forget the neighbours found so far."""
        self._cache.clear()
        self._prefetched = ()

    def _key(self, word: str) -> str | None:
        """The vocabulary entry that stands for ``word`` (a core, without punctuation), if any."""
        if self.lowercase:
            word = word.lower()
            return word if word in self.index else None
        if word in self.index:
            return word
        return word.lower() if word.lower() in self.index else None

    def neighbours(self, words: Sequence[str]) -> list[list[str]]:
        """For each word, the usable vocabulary words nearest to it (most similar first, at least
        ``min_cosine``, itself excluded, up to ``3k + 10`` of them); none for a word missing from the file."""
        keys = [self._key(w) for w in words]
        missing = list(dict.fromkeys(key for key in keys if key is not None and key not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._nearest([self.index[key] for key in missing]), strict=True))
        return [list(self._cache[key]) if key is not None else [] for key in keys]

    def _nearest(self, rows: list[int]) -> list[list[str]]:
        n = min(self._pool_size(), self._num_usable)
        if n == 0:
            return [[] for _ in rows]
        found: list[list[str]] = []
        step = max(1, _CHUNK_ENTRIES // len(self.words))
        query_rows = torch.tensor(rows, dtype=torch.long, device=self.vectors.device)
        for start in range(0, len(rows), step):
            chunk = query_rows[start : start + step]
            sims = (self.vectors[chunk] @ self.vectors.T).add_(self._bias)
            sims[torch.arange(len(chunk), device=sims.device), chunk] = -math.inf  # never the word itself
            values, ids = sims.topk(n, dim=1)
            floor = -math.inf if self.min_cosine is None else self.min_cosine
            keep = (values >= floor) & torch.isfinite(values)  # -inf: fewer usable words than n
            for row_ids, row_keep in zip(ids.cpu().tolist(), keep.cpu().tolist(), strict=True):
                found.append([self.words[i] for i, ok in zip(row_ids, row_keep, strict=True) if ok])
        return found

    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        if self.prefetch and positions and tuple(words) != self._prefetched:  # the whole text in one product
            self.neighbours([part.core for part in map(split_word, words) if part.attackable])
            self._prefetched = tuple(words)
        return self.neighbours([split_word(words[p]).core for p in positions])
