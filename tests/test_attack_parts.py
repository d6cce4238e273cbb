"""The attack's parts apart: goals (one class per kind, a custom goal), constraints (applied in one place,
minimum similarity during the search), importance (mask, deletion), search methods (beam vs greedy)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from test_attack_engine import BIAS, DOC_A, DOC_C, FLIP, WEIGHTS, DictTransformation, K, KeywordScorer
from torch import Tensor

from xmtc.attack.attack import Attack, GreedyWordSearch
from xmtc.attack.base import SearchState
from xmtc.attack.constraints import (
    Constraint,
    Constraints,
    MaxChangedWords,
    MaxChangeRate,
    MinSimilarity,
    NoRepeatModification,
    StopWords,
    default_constraints,
)
from xmtc.attack.goal import Goal, GoalTarget, NegativeTargeted, NonTargeted, PositiveTargeted, TargetedGoal
from xmtc.attack.importance import DeletionImportance, MaskImportance, mask_importance
from xmtc.attack.search import BeamSearch, GreedySearch


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer(WEIGHTS, BIAS)


# -- goals --


def test_goal_classes_decide_as_the_goal_set(scorer: KeywordScorer) -> None:
    oracle = TargetedGoal(scorer, k=K)
    rows = oracle.scores([DOC_A, DOC_A.replace("fishing", "angling"), DOC_A + " music music"])
    for goal, target in ((PositiveTargeted(K), [0]), (NegativeTargeted(K), [4]), (NonTargeted(K), [0, 2, 5])):
        gamma, _ = goal.target_for(rows[0], target)
        assert gamma == oracle.target_for(rows[0], goal.kind, target)[0]
        assert torch.equal(goal.successes(rows, gamma), oracle.successes(rows, gamma))
    # positive: label 0 pushed out by the substitution; negative: music (4) pulled in; nontargeted: 0 left
    assert PositiveTargeted(K).successes(rows, GoalTarget("positive", (0,))).tolist() == [False, True, False]
    assert NegativeTargeted(K).successes(rows, GoalTarget("negative", (4,))).tolist() == [False, False, True]
    # "music music" lifts label 4 to the top, but 0 and 2 stay in the top-3: no non-targeted success there
    assert NonTargeted(K).successes(rows, GoalTarget("nontargeted", (0, 2))).tolist() == [False, True, False]


class RankDrop(Goal):
    """A goal the suite does not have: push the target below rank ``depth`` (k + 2 by default)."""

    kind = "rank_drop"

    def __init__(self, k: int = 5, depth: int | None = None) -> None:
        super().__init__(k)
        self.depth = depth if depth is not None else k + 2

    def gamma(self, labels: list[int], top: set[int]) -> tuple[int, ...]:
        return tuple(t for t in labels if t in top)

    def why_not(self, labels: list[int]) -> str:
        return "not predicted"

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        return torch.tensor([all(self.rank(r, t) > self.depth for t in target.labels) for r in rows])


def test_a_custom_goal_is_one_class(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=2, goals=[PositiveTargeted(2), RankDrop(2, depth=3)])
    attack = Attack(goal, DictTransformation({"fishing": ["angling"], "lake": ["summer"]}),
                    constraints=[StopWords(), MaxChangeRate(0.3)])
    result = attack.attack(DOC_A, 0, "rank_drop")
    # label 0 (logit 3.5, rank 1) must fall below rank 3: "fishing" -> "angling" takes it to -0.25, rank 4
    assert result.success and [c.new for c in result.changes] == ["angling"]
    assert (result.rank_before, result.rank_after) == (1, 4)
    # the same text is a positive success only at k=2 if label 0 leaves the top-2, which it also does
    deeper = TargetedGoal(scorer, k=2, goals=[RankDrop(2, depth=4)])
    assert not Attack(deeper, DictTransformation({"fishing": ["angling"], "lake": ["summer"]}),
                      constraints=[StopWords(), MaxChangeRate(0.3)]).attack(DOC_A, 0, "rank_drop").success
    with pytest.raises(ValueError, match="unknown attack kind 'negative'"):
        attack.attack(DOC_A, 4, "negative")
    with pytest.raises(ValueError, match="same k"):
        TargetedGoal(scorer, k=3, goals=[PositiveTargeted(5)])


# -- constraints --


def test_constraints_in_one_place() -> None:
    words = ["grandpa", "enjoys", "the", "fishing"]
    state = SearchState(list(words), list(words), num_words=20, row=torch.zeros(3))
    every = Constraints([*default_constraints(0.1), MaxChangedWords(1)])
    assert every.budget(20) == 1 and Constraints([MaxChangeRate(0.2)]).budget(20) == 4
    assert Constraints([]).budget(7) == 7  # nothing limits it
    assert every.positions(state) == [0, 1, 3]  # "the" is a stop word
    state.change(0, "grandma")
    assert every.positions(state) == [1, 3]  # no word changed twice
    assert Constraints([StopWords()]).positions(state) == [0, 1, 3]
    assert Constraints([NoRepeatModification()]).positions(state) == [1, 2, 3]
    assert every.filter(state, 3, ["angling", "the", "boating"]) == ["angling", "boating"]

    class Refuses(Constraint):
        def allowed(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[bool]:
            self.seen = list(candidates)
            return [c != "boating" for c in candidates]

    refuses = Refuses()
    assert Constraints([StopWords(), refuses]).filter(state, 3, ["the", "boating", "angling"]) == ["angling"]
    assert refuses.seen == ["boating", "angling"]  # later constraints see only what earlier ones let through
    with pytest.raises(TypeError, match="Constraint"):
        Constraints([lambda s: True])  # type: ignore[list-item]


def test_a_constraint_limits_the_search(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K)
    free = Attack(goal, DictTransformation(FLIP), constraints=[StopWords(), MaxChangeRate(0.2)]).attack(DOC_C, 0,
                                                                                                        "positive")
    assert free.success and len(free.changes) == 2
    capped = Attack(goal, DictTransformation(FLIP),
                    constraints=[StopWords(), MaxChangeRate(0.2), MaxChangedWords(1)]).attack(DOC_C, 0, "positive")
    assert capped.status == "change_budget" and len(capped.changes) == 1


class BagOfWords:
    """A real (if small) sentence encoder: word counts over a fixed vocabulary; counts its texts."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> Tensor:
        self.texts += len(texts)
        out = torch.zeros(len(texts), len(self.index) + 1)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, self.index.get(w, len(self.index))] += 1.0
        return out


