"""Choosing what to attack (paper §4.1, §4.2.2): correctly classified (document, target) pairs,
label-frequency bins, equal samples per bin, and label clusters for negative-targeted attacks.

:func:`choose_pairs` is the one selection that ``python -m xmtc attack`` and the robustness callback both
call; the study and the benches use its building blocks (:func:`predicted_topk_of`, :func:`correct_pairs`).

Everything is computed from top-k indices and sparse label matrices, never a dense documents x labels
matrix, so memory stays O(batch x labels) while scoring and O(pairs) afterwards. Negative pairs, which
number documents x labels, are sampled per target (:func:`sample_negative_pairs`), never listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from xmtc.data.label_stats import LabelStats
from xmtc.errors import UserError
from xmtc.metrics import top_labels

#: The attack kinds :func:`choose_pairs` selects for, in the order its result lists them.
KINDS = ("positive", "negative", "nontargeted")


@dataclass(frozen=True)
class FrequencyBin:
    low: int  # smallest training frequency in the bin (inclusive)
    high: int  # largest (inclusive)

    @property
    def name(self) -> str:
        return f"{self.low}-{self.high}" if self.low != self.high else str(self.low)


def predicted_topk(scores_batches: Iterable[torch.Tensor], k: int) -> np.ndarray:
    """Top-k label indices (docs, k) from batches of scores, best first, ties to the lower label index (the
    metrics' and the attack's rule, ``xmtc.metrics.top_labels``); the scores are not kept."""
    return np.concatenate([top_labels(s, k).cpu().numpy() for s in scores_batches])


def predicted_topk_of(classifier: Any, texts: Sequence[str], k: int, batch_size: int) -> np.ndarray:
    """Top-k label indices (len(texts), k) of a classifier (anything with ``score_texts(texts, batch_size=)``,
    e.g. an ``XMTCModule``), scoring ``batch_size`` texts at a time so only one batch of scores is held."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(texts) == 0:
        return np.zeros((0, k), np.int64)
    batches = (classifier.score_texts(texts[i:i + batch_size], batch_size=batch_size)
               for i in range(0, len(texts), batch_size))
    return predicted_topk(batches, k)


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


