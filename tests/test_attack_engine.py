"""The attack engine (goal, importance, greedy search) on small real scorers whose answers are known.

``KeywordScorer``: label scores are sigmoids of weighted keyword counts, with dyadic weights so every
logit is exact whatever the batch; which word drives which label is therefore known in advance.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from xmtc.attack.attack import GreedyWordSearch
from xmtc.attack.base import AttackResult, Change, TextScorer, Transformation
from xmtc.attack.goal import GoalTarget, QueryBudgetExhausted, TargetedGoal, max_changes
from xmtc.attack.importance import gradient_importance, mask_importance
from xmtc.attack.reference import reference_greedy_attack
from xmtc.attack.search import usable_candidates
from xmtc.attack.stopwords import is_stop_word


class KeywordScorer(nn.Module):
    """score[l] = sigmoid(bias[l] + Σ_words weight[word][l]); counts its calls and texts."""

    def __init__(self, weights: dict[str, dict[int, float]], bias: Sequence[float]) -> None:
        super().__init__()
        self.vocab = {w: i for i, w in enumerate(sorted(weights))}
        w = torch.zeros(len(bias), len(self.vocab))
        for word, per_label in weights.items():
            for label, value in per_label.items():
                w[label, self.vocab[word]] = value
        self.register_buffer("weight", w)
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))
        self.calls = 0
        self.texts_scored = 0

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        self.calls += 1
        self.texts_scored += len(texts)
        counts = torch.zeros(len(texts), len(self.vocab))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                j = self.vocab.get(word.strip(".,;:!?\"'()"))
                if j is not None:
                    counts[i, j] += 1
        return torch.sigmoid(counts @ self.weight.T + self.bias)


class SubsetKeywordScorer(KeywordScorer):
    """A KeywordScorer that computes only the label columns asked for (``labels=``), as AttentionXML does;
    records the width of every call."""

    def __init__(self, weights: dict[str, dict[int, float]], bias: Sequence[float]) -> None:
        super().__init__(weights, bias)
        self.widths: list[int] = []

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None) -> Tensor:
        full = super().score_texts(texts, batch_size)  # exact (dyadic weights), so slicing is the same numbers
        out = full if labels is None else full[:, list(labels)]
        self.widths.append(out.shape[1])
        return out


class DictTransformation:
    """Fixed candidates per word (lower-cased lookup); records the positions it was asked about."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[int] = []

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]:
        self.asked.extend(positions)
        return [list(self.table.get(words[p].lower(), [])) for p in positions]


# labels: 0 fish, 1 outdoor, 2 family, 3 morning, 4 music, 5 other
WEIGHTS = {
    "fishing": {0: 4.0},
    "angling": {0: 0.25},
    "boating": {0: 1.5, 1: 0.5},
    "trout": {0: 5.0},
    "lake": {0: 0.5, 1: 1.0},
    "summer": {1: 1.0},
    "grandpa": {2: 2.5},
    "morning": {3: 2.0},
    "music": {4: 3.5},
    "the": {0: 6.0},  # a stop word that would be the most important word if it could be attacked
}
BIAS = [-1.0, -1.0, -1.25, -1.5, -1.75, -2.0]
K = 3
# logits: 0: 3.5, 1: 1.0, 2: 1.25, 3: 0.5, 4: -1.75, 5: -2  -> top-3 = {0, 2, 1}; "fishing" drives label 0
DOC_A = "grandpa enjoys fishing near quiet lake every sunny summer morning"  # 10 words: 1 change at 10%
# a 12-word text that needs two changes: label 0 logit 7 -> 3.5 -> -0.5
DOC_C = "grandpa loves fishing trips and weekend fishing contests near summer morning shores"
FLIP = {"fishing": ["boating", "angling"]}


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer(WEIGHTS, BIAS)


def make_search(scorer: TextScorer, table: dict[str, list[str]], **kw) -> GreedyWordSearch:
    goal = TargetedGoal(scorer, k=K, batch_size=kw.pop("batch_size", 64), query_budget=kw.pop("query_budget", None))
    return GreedyWordSearch(goal, DictTransformation(table), **kw)


# -- goal --


def test_goal_batches_caches_and_counts(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K, batch_size=4)
    texts = [f"fishing {i}" for i in range(10)]
    rows = goal.scores(texts + texts[:3])  # duplicates inside one request are sent once
    assert rows.shape == (13, 6)
    assert (goal.queries, goal.calls, scorer.calls) == (10, 3, 3)
    torch.testing.assert_close(rows[10:], rows[:3])
    goal.scores(texts[::2])  # all cached
    assert (goal.queries, scorer.calls) == (10, 3)
    assert torch.equal(goal.scores(["lake"])[0], scorer.score_texts(["lake"])[0])
    goal.reset()
    assert (goal.queries, goal.calls) == (0, 0)
    goal.scores(texts[:1])
    assert goal.queries == 1


