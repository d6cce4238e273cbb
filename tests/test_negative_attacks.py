"""Issue 16: negative-targeted attacks with insertions and label-guided candidates, on known-answer scorers.

A target driven by a word absent from the document is reached by insertion and not by substitution; label
words (TF-IDF from training documents, HotFlip through a model's embedding) rank the driving word first;
budgets and constraints hold for insertions (positions never shift, change rates count the original words);
the paper's result rows stay as they were."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from test_attack_engine import KeywordScorer
from torch import Tensor, nn

from xmtc.attack.attack import Attack
from xmtc.attack.base import Change, SearchState, insertion_slot, slot_edit
from xmtc.attack.constraints import MaxChangedWords, MaxChangeRate, NoRepeatModification, StopWords
from xmtc.attack.goal import GoalTarget, TargetedGoal, drive
from xmtc.attack.importance import LabelProbeImportance, MaskImportance
from xmtc.attack.insertion import WordInsertion
from xmtc.attack.label_guided import LabelGuidedWords
from xmtc.attack.label_words import HotFlipModel, LabelWords
from xmtc.attack.search import BeamSearch, GreedySearch
from xmtc.data.tokenizer import WordTokenizer

# labels: 0 and 2 hold the top-2; 1 is the target, driven by "salmon", which the document lacks. Every word of
# the document speaks a little for the target too, so replacing one by "salmon" gains 6 - 2 = 4 (logit 2.0,
# below label 2's 2.5) while inserting it gains 6 (logit 4.0): only an insertion pulls the target in.
DOC = "river boat net catch"
WEIGHTS = {"salmon": {1: 6.0}, "river": {1: 2.0}, "boat": {1: 2.0}, "net": {1: 2.0}, "catch": {1: 2.0},
           "rain": {1: -3.0}, "the": {1: 6.0}}
BIAS = [3.0, -10.0, 2.5, 0.0]
K = 2


class StubMaskedLM:
    """A masked LM that proposes ``words`` for every slot, replaced or inserted, and knows only them."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.inserted_sides: list[str] = []

    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        return [list(self.words) for _ in positions]

    def ranked_inserted(self, words: Sequence[str], positions: Sequence[int], side: str) -> list[list[str]]:
        self.inserted_sides.append(side)
        return [list(self.words) for _ in positions]

    def slot_log_probs(self, words: Sequence[str], slots: Sequence[tuple[int, str]]) -> Tensor:
        """Every known word equally likely except the last, least likely."""
        row = torch.zeros(len(self.words))
        row[-1] = -5.0
        return row.expand(len(slots), -1).clone()

    def to(self, device: str) -> StubMaskedLM:
        return self


def insertion(edits: Sequence[str], words: Sequence[str] = ("salmon",), k: int = 4) -> WordInsertion:
    part = WordInsertion(masked_lm=None, k=k, edits=edits)  # type: ignore[arg-type]
    part.attach_masked_lm(StubMaskedLM(words))  # type: ignore[arg-type]
    return part


def attack(transformation: object, budget: int = 1, **kw: object) -> Attack:
    goal = TargetedGoal(KeywordScorer(WEIGHTS, BIAS), k=K)
    return Attack(goal, transformation,  # type: ignore[arg-type]
                  constraints=[StopWords(), MaxChangedWords(budget), NoRepeatModification()], **kw)


def apply_changes(original: str, changes: Sequence[dict | Change]) -> str:
    """The adversarial text rebuilt from the original and the changes' positions in it (honest positions)."""
    slots = original.split()
    for c in changes:
        c = c if isinstance(c, dict) else c.__dict__
        kind = c.get("kind", "replace")
        assert kind == "replace" and slots[c["position"]] == c["old"] or kind != "replace" and c["old"] == ""
        slots[c["position"]] = c["new"] if kind == "replace" else insertion_slot(slots[c["position"]], c["new"], kind)
    return " ".join(slots)


# -- insertion --


def test_absent_driving_word_is_reached_by_insertion_not_substitution() -> None:
    substituted = attack(insertion(["replace"])).attack(DOC, 1, "negative")
    assert not substituted.success and substituted.rank_after > K
    assert [c.new for c in substituted.changes] == ["salmon"]  # it tried: the best replacement was kept
    inserted = attack(insertion(["replace", "insert_before"])).attack(DOC, 1, "negative")
    assert inserted.success and inserted.rank_after <= K
    (change,) = inserted.changes
    assert change.kind == "insert_before" and change.old == "" and change.new == "salmon"
    words = inserted.adversarial_text.split()
    assert words[change.position] == "salmon" and [w for w in words if w != "salmon"] == DOC.split()
    assert apply_changes(DOC, inserted.changes) == inserted.adversarial_text
    assert inserted.change_rate == 1 / 4  # one change over the ORIGINAL four words