def test_min_similarity_during_the_search(scorer: KeywordScorer) -> None:
    # DOC_A as counts over (fishing, boating, grandpa, other words): (1, 0, 1, 8)
    words = DOC_A.split()
    encoder = BagOfWords(["fishing", "boating", "grandpa"])
    state = SearchState(list(words), list(words), num_words=len(words), row=torch.zeros(1))
    sim = MinSimilarity(threshold=0.9, measure="cosine", encoder=encoder)
    assert sim.allowed(state, 2, ["boating", "angling"]) == [True, True]
    # fishing -> boating: (0, 1, 1, 8), cosine 65/66 = 0.985; fishing -> angling: (0, 0, 1, 9), 73/sqrt(66*82) = 0.992
    strict = MinSimilarity(threshold=0.99, measure="cosine", encoder=encoder)
    assert strict.allowed(state, 2, ["boating", "angling"]) == [False, True]
    assert encoder.texts == 2 * 3  # one encoder call per position: the original once, each candidate once

    goal = TargetedGoal(scorer, k=K)
    loose = GreedyWordSearch(goal, DictTransformation(FLIP), constraints=[MinSimilarity(0.9, encoder=encoder)])
    tight = GreedyWordSearch(goal, DictTransformation(FLIP), constraints=[MinSimilarity(0.995, encoder=encoder)])
    assert loose.attack(DOC_A, 0, "positive").success
    blocked = tight.attack(DOC_A, 0, "positive")
    assert not blocked.success and blocked.changes == []
    with pytest.raises(ValueError, match="encoder"):
        MinSimilarity(0.5).allowed(state, 2, ["boating"])


# -- importance --


def test_deletion_importance_is_mask_importance_without_a_token(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K)
    words = DOC_A.split()
    row = goal.scores([DOC_A])[0]
    target, _ = goal.target_for(row, "positive", 0)
    ref = row[[0]]
    positions = list(range(len(words)))
    from xmtc.attack.goal import drive

    deleted = drive(DeletionImportance().steps(goal, words, positions, target, ref), goal.score_batched)
    masked = drive(MaskImportance("[UNK]").steps(goal, words, positions, target, ref), goal.score_batched)
    assert torch.equal(deleted, mask_importance(goal, words, target, ref, None))
    assert torch.equal(masked, mask_importance(goal, words, target, ref, "[UNK]"))
    assert int(deleted.argmax()) == words.index("fishing")
    only = drive(MaskImportance().steps(goal, words, [0, 2], target, ref), goal.score_batched)
    assert torch.isinf(only[[1, 3, 4]]).all() and torch.isfinite(only[[0, 2]]).all()  # others never scored


# -- search methods --


TABLE = {"fishing": ["boating", "angling"], "lake": ["summer", "morning"], "trips": ["music"],
         "contests": ["concerts"], "shores": ["grandpa"]}


@pytest.mark.parametrize("kind,target,text", [("positive", 0, DOC_C), ("positive", 0, DOC_A),
                                              ("negative", 4, DOC_A), ("nontargeted", [0, 2], DOC_C)])
