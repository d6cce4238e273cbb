"""XMC ranking metrics: P@k, nDCG@k, PSP@k, PSnDCG@k and P@k split by label-frequency bin.

Definitions are those of the Extreme Classification Repository as pyxclib and napkinxc compute them
(napkinxc is the oracle in tests/test_metrics.py). With ``top_k`` the k best labels, ``w`` the inverse
propensities, ``disc(r) = 1 / log2(r + 1)`` and ``IDCG(n) = sum_{r<=n} disc(r)``, per document i:

- P@k = |top_k ∩ y_i| / k; nDCG@k = DCG_i@k / IDCG(min(|y_i|, k)); both averaged over documents.
- PSP@k = sum_i sum_{l in top_k ∩ y_i} w_l / sum_i (the min(|y_i|, k) largest w_l of y_i).
- PSnDCG@k = mean_i PSDCG_i@k / IDCG(min(|y_i|, k)), divided by the same mean for the best ranking (each
  document's true labels ordered by weight, best first); PSDCG_i@k = sum over ranks r <= k of the hits'
  w_l * disc(r). The ratio of two means over the same documents is a ratio of two sums.
- A document without true labels counts as 0 in every numerator and every denominator (napkinxc's
  ``zero_division=0``; pyxclib gives the same: its DCG and ideal DCG are 0), so it lowers P@k and nDCG@k
  and leaves PSP@k and PSnDCG@k unchanged.

Tie rule (one for the classes and the functions): labels are ranked by score, highest first, and equal
scores by label index, lowest first, i.e. the order of a stable descending sort. ``torch.topk`` alone breaks
ties arbitrarily (and differently for different k), so `top_labels` takes ``topk`` at k + 1: when the
(k+1)-th value is below the k-th, the top-k set is exact and only its k entries are re-sorted; rows where a
tie straddles place k keep every label above the k-th value and fill the rest with the tied labels of
lowest index (one comparison and one ``nonzero`` over those rows), so no full row is ever sorted. Scores
containing NaN are refused: NaN compares unequal to itself, so no ranking is defined.

Every metric is computed from per-batch *sums* (`_xmc_sums`, `_bin_hit_sums`), so the functional API and the
torchmetrics classes share one implementation, and the classes accumulate exactly across batches and
processes (``dist_reduce_fx="sum"``) without ever storing predictions; memory is O(batch).

Inputs everywhere: ``scores`` (B, L) float and ``targets`` (B, L) dense 0/1 (bool, int or float; values
other than 0 and 1 are not supported). Per batch the ranking is computed once for ``max(ks)`` and every k is
read off its prefix (the tie rule is a total order, so prefixes are the top-k for smaller k); weights
(inverse propensities) must be non-negative.

Sums are accumulated in float64 so that counts stay exact and long evaluations do not drift; this needs a
backend with float64 support (CPU, CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "top_labels",
    "XMCMetrics",
    "PrecisionAtKByFrequency",
    "precision_at_k",
    "ndcg_at_k",
    "psp_at_k",
    "psndcg_at_k",
    "precision_at_k_by_bin",
    "frequency_bin_names",
]

_SUM_DTYPE = torch.float64


# --------------------------------------------------------------------------------------------- validation
def _check_inputs(scores: Tensor, targets: Tensor, ks: Sequence[int]) -> None:
    """Fail early with the shapes seen: a silent broadcast would produce plausible but wrong numbers."""
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be 2-D (batch, num_labels), got shape {tuple(scores.shape)}")
    if targets.ndim != 2:
        raise ValueError(f"`targets` must be 2-D (batch, num_labels), got shape {tuple(targets.shape)}")
    if scores.shape != targets.shape:
        raise ValueError(
            f"`scores` and `targets` must have the same shape, got scores {tuple(scores.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    num_labels = scores.shape[1]
    for k in ks:
        if not 1 <= k <= num_labels:
            raise ValueError(
                f"`k` must be in [1, num_labels={num_labels}], got k={k} (scores shape {tuple(scores.shape)})"
            )


def _check_label_vector(vec: Tensor, name: str, num_labels: int) -> None:
    if vec.ndim != 1 or vec.shape[0] != num_labels:
        raise ValueError(
            f"`{name}` must have shape (num_labels,) = ({num_labels},), got shape {tuple(vec.shape)}"
        )


def _check_weights(inv_propensity: Tensor) -> Tensor:
    """1-D and non-negative: the ideal ranking relies on absent labels (-1) sorting below every weight."""
    inv_propensity = torch.as_tensor(inv_propensity)
    if inv_propensity.ndim != 1:
        raise ValueError(
            f"`inv_propensity` must have shape (num_labels,), got shape {tuple(inv_propensity.shape)}"
        )
    if not inv_propensity.is_floating_point():
        inv_propensity = inv_propensity.float()
    if bool((inv_propensity < 0).any()):
        raise ValueError("`inv_propensity` must be non-negative")
    return inv_propensity


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"`ks` must be a non-empty sequence of positive integers, got {ks}")
    return ks


def _check_bin_edges(bin_edges: Sequence[int]) -> tuple[int, ...]:
    edges = tuple(int(e) for e in bin_edges)
    if not edges or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"`bin_edges` must be non-empty, non-negative and strictly increasing, got {edges}")
    return edges


def frequency_bin_names(bin_edges: Sequence[int]) -> list[str]:
    """Names of the bins ``[0, e0], [e0+1, e1], ..., [e_last+1, inf)``: ``freq_0-5, ..., freq_501+``."""
    edges = _check_bin_edges(bin_edges)
    lows = (0, *(e + 1 for e in edges))
    return [f"freq_{lo}-{hi}" for lo, hi in zip(lows, edges, strict=False)] + [f"freq_{lows[-1]}+"]


# --------------------------------------------------------------------------------------------- shared math
class _XMCSums(NamedTuple):
    """Per-batch sums over documents; entry i of each (K,) tensor belongs to ``ks[i]``."""

    num_docs: Tensor  # 0-dim
    hits: Tensor  # (K,) true labels in the top-k
    ndcg: Tensor  # (K,) sum of per-document nDCG@k
    psp_num: Tensor | None  # (K,) sum of propensity-weighted hits
    psp_den: Tensor | None  # (K,) sum of the k largest true-label weights
    psndcg_num: Tensor | None  # (K,) sum of PSDCG@k / IDCG(min(|y|, k))
    psndcg_den: Tensor | None  # (K,) sum of the ideal PSDCG@k / IDCG(min(|y|, k))


def _discounts(k: int, device: torch.device) -> Tensor:
    """1 / log2(r + 1) for ranks r = 1..k."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=_SUM_DTYPE))


