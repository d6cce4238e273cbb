"""XMC ranking metrics against napkinxc (an independent implementation, the oracle) and hand-worked examples.

napkinxc ranks a score matrix with numpy's default (unstable) argsort, so equal scores would come out in an
arbitrary order; it is given explicit top-k rankings made with xmtc's documented tie rule instead (score
descending, then label index ascending: a stable sort of -scores).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from napkinxc import metrics as nm

from xmtc.metrics import (
    PrecisionAtKByFrequency,
    XMCMetrics,
    frequency_bin_names,
    ndcg_at_k,
    precision_at_k,
    precision_at_k_by_bin,
    psndcg_at_k,
    psp_at_k,
    top_labels,
)

KS = (1, 3, 5)
EDGES = (5, 20, 100, 500)
TOL = 1e-6


# ---------------------------------------------------------------------------------- oracle
def rule_ranking(scores: np.ndarray, k: int) -> list[list[int]]:
    """Top-k per row under the documented tie rule, as the list of label lists napkinxc takes as a ranking."""
    return [row[:k].tolist() for row in np.argsort(-scores.astype(np.float64), axis=1, kind="stable")]


def oracle(scores: np.ndarray, targets: np.ndarray, w: np.ndarray, ks) -> dict[str, float]:
    """napkinxc's P@k, nDCG@k, PSP@k and PSnDCG@k (normalised, zero_division=0) for every k in ``ks``."""
    kmax = max(ks)
    rank, y = rule_ranking(scores, kmax), targets.astype(bool)
    values = {
        "P": nm.precision_at_k(y, rank, k=kmax),
        "nDCG": nm.ndcg_at_k(y, rank, k=kmax),
        "PSP": nm.psprecision_at_k(y, rank, w.astype(np.float64), k=kmax),
        "PSnDCG": nm.psndcg_at_k(y, rank, w.astype(np.float64), k=kmax),
    }
    return {f"{name}@{k}": float(v[k - 1]) for name, v in values.items() for k in ks}


def reference_bins(scores: np.ndarray, targets: np.ndarray, freqs: np.ndarray, edges, k: int) -> np.ndarray:
    """P@k by frequency bin (napkinxc has none): a per-document loop over the rule's top-k."""
    counts = np.zeros(len(edges) + 1)
    for top, y in zip(rule_ranking(scores, k), targets, strict=True):
        for label in top:
            if y[label]:
                b = next((i for i, e in enumerate(edges) if freqs[label] <= e), len(edges))
                counts[b] += 1
    return counts / (k * len(scores))


def random_case(batch: int, num_labels: int, density: float, seed: int, levels: int | None = None):
    """Scores (tie-free, or ``levels`` distinct values per matrix: many ties), targets with an empty document,
    a full one (> k labels), one with a single label ranked first, and mostly short ones (|y| < k)."""
    rng = np.random.default_rng(seed)
    if levels is None:
        scores = np.argsort(rng.random((batch, num_labels)), axis=1).astype(np.float32)
    else:
        scores = (rng.integers(0, levels, (batch, num_labels)) / levels).astype(np.float32)
        scores[3] = 0.5  # a row where every label ties: the top-k is the k lowest indices
    targets = rng.random((batch, num_labels)) < density
    targets[0] = False  # a document without labels
    targets[1] = True  # a document with all labels (> k)
    targets[2, :] = False
    targets[2, int(np.argmax(scores[2]))] = True  # a single label, ranked first
    w = 1.0 + 3.0 * rng.random(num_labels)  # inverse propensities >= 1
    freqs = rng.integers(0, 1000, num_labels)
    freqs[: min(num_labels, 6)] = [0, 5, 6, 20, 500, 501][: min(num_labels, 6)]  # bin boundaries
    return scores, targets, w, freqs


# (batch, num_labels, density, seed, levels): levels=None is tie-free, small levels tie a lot
CASES = [
    (7, 12, 0.2, 0, None),
    (50, 30, 0.05, 1, None),
    (33, 100, 0.3, 2, 4),
    (64, 8, 0.6, 3, 2),
    (20, 500, 0.01, 4, 3),
    (90, 40, 0.06, 10, 6),
    (45, 5, 0.3, 11, 3),  # k = 5 = num_labels: every label ranked
]


