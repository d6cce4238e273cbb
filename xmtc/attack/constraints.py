"""Constraints on what an attack may change (paper §3: stop words, the change-rate budget θ), applied in one
place: ``Constraints``, which the search asks which positions it may visit, how many words it may change and
which candidate words it may keep.

A constraint is a class with up to three hooks (each optional; the base allows everything):
- ``max_changes(num_words)``: a budget; the attack stops, status ``change_budget``, once it is spent;
- ``allows_position(state, position)``: whether the word at ``position`` may change at all (checked before
  its importance is measured and before the transformation is asked);
- ``allowed(state, position, candidates)``: which candidate words for ``position`` may be kept, for all the
  candidates of the position at once (a sentence encoder scores them in one batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor

from xmtc.attack.base import SearchState, slot_edit
from xmtc.attack.goal import best_candidate, max_changes
from xmtc.attack.stopwords import is_stop_word


class Constraint:
    """Base class: constrains nothing (subclasses override the hooks they need).

    ``after_scoring``: an expensive ``allowed`` (a sentence encoder) that a greedy search checks only after the
    candidates are scored, on the best ones first, until it finds the one it keeps (the same choice as
    filtering all candidates first; ``Constraints.choose``)."""

    after_scoring = False

    def max_changes(self, num_words: int) -> int | None:
        """Words an attack may change in a text of ``num_words`` words (None: no limit from this constraint)."""
        return None

    def allows_position(self, state: SearchState, position: int) -> bool:
        return True

    def allowed(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[bool]:
        return [True] * len(candidates)


class StopWords(Constraint):
    """Stop words are never attacked and never put in (paper §3); the list is ``xmtc.attack.stopwords``."""

    def allows_position(self, state: SearchState, position: int) -> bool:
        return not is_stop_word(state.original[position])

    def allowed(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[bool]:
        """No stop word put in, by replacement or by insertion (the inserted word of a slot is checked)."""
        word = state.current[position]
        return [not is_stop_word(edit[1] if (edit := slot_edit(word, c)) is not None else c) for c in candidates]


class MaxChangeRate(Constraint):
    """At most floor(θ·n) of the n words change (the paper's θ = ``rate``)."""

    def __init__(self, rate: float = 0.1) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"max_change_rate must be in [0, 1]; got {rate}")
        self.rate = rate

    def max_changes(self, num_words: int) -> int | None:
        return max_changes(num_words, self.rate)


class MaxChangedWords(Constraint):
    """At most ``count`` words change, however long the text."""

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"count must be >= 0; got {count}")
        self.count = count

    def max_changes(self, num_words: int) -> int | None:
        return self.count


class NoRepeatModification(Constraint):
    """A word changed once is not changed again (a search that revisits positions would otherwise undo or
    stack its own changes); a word with an insertion beside it counts as changed, so nothing is inserted and
    then replaced, or inserted twice at one place."""

    def allows_position(self, state: SearchState, position: int) -> bool:
        return position not in state.changed