def top_labels(scores: Tensor, k: int) -> Tensor:
    """(B, k) label indices, best first, under the module's tie rule (score descending, then index ascending).

    One ``topk`` at k + 1 tells whether a tie straddles place k; only such rows go through `_fill_ties`.
    """
    scores = scores.detach()
    probe = min(k + 1, scores.shape[1])
    vals, idx = torch.topk(scores, probe, dim=1, largest=True, sorted=True)
    if bool(vals.isnan().any()):  # topk ranks NaN above every number, so any NaN in a row shows up here
        raise ValueError("`scores` contain NaN (a diverged model?): the ranking metrics are undefined")
    idx = idx[:, :k].clone()
    if probe > k:
        straddle = (vals[:, k] == vals[:, k - 1]).nonzero().squeeze(1)
        if 2 * straddle.numel() >= scores.shape[0]:  # mostly tied (bf16, early training): no row copy
            idx = _fill_ties(scores, vals[:, k - 1 : k], k)  # exact for the untied rows as well
        elif straddle.numel():
            sub = scores.index_select(0, straddle)
            idx[straddle] = _fill_ties(sub, vals.index_select(0, straddle)[:, k - 1 : k], k)
    # The set is right; order it: by index, then stably by score, so equal scores keep index order.
    idx = idx.sort(dim=1).values
    order = scores.gather(1, idx).sort(dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _fill_ties(scores: Tensor, kth: Tensor, k: int) -> Tensor:
    """(b, k): every label above the k-th value ``kth`` (b, 1), then the tied ones of lowest index, by index.

    One comparison and one ``nonzero`` over the rows (about the cost of the ``topk``); the rest works on the
    few candidates (labels >= the k-th value), never on a (b, L) integer matrix.
    """
    batch = scores.shape[0]
    rows, cols = (scores >= kth).nonzero(as_tuple=True)  # row-major: by row, then by label index
    tied = scores[rows, cols] == kth[rows, 0]
    above = ~tied
    need = k - torch.bincount(rows[above], minlength=batch)  # tied labels each row still takes
    tied_per_row = torch.bincount(rows[tied], minlength=batch)
    tied_before_row = torch.cumsum(tied_per_row, 0) - tied_per_row
    tied_rank = torch.cumsum(tied.long(), 0) - 1 - tied_before_row[rows]  # 0-based among the row's ties
    keep = above | (tied & (tied_rank < need[rows]))
    return cols[keep].view(batch, k)


def _count_true(targets: Tensor) -> Tensor:
    """(B,) labels per document: a sum of 0/1 values, 2-20x faster than count_nonzero on CPU."""
    if targets.is_floating_point():
        return targets.sum(dim=1).round().long()
    return targets.sum(dim=1, dtype=torch.int32)


def _ideal_weights(targets: Tensor, w: Tensor, kmax: int) -> tuple[Tensor, Tensor]:
    """Each document's true-label weights, largest first, in a (B, kmax) zero-padded matrix, and |y|.

    Works on the few nonzero targets (about 5 per document) instead of a second top-k over all L labels:
    one scan of the batch plus a sort of its nonzeros.
    """
    batch = targets.shape[0]
    rows, cols = targets.nonzero(as_tuple=True)
    vals = w[cols].to(_SUM_DTYPE)
    order = torch.argsort(vals, descending=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by document, weights descending within it
    rows, vals = rows[order], vals[order]
    num_true = torch.bincount(rows, minlength=batch)
    starts = torch.cumsum(num_true, 0) - num_true
    rank = torch.arange(len(rows), device=targets.device) - starts[rows]
    keep = rank < kmax
    ideal = torch.zeros(batch, kmax, dtype=_SUM_DTYPE, device=targets.device)
    ideal[rows[keep], rank[keep]] = vals[keep]
    return ideal, num_true


def _xmc_sums(
    scores: Tensor, targets: Tensor, ks: Sequence[int], inv_propensity: Tensor | None = None
) -> _XMCSums:
    """Sums over the batch behind every metric at every k in ``ks``; the single implementation of the math."""
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks:
        raise ValueError("`ks` must contain at least one k")
    _check_inputs(scores, targets, ks)
    kmax = ks[-1]
    batch, num_labels = scores.shape
    device = scores.device
    cols = torch.tensor([k - 1 for k in ks], device=device)

    idx = top_labels(scores, kmax)  # (B, kmax), best first
    hits = (targets.gather(1, idx) != 0).to(_SUM_DTYPE)  # (B, kmax)
    disc = _discounts(kmax, device)  # (kmax,)
    num_docs = torch.tensor(float(batch), dtype=_SUM_DTYPE, device=device)

    hits_sum = hits.cumsum(1)[:, cols].sum(0)

    if inv_propensity is None:
        num_true = _count_true(targets)
    else:
        _check_label_vector(inv_propensity, "inv_propensity", num_labels)
        w = inv_propensity.to(device)
        gain = hits * w[idx].to(_SUM_DTYPE)  # (B, kmax)
        ideal, num_true = _ideal_weights(targets, w, kmax)
    # nDCG: the ideal DCG@k only depends on min(k, |y|), read from the cumulative discounts.
    dcg = (hits * disc).cumsum(1)[:, cols]  # (B, K)
    cum_disc = torch.cat([disc.new_zeros(1), disc.cumsum(0)])  # (kmax + 1,), cum_disc[n] = IDCG with n labels
    ks_t = torch.tensor(ks, device=device)
    idcg = cum_disc[torch.minimum(num_true[:, None], ks_t[None, :])]  # (B, K)
    inv_idcg = torch.where(idcg > 0, 1.0 / idcg.clamp_min(1e-12), torch.zeros_like(idcg))  # 0: no labels
    ndcg = (dcg * inv_idcg).sum(0)

    if inv_propensity is None:
        return _XMCSums(num_docs, hits_sum, ndcg, None, None, None, None)
    return _XMCSums(
        num_docs,
        hits_sum,
        ndcg,
        psp_num=gain.cumsum(1)[:, cols].sum(0),
        psp_den=ideal.cumsum(1)[:, cols].sum(0),
        # Each document's PSDCG (and ideal PSDCG) is divided by its own IDCG(min(|y|, k)), as in pyxclib.
        psndcg_num=((gain * disc).cumsum(1)[:, cols] * inv_idcg).sum(0),
        psndcg_den=((ideal * disc).cumsum(1)[:, cols] * inv_idcg).sum(0),
    )


def _label_bins(label_freqs: Tensor, bin_edges: Sequence[int]) -> Tensor:
    """Bin index per label: bin b holds frequencies in (edges[b-1], edges[b]], the last one > edges[-1]."""
    edges = torch.tensor(_check_bin_edges(bin_edges), dtype=torch.float64, device=label_freqs.device)
    return torch.bucketize(label_freqs.to(torch.float64), edges, right=False)


def _bin_hit_sums(scores: Tensor, targets: Tensor, label_bin: Tensor, num_bins: int, k: int) -> Tensor:
    """(num_bins,) count of hits in the top-k whose label falls in each bin (float64 for exact sums)."""
    _check_inputs(scores, targets, (k,))
    batch, num_labels = scores.shape
    _check_label_vector(label_bin, "label_freqs", num_labels)
    idx = top_labels(scores, k)
    hits = (targets.gather(1, idx) != 0).to(_SUM_DTYPE)
    bins = label_bin.to(scores.device).unsqueeze(0).expand(batch, num_labels).gather(1, idx)
    out = torch.zeros(num_bins, dtype=_SUM_DTYPE, device=scores.device)
    return out.scatter_add_(0, bins.reshape(-1), hits.reshape(-1))


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den == 0 (no documents, or no true labels at all): never NaN in a log."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).to(torch.float32)


# --------------------------------------------------------------------------------------------- functional
def precision_at_k(scores: Tensor, targets: Tensor, k: int) -> Tensor:
    """P@k: mean over documents of (# true labels among the k highest scores) / k."""
    s = _xmc_sums(scores, targets, (k,))
    return _ratio(s.hits[0], s.num_docs * k)


def ndcg_at_k(scores: Tensor, targets: Tensor, k: int) -> Tensor:
    """nDCG@k: mean over documents of DCG@k / IDCG@k; documents without true labels count as 0."""
    s = _xmc_sums(scores, targets, (k,))
    return _ratio(s.ndcg[0], s.num_docs)


def psp_at_k(scores: Tensor, targets: Tensor, inv_propensity: Tensor, k: int) -> Tensor:
    """PSP@k: propensity-weighted hits over the best achievable ones, as a ratio of sums over docs."""
    s = _xmc_sums(scores, targets, (k,), _check_weights(inv_propensity))
    return _ratio(s.psp_num[0], s.psp_den[0])


def psndcg_at_k(scores: Tensor, targets: Tensor, inv_propensity: Tensor, k: int) -> Tensor:
    """PSnDCG@k: mean of PSDCG@k / IDCG(min(|y|, k)) over docs, over the same mean for the ideal ranking."""
    s = _xmc_sums(scores, targets, (k,), _check_weights(inv_propensity))
    return _ratio(s.psndcg_num[0], s.psndcg_den[0])


def precision_at_k_by_bin(
    scores: Tensor, targets: Tensor, label_freqs: Tensor, bin_edges: Sequence[int], k: int
) -> Tensor:
    """P@k split by training label frequency: (num_bins,), entry b = hits in bin b / (k * #docs).

    The entries sum to P@k, so they show how much of the precision comes from head vs tail labels.
    """
    edges = _check_bin_edges(bin_edges)
    s = _bin_hit_sums(scores, targets, _label_bins(label_freqs, edges), len(edges) + 1, k)
    return _ratio(s, torch.full_like(s, float(scores.shape[0] * k)))


# --------------------------------------------------------------------------------------------- metrics
class XMCMetrics(Metric):
    """P@k and nDCG@k (and PSP@k, PSnDCG@k when ``inv_propensity`` is given) for every k in ``ks``.

    States are (K,) float64 sums reduced with ``sum``, so memory does not grow with the evaluation set and DDP
    reduction is exact. ``ks`` are de-duplicated and sorted. ``compute()`` returns 0-dim float32 tensors
    ``{"P@1", "P@3", ..., "nDCG@1", ..., "PSP@1", ..., "PSnDCG@1", ...}`` (PS* only with ``inv_propensity``).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    inv_propensity: Tensor | None

    def __init__(self, ks: Sequence[int] = (1, 3, 5), inv_propensity: Tensor | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = _check_ks(ks)
        if inv_propensity is not None:
            inv_propensity = _check_weights(inv_propensity).to(torch.float32)
        # A buffer moves with .to(device); non-persistent because it is data, not a learned metric state.
        self.register_buffer("inv_propensity", inv_propensity, persistent=False)
        num_k = len(self.ks)
        names = ["hits", "ndcg"]
        if inv_propensity is not None:
            names += ["psp_num", "psp_den", "psndcg_num", "psndcg_den"]
        self._sum_names = tuple(names)
        self.add_state("num_docs", default=torch.zeros((), dtype=_SUM_DTYPE), dist_reduce_fx="sum")
        for name in names:
            self.add_state(name, default=torch.zeros(num_k, dtype=_SUM_DTYPE), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Add one batch: ``scores`` and ``targets`` of shape (batch, num_labels)."""
        sums = _xmc_sums(scores, targets, self.ks, self.inv_propensity)
        self.num_docs += sums.num_docs
        for name in self._sum_names:
            setattr(self, name, getattr(self, name) + getattr(sums, name))

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        ks = torch.tensor(self.ks, dtype=_SUM_DTYPE, device=self.num_docs.device)
        p = _ratio(self.hits, self.num_docs * ks)
        ndcg = _ratio(self.ndcg, self.num_docs.expand_as(self.ndcg))
        for i, k in enumerate(self.ks):
            out[f"P@{k}"] = p[i]
        for i, k in enumerate(self.ks):
            out[f"nDCG@{k}"] = ndcg[i]
        if self.inv_propensity is not None:
            psp = _ratio(self.psp_num, self.psp_den)
            psndcg = _ratio(self.psndcg_num, self.psndcg_den)
            for i, k in enumerate(self.ks):
                out[f"PSP@{k}"] = psp[i]
            for i, k in enumerate(self.ks):
                out[f"PSnDCG@{k}"] = psndcg[i]
        return out


class PrecisionAtKByFrequency(Metric):
    """P@k decomposed by training label frequency bins (head vs tail); the bins sum to P@k.

    ``bin_edges=(5, 20, 100, 500)`` gives bins [0,5], [6,20], [21,100], [101,500], [501,inf) named
    ``freq_0-5, ..., freq_501+``; ``compute()`` returns ``{"P@5/freq_0-5": ..., ...}``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    label_bin: Tensor

    def __init__(
        self, label_freqs: Tensor, bin_edges: Sequence[int] = (5, 20, 100, 500), k: int = 5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if int(k) < 1:
            raise ValueError(f"`k` must be a positive integer, got {k}")
        self.k = int(k)
        self.bin_edges = _check_bin_edges(bin_edges)
        label_freqs = torch.as_tensor(label_freqs)
        if label_freqs.ndim != 1:
            raise ValueError(
                f"`label_freqs` must have shape (num_labels,), got shape {tuple(label_freqs.shape)}"
            )
        # Label -> bin lookup computed once; a buffer so it follows the metric to the device.
        self.register_buffer("label_bin", _label_bins(label_freqs, self.bin_edges), persistent=False)
        num_bins = len(self.bin_edges) + 1
        self.add_state("num_docs", default=torch.zeros((), dtype=_SUM_DTYPE), dist_reduce_fx="sum")
        self.add_state("bin_hits", default=torch.zeros(num_bins, dtype=_SUM_DTYPE), dist_reduce_fx="sum")

    @property
    def bin_names(self) -> list[str]:
        return frequency_bin_names(self.bin_edges)

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Add one batch: ``scores`` and ``targets`` of shape (batch, num_labels)."""
        self.bin_hits += _bin_hit_sums(scores, targets, self.label_bin, self.bin_hits.shape[0], self.k)
        self.num_docs += scores.shape[0]

    def compute(self) -> dict[str, Tensor]:
        values = _ratio(self.bin_hits, (self.num_docs * self.k).expand_as(self.bin_hits))
        return {f"P@{self.k}/{name}": values[i] for i, name in enumerate(self.bin_names)}
