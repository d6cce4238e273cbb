"""Words that speak for a label (issue 16): where a negative-targeted attack finds words to put in.

Two sources, both ranking whole words for the target labels Γ:

* ``LabelWords`` (black box, from data): the TF-IDF label representation that the label clusters of the
  negative attacks are made of (``xmtc.attack.selection.label_tfidf``: the row-normalised sum of the TF-IDF
  rows of a label's training documents); a label's words by weight. Fitted once per run on the run's
  training split.
* ``hotflip_scores`` (white box, from the model): HotFlip's first-order estimate (Ebrahimi et al., 2018) of
  how much each word of the model's vocabulary would raise the Γ logits if it stood at a slot,
  (E[w] - E[current]) · ∂(Σ_Γ logit)/∂e at the slot, for the whole vocabulary in one matrix product. A
  replaced word's slot is its first token; an inserted word's is an unknown token put there for the backward
  pass. It needs a word-embedding model with a word tokenizer (``xmtc.models.AttentionXML``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from xmtc.attack.classifier import embedding_gradients
from xmtc.attack.transformation import usable_word


class LabelWords:
    """Per label, its training documents' words by TF-IDF weight (``representations``: labels x vocabulary)."""

    def __init__(self, vocabulary: Sequence[str], representations: sp.spmatrix) -> None:
        self.vocabulary = list(vocabulary)
        self.representations = sp.csr_matrix(representations)
        if self.representations.shape[1] != len(self.vocabulary):
            raise ValueError(f"representations have {self.representations.shape[1]} columns for a vocabulary of "
                             f"{len(self.vocabulary)} words")
        self.usable = np.array([usable_word(w) for w in self.vocabulary], dtype=bool)

    @classmethod
    def fit(cls, train_texts: Sequence[str], train_labels: Sequence[np.ndarray], num_labels: int,
            max_features: int = 100_000) -> LabelWords:
        """Fit on training documents and their label indices (``label_tfidf``)."""
        from xmtc.attack.selection import label_tfidf

        return cls(*label_tfidf(train_texts, train_labels, num_labels, max_features))

    @property
    def num_labels(self) -> int:
        return int(self.representations.shape[0])

    def weights(self, labels: Sequence[int]) -> np.ndarray:
        """(vocabulary,) summed weight of each word over ``labels``; 0 for words no proposal may use."""
        bad = [t for t in labels if not 0 <= t < self.num_labels]
        if bad:
            raise ValueError(f"labels {bad} out of range for the {self.num_labels} labels of the label words")
        w = np.asarray(self.representations[list(labels)].sum(axis=0)).reshape(-1)
        return np.where(self.usable, w, 0.0)

    def ranked(self, labels: Sequence[int], n: int) -> list[str]:
        """The ``n`` words of largest weight for ``labels`` (ties by vocabulary order); only words with weight."""
        w = self.weights(labels)
        top = np.argsort(-w, kind="stable")[:n]
        return [self.vocabulary[i] for i in top if w[i] > 0]


class HotFlipModel:
    """What HotFlip needs of a word-embedding model: its embedding matrix, its word vocabulary, and the gradient
    of the Γ logits at slots of a text. Works with models that have ``embedding`` (``nn.Embedding``), a word
    ``tokenizer`` (``vocab``, ``words``, ``encode``, ``unk_id``, ``max_length``) and a forward pass from
    ``{"input_ids", "lengths"}`` to logits (xmtc's AttentionXML), also behind a label-reordering wrapper."""

    def __init__(self, model: Any) -> None:
        self.label_map = getattr(model, "_base_labels", None)  # xmtc.attack.targets.ReorderedClassifier
        self.model = model.base if self.label_map is not None else model
        m = self.model
        tok = getattr(m, "tokenizer", None)
        if not isinstance(getattr(m, "embedding", None), torch.nn.Embedding) or not hasattr(tok, "vocab"):
            raise TypeError(f"label-guided gradient words need a word-embedding model with a word tokenizer (as "
                            f"xmtc.models.AttentionXML); {type(m).__name__} has none: use source='tfidf'")
        self.tokenizer = tok
        self.vocabulary: list[str] = list(tok.vocab)
        usable = torch.tensor([i > 1 and usable_word(w) for i, w in enumerate(self.vocabulary)])
        self.bias = torch.where(usable, 0.0, -torch.inf).double()

    def scores(self, words: Sequence[str], slots: Sequence[tuple[int, str]], labels: Sequence[int]) -> Tensor:
        """(len(slots), vocabulary) float64 first-order gain in Σ_Γ logits of each vocabulary word at each slot
        ((position, ``replace``/``insert_before``/``insert_after``)); -inf for words no proposal may use and
        for all of a slot the model does not read (a word without tokens, or past ``max_length``)."""
        tok, m = self.tokenizer, self.model
        labels = list(self.label_map(labels)) if self.label_map is not None else list(labels)
        ids = torch.from_numpy(np.asarray(tok.encode(" ".join(words)), dtype=np.int64))
        counts = [len(tok.words(w)) for w in words]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        seqs, at, old = [], [], []
        rows = []
        for i, (p, edit) in enumerate(slots):
            if edit == "replace":
                t = int(starts[p])
                if counts[p] == 0 or t >= len(ids):
                    continue
                seqs.append(ids)
                old.append(int(ids[t]))
            else:
                t = int(starts[p] if edit == "insert_before" else starts[p] + counts[p])
                if t >= tok.max_length or t > len(ids):
                    continue
                seqs.append(torch.cat([ids[:t], torch.tensor([tok.unk_id]), ids[t:]])[: tok.max_length])
                old.append(int(tok.unk_id))
            at.append(t)
            rows.append(i)
        out = torch.full((len(slots), len(self.vocabulary)), -torch.inf, dtype=torch.float64)
        if not rows:
            return out
        device = next(m.parameters()).device
        inputs = {"input_ids": pad_sequence(seqs, batch_first=True, padding_value=0).to(device),
                  "lengths": torch.tensor([len(s) for s in seqs])}
        index = torch.as_tensor(labels, dtype=torch.long, device=device)
        grad = embedding_gradients(m, m.embedding, lambda: m(inputs)[:, index].sum())  # rows independent
        g = grad[torch.arange(len(rows)), torch.tensor(at)].double().cpu()  # (slots read, D)
        e = m.embedding.weight.detach().double().cpu()  # (V, D)
        gain = e @ g.T - (e[torch.tensor(old)] * g).sum(dim=1)  # (V, slots): one product for the vocabulary
        out[rows] = gain.T + self.bias
        return out


def hotflip_scores(model: Any, words: Sequence[str], slots: Sequence[tuple[int, str]],
                   labels: Sequence[int]) -> tuple[list[str], Tensor]:
    """The model's vocabulary and ``HotFlipModel.scores`` (a convenience for one call)."""
    flip = HotFlipModel(model)
    return flip.vocabulary, flip.scores(words, slots, labels)
