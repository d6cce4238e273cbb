"""MaskedLMSubstitution on a tiny WordPiece BERT trained in seconds on a template corpus (tests/tiny_models.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from tiny_models import ACTS, BODIES, OBJECTS, SECTORS, VERBS, build_tiny_mlm, single_thread, template_corpus

from xmtc.attack.base import Transformation
from xmtc.attack.stopwords import is_stop_word
from xmtc.attack.transformation import _WORD_RE, MaskedLMSubstitution, WordSubstitution, match_case, split_word

SENTENCE = "The Council adopted the regulation on fishing quotas."
BUILD_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def mlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_mlm")
    t = time.perf_counter()
    trained = build_tiny_mlm(root / "trained")
    BUILD_TIMES["trained"] = time.perf_counter() - t
    t = time.perf_counter()
    random_init = build_tiny_mlm(root / "random", steps=0)
    BUILD_TIMES["random"] = time.perf_counter() - t
    print(f"tiny MLM build times: {BUILD_TIMES}")
    return {"trained": trained, "random": random_init}


@pytest.fixture(scope="module")
def mlm(mlm_dirs: dict[str, Path]) -> MaskedLMSubstitution:
    return MaskedLMSubstitution(str(mlm_dirs["trained"]), k=5)


def _count_passes(sub: MaskedLMSubstitution) -> tuple[list[int], object]:
    """Record the sequence length of every forward pass through the embeddings (independent of the counter)."""
    lengths: list[int] = []
    handle = sub.model.get_input_embeddings().register_forward_hook(lambda m, a, out: lengths.append(a[0].shape[1]))
    return lengths, handle


def _check_whole_words(words: list[str], positions: list[int], cands: list[list[str]], k: int) -> None:
    for p, cs in zip(positions, cands, strict=True):
        orig = split_word(words[p])
        assert len(cs) <= k
        assert len(set(cs)) == len(cs), cs
        for c in cs:
            part = split_word(c)
            assert (part.prefix, part.suffix) == (orig.prefix, orig.suffix)  # punctuation carried over
            assert _WORD_RE.match(part.core) and len(part.core) >= 2, c
            assert not part.core.startswith("#")
            assert not is_stop_word(part.core)
            assert part.core.lower() != orig.core.lower()


def test_is_a_transformation(mlm: MaskedLMSubstitution) -> None:
    assert isinstance(mlm, Transformation)
    assert mlm.max_length == 128  # capped by the tiny model's position embeddings


def test_candidates_whole_words_case_and_punctuation(mlm: MaskedLMSubstitution) -> None:
    words = SENTENCE.split()
    positions = list(range(len(words)))
    cands = mlm.candidates(words, positions)
    _check_whole_words(words, positions, cands, k=5)
    assert cands[0] == cands[3] == cands[5] == []  # stop words: "The", "the", "on"
    assert all(len(cands[p]) == 5 for p in (1, 2, 4, 6, 7))
    assert all(c[0].isupper() for c in cands[1])  # "Council" -> Title-case candidates
    assert all(c.islower() for p in (2, 4, 6) for c in cands[p])
    assert all(c.endswith(".") for c in cands[7])  # "quotas." keeps its full stop
    # the trained model fills each slot with its own kind of word
    assert {c.lower() for c in cands[1]} & set(BODIES)
    assert set(cands[2]) & set(VERBS)
    assert set(cands[4]) & set(ACTS)
    assert set(cands[6]) & set(SECTORS)
    assert {c.rstrip(".") for c in cands[7]} & set(OBJECTS)
    # ALL-CAPS original -> ALL-CAPS candidates
    shout = ["the", "council", "adopted", "the", "REGULATION", "on", "fishing", "quotas"]
    (caps,) = mlm.candidates(shout, [4])
    assert caps and all(c.isupper() for c in caps)


def test_match_case_and_split_word() -> None:
    assert match_case("directive", "Regulation") == "Directive"
    assert match_case("directive", "REGULATION") == "DIRECTIVE"
    assert match_case("Directive", "regulation") == "directive"
    assert match_case("EU", "regulation") == "EU"  # acronyms stay
    assert match_case("directive", "eBay") == "directive"
    assert split_word("(fishing),") == split_word("(fishing),").__class__("(", "fishing", "),")
    assert split_word("...").core == ""


def test_masked_mode_batches_positions(mlm_dirs: dict[str, Path]) -> None:
    sub = MaskedLMSubstitution(str(mlm_dirs["trained"]), k=4, batch_size=3)
    words = (SENTENCE + " " + "the committee rejected the directive on banking rules").split()
    positions = [p for p, w in enumerate(words) if not is_stop_word(w)]
    assert len(positions) == 10
    lengths, handle = _count_passes(sub)
    try:
        cands = sub.candidates(words, positions)
    finally:
        handle.remove()
    assert len(lengths) == math.ceil(len(positions) / 3) == sub.num_forward_passes == 4
    _check_whole_words(words, positions, cands, k=4)
    assert all(cands)


def test_unmasked_mode_one_cached_pass_per_text(mlm_dirs: dict[str, Path]) -> None:
    sub = MaskedLMSubstitution(str(mlm_dirs["trained"]), k=5, mode="unmasked")
    words = SENTENCE.split()
    lengths, handle = _count_passes(sub)
    try:
        first = sub.candidates(words, [1, 2])
        second = sub.candidates(words, [4, 6, 7, 2])  # same text: served from the cached pass
        assert len(lengths) == 1
        changed = list(words)
        changed[4] = "directive"
        third = sub.candidates(changed, [4])
        assert len(lengths) == 2  # a new text costs a new pass
    finally:
        handle.remove()
    _check_whole_words(words, [1, 2], first, k=5)
    _check_whole_words(words, [4, 6, 7, 2], second, k=5)
    _check_whole_words(changed, [4], third, k=5)
    assert second[3] == first[1]
    assert all(first) and all(second) and third[0]
    assert "directive" not in third[0]


def test_unmasked_head_runs_only_where_asked_and_equals_full_logits(mlm: MaskedLMSubstitution) -> None:
    text = " ".join(s.rstrip(".") + "." for s in template_corpus(30, seed=5, fillers=0))
    words = text.split()
    assert len(mlm._encode(words).ids) > mlm.max_length  # two windows at least
    attackable = [p for p, w in enumerate(words) if split_word(w).attackable]
    positions = attackable[:4] + attackable[-2:]  # both ends: two windows
    lazy = MaskedLMSubstitution(str(mlm.model_name_or_path), k=5, mode="unmasked")
    eager = MaskedLMSubstitution(str(mlm.model_name_or_path), k=5, mode="unmasked")
    eager._split_model = lambda: None  # a model without a separable LM head: full logits at each slot
    rows: list[int] = []
    handle = lazy.model.cls.register_forward_hook(lambda m, a, out: rows.append(a[0].shape[0]))
    try:
        got = [lazy.candidates(words, [p])[0] for p in positions]
    finally:
        handle.remove()
    assert rows == [1] * len(positions)  # the vocabulary layer ran once per position asked, on it alone
    assert lazy.num_forward_passes < len(positions)  # encoder passes are shared by the positions of a window
    assert got == [eager.candidates(words, [p])[0] for p in positions]
    assert all(got)


def test_multi_piece_word_is_one_mask(mlm: MaskedLMSubstitution) -> None:
    words = ["The", "Council", "adopted", "the", "regxyzulation", "on", "fishing", "quotas"]
    pieces = mlm.tokenizer.tokenize("regxyzulation")
    assert len(pieces) > 2
    enc = mlm._encode(words)
    start, end = enc.spans[4]
    assert end - start == len(pieces)
    seq, slot = mlm._masked_input(enc, 4)
    assert seq.count(mlm.tokenizer.mask_token_id) == 1 and seq[slot] == mlm.tokenizer.mask_token_id
    assert len(seq) == len(enc.ids) - len(pieces) + 1 + 2  # + [CLS] and [SEP]
    (cands,) = mlm.candidates(words, [4])
    _check_whole_words(words, [4], [cands], k=5)
    assert set(cands) & set(ACTS)  # the slot is still recognised as "an act"
    unmasked = MaskedLMSubstitution(str(mlm.model_name_or_path), k=5, mode="unmasked")
    (u,) = unmasked.candidates(words, [4])
    _check_whole_words(words, [4], [u], k=5)


def test_long_text_is_windowed(mlm: MaskedLMSubstitution) -> None:
    text = " ".join(s.rstrip(".") + "." for s in template_corpus(40, seed=3, fillers=0))
    words = text.split()
    enc = mlm._encode(words)
    assert len(enc.ids) > 2 * mlm.max_length
    positions = [1, len(words) // 2 + 2, len(words) - 1]  # near the start, mid-text, the last word
    for mode in ("masked", "unmasked"):
        sub = mlm if mode == "masked" else MaskedLMSubstitution(str(mlm.model_name_or_path), k=5, mode=mode)
        lengths, handle = _count_passes(sub)
        try:
            cands = sub.candidates(words, positions)
        finally:
            handle.remove()
        assert lengths and max(lengths) <= sub.max_length
        _check_whole_words(words, positions, cands, k=5)
        assert all(cands), (mode, cands)
    # the window: full length, the word roughly centred, clipped at the ends of the document
    mask = mlm.tokenizer.mask_token_id
    for p in positions:
        seq, slot = mlm._masked_input(enc, p)
        assert len(seq) == mlm.max_length and seq[slot] == mask
        start, end = enc.spans[p]
        assert seq[1:slot] == enc.ids[start - (slot - 1) : start]  # the tokens just before the word
    assert mlm._masked_input(enc, positions[0])[0][:3] == [seq[0], enc.ids[0], mask]  # "[CLS] the [MASK]"
    assert mlm._masked_input(enc, positions[-1])[0][-3:] == [mask, *enc.ids[-1:], seq[-1]]  # "[MASK] . [SEP]"
    assert 0.4 < mlm._masked_input(enc, positions[1])[1] / mlm.max_length < 0.6
    # (no check of their meaning: the tiny model only learnt positions of single short sentences)


def test_top_k_recall_trained_vs_random(mlm: MaskedLMSubstitution, mlm_dirs: dict[str, Path]) -> None:
    texts = template_corpus(100, seed=1, fillers=0)
    trained = mlm.top_k_recall(texts, k=5, sample_positions=100, seed=0)
    assert trained == mlm.top_k_recall(texts, k=5, sample_positions=100, seed=0)  # seeded
    random_init = MaskedLMSubstitution(str(mlm_dirs["random"]), k=5).top_k_recall(texts, 5, 100, 0)
    print(f"top-5 recall: trained {trained:.2f}, random init {random_init:.2f}")
    assert trained > 0.8
    assert random_init < 0.3
    assert trained - random_init > 0.5
    assert mlm.top_k_recall(texts, k=5, sample_positions=50, seed=0, mode="unmasked") > 0.5


def test_errors(mlm: MaskedLMSubstitution, tmp_path: Path) -> None:
    with pytest.raises(IndexError):
        mlm.candidates(["fishing", "quotas"], [2])
    with pytest.raises(FileNotFoundError, match="not found"):
        MaskedLMSubstitution(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="mode"):
        MaskedLMSubstitution(str(mlm.model_name_or_path), mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attackable"):
        mlm.top_k_recall(["the on of"], k=5, sample_positions=3, seed=0)
    assert mlm.candidates([], []) == []
    assert mlm.candidates(["--", "2013", "the"], [0, 1, 2]) == [[], [], []]


class _RecordingSubstitution(WordSubstitution):
    """A substitution whose raw words are fixed per core; records what the base asks it for."""

    def __init__(self, table: dict[str, list[str]], k: int) -> None:
        super().__init__(k)
        self.table = table
        self.asked: list[list[int]] = []

    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        self.asked.append(list(positions))
        return [list(self.table.get(split_word(words[p]).core, [])) for p in positions]


def test_word_substitution_base_does_the_surface_work() -> None:
    raw = ["Directive", "regulation", "directive", "decision", "EU", "Proposal", "rule"]
    sub = _RecordingSubstitution({"Regulation": raw, "regulation": raw, "REGULATION": raw, "x2": ["y3"]}, k=3)
    assert isinstance(sub, Transformation) and sub.to("cpu") is sub
    words = ["The", "(Regulation),", "on", "regulation.", "REGULATION", "--", "x2", "unknown"]
    cands = sub.candidates(words, [7, 1, 0, 3, 1, 4, 5, 6])
    # one call, distinct attackable positions in the order asked (stop word, punctuation-only word skipped)
    assert sub.asked == [[7, 1, 3, 4, 6]]
    assert cands[0] == []  # "unknown": no raw words
    assert cands[1] == cands[4] == ["(Directive),", "(Decision),", "(EU),"]  # original dropped, case-matched
    assert cands[2] == cands[6] == []
    assert cands[3] == ["directive.", "decision.", "EU."]  # duplicates by case dropped; the acronym kept
    assert cands[5] == ["DIRECTIVE", "DECISION", "EU"]
    assert cands[7] == ["y3"]  # the base does no vocabulary filtering: that is the subclass's job
    assert sub.candidates(words, [0, 2]) == [[], []] and sub.asked[-1] == []  # asked even with nothing to do
    with pytest.raises(IndexError):
        sub.candidates(words, [8])
    with pytest.raises(ValueError, match="k must be"):
        _RecordingSubstitution({}, k=0)
