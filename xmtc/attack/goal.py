"""Multilabel attack goals (paper §3): what counts as success, and how far a text moved toward it.

One class per kind (``PositiveTargeted``, ``NegativeTargeted``, ``NonTargeted``; a new goal is one more
subclass of ``Goal``). ``TargetedGoal`` puts them on top of the ``QueryOracle`` of one attacked example,
the only door to the model (batching, cache, query budget, label subsets). Nothing is softmaxed.

Gains are measured in log-odds (logits), not probabilities. An absolute threshold on probabilities
cannot see a negative target climbing from 1e-7 to 5e-7 (most non-predicted labels among thousands sit
below 1e-5), and a positive target whose logit exceeds ~16.6 scores exactly 1.0 in float32, so no
candidate would show a gain. A scorer that can return logits (``score_texts(..., logits=True)``, as
xmtc's models do) is asked for them; a probability-only scorer's rows are mapped to log-odds in float64.
The top-k and ranks are unchanged by the map (it is monotone), and for one target label (positive and
negative attacks) so is the best candidate; only the threshold and the ties see the difference.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, TextScorer
from xmtc.attack.oracle import (  # noqa: F401 (re-exported: the oracle's names as they were imported before)
    QueryBudgetExhausted,
    QueryOracle,
    ScoreRequest,
    ScoreSpace,
    accepts_keyword,
    accepts_labels,
    drive,
)
from xmtc.metrics import top_labels

ATTACK_KINDS: tuple[str, ...] = ("positive", "negative", "nontargeted")


@dataclass(frozen=True)
class GoalTarget:
    """The labels Γ an attack acts on, fixed from the original text's top-k (paper eq. 3.2-3.4).

    positive: Γ = A₁ ∩ Ŷ_k(S); negative: Γ = A₋₁ \\ Ŷ_k(S); nontargeted: Γ = true labels ∩ Ŷ_k(S).
    """

    kind: AttackKind
    labels: tuple[int, ...]


def as_label_list(target: int | Sequence[int] | Tensor) -> list[int]:
    """A target given as one label index or a sequence of them, as a list of ints."""
    if isinstance(target, numbers.Integral):
        return [int(target)]
    if isinstance(target, Tensor):
        return [int(t) for t in target.reshape(-1).tolist()]
    return [int(t) for t in target]


# Gains at or below GAIN_RTOL * (1 + Σ|reference logits|) are no progress, and gains this close to the best
# are ties (the first candidate wins). Float32 logits of two texts the model cannot tell apart (a candidate
# outside its vocabulary replacing another, case variants under a lower-casing tokenizer) differ by rounding
# when batched differently, about 1e-7 of their size; a real move is orders of magnitude larger.
GAIN_RTOL = 1e-5


def log_odds(scores: Tensor, space: ScoreSpace = "logit") -> Tensor:
    """Scores as float64 log-odds; probabilities are clamped inside (0, 1) so 0 and 1 stay finite."""
    scores = scores.double()
    if space == "logit":
        return scores
    p = scores.clamp(1e-300, 1.0 - 2.0 ** -53)
    return torch.log(p) - torch.log1p(-p)


def progress_toward(rows: Tensor, target: GoalTarget, reference: Tensor, space: ScoreSpace = "logit") -> Tensor:
    """Signed move toward the goal of each row relative to ``reference``, in log-odds (float64, (len(rows),)).

    ``rows`` (N, |Γ|) and ``reference`` (|Γ|,) hold the scores of the labels of Γ, in Γ order, in ``space``.
    positive / nontargeted: Σ_{j∈Γ} reference[j] - row[j] (the drop); negative: Σ_{j∈Γ} row[j] - reference[j].
    Summed label by label in Γ order, in float64, so that a one-row-at-a-time implementation computes the
    very same numbers (equal decisions, even on near-ties).
    """
    rows = rows.reshape(-1, rows.shape[-1])
    if rows.shape[1] != len(target.labels) or reference.reshape(-1).numel() != len(target.labels):
        raise ValueError(f"progress needs the {len(target.labels)} Γ columns; got rows {tuple(rows.shape)} "
                         f"and reference {tuple(reference.shape)}")
    rows, reference = log_odds(rows, space), log_odds(reference.reshape(-1), space)
    acc = torch.zeros(rows.shape[0], dtype=torch.float64)
    for j in range(len(target.labels)):
        diff = rows[:, j] - reference[j]
        acc += diff if target.kind == "negative" else -diff
    return acc


def gain_tolerance(reference: Tensor, space: ScoreSpace = "logit") -> float:
    """Gains within this of each other are equal, and gains up to it are no progress (see GAIN_RTOL)."""
    return GAIN_RTOL * (1.0 + float(log_odds(reference.reshape(-1), space).abs().sum()))


def best_candidate(gains: Tensor, tolerance: float) -> int | None:
    """The candidate to keep: the first whose gain is within ``tolerance`` of the best, as a strict ">"
    loop would pick without rounding noise; None when no gain exceeds ``tolerance`` (the word stays).
    The engine and the reference implementation both decide with this one rule."""
    if gains.numel() == 0:
        return None
    best = int(torch.nonzero(gains >= gains.max() - tolerance)[0])
    return best if float(gains[best]) > tolerance else None


def max_changes(num_words: int, max_change_rate: float) -> int:
    """Words an attack may change: floor(rate * n), e.g. 1 of 12 words at 10% (tolerant to 0.29 * 100 =
    28.999...)."""
    return max(0, math.floor(max_change_rate * num_words + 1e-9))


def top_k_of(row: Tensor, k: int) -> list[int]:
    """Ŷ_k of one row of scores: the indices of the k largest, best first, ties to the lower label index (the
    metrics' rule, ``xmtc.metrics.top_labels``, so an attack and P@k agree on what is predicted)."""
    return top_labels(row.reshape(1, -1), min(k, row.numel()))[0].tolist()


class Goal(ABC):
    """One kind of attack (paper §3): which labels Γ it acts on, when it has succeeded, how far a text moved.

    A goal never scores text itself: the search hands it rows from the ``QueryOracle``. A new goal is a
    subclass with its own ``kind``, given to ``TargetedGoal(goals=[...])``.
    """

    kind: ClassVar[str]

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        self.k = k

    def topk(self, row: Tensor) -> list[int]:
        """Ŷ_k (``top_k_of``)."""
        return top_k_of(row, self.k)

    @staticmethod
    def rank(row: Tensor, label: int) -> int:
        """1-based rank of ``label`` under the same tie rule: 1 + labels scoring higher + labels scoring the
        same with a lower index (so rank <= k exactly when the label is in Ŷ_k)."""
        score = row[label]
        return 1 + int((row > score).sum()) + int((row[:label] == score).sum())

    def target_for(self, row: Tensor, target: int | Sequence[int]) -> tuple[GoalTarget | None, str]:
        """Γ from the original scores, or (None, why) when the precondition fails (the example is skipped)."""
        labels = as_label_list(target)
        if not labels:
            raise ValueError("empty target")
        bad = [t for t in labels if not 0 <= t < row.numel()]
        if bad:
            raise ValueError(f"target labels {bad} out of range for {row.numel()} labels")
        gamma = self.gamma(labels, set(self.topk(row)))
        return (GoalTarget(self.kind, gamma), "") if gamma else (None, self.why_not(labels))  # type: ignore[arg-type]

    @abstractmethod
    def gamma(self, labels: list[int], top: set[int]) -> tuple[int, ...]:
        """The labels of ``labels`` the attack acts on, given the original top-k ``top``."""

    @abstractmethod
    def why_not(self, labels: list[int]) -> str:
        """Why an example whose Γ is empty is skipped."""

    @abstractmethod
    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        """Whether each full row of ``rows`` (N, L) reaches the goal: a (N,) bool tensor."""

    def progress(self, rows: Tensor, target: GoalTarget, reference: Tensor, space: ScoreSpace = "logit") -> Tensor:
        """Move toward the goal of each Γ-column row relative to ``reference``, in log-odds (eq. 3.2-3.4)."""
        return progress_toward(rows, target, reference, space)

    def _in_top(self, rows: Tensor, target: GoalTarget) -> Tensor:
        """(N, |Γ|): whether each label of Γ is in each row's top-k."""
        top = top_labels(rows, min(self.k, rows.shape[-1]))  # (N, k)
        return (top[:, :, None] == torch.tensor(target.labels)[None, None, :]).any(dim=1)


class PositiveTargeted(Goal):
    """Push predicted true labels out of the top-k: Γ = A₁ ∩ Ŷ_k(S); success when every label of Γ left it."""

    kind = "positive"

    def gamma(self, labels: list[int], top: set[int]) -> tuple[int, ...]:
        return tuple(t for t in labels if t in top)

    def why_not(self, labels: list[int]) -> str:
        return f"positive attack: target {labels} not in the top-{self.k}"

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        return ~self._in_top(rows, target).any(dim=1)


class NegativeTargeted(Goal):
    """Pull labels into the top-k: Γ = A₋₁ \\ Ŷ_k(S); success when every label of Γ entered it."""

    kind = "negative"

    def gamma(self, labels: list[int], top: set[int]) -> tuple[int, ...]:
        return tuple(t for t in labels if t not in top)

    def why_not(self, labels: list[int]) -> str:
        return f"negative attack: target {labels} already in the top-{self.k}"

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        return self._in_top(rows, target).all(dim=1)


class NonTargeted(Goal):
    """Make any correct prediction disappear: the target is the true labels, Γ those in Ŷ_k(S); success when at
    least one label of Γ left the top-k."""

    kind = "nontargeted"

    def gamma(self, labels: list[int], top: set[int]) -> tuple[int, ...]:
        return tuple(t for t in labels if t in top)

    def why_not(self, labels: list[int]) -> str:
        return f"nontargeted attack: none of the true labels {labels} is in the top-{self.k}"

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        return ~self._in_top(rows, target).all(dim=1)


def standard_goals(k: int = 5) -> list[Goal]:
    """The paper's three goals."""
    return [PositiveTargeted(k), NegativeTargeted(k), NonTargeted(k)]


class TargetedGoal(QueryOracle):
    """The oracle of one attacked example together with the goals, chosen per attack by its kind.

    Everything that decides (Γ, success, progress, top-k, ranks) is the goal's; everything that scores is
    the oracle's (batching, cache, query budget, label subsets). ``goals``: the goal of each kind (default:
    positive, negative and non-targeted at this ``k``); a custom goal class joins with its own ``kind``.
    """

    def __init__(
        self,
        scorer: TextScorer,
        k: int = 5,
        batch_size: int = 64,
        query_budget: int | None = None,
        max_cache: int | None = 4096,
        goals: Iterable[Goal] | None = None,
    ) -> None:
        if k < 1 or batch_size < 1:
            raise ValueError(f"k and batch_size must be >= 1; got k={k}, batch_size={batch_size}")
        super().__init__(scorer, batch_size=batch_size, query_budget=query_budget, max_cache=max_cache)
        self.k = k
        self.goals: dict[str, Goal] = {g.kind: g for g in (standard_goals(k) if goals is None else goals)}
        if any(g.k != k for g in self.goals.values()):
            raise ValueError(f"every goal must use the same k as the goal set ({k})")

    def fresh(self) -> TargetedGoal:
        """The same goals and settings with a cache and counters of its own (one per concurrent attack)."""
        return TargetedGoal(self.scorer, self.k, self.batch_size, self.query_budget, self.max_cache,
                            self.goals.values())

    def goal(self, kind: str) -> Goal:
        try:
            return self.goals[kind]
        except KeyError:
            raise ValueError(f"unknown attack kind {kind!r}; expected one of {tuple(self.goals)}") from None

    # -- rankings --

    def topk(self, row: Tensor) -> list[int]:
        """Ŷ_k (``top_k_of``)."""
        return top_k_of(row, self.k)

    rank = staticmethod(Goal.rank)

    # -- the goal of each attack --

    def target_for(self, row: Tensor, kind: AttackKind, target: int | Sequence[int]) -> tuple[GoalTarget | None, str]:
        """Γ from the original scores, or (None, why) when the precondition fails (the example is skipped).

        positive: the target labels in Ŷ_k; negative: those not in Ŷ_k; nontargeted: ``target`` holds the
        true labels and Γ their correctly predicted ones (those in Ŷ_k).
        """
        return self.goal(kind).target_for(row, target)

    def is_success(self, row: Tensor, target: GoalTarget) -> bool:
        """positive: every label of Γ left Ŷ_k; negative: every label of Γ entered Ŷ_k;
        nontargeted: at least one label of Γ left Ŷ_k."""
        return bool(self.successes(row.reshape(1, -1), target)[0])

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        """``is_success`` for each full row of ``rows`` (N, L) at once: a (N,) bool tensor."""
        return self.goal(target.kind).successes(rows, target)

    def progress(self, rows: Tensor, target: GoalTarget, reference: Tensor) -> Tensor:
        """Move toward the goal of each Γ-column row relative to ``reference`` (eq. 3.2-3.4), in log-odds;
        see ``progress_toward``."""
        return self.goal(target.kind).progress(rows, target, reference, self.space)

    def tolerance(self, reference: Tensor) -> float:
        """``gain_tolerance`` of a Γ-column reference row in this goal's score space."""
        return gain_tolerance(reference, self.space)