def test_goal_query_budget_refuses_before_sending(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K, query_budget=5)
    goal.scores(["a", "b", "c"])
    with pytest.raises(QueryBudgetExhausted):
        goal.scores(["a", "d", "e", "f"])  # 3 new texts, 3 + 3 > 5
    assert goal.queries == 3 and scorer.calls == 1
    goal.scores(["a", "d", "e"])  # exactly at the budget
    assert goal.queries == 5


def test_goal_lru_cache_is_bounded(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K, max_cache=2)
    rows = goal.scores(["a", "b", "c"])
    assert rows.shape[0] == 3 and len(goal._cache) == 2
    goal.scores(["c"])
    assert goal.queries == 3
    calls = scorer.calls
    goal.scores(["a"])  # evicted: sent again, but still one distinct text (query) of this attack
    assert scorer.calls == calls + 1 and goal.queries == 3


def test_rank_topk_success_and_progress(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K)
    row = goal.scores([DOC_A])[0]
    assert goal.topk(row) == [0, 2, 1]
    assert [goal.rank(row, label) for label in range(6)] == [1, 3, 2, 4, 5, 6]
    pos, why = goal.target_for(row, "positive", 0)
    assert pos == GoalTarget("positive", (0,)) and why == ""
    assert goal.target_for(row, "positive", 4)[0] is None
    assert goal.target_for(row, "negative", 0)[0] is None
    neg = goal.target_for(row, "negative", [4])[0]
    assert neg == GoalTarget("negative", (4,))
    non = goal.target_for(row, "nontargeted", [0, 2, 5])[0]
    assert non == GoalTarget("nontargeted", (0, 2))
    assert not goal.is_success(row, pos) and not goal.is_success(row, neg) and not goal.is_success(row, non)
    flipped = goal.scores([DOC_A.replace("fishing", "angling")])
    assert goal.is_success(flipped[0], pos) and goal.is_success(flipped[0], non)
    gained = goal.progress(flipped[:, [0]], pos, row[[0]])  # progress takes the Γ columns
    assert goal.space == "probability"  # KeywordScorer gives probabilities: gains are their log-odds
    assert gained.item() == pytest.approx(3.5 - (-0.25), rel=1e-5)  # logit 3.5 -> -0.25
    assert goal.progress(flipped[:, [0]], GoalTarget("negative", (0,)), row[[0]]).item() == pytest.approx(
        -gained.item())
    assert goal.progress(flipped[:, [0, 2]], non, row[[0, 2]]).item() == pytest.approx(gained.item())  # 2 unchanged
    with pytest.raises(ValueError, match="2 Γ columns"):
        goal.progress(flipped, non, row)  # full rows are not Γ columns


def test_max_changes_floor_rule() -> None:
    assert [max_changes(n, 0.1) for n in (5, 9, 10, 12, 19, 20)] == [0, 0, 1, 1, 1, 2]
    assert max_changes(100, 0.29) == 29 and max_changes(7, 0.7) == 4


def test_usable_candidates_filters() -> None:
    assert usable_candidates("fishing", ["fishing", "the", "", "two words", "angling", "angling", "boat"]) == [
        "angling", "boat"]


# -- importance --


@pytest.mark.parametrize("mask_token", ["[UNK]", None])
def test_importance_ranks_driving_word_first(scorer: KeywordScorer, mask_token: str | None) -> None:
    goal = TargetedGoal(scorer, k=K)
    words = DOC_A.split()
    row = goal.scores([DOC_A])[0]
    target = goal.target_for(row, "positive", 0)[0]
    imp = mask_importance(goal, words, target, row[list(target.labels)], mask_token)
    assert imp.shape == (len(words),)
    assert int(torch.argmax(imp)) == words.index("fishing")
    assert imp[words.index("lake")] > 0 and imp[words.index("grandpa")] == 0
    assert goal.queries == 1 + len(words) and goal.calls == 2  # all masked copies in one call


@pytest.mark.parametrize("mask_token", ["[UNK]", None])
def test_importance_includes_last_word_and_skips_stop_words(scorer: KeywordScorer, mask_token: str | None) -> None:
    goal = TargetedGoal(scorer, k=K)
    words = ["grandpa", "went", "to", "the", "lake", "for", "fishing"]
    row = goal.scores([" ".join(words)])[0]
    target = goal.target_for(row, "positive", 0)[0]
    imp = mask_importance(goal, words, target, row[list(target.labels)], mask_token)
    assert int(torch.argmax(imp)) == len(words) - 1
    stop = [i for i, w in enumerate(words) if is_stop_word(w)]
    assert stop == [2, 3, 5] and all(imp[i] == -math.inf for i in stop)
    assert goal.queries == 1 + len(words) - len(stop)  # stop words are not even scored


