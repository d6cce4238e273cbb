"""Shared types of the attack suite. Texts are attacked at the level of whitespace-separated words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

AttackKind = Literal["positive", "negative", "nontargeted"]


@runtime_checkable
class TextScorer(Protocol):
    """Anything that scores raw texts: (len(texts), num_labels) per-label scores, higher = more likely.

    ``xmtc.models.XMTCModule.score_texts`` is one. Scores are used as they are (no softmax).
    """

    def score_texts(self, texts: Sequence[str], batch_size: int = 64) -> Tensor: ...


ChangeKind = Literal["replace", "insert_before", "insert_after"]
INSERTIONS: tuple[str, ...] = ("insert_before", "insert_after")


@dataclass(frozen=True)
class Change:
    """One change. ``position``: the word's index in the ORIGINAL text.split(), which never shifts: an insertion
    is anchored at an original word (``kind`` says on which side; ``old`` is then ""), so a later insertion
    never moves what an earlier change points at. Each change counts once against the change budget."""

    position: int
    old: str
    new: str
    kind: ChangeKind = "replace"


def insertion_slot(word: str, new: str, kind: ChangeKind) -> str:
    """What the slot of ``word`` reads once ``new`` is inserted on the ``kind`` side of it."""
    if kind not in INSERTIONS:
        raise ValueError(f"an insertion's kind is one of {INSERTIONS}; got {kind!r}")
    return f"{new} {word}" if kind == "insert_before" else f"{word} {new}"


def slot_edit(word: str, slot: str) -> tuple[ChangeKind, str] | None:
    """Which change turns the slot ``word`` into ``slot``: ("replace", new word) for one whitespace-free word
    other than ``word``, ("insert_before"/"insert_after", inserted word) for ``word`` with one word put beside
    it; None for anything else (which would shift positions or change more than one word)."""
    parts = slot.split()
    if len(parts) == 1 and parts[0] == slot and slot != word:
        return "replace", slot
    if len(parts) == 2 and " ".join(parts) == slot:
        if parts[1] == word and parts[0] != word:
            return "insert_before", parts[0]
        if parts[0] == word and parts[1] != word:
            return "insert_after", parts[1]
    return None


@dataclass
class SearchState:
    """Where one attack stands: the words it started from, the words now, what it changed, and the full row of
    scores of the current text (what success is tested on)."""

    original: list[str]
    current: list[str]
    num_words: int  # the words the budget counts: the whole document's when only part of it is attacked
    row: Tensor  # full scores of the current text
    changes: list[Change] = field(default_factory=list)
    #: the attack's goal target (``xmtc.attack.goal.GoalTarget``: kind and labels Γ), set once known; what
    #: target-aware parts work toward
    target: Any = None

    @property
    def changed(self) -> set[int]:
        return {c.position for c in self.changes}

    def copy(self) -> SearchState:
        return SearchState(self.original, list(self.current), self.num_words, self.row, list(self.changes),
                           self.target)

    def replaced(self, position: int, word: str) -> str:
        """The current text with ``word`` at ``position``."""
        return " ".join([*self.current[:position], word, *self.current[position + 1:]])

    def change(self, position: int, word: str, row: Tensor | None = None) -> None:
        """Keep ``word`` at ``position`` (a replacement word, or an insertion slot, ``insertion_slot``); ``row``:
        the full scores of the new text, when already known. ``current`` keeps one entry per original word
        (an insertion makes its entry two words), so positions never shift."""
        old = self.current[position]
        edit = slot_edit(old, word)
        if edit is None or edit[0] == "replace":
            self.changes.append(Change(position, old, word))
        else:
            self.changes.append(Change(position, "", edit[1], edit[0]))
        self.current[position] = word
        if row is not None:
            self.row = row


@dataclass
class AttackResult:
    """Outcome of attacking one (document, target) pair; every field is JSON-serialisable via asdict."""

    kind: AttackKind
    target: int  # label index
    success: bool
    status: Literal["success", "failed", "change_budget", "query_budget", "skipped"]
    original_text: str
    adversarial_text: str
    changes: list[Change] = field(default_factory=list)
    queries: int = 0
    num_words: int = 0
    rank_before: int = 0  # 1-based rank of the target label
    rank_after: int = 0
    topk_before: list[int] = field(default_factory=list)
    topk_after: list[int] = field(default_factory=list)
    similarity: float | None = None
    message: str = ""

    @property
    def change_rate(self) -> float:
        """Changes (an insertion counts one) over the ORIGINAL word count."""
        return len(self.changes) / self.num_words if self.num_words else 0.0


@runtime_checkable
class Transformation(Protocol):
    """Proposes replacement words: for each requested position, up to K candidates for ``words[position]``
    given the current text. Stop words are never proposed; the original word is never proposed."""

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]: ...


@runtime_checkable
class TargetAwareTransformation(Protocol):
    """A transformation whose candidates depend on the labels the attack works toward (Γ) and on the attacked
    model (e.g. label-guided words, ``xmtc.attack.label_guided``). ``Attack.candidates`` calls
    ``candidates_toward`` instead of ``candidates`` once Γ is known (``target``: a ``GoalTarget``, its kind and
    labels). Candidates may be insertion slots (``insertion_slot``)."""

    def candidates_toward(self, words: Sequence[str], positions: Sequence[int], target: Any,
                          model: object) -> list[list[str]]: ...
