"""Label-guided candidates (issue 16): words that speak for the target label, kept fluent by the masked LM.

The paper's attack (§3) asks the masked LM what fits a slot, which knows nothing of the target: to pull a
label into the top-k an attacker needs the label's own words. ``LabelGuidedWords`` ranks a pool of words for
the attack's labels Γ (``xmtc.attack.label_words``: the target's TF-IDF words from its training documents,
and/or HotFlip's first-order gain through the model's embedding), then keeps the text fluent with the masked
LM's log-probabilities at the slot (a replaced word's mask, or a mask inserted beside it):

* ``fluency: filter``: only pool words among the masked LM's ``fluency_top`` most probable words at the slot,
  in the pool's order (the intersection);
* ``fluency: rerank``: the pool in the masked LM's order (words it does not know last, in the pool's order);
* ``fluency: none``: the pool as it is.

It is target-aware (``xmtc.attack.base.TargetAwareTransformation``): ``Attack.candidates`` gives it Γ and the
model. For the kinds it does not guide (positive, non-targeted: the label words would push the wrong way) and
where no target is known it proposes the masked LM's plain substitutions, as ``MaskedLMSubstitution`` would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from xmtc.attack.base import insertion_slot
from xmtc.attack.insertion import Edit, MaskedLMHolder, check_edits, inserted_words
from xmtc.attack.label_words import HotFlipModel, LabelWords
from xmtc.attack.transformation import split_word

Source = Literal["tfidf", "gradient", "both"]
Fluency = Literal["filter", "rerank", "none"]
#: reciprocal-rank fusion constant for ``source: both`` (Cormack et al., 2009)
_RRF = 10


class LabelGuidedWords(MaskedLMHolder):
    """``Transformation`` proposing, for negative-targeted attacks, the target's words as replacements and/or
    insertions (module docstring).

    Args:
        masked_lm: the masked LM's path; None: the run's (``settings.masked_lm``).
        k: candidates per edit and position.
        source: ``tfidf`` (the target's training documents' words; the run fits them on its training split),
            ``gradient`` (HotFlip through the model's embedding; white box, AttentionXML) or ``both``
            (reciprocal-rank fusion of the two).
        edits: ``replace``, ``insert_before``, ``insert_after``: which edits to propose, in this order.
        fluency: ``filter``, ``rerank`` or ``none`` (module docstring).
        pool: label words considered per slot before the fluency step.
        fluency_top: ``filter``'s cut-off: the masked LM's most probable words a candidate must be among.
        batch_size, device: the masked LM's, when it is loaded here.
    """

    def __init__(self, masked_lm: str | None = None, k: int = 24, source: Source = "tfidf",
                 edits: Sequence[Edit] = ("replace", "insert_before"), fluency: Fluency = "filter", pool: int = 200,
                 fluency_top: int = 2000, batch_size: int = 32, device: str = "cpu") -> None:
        if source not in ("tfidf", "gradient", "both"):
            raise ValueError(f"source must be 'tfidf', 'gradient' or 'both'; got {source!r}")
        if fluency not in ("filter", "rerank", "none"):
            raise ValueError(f"fluency must be 'filter', 'rerank' or 'none'; got {fluency!r}")
        if pool < 1 or fluency_top < 1:
            raise ValueError(f"pool and fluency_top must be >= 1; got {pool}, {fluency_top}")
        super().__init__(masked_lm, k, batch_size, device)
        self.source = source
        self.edits = check_edits(edits)
        self.fluency = fluency
        self.pool = pool
        self.fluency_top = fluency_top
        self.label_words: LabelWords | None = None
        self._flip: dict[int, HotFlipModel] = {}

    # -- what the run gives it --

    @property
    def needs_label_words(self) -> bool:
        """Whether the run must fit the TF-IDF label words (``set_label_words``)."""
        return self.source in ("tfidf", "both")

    def set_label_words(self, label_words: LabelWords) -> None:
        self.label_words = label_words

    # -- candidates --

    def candidates_toward(self, words: Sequence[str], positions: Sequence[int], target: Any,
                          model: object) -> list[list[str]]:
        """Per position, up to K label words for each edit (replacement words, then insertion slots)."""
        if getattr(target, "kind", None) != "negative":
            return self.candidates(words, positions)
        labels = list(target.labels)
        todo = [(i, p) for i, p in enumerate(positions) if split_word(words[p]).attackable]
        slots = [(p, e) for _, p in todo for e in self.edits]
        pools = self._pools(words, slots, labels, model)
        fluent = self._fluent(words, slots, pools)
        out: list[list[str]] = [[] for _ in positions]
        for j, (p, edit) in enumerate(slots):
            i = next(i for i, q in todo if q == p)
            if edit == "replace":
                out[i].extend(self._finish(fluent[j], split_word(words[p])))
            else:
                out[i].extend(insertion_slot(words[p], w, edit) for w in inserted_words(fluent[j], words[p], self.k))
        return out

    def _pools(self, words: Sequence[str], slots: list[tuple[int, str]], labels: list[int],
               model: object) -> list[list[str]]:
        """Per slot, up to ``pool`` words for ``labels``, best first (TF-IDF words are the same at every slot)."""
        tfidf: list[str] = []
        if self.source in ("tfidf", "both"):
            if self.label_words is None:
                raise ValueError("LabelGuidedWords(source='tfidf'): no label words; the attack run fits them on its "
                                 "training split, or call set_label_words(LabelWords.fit(texts, labels, n))")
            tfidf = self.label_words.ranked(labels, self.pool)
        if self.source == "tfidf":
            return [tfidf] * len(slots)
        flip = self._flip.get(id(model))
        if flip is None:
            flip = self._flip[id(model)] = HotFlipModel(model)
        gains = flip.scores(words, slots, labels)
        n = min(self.pool, gains.shape[1])
        pools = []
        for row in gains:
            top = row.topk(n)
            grad = [flip.vocabulary[i] for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
                    if math.isfinite(v) and v > 0]
            pools.append(grad if self.source == "gradient" else _fuse(tfidf, grad, self.pool))
        return pools

    def _fluent(self, words: Sequence[str], slots: list[tuple[int, str]], pools: list[list[str]]) -> list[list[str]]:
        """The pools after the fluency step, each as long as it stays (K are kept by the caller)."""
        if self.fluency == "none" or not slots:
            return pools
        mlm = self._masked_lm()
        logp = mlm.slot_log_probs(words, slots)  # (slots, MLM vocabulary), one batched pass
        ids = mlm.word_ids
        out = []
        for row, pool in zip(logp, pools, strict=True):
            index = torch.tensor([ids.get(w.lower(), -1) for w in pool], dtype=torch.long)
            known = index >= 0
            score = torch.full((len(pool),), -math.inf, dtype=row.dtype)
            score[known] = row[index[known]]
            if self.fluency == "filter":
                cut = row.topk(min(self.fluency_top, row.numel())).values[-1]
                out.append([w for w, s in zip(pool, score.tolist(), strict=True) if s >= cut and math.isfinite(s)])
            else:  # rerank: stable, so the unknown words stay last in the pool's order
                order = np.argsort(-score.numpy(), kind="stable")
                out.append([pool[i] for i in order])
        return out


def _fuse(first: list[str], second: list[str], n: int) -> list[str]:
    """Reciprocal-rank fusion of two rankings (lower-cased words), the ``n`` best."""
    score: dict[str, float] = {}
    for ranking in (first, second):
        for r, w in enumerate(ranking):
            score[w.lower()] = score.get(w.lower(), 0.0) + 1.0 / (_RRF + r)
    return sorted(score, key=lambda w: -score[w])[:n]
