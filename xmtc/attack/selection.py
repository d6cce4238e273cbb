"""Choosing what to attack (paper §4.1, §4.2.2): correctly classified (document, target) pairs,
label-frequency bins, equal samples per bin, and label clusters for negative-targeted attacks.

Everything is computed from top-k indices and sparse label matrices, never a dense documents x labels
matrix, so memory stays O(batch x labels) while scoring and O(pairs) afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class FrequencyBin:
    low: int  # smallest training frequency in the bin (inclusive)
    high: int  # largest (inclusive)

    @property
    def name(self) -> str:
        return f"{self.low}-{self.high}" if self.low != self.high else str(self.low)


def predicted_topk(scores_batches: Iterable[torch.Tensor], k: int) -> np.ndarray:
    """Top-k label indices (docs, k) from batches of scores, best first; the scores are not kept."""
    return np.concatenate([torch.topk(s, k, dim=1).indices.cpu().numpy() for s in scores_batches])


def label_matrix(labels: Sequence[np.ndarray], num_labels: int) -> sp.csr_matrix:
    """Sparse boolean (docs, labels) matrix from ragged label index arrays."""
    rows = np.repeat(np.arange(len(labels)), [len(y) for y in labels])
    cols = np.concatenate(labels) if len(labels) else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(len(labels), num_labels))


def positive_pairs(topk: np.ndarray, labels: Sequence[np.ndarray], num_labels: int) -> np.ndarray:
    """(doc, label) pairs whose label is true AND in the predicted top-k: the positive-attack candidates."""
    if len(topk) != len(labels):
        raise ValueError(f"{len(topk)} rows of predictions but {len(labels)} label rows")
    truth = label_matrix(labels, num_labels)
    doc = np.repeat(np.arange(len(topk)), topk.shape[1])
    lab = topk.reshape(-1)
    hit = np.asarray(truth[doc, lab]).reshape(-1)
    return np.stack([doc[hit], lab[hit]], axis=1)


def frequency_bins(freqs: np.ndarray, target_labels: np.ndarray, min_labels: int) -> list[FrequencyBin]:
    """The paper's binning: walk training frequencies upward; a bin closes once it holds at least
    ``min_labels`` distinct target labels (labels with >= 1 attackable pair). A last bin with fewer
    labels is merged into the one before it."""
    if min_labels < 1:
        raise ValueError(f"min_labels must be >= 1, got {min_labels}")
    targets = np.unique(target_labels)
    if len(targets) == 0:
        raise ValueError("no attackable (document, label) pairs: nothing to bin")
    per_freq = np.bincount(freqs[targets])  # distinct target labels at each frequency
    bins: list[FrequencyBin] = []
    low, count = None, 0
    for f in np.flatnonzero(per_freq):
        low = f if low is None else low
        count += per_freq[f]
        if count >= min_labels:
            bins.append(FrequencyBin(int(low), int(f)))
            low, count = None, 0
    if low is not None:
        last = int(np.flatnonzero(per_freq)[-1])
        if bins:
            bins[-1] = FrequencyBin(bins[-1].low, last)
        else:
            bins.append(FrequencyBin(int(low), last))
    return bins


def bin_of(freqs: np.ndarray, bins: Sequence[FrequencyBin]) -> np.ndarray:
    """Bin index of every label (-1 when its frequency is outside all bins)."""
    highs = np.array([b.high for b in bins])
    idx = np.searchsorted(highs, freqs, side="left")
    inside = (idx < len(bins)) & (freqs >= np.array([b.low for b in bins] + [np.iinfo(np.int64).max])[idx])
    return np.where(inside, idx, -1)


def sample_per_bin(pairs: np.ndarray, label_bin: np.ndarray, num_bins: int, per_bin: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same number of (doc, label) pairs from every bin (the smallest bin's count when ``per_bin`` is
    None or larger), seeded. Returns the chosen pairs and their bin indices."""
    rng = np.random.default_rng(seed)
    pair_bin = label_bin[pairs[:, 1]]
    counts = np.bincount(pair_bin[pair_bin >= 0], minlength=num_bins)
    n = int(counts.min()) if per_bin is None else min(per_bin, int(counts.min()))
    if n == 0:
        empty = [i for i in range(num_bins) if counts[i] == 0]
        raise ValueError(f"no attackable pairs in bin(s) {empty}: lower the bin size or attack fewer bins")
    chosen = [rng.choice(np.flatnonzero(pair_bin == b), size=n, replace=False) for b in range(num_bins)]
    idx = np.concatenate(chosen)
    return pairs[idx], pair_bin[idx]


