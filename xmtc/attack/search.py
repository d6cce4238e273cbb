"""Search methods: in which order an attack tries word changes and which it keeps (paper §3.2, Algorithm 1).

Both visit words in descending importance, and at each position score all candidate substitutions in ONE
batched oracle call and measure their progress toward the goal relative to the CURRENT text's scores (eq. 3.4:
S^{t-1}, not the original S), a change being kept only if it makes progress (a gain above the goal's
tolerance, in log-odds); the reference code kept the last candidate tried instead. They stop as soon as the
goal holds, when the change budget is spent, or when the query budget is.

``GreedySearch`` keeps one text (the paper's). Two readings of "as soon as the goal holds" (``success_check``):
- ``chosen`` (Algorithm 1): only the kept candidate is tested; candidates are scored on the target columns Γ
  alone, and a full row is computed once per kept change.
- ``every`` (the paper's code, adv_xmtc.py): every candidate is tested, in the transformation's order, and
  the first that reaches the goal ends the attack even when another has a larger gain.

``BeamSearch`` keeps the ``width`` texts that moved furthest (width 1 is the greedy search with ``chosen``).

A search method holds only its own settings; the parts it works with (goal, transformation, constraints)
come from the ``xmtc.attack.attack.Attack`` that runs it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from xmtc.attack.base import SearchState, slot_edit
from xmtc.attack.goal import GoalTarget, ScoreRequest, TargetedGoal, best_candidate
from xmtc.attack.stopwords import is_stop_word
from xmtc.metrics import top_labels

if TYPE_CHECKING:
    from xmtc.attack.attack import Attack

SuccessCheck = Literal["chosen", "every"]
CandidateSource = Literal["current", "original"]
#: full rows asked at a time when testing candidates for success in order (the paper's code's test): small
#: enough that little is scored past the first success, large enough to batch
_FULL_ROW_CHUNK = 16
#: what a search's ``run`` returns: the status to report ("success", "change_budget"), or None (failed)
Status = str | None


def distinct_words(word: str, candidates: Sequence[str]) -> list[str]:
    """Candidates in their order, minus duplicates, the word itself, and anything that is not exactly one
    whitespace-free word (it would shift the positions of ``text.split()``)."""
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c in seen or c == word or not c or c.split() != [c]:
            continue
        seen.add(c)
        out.append(c)
    return out


def distinct_edits(word: str, candidates: Sequence[str]) -> list[str]:
    """``distinct_words``, and insertion slots too: ``word`` with one word put before or after it
    (``xmtc.attack.base.slot_edit``); duplicates and anything else are dropped. For the paper's substitutions
    (no slot has a space) it keeps what ``distinct_words`` keeps."""
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c in seen or not c or slot_edit(word, c) is None:
            continue
        seen.add(c)
        out.append(c)
    return out


def usable_candidates(word: str, candidates: Sequence[str]) -> list[str]:
    """``distinct_words`` minus stop words: what the paper's constraints leave (the reference's filter)."""
    return [c for c in distinct_words(word, candidates) if not is_stop_word(c)]


def replaced_text(words: Sequence[str], position: int, new: str) -> str:
    return " ".join([*words[:position], new, *words[position + 1:]])


def visit_order(importance: Tensor) -> list[int]:
    """Positions by descending importance, ties by position; -inf (stop words) and NaN are never visited."""
    values = importance.tolist()
    return sorted((i for i, v in enumerate(values) if math.isfinite(v)), key=lambda i: (-values[i], i))


class SearchMethod(ABC):
    """How an attack moves through the positions in ``order``; changes ``state`` (the best text found)."""

    @abstractmethod
    def run(self, attack: Attack, goal: TargetedGoal, state: SearchState, gamma: GoalTarget, order: list[int],
            reference: Tensor) -> Generator[ScoreRequest, Tensor, Status]:
        """A scoring generator (see ``xmtc.attack.oracle``). ``reference``: the Γ columns of the text in
        ``state``; ``state.row`` its full row."""


class GreedySearch(SearchMethod):
    """Greedy substitution by word importance (module docstring).

    Args:
        success_check: ``chosen`` tests the kept candidate only (Algorithm 1); ``every`` tests each candidate
            and stops at the first success (the paper's code).
        candidates_from: ask the transformation for candidates on the ``current`` text (Algorithm 1) or on the
            ``original`` one (the paper's code: its masked LM ran once per document).
        candidate_batch: score all candidates of a position in one call (False: one call each; for
            benchmarks, same decisions).
    """

    def __init__(self, success_check: SuccessCheck = "chosen", candidates_from: CandidateSource = "current",
                 candidate_batch: bool = True) -> None:
        if success_check not in ("chosen", "every"):
            raise ValueError(f"success_check must be 'chosen' or 'every'; got {success_check!r}")
        if candidates_from not in ("current", "original"):
            raise ValueError(f"candidates_from must be 'current' or 'original'; got {candidates_from!r}")
        self.success_check = success_check
        self.candidates_from = candidates_from
        self.candidate_batch = candidate_batch

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
        most candidates, for negative attacks the few that bring the target near the top-k. Other goals
        (several Γ labels, or a kind the screen does not know) get full rows for all candidates."""
        gamma_cols = list(gamma.labels)
        if gamma.kind not in ("positive", "negative"):
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

    def run(self, attack: Attack, goal: TargetedGoal, state: SearchState, gamma: GoalTarget, order: list[int],
            reference: Tensor) -> Generator[ScoreRequest, Tensor, Status]:
        every = self.success_check == "every"
        budget = attack.constraints.budget(state.num_words)
        for pos in order:
            if len(state.changes) >= budget:
                return "change_budget"
            source = state.original if self.candidates_from == "original" else state.current
            # every candidate's success is tested in order (every): all constraints first; else an expensive one
            # (a sentence encoder) is checked on the best candidates only, once they are scored
            options = attack.candidates(state, pos, source, defer=not every)
            if not options:
                continue
            texts = [state.replaced(pos, c) for c in options]
            if every:  # each candidate is tested for success, the first one that succeeds wins
                rows, won = yield from self._first_success(goal, texts, gamma, state.row)
                cand_reference = state.row[list(gamma.labels)]
                if won is not None:
                    state.change(pos, options[won[0]], won[1])
                    return "success"
            else:
                rows = yield from self._candidate_rows(goal, texts, gamma.labels)
                cand_reference = reference
            gains = goal.progress(rows, gamma, cand_reference)
            chosen = (attack.constraints.choose(state, pos, options, gains, goal.tolerance(cand_reference)) if not every
                      else best_candidate(gains, goal.tolerance(cand_reference)))
            if chosen is None:
                continue  # no candidate helps: the word stays
            state.change(pos, options[chosen])
            reference = rows[chosen]
            state.row = (yield from goal.request([texts[chosen]]))[0]  # the full row (cached if already scored)
            if not every and goal.is_success(state.row, gamma):  # (every: not a success, or it would have won)
                return "success"
        return None


class BeamSearch(SearchMethod):
    """Beam search by word importance: at each position every kept text (beam) is expanded with its
    candidates, all of them scored in one oracle call, and the ``width`` texts that moved furthest toward the
    goal since the original (their gains summed) are kept; a beam that does not change stays in the running.
    The attack succeeds as soon as one kept text reaches the goal (the one that moved furthest among those
    that do). Candidates are asked on each beam's current text; gains, tolerance and ties follow the greedy
    search's rule, so ``width=1`` is ``GreedySearch(success_check="chosen")``.
    """

    def __init__(self, width: int = 4) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1; got {width}")
        self.width = width

    def run(self, attack: Attack, goal: TargetedGoal, state: SearchState, gamma: GoalTarget, order: list[int],
            reference: Tensor) -> Generator[ScoreRequest, Tensor, Status]:
        budget = attack.constraints.budget(state.num_words)
        beams = [_Beam(state.copy(), reference, 0.0)]
        try:
            for pos in order:
                if all(len(b.state.changes) >= budget for b in beams):
                    return _adopt(state, beams[0], "change_budget")
                expansions: list[tuple[int, str, str]] = []  # (beam, word, text), all beams' candidates at once
                for i, b in enumerate(beams):
                    if len(b.state.changes) < budget:
                        words = attack.candidates(b.state, pos, b.state.current)
                        expansions += [(i, w, b.state.replaced(pos, w)) for w in words]
                if not expansions:
                    continue
                rows = yield from goal.request([t for _, _, t in expansions], gamma.labels)
                pool = [(b.score, i, -1) for i, b in enumerate(beams)]  # a beam may stay as it is
                tolerance = 0.0
                for i, b in enumerate(beams):
                    mine = [e for e, (owner, _, _) in enumerate(expansions) if owner == i]
                    if mine:
                        tol = goal.tolerance(b.reference)
                        tolerance = max(tolerance, tol)
                        gains = goal.progress(rows[mine], gamma, b.reference).tolist()
                        pool += [(b.score + g, i, e) for e, g in zip(mine, gains, strict=True) if g > tol]
                kept = _select(pool, self.width, tolerance)
                new = [e for _, _, e in kept if e >= 0]
                full: Tensor | None = None
                try:
                    if new:
                        full = yield from goal.request([expansions[e][2] for e in new])
                finally:  # kept even when the budget stops the full rows (their rows stay the parents')
                    beams = [beams[i] if e < 0 else beams[i].expanded(
                        pos, expansions[e][1], rows[e], score, None if full is None else full[new.index(e)])
                        for score, i, e in kept]
                won = [b for b in beams if b.state.changes and goal.is_success(b.state.row, gamma)]
                if won:
                    return _adopt(state, won[0], "success")
        except BaseException:
            _adopt(state, beams[0], None)
            raise
        return _adopt(state, beams[0], None)


class _Beam:
    """One text a beam search keeps: its state, its Γ row, and its summed gain since the original."""

    def __init__(self, state: SearchState, reference: Tensor, score: float) -> None:
        self.state, self.reference, self.score = state, reference, score

    def expanded(self, position: int, word: str, reference: Tensor, score: float, row: Tensor | None) -> _Beam:
        state = self.state.copy()
        state.change(position, word, row)
        return _Beam(state, reference, score)


def _select(pool: list[tuple[float, int, int]], width: int, tolerance: float) -> list[tuple[float, int, int]]:
    """The ``width`` best of ``pool`` (score first), best first; scores within ``tolerance`` of the best left
    are ties, won by the earlier entry (as ``best_candidate`` decides for one text)."""
    rest, chosen = list(pool), []
    while rest and len(chosen) < width:
        top = max(p[0] for p in rest)
        chosen.append(rest.pop(next(j for j, p in enumerate(rest) if p[0] >= top - tolerance)))
    return chosen


def _adopt(state: SearchState, beam: _Beam, status: Status) -> Status:
    """Make ``state`` the beam's text (the attack reports ``state``)."""
    state.current[:] = beam.state.current
    state.changes[:] = beam.state.changes
    state.row = beam.state.row
    return status