def functional(s: torch.Tensor, t: torch.Tensor, wt: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    return {
        f"P@{k}": precision_at_k(s, t, k),
        f"nDCG@{k}": ndcg_at_k(s, t, k),
        f"PSP@{k}": psp_at_k(s, t, wt, k),
        f"PSnDCG@{k}": psndcg_at_k(s, t, wt, k),
    }


@pytest.mark.parametrize(("batch", "num_labels", "density", "seed", "levels"), CASES)
def test_against_napkinxc(batch: int, num_labels: int, density: float, seed: int, levels: int | None) -> None:
    scores, targets, w, freqs = random_case(batch, num_labels, density, seed, levels)
    assert (targets.sum(1) < max(KS)).mean() > 0.3 or density >= 0.2  # short label sets are exercised
    ks = tuple(k for k in KS if k <= num_labels)
    expected = oracle(scores, targets, w, ks)
    s, t, wt = torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(w).float()

    whole = XMCMetrics(ks=ks, inv_propensity=wt)
    whole.update(s, t)
    chunked = XMCMetrics(ks=ks, inv_propensity=wt)  # accumulation over uneven batches
    for rows in np.array_split(np.arange(batch), [1, batch // 3, batch // 3 + 2]):
        chunked.update(s[rows], t[rows])
    got, got_chunked = whole.compute(), chunked.compute()
    assert set(got) == set(expected)
    for k in ks:
        fn = functional(s, t, wt, k)
        for name in fn:
            assert got[name].item() == pytest.approx(expected[name], abs=TOL), name
            assert got_chunked[name].item() == pytest.approx(expected[name], abs=TOL), name
            assert fn[name].item() == pytest.approx(expected[name], abs=TOL), name
        ref_bins = reference_bins(scores, targets, freqs, EDGES, k)
        bins = precision_at_k_by_bin(s, t, torch.from_numpy(freqs), EDGES, k)
        np.testing.assert_allclose(bins.numpy(), ref_bins, atol=TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_class_and_functional_agree_on_ties(dtype: torch.dtype) -> None:
    # Low-precision scores tie a lot (as early in training): the class ranks once at max(ks) and reads
    # prefixes, the functions rank once per k; one tie rule makes them identical, and equal to napkinxc.
    # Saturated sigmoids: bf16 / fp16 round the confident ones to exactly 1.0; float32 scores are quantised.
    rng = np.random.default_rng(12)
    logits = torch.from_numpy(4.0 * rng.normal(size=(300, 64)).astype(np.float32))
    quantised = (torch.sigmoid(logits) * 8).round() / 8
    scores = quantised if dtype == torch.float32 else torch.sigmoid(logits.to(dtype))
    values = scores.float().numpy()
    top6 = -np.sort(-values, axis=1)[:, :6]
    assert (top6[:, :5] == top6[:, 1:]).any(axis=1).mean() > 0.3  # ties within or across the top 5 are common
    targets = torch.from_numpy(rng.random((300, 64)) < 0.05)
    wt = torch.from_numpy(1.0 + 3.0 * rng.random(64)).float()
    metric = XMCMetrics(inv_propensity=wt)
    metric.update(scores, targets)
    got = metric.compute()
    expected = oracle(values, targets.numpy(), wt.numpy(), KS)
    for k in KS:
        for name, value in functional(scores, targets, wt, k).items():
            assert value.item() == got[name].item(), name  # same code path and rule: exactly equal
            assert value.item() == pytest.approx(expected[name], abs=TOL), name


def test_tie_rule_on_rankings() -> None:
    # The rule itself: score descending, then label index ascending (a stable sort), for every k,
    # including ties straddling place k, rows of equal scores, infinities and k = num_labels.
    rng = np.random.default_rng(13)
    scores = rng.integers(0, 4, (200, 23)).astype(np.float32)
    scores[0] = 1.0
    scores[1, ::3] = np.inf
    scores[2, ::2] = -np.inf
    # A second matrix where only a few rows tie: those rows take a separate code path.
    few = np.argsort(rng.random((200, 23)), axis=1).astype(np.float32)
    few[::40] = np.floor(few[::40] / 4)
    for matrix in (scores, few):
        expected = np.argsort(-matrix, axis=1, kind="stable")
        for k in (1, 2, 5, 22, 23):
            got = top_labels(torch.from_numpy(matrix), k).numpy()
            np.testing.assert_array_equal(got, expected[:, :k])
    # hand-made: labels 0, 1, 2, 4 tie at 0.5 below label 3
    row = torch.tensor([[0.5, 0.5, 0.5, 0.9, 0.5]])
    assert top_labels(row, 3).tolist() == [[3, 0, 1]]
    assert top_labels(row, 1).tolist() == [[3]]


def test_nan_scores_refused() -> None:
    scores = torch.tensor([[0.1, float("nan"), 0.3], [0.2, 0.1, 0.0]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"`scores` contain NaN"):
        precision_at_k(scores, targets, 1)
    with pytest.raises(ValueError, match=r"`scores` contain NaN"):
        XMCMetrics(ks=(1, 2)).update(scores, targets)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32])
def test_target_dtypes_agree(dtype: torch.dtype) -> None:
    scores, targets, w, _ = random_case(16, 40, 0.1, 5)
    s, wt = torch.from_numpy(scores), torch.from_numpy(w).float()
    as_bool = XMCMetrics(inv_propensity=wt)
    as_bool.update(s, torch.from_numpy(targets))
    other = XMCMetrics(inv_propensity=wt)
    other.update(s, torch.from_numpy(targets).to(dtype))
    for name, value in as_bool.compute().items():
        assert other.compute()[name].item() == pytest.approx(value.item(), abs=1e-7), name


def test_zero_weights_and_float64_inputs() -> None:
    # Labels with weight 0 (e.g. never seen in training) still count as true labels for nDCG.
    scores, targets, w, _ = random_case(25, 15, 0.3, 6, levels=5)
    w[::3] = 0.0
    s, t = torch.from_numpy(scores).double(), torch.from_numpy(targets).double()
    metric = XMCMetrics(inv_propensity=torch.from_numpy(w))
    metric.update(s, t)
    got = metric.compute()
    for name, expected in oracle(scores, targets, w, KS).items():
        assert got[name].item() == pytest.approx(expected, abs=TOL), name


# ---------------------------------------------------------------------------------- hand-worked example
# doc 0: scores rank labels 0,1,2,3,4,5; true {0, 2} -> hits at ranks 1 and 3 (top-5: 0,1,2,3,4).
# doc 1: scores rank labels 3,1,5,4,2,0; true {1, 4} -> hits at ranks 2 and 4.
# w = [1, 2, 3, 4, 5, 6]; label frequencies [3, 6, 21, 500, 501, 5] -> bins 0, 1, 2, 3, 4, 0.
HAND_SCORES = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.6, 0.2, 0.9, 0.3, 0.4]])
HAND_TARGETS = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]], dtype=torch.bool)
HAND_W = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
HAND_FREQS = torch.tensor([3, 6, 21, 500, 501, 5])
L3, L5 = math.log2(3), math.log2(5)  # log2(2) = 1, log2(4) = 2
HAND_EXPECTED = {
    # P@1 = (1/1 + 0/1) / 2; P@3 = (2/3 + 1/3) / 2; P@5 = (2/5 + 2/5) / 2
    "P@1": 0.5,
    "P@3": 0.5,
    "P@5": 0.4,
    # both docs have 2 labels: IDCG@1 = 1, IDCG@3 = IDCG@5 = 1 + 1/log2(3)
    # doc 0: DCG@1 = 1, DCG@3 = DCG@5 = 1 + 1/2
    # doc 1: DCG@1 = 0, DCG@3 = 1/log2(3), DCG@5 = 1/log2(3) + 1/log2(5)
    "nDCG@1": 0.5,
    "nDCG@3": (1.5 / (1 + 1 / L3) + (1 / L3) / (1 + 1 / L3)) / 2,
    "nDCG@5": (1.5 / (1 + 1 / L3) + (1 / L3 + 1 / L5) / (1 + 1 / L3)) / 2,
    # true weights: doc 0 {w0=1, w2=3}, doc 1 {w1=2, w4=5}.
    # PSP@1 = (1 + 0) / (3 + 5); PSP@3 = (1+3 + 2) / (3+1 + 5+2); PSP@5 = (1+3 + 2+5) / (4 + 7)
    "PSP@1": 1 / 8,
    "PSP@3": 6 / 11,
    "PSP@5": 1.0,
    # PSnDCG@1 as PSP@1; @3 num = (1 + 3/2) + 2/log2(3), den = (3 + 1/log2(3)) + (5 + 2/log2(3));
    # @5 num adds doc 1's w4=5 at rank 4: 5/log2(5); den unchanged (2 labels per doc).
    "PSnDCG@1": 1 / 8,
    "PSnDCG@3": (2.5 + 2 / L3) / (3 + 1 / L3 + 5 + 2 / L3),
    "PSnDCG@5": (2.5 + 2 / L3 + 5 / L5) / (3 + 1 / L3 + 5 + 2 / L3),
}