# -- label clusters for negative-targeted attacks (paper §4.2.2) --

def label_representations(doc_features: sp.csr_matrix, labels: Sequence[np.ndarray], num_labels: int) -> sp.csr_matrix:
    """Label l = sum of the TF-IDF rows of its training documents (Z^T X), row-normalised."""
    z = label_matrix(labels, num_labels).astype(np.float64)
    reps = (z.T @ doc_features).tocsr()
    norms = np.sqrt(np.asarray(reps.multiply(reps).sum(axis=1)).reshape(-1))
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ reps


def label_clusters(train_texts: Sequence[str], train_labels: Sequence[np.ndarray], num_labels: int,
                   min_size: int = 3, seed: int = 0, max_features: int = 100_000) -> np.ndarray:
    """Cluster id per label: balanced 2-means over the summed TF-IDF of each label's training documents."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(max_features=max_features, sublinear_tf=True, dtype=np.float32).fit_transform(train_texts)
    return balanced_2means(label_representations(x, train_labels, num_labels), min_size=min_size, seed=seed)


def balanced_2means(reps: sp.csr_matrix, min_size: int = 3, seed: int = 0, iters: int = 10) -> np.ndarray:
    """Balanced hierarchical spherical 2-means (as in Parabel): split every cluster into two halves of
    (almost) equal size until a further split would make a cluster smaller than ``min_size``.

    Returns the cluster id of every label. Splits are vectorised per cluster: two centroids, assignment
    by the sorted difference of cosine similarities (which balances the halves exactly), stopping early
    once the halves no longer change. Each split works on the features its members use only, so the
    thousands of small splits deep in the tree cost what their few nonzeros cost, not the full width.
    """
    n = reps.shape[0]
    if n < min_size:
        raise ValueError(f"{n} labels cannot form clusters of at least {min_size}")
    reps = sp.csr_matrix(reps)
    rng = np.random.default_rng(seed)
    assignment = np.zeros(n, dtype=np.int64)
    queue = [np.arange(n)]
    next_id = 1
    while queue:
        members = queue.pop()
        if len(members) < 2 * min_size:
            continue
        x = _compact_columns(reps[members])
        c = x[rng.choice(len(members), size=2, replace=False)].toarray()
        half = len(members) // 2
        previous = None
        for _ in range(iters):
            diff = np.asarray(x @ (c[0] - c[1])).reshape(-1)
            order = np.argsort(-diff, kind="stable")
            left, right = order[:half], order[half:]
            in_left = np.zeros(len(members), bool)
            in_left[left] = True
            if previous is not None and np.array_equal(in_left, previous):
                break  # converged: the same halves again
            previous = in_left
            c = np.vstack([np.asarray(x[left].mean(axis=0)), np.asarray(x[right].mean(axis=0))])
            c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        assignment[members[right]] = next_id
        next_id += 1
        queue += [members[left], members[right]]
    _, dense_ids = np.unique(assignment, return_inverse=True)
    return dense_ids


def _compact_columns(x: sp.csr_matrix) -> sp.csr_matrix:
    """The same rows over only the columns that have a nonzero (cosines and centroids are unchanged)."""
    used, cols = np.unique(x.indices, return_inverse=True)
    return sp.csr_matrix((x.data, cols.reshape(-1), x.indptr), shape=(x.shape[0], len(used)))


def negative_pairs(topk: np.ndarray, labels: Sequence[np.ndarray], num_labels: int, targets: np.ndarray,
                   clusters: np.ndarray | None = None, chunk: int = 512) -> np.ndarray:
    """(doc, target) pairs for negative attacks: the target is not a true label and not in the top-k;
    with ``clusters`` (cluster id per label), the document must also have a true label in the target's
    cluster (necessarily other than the target, which is not one of its labels).

    Sparse column slices, ``chunk`` targets at a time: memory O(docs x chunk).
    """
    truth = label_matrix(labels, num_labels).tocsc()
    predicted = label_matrix(list(topk), num_labels).tocsc()
    if clusters is not None:
        member = sp.csr_matrix((np.ones(num_labels, bool), (np.arange(num_labels), clusters)))
        doc_in_cluster = (label_matrix(labels, num_labels).astype(np.int32) @ member.astype(np.int32)).tocsc() > 0
    targets = np.unique(targets)
    out = []
    for start in range(0, len(targets), chunk):
        t = targets[start:start + chunk]
        ok = ~(truth[:, t].toarray() | predicted[:, t].toarray())
        if clusters is not None:
            ok &= doc_in_cluster[:, clusters[t]].toarray()
        doc, col = np.nonzero(ok)
        out.append(np.stack([doc, t[col]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)
