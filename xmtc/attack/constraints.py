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

from xmtc.attack.base import SearchState
from xmtc.attack.goal import max_changes
from xmtc.attack.stopwords import is_stop_word


class Constraint:
    """Base class: constrains nothing (subclasses override the hooks they need)."""

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
        return [not is_stop_word(c) for c in candidates]


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
    stack its own changes)."""

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

    def filter(self, state: SearchState, position: int, candidates: Sequence[str]) -> list[str]:
        """The candidates every constraint allows, in their order; each constraint sees only what the
        previous ones let through (so an encoder scores no candidate a cheap rule already dropped)."""
        kept = list(candidates)
        for c in self.items:
            if not kept:
                break
            keep = c.allowed(state, position, kept)
            if len(keep) != len(kept):
                raise ValueError(f"{type(c).__name__}.allowed returned {len(keep)} answers for {len(kept)} candidates")
            kept = [w for w, ok in zip(kept, keep, strict=True) if ok]
        return kept