class MinSimilarity(Constraint):
    """Keep only candidates whose text stays at least ``threshold`` similar to the attacked text as it was
    (sentence encoder, all candidates of a position in one encoder call), checked during the search: the
    alternative to the paper's post-hoc filter (Figure 2), which discards whole results afterwards.

    Args:
        threshold: the least similarity a kept candidate's text may have.
        measure: ``cosine``, ``angular`` or ``arccos`` (``xmtc.attack.similarity.similarity``).
        encoder: anything with ``encode(texts) -> (N, d) tensor``; None: the attack run's own encoder
            (``settings.encoder``), set by ``xmtc.attack.recipe``.
    """

    after_scoring = True

    def __init__(self, threshold: float = 0.8, measure: str = "cosine", encoder: Any = None) -> None:
        self.threshold = threshold
        self.measure = measure
        self.encoder = encoder
        self.encoded_texts = 0  # texts sent to the encoder; the benchmark reports the cost

    def allowed(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[bool]:
        if not candidates:
            return []
        if self.encoder is None:
            raise ValueError("MinSimilarity needs a sentence encoder: give encoder=..., or settings.encoder")
        from xmtc.attack.similarity import text_similarity

        original = " ".join(state.original)
        texts = [state.replaced(position, c) for c in candidates]
        sims = text_similarity(self.encoder, [original] * len(texts), texts, self.measure)  # type: ignore[arg-type]
        self.encoded_texts += len(texts) + 1
        return [float(s) >= self.threshold for s in sims.tolist()]


#: candidates checked at a time by the deferred constraints, best gain first
_DEFERRED_CHUNK = 8


def default_constraints(max_change_rate: float = 0.1) -> list[Constraint]:
    """The paper's constraints: stop words, the change-rate budget, and no word changed twice."""
    return [StopWords(), MaxChangeRate(max_change_rate), NoRepeatModification()]


class Constraints:
    """All constraints of an attack, asked in one place."""

    def __init__(self, constraints: Iterable[Constraint]) -> None:
        self.items = list(constraints)
        for c in self.items:
            if not isinstance(c, Constraint):
                raise TypeError(f"constraints must be xmtc.attack.constraints.Constraint objects; got {type(c)}")

    def budget(self, num_words: int) -> int:
        """The fewest words any constraint lets change (every word when none limits it)."""
        limits = [m for c in self.items if (m := c.max_changes(num_words)) is not None]
        return min(limits, default=num_words)

    def allows_position(self, state: SearchState, position: int) -> bool:
        return all(c.allows_position(state, position) for c in self.items)

    def positions(self, state: SearchState) -> list[int]:
        """The positions the attack may visit, in order."""
        return [p for p in range(len(state.current)) if self.allows_position(state, p)]

    @property
    def deferred(self) -> bool:
        """Whether some constraint is checked after scoring (``Constraint.after_scoring``)."""
        return any(c.after_scoring for c in self.items)

    def filter(self, state: SearchState, position: int, candidates: Sequence[str], defer: bool = False) -> list[str]:
        """The candidates every constraint allows, in their order; each constraint sees only what the
        previous ones let through (so an encoder scores no candidate a cheap rule already dropped).
        ``defer``: leave out the constraints checked after scoring (``choose`` applies them)."""
        kept = list(candidates)
        for c in self.items:
            if not kept:
                break
            if defer and c.after_scoring:
                continue
            keep = c.allowed(state, position, kept)
            if len(keep) != len(kept):
                raise ValueError(f"{type(c).__name__}.allowed returned {len(keep)} answers for {len(kept)} candidates")
            kept = [w for w, ok in zip(kept, keep, strict=True) if ok]
        return kept

    def choose(self, state: SearchState, position: int, candidates: Sequence[str], gains: Tensor,
               tolerance: float) -> int | None:
        """``best_candidate`` among the candidates the deferred constraints allow, checking them lazily: in
        chunks of ``_DEFERRED_CHUNK`` from the largest gain down until one is allowed, then the ones tied with it
        (within ``tolerance``). The same choice as filtering every candidate first, for a few encoder calls."""
        if not self.deferred:
            return best_candidate(gains, tolerance)
        values = gains.tolist()
        ranked = sorted((i for i, g in enumerate(values) if g > tolerance), key=lambda i: -values[i])
        verdict: dict[int, bool] = {}

        def check(indices: list[int]) -> None:
            todo = [i for i in indices if i not in verdict]
            words = [candidates[i] for i in todo]
            ok = [True] * len(todo)
            for c in self.items:
                if c.after_scoring and todo:
                    answers = c.allowed(state, position, [w for w, y in zip(words, ok, strict=True) if y])
                    it = iter(answers)
                    ok = [y and next(it) for y in ok]
            verdict.update(zip(todo, ok, strict=True))

        best = None
        for start in range(0, len(ranked), _DEFERRED_CHUNK):
            chunk = ranked[start:start + _DEFERRED_CHUNK]
            check(chunk)
            best = next((i for i in chunk if verdict[i]), None)
            if best is not None:
                break
        if best is None:
            return None
        floor = values[best] - tolerance  # ties with the best allowed, down to the tolerance, as best_candidate
        check([i for i, g in enumerate(values) if g >= floor])
        first = next(i for i in range(len(values)) if verdict.get(i) and values[i] >= floor)
        return first if values[first] > tolerance else None
