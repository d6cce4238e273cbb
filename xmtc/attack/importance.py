"""Word importance (paper §3.1, eq. 3.1-3.3): which words to attack first.

Black box (``mask_importance``): every word in turn is masked (or deleted) and the masked copies are scored
together through the goal, so they are batched, cached and counted as queries; a word's importance is how
far masking it moves the text toward the goal. Unlike the reference code, the last word is included.

White box (``gradient_importance``): the model's ``word_gradients`` (the L2 norm of the gradient of the target
scores w.r.t. each word's embedding, AttentionXML's), through the model protocol; it costs no queries.

Stop words get importance -inf in both: they are never attacked (paper §3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from xmtc.attack.goal import GoalTarget, ScoreRequest, TargetedGoal, as_label_list, drive
from xmtc.attack.stopwords import is_stop_word

ImportanceName = Literal["mask", "deletion", "gradient", "label"]


def attackable_positions(words: Sequence[str]) -> list[int]:
    """Positions of the words an attack may change (all but stop words)."""
    return [i for i, w in enumerate(words) if not is_stop_word(w)]


def masked_text(words: Sequence[str], position: int, mask_token: str | None = "[UNK]") -> str:
    """The text with word ``position`` replaced by ``mask_token``, or deleted when ``mask_token`` is None."""
    if mask_token is None:
        return " ".join([*words[:position], *words[position + 1:]])
    return " ".join([*words[:position], mask_token, *words[position + 1:]])


def mask_importance(
    goal: TargetedGoal,
    words: Sequence[str],
    target: GoalTarget,
    reference: Tensor,
    mask_token: str | None = "[UNK]",
) -> Tensor:
    """Importance (len(words),) float64: progress toward the goal when each word is masked, -inf for stop
    words (whose masked copies are not even scored). One batched goal call for all copies, of the Γ
    columns only.

    ``reference`` holds the Γ scores of the unmasked text (``goal.scores([text], target.labels)[0]``).
    """
    return drive(mask_importance_steps(goal, words, target, reference, mask_token), goal.score_batched)


def mask_importance_steps(
    goal: TargetedGoal,
    words: Sequence[str],
    target: GoalTarget,
    reference: Tensor,
    mask_token: str | None = "[UNK]",
    positions: Sequence[int] | None = None,
) -> Generator[ScoreRequest, Tensor, Tensor]:
    """``mask_importance`` as a scoring generator (see ``TargetedGoal.request``); only ``positions`` (default:
    every word but stop words) are masked, the others get -inf."""
    importance = torch.full((len(words),), float("-inf"), dtype=torch.float64)
    positions = attackable_positions(words) if positions is None else list(positions)
    if positions:
        rows = yield from goal.request([masked_text(words, p, mask_token) for p in positions], target.labels)
        importance[positions] = goal.progress(rows, target, reference)
    return importance


class WordImportance(ABC):
    """How much each word matters to the goal: the search visits words in descending importance."""

    def check(self, scorer: object) -> None:
        """Raise a TypeError when ``scorer`` cannot be used (before any attack starts); any scorer by default."""
        return None

    @abstractmethod
    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        """A scoring generator returning (len(words),) float64 importance; -inf outside ``positions`` (the
        positions the constraints allow), which are never visited. ``reference``: the Γ columns of the text."""


class MaskImportance(WordImportance):
    """Black box (eq. 3.1-3.3): progress toward the goal when the word is replaced by ``mask_token``."""

    def __init__(self, mask_token: str | None = "[UNK]") -> None:
        self.mask_token = mask_token

    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        return (yield from mask_importance_steps(goal, words, target, reference, self.mask_token, positions))


class DeletionImportance(MaskImportance):
    """Black box: progress toward the goal when the word is deleted (TextFooler's leave-one-out)."""

    def __init__(self) -> None:
        super().__init__(mask_token=None)


class GradientImportance(WordImportance):
    """White box: the gradient of the target scores w.r.t. the word's embedding (no queries); needs a model with
    ``word_gradients(text, labels)`` (``xmtc.attack.classifier.WordGradients``), such as AttentionXML."""

    def check(self, scorer: object) -> None:
        _check_gradient_model(scorer)

    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        grads = gradient_importance(goal.scorer, " ".join(words), list(target.labels))  # type: ignore[arg-type]
        importance = torch.full((len(words),), float("-inf"), dtype=torch.float64)
        allowed = list(positions)
        importance[allowed] = grads[allowed]
        return importance
        yield  # a scoring generator that asks for nothing


class LabelProbeImportance(WordImportance):
    """Black box, for negative targets (issue 16): where putting the target's word in raises it most, not only
    what to remove. Each allowed position is probed by each of ``probes`` with the target's best TF-IDF word
    (``xmtc.attack.label_words.LabelWords``; the run fits them on its training split): ``mask`` (eq. 3.1's
    masked copy), ``replace`` (the word replaced by the label word), ``insert_before``/``insert_after`` (the
    label word put beside it); a position's importance is its largest progress over the probes. All copies go
    in one batched request of the Γ columns (len(probes) queries per position). Other kinds, and targets
    without label words, get ``MaskImportance``'s order.
    """

    needs_label_words = True

    def __init__(self, probes: Sequence[str] = ("replace", "insert_before"), mask_token: str | None = "[UNK]") -> None:
        bad = [p for p in probes if p not in ("mask", "replace", "insert_before", "insert_after")]
        if bad or not probes:
            raise ValueError(f"probes must be a non-empty list of mask, replace, insert_before, insert_after; "
                             f"got {list(probes)}")
        self.probes = list(probes)
        self.mask_token = mask_token
        self.label_words: Any = None

    def set_label_words(self, label_words: Any) -> None:
        self.label_words = label_words

    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        if self.label_words is None:
            raise ValueError("LabelProbeImportance: no label words; the attack run fits them on its training split, "
                             "or call set_label_words(LabelWords.fit(texts, labels, n))")
        best = self.label_words.ranked(list(target.labels), 1) if target.kind == "negative" else []
        if not best:
            return (yield from mask_importance_steps(goal, words, target, reference, self.mask_token, positions))
        word = best[0]
        importance = torch.full((len(words),), float("-inf"), dtype=torch.float64)
        positions = list(positions)
        if not positions:
            return importance

        def probe(kind: str, p: int) -> str:
            if kind == "mask":
                return masked_text(words, p, self.mask_token)
            slot = {"replace": word, "insert_before": f"{word} {words[p]}", "insert_after": f"{words[p]} {word}"}[kind]
            return " ".join([*words[:p], slot, *words[p + 1:]])

        texts = [probe(kind, p) for kind in self.probes for p in positions]
        rows = yield from goal.request(texts, target.labels)
        gains = goal.progress(rows, target, reference).reshape(len(self.probes), len(positions))
        importance[positions] = gains.max(dim=0).values
        return importance


def importance_method(name: str | WordImportance, mask_token: str | None = "[UNK]") -> WordImportance:
    """The importance a setting names: ``mask`` (with ``mask_token``; None deletes), ``deletion``, ``gradient``,
    ``label`` (``LabelProbeImportance``: the target's word put in by replacement or insertion)."""
    if isinstance(name, WordImportance):
        return name
    if name == "mask":
        return MaskImportance(mask_token)
    if name == "deletion":
        return DeletionImportance()
    if name == "gradient":
        return GradientImportance()
    if name == "label":
        return LabelProbeImportance(mask_token=mask_token)
    raise ValueError(f"importance must be 'mask', 'deletion', 'gradient' or 'label'; got {name!r}")


# -- white box --


def _check_gradient_model(model: Any) -> None:
    """Raise a TypeError when the model cannot give word gradients."""
    from xmtc.attack.classifier import supports_word_gradients

    if not supports_word_gradients(model):
        raise TypeError(f"gradient importance needs a model with word_gradients(text, labels) (the gradient of its "
                        f"scores w.r.t. its word embeddings, as xmtc.models.AttentionXML has), but "
                        f"{type(model).__name__} has none; use importance='mask' instead")


def supports_gradient_importance(model: Any) -> bool:
    """Whether ``gradient_importance`` can run on ``model``."""
    try:
        _check_gradient_model(model)
    except TypeError:
        return False
    return True


def gradient_importance(model: Any, text: str, target: int | Sequence[int]) -> Tensor:
    """Importance (len(text.split()),) float64: the model's ``word_gradients`` of the target score(s)
    (``xmtc.attack.classifier.WordGradients``), stop words -inf."""
    _check_gradient_model(model)
    words = text.split()
    importance = model.word_gradients(" ".join(words), as_label_list(target)).to(torch.float64).clone()
    if importance.shape != (len(words),):
        raise ValueError(f"{type(model).__name__}.word_gradients returned shape {tuple(importance.shape)} for "
                         f"{len(words)} words")
    for i, w in enumerate(words):
        if is_stop_word(w):
            importance[i] = float("-inf")
    return importance