# -- search --


def test_positive_attack_finds_the_flipping_substitution(scorer: KeywordScorer) -> None:
    search = make_search(scorer, FLIP, max_change_rate=0.1)
    result = search.attack(DOC_A, 0, "positive")
    assert result.success and result.status == "success"
    assert result.changes == [Change(2, "fishing", "angling")]  # boating makes less progress
    assert result.adversarial_text == DOC_A.replace("fishing", "angling")
    assert (result.rank_before, result.topk_before) == (1, [0, 2, 1])
    assert result.rank_after == 4 and 0 not in result.topk_after
    assert result.queries == 1 + 10 + 2 and result.num_words == 10
    assert result.similarity is None and result.change_rate == pytest.approx(0.1)


def test_stop_words_are_never_attacked(scorer: KeywordScorer) -> None:
    text = "the grandpa likes the fishing"
    search = make_search(scorer, {"the": ["angling"], "fishing": ["boating"]}, max_change_rate=1.0)
    result = search.attack(text, 0, "positive")
    assert all(not is_stop_word(text.split()[p]) for p in search.transformation.asked)
    assert all(c.old != "the" for c in result.changes)


def test_negative_attack(scorer: KeywordScorer) -> None:
    search = make_search(scorer, {"quiet": ["music"]})
    result = search.attack(DOC_A, 4, "negative")
    assert result.success and result.changes == [Change(4, "quiet", "music")]
    assert 4 not in result.topk_before and 4 in result.topk_after
    assert result.rank_before == 5 and result.rank_after == 2


def test_nontargeted_attack(scorer: KeywordScorer) -> None:
    search = make_search(scorer, FLIP)
    result = search.attack(DOC_A, [0, 2, 5], "nontargeted")
    assert result.success and result.target == 0 and result.rank_after > K
    assert "gamma=[0, 2]" in result.message


def test_precondition_skips(scorer: KeywordScorer) -> None:
    search = make_search(scorer, FLIP)
    for target, kind in [(4, "positive"), (0, "negative"), ([4, 5], "nontargeted")]:
        result = search.attack(DOC_A, target, kind)
        assert result.status == "skipped" and not result.success and result.message
        assert result.queries == 1 and result.adversarial_text == DOC_A and result.changes == []
    assert search.transformation.asked == []


def test_change_budget_floor_rule(scorer: KeywordScorer) -> None:
    assert len(DOC_C.split()) == 12
    table = {"fishing": ["angling"]}
    tight = make_search(scorer, table, max_change_rate=0.1).attack(DOC_C, 0, "positive")  # floor(1.2) = 1
    assert tight.status == "change_budget" and not tight.success
    assert tight.changes == [Change(2, "fishing", "angling")]
    assert tight.queries == 1 + 11 + 1  # stopped before asking about the next position
    enough = make_search(scorer, table, max_change_rate=0.2).attack(DOC_C, 0, "positive")  # floor(2.4) = 2
    assert enough.success and [c.position for c in enough.changes] == [2, 6]


def test_query_budget(scorer: KeywordScorer) -> None:
    early = make_search(scorer, FLIP, query_budget=5).attack(DOC_A, 0, "positive")
    assert early.status == "query_budget" and not early.success and early.queries == 1
    assert early.adversarial_text == DOC_A and early.rank_after == early.rank_before
    late = make_search(scorer, FLIP, query_budget=11).attack(DOC_A, 0, "positive")  # importance fits, candidates not
    assert late.status == "query_budget" and late.queries == 11 and late.changes == []
    ok = make_search(scorer, FLIP, query_budget=13).attack(DOC_A, 0, "positive")
    assert ok.success and ok.queries == 13


def test_unhelpful_position_keeps_its_word(scorer: KeywordScorer) -> None:
    # every candidate for "fishing" raises label 0 (trout) or is no better; "lake" -> "summer" helps a little
    table = {"fishing": ["trout", "fishing"], "lake": ["summer"]}
    result = make_search(scorer, table, max_change_rate=1.0).attack(DOC_A, 0, "positive")
    words = result.adversarial_text.split()
    assert words[2] == "fishing"  # the reference code would have kept "trout", the last candidate
    assert result.changes == [Change(5, "lake", "summer")]
    assert result.status == "failed" and not result.success


