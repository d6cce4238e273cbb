"""Greedy search by word importance (paper §3.2, Algorithm 1), without the reference code's bugs (NOTES §2).

Words are visited in descending importance; at each position all candidate substitutions are scored in
ONE batched goal call and the one moving the target furthest toward the goal, relative to the CURRENT
text's scores (eq. 3.4: S^{t-1}, not the original S), is kept, but only if it makes progress (a gain above
the goal's tolerance, in log-odds): otherwise the word stays as it was (the reference code kept the last
candidate tried). The attack stops as soon as the goal holds, when the change budget floor(θ·n) is spent,
or when the query budget is.

Two readings of "as soon as the goal holds" (``success_check``):
- ``chosen`` (Algorithm 1): only the kept candidate is tested; candidates are scored on the target
  columns Γ alone, and a full row is computed once per kept change.
- ``every`` (the paper's code, adv_xmtc.py): every candidate is tested, in the transformation's order, and
  the first that reaches the goal ends the attack even when another has a larger gain. This needs each
  candidate's full row, so the candidates are scored on all labels (one batched call all the same).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Literal

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, AttackResult, Change, Transformation
from xmtc.attack.goal import (
    GoalTarget,
    QueryBudgetExhausted,
    ScoreRequest,
    TargetedGoal,
    as_label_list,
    best_candidate,
    drive,
    max_changes,
)
from xmtc.attack.importance import _check_gradient_model, gradient_importance, mask_importance_steps
from xmtc.attack.stopwords import is_stop_word
from xmtc.metrics import top_labels

ImportanceMethod = Literal["mask", "gradient"]
SuccessCheck = Literal["chosen", "every"]
CandidateSource = Literal["current", "original"]
#: full rows asked at a time when testing candidates for success in order (the paper's code's test): small
#: enough that little is scored past the first success, large enough to batch
_FULL_ROW_CHUNK = 16
Target = int | list[int]
#: One attack: (text, target, kind) or (text, target, kind, num_words), ``num_words`` counting the words of
#: the whole document when ``text`` is the part of it the model reads (the budget and change rate use it).
Job = tuple[str, Target, AttackKind] | tuple[str, Target, AttackKind, int | None]


def usable_candidates(word: str, candidates: Sequence[str]) -> list[str]:
    """Candidates in their order, minus duplicates, the word itself, stop words, and anything that is not
    exactly one whitespace-free word (it would shift the positions of ``text.split()``)."""
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c in seen or c == word or not c or c.split() != [c] or is_stop_word(c):
            continue
        seen.add(c)
        out.append(c)
    return out


def replaced_text(words: Sequence[str], position: int, new: str) -> str:
    return " ".join([*words[:position], new, *words[position + 1:]])


def visit_order(importance: Tensor) -> list[int]:
    """Positions by descending importance, ties by position; -inf (stop words) and NaN are never visited."""
    values = importance.tolist()
    return sorted((i for i, v in enumerate(values) if math.isfinite(v)), key=lambda i: (-values[i], i))


def reported_label(goal: TargetedGoal, gamma: Sequence[int], after: Tensor) -> int:
    """The one label an AttackResult reports: for nontargeted attacks, the Γ label ranked lowest after the
    attack (on success, one that left the top-k); ties by Γ order."""
    return max(gamma, key=lambda t: (goal.rank(after, t), -gamma.index(t)))


class GreedyWordSearch:
    """Greedy word-substitution attack on one (document, target) pair at a time.

    Args:
        goal: success test, batching, caching, query budget; ``goal.scorer`` is the attacked model.
        transformation: proposes substitutions (a masked LM in the paper).
        max_change_rate: θ; at most floor(θ·n) of the n words may change.
        mask_token: what replaces a word when measuring its importance; None deletes the word.
        importance: "mask" (black box, eq. 3.1-3.3) or "gradient" (white box; no queries; needs a model
            with ``embedding``, ``encode`` and ``tokenizer`` such as AttentionXML).
        candidate_batch: score all candidates of a position in one call (False: one call each; for
            benchmarks, same decisions).
        success_check: ``chosen`` tests the kept candidate only (Algorithm 1); ``every`` tests each
            candidate and stops at the first success (the paper's code; module docstring).
        candidates_from: ask the transformation for candidates on the ``current`` text (Algorithm 1) or on
            the ``original`` one (the paper's code: its masked LM ran once per document).
    """

    def __init__(
        self,
        goal: TargetedGoal,
        transformation: Transformation,
        max_change_rate: float = 0.1,
        mask_token: str | None = "[UNK]",
        importance: ImportanceMethod = "mask",
        candidate_batch: bool = True,
        success_check: SuccessCheck = "chosen",
        candidates_from: CandidateSource = "current",
    ) -> None:
        if not 0.0 <= max_change_rate <= 1.0:
            raise ValueError(f"max_change_rate must be in [0, 1]; got {max_change_rate}")
        if importance not in ("mask", "gradient"):
            raise ValueError(f"importance must be 'mask' or 'gradient'; got {importance!r}")
        if importance == "gradient":
            _check_gradient_model(goal.scorer)
        if success_check not in ("chosen", "every"):
            raise ValueError(f"success_check must be 'chosen' or 'every'; got {success_check!r}")
        if candidates_from not in ("current", "original"):
            raise ValueError(f"candidates_from must be 'current' or 'original'; got {candidates_from!r}")
        if not isinstance(transformation, Transformation):
            raise TypeError(f"transformation must have candidates(words, positions); got {type(transformation)}")
        self.goal = goal
        self.transformation = transformation
        self.max_change_rate = max_change_rate
        self.mask_token = mask_token
        self.importance = importance
        self.candidate_batch = candidate_batch
        self.success_check = success_check
        self.candidates_from = candidates_from

    def word_importance_steps(self, goal: TargetedGoal, words: Sequence[str], target: GoalTarget,
                              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        if self.importance == "gradient":
            return gradient_importance(goal.scorer, " ".join(words), list(target.labels))
        return (yield from mask_importance_steps(goal, words, target, reference, self.mask_token))

    def _candidate_rows(self, goal: TargetedGoal, texts: list[str],
                        labels: Sequence[int] | None) -> Generator[ScoreRequest, Tensor, Tensor]:
        if self.candidate_batch:
            return (yield from goal.request(texts, labels))
        rows = []
        for t in texts:
            rows.append((yield from goal.request([t], labels)))
        return torch.cat(rows)

    def _first_success(self, goal: TargetedGoal, texts: list[str], gamma: GoalTarget, current: Tensor
                       ) -> Generator[ScoreRequest, Tensor, tuple[Tensor, tuple[int, Tensor] | None]]:
        """The Γ columns of every candidate, and the first candidate (in order) that reaches the goal with its
        full row, or None: the paper's code's test of every candidate, exact, with full rows only where needed.

        A screen scores Γ plus the current text's top-(2k) labels S for all candidates (a label subset, cheap).
        Counting the labels of S that rank above the target gives a lower bound on its rank: at least k of them
        proves a positive attack's success and a negative attack's failure. Only the candidates the screen
        cannot decide get full rows, in order and in chunks, up to the first success: for positive attacks
        most candidates, for negative attacks the few that bring the target near the top-k. Non-targeted
        attacks (several Γ labels) get full rows for all candidates."""
        gamma_cols = list(gamma.labels)
        if gamma.kind == "nontargeted":
            full = yield from self._candidate_rows(goal, texts, None)
            won = torch.nonzero(goal.successes(full, gamma))
            return full[:, gamma_cols], ((int(won[0]), full[int(won[0])]) if len(won) else None)
        target = gamma_cols[0]
        others = [j for j in top_labels(current.reshape(1, -1), min(2 * goal.k, current.numel()))[0].tolist()
                  if j != target]
        screen = yield from self._candidate_rows(goal, texts, [target, *others])
        t_score, o_scores = screen[:, :1], screen[:, 1:]
        above = ((o_scores > t_score) | ((o_scores == t_score) & (torch.tensor(others) < target))).sum(dim=1)
        decided = above >= goal.k  # positive: proven success; negative: proven failure
        proven = torch.nonzero(decided).reshape(-1).tolist() if gamma.kind == "positive" else []
        first_proven = proven[0] if proven else len(texts)
        unknown = [i for i in range(first_proven) if not bool(decided[i])]
        for start in range(0, len(unknown), _FULL_ROW_CHUNK):
            chunk = unknown[start:start + _FULL_ROW_CHUNK]
            full = yield from goal.request([texts[i] for i in chunk])
            hit = torch.nonzero(goal.successes(full, gamma))
            if len(hit):
                return screen[:, :1], (chunk[int(hit[0])], full[int(hit[0])])
        if first_proven < len(texts):
            return screen[:, :1], (first_proven, (yield from goal.request([texts[first_proven]]))[0])
        return screen[:, :1], None

    def attack(self, text: str, target: int | list[int], kind: AttackKind,
               num_words: int | None = None) -> AttackResult:
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

    def attack_steps(self, goal: TargetedGoal, text: str, target: int | list[int], kind: AttackKind,
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

        current, after = list(words), before
        budget = max_changes(result.num_words, self.max_change_rate)
        every = self.success_check == "every"
        status: str | None = None
        try:
            # Γ columns of the current text: what gains are measured against (same computation as candidates')
            reference = (yield from goal.request([original], gamma.labels))[0]
            order = visit_order((yield from self.word_importance_steps(goal, words, gamma, reference)))
            if not order:
                result.message = "no attackable words (all are stop words)"
            for pos in order:
                if len(result.changes) >= budget:
                    status = "change_budget"
                    break
                source = words if self.candidates_from == "original" else current
                options = self.transformation.candidates(source, [pos])[0]
                options = usable_candidates(current[pos], options)
                if not options:
                    continue
                texts = [replaced_text(current, pos, c) for c in options]
                if every:  # each candidate is tested for success, the first one that succeeds wins
                    rows, won = yield from self._first_success(goal, texts, gamma, after)
                    cand_reference = after[list(gamma.labels)]
                    if won is not None:
                        result.changes.append(Change(pos, current[pos], options[won[0]]))
                        current[pos], after, status = options[won[0]], won[1], "success"
                        break
                else:
                    rows = yield from self._candidate_rows(goal, texts, gamma.labels)
                    cand_reference = reference
                chosen = best_candidate(goal.progress(rows, gamma, cand_reference), goal.tolerance(cand_reference))
                if chosen is None:
                    continue  # no candidate helps: the word stays
                result.changes.append(Change(pos, current[pos], options[chosen]))
                current[pos], reference = options[chosen], rows[chosen]
                after = (yield from goal.request([texts[chosen]]))[0]  # the full row (cached if already scored)
                if every:
                    continue  # not a success, or _first_success would have found it
                if goal.is_success(after, gamma):
                    status = "success"
                    break
        except QueryBudgetExhausted as e:
            status, result.message = "query_budget", str(e)

        result.status = status or "failed"  # type: ignore[assignment]
        result.success = result.status == "success"
        result.adversarial_text = " ".join(current)
        result.queries = goal.queries
        result.target = labels[0] if kind != "nontargeted" else reported_label(goal, gamma.labels, after)
        result.rank_before, result.rank_after = goal.rank(before, result.target), goal.rank(after, result.target)
        result.topk_after = goal.topk(after)
        if kind == "nontargeted":
            result.message = (result.message + "; " if result.message else "") + f"gamma={list(gamma.labels)}"
        return result