def test_insert_after_and_only_insertions() -> None:
    part = insertion(["insert_after"])
    result = attack(part).attack(DOC, 1, "negative")
    assert result.success and result.changes[0].kind == "insert_after"
    assert result.adversarial_text.split()[result.changes[0].position + 1] == "salmon"
    assert part.mlm.inserted_sides == ["insert_after"] * len(part.mlm.inserted_sides)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="edits"):
        WordInsertion(masked_lm=None, edits=["swap"])  # type: ignore[list-item]


def test_budget_positions_and_change_rate_hold_for_insertions() -> None:
    # "salmon" is worth less here so that several insertions are needed; the budget stops them at 2 of 8 words
    weights = {**WEIGHTS, "salmon": {1: 0.5}}
    doc = "river boat net catch river boat net catch"
    for search in (GreedySearch(), BeamSearch(width=3)):
        goal = TargetedGoal(KeywordScorer(weights, [3.0, -30.0, 2.5, 0.0]), k=K)
        result = Attack(goal, insertion(["insert_before", "insert_after"], ["salmon", "trout"]),
                        constraints=[StopWords(), MaxChangeRate(0.25), NoRepeatModification()],
                        search=search).attack(doc, 1, "negative")
        assert result.status == "change_budget" and len(result.changes) == 2
        assert result.change_rate == 2 / 8 and result.num_words == 8  # not over the 10 words of the text now
        assert len(result.adversarial_text.split()) == 10
        assert len({c.position for c in result.changes}) == 2  # no word edited twice
        assert apply_changes(doc, result.changes) == result.adversarial_text


def test_a_word_with_an_insertion_is_never_edited_again() -> None:
    part = insertion(["replace", "insert_before"])
    a = attack(part, budget=5, importance=MaskImportance())
    state = SearchState(DOC.split(), DOC.split(), 4, torch.zeros(4))
    state.change(1, insertion_slot("boat", "salmon", "insert_before"))
    assert state.changes == [Change(1, "", "salmon", "insert_before")]
    assert a.constraints.positions(state) == [0, 2, 3]  # NoRepeatModification
    a.constraints = type(a.constraints)([StopWords()])  # even without it, the slot gets no candidates
    assert a.candidates(state, 1, state.current) == []
    assert a.candidates(state, 0, state.current) == ["salmon", "salmon river"]


def test_no_stop_word_is_inserted() -> None:
    a = attack(insertion(["insert_before"], ["the", "salmon"]))
    state = SearchState(DOC.split(), DOC.split(), 4, torch.zeros(4))
    assert a.candidates(state, 0, state.current) == ["salmon river"]  # "the" (worth 6 here) never proposed
    assert StopWords().allowed(state, 0, ["the river", "salmon river", "the"]) == [False, True, False]


def test_slot_edit_reads_each_kind_and_rejects_the_rest() -> None:
    assert slot_edit("boat", "ship") == ("replace", "ship")
    assert slot_edit("boat", "salmon boat") == ("insert_before", "salmon")
    assert slot_edit("boat", "boat salmon") == ("insert_after", "salmon")
    for bad in ("boat", "", "a b c", "salmon trout", "boat  salmon", "boat boat"):
        assert slot_edit("boat", bad) is None


def test_paper_rows_keep_their_shape() -> None:
    from dataclasses import dataclass

    from xmtc.attack.runner import result_row

    @dataclass
    class Stats:
        label_ids: tuple = ("a", "b", "c", "d")
        label_names: tuple = ("A", "B", "C", "D")
        freqs: tuple = (1, 2, 3, 4)

    sub = attack(insertion(["replace"])).attack(DOC, 1, "negative")
    ins = attack(insertion(["insert_before"])).attack(DOC, 1, "negative")
    sub_row = result_row(sub, Stats(), "m", "d", 0, "b", "cosine", 0.1)
    ins_row = result_row(ins, Stats(), "m", "d", 0, "b", "cosine", 0.1)
    assert list(sub_row["changes"][0]) == ["position", "old", "new"]  # as before issue 16
    assert ins_row["changes"][0]["kind"] == "insert_before"
    assert apply_changes(DOC, ins_row["changes"]) == ins_row["adversarial_text"]


# -- label words --


TRAIN = (["salmon salmon river fishing quota", "salmon trout river", "salmon net river",
          "wheat farm field", "wheat barley harvest", "cattle farm grass"])
TRAIN_LABELS = [np.array([1]), np.array([1]), np.array([1, 0]), np.array([0]), np.array([0]), np.array([2])]