def test_hand_worked_example() -> None:
    metric = XMCMetrics(inv_propensity=HAND_W)
    metric.update(HAND_SCORES, HAND_TARGETS)
    got = metric.compute()
    assert list(got) == list(HAND_EXPECTED)  # documented key order
    for name, expected in HAND_EXPECTED.items():
        assert got[name].item() == pytest.approx(expected, abs=1e-6), name
        assert got[name].ndim == 0


def test_hand_worked_psndcg_with_short_label_sets() -> None:
    # Each document's PSDCG is divided by its own IDCG(min(|y|, k)) before summing, so a document with
    # fewer than k labels weighs as much as one with more. k = 3, w = [1, 2, 3, 4], both docs rank 0,1,2,3:
    # doc 0: y = {1}: PSDCG = 2/log2(3), IDCG(1) = 1, ideal PSDCG = 2.
    # doc 1: y = {0, 2, 3}: PSDCG = 1 + 3/2, IDCG(3) = 1 + 1/log2(3) + 1/2, ideal = 4 + 3/log2(3) + 1/2.
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    targets = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    idcg3 = 1.5 + 1 / L3
    expected = (2 / L3 + 2.5 / idcg3) / (2 + (4.5 + 3 / L3) / idcg3)  # 0.4870
    unnormalised = (2 / L3 + 2.5) / (2 + 4.5 + 3 / L3)  # 0.4482: the formula this replaces
    assert abs(expected - unnormalised) > 0.03
    assert oracle(scores.numpy(), targets.numpy(), w.numpy(), (3,))["PSnDCG@3"] == pytest.approx(expected, abs=1e-9)
    assert psndcg_at_k(scores, targets, w, 3).item() == pytest.approx(expected, abs=1e-6)
    metric = XMCMetrics(ks=(3,), inv_propensity=w)
    metric.update(scores[:1], targets[:1])
    metric.update(scores[1:], targets[1:])
    assert metric.compute()["PSnDCG@3"].item() == pytest.approx(expected, abs=1e-6)


