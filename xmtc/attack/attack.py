"""An attack: goal + constraints + transformation + word importance + search method (TextAttack's
decomposition, multilabel and without softmax), each a class that can be swapped for another.

``Attack.attack`` runs one (document, target) pair; ``Attack.attack_many`` runs several at once, their pending
texts (masked copies, candidates) merged into shared forward passes, each attack keeping its own cache, query
count and budget and making the same decisions as alone. The model is only reached through the goal's
``QueryOracle``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, AttackResult, SearchState, TargetAwareTransformation, Transformation
from xmtc.attack.constraints import Constraint, Constraints, default_constraints
from xmtc.attack.goal import QueryBudgetExhausted, ScoreRequest, TargetedGoal, as_label_list, drive
from xmtc.attack.importance import ImportanceName, WordImportance, importance_method
from xmtc.attack.search import (
    CandidateSource,
    GreedySearch,
    SearchMethod,
    SuccessCheck,
    distinct_edits,
    visit_order,
)

Target = int | list[int]
#: One attack: (text, target, kind) or (text, target, kind, num_words), ``num_words`` counting the words of
#: the whole document when ``text`` is the part of it the model reads (the budget and change rate use it).
Job = tuple[str, Target, AttackKind] | tuple[str, Target, AttackKind, int | None]


def reported_label(goal: TargetedGoal, gamma: Sequence[int], after: Tensor) -> int:
    """The one label an AttackResult reports: for nontargeted attacks, the Γ label ranked lowest after the
    attack (on success, one that left the top-k); ties by Γ order."""
    return max(gamma, key=lambda t: (goal.rank(after, t), -gamma.index(t)))


class Attack:
    """The parts of an attack, and the driver that runs them on documents.

    Args:
        goal: the goals by kind on top of the query oracle (``goal.scorer`` is the attacked model).
        transformation: proposes substitutions (a masked LM in the paper; ``xmtc.attack.word_vectors`` too).
        constraints: what may change (default: the paper's, ``default_constraints(0.1)``).
        importance: the order words are visited in (``MaskImportance()`` by default).
        search: how changes are tried and kept (``GreedySearch()`` by default).
    """

    def __init__(
        self,
        goal: TargetedGoal,
        transformation: Transformation,
        constraints: Sequence[Constraint] | None = None,
        importance: WordImportance | None = None,
        search: SearchMethod | None = None,
    ) -> None:
        if not isinstance(transformation, Transformation):
            raise TypeError(f"transformation must have candidates(words, positions); got {type(transformation)}")
        self.goal = goal
        self.transformation = transformation
        self.constraints = Constraints(default_constraints() if constraints is None else constraints)
        self.importance = importance if importance is not None else importance_method("mask")
        self.importance.check(goal.scorer)
        self.search = search if search is not None else GreedySearch()

    def candidates(self, state: SearchState, position: int, source: Sequence[str], defer: bool = False) -> list[str]:
        """The replacement words for ``position`` the constraints allow: the transformation asked on ``source``
        (the current or the original words), minus duplicates, the word itself and anything not one word, or
        one word inserted beside it (``xmtc.attack.base.insertion_slot``). A target-aware transformation is
        asked with the attack's labels Γ and model. ``defer``: the constraints checked after scoring are left
        to ``constraints.choose``."""
        if len(state.current[position].split()) != 1:
            return []  # a word with an insertion beside it is never edited again (one change would hide two)
        t = self.transformation
        if state.target is not None and isinstance(t, TargetAwareTransformation):
            options = t.candidates_toward(source, [position], state.target, self.goal.scorer)[0]
        else:
            options = t.candidates(source, [position])[0]
        return self.constraints.filter(state, position, distinct_edits(state.current[position], options), defer)

    # -- running --

    def attack(self, text: str, target: Target, kind: AttackKind, num_words: int | None = None) -> AttackResult:
        """Attack one document. ``target``: one label for positive/negative attacks; the true labels for a
        nontargeted one (Γ = those in the original top-k). ``num_words``: the whole document's word count
        when ``text`` is only the part the model reads (budget and change rate count it; default: text's)."""
        self.goal.reset()
        return drive(self.attack_steps(self.goal, text, target, kind, num_words), self.goal.score_batched)

    def attack_many(self, jobs: Sequence[Job]) -> list[AttackResult]:
        """Attack several documents at once: their pending texts (masked copies, candidates) are merged
        into shared forward passes of ``goal.batch_size`` texts. Each attack keeps its own cache, query
        count and budget, and makes the same decisions as ``attack`` alone."""
        results: list[AttackResult | None] = [None] * len(jobs)
        active: dict[int, tuple[Generator, ScoreRequest]] = {}
        for i, job in enumerate(jobs):
            steps = self.attack_steps(self.goal.fresh(), *job)
            try:
                active[i] = (steps, next(steps))
            except StopIteration as done:
                results[i] = done.value
        while active:
            requests = [request for _, request in active.values()]
            # one pass for all full rows, one for all label subsets (their union's columns)
            full = list(dict.fromkeys(t for r in requests if r.labels is None for t in r.texts))
            part = list(dict.fromkeys(t for r in requests if r.labels is not None for t in r.texts))
            union = sorted({j for r in requests if r.labels is not None for j in r.labels})
            full_rows = dict(zip(full, self.goal.score_batched(ScoreRequest(full)), strict=True)) if full else {}
            part_rows = (dict(zip(part, self.goal.score_batched(ScoreRequest(part, tuple(union))), strict=True))
                         if part else {})
            column = {j: c for c, j in enumerate(union)}
            for i, (steps, request) in list(active.items()):
                if request.labels is None:
                    answer = torch.stack([full_rows[t] for t in request.texts])
                else:
                    cols = [column[j] for j in request.labels]
                    answer = torch.stack([part_rows[t][cols] for t in request.texts])
                try:
                    active[i] = (steps, steps.send(answer))
                except StopIteration as done:
                    results[i] = done.value
                    del active[i]
        return results  # type: ignore[return-value]

    def attack_steps(self, goal: TargetedGoal, text: str, target: Target, kind: AttackKind,
                     num_words: int | None = None) -> Generator[ScoreRequest, Tensor, AttackResult]:
        """The attack as a scoring generator: yields texts to score, receives their rows (see ``drive``)."""
        labels = as_label_list(target)
        if kind != "nontargeted" and len(labels) != 1:
            raise ValueError(f"a {kind} attack takes one target label; got {labels}")
        words = text.split()
        if num_words is not None and num_words < len(words):
            raise ValueError(f"num_words={num_words} counts fewer words than the text has ({len(words)})")
        original = " ".join(words)
        result = AttackResult(kind=kind, target=labels[0], success=False, status="failed", original_text=text,
                              adversarial_text=original, num_words=len(words) if num_words is None else num_words)
        try:
            before = (yield from goal.request([original]))[0]
        except QueryBudgetExhausted as e:
            result.status, result.message = "query_budget", str(e)
            return result
        gamma, why = goal.target_for(before, kind, labels)
        result.topk_before, result.topk_after = goal.topk(before), goal.topk(before)
        if gamma is None:
            result.rank_before = result.rank_after = goal.rank(before, labels[0])
            result.status, result.message, result.queries = "skipped", why, goal.queries
            return result

        state = SearchState(original=list(words), current=list(words), num_words=result.num_words, row=before,
                            target=gamma)
        status: str | None = None
        try:
            # Γ columns of the current text: what gains are measured against (same computation as candidates')
            reference = (yield from goal.request([original], gamma.labels))[0]
            positions = self.constraints.positions(state)
            order = visit_order((yield from self.importance.steps(goal, words, positions, gamma, reference)))
            if not order:
                result.message = "no attackable words (all are stop words)"
            status = yield from self.search.run(self, goal, state, gamma, order, reference)
        except QueryBudgetExhausted as e:
            status, result.message = "query_budget", str(e)

        after = state.row
        result.status = status or "failed"  # type: ignore[assignment]
        result.success = result.status == "success"
        result.changes = list(state.changes)
        result.adversarial_text = " ".join(state.current)
        result.queries = goal.queries
        result.target = labels[0] if kind != "nontargeted" else reported_label(goal, gamma.labels, after)
        result.rank_before, result.rank_after = goal.rank(before, result.target), goal.rank(after, result.target)
        result.topk_after = goal.topk(after)
        if kind == "nontargeted":
            result.message = (result.message + "; " if result.message else "") + f"gamma={list(gamma.labels)}"
        return result


class GreedyWordSearch(Attack):
    """The paper's attack (Algorithm 1): the paper's constraints, masked-word importance and the greedy search,
    from their settings (one class, as before the parts were apart).

    Args:
        goal: success test, batching, caching, query budget; ``goal.scorer`` is the attacked model.
        transformation: proposes substitutions (a masked LM in the paper).
        max_change_rate: θ; at most floor(θ·n) of the n words may change.
        mask_token: what replaces a word when measuring its importance; None deletes the word.
        importance: "mask" (black box, eq. 3.1-3.3), "deletion", or "gradient" (white box; no queries; needs a
            model with ``word_gradients``, such as AttentionXML), or a ``WordImportance``.
        candidate_batch, success_check, candidates_from: the ``GreedySearch``'s settings.
        constraints: more constraints besides the paper's (e.g. ``MinSimilarity``).
    """

    def __init__(
        self,
        goal: TargetedGoal,
        transformation: Transformation,
        max_change_rate: float = 0.1,
        mask_token: str | None = "[UNK]",
        importance: ImportanceName | WordImportance = "mask",
        candidate_batch: bool = True,
        success_check: SuccessCheck = "chosen",
        candidates_from: CandidateSource = "current",
        constraints: Sequence[Constraint] = (),
    ) -> None:
        super().__init__(goal, transformation, constraints=[*default_constraints(max_change_rate), *constraints],
                         importance=importance_method(importance, mask_token),
                         search=GreedySearch(success_check, candidates_from, candidate_batch))
        self.max_change_rate = max_change_rate