def test_compares_with_current_not_original_scores() -> None:
    # "boating" first lowers label 0 a lot; at the next word, "x" gains nothing over the CURRENT text
    # but would look like progress against the original one.
    scorer = KeywordScorer({"fishing": {0: 4.0}, "boating": {0: 0.5}, "lake": {0: 3.0}, "pond": {0: 3.0}},
                           [-1.0, 1.5, 1.25, 1.0])
    result = make_search(scorer, {"fishing": ["boating"], "lake": ["pond"]}, max_change_rate=1.0).attack(
        "fishing lake", 0, "positive")
    assert result.changes == [Change(0, "fishing", "boating")] and result.status == "failed"


def test_candidate_batch_off_same_decisions(scorer: KeywordScorer) -> None:
    batched = make_search(scorer, FLIP).attack(DOC_A, 0, "positive")
    assert scorer.calls == 3  # original, masked copies, the two candidates
    single = make_search(scorer, FLIP, candidate_batch=False).attack(DOC_A, 0, "positive")
    assert single == batched and scorer.calls == 3 + 4


# -- the engine against the plain reference implementation --


def random_world(seed: int, subset: bool = False) -> tuple[KeywordScorer, dict[str, list[str]], list[str]]:
    rng = random.Random(seed)
    content = [f"w{i}" for i in range(30)]
    stops = ["the", "of", "and", "with"]
    num_labels = 10
    weights = {w: {lab: rng.randint(-8, 16) / 4 for lab in rng.sample(range(num_labels), 2)} for w in content}
    weights["the"] = {0: 2.0}
    bias = [rng.randint(-12, 0) / 4 for _ in range(num_labels)]
    table = {w: rng.sample([c for c in content if c != w], rng.randint(0, 4)) + rng.sample(stops, 1)
             for w in content}
    texts = [" ".join(rng.choices(content + stops, k=rng.randint(6, 24))) for _ in range(12)]
    return (SubsetKeywordScorer if subset else KeywordScorer)(weights, bias), table, texts


PROFILES = [("chosen", "current"), ("every", "original")]  # Algorithm 1's reading, the paper's code's


