"""Word vectors trained on the corpus (python -m xmtc.data.train_word_vectors) for AttentionXML's embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmtc.data.readers import read_split
from xmtc.data.tokenizer import WordTokenizer, load_word_vectors

pytest.importorskip("gensim")


def _vectors(path: Path) -> dict[str, np.ndarray]:
    rows = (line.split(" ") for line in path.read_text(encoding="utf-8").splitlines())
    return {r[0]: np.array([float(x) for x in r[1:]]) for r in rows}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_vectors_cover_the_vocabulary_and_put_topic_words_together(toy_axml: Path, tmp_path: Path):
    from xmtc.data.train_word_vectors import main

    out = main(["--data", str(toy_axml), "--output", str(tmp_path / "w2v.txt"), "--dim", "16", "--min-count", "1",
                "--epochs", "40", "--window", "10", "--workers", "1"])
    vec = _vectors(out)
    assert all(v.shape == (16,) for v in vec.values())
    texts = read_split(toy_axml, "train").texts
    tokenizer = WordTokenizer.build(texts, max_size=1000, min_freq=1)
    weight, found = load_word_vectors(out, tokenizer, 16)
    assert found == len(tokenizer) - 2  # every word but <pad> and <unk>: split exactly as the tokenizer splits
    assert np.allclose(weight[tokenizer.index["milk"]].numpy(), vec["milk"], atol=1e-5)
    # words of one topic co-occur, words of two topics only when a document has both
    for word, same, other in [("milk", "cheese", "tariff"), ("rail", "freight", "grapes"), ("tax", "duty", "cows")]:
        assert _cos(vec[word], vec[same]) > _cos(vec[word], vec[other]) + 0.1, (word, same, other)


def test_only_the_training_split_is_read_and_sizes_must_match(toy_axml: Path, tmp_path: Path):
    from xmtc.data.train_word_vectors import main

    with open(toy_axml / "test_raw_texts.txt", "a", encoding="utf-8") as f:
        f.write("zebra zebra zebra zebra milk\n")
    with open(toy_axml / "test_labels.txt", "a", encoding="utf-8") as f:
        f.write("dairy\n")
    out = main(["--data", str(toy_axml), "--output", str(tmp_path / "w.txt"), "--dim", "8", "--workers", "1"])
    assert not list(tmp_path.glob("*.tmp"))
    vec = _vectors(out)
    assert "milk" in vec and "zebra" not in vec
    assert "zebra" in _vectors(main(["--data", str(toy_axml), "--output", str(tmp_path / "t.txt"), "--dim", "8",
                                     "--workers", "1", "--split", "test"]))
    with pytest.raises(ValueError, match=r"w\.txt:1: expected a word and 12 numbers"):
        load_word_vectors(out, WordTokenizer.build(read_split(toy_axml, "train").texts), 12)