def test_hand_worked_bins() -> None:
    # top-5 hits: doc 0 labels 0, 2 (bins 0, 2); doc 1 labels 1, 4 (bins 1, 4) -> counts / (5 * 2)
    bins5 = precision_at_k_by_bin(HAND_SCORES, HAND_TARGETS, HAND_FREQS, EDGES, 5)
    np.testing.assert_allclose(bins5.numpy(), [0.1, 0.1, 0.1, 0.0, 0.1], atol=1e-7)
    # top-3 hits: doc 0 labels 0, 2; doc 1 label 1 -> counts / (3 * 2)
    bins3 = precision_at_k_by_bin(HAND_SCORES, HAND_TARGETS, HAND_FREQS, EDGES, 3)
    np.testing.assert_allclose(bins3.numpy(), [1 / 6, 1 / 6, 1 / 6, 0.0, 0.0], atol=1e-7)

    metric = PrecisionAtKByFrequency(HAND_FREQS, EDGES, k=5)
    assert metric.bin_names == ["freq_0-5", "freq_6-20", "freq_21-100", "freq_101-500", "freq_501+"]
    metric.update(HAND_SCORES, HAND_TARGETS)
    got = metric.compute()
    assert list(got) == [f"P@5/{name}" for name in metric.bin_names]
    np.testing.assert_allclose([v.item() for v in got.values()], [0.1, 0.1, 0.1, 0.0, 0.1], atol=1e-7)


