"""Multilabel attack goals (paper §3): what counts as success, and how far a text moved toward it.

``TargetedGoal`` is also the only door to the model: it batches texts, caches their scores per attacked
example and counts queries against an optional budget, so every component (importance, search) that
scores text through it is batched, cached and counted in the same way. Nothing is softmaxed.

Gains are measured in log-odds (logits), not probabilities. An absolute threshold on probabilities
cannot see a negative target climbing from 1e-7 to 5e-7 (most non-predicted labels among thousands sit
below 1e-5), and a positive target whose logit exceeds ~16.6 scores exactly 1.0 in float32, so no
candidate would show a gain. A scorer that can return logits (``score_texts(..., logits=True)``, as
xmtc's models do) is asked for them; a probability-only scorer's rows are mapped to log-odds in float64.
The top-k and ranks are unchanged by the map (it is monotone), and for one target label (positive and
negative attacks) so is the best candidate; only the threshold and the ties see the difference.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, TextScorer
from xmtc.metrics import top_labels

R = TypeVar("R")
ATTACK_KINDS: tuple[str, ...] = ("positive", "negative", "nontargeted")


class QueryBudgetExhausted(RuntimeError):
    """Raised before sending texts that would take the query count past the budget (nothing is sent)."""

    def __init__(self, queries: int, requested: int, budget: int) -> None:
        super().__init__(f"query budget exhausted: {queries} queries used, {requested} more requested, "
                         f"budget {budget}")
        self.queries = queries
        self.requested = requested
        self.budget = budget


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


ScoreSpace = Literal["logit", "probability"]

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


@dataclass(frozen=True)
class ScoreRequest:
    """Texts a scoring generator needs scored: full rows (``labels`` None) or only the columns ``labels``."""

    texts: list[str]
    labels: tuple[int, ...] | None = None


def accepts_keyword(scorer: TextScorer, name: str) -> bool:
    """Whether ``scorer.score_texts`` takes the keyword ``name`` (``labels``: computes a subset of label
    columns by itself; ``logits``: returns log-odds instead of probabilities)."""
    try:
        return name in inspect.signature(scorer.score_texts).parameters
    except (TypeError, ValueError):
        return False


def accepts_labels(scorer: TextScorer) -> bool:
    """Whether ``scorer.score_texts`` can compute a subset of label columns (``labels=``) by itself."""
    return accepts_keyword(scorer, "labels")


class TargetedGoal:
    """Success tests and progress for multilabel attacks, plus batched, cached, counted scoring.

    The search only needs the scores of the target labels Γ to rank masked copies and candidates, and the
    full row only to test success once it keeps a change. So it asks for Γ columns (``labels=``), which a
    model such as AttentionXML computes without the other thousands of labels, and full rows rarely.
    Gains are always computed between rows of the same kind (Γ columns against Γ columns).

    ``queries`` counts distinct texts whose scores were asked for, as an attacker querying the model would
    (Γ columns and the full row of one text are one query); ``calls`` counts ``score_texts`` calls.

    Rows are in ``space``: logits when the scorer can give them (``score_texts(..., logits=True)``),
    else the scorer's probabilities; gains are log-odds either way (module docstring).

    Args:
        scorer: the model under attack (anything with ``score_texts``; ``labels=`` is used when it has it).
        k: size of the predicted set Ŷ_k (5 in the paper).
        batch_size: texts per ``score_texts`` call.
        query_budget: maximum number of texts sent to the model per attacked example (None: unlimited).
        max_cache: scored rows kept per attacked example (least recently used dropped first); bounds
            memory at large label counts (a 31k-label row is ~124 kB). None: unbounded.
    """

    def __init__(
        self,
        scorer: TextScorer,
        k: int = 5,
        batch_size: int = 64,
        query_budget: int | None = None,
        max_cache: int | None = 4096,
    ) -> None:
        if not isinstance(scorer, TextScorer):
            raise TypeError(f"the scorer must have score_texts(texts, batch_size); got {type(scorer).__name__}")
        if k < 1 or batch_size < 1:
            raise ValueError(f"k and batch_size must be >= 1; got k={k}, batch_size={batch_size}")
        if query_budget is not None and query_budget < 0:
            raise ValueError(f"query_budget must be >= 0 or None; got {query_budget}")
        self.scorer = scorer
        self.k = k
        self.batch_size = batch_size
        self.query_budget = query_budget
        self.max_cache = max_cache
        self.partial = accepts_labels(scorer)
        self.space: ScoreSpace = "logit" if accepts_keyword(scorer, "logits") else "probability"
        self._cache: OrderedDict[tuple[tuple[int, ...] | None, str], Tensor] = OrderedDict()
        self._seen: set[str] = set()
        self.queries = 0  # distinct texts scored since reset()
        self.calls = 0  # score_texts calls since reset()

    def reset(self) -> None:
        """Start a new attacked example: empty cache, zero counters."""
        self._cache.clear()
        self._seen.clear()
        self.queries = 0
        self.calls = 0

    # -- scoring --

    def fresh(self) -> TargetedGoal:
        """A goal with the same settings and its own cache and counters (one per concurrent attack)."""
        return TargetedGoal(self.scorer, self.k, self.batch_size, self.query_budget, self.max_cache)

    def request(self, texts: Sequence[str], labels: Sequence[int] | None = None
                ) -> Generator[ScoreRequest, Tensor, Tensor]:
        """Scores of ``texts`` as a generator: yields a ``ScoreRequest`` for the texts that must be sent to
        the model (uncached, deduplicated; budget checked first), receives their rows, returns all rows in
        order: full rows, or the columns ``labels`` in that order.

        Whoever drives it decides how texts are batched, so texts of several attacks can share one
        forward pass (``GreedyWordSearch.attack_many``); ``scores`` drives it alone. A scorer without
        ``labels=`` gets full-row requests, whose cached rows are then sliced (the same numbers either way).
        """
        key = None if labels is None else tuple(int(j) for j in labels)
        if key is not None and not self.partial:
            rows = yield from self.request(texts)
            return rows[:, list(key)] if rows.numel() else rows.reshape(0, len(key))
        missing = list(dict.fromkeys(t for t in texts if (key, t) not in self._cache))
        fresh: dict[str, Tensor] = {}
        if missing:
            new = [t for t in missing if t not in self._seen]
            if self.query_budget is not None and self.queries + len(new) > self.query_budget:
                raise QueryBudgetExhausted(self.queries, len(new), self.query_budget)
            out = yield ScoreRequest(missing, key)
            if out.ndim != 2 or out.shape[0] != len(missing) or (key is not None and out.shape[1] != len(key)):
                raise ValueError(f"score_texts returned shape {tuple(out.shape)} for {len(missing)} texts"
                                 + ("" if key is None else f" and {len(key)} labels"))
            self._seen.update(new)
            self.queries += len(new)
            # copies, so one cached row does not keep its whole batch alive
            fresh = {text: row.clone() for text, row in zip(missing, out, strict=True)}
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[(key, text)]
                self._cache.move_to_end((key, text))
            rows.append(row)
        self._cache.update(((key, t), row) for t, row in fresh.items())
        if self.max_cache is not None:
            while len(self._cache) > self.max_cache:
                self._cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, 0 if key is None else len(key))

    def score_batched(self, request: ScoreRequest) -> Tensor:
        """Send a request's texts to the model in ``batch_size`` chunks (no cache, no counting); CPU float
        rows, full or of the requested label columns."""
        texts, labels = request.texts, request.labels
        kwargs = {"logits": True} if self.space == "logit" else {}
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            if labels is None:
                rows = self.scorer.score_texts(chunk, batch_size=self.batch_size, **kwargs)
            elif self.partial:
                rows = self.scorer.score_texts(chunk, batch_size=self.batch_size, labels=list(labels), **kwargs)
            else:
                rows = self.scorer.score_texts(chunk, batch_size=self.batch_size, **kwargs)[:, list(labels)]
            out.append(rows.detach().float().cpu())
            self.calls += 1
        return torch.cat(out) if out else torch.zeros(0, 0 if labels is None else len(labels))

    def scores(self, texts: Sequence[str], labels: Sequence[int] | None = None) -> Tensor:
        """Scores (len(texts), L), or (len(texts), len(labels)), on the CPU; only texts not cached are sent,
        in batches of ``batch_size``. Raises ``QueryBudgetExhausted`` (sending nothing) when the new texts
        would exceed the budget.
        """
        return drive(self.request(texts, labels), self.score_batched)

    # -- rankings --

    def topk(self, row: Tensor) -> list[int]:
        """Ŷ_k: indices of the k largest scores, best first, ties to the lower label index (the metrics'
        rule, ``xmtc.metrics.top_labels``, so an attack and P@k agree on what is predicted)."""
        return top_labels(row.reshape(1, -1), min(self.k, row.numel()))[0].tolist()

    @staticmethod
    def rank(row: Tensor, label: int) -> int:
        """1-based rank of ``label`` under the same tie rule: 1 + labels scoring higher + labels scoring the
        same with a lower index (so rank <= k exactly when the label is in Ŷ_k)."""
        score = row[label]
        return 1 + int((row > score).sum()) + int((row[:label] == score).sum())

    # -- the goal --

    def target_for(self, row: Tensor, kind: AttackKind, target: int | Sequence[int]) -> tuple[GoalTarget | None, str]:
        """Γ from the original scores, or (None, why) when the precondition fails (the example is skipped).

        positive: the target labels in Ŷ_k; negative: those not in Ŷ_k; nontargeted: ``target`` holds the
        true labels and Γ their correctly predicted ones (those in Ŷ_k).
        """
        if kind not in ATTACK_KINDS:
            raise ValueError(f"unknown attack kind {kind!r}; expected one of {ATTACK_KINDS}")
        labels = as_label_list(target)
        if not labels:
            raise ValueError("empty target")
        bad = [t for t in labels if not 0 <= t < row.numel()]
        if bad:
            raise ValueError(f"target labels {bad} out of range for {row.numel()} labels")
        top = set(self.topk(row))
        if kind == "negative":
            gamma = tuple(t for t in labels if t not in top)
            why = f"negative attack: target {labels} already in the top-{self.k}"
        else:
            gamma = tuple(t for t in labels if t in top)
            why = (f"positive attack: target {labels} not in the top-{self.k}" if kind == "positive" else
                   f"nontargeted attack: none of the true labels {labels} is in the top-{self.k}")
        return (GoalTarget(kind, gamma), "") if gamma else (None, why)

    def is_success(self, row: Tensor, target: GoalTarget) -> bool:
        """positive: every label of Γ left Ŷ_k; negative: every label of Γ entered Ŷ_k;
        nontargeted: at least one label of Γ left Ŷ_k."""
        return bool(self.successes(row.reshape(1, -1), target)[0])

    def successes(self, rows: Tensor, target: GoalTarget) -> Tensor:
        """``is_success`` for each full row of ``rows`` (N, L) at once: a (N,) bool tensor."""
        top = top_labels(rows, min(self.k, rows.shape[-1]))  # (N, k)
        in_top = (top[:, :, None] == torch.tensor(target.labels)[None, None, :]).any(dim=1)  # (N, |Γ|)
        if target.kind == "positive":
            return ~in_top.any(dim=1)
        if target.kind == "negative":
            return in_top.all(dim=1)
        return ~in_top.all(dim=1)

    def progress(self, rows: Tensor, target: GoalTarget, reference: Tensor) -> Tensor:
        """Move toward the goal of each Γ-column row relative to ``reference`` (eq. 3.2-3.4), in log-odds;
        see ``progress_toward``."""
        return progress_toward(rows, target, reference, self.space)

    def tolerance(self, reference: Tensor) -> float:
        """``gain_tolerance`` of a Γ-column reference row in this goal's score space."""
        return gain_tolerance(reference, self.space)


def drive(steps: Generator[ScoreRequest, Tensor, R], score: Callable[[ScoreRequest], Tensor]) -> R:
    """Run a scoring generator to its end, answering each request with ``score(request)``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(score(request))
    except StopIteration as done:
        return done.value


def max_changes(num_words: int, max_change_rate: float) -> int:
    """Words an attack may change: floor(rate * n), e.g. 1 of 12 words at 10% (tolerant to 0.29 * 100 =
    28.999...)."""
    return max(0, math.floor(max_change_rate * num_words + 1e-9))