def test_beam_width_one_is_the_greedy_search(scorer: KeywordScorer, kind: str, target, text: str) -> None:
    greedy = Attack(TargetedGoal(scorer, k=K), DictTransformation(TABLE), default_constraints(0.3),
                    search=GreedySearch("chosen"))
    beam = Attack(TargetedGoal(scorer, k=K), DictTransformation(TABLE), default_constraints(0.3),
                  search=BeamSearch(width=1))
    a, b = greedy.attack(text, target, kind), beam.attack(text, target, kind)  # type: ignore[arg-type]
    assert (a.status, a.adversarial_text, a.changes, a.rank_after, a.queries) == (
        b.status, b.adversarial_text, b.changes, b.rank_after, b.queries)


def test_a_wider_beam_finds_what_greedy_misses() -> None:
    # label 0 (logit 3 + 0.5) must fall below label 1 (0.2) at k=1. The most important word's best substitute
    # ("xone", gain 3) is not enough and leaves nothing to finish with; a beam of 2 also keeps the second best
    # ("xtwo", gain 2), after which "beta" may become "bravo" (-3): -2 < 0.2.
    weights = {"alpha": {0: 3.0}, "beta": {0: 0.5}, "xone": {0: 0.0}, "xtwo": {0: 1.0}, "bravo": {0: -3.0},
               "betax": {0: 0.5}}
    scorer = KeywordScorer(weights, [0.0, 0.2])

    class Tail(DictTransformation):
        def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]:
            out = super().candidates(words, positions)
            return [c + (["bravo"] if words[p] == "beta" and "xtwo" in words else [])
                    for c, p in zip(out, positions, strict=True)]

    table = {"alpha": ["xone", "xtwo"], "beta": ["betax"]}
    constraints = [StopWords(), MaxChangeRate(1.0)]
    greedy = Attack(TargetedGoal(scorer, k=1), Tail(table), constraints).attack("alpha beta", 0, "positive")
    beam = Attack(TargetedGoal(scorer, k=1), Tail(table), constraints, search=BeamSearch(2)).attack(
        "alpha beta", 0, "positive")
    assert (greedy.status, greedy.adversarial_text) == ("failed", "xone beta")
    assert (beam.status, beam.adversarial_text) == ("success", "xtwo bravo")
    with pytest.raises(ValueError, match="width"):
        BeamSearch(0)


def test_beam_search_keeps_query_budget_and_batching(scorer: KeywordScorer) -> None:
    goal = TargetedGoal(scorer, k=K)
    attack = Attack(goal, DictTransformation(TABLE), default_constraints(0.3), search=BeamSearch(3))
    many = attack.attack_many([(DOC_C, 0, "positive"), (DOC_A, 4, "negative")])
    alone = [attack.attack(DOC_C, 0, "positive"), attack.attack(DOC_A, 4, "negative")]
    assert [(r.status, r.adversarial_text) for r in many] == [(r.status, r.adversarial_text) for r in alone]
    limited = Attack(TargetedGoal(scorer, k=K, query_budget=6), DictTransformation(TABLE), default_constraints(0.3),
                     search=BeamSearch(3)).attack(DOC_C, 0, "positive")
    assert limited.status == "query_budget" and limited.queries <= 6


def test_a_deferred_constraint_keeps_the_choice_of_filtering_first() -> None:
    """``Constraints.choose`` checks an after-scoring constraint on the best candidates only, and picks what
    ``best_candidate`` picks among the candidates the constraint allows (ties within the tolerance included)."""
    from xmtc.attack.goal import best_candidate

    class Allows(Constraint):
        after_scoring = True

        def __init__(self, allowed: set[str]) -> None:
            self.allowed_words, self.asked = allowed, []

        def allowed(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[bool]:
            self.asked += list(candidates)
            return [c in self.allowed_words for c in candidates]

    state = SearchState(["w"], ["w"], num_words=1, row=torch.zeros(1))
    rng = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(1, 40, (1,), generator=rng))
        gains = torch.randint(-3, 6, (n,), generator=rng).double() / 2  # many exact ties
        words = [f"c{i}" for i in range(n)]
        allowed = {w for w in words if float(torch.rand(1, generator=rng)) < 0.4}
        tol = [1e-9, 0.5, 1.0][trial % 3]
        rule = Allows(allowed)
        got = Constraints([StopWords(), rule]).choose(state, 0, words, gains, tol)
        kept = [i for i, w in enumerate(words) if w in allowed]
        best = best_candidate(gains[kept], tol) if kept else None
        assert got == (None if best is None else kept[best]), (trial, gains.tolist(), sorted(allowed), tol)
        assert len(rule.asked) == len(set(rule.asked))  # no candidate checked twice
    # no deferred constraint: best_candidate itself, and filter() leaves deferred constraints out on request
    assert Constraints([StopWords()]).choose(state, 0, ["a", "b"], torch.tensor([1.0, 2.0]), 0.1) == 1
    assert Constraints([Allows({"b"})]).filter(state, 0, ["a", "b"], defer=True) == ["a", "b"]
    assert Constraints([Allows({"b"})]).filter(state, 0, ["a", "b"]) == ["b"]
