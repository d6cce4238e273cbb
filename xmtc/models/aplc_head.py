"""Adaptive Probabilistic Label Clusters (APLC; Ye et al., 2020): an output layer for many labels.

Labels are sorted by training frequency (the datamodule's label order). Cutoffs split them into a head
shortlist of frequent labels and tail clusters of rarer ones. The head layer scores the shortlist plus
one root node per tail cluster; tail cluster i first projects the hidden state down to
``hidden / div_value^(i+1)`` (Linear, LayerNorm, ReLU), then to its labels. Scores are probabilities:

    p(head label j)      = sigmoid(head_j)
    p(tail label j in c) = sigmoid(root_c) * sigmoid(tail_j)        (p(root) * p(label | cluster))

Training touches a tail cluster only for the rows with a positive label in it, which is where the
speed and memory come from: rare labels are rarely positive, so most rows skip most clusters.

The loss of a row is the mean of its terms (APLC-XLNet's normalisation): the shortlist and the root
nodes, plus the labels of each cluster the row is active in. Two forms of the tail term:

* ``joint`` (APLC-XLNet as published): binary cross-entropy of the product probability
  p = sigmoid(root) * sigmoid(tail) on active rows, so the root learns from those rows through the
  product; its own BCE term counts only on rows where the cluster is inactive (target 0).
* ``conditional`` (a probabilistic label tree's factorisation): the root is a plain binary output
  "some label of the cluster is positive" on every row, and the tail logits are trained as
  p(label | cluster) on active rows. Works with any surrogate (BCE or squared hinge).

Every term is the loss head's (``LossHead.terms``): positive terms carry its per-label weights (normal / PW /
PW-cb), and a loss head with terms of its own changes APLC as it changes a full sigmoid layer; see ``docs/aplc.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmtc.losses import LossHead

TailLoss = Literal["joint", "conditional"]


def resolve_cutoffs(cutoffs: Sequence[float], num_labels: int) -> list[int]:
    """Cluster boundaries as label indices: integers as given, or fractions of ``num_labels`` (all < 1).

    Raises ``ValueError`` for unsorted, repeated or out-of-range cutoffs, naming them.
    """
    values = list(cutoffs)
    if not values:
        raise ValueError("APLC needs at least one cutoff (e.g. [0.5]: a head and one tail cluster)")
    if all(0.0 < float(c) < 1.0 for c in values):
        resolved = [int(round(float(c) * num_labels)) for c in values]
        how = f"fractions {values} of {num_labels} labels give label cutoffs {resolved}"
    elif all(float(c) == int(c) for c in values):
        resolved = [int(c) for c in values]
        how = f"cutoffs {resolved}"
    else:
        raise ValueError(f"cutoffs {values}: give either label counts (integers, e.g. [15469]) or fractions of "
                         "the label space (all strictly between 0 and 1, e.g. [0.5]), not a mix")
    if any(b <= a for a, b in zip(resolved, resolved[1:], strict=False)):
        raise ValueError(f"{how}: cutoffs must be strictly increasing (clusters are ranges of the label "
                         "frequency order, head first)")
    if resolved[0] < 1 or resolved[-1] > num_labels - 1:
        raise ValueError(f"{how}: every cutoff must lie in 1..{num_labels - 1} ({num_labels} labels), so that "
                         "the head and every tail cluster keep at least one label")
    return resolved


def label_prior(freqs: np.ndarray, num_docs: int) -> np.ndarray:
    """Each label's training frequency n_j / N, kept inside (0, 1) by 1 / (N + 2) so its logit is finite."""
    eps = 1.0 / (num_docs + 2.0)
    return np.clip(np.asarray(freqs, dtype=np.float64) / max(num_docs, 1), eps, 1.0 - eps)


def prior_logit(p: np.ndarray) -> Tensor:
    """logit(p) as a float32 tensor, for output biases."""
    return torch.from_numpy(np.log(p) - np.log1p(-p)).float()