def test_tfidf_label_words_rank_the_driving_word_first() -> None:
    words = LabelWords.fit(TRAIN, TRAIN_LABELS, 3)
    assert words.ranked([1], 1) == ["salmon"]
    assert words.ranked([0], 1) == ["wheat"]
    assert "salmon" not in words.ranked([2], 10)  # only words of the label's documents
    part = LabelGuidedWords(masked_lm=None, k=3, source="tfidf", fluency="none")
    part.attach_masked_lm(StubMaskedLM(["ship"]))  # type: ignore[arg-type]
    part.set_label_words(words)
    cands = part.candidates_toward(DOC.split(), [0], GoalTarget("negative", (1,)), None)[0]
    assert cands[0] == "salmon" and "salmon river" in cands and "river" not in cands
    # not guided for other kinds: the masked LM's substitutions
    assert part.candidates_toward(DOC.split(), [0], GoalTarget("positive", (1,)), None)[0] == ["ship"]
    with pytest.raises(ValueError, match="label words"):
        LabelGuidedWords(masked_lm=None).candidates_toward(DOC.split(), [0], GoalTarget("negative", (1,)), None)


def test_label_guided_attack_succeeds_where_the_masked_lm_fails() -> None:
    """The masked LM knows nothing of the target ("ship"); the label words bring "salmon" in by insertion."""
    plain = attack(insertion(["replace", "insert_before"], ["ship"])).attack(DOC, 1, "negative")
    part = LabelGuidedWords(masked_lm=None, k=3, source="tfidf", fluency="rerank")
    part.attach_masked_lm(StubMaskedLM(["ship", "salmon"]))  # type: ignore[arg-type]
    part.set_label_words(LabelWords.fit(TRAIN, TRAIN_LABELS, 3))
    guided = attack(part).attack(DOC, 1, "negative")
    assert not plain.success and guided.success
    assert [(c.kind, c.new) for c in guided.changes] == [("insert_before", "salmon")]


def test_fluency_filter_keeps_what_the_masked_lm_finds_plausible() -> None:
    words = LabelWords.fit(TRAIN, TRAIN_LABELS, 3)
    part = LabelGuidedWords(masked_lm=None, k=5, source="tfidf", fluency="filter", fluency_top=2,
                            edits=["replace"])
    part.attach_masked_lm(StubMaskedLM(["trout", "salmon", "river"]))  # type: ignore[arg-type]  # river least likely
    part.set_label_words(words)
    got = part.candidates_toward(["lake"], [0], GoalTarget("negative", (1,)), None)[0]
    assert got == [w for w in words.ranked([1], 10) if w in ("trout", "salmon")]
    part.fluency = "rerank"  # the masked LM's order; words it does not know after, in the label words' order
    got = part.candidates_toward(["lake"], [0], GoalTarget("negative", (1,)), None)[0]
    assert got[:3] == ["salmon", "trout", "river"] and len(got) == 5


