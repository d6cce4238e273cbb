"""Loss heads: normal, propensity-weighted (PW) and PW + class-balanced (PW-cb), paper eq. 4.6.

    l(y, s) = sum_j  w_j * y_j * l+(s_j)  +  (1 - y_j) * l-(s_j)

Only the positive part is reweighted (paper §4.3.2; Qaraei et al., 2021). The surrogate is binary
cross-entropy on logits or the squared hinge. Weights come from the training label statistics and
live in a buffer, so a checkpoint carries the exact weights it was trained with.

``LossHead.terms`` is the one place the formula is written: the full sigmoid layer (``forward``) and
every part of the APLC output layer (``xmtc.models.aplc_head``) take their element-wise terms from it,
so a subclass that overrides ``terms`` (a focal loss, say) changes both models the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmtc.data.label_stats import LabelStats

Surrogate = Literal["bce", "squared_hinge"]
Normalize = Literal["labels", "positives", "none"]


def positive_and_negative_parts(logits: Tensor, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
    """Element-wise l+(s) (loss if the label is true) and l-(s) (loss if it is not)."""
    if surrogate == "bce":
        return F.softplus(-logits), F.softplus(logits)  # -log sigmoid(s), -log(1 - sigmoid(s))
    if surrogate == "squared_hinge":
        return F.relu(1.0 - logits).square(), F.relu(1.0 + logits).square()
    raise ValueError(f"unknown surrogate {surrogate!r}; expected 'bce' or 'squared_hinge'")


class LossHead(nn.Module):
    """Base loss head: weights 1 for every label (the normal loss).

    Args:
        surrogate: ``bce`` (binary cross-entropy on logits) or ``squared_hinge``.
        normalize: how the positive weights are rescaled. ``labels`` (or ``true``): mean 1 over the
            labels seen in training (they sum to the number of labels, as in PWXMC). ``positives``:
            mean 1 over the training positives (sum_j n_j w_j = sum_j n_j), so the positive part as a
            whole weighs what it weighs in the normal loss and only its spread over labels changes;
            on EURLEX57K ``labels`` leaves PW-cb's positives 8% of the normal loss's mass and the model
            learns slowly. ``none`` (or ``false``): the raw weights of eq. 4.6.
    """

    def __init__(self, surrogate: Surrogate = "bce", normalize: Normalize | bool = "labels") -> None:
        super().__init__()
        positive_and_negative_parts(torch.zeros(1), surrogate)  # fail early on a bad name
        mode = ("labels" if normalize else "none") if isinstance(normalize, bool) else normalize  # old configs: bool
        if mode not in ("labels", "positives", "none"):
            raise ValueError(f"normalize must be 'labels', 'positives' or 'none', got {normalize!r}")
        self.surrogate = surrogate
        self.normalize: Normalize = mode
        self.register_buffer("pos_weight", torch.ones(0))

    def label_weights(self, stats: LabelStats) -> np.ndarray:
        return np.ones(len(stats))

    def bind(self, stats: LabelStats, groups: Sequence[int] | None = None) -> None:
        """Compute the per-label positive weights from the training label statistics.

        ``groups``: boundaries ``[0, b1, ..., L]`` of label ranges normalised each on its own (APLC's
        head shortlist and tail clusters, whose losses are separate means); default one group.
        """
        w = np.asarray(self.label_weights(stats), dtype=np.float64)
        seen = stats.freqs > 0
        bounds = [0, len(w)] if groups is None else list(groups)
        if bounds[0] != 0 or bounds[-1] != len(w) or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"weight groups {bounds} must increase from 0 to the {len(w)} labels")
        if self.normalize != "none":
            n = stats.freqs.astype(np.float64)
            for lo, hi in zip(bounds, bounds[1:], strict=False):
                s = seen[lo:hi]
                if not s.any():
                    continue
                if self.normalize == "labels":
                    w[lo:hi] = w[lo:hi] / w[lo:hi][s].mean()
                elif (mass := (n[lo:hi] * w[lo:hi]).sum()) > 0:
                    w[lo:hi] = w[lo:hi] * (n[lo:hi].sum() / mass)
        self.pos_weight = torch.as_tensor(w, dtype=torch.float32, device=self.pos_weight.device)

    def resize(self, num_labels: int) -> None:
        """Allocate the weight buffer before a checkpoint's state is loaded into it."""
        self.pos_weight = torch.ones(num_labels, device=self.pos_weight.device)

    def prior_scores(self, stats: LabelStats) -> Tensor:
        """Each label's best constant score under this head (weights bound): what a model that ignores the text
        would output, a starting point for output biases. For BCE the logit of w_j n_j / (w_j n_j + N - n_j), for
        the squared hinge (w_j n_j - (N - n_j)) / (w_j n_j + N - n_j); a label with no weighted positive gets the
        score of one positive in N + 2 documents, so it stays finite."""
        if self.pos_weight.numel() != len(stats):
            raise ValueError(f"loss head has {self.pos_weight.numel()} label weights, the statistics {len(stats)} "
                             "labels; bind() it first")
        n = np.asarray(stats.freqs, dtype=np.float64)
        pos = np.maximum(self.pos_weight.double().cpu().numpy() * n, 1.0 / (stats.num_train_docs + 2.0))
        neg = np.maximum(stats.num_train_docs - n, 1.0 / (stats.num_train_docs + 2.0))
        score = np.log(pos) - np.log(neg) if self.surrogate == "bce" else (pos - neg) / (pos + neg)
        return torch.as_tensor(score, dtype=torch.float32)

    def weights(self, label_index: Tensor | slice | None = None) -> Tensor:
        """The positive weights of all labels, or of those ``label_index`` selects (a column subset)."""
        return self.pos_weight if label_index is None else self.pos_weight[label_index]

    def terms(self, logits: Tensor, targets: Tensor, weight: Tensor | float = 1.0) -> Tensor:
        """Element-wise ``weight * y * l+(s) + (1 - y) * l-(s)``, the shape of ``logits``.

        ``weight`` broadcasts over the last (label) dimension: ``self.weights(...)`` for labels, 1.0 for
        terms that are no label (APLC's cluster root nodes). Computed in the dtype of ``logits``.
        """
        pos, neg = positive_and_negative_parts(logits, self.surrogate)
        y = targets.to(pos.dtype)
        return weight * y * pos + (1.0 - y) * neg

    def forward(self, logits: Tensor, targets: Tensor, label_index: Tensor | slice | None = None) -> Tensor:
        """Mean loss over rows and labels, computed in float32.

        ``label_index`` selects the weights of a subset of labels (the columns of ``logits``), for
        heads that score only part of the label space at a time.
        """
        if logits.shape != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
        w = self.weights(label_index)
        if w.numel() != logits.shape[-1]:
            raise ValueError(f"loss head has {w.numel()} label weights, logits have {logits.shape[-1]} labels")
        return self.terms(logits.float(), targets, w).mean()


class NormalLoss(LossHead):
    """The unweighted loss: C_j = W_j = 1."""


class PWLoss(LossHead):
    """Propensity-weighted: W_j = 2 / p_j - 1, unbiased under missing labels."""

    def label_weights(self, stats: LabelStats) -> np.ndarray:
        return 2.0 * stats.inv_propensity - 1.0


class PWCBLoss(LossHead):
    """PW plus class-balancing: C_j W_j with C_j = (1 - beta) / (1 - beta^n_j); C_j = 0 if n_j = 0."""

    def __init__(self, beta: float = 0.9, surrogate: Surrogate = "bce", normalize: Normalize | bool = "labels") -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(surrogate=surrogate, normalize=normalize)
        self.beta = beta

    def label_weights(self, stats: LabelStats) -> np.ndarray:
        return stats.class_balanced(self.beta) * (2.0 * stats.inv_propensity - 1.0)