def test_empty_document_counts_in_mean_but_not_in_psp() -> None:
    # Appending a document with no labels halves P@k and nDCG@k; PSP and PSnDCG (ratios of sums) do not move.
    scores = torch.cat([HAND_SCORES[:1], HAND_SCORES[:1]])
    targets = torch.cat([HAND_TARGETS[:1], torch.zeros_like(HAND_TARGETS[:1])])
    one = XMCMetrics(inv_propensity=HAND_W)
    one.update(HAND_SCORES[:1], HAND_TARGETS[:1])
    two = XMCMetrics(inv_propensity=HAND_W)
    two.update(scores, targets)
    a, b = one.compute(), two.compute()
    for k in KS:
        assert b[f"P@{k}"].item() == pytest.approx(a[f"P@{k}"].item() / 2)
        assert b[f"nDCG@{k}"].item() == pytest.approx(a[f"nDCG@{k}"].item() / 2)
        assert b[f"PSP@{k}"].item() == pytest.approx(a[f"PSP@{k}"].item())
        assert b[f"PSnDCG@{k}"].item() == pytest.approx(a[f"PSnDCG@{k}"].item())


# ---------------------------------------------------------------------------------- accumulation
def test_batch_accumulation_and_reset() -> None:
    scores, targets, w, freqs = random_case(61, 50, 0.1, 7)
    s, t, wt = torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(w).float()
    whole = XMCMetrics(inv_propensity=wt)
    whole.update(s, t)
    expected = whole.compute()

    chunked = XMCMetrics(inv_propensity=wt)
    for rows in (slice(0, 10), slice(10, 45), slice(45, 61)):
        chunked.update(s[rows], t[rows])
    got = chunked.compute()
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value.item(), abs=1e-7), name

    chunked.reset()
    assert chunked.num_docs.item() == 0
    chunked.update(s[:10], t[:10])
    fresh = XMCMetrics(inv_propensity=wt)
    fresh.update(s[:10], t[:10])
    for name, value in fresh.compute().items():
        assert chunked.compute()[name].item() == pytest.approx(value.item(), abs=1e-7), name

    by_freq_whole = PrecisionAtKByFrequency(torch.from_numpy(freqs), EDGES, k=3)
    by_freq_whole.update(s, t)
    by_freq = PrecisionAtKByFrequency(torch.from_numpy(freqs), EDGES, k=3)
    for rows in (slice(0, 10), slice(10, 45), slice(45, 61)):
        by_freq.update(s[rows], t[rows])
    for name, value in by_freq_whole.compute().items():
        assert by_freq.compute()[name].item() == pytest.approx(value.item(), abs=1e-7), name


def test_forward_returns_batch_value_and_states_are_fixed_size_sums() -> None:
    scores, targets, w, _ = random_case(30, 20, 0.2, 8)
    s, t, wt = torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(w).float()
    metric = XMCMetrics(inv_propensity=wt)
    batch_value = metric(s[:12], t[:12])  # forward: value on this batch only, and accumulates
    metric(s[12:], t[12:])
    assert batch_value["P@3"].item() == pytest.approx(precision_at_k(s[:12], t[:12], 3).item(), abs=1e-7)
    assert batch_value["PSnDCG@5"].item() == pytest.approx(
        psndcg_at_k(s[:12], t[:12], wt, 5).item(), abs=1e-7
    )
    assert metric.compute()["nDCG@5"].item() == pytest.approx(ndcg_at_k(s, t, 5).item(), abs=1e-7)
    assert metric.num_docs.item() == 30
    assert all(v.shape in ((), (3,)) for v in metric.metric_state.values())
    assert "inv_propensity" not in metric.state_dict()  # data, not checkpoint state
    assert "inv_propensity" in dict(metric.named_buffers())


