"""A deliberately plain implementation of the greedy attack: one text per model call, no batching.

It makes the same (bug-free) decisions as ``GreedyWordSearch`` with mask importance, written as directly
as Algorithm 1 reads, so tests can check the engine against it and the benchmark can measure the engine's
speed-up. Like the engine it never sends the same text twice (a memo), so the query counts match; only
when a query budget runs out do they differ (the engine refuses a whole batch that would not fit, this
one sends texts until the budget is spent), while the decisions and status stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, AttackResult, Change, TextScorer, Transformation
from xmtc.attack.goal import MIN_GAIN, QueryBudgetExhausted, as_label_list, max_changes
from xmtc.attack.search import usable_candidates
from xmtc.attack.stopwords import is_stop_word


def reference_greedy_attack(
    scorer: TextScorer,
    text: str,
    target: int | list[int],
    kind: AttackKind,
    transformation: Transformation,
    k: int = 5,
    max_change_rate: float = 0.1,
    mask_token: str | None = "[UNK]",
    query_budget: int | None = None,
) -> AttackResult:
    """Greedy attack on one document, one ``score_texts`` call per text (see the module docstring)."""
    memo: dict[str, Tensor] = {}

    def score(t: str) -> Tensor:
        if t not in memo:
            if query_budget is not None and len(memo) + 1 > query_budget:
                raise QueryBudgetExhausted(len(memo), 1, query_budget)
            memo[t] = scorer.score_texts([t], batch_size=1)[0].detach().float().cpu()
        return memo[t]

    def top(row: Tensor) -> list[int]:
        return torch.topk(row, min(k, row.numel())).indices.tolist()

    def rank(row: Tensor, label: int) -> int:
        return 1 + int((row > row[label]).sum())

    def gain(row: Tensor, ref: Tensor) -> float:  # eq. 3.2-3.4, summed label by label in float64
        total = torch.zeros((), dtype=torch.float64)
        for j in gamma:
            diff = row[j].double() - ref[j].double()
            total += diff if kind == "negative" else -diff
        return float(total)

    def reached(row: Tensor) -> bool:
        predicted = top(row)
        if kind == "positive":
            return all(j not in predicted for j in gamma)
        if kind == "negative":
            return all(j in predicted for j in gamma)
        return any(j not in predicted for j in gamma)

    labels = as_label_list(target)
    words = text.split()
    n = len(words)
    result = AttackResult(kind=kind, target=labels[0], success=False, status="failed", original_text=text,
                          adversarial_text=" ".join(words), num_words=n)
    try:
        s0 = score(" ".join(words))
    except QueryBudgetExhausted as e:
        result.status, result.message = "query_budget", str(e)
        return result
    predicted = top(s0)
    result.topk_before, result.topk_after = list(predicted), list(predicted)
    gamma: Sequence[int] = [j for j in labels if (j not in predicted) == (kind == "negative")]
    if not gamma:
        result.rank_before = result.rank_after = rank(s0, labels[0])
        result.status, result.message, result.queries = "skipped", "precondition fails", len(memo)
        return result

    current, s_cur = list(words), s0
    status = "failed"
    try:
        importance: list[float] = []
        for i in range(n):  # every word, the last one included
            if is_stop_word(words[i]):
                importance.append(float("-inf"))
                continue
            masked = words[:i] + ([] if mask_token is None else [mask_token]) + words[i + 1:]
            importance.append(gain(score(" ".join(masked)), s0))
        order = sorted((i for i in range(n) if importance[i] != float("-inf")), key=lambda i: (-importance[i], i))
        allowed = max_changes(n, max_change_rate)
        for i in order:
            if len(result.changes) >= allowed:
                status = "change_budget"
                break
            best_word, best_gain, best_row = None, MIN_GAIN, None
            for w in usable_candidates(current[i], transformation.candidates(current, [i])[0]):
                row = score(" ".join(current[:i] + [w] + current[i + 1:]))
                d = gain(row, s_cur)  # relative to the CURRENT text
                if d > best_gain:
                    best_word, best_gain, best_row = w, d, row
            if best_word is None:
                continue  # nothing helped: keep the word
            result.changes.append(Change(i, current[i], best_word))
            current[i], s_cur = best_word, best_row
            if reached(s_cur):
                status = "success"
                break
    except QueryBudgetExhausted as e:
        status, result.message = "query_budget", str(e)

    result.status = status  # type: ignore[assignment]
    result.success = status == "success"
    result.adversarial_text = " ".join(current)
    result.queries = len(memo)
    if kind == "nontargeted":  # report the Γ label ranked lowest after the attack; ties: first in Γ
        result.target = max(gamma, key=lambda j: (rank(s_cur, j), -list(gamma).index(j)))
    result.rank_before, result.rank_after = rank(s0, result.target), rank(s_cur, result.target)
    result.topk_after = top(s_cur)
    return result