class BagOfEmbeddings(nn.Module):
    """logits = W · mean(embeddings of the tokens): linear in each embedding, so HotFlip's first-order gain of a
    replacement is its exact gain (times 1/length)."""

    def __init__(self, vocab: list[str], dim: int = 6, labels: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tokenizer = WordTokenizer(vocab, max_length=50)
        self.embedding = nn.Embedding(len(vocab), dim)
        self.embedding.weight.data = torch.randn(len(vocab), dim, generator=g)
        self.out = nn.Linear(dim, labels, bias=False)
        self.out.weight.data = torch.randn(labels, dim, generator=g)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        ids, lengths = inputs["input_ids"], inputs["lengths"]
        mask = (torch.arange(ids.shape[1]) < lengths[:, None]).float()[..., None]
        return self.out((self.embedding(ids) * mask).sum(1) / lengths[:, None].float())

    def logits_of(self, texts: Sequence[str]) -> Tensor:
        seqs = [torch.from_numpy(self.tokenizer.encode(t)) for t in texts]
        ids = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        return self(dict(input_ids=ids, lengths=torch.tensor([len(s) for s in seqs]))).detach()


def test_hotflip_ranks_the_driving_word_first_and_is_exact_for_a_linear_model() -> None:
    vocab = ["<pad>", "<unk>", "river", "boat", "net", "catch", "salmon", "trout", "wheat", "the"]
    model = BagOfEmbeddings(vocab)
    # make "salmon" the word that drives label 1: its embedding along label 1's weights
    model.embedding.weight.data[6] = 4.0 * model.out.weight.data[1] / model.out.weight.data[1].norm()
    flip = HotFlipModel(model)
    words = DOC.split()
    gains = flip.scores(words, [(1, "replace"), (1, "insert_before"), (3, "insert_after")], [1])
    for row in gains:
        assert flip.vocabulary[int(row.argmax())] == "salmon"
    assert torch.isinf(gains[:, [0, 1, 9]]).all()  # padding, unknown and stop words are never proposed
    # replacement: the first-order gain is exact for this model (mean over 4 tokens)
    base = model.logits_of([DOC])[0, 1]
    for j in (2, 4, 5, 6, 7, 8):
        text = " ".join([*words[:1], vocab[j], *words[2:]])
        exact = float(model.logits_of([text])[0, 1] - base)
        assert gains[0, j].item() == pytest.approx(exact, abs=1e-5)
    with pytest.raises(TypeError, match="word-embedding model"):
        HotFlipModel(KeywordScorer(WEIGHTS, BIAS))


def test_gradient_guided_candidates_through_the_attack() -> None:
    vocab = ["<pad>", "<unk>", "river", "boat", "net", "catch", "salmon", "trout", "wheat"]
    model = BagOfEmbeddings(vocab)
    model.embedding.weight.data[6] = 4.0 * model.out.weight.data[1] / model.out.weight.data[1].norm()
    part = LabelGuidedWords(masked_lm=None, k=2, source="gradient", fluency="none", edits=["insert_before"])
    part.attach_masked_lm(StubMaskedLM(["ship"]))  # type: ignore[arg-type]
    got = part.candidates_toward(DOC.split(), [2], GoalTarget("negative", (1,)), model)[0]
    assert got[0] == "salmon net"


# -- importance --


def test_label_probe_importance_measures_the_label_word_put_in() -> None:
    goal = TargetedGoal(KeywordScorer(WEIGHTS, BIAS), k=K)
    doc = "river rain boat"
    row = goal.scores([doc])[0]
    target, _ = goal.target_for(row, "negative", [1])
    reference = goal.scores([doc], [1])[0]
    imp = LabelProbeImportance(probes=["replace", "insert_before"])
    with pytest.raises(ValueError, match="label words"):
        next(imp.steps(goal, doc.split(), [0, 1, 2], target, reference))
    imp.set_label_words(LabelWords.fit(TRAIN, TRAIN_LABELS, 3))
    got = drive(imp.steps(goal, doc.split(), [0, 2], target, reference), goal.score_batched)
    # replacing "rain" (-3) by "salmon" (+6) would gain 9, but position 1 is not allowed here; elsewhere
    # replacing gains 6 - 2 = 4 and inserting 6
    assert got[[0, 2]].tolist() == pytest.approx([6.0, 6.0], rel=1e-4) and got[1] == float("-inf")
    got = drive(imp.steps(goal, doc.split(), [0, 1, 2], target, reference), goal.score_batched)
    assert got.tolist() == pytest.approx([6.0, 9.0, 6.0], rel=1e-4)
    # mask importance only sees what removing a word does: "rain" first too, but the others gain nothing
    mask = drive(MaskImportance().steps(goal, doc.split(), [0, 1, 2], target, reference), goal.score_batched)
    assert mask.tolist() == pytest.approx([-2.0, 3.0, -2.0], rel=1e-4)


# -- the masked LM's slots (a real, tiny masked LM) --


def test_masked_lm_slots_for_replaced_and_inserted_words(tiny_attack_models) -> None:
    from xmtc.attack.transformation import MaskedLMSubstitution

    mlm = MaskedLMSubstitution(str(tiny_attack_models[0]), k=4)
    words = ["the", "council", "adopted", "fishing", "quotas", "for", "member", "states"]
    logp = mlm.slot_log_probs(words, [(3, "replace"), (3, "insert_before"), (3, "insert_after"), (0, "replace")])
    assert logp.shape == (4, len(mlm._vocab_words))
    for row in logp[:3]:  # distributions over the usable whole words only
        finite = torch.isfinite(row)
        assert torch.logsumexp(row[finite], 0).item() == pytest.approx(0.0, abs=1e-4)
        assert all(mlm._vocab_words[i] for i in torch.nonzero(finite).reshape(-1).tolist())
    # the replaced slot is the masked slot the substitutions come from
    assert mlm._vocab_words[int(logp[0].argmax())] == mlm.ranked_words(words, [3])[0][0]
    # the inserted mask sits right before / after the word's tokens
    enc = mlm._encode(words)
    start, end = enc.spans[3]
    mask = mlm.tokenizer.mask_token_id
    for side, left, right in (("insert_before", enc.ids[start - 1], enc.ids[start]),
                              ("insert_after", enc.ids[end - 1], enc.ids[end])):
        seq, slot = mlm._inserted_input(enc, 3, side)
        assert seq[slot] == mask and (seq[slot - 1], seq[slot + 1]) == (left, right)
    ranked = mlm.ranked_inserted(words, [3, 5], "insert_after")
    assert len(ranked) == 2 and all(ranked)
    part = WordInsertion(str(tiny_attack_models[0]), k=3, edits=["insert_before", "insert_after"])
    (cands,) = part.candidates(words, [3])
    kinds = [slot_edit(words[3], c) for c in cands]
    assert len(cands) == 6 and all(k is not None and k[0] != "replace" for k in kinds)
    assert part.candidates(words, [0]) == [[]]  # no insertion beside a stop word (the constraints skip it anyway)
