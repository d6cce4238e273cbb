"""The only door to the attacked model: batched, cached, counted scoring of texts.

Every part of an attack (importance, search, goal tests) scores text through one ``QueryOracle`` per attacked
example, so all of it is batched, cached and counted against the same query budget. Parts ask for scores as
*scoring generators* (they yield a ``ScoreRequest`` and receive the rows): whoever drives them decides how texts
are batched, so the texts of several attacks can share one forward pass (``Attack.attack_many``).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from xmtc.attack.base import TextScorer

R = TypeVar("R")
ScoreSpace = Literal["logit", "probability"]


class QueryBudgetExhausted(RuntimeError):
    """Raised before sending texts that would take the query count past the budget (nothing is sent)."""

    def __init__(self, queries: int, requested: int, budget: int) -> None:
        super().__init__(f"query budget exhausted: {queries} queries used, {requested} more requested, "
                         f"budget {budget}")
        self.queries = queries
        self.requested = requested
        self.budget = budget


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


class QueryOracle:
    """Batched, cached, counted scoring for one attacked example at a time (``fresh`` makes another).

    The search only needs the scores of the target labels Γ to rank masked copies and candidates, and the
    full row only to test success once it keeps a change. So it asks for Γ columns (``labels=``), which a
    model such as AttentionXML computes without the other thousands of labels, and full rows rarely.

    ``queries`` counts distinct texts whose scores were asked for, as an attacker querying the model would
    (Γ columns and the full row of one text are one query); ``calls`` counts ``score_texts`` calls.

    Rows are in ``space``: logits when the scorer can give them (``score_texts(..., logits=True)``),
    else the scorer's probabilities (``xmtc.attack.goal`` measures gains in log-odds either way).

    Args:
        scorer: the model under attack (anything with ``score_texts``; ``labels=`` is used when it has it).
        batch_size: texts per ``score_texts`` call.
        query_budget: maximum number of texts sent to the model per attacked example (None: unlimited).
        max_cache: scored rows kept per attacked example (least recently used dropped first); bounds
            memory at large label counts (a 31k-label row is ~124 kB). None: unbounded.
    """

    def __init__(self, scorer: TextScorer, batch_size: int = 64, query_budget: int | None = None,
                 max_cache: int | None = 4096) -> None:
        if not isinstance(scorer, TextScorer):
            raise TypeError(f"the scorer must have score_texts(texts, batch_size); got {type(scorer).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if query_budget is not None and query_budget < 0:
            raise ValueError(f"query_budget must be >= 0 or None; got {query_budget}")
        self.scorer = scorer
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

    def fresh(self) -> QueryOracle:
        """An oracle with the same settings and its own cache and counters (one per concurrent attack)."""
        return QueryOracle(self.scorer, self.batch_size, self.query_budget, self.max_cache)

    def request(self, texts: Sequence[str], labels: Sequence[int] | None = None
                ) -> Generator[ScoreRequest, Tensor, Tensor]:
        """Scores of ``texts`` as a generator: yields a ``ScoreRequest`` for the texts that must be sent to
        the model (uncached, deduplicated; budget checked first), receives their rows, returns all rows in
        order: full rows, or the columns ``labels`` in that order.

        Whoever drives it decides how texts are batched, so texts of several attacks can share one
        forward pass (``Attack.attack_many``); ``scores`` drives it alone. A scorer without
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


def drive(steps: Generator[ScoreRequest, Tensor, R], score: Callable[[ScoreRequest], Tensor]) -> R:
    """Run a scoring generator to its end, answering each request with ``score(request)``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(score(request))
    except StopIteration as done:
        return done.value
