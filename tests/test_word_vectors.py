"""WordVectorNeighbours on small hand-made vector spaces whose neighbours are known by construction.

Each cluster has a centre axis; its words lie at ``centre + t * offset_axis``, so the cosine of a word at
``t`` with the cluster's head (``t = 0``) is ``1 / sqrt(1 + t²)``: the neighbours of the head are the other
members by increasing ``t``, and words of other clusters (orthogonal axes) have cosine 0.
"""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import single_thread

from xmtc.attack.base import Transformation
from xmtc.attack.stopwords import is_stop_word
from xmtc.attack.transformation import WordSubstitution, split_word
from xmtc.attack.word_vectors import WordVectorNeighbours, read_word_vectors

DIM = 8
# cluster: (centre axis, offset axis, [(word, t), ...]); heads first
CLUSTERS = {
    "fish": (0, 7, [("fishing", 0.0), ("angling", 0.2), ("trawling", 0.4), ("netting", 0.6), ("hooking", 1.5),
                    ("casting", 2.0)]),
    "farm": (1, 6, [("farming", 0.0), ("ploughing", 0.3), ("harvesting", 0.5), ("sowing", 0.7)]),
    "bank": (2, 5, [("banking", 0.0), ("lending", 0.3), ("credit", 0.45)]),
}
# closer to "fishing" than any real neighbour, but never proposable: a stop word, a number, punctuation, a
# single letter, a word with a digit
NEAR_FISHING_UNUSABLE = [("the", 0.1), ("2013", 0.05), ("--", 0.15), ("x", 0.12), ("co2", 0.07)]
FISHING_NEIGHBOURS = ["angling", "trawling", "netting", "hooking"]  # cosine >= 0.5 (casting: 0.447)


def _cosine_to_head(t: float) -> float:
    return 1.0 / math.sqrt(1.0 + t * t)


def space() -> list[tuple[str, list[float]]]:
    rows: list[tuple[str, list[float]]] = []
    for centre, offset, members in CLUSTERS.values():
        extra = NEAR_FISHING_UNUSABLE if centre == 0 else []
        for word, t in members[:1] + extra + members[1:]:
            v = [0.0] * DIM
            v[centre], v[offset] = 1.0, t
            rows.append((word, v))
    rows.append(("void", [0.0] * DIM))  # a zero vector: similar to nothing
    return rows