def correct_pairs(tops: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_labels: int, *,
                  by_rank: bool = False) -> np.ndarray:
    """(doc, label) int64 pairs whose true label is in the top-k of EVERY model (one (docs, k) array per model
    in ``tops``): the pairs compared models are attacked on (paper §4.3.2). Sorted by (doc, label), or with
    ``by_rank`` by (doc, rank in the first model's top-k), the order :func:`positive_pairs` lists them in."""
    if len(tops) == 0:
        raise ValueError("tops: give the top-k array of at least one model")
    first = positive_pairs(tops[0], labels, num_labels).astype(np.int64)
    keys = first[:, 0] * num_labels + first[:, 1]
    keep = np.ones(len(first), bool)
    for top in tops[1:]:
        other = positive_pairs(top, labels, num_labels).astype(np.int64)
        keep &= np.isin(keys, other[:, 0] * num_labels + other[:, 1])
    pairs = first[keep]
    return pairs if by_rank else pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def nontargeted_pairs(pairs: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """One (doc, label) row per document of the correct ``pairs``: its rarest correctly predicted true label
    (lowest training frequency, ties to the lower index), the label that bins a non-targeted attack on it.
    Sorted by document."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    ordered = pairs[np.lexsort((pairs[:, 1], freqs[pairs[:, 1]], pairs[:, 0]))]
    first = np.ones(len(ordered), bool)
    first[1:] = ordered[1:, 0] != ordered[:-1, 0]
    return ordered[first]


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


@dataclass(frozen=True)
class BinSample:
    """Pairs drawn bin by bin (what :func:`sample_bins` and :func:`sample_negative_pairs` return).

    ``pairs`` (n, 2) int64 (doc, label), grouped by bin in bin order, each bin in draw order (round robin
    over its targets when spread); ``bins`` (n,) the bin of each pair; ``found`` (num_bins,) the pairs each bin
    had to offer, capped at ``per_bin`` (before equalising): 0 marks an empty bin."""

    pairs: np.ndarray
    bins: np.ndarray
    found: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Pairs kept per bin."""
        return np.bincount(self.bins, minlength=len(self.found))

    @property
    def empty_bins(self) -> list[int]:
        """Bins without a single pair (reported, not fatal)."""
        return np.flatnonzero(self.found == 0).tolist()

    def by_bin(self) -> list[np.ndarray]:
        """The pairs of every bin, in draw order (an empty (0, 2) array for an empty bin)."""
        ends = np.cumsum(self.counts)
        return np.split(self.pairs, ends[:-1])


def _empty_sample(num_bins: int) -> BinSample:
    return BinSample(np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(num_bins, np.int64))


def _equalise(per_bin_pairs: list[np.ndarray], equal: bool) -> BinSample:
    """Cut every bin to the smallest non-empty bin's count (when ``equal``); empty bins stay empty."""
    found = np.array([len(p) for p in per_bin_pairs], dtype=np.int64)
    if equal and (found > 0).any():
        n = int(found[found > 0].min())
        per_bin_pairs = [p[:n] for p in per_bin_pairs]
    kept = [np.asarray(p, np.int64).reshape(-1, 2) for p in per_bin_pairs]
    bins = np.repeat(np.arange(len(kept)), [len(p) for p in kept])
    pairs = np.concatenate(kept) if kept else np.zeros((0, 2), np.int64)
    return BinSample(pairs, bins.astype(np.int64), found)


def spread_over_targets(pairs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The pairs reordered so that a prefix spreads over targets: targets in a random order, one pair per
    target (a random one) before any target gets a second, and so on (round robin).

    Vectorised: a random key orders each target's pairs (``np.lexsort``), giving each pair its round; pairs
    are then sorted by (round, random target rank). Without this, a target with many pairs fills most of a
    uniform sample. Seeded through ``rng``; O(pairs) memory."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    if len(pairs) == 0:
        return pairs
    targets, inverse = np.unique(pairs[:, 1], return_inverse=True)
    rank = rng.permutation(len(targets))[inverse]  # the target order of every round
    order = np.lexsort((rng.random(len(pairs)), inverse))  # by target, random within
    sizes = np.bincount(inverse, minlength=len(targets))
    starts = np.cumsum(sizes) - sizes
    round_of = np.empty(len(pairs), np.int64)
    round_of[order] = np.arange(len(pairs)) - np.repeat(starts, sizes)
    return pairs[np.lexsort((rank, round_of))]


def sample_bins(pairs: np.ndarray, label_bin: np.ndarray, num_bins: int, per_bin: int | None, seed: int, *,
                spread: bool = True, equal: bool = True) -> BinSample:
    """Up to ``per_bin`` (doc, label) pairs from every bin (``label_bin[label]``; -1: no bin), seeded.

    ``spread``: a bin's pairs in :func:`spread_over_targets` order, so its sample holds as many distinct
    targets as it can; otherwise a uniform draw (the same draws as :func:`sample_per_bin` always made).
    ``equal``: every bin cut to the smallest NON-empty bin's count. Empty bins are reported in
    ``empty_bins``, never raised: the caller decides whether that is fatal."""
    if per_bin is not None and per_bin < 1:
        raise ValueError(f"per_bin (samples_per_bin) must be >= 1 or None, got {per_bin}")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    pair_bin = label_bin[pairs[:, 1]] if len(pairs) else np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    per_bin_pairs = []
    if not spread:
        counts = np.bincount(pair_bin[pair_bin >= 0], minlength=num_bins)[:num_bins]
        nonempty = counts[counts > 0]
        cap = int(nonempty.min()) if equal and len(nonempty) else None
        cap = per_bin if cap is None else (cap if per_bin is None else min(per_bin, cap))
        for b in range(num_bins):
            idx = np.flatnonzero(pair_bin == b)
            n = len(idx) if cap is None else min(cap, len(idx))
            per_bin_pairs.append(pairs[rng.choice(idx, size=n, replace=False)] if n else pairs[:0])
        sample = _equalise(per_bin_pairs, equal=False)
        # what each bin had to offer, capped at per_bin (the draws above are already equal when asked)
        found = counts if per_bin is None else np.minimum(counts, per_bin)
        return BinSample(sample.pairs, sample.bins, found.astype(np.int64))
    for b in range(num_bins):
        ordered = spread_over_targets(pairs[pair_bin == b], rng)
        per_bin_pairs.append(ordered if per_bin is None else ordered[:per_bin])
    return _equalise(per_bin_pairs, equal)


def sample_per_bin(pairs: np.ndarray, label_bin: np.ndarray, num_bins: int, per_bin: int | None,
                   seed: int, *, spread: bool = False, empty: Literal["raise", "skip"] = "raise",
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The same number of (doc, label) pairs from every bin (the smallest bin's count when ``per_bin`` is
    None or larger), seeded. Returns the chosen pairs and their bin indices.

    ``empty="raise"`` (positives, where no bin can be empty): an empty bin is an error; ``"skip"``: empty bins
    get no pairs and the others the smallest non-empty bin's count (use :func:`sample_bins` to learn which).
    ``spread``: see :func:`sample_bins`."""
    sample = sample_bins(pairs, label_bin, num_bins, per_bin, seed, spread=spread, equal=True)
    if sample.empty_bins and empty == "raise":
        raise ValueError(f"no attackable pairs in bin(s) {sample.empty_bins}: lower the bin size or attack fewer bins")
    return sample.pairs, sample.bins


# -- label clusters for negative-targeted attacks (paper §4.2.2) --

def label_representations(doc_features: sp.csr_matrix, labels: Sequence[np.ndarray], num_labels: int) -> sp.csr_matrix:
    """Label l = sum of the TF-IDF rows of its training documents (Z^T X), row-normalised."""
    z = label_matrix(labels, num_labels).astype(np.float64)
    reps = (z.T @ doc_features).tocsr()
    norms = np.sqrt(np.asarray(reps.multiply(reps).sum(axis=1)).reshape(-1))
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ reps


def label_tfidf(train_texts: Sequence[str], train_labels: Sequence[np.ndarray], num_labels: int,
                max_features: int = 100_000) -> tuple[list[str], sp.csr_matrix]:
    """The TF-IDF vocabulary (lower-cased words) of the training documents and the label representations over
    it (``label_representations``): what label clusters and label-guided attack words are made of."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(max_features=max_features, sublinear_tf=True, dtype=np.float32)
    x = vectorizer.fit_transform(train_texts)
    return list(vectorizer.get_feature_names_out()), label_representations(x, train_labels, num_labels)


def label_clusters(train_texts: Sequence[str], train_labels: Sequence[np.ndarray], num_labels: int,
                   min_size: int = 3, seed: int = 0, max_features: int = 100_000,
                   representations: sp.csr_matrix | None = None) -> np.ndarray:
    """Cluster id per label: balanced 2-means over the summed TF-IDF of each label's training documents
    (``representations``: ``label_tfidf``'s, when already made for these documents)."""
    if representations is None:
        representations = label_tfidf(train_texts, train_labels, num_labels, max_features)[1]
    return balanced_2means(representations, min_size=min_size, seed=seed)


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

    Sparse column slices, ``chunk`` targets at a time: memory O(docs x chunk), but the result holds up to
    docs x targets pairs. An exact listing for small problems and tests; to choose attacks at scale use
    :func:`sample_negative_pairs`, which never lists them.
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


# -- negative-targeted pairs without enumerating them --

_CHUNK = 256  # targets drawn for at once; fixed, so a smaller per_bin gives a prefix of a larger one's sample
_TRIES = 8  # rejection draws per target before its eligible documents are listed exactly


def sample_negative_pairs(topks: Sequence[np.ndarray], labels: Sequence[np.ndarray] | sp.spmatrix, num_labels: int,
                          label_bin: np.ndarray, num_bins: int, per_bin: int, seed: int,
                          clusters: np.ndarray | None = None, allowed: np.ndarray | None = None,
                          equal: bool = True) -> BinSample:
    """Up to ``per_bin`` negative-targeted (doc, target) pairs per frequency bin, spread over the bin's targets,
    without ever listing all eligible pairs (there are ~200M at 31k labels x 6.6k documents).

    A pair is eligible when, for EVERY model (one top-k array (docs, k) per compared model in ``topks``), the
    target is neither a true label of the document nor in its top-k; with ``clusters`` (cluster id per label)
    the document must also have a true label in the target's cluster (paper §4.2.2). Targets are the labels
    with ``label_bin`` (bin per label, -1: none) in 0..num_bins-1, restricted to ``allowed`` when given.

    Per bin: the targets in a random order, then round robin: one random eligible document per target before
    any target gets a second, until ``per_bin`` pairs or every target is exhausted (as the paper's code, a
    random target per document, and unlike a uniform draw over pairs, where a target with many eligible
    documents fills the sample). Documents are found by rejection (a random candidate, kept if eligible and not
    drawn yet for that target); candidates are all documents, or with clusters the documents of the target's
    cluster (one column of a docs x clusters sparse matrix). A target whose draws keep failing has its
    candidates listed and checked exactly, so rare eligibility is never missed.

    ``equal``: every bin cut to the smallest NON-empty bin's count; empty bins are reported (``empty_bins``),
    never raised. Deterministic per ``seed`` (bin b draws from its own stream), and a smaller ``per_bin``
    yields a prefix of each bin's larger sample. Memory: O(per_bin x bins + chunk) beyond the sparse label
    matrix and the top-k arrays (plus, with clusters, the docs x clusters matrix, nnz <= that of the labels).
    """
    if not topks:
        raise ValueError("topks: give the top-k array of at least one model")
    if per_bin < 1:
        raise ValueError(f"per_bin (samples_per_bin) must be >= 1, got {per_bin}")
    truth = sp.csr_matrix(labels, dtype=bool) if sp.issparse(labels) else label_matrix(labels, num_labels)
    n_docs = truth.shape[0]
    if truth.shape[1] != num_labels or len(label_bin) != num_labels:
        raise ValueError(f"labels has {truth.shape[1]} columns and label_bin {len(label_bin)} entries; "
                         f"both must equal num_labels={num_labels}")
    topks = [np.asarray(t) for t in topks]
    for i, top in enumerate(topks):
        if top.ndim != 2 or len(top) != n_docs:
            raise ValueError(f"topks[{i}] has shape {top.shape}; it must be (documents={n_docs}, k)")
    if clusters is not None:
        clusters = np.asarray(clusters)
        if len(clusters) != num_labels:
            raise ValueError(f"clusters has {len(clusters)} entries, expected one cluster id per label ({num_labels})")
        member = sp.csr_matrix((np.ones(num_labels, np.int32), (np.arange(num_labels), clusters)))
        doc_cluster = (truth.astype(np.int32) @ member).tocsc()  # (docs, clusters): the candidates per cluster
        doc_cluster.sort_indices()
        pool_docs, starts = doc_cluster.indices, doc_cluster.indptr[:-1][clusters]
        sizes = np.diff(doc_cluster.indptr)[clusters]
    else:
        pool_docs, starts, sizes = None, np.zeros(num_labels, np.int64), np.full(num_labels, n_docs, np.int64)
    candidates = np.flatnonzero((label_bin >= 0) & (label_bin < num_bins) & (sizes > 0))
    if allowed is not None:
        candidates = candidates[np.isin(candidates, allowed)]
    if n_docs == 0 or len(candidates) == 0:
        return _empty_sample(num_bins)

    def eligible(docs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        ok = ~np.asarray(truth[docs, targets]).reshape(-1)
        for top in topks:
            ok &= ~(top[docs] == targets[:, None]).any(axis=1)
        return ok

    def doc_at(targets: np.ndarray, j: np.ndarray) -> np.ndarray:
        return j if pool_docs is None else pool_docs[starts[targets] + j]

    per_bin_pairs = []
    for b in range(num_bins):
        rng = np.random.default_rng([seed, b])
        active = rng.permutation(candidates[label_bin[candidates] == b])
        drawn: list[np.ndarray] = []  # (doc, target) pairs of this bin, in draw order
        drawn_keys = np.zeros(0, np.int64)  # target * n_docs + doc, sorted: what each target already has
        total = 0
        while total < per_bin and len(active):
            exhausted = []
            for start in range(0, len(active), _CHUNK):
                t = active[start:start + _CHUNK]
                doc = np.full(len(t), -1, np.int64)
                pending = np.arange(len(t))
                for _ in range(_TRIES):
                    if not len(pending):
                        break
                    tp = t[pending]
                    d = doc_at(tp, rng.integers(0, sizes[tp]))
                    ok = eligible(d, tp)
                    if len(drawn_keys):
                        ok &= ~np.isin(tp * n_docs + d, drawn_keys)
                    doc[pending[ok]] = d[ok]
                    pending = pending[~ok]
                for i in pending:  # rare: few eligible documents left; list them exactly
                    pool = doc_at(np.full(sizes[t[i]], t[i]), np.arange(sizes[t[i]]))
                    ok = eligible(pool, np.full(len(pool), t[i]))
                    if len(drawn_keys):
                        ok &= ~np.isin(t[i] * n_docs + pool, drawn_keys)
                    if ok.any():
                        doc[i] = rng.choice(pool[ok])
                got = doc >= 0
                exhausted.append(t[~got])
                new = np.stack([doc[got], t[got]], axis=1)
                drawn.append(new)
                drawn_keys = np.union1d(drawn_keys, new[:, 1] * n_docs + new[:, 0])
                total += len(new)
                if total >= per_bin:
                    break
            active = active[~np.isin(active, np.concatenate(exhausted))]  # the same target order next round
        pairs = np.concatenate(drawn) if drawn else np.zeros((0, 2), np.int64)
        per_bin_pairs.append(pairs[:per_bin])
    return _equalise(per_bin_pairs, equal)


# -- one selection for the attack command and the robustness callback --

@dataclass(frozen=True)
class PairChoice:
    """What :func:`choose_pairs` chose.

    ``pairs``: per kind (in :data:`KINDS` order) an (n, 2) int64 array of (doc, label) rows, grouped by bin in
    bin order. For ``positive`` and ``negative`` the label is the target; for ``nontargeted`` it is the label
    that bins the document (its rarest correctly predicted true label): the attack's target there is the
    document's true labels, Γ those in the top-k. ``bins`` the frequency bins, ``label_bin`` the bin of every
    label (-1: none), ``empty_bins`` per kind the names of bins without a single pair (only kinds that have
    some)."""

    pairs: dict[str, np.ndarray]
    bins: list[FrequencyBin]
    label_bin: np.ndarray
    empty_bins: dict[str, list[str]]

    def pair_bins(self, kind: str) -> np.ndarray:
        """The bin index of each of ``pairs[kind]``."""
        return self.label_bin[self.pairs[kind][:, 1]]

    def by_bin(self, kind: str) -> list[np.ndarray]:
        """The pairs of ``kind`` bin by bin, in their order (an empty (0, 2) array for an empty bin)."""
        pair_bins = self.pair_bins(kind)
        return [self.pairs[kind][pair_bins == b] for b in range(len(self.bins))]


def _subsample_bins(pairs: np.ndarray, label_bin: np.ndarray, num_bins: int, per_bin: int | None,
                    seed: int) -> BinSample:
    """Up to ``per_bin`` pairs of every bin, as the robustness callback has always drawn them: one generator
    through the bins in order; a bin with more pairs gives a random subset kept in the pairs' order, a bin with
    fewer all of them (no draw); no bin is cut to the smallest."""
    rng = np.random.default_rng(seed)
    pair_bin = label_bin[pairs[:, 1]] if len(pairs) else np.zeros(0, np.int64)
    per_bin_pairs = []
    for b in range(num_bins):
        chosen = pairs[pair_bin == b]
        if per_bin is not None and len(chosen) > per_bin:
            chosen = chosen[np.sort(rng.choice(len(chosen), per_bin, replace=False))]
        per_bin_pairs.append(chosen)
    return _equalise(per_bin_pairs, equal=False)


_NONE_LEFT = {
    "positive": "no correctly classified (document, label) pairs to attack",
    "nontargeted": "no document with a correctly predicted true label to attack",
    "negative": "no eligible negative-targeted (document, target) pairs: every candidate target is a true label "
                "or in the top-k of the documents (or, with negative_clusters, outside their label clusters)",
}


def choose_pairs(tops: Sequence[np.ndarray], labels: Sequence[np.ndarray], stats: LabelStats, kinds: Sequence[str],
                 *, samples_per_bin: int | None, min_labels_per_bin: int, seed: int, allowed: np.ndarray | None = None,
                 clusters: np.ndarray | None = None, bins: Sequence[FrequencyBin] | None = None, equal: bool = True,
                 negative_seed: int | None = None) -> PairChoice:
    """The (document, label) pairs to attack per kind, binned by the label's training frequency (paper §4.1).

    ``tops``: per compared model the (docs, k) top-k label indices (:func:`predicted_topk_of`); a pair must suit
    every model. ``labels``: the true label indices of every document. ``allowed``: only these labels as targets
    (``LabelStats.indices_of``). ``clusters``: cluster id per label for negative attacks (paper §4.2.2).

    - positive: true labels in the top-k (:func:`correct_pairs`);
    - negative: labels neither true nor in the top-k (:func:`sample_negative_pairs`, spread over targets);
    - nontargeted: documents with a correctly predicted true label, binned by the rarest one
      (:func:`nontargeted_pairs`).

    ``bins``: fixed bins (the callback keeps those of its first evaluation); None: the paper's bins over the
    positive targets with ``min_labels_per_bin`` labels each. ``equal=True`` (the attack command): every bin cut
    to the smallest non-empty bin, positives drawn by :func:`sample_bins` from (doc, label)-sorted pairs with
    ``seed``; ``equal=False`` (the callback): what each bin has up to ``samples_per_bin``, positives drawn by
    :func:`_subsample_bins` from pairs in top-k rank order. Non-targeted documents are drawn like positives with
    ``seed + 2``, negatives with ``negative_seed`` (default ``seed + 1``, the command's; the callback passes
    ``seed``); ``samples_per_bin=None`` means 200 negatives per bin.

    A bin without pairs is reported in ``empty_bins``; a kind without any pair is a ``UserError``.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UserError(f"settings.kinds: {list(kinds)} is not a non-empty list of {', '.join(KINDS)}")
    if len(tops) == 0:
        raise ValueError("tops: give the top-k array of at least one model")
    n_labels, freqs = len(stats), np.asarray(stats.freqs)
    for i, top in enumerate(tops):
        if np.ndim(top) != 2 or len(top) != len(labels):
            raise ValueError(f"tops[{i}] has shape {np.shape(top)}; it must be (documents={len(labels)}, k)")
    among = " among the requested labels (settings.labels)" if allowed is not None else ""
    pos = correct_pairs(tops, labels, n_labels, by_rank=not equal)
    if allowed is not None:
        pos = pos[np.isin(pos[:, 1], allowed)]
    if bins is None:
        if len(pos) == 0:
            raise UserError(_NONE_LEFT["positive"] + among)
        bins = frequency_bins(freqs, pos[:, 1], min_labels_per_bin)
    bins = list(bins)
    label_bin, nb = bin_of(freqs, bins), len(bins)

    def draw(pairs: np.ndarray, draw_seed: int) -> BinSample:
        if equal:  # the draws sample_per_bin has always made
            return sample_bins(pairs, label_bin, nb, samples_per_bin, draw_seed, spread=False, equal=True)
        return _subsample_bins(pairs, label_bin, nb, samples_per_bin, draw_seed)

    samples: dict[str, BinSample] = {}
    for kind in (k for k in KINDS if k in kinds):
        if kind == "positive":
            samples[kind] = draw(pos, seed)
        elif kind == "nontargeted":
            samples[kind] = draw(nontargeted_pairs(pos, freqs), seed + 2)
        else:  # drawn per target, never all eligible pairs listed (millions at 30k labels)
            samples[kind] = sample_negative_pairs(
                list(tops), labels, n_labels, label_bin, nb, samples_per_bin or 200,
                seed + 1 if negative_seed is None else negative_seed, clusters=clusters, allowed=allowed, equal=equal)
        if len(samples[kind].pairs) == 0:
            raise UserError(f"{_NONE_LEFT[kind]}{among} in any of the bins {', '.join(b.name for b in bins)}")
    return PairChoice(pairs={kind: s.pairs for kind, s in samples.items()}, bins=bins, label_bin=label_bin,
                      empty_bins={kind: [bins[b].name for b in s.empty_bins] for kind, s in samples.items()
                                  if s.empty_bins})
