"""A plain implementation of the greedy attack that costs what the paper's code (xmc-aalto/adv-xmtc,
``adv_xmtc.py``) costs, to check the engine's decisions against and to measure its speed-up honestly.

What it shares with that code's cost, and not with the engine's:
- word importance: the masked copies go to the model in batches of 12 texts (its ``predict`` calls);
- substitution: one forward pass per candidate, each giving the full row of scores;
- no score cache: a text met twice is scored twice;
- the masked LM is asked per position; with ``candidates_from="original"`` (the paper's code) on the
  original document, so a transformation that caches per text (``MaskedLMSubstitution``'s unmasked mode)
  runs once per document, as that code did.

What it shares with the engine instead (the code's bugs are not reproduced; docs/attack.md lists them): candidates
compared with the CURRENT text's scores, a position where nothing helps keeps its word, the last word is
attacked too, gains in log-odds with the engine's tolerance and tie rule (``best_candidate``), and the
success test ``success_check``: ``every`` candidate (the paper's code) or the ``chosen`` one (Algorithm 1).
So both make the same decisions. ``queries`` counts distinct texts, as the engine does, and the query
budget is checked per text; ``calls`` on the scorer shows the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xmtc.attack.base import AttackKind, AttackResult, Change, TextScorer, Transformation
from xmtc.attack.goal import (
    GoalTarget,
    QueryBudgetExhausted,
    TargetedGoal,
    accepts_keyword,
    as_label_list,
    best_candidate,
    gain_tolerance,
    max_changes,
    progress_toward,
)
from xmtc.attack.search import CandidateSource, SuccessCheck, usable_candidates
from xmtc.attack.stopwords import is_stop_word
from xmtc.metrics import top_labels

#: texts per model call for the masked copies, as the paper's code's ``predict`` batches them
MASKED_COPIES_PER_CALL = 12


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
    success_check: SuccessCheck = "every",
    candidates_from: CandidateSource = "original",
    num_words: int | None = None,
) -> AttackResult:
    """Greedy attack on one document at the paper's code's cost (see the module docstring)."""
    logits = accepts_keyword(scorer, "logits")
    space = "logit" if logits else "probability"
    seen: set[str] = set()

    def score(texts: Sequence[str]) -> Tensor:
        for t in texts:  # distinct texts count against the budget, as the engine counts them
            if t not in seen:
                if query_budget is not None and len(seen) + 1 > query_budget:
                    raise QueryBudgetExhausted(len(seen), 1, query_budget)
                seen.add(t)
        rows = scorer.score_texts(list(texts), batch_size=len(texts), **({"logits": True} if logits else {}))
        return rows.detach().float().cpu()

    def top(row: Tensor) -> list[int]:  # the metrics' tie rule: higher score, then lower label index
        return top_labels(row.reshape(1, -1), min(k, row.numel()))[0].tolist()

    rank = TargetedGoal.rank  # the engine's rank under the same tie rule: only a report, not a decision

    def reached(row: Tensor) -> bool:
        predicted = top(row)
        if kind == "positive":
            return all(j not in predicted for j in gamma)
        if kind == "negative":
            return all(j in predicted for j in gamma)
        return any(j not in predicted for j in gamma)

    def gain(row: Tensor, ref: Tensor) -> float:  # eq. 3.2-3.4 in log-odds, as the engine measures it
        return float(progress_toward(row[list(gamma)].reshape(1, -1), goal, ref[list(gamma)], space)[0])

    labels = as_label_list(target)
    words = text.split()
    n = len(words) if num_words is None else num_words
    result = AttackResult(kind=kind, target=labels[0], success=False, status="failed", original_text=text,
                          adversarial_text=" ".join(words), num_words=n)
    try:
        s0 = score([" ".join(words)])[0]
    except QueryBudgetExhausted as e:
        result.status, result.message = "query_budget", str(e)
        return result
    predicted = top(s0)
    result.topk_before, result.topk_after = list(predicted), list(predicted)
    gamma: Sequence[int] = [j for j in labels if (j not in predicted) == (kind == "negative")]
    if not gamma:
        result.rank_before = result.rank_after = rank(s0, labels[0])
        result.status, result.message, result.queries = "skipped", "precondition fails", len(seen)
        return result
    goal = GoalTarget(kind, tuple(gamma))

    current, s_cur = list(words), s0
    status = "failed"
    try:
        importance = [float("-inf")] * len(words)  # stop words are never attacked
        positions = [i for i in range(len(words)) if not is_stop_word(words[i])]  # the last word included
        for start in range(0, len(positions), MASKED_COPIES_PER_CALL):
            chunk = positions[start:start + MASKED_COPIES_PER_CALL]
            masked = [" ".join(words[:i] + ([] if mask_token is None else [mask_token]) + words[i + 1:])
                      for i in chunk]
            for i, row in zip(chunk, score(masked), strict=True):
                importance[i] = gain(row, s0)
        order = sorted(positions, key=lambda i: (-importance[i], i))
        allowed = max_changes(n, max_change_rate)
        for i in order:
            if len(result.changes) >= allowed:
                status = "change_budget"
                break
            source = words if candidates_from == "original" else current
            options = usable_candidates(current[i], transformation.candidates(source, [i])[0])
            rows, won = [], None
            for w in options:  # one forward pass per candidate, as the paper's code
                rows.append(score([" ".join(current[:i] + [w] + current[i + 1:])])[0])
                if success_check == "every" and reached(rows[-1]):
                    won = len(rows) - 1
                    break
            if won is not None:
                result.changes.append(Change(i, current[i], options[won]))
                current[i], s_cur, status = options[won], rows[won], "success"
                break
            gains = torch.tensor([gain(row, s_cur) for row in rows], dtype=torch.float64)
            best = best_candidate(gains, gain_tolerance(s_cur[list(gamma)], space))  # relative to the CURRENT text
            if best is None:
                continue  # nothing helped: keep the word
            result.changes.append(Change(i, current[i], options[best]))
            current[i], s_cur = options[best], rows[best]
            if success_check == "chosen" and reached(s_cur):
                status = "success"
                break
    except QueryBudgetExhausted as e:
        status, result.message = "query_budget", str(e)

    result.status = status  # type: ignore[assignment]
    result.success = status == "success"
    result.adversarial_text = " ".join(current)
    result.queries = len(seen)
    if kind == "nontargeted":  # report the Γ label ranked lowest after the attack; ties: first in Γ
        result.target = max(gamma, key=lambda j: (rank(s_cur, j), -list(gamma).index(j)))
    result.rank_before, result.rank_after = rank(s0, result.target), rank(s_cur, result.target)
    result.topk_after = top(s_cur)
    return result