def write_vectors(path: Path, rows: list[tuple[str, list[float]]], header: bool = False, gz: bool = False,
                  scale: float = 1.0) -> Path:
    """GloVe text (``word v1 ... vD``) or, with ``header``, word2vec text (first line ``N D``)."""
    lines = [f"{len(rows)} {len(rows[0][1])}"] if header else []
    lines += [word + " " + " ".join(repr(x * scale) for x in v) for word, v in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def glove(tmp_path: Path) -> Path:
    return write_vectors(tmp_path / "vectors.txt", space())


def test_both_formats_and_gzip_read_the_same(tmp_path: Path) -> None:
    rows = space()
    expected = torch.tensor([v for _, v in rows], dtype=torch.float32)
    for name, header, gz in [("g.txt", False, False), ("w.txt", True, False), ("g.txt.gz", False, True),
                             ("w.vec", True, True), ("no_suffix", False, True)]:
        words, vectors = read_word_vectors(write_vectors(tmp_path / name, rows, header=header, gz=gz))
        assert words == [w for w, _ in rows], name
        assert vectors.dtype == torch.float32 and torch.equal(vectors, expected), name
    words, vectors = read_word_vectors(tmp_path / "w.txt", max_vectors=3)
    assert words == ["fishing", "the", "2013"] and vectors.shape == (3, DIM)


def test_neighbours_by_cosine_with_the_threshold(glove: Path, tmp_path: Path) -> None:
    sub = WordVectorNeighbours(glove, k=10)
    assert isinstance(sub, Transformation) and isinstance(sub, WordSubstitution)
    assert sub.dim == DIM and len(sub.words) == len(space())
    (nearest,) = sub.neighbours(["fishing"])
    assert nearest == FISHING_NEIGHBOURS
    scaled = WordVectorNeighbours(write_vectors(tmp_path / "scaled.txt", space(), scale=7.5), k=10)
    assert scaled.neighbours(["fishing"]) == [nearest]  # cosine, not the dot product
    assert [_cosine_to_head(t) >= 0.5 for _, t in CLUSTERS["fish"][2][1:]] == [True] * 4 + [False]
    assert sub.neighbours(["farming", "banking"]) == [["ploughing", "harvesting", "sowing"], ["lending", "credit"]]
    strict = WordVectorNeighbours(glove, k=10, min_cosine=0.9)  # cos(0.4) = 0.928, cos(0.6) = 0.857
    assert strict.neighbours(["fishing"]) == [["angling", "trawling"]]
    loose = WordVectorNeighbours(glove, k=10, min_cosine=None)
    (everything,) = loose.neighbours(["fishing"])
    assert everything[:5] == [*FISHING_NEIGHBOURS, "casting"]
    assert set(everything[5:]) == {w for c in ("farm", "bank") for w, _ in CLUSTERS[c][2]}  # cosine 0
    assert not any(w in everything for w, _ in NEAR_FISHING_UNUSABLE) and "void" not in everything
    assert len(everything) == len(space()) - 1 - len(NEAR_FISHING_UNUSABLE) - 1  # itself, unusable, void
    # unknown and zero-vector words have none; a stop word has (``candidates`` never asks for it)
    assert sub.neighbours(["zzz", "void"]) == [[], []]
    assert set(sub.neighbours(["the"])[0][:2]) == {"fishing", "angling"}  # t = 0.1: between t = 0 and 0.2


def test_candidates_case_punctuation_and_k(glove: Path) -> None:
    sub = WordVectorNeighbours(glove, k=3)
    words = ["The", "Fishing,", "FISHING", "(fishing)", "zzz", "2013", "the", "farming.", "Banking"]
    cands = sub.candidates(words, list(range(len(words))))
    assert cands[0] == cands[4] == cands[5] == cands[6] == []  # stop word, unknown, number, stop word
    assert cands[1] == ["Angling,", "Trawling,", "Netting,"]
    assert cands[2] == ["ANGLING", "TRAWLING", "NETTING"]
    assert cands[3] == ["(angling)", "(trawling)", "(netting)"]
    assert cands[7] == ["ploughing.", "harvesting.", "sowing."]
    assert cands[8] == ["Lending", "Credit"]  # fewer than k above the threshold
    assert sub.candidates(words, [2, 2, 1]) == [cands[2], cands[2], cands[1]]  # repeated positions
    for p, cs in enumerate(cands):
        for c in cs:
            core = split_word(c).core
            assert core.lower() != split_word(words[p]).core.lower() and not is_stop_word(core)
    big = WordVectorNeighbours(glove, k=48)
    assert big.candidates(["fishing"], [0]) == [FISHING_NEIGHBOURS]
    assert sub.candidates([], []) == []
    with pytest.raises(IndexError):
        sub.candidates(["fishing"], [1])


def test_lowercase_keeps_the_first_spelling(tmp_path: Path) -> None:
    rows = space()
    # "Angling" (cased, first) points at the farm cluster, "angling" (lower) at the fish cluster
    cased = [("Angling", [0.0, 1.0, 0, 0, 0, 0, 0.1, 0])] + [r for r in rows if r[0] != "angling"]
    cased.append(("angling", next(v for w, v in rows if w == "angling")))
    path = write_vectors(tmp_path / "cased.txt", cased)
    lower = WordVectorNeighbours(path, k=10)
    assert lower.words.count("angling") == 1 and "Angling" not in lower.words
    assert "angling" in lower.neighbours(["farming"])[0] and "angling" not in lower.neighbours(["fishing"])[0]
    assert lower.neighbours(["ANGLING"]) == lower.neighbours(["angling"])
    exact = WordVectorNeighbours(path, k=10, lowercase=False)
    assert {"Angling", "angling"} <= set(exact.words)
    assert "angling" in exact.neighbours(["fishing"])[0] and "Angling" in exact.neighbours(["farming"])[0]
    assert exact.neighbours(["FISHING"]) == exact.neighbours(["fishing"])  # not in the file: lower-cased
    # "Angling" (a farm word) is close to "Farming"; proposed in the original's case
    assert exact.candidates(["Farming"], [0])[0][:1] == ["Angling"]


@pytest.mark.parametrize("prefetch", [False, True])
def test_one_similarity_product_per_call_and_a_cache(glove: Path, monkeypatch: pytest.MonkeyPatch,
                                                     prefetch: bool) -> None:
    sub = WordVectorNeighbours(glove, k=3, prefetch=prefetch)
    one_by_one = [sub.neighbours([w])[0] for w in ("fishing", "farming", "banking", "angling")]
    sub.clear_cache()
    calls: list[list[int]] = []
    nearest = sub._nearest
    monkeypatch.setattr(sub, "_nearest", lambda rows: calls.append(rows) or nearest(rows))
    words = ["fishing", "farming,", "Fishing", "banking", "the", "zzz", "angling"]
    cands = sub.candidates(words, list(range(len(words))))
    assert len(calls) == 1 and len(calls[0]) == 4  # fishing, farming, banking, angling: one batch
    assert sub.neighbours(["fishing", "farming", "banking", "angling"]) == one_by_one
    again = sub.candidates(words, [0, 1, 6])
    assert len(calls) == 1 and again == [cands[0], cands[1], cands[6]]  # served from the cache
    sub.clear_cache()
    assert sub.candidates(words, [1]) == [cands[1]]
    # the search asks one position at a time: with prefetch the whole text is answered at the first
    asked = ("fishing", "farming", "banking", "angling") if prefetch else ("farming",)
    assert calls[1] == [sub.index[w] for w in asked]
    assert sub.candidates(words, [4, 5]) == [[], []] and len(calls) == 2  # nothing to look up
    assert [sub.candidates(words, [p])[0] for p in range(len(words))] == cands
    assert len(calls) == (2 if prefetch else 5)  # without prefetch: fishing, banking, angling one by one


def test_chunked_products_give_the_same_neighbours(glove: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = WordVectorNeighbours(glove, k=10, min_cosine=None)
    queries = ["fishing", "farming", "banking", "angling", "sowing"]
    expected = whole.neighbours(queries)
    monkeypatch.setattr("xmtc.attack.word_vectors._CHUNK_ENTRIES", 2 * len(whole.words))  # two rows at a time
    chunked = WordVectorNeighbours(glove, k=10, min_cosine=None)
    assert chunked.neighbours(queries) == expected
    assert chunked.to("cpu") is chunked and chunked.neighbours(queries) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("fishing 1 0 0\nangling 1 abc 0\n", r"vectors.txt:2: 'abc' is not a number"),
        ("fishing 1 0 0\nangling 1 0\n", r"vectors.txt:2: expected a word and 3 values \(line 1 has 3\), got 3"),
        ("fishing 1 0 0\n\nangling 1 0 0 5\n", r"vectors.txt:3: more than 3 values \(line 1 has 3\)"),
        ("2 3\nfishing 1 0 0 0\nangling 1 0 0\n", r"vectors.txt:2: more than 3 values \(the header has 3\)"),
        ("3 3\nfishing 1 0 0\nangling 1 0 0\n", r"vectors.txt: the header announces 3 vectors, the file has 2"),
        ("fishing 1 0 0\nangling 1 nan 0\n", r"vectors.txt:2: the vector of 'angling' has a value that is not"),
        ("fishing\n", r"vectors.txt:1: expected 'word v1 ... vD', got one field"),
        ("\n\n", r"vectors.txt: no word vectors"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        WordVectorNeighbours(path)


def test_other_errors(tmp_path: Path, glove: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        WordVectorNeighbours(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fishing 1 0\n" + "caf\u00e9 0 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:2: not UTF-8"):
        read_word_vectors(bad)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress(b"fishing 1 0\n" * 2000)[:-30])
    with pytest.raises(ValueError, match=r"cut.txt.gz:\d+: cannot be read"):
        read_word_vectors(cut)
    for kwargs, field in [({"k": 0}, "k"), ({"min_cosine": 1.5}, "min_cosine"), ({"max_vectors": 0}, "max_vectors")]:
        with pytest.raises(ValueError, match=field):
            WordVectorNeighbours(glove, **kwargs)


def test_words_with_spaces_are_skipped(tmp_path: Path) -> None:
    rows = space()
    path = write_vectors(tmp_path / "spaces.txt", [rows[0], ("at sea", [1.0] + [0.0] * (DIM - 1)), *rows[1:]])
    words, _ = read_word_vectors(path)
    assert words == [w for w, _ in rows]
    header = write_vectors(tmp_path / "spaces.vec", [rows[0], ("at sea", [1.0] + [0.0] * (DIM - 1))], header=True)
    assert read_word_vectors(header)[0] == ["fishing"]  # counted by the header, not kept


# -- end to end: the greedy attack with word-vector candidates on a small AttentionXML --


def test_greedy_attack_on_attentionxml_substitutes_only_neighbours(glove: Path) -> None:
    from xmtc.attack.attack import GreedyWordSearch
    from xmtc.attack.goal import TargetedGoal
    from xmtc.data.label_stats import LabelStats
    from xmtc.data.tokenizer import WordTokenizer
    from xmtc.models import AttentionXML

    torch.manual_seed(0)
    vocabulary = " ".join(w for w, _ in space())
    tok = WordTokenizer.build([vocabulary])
    labels = [f"l{i}" for i in range(8)]
    stats = LabelStats(labels, labels, np.arange(8, 0, -1), 10, 0.55, 1.5)
    model = AttentionXML(tokenizer=tok, label_stats=stats, embedding_dim=8, hidden_size=8, linear_sizes=[8]).eval()
    text = "Fishing and farming, banking the trawling of lending (sowing) and angling zzz"
    neighbours = WordVectorNeighbours(glove, k=4)
    allowed = {split_word(w).core.lower(): {n.lower() for n in neighbours.neighbours([split_word(w).core])[0]}
               for w in text.split()}
    goal = TargetedGoal(model, k=5)
    top = goal.topk(goal.scores([text])[0])
    search = GreedyWordSearch(goal, neighbours, max_change_rate=1.0)
    changes = []
    for target in top:
        t = time.perf_counter()
        with single_thread():
            result = search.attack(text, target, "positive")
        print(f"target {target}: {result.status}, {len(result.changes)} changes, {time.perf_counter() - t:.3f} s")
        assert result.status in {"success", "failed"}
        changes += result.changes
        words = text.split()
        for change in result.changes:
            old, new = split_word(change.old), split_word(change.new)
            assert change.old == words[change.position]
            assert new.core.lower() in allowed[old.core.lower()]  # a neighbour from the file
            assert (new.prefix, new.suffix) == (old.prefix, old.suffix)
            assert new.core[0].isupper() == old.core[0].isupper()
    assert changes  # the attack did substitute words