def joint_parts(root: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
    """-log p and -log(1 - p) for p = sigmoid(root) * sigmoid(tail), stable for any logits.

    1 - p = (1 + e^r + e^t) / ((1 + e^r)(1 + e^t)), so -log(1 - p) = softplus(r) + softplus(t) - logsumexp(0, r, t).
    """
    root, tail = torch.broadcast_tensors(root, tail)
    pos = F.softplus(-root) + F.softplus(-tail)
    lse = torch.logsumexp(torch.stack([torch.zeros_like(root), root, tail]), dim=0)
    return pos, F.softplus(root) + F.softplus(tail) - lse


def product_logit(root: Tensor, tail: Tensor) -> Tensor:
    """logit(sigmoid(root) * sigmoid(tail)): the tail label's score as a logit (sigmoid gives the product back)."""
    pos, neg = joint_parts(root, tail)
    return neg - pos  # log p - log(1 - p)


def _full(x: Tensor) -> Tensor:
    """Half-precision activations (mixed precision) go to float32 before the products and losses."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class APLCHead(nn.Module):
    """The APLC output layer over a hidden vector; see the module docstring.

    Args:
        in_features: size of the hidden vector (the sequence summary).
        num_labels: labels, most frequent first.
        cutoffs: cluster boundaries: label counts (``[15469]``) or fractions of ``num_labels`` (``[0.5]``).
        div_value: tail cluster i projects to ``in_features // div_value^(i+1)`` first (2 in APLC-XLNet).
        head_bias: bias on the head layer (APLC-XLNet has none).
        tail_loss: ``joint`` (as published) or ``conditional``.
        label_bias: biases on the head layer and on every tail cluster's output layer, for
            ``init_label_prior`` (implies ``head_bias``).
    """

    def __init__(self, in_features: int, num_labels: int, cutoffs: Sequence[float] = (0.5,), div_value: float = 2.0,
                 head_bias: bool = False, tail_loss: TailLoss = "joint", label_bias: bool = False) -> None:
        super().__init__()
        if tail_loss not in ("joint", "conditional"):
            raise ValueError(f"tail_loss must be 'joint' or 'conditional', got {tail_loss!r}")
        if num_labels < 2:
            raise ValueError(f"APLC needs at least 2 labels (a head and a tail cluster), got {num_labels}")
        self.num_labels = num_labels
        self.tail_loss = tail_loss
        self.bounds = [0, *resolve_cutoffs(cutoffs, num_labels), num_labels]
        self.shortlist = self.bounds[1]
        self.num_clusters = len(self.bounds) - 2
        self.cluster_sizes = [b - a for a, b in zip(self.bounds[1:], self.bounds[2:], strict=False)]
        self.head = nn.Linear(in_features, self.shortlist + self.num_clusters, bias=head_bias or label_bias)
        self.tails = nn.ModuleList()
        for i, size in enumerate(self.cluster_sizes):
            dim = max(1, int(in_features // div_value ** (i + 1)))
            self.tails.append(nn.Sequential(nn.Linear(in_features, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(),
                                            nn.Linear(dim, size, bias=label_bias)))
        self.register_buffer("_bounds", torch.tensor(self.bounds), persistent=False)

    @torch.no_grad()
    def init_label_prior(self, freqs: np.ndarray, num_docs: int, weights: np.ndarray | None = None) -> None:
        """Output biases at the training label prior, so training starts from it instead of learning it.

        Head label j: logit(n_j / N). Root of cluster c: logit(q_c), q_c = 1 - prod_{j in c} (1 - n_j / N)
        (labels taken as independent). Tail label j in c: logit of its conditional frequency, n_j / (N q_c).
        ``weights``: the loss head's positive weights w_j; a label's bias then moves by log w_j, to the best
        constant logit of the weighted BCE (its odds times w_j); the roots are no labels and keep theirs.
        """
        if self.head.bias is None or any(t[-1].bias is None for t in self.tails):
            raise ValueError("init_label_prior needs the head built with label_bias=True")
        if len(freqs) != self.num_labels:
            raise ValueError(f"{len(freqs)} label frequencies for {self.num_labels} labels")
        p = label_prior(freqs, num_docs)
        eps = 1.0 / (num_docs + 2.0)
        q = np.array([1.0 - np.exp(np.log1p(-p[a:b]).sum()) for a, b in zip(self.bounds[1:], self.bounds[2:],
                                                                              strict=False)])
        q = np.clip(q, eps, 1.0 - eps)
        shift = np.zeros(self.num_labels) if weights is None else np.log(np.maximum(weights, eps))
        if len(shift) != self.num_labels:
            raise ValueError(f"{len(shift)} label weights for {self.num_labels} labels")
        self.head.bias.copy_(prior_logit(np.concatenate([p[:self.shortlist], q])))
        self.head.bias[:self.shortlist] += torch.from_numpy(shift[:self.shortlist]).float()
        for i, tail in enumerate(self.tails):
            a, b = self.bounds[i + 1], self.bounds[i + 2]
            conditional = prior_logit(np.clip(p[a:b] / q[i], eps, 1.0 - eps))
            tail[-1].bias.copy_(conditional + torch.from_numpy(shift[a:b]).float())

    # -- scoring --

    def forward(self, hidden: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits of the APLC probabilities, (B, L) or (B, len(labels)): sigmoid(logit) is the score.

        With ``labels`` only the clusters holding them are computed, and of a tail cluster only the rows
        of its output layer for those labels.
        """
        head = _full(self.head(hidden))
        roots = head[:, self.shortlist:]
        if labels is None:
            parts = [head[:, :self.shortlist]]
            for i, tail in enumerate(self.tails):
                parts.append(product_logit(roots[:, i:i + 1], _full(tail(hidden))))
            return torch.cat(parts, dim=1)
        labels = labels.to(hidden.device).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
            raise ValueError(f"label indices must lie in 0..{self.num_labels - 1} (the labels seen in training); "
                             f"got {labels.tolist()}")
        out = head.new_empty(hidden.shape[0], labels.numel())
        cluster = torch.bucketize(labels, self._bounds, right=True) - 1  # 0 = head, i + 1 = tail cluster i
        in_head = cluster == 0
        out[:, in_head] = head[:, labels[in_head]]
        for i, tail in enumerate(self.tails):
            cols = (cluster == i + 1).nonzero().squeeze(1)
            if cols.numel() == 0:
                continue
            z = tail[:-1](hidden)  # the projection, then only the output rows asked for
            rows = labels[cols] - self.bounds[i + 1]
            bias = None if tail[-1].bias is None else tail[-1].bias[rows]
            t = _full(F.linear(z, tail[-1].weight[rows], bias))
            out[:, cols] = product_logit(roots[:, i:i + 1], t)
        return out

    # -- training --

    def active_clusters(self, targets: Tensor) -> Tensor:
        """(B, C) bool: whether each row has a positive label in each tail cluster."""
        cum = F.pad(targets.float().cumsum(dim=1), (1, 0))  # positives before each boundary
        counts = cum[:, self._bounds[2:]] - cum[:, self._bounds[1:-1]]
        return counts > 0

    def loss(self, hidden: Tensor, targets: Tensor, loss: LossHead) -> Tensor:
        """Mean over rows of (sum of a row's loss terms) / (number of its terms); tail clusters on active rows only.

        Every term comes from ``loss.terms``, with the label weights ``loss.weights`` (bound per cluster, see
        ``LossHead.bind``); root nodes have weight 1. A joint tail's terms are those of the product
        probability's logit.
        """
        if targets.shape != (hidden.shape[0], self.num_labels):
            raise ValueError(f"targets {tuple(targets.shape)}: expected ({hidden.shape[0]}, {self.num_labels})")
        if loss.pos_weight.numel() != self.num_labels:
            raise ValueError(f"loss head has {loss.pos_weight.numel()} label weights, the APLC head {self.num_labels} "
                             "labels")
        if self.tail_loss == "joint" and loss.surrogate != "bce":
            raise ValueError("the joint APLC tail loss is a cross-entropy of probabilities; use surrogate='bce' "
                             "or tail_loss='conditional'")
        head = _full(self.head(hidden))
        y = targets.to(head.dtype)
        active = self.active_clusters(y)
        act = active.to(head.dtype)

        row_loss = loss.terms(head[:, :self.shortlist], y[:, :self.shortlist],
                              loss.weights(slice(0, self.shortlist))).sum(dim=1)
        roots = head[:, self.shortlist:]
        if self.tail_loss == "conditional":  # the root: "some label of the cluster is positive", on every row
            row_loss = row_loss + loss.terms(roots, act).sum(dim=1)
        else:  # its negative term on inactive rows; on active rows the root learns through the product below
            row_loss = row_loss + ((1.0 - act) * loss.terms(roots, torch.zeros_like(act))).sum(dim=1)
        sizes = head.new_tensor(self.cluster_sizes)
        root_terms = self.num_clusters - (act.sum(dim=1) if self.tail_loss == "joint" else 0.0)
        n_terms = self.shortlist + root_terms + act @ sizes

        for i, tail in enumerate(self.tails):
            rows = active[:, i].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            lo, hi = self.bounds[i + 1], self.bounds[i + 2]
            t = _full(tail(hidden[rows]))
            if self.tail_loss == "joint":
                t = product_logit(roots[rows, i:i + 1], t)
            cluster_loss = loss.terms(t, y[rows, lo:hi], loss.weights(slice(lo, hi))).sum(dim=1)
            row_loss = row_loss.index_add(0, rows, cluster_loss)
        return (row_loss / n_terms).mean()