@pytest.mark.parametrize("profile", PROFILES, ids=["algorithm1", "paper"])
@pytest.mark.parametrize("subset", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_matches_reference(seed: int, subset: bool, profile: tuple[str, str]) -> None:
    check, source = profile
    scorer, table, texts = random_world(seed, subset)
    rng = random.Random(100 + seed)
    engine_calls = reference_calls = compared = 0
    outcomes = set()
    for i, text in enumerate(texts):
        row = scorer.score_texts([text])[0]
        top = torch.topk(row, K).indices.tolist()
        rest = [j for j in range(row.numel()) if j not in top]
        kind = ("positive", "negative", "nontargeted")[i % 3]
        target = (rng.choice(top) if kind == "positive" else rng.choice(rest) if kind == "negative"
                  else rng.sample(range(row.numel()), 4))
        rate = rng.choice([0.1, 0.2, 0.5])
        mask = "[UNK]" if i % 2 else None
        before = scorer.calls
        ours = make_search(scorer, table, max_change_rate=rate, mask_token=mask, batch_size=8,
                           success_check=check, candidates_from=source).attack(text, target, kind)
        engine_calls += scorer.calls - before
        before, sent = scorer.calls, scorer.texts_scored
        ref = reference_greedy_attack(scorer, text, target, kind, DictTransformation(table), k=K,
                                      max_change_rate=rate, mask_token=mask, success_check=check,
                                      candidates_from=source)
        reference_calls += scorer.calls - before
        assert ref.queries <= scorer.texts_scored - sent  # no cache: every text is sent, repeats too
        for field in ("status", "success", "adversarial_text", "changes", "target", "rank_before",
                      "rank_after", "topk_before", "topk_after", "num_words"):
            assert getattr(ours, field) == getattr(ref, field), (field, seed, i)
        # the engine scores every candidate of a position; the paper's code stops at the first success
        assert ours.queries == ref.queries if check == "chosen" else ours.queries >= ref.queries
        outcomes.add(ours.status)
        compared += 1
    assert compared == len(texts) and len(outcomes) >= 2
    # the reference sends masked copies 12 to a call, as the paper's code, and each candidate alone. With <= 4
    # candidates a position here the engine needs 1.0-1.7x fewer calls under Algorithm 1's reading; the paper's
    # success test adds a screen pass and chunks of full rows, so calls do not measure it (bench/bench_attack.py
    # measures the time)
    if check == "chosen":
        assert engine_calls <= reference_calls


@pytest.mark.parametrize("subset", [False, True])
@pytest.mark.parametrize("budget", [None, 30])
def test_attack_many_merges_documents_and_matches_one_at_a_time(budget: int | None, subset: bool) -> None:
    scorer, table, texts = random_world(3, subset)
    rng = random.Random(7)
    jobs = []
    for i, text in enumerate(texts):
        top = torch.topk(scorer.score_texts([text])[0], K).indices.tolist()
        jobs.append((text, rng.choice(top) if i % 2 else rng.choice([j for j in range(10) if j not in top]),
                     "positive" if i % 2 else "negative"))
    search = make_search(scorer, table, batch_size=64, query_budget=budget)
    before = scorer.calls
    alone = [search.attack(*job) for job in jobs]
    calls_alone, before = scorer.calls - before, scorer.calls
    together = search.attack_many(jobs)
    calls_together = scorer.calls - before
    assert together == alone  # same decisions, queries, ranks, budgets per attack
    assert calls_together * 3 < calls_alone  # one forward pass serves several documents
    assert search.attack_many([]) == []


def test_full_rows_only_for_the_original_and_kept_changes() -> None:
    scorer, table, texts = random_world(4, subset=True)
    rng = random.Random(4)
    full_width = scorer.weight.shape[0]
    for i, text in enumerate(texts):
        top = torch.topk(scorer.score_texts([text])[0], K).indices.tolist()
        scorer.widths.clear()
        kind = "positive" if i % 2 else "negative"
        target = rng.choice(top) if kind == "positive" else rng.choice([j for j in range(full_width) if j not in top])
        result = make_search(scorer, table, max_change_rate=0.5, batch_size=64).attack(text, target, kind)
        # everything else (masked copies, candidates) asks for the one target column
        assert scorer.widths.count(full_width) == 1 + len(result.changes), (i, scorer.widths)
        assert set(scorer.widths) <= {1, full_width}


def test_reference_query_budget_same_decisions(scorer: KeywordScorer) -> None:
    for budget in (5, 11, 12, 13):
        ours = make_search(scorer, FLIP, query_budget=budget).attack(DOC_A, 0, "positive")
        ref = reference_greedy_attack(scorer, DOC_A, 0, "positive", DictTransformation(FLIP), k=K,
                                      query_budget=budget, success_check="chosen", candidates_from="current")
        assert (ours.status, ours.adversarial_text, ours.changes) == (ref.status, ref.adversarial_text, ref.changes)
        assert ref.queries <= budget


# -- white box --


@pytest.fixture
def tiny_axml():
    from xmtc.data.label_stats import LabelStats
    from xmtc.data.tokenizer import WordTokenizer
    from xmtc.models import AttentionXML

    torch.manual_seed(0)
    tok = WordTokenizer.build(["grandpa enjoys fishing near the quiet lake", "trip music morning s"])
    stats = LabelStats(["a", "b", "c"], ["A", "B", "C"], np.array([5, 3, 1]), 10, 0.55, 1.5)
    model = AttentionXML(tokenizer=tok, label_stats=stats, embedding_dim=8, hidden_size=8, linear_sizes=[8])
    model.train()
    return model


def test_gradient_importance_on_attentionxml(tiny_axml) -> None:
    text = "Grandpa's fishing-trip near the lake, zzzunknown --"
    words = text.split()
    imp = gradient_importance(tiny_axml, text, 1)
    assert imp.shape == (len(words),) and tiny_axml.training  # training mode restored
    assert imp[3] == -math.inf  # "the"
    others = [i for i in range(len(words)) if i != 3]
    assert all(math.isfinite(imp[i]) for i in others)
    assert imp[-1] == 0.0 and all(imp[i] > 0 for i in others[:-1])  # "--" has no tokens
    assert all(p.grad is None for p in tiny_axml.parameters())

    # independent check: the gradient w.r.t. a leaf embedding fed in place of the embedding layer
    tiny_axml.eval()
    inputs = tiny_axml.encode([text])
    emb = tiny_axml.embedding(inputs["input_ids"]).detach().requires_grad_(True)
    clone = copy.deepcopy(tiny_axml)

    class Fixed(nn.Module):
        def forward(self, ids: Tensor) -> Tensor:
            return emb

    clone.embedding = Fixed()
    torch.sigmoid(clone(inputs))[0, 1].backward()
    norms = emb.grad[0].norm(dim=-1).double()
    # tokens: grandpa s | fishing trip | near | the | lake | zzzunknown
    assert torch.allclose(tiny_axml.token_gradients(" ".join(words), [1]), norms)
    expected = [norms[0:2].max(), norms[2:4].max(), norms[4], None, norms[6], norms[7]]
    for i, value in enumerate(expected):
        if value is not None:
            assert imp[i].item() == pytest.approx(value.item())


def test_gradient_search_runs_on_attentionxml(tiny_axml) -> None:
    goal = TargetedGoal(tiny_axml, k=2)
    row = goal.scores(["grandpa enjoys fishing near the quiet lake"])[0]
    target = goal.topk(row)[0]
    search = GreedyWordSearch(goal, DictTransformation({"fishing": ["music", "trip"], "lake": ["morning"]}),
                              max_change_rate=0.5, importance="gradient")
    result = search.attack("grandpa enjoys fishing near the quiet lake", target, "positive")
    assert isinstance(result, AttackResult) and result.status in {"success", "failed", "change_budget"}
    # no masked copies (gradients cost no queries); calls: the text's full row and Γ columns, then per
    # position its candidates' Γ columns and, for a kept change, one full row
    assert 1 <= result.queries <= 1 + 3 and goal.calls <= 2 + 2 * 2


def test_gradient_importance_needs_embeddings(scorer: KeywordScorer) -> None:
    with pytest.raises(TypeError, match="embedding"):
        gradient_importance(scorer, DOC_A, 0)
    with pytest.raises(TypeError, match="embedding"):
        make_search(scorer, FLIP, importance="gradient")


def test_protocols() -> None:
    assert isinstance(KeywordScorer(WEIGHTS, BIAS), TextScorer)
    assert isinstance(DictTransformation({}), Transformation)


def test_document_of_only_stop_words_fails_cleanly(scorer: KeywordScorer) -> None:
    text = "the of and with the"
    top = torch.topk(scorer.score_texts([text])[0], K).indices.tolist()
    result = make_search(scorer, FLIP).attack(text, top[0], "positive")
    assert result.status == "failed" and not result.success and result.changes == []
    assert "no attackable words" in result.message and result.adversarial_text == text


def test_attentionxml_scores_a_label_subset_as_the_full_row(tiny_axml) -> None:
    texts = ["grandpa enjoys fishing near the quiet lake", "music", "trip morning lake fishing grandpa"]
    full = tiny_axml.score_texts(texts, batch_size=2)
    part = tiny_axml.score_texts(texts, batch_size=2, labels=[2, 0])
    assert part.shape == (3, 2)
    torch.testing.assert_close(part, full[:, [2, 0]], atol=1e-6, rtol=0)
    assert tiny_axml.training  # restored
    with pytest.raises(ValueError, match="out of range for 3 labels"):
        tiny_axml.score_texts(texts, labels=[3])


def test_attentionxml_inference_without_packing_equals_the_packed_path(tiny_axml) -> None:
    import xmtc.models.attentionxml as axml

    texts = ["grandpa enjoys fishing near the quiet lake", "music", "trip morning lake fishing grandpa"]
    fast = tiny_axml.score_texts(texts)  # eval on a CPU: unpacked BiLSTM
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(axml, "supported", lambda lstm: False)  # nn.LSTM over a PackedSequence
        packed = tiny_axml.score_texts(texts)
    torch.testing.assert_close(fast, packed, atol=1e-6, rtol=0)


class BatchNoiseScorer(KeywordScorer):
    """Float noise that depends on a text's place in its batch, below the gain tolerance (as batched float32
    kernels)."""

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        return super().score_texts(texts, batch_size) - 2e-7 * torch.arange(len(texts))[:, None]


def test_candidates_the_model_cannot_tell_apart_are_tied_and_the_first_wins() -> None:
    table = {"fishing": ["angling", "ANGLING", "Angling"]}  # one word to a lower-casing model
    result = make_search(BatchNoiseScorer(WEIGHTS, BIAS), table, max_change_rate=0.1).attack(DOC_A, 0, "positive")
    # the batch noise makes the last copy score lowest, but within the tolerance it is a tie: the first is kept
    assert result.success and [c.new for c in result.changes] == ["angling"]
    ref = reference_greedy_attack(BatchNoiseScorer(WEIGHTS, BIAS), DOC_A, 0, "positive", DictTransformation(table),
                                  k=K, max_change_rate=0.1, success_check="chosen", candidates_from="current")
    assert ref.adversarial_text == result.adversarial_text


def test_texts_that_encode_alike_run_through_the_model_once(tiny_axml) -> None:
    # case variants and unknown words encode alike under the lower-casing word tokenizer
    texts = ["Grandpa enjoys fishing", "grandpa enjoys fishing", "music", "grandpa enjoys qqqzz",
             "grandpa enjoys xxyyz"]
    batch_rows: list[int] = []
    handle = tiny_axml.embedding.register_forward_hook(lambda m, a, out: batch_rows.append(a[0].shape[0]))
    try:
        together = tiny_axml.score_texts(texts)
    finally:
        handle.remove()
    assert batch_rows == [3]
    alone = torch.cat([tiny_axml.score_texts([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    assert torch.equal(together[0], together[1]) and torch.equal(together[3], together[4])
    torch.testing.assert_close(tiny_axml.score_texts(texts, labels=[1]), together[:, [1]], atol=1e-6, rtol=0)


def test_attentionxml_refuses_a_subword_tokenizer() -> None:
    from xmtc.data.label_stats import LabelStats
    from xmtc.data.train_tokenizer import train_unigram_tokenizer
    from xmtc.models import AttentionXML

    stats = LabelStats(["a", "b"], ["A", "B"], np.array([2, 1]), 3, 0.55, 1.5)
    tok = train_unigram_tokenizer(["grandpa enjoys fishing near the quiet lake"] * 5, vocab_size=40)
    with pytest.raises(TypeError, match="remove data.init_args.tokenizer"):
        AttentionXML(tokenizer=tok, label_stats=stats, embedding_dim=4, hidden_size=4, linear_sizes=[4])


# -- gains that see small and saturated scores; the paper's code's success test; full-document budgets --


class ExactLogitScorer(KeywordScorer):
    """Logits computed directly (``logits=True``), not through a saturating float32 sigmoid."""

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64, logits: bool = False) -> Tensor:
        counts = torch.zeros(len(texts), len(self.vocab))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                j = self.vocab.get(word)
                if j is not None:
                    counts[i, j] += 1
        z = counts @ self.weight.T + self.bias
        return z if logits else torch.sigmoid(z)


def _logit_rows(weights: dict[str, dict[int, float]], bias: Sequence[float]) -> KeywordScorer:
    return ExactLogitScorer(weights, bias)


def test_a_negative_target_at_1e_minus_7_climbs() -> None:
    # label 3 sits at p ~ 1e-7 (logit -16); "delta" -> "raise" lifts it to ~6e-7 (logit -14.4), a gain of 5e-7 in
    # probability; "alpha" -> "soar" lifts it by 16.25 more. Only both changes put it in the top-3 (20 words:
    # 2 changes at 10%), so the attack succeeds only if the first, tiny move counts as progress
    weights = {"cold": {3: -16.0}, "raise": {3: 1.625}, "soar": {3: 16.25}, "alpha": {0: 2.0}, "beta": {1: 2.0},
               "gamma": {2: 0.5}, "epsilon": {4: 1.0}}
    bias = [0.0] * 5
    doc = "cold delta alpha beta gamma epsilon " + " ".join(f"w{i}" for i in range(14))
    table = {"delta": ["raise"], "alpha": ["soar"]}
    for scorer in (KeywordScorer(weights, bias), _logit_rows(weights, bias)):
        goal = TargetedGoal(scorer, k=K)
        row = goal.scores([doc])[0]
        assert 3 not in goal.topk(row)
        if goal.space == "probability":
            assert row[3].item() == pytest.approx(1.1e-7, rel=0.05)
        result = GreedyWordSearch(goal, DictTransformation(table), max_change_rate=0.1).attack(doc, 3, "negative")
        assert [(c.old, c.new) for c in result.changes] == [("delta", "raise"), ("alpha", "soar")], goal.space
        assert result.success and result.status == "success"


def test_a_saturated_positive_target_can_fall() -> None:
    # label 0 at logit 20 scores exactly 1.0 in float32: only a scorer that gives logits shows the drop to 19
    weights = {"sure": {0: 20.0}, "fairly": {0: 19.0}, "x": {1: 1.0}, "y": {2: 1.0}, "z": {3: 0.5}}
    doc = "sure x y z words here to make ten"
    table = {"sure": ["fairly"]}
    saturated = KeywordScorer(weights, [0.0] * 5)
    assert saturated.score_texts([doc])[0, 0].item() == saturated.score_texts(["fairly x y z"])[0, 0].item() == 1.0
    blind = GreedyWordSearch(TargetedGoal(saturated, k=K), DictTransformation(table), max_change_rate=0.2)
    assert blind.attack(doc, 0, "positive").changes == []  # probabilities: no candidate shows a gain
    seeing = GreedyWordSearch(TargetedGoal(_logit_rows(weights, [0.0] * 5), k=K), DictTransformation(table),
                              max_change_rate=0.2)
    assert seeing.goal.space == "logit"
    assert [c.new for c in seeing.attack(doc, 0, "positive").changes] == ["fairly"]


def test_every_candidate_success_check_ends_at_the_first_success() -> None:
    # "rowing" comes first and succeeds (label 0: 3.5 -> 0.25, below labels 2, 1 and 3, which it lifts to 1.0);
    # "angling" drops label 0 further (gain 3.75 vs 3.25), so Algorithm 1's reading keeps "angling"
    weights = {**WEIGHTS, "rowing": {0: 0.75, 3: 0.5}}
    table = {"fishing": ["rowing", "angling"]}
    for check, source in PROFILES:
        for scorer in (KeywordScorer(weights, BIAS), SubsetKeywordScorer(weights, BIAS)):
            result = make_search(scorer, table, success_check=check, candidates_from=source).attack(DOC_A, 0,
                                                                                                    "positive")
            assert result.success
            assert [c.new for c in result.changes] == (["angling"] if check == "chosen" else ["rowing"]), check
            ref = reference_greedy_attack(scorer, DOC_A, 0, "positive", DictTransformation(table), k=K,
                                          success_check=check, candidates_from=source)
            assert ref.changes == result.changes


def test_budget_counts_the_whole_document_when_told() -> None:
    # 128 words read by the model, 700 in the document: 12 changes allowed on the cut text, 70 on the document
    # label 0: logit -1 + 24 = 23 with 24 "fishing"; each "angling" takes 2 off: 13 changes put it below label 3
    words = ["fishing"] * 24 + [f"w{i}" for i in range(104)]
    text = " ".join(words)
    scorer = _logit_rows({"fishing": {0: 1.0}, "angling": {0: -1.0}, "music": {1: 3.5}}, [-1.0, -1.0, -1.25, -1.5])
    search = make_search(scorer, {"fishing": ["angling"]}, max_change_rate=0.1)
    cut = search.attack(text, 0, "positive")
    assert cut.status == "change_budget" and len(cut.changes) == 12 and cut.num_words == 128
    whole = search.attack(text, 0, "positive", num_words=700)
    assert whole.success and len(whole.changes) == 13 and whole.num_words == 700
    assert whole.change_rate == len(whole.changes) / 700
    ref = reference_greedy_attack(scorer, text, 0, "positive", DictTransformation({"fishing": ["angling"]}), k=K,
                                  num_words=700, success_check="chosen", candidates_from="current")
    assert ref.changes == whole.changes
    together = search.attack_many([(text, 0, "positive", 700), (text, 0, "positive")])
    assert together == [whole, cut]
    with pytest.raises(ValueError, match="fewer words than the text"):
        search.attack(text, 0, "positive", num_words=100)


class WordCountEncoder:
    """A sentence encoder whose embedding counts a few words; records the texts it was given."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> Tensor:
        self.seen.extend(texts)
        return torch.tensor([[t.split().count(w) + 1.0 for w in ("fishing", "angling", "Angling")] for t in texts])


def test_paper_profile_measures_the_whole_document() -> None:
    from xmtc.attack.runner import AttackSettings, attack_documents, build_search

    class ReadsFirst128(ExactLogitScorer):  # the model reads the first 128 words of a document
        class tokenizer:  # noqa: N801 (a word tokenizer reading 128 tokens)
            max_length = 128

            @staticmethod
            def words(text: str) -> list[str]:
                return text.split()

        def visible_text(self, text: str) -> tuple[str, str]:
            from xmtc.attack.classifier import visible_by_words

            return visible_by_words(self.tokenizer, text)

    weights = {"fishing": {0: 1.0}, "angling": {0: -1.0}, "music": {1: 3.5}}
    model = ReadsFirst128(weights, [-1.0, -1.0, -1.25, -1.5])
    # 24 "fishing" among the first 128 words, 572 more words the model never reads: 700 in all
    doc = " ".join(["Fishing"] + ["fishing"] * 23 + [f"w{i}" for i in range(104)] + [f"tail{i}" for i in range(572)])
    table = DictTransformation({"fishing": ["angling"]})
    results = {}
    for profile in ("algorithm1", "paper"):
        settings = AttackSettings(profile=profile, k=K, max_change_rate=0.1, similarity_measure="cosine")
        encoder = WordCountEncoder()
        results[profile] = attack_documents(build_search(model, table, settings), model, [doc], [(0, "positive")],
                                            settings, encoder)[0]
        results[profile + "_seen"] = encoder.seen
    cut, paper = results["algorithm1"], results["paper"]
    # Algorithm 1's reading: floor(0.1 * 128) = 12 changes on the cut text, not enough
    assert cut.status == "change_budget" and len(cut.changes) == 12 and cut.num_words == 128
    assert len(cut.adversarial_text.split()) == 128 and "cut to its first 128 of 700 words" in cut.message
    # the paper's code: floor(0.1 * 700) = 70 allowed, 13 used; the whole document comes back with the changes in it
    assert paper.success and len(paper.changes) == 13 and paper.num_words == 700
    assert paper.change_rate == pytest.approx(13 / 700)
    adv = paper.adversarial_text.split()
    assert len(adv) == 700 and paper.original_text == doc and adv[128:] == doc.split()[128:]
    assert [adv[c.position] for c in paper.changes] == ["angling"] * 13
    # similarity compares the whole documents, lower-cased (the paper's code fed USE lower-cased text)
    assert all(len(t.split()) == 700 and t == t.lower() for t in results["paper_seen"])
    assert all(len(t.split()) == 128 for t in results["algorithm1_seen"])
    assert "Fishing" in results["algorithm1_seen"][0]