def test_without_propensity_only_p_and_ndcg() -> None:
    metric = XMCMetrics(ks=(2, 1))
    metric.update(HAND_SCORES, HAND_TARGETS)
    assert list(metric.compute()) == ["P@1", "P@2", "nDCG@1", "nDCG@2"]


def test_bins_sum_to_precision() -> None:
    scores, targets, _, freqs = random_case(40, 60, 0.15, 9)
    s, t, f = torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(freqs)
    for k in KS:
        for edges in (EDGES, (0,), (10, 400)):
            bins = precision_at_k_by_bin(s, t, f, edges, k)
            assert bins.shape == (len(edges) + 1,)
            assert bins.sum().item() == pytest.approx(precision_at_k(s, t, k).item(), abs=1e-6)
        metric = PrecisionAtKByFrequency(f, EDGES, k=k)
        metric.update(s, t)
        total = sum(v.item() for v in metric.compute().values())
        assert total == pytest.approx(precision_at_k(s, t, k).item(), abs=1e-6)


def test_bin_names() -> None:
    assert frequency_bin_names((0,)) == ["freq_0-0", "freq_1+"]
    assert frequency_bin_names((10, 400)) == ["freq_0-10", "freq_11-400", "freq_401+"]


# ---------------------------------------------------------------------------------- validation
def test_shape_errors() -> None:
    s, t = HAND_SCORES, HAND_TARGETS
    with pytest.raises(ValueError, match=r"`scores` must be 2-D.*\(6,\)"):
        precision_at_k(s[0], t, 1)
    with pytest.raises(ValueError, match=r"`targets` must be 2-D.*\(6,\)"):
        precision_at_k(s, t[0], 1)
    with pytest.raises(ValueError, match=r"same shape.*scores \(2, 6\).*targets \(2, 5\)"):
        ndcg_at_k(s, t[:, :5], 1)
    with pytest.raises(ValueError, match=r"`k` must be in \[1, num_labels=6\], got k=7"):
        precision_at_k(s, t, 7)
    with pytest.raises(ValueError, match=r"`k`"):
        precision_at_k(s, t, 0)
    with pytest.raises(
        ValueError, match=r"`inv_propensity` must have shape \(num_labels,\) = \(6,\).*\(5,\)"
    ):
        psp_at_k(s, t, HAND_W[:5], 3)
    with pytest.raises(ValueError, match=r"`label_freqs` must have shape \(num_labels,\) = \(6,\).*\(7,\)"):
        precision_at_k_by_bin(s, t, torch.arange(7), EDGES, 3)
    with pytest.raises(ValueError, match=r"`bin_edges`"):
        precision_at_k_by_bin(s, t, HAND_FREQS, (20, 5), 3)

    metric = XMCMetrics(inv_propensity=HAND_W[:5])
    with pytest.raises(ValueError, match=r"`inv_propensity`.*\(6,\).*\(5,\)"):
        metric.update(s, t)
    with pytest.raises(ValueError, match=r"`k` must be in \[1, num_labels=4\], got k=5"):
        XMCMetrics().update(s[:, :4], t[:, :4])
    with pytest.raises(ValueError, match=r"`inv_propensity` must have shape"):
        XMCMetrics(inv_propensity=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"`inv_propensity` must be non-negative"):
        XMCMetrics(inv_propensity=-HAND_W)
    with pytest.raises(ValueError, match=r"`inv_propensity` must be non-negative"):
        psp_at_k(s, t, -HAND_W, 3)
    with pytest.raises(ValueError, match=r"`ks`"):
        XMCMetrics(ks=())
    with pytest.raises(ValueError, match=r"`label_freqs` must have shape"):
        PrecisionAtKByFrequency(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"`label_freqs`.*\(6,\).*\(7,\)"):
        PrecisionAtKByFrequency(torch.arange(7)).update(s, t)
