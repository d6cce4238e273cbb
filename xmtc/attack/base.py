"""Shared types of the attack suite. Texts are attacked at the level of whitespace-separated words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor

AttackKind = Literal["positive", "negative", "nontargeted"]


@runtime_checkable
class TextScorer(Protocol):
    """Anything that scores raw texts: (len(texts), num_labels) per-label scores, higher = more likely.

    ``xmtc.models.XMTCModule.score_texts`` is one. Scores are used as they are (no softmax).
    """

    def score_texts(self, texts: Sequence[str], batch_size: int = 64) -> Tensor: ...


@dataclass(frozen=True)
class Change:
    position: int  # word index in text.split()
    old: str
    new: str


@dataclass
class SearchState:
    """Where one attack stands: the words it started from, the words now, what it changed, and the full row of
    scores of the current text (what success is tested on)."""

    original: list[str]
    current: list[str]
    num_words: int  # the words the budget counts: the whole document's when only part of it is attacked
    row: Tensor  # full scores of the current text
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> set[int]:
        return {c.position for c in self.changes}

    def copy(self) -> SearchState:
        return SearchState(self.original, list(self.current), self.num_words, self.row, list(self.changes))

    def replaced(self, position: int, word: str) -> str:
        """The current text with ``word`` at ``position``."""
        return " ".join([*self.current[:position], word, *self.current[position + 1:]])

    def change(self, position: int, word: str, row: Tensor | None = None) -> None:
        """Keep ``word`` at ``position``; ``row``: the full scores of the new text, when already known."""
        self.changes.append(Change(position, self.current[position], word))
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
        return len(self.changes) / self.num_words if self.num_words else 0.0


@runtime_checkable
class Transformation(Protocol):
    """Proposes replacement words: for each requested position, up to K candidates for ``words[position]``
    given the current text. Stop words are never proposed; the original word is never proposed."""

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]: ...
