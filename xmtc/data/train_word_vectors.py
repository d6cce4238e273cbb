"""Train word vectors on a corpus's training split, offline, for AttentionXML's embeddings.

``python -m xmtc.data.train_word_vectors --data data/eurlex57k --output models/w2v-eurlex57k.txt``

The paper starts AttentionXML from GloVe 840B, which cannot be downloaded here. word2vec (gensim, the
``xmtc[wordvec]`` extra) on the training split itself is the offline stand-in: the words are split exactly as
``WordTokenizer`` splits them (lower-cased ``\\w+``), so every vector lands on a vocabulary entry, and the file is
GloVe's text format (``word v1 ... vd`` per line, most frequent words first) that
``model.init_args.word_vectors`` reads. Only the training split is read, so validation and test stay unseen.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from xmtc.data.tokenizer import _WORD


class _Sentences:
    """Re-iterable word lists (gensim walks the corpus once for the vocabulary and once per epoch)."""

    def __init__(self, texts: Sequence[str], max_words: int | None) -> None:
        self.texts, self.max_words = texts, max_words

    def __iter__(self) -> Iterator[list[str]]:
        for text in self.texts:
            yield _WORD.findall(text.lower())[: self.max_words]


def train_word_vectors(texts: Sequence[str], dim: int = 100, window: int = 5, min_count: int = 2,
                       epochs: int = 5, max_words: int | None = None, workers: int = 2, seed: int = 0):
    """A skip-gram word2vec model (gensim ``KeyedVectors`` in ``.wv``) of the lower-cased words of ``texts``."""
    try:
        from gensim.models import Word2Vec
    except ImportError as e:
        raise ImportError("training word vectors needs gensim: pip install 'xmtc[wordvec]'") from e
    return Word2Vec(_Sentences(texts, max_words), vector_size=dim, window=window, min_count=min_count, sg=1,
                    epochs=epochs, workers=workers, seed=seed).wv


def save_glove_text(vectors, path: str | Path) -> Path:
    """Write ``word v1 ... vd`` lines, most frequent word first (gensim keeps its vocabulary in that order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # a stopped run leaves no half file under the final name
    with open(tmp, "w", encoding="utf-8") as f:
        for word, vec in zip(vectors.index_to_key, vectors.vectors, strict=True):
            f.write(word + " " + " ".join(f"{x:.5f}" for x in vec) + "\n")
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    from xmtc.data.readers import read_split

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset directory (its training split is read)")
    p.add_argument("--output", required=True, help="GloVe-format text file to write")
    p.add_argument("--dim", type=int, default=100, help="vector size (must equal model.init_args.embedding_dim)")
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--min-count", type=int, default=2, help="words rarer than this in the split get no vector")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-words", type=int, default=None,
                   help="words read per document (default all; the model's max_length is enough)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--split", default="train")
    args = p.parse_args(argv)
    texts = read_split(args.data, args.split).texts
    began = time.perf_counter()
    vectors = train_word_vectors(texts, dim=args.dim, window=args.window, min_count=args.min_count,
                                 epochs=args.epochs, max_words=args.max_words, workers=args.workers)
    out = save_glove_text(vectors, args.output)
    print(f"trained {len(vectors.index_to_key)} word vectors of size {args.dim} on {len(texts)} documents of "
          f"{args.data} in {time.perf_counter() - began:.0f} s; saved to {out}")
    return out


if __name__ == "__main__":
    main()
