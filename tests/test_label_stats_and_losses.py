"""Label statistics and loss heads against direct element-wise formulas (paper eq. 4.6, §4.3.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmtc.data.label_stats import LabelStats, class_balanced, inverse_propensity
from xmtc.losses import NormalLoss, PWCBLoss, PWLoss


def _stats(freqs: list[int], n_docs: int = 1000, a: float = 0.55, b: float = 1.5) -> LabelStats:
    ids = [str(i) for i in range(len(freqs))]
    return LabelStats(ids, ids, np.array(freqs), n_docs, a, b)


def test_inverse_propensity_matches_jain_et_al():
    freqs = np.array([0, 1, 10, 500])
    n, a, b = 14146, 0.5, 0.4  # Wiki10-31K preset
    c = (math.log(n) - 1) * (b + 1) ** a
    expected = [1 + c * (f + b) ** -a for f in freqs]
    np.testing.assert_allclose(inverse_propensity(freqs, n, a, b), expected, rtol=1e-12)
    assert np.all(np.diff(inverse_propensity(freqs, n, a, b)) < 0)  # rarer labels weigh more


@pytest.mark.parametrize("a,b", [(0.55, 1.5), (0.5, 0.4), (0.6, 2.6)])
def test_inverse_propensity_agrees_with_napkinxc(a, b):
    from napkinxc.metrics import Jain_et_al_inverse_propensity

    rng = np.random.default_rng(0)
    y = (rng.random((300, 40)) < rng.random(40) ** 3).astype(np.float64)  # long-tailed, some labels unseen
    freqs = y.sum(axis=0).astype(np.int64)
    np.testing.assert_allclose(inverse_propensity(freqs, y.shape[0], a, b),
                               Jain_et_al_inverse_propensity(y, a, b), rtol=1e-12)


def test_class_balanced_factors():
    freqs = np.array([0, 1, 2, 50])
    got = class_balanced(freqs, beta=0.9)
    assert got[0] == 0.0  # unseen labels get no weight
    assert got[1] == pytest.approx(1.0)  # (1 - b) / (1 - b^1)
    assert got[2] == pytest.approx(0.1 / (1 - 0.81))
    assert got[3] == pytest.approx(0.1 / (1 - 0.9**50))


def _direct(logits, y, w, surrogate):
    s = logits.double()
    if surrogate == "bce":
        p = torch.sigmoid(s)
        pos, neg = -torch.log(p), -torch.log(1 - p)
    else:
        pos, neg = torch.clamp(1 - s, min=0) ** 2, torch.clamp(1 + s, min=0) ** 2
    return (w * y * pos + (1 - y) * neg).mean()


@pytest.mark.parametrize("surrogate", ["bce", "squared_hinge"])
@pytest.mark.parametrize("head", ["normal", "pw", "pwcb"])
def test_loss_heads_equal_elementwise_formula(head, surrogate):
    freqs = [400, 90, 12, 3, 1, 0]
    stats = _stats(freqs)
    loss = {"normal": NormalLoss, "pw": PWLoss, "pwcb": PWCBLoss}[head](surrogate=surrogate, normalize=False)
    loss.resize(len(freqs))
    loss.bind(stats)
    inv_p = torch.tensor(stats.inv_propensity)
    cb = torch.tensor(class_balanced(np.array(freqs), 0.9))
    w = {"normal": torch.ones(len(freqs)), "pw": 2 * inv_p - 1, "pwcb": cb * (2 * inv_p - 1)}[head]
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, len(freqs), generator=g) * 3
    y = (torch.rand(7, len(freqs), generator=g) < 0.4).float()
    assert loss(logits, y).item() == pytest.approx(_direct(logits, y, w, surrogate).item(), rel=1e-5)


def test_terms_are_element_wise_with_weight_one_by_default():
    stats = _stats([300, 40, 2])
    pw = PWLoss()
    pw.bind(stats)
    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    p = torch.sigmoid(logits)
    w = pw.weights().double()
    expected = -(w * y * torch.log(p) + (1 - y) * torch.log(1 - p))
    torch.testing.assert_close(pw.terms(logits, y, pw.weights()), expected)  # in the logits' dtype
    torch.testing.assert_close(pw.terms(logits, y), -(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    torch.testing.assert_close(pw.weights(slice(1, 3)), pw.pos_weight[1:])


def test_only_positive_part_is_reweighted():
    stats = _stats([300, 2])
    pw = PWLoss(normalize=False)
    pw.bind(stats)
    normal = NormalLoss()
    normal.bind(stats)
    logits = torch.tensor([[0.3, -1.2]])
    negatives = torch.zeros(1, 2)
    assert pw(logits, negatives).item() == pytest.approx(normal(logits, negatives).item())
    positives = torch.ones(1, 2)
    assert pw(logits, positives).item() > normal(logits, positives).item()


def test_normalized_weights_average_one_over_seen_labels():
    stats = _stats([500, 40, 5, 1, 0])
    head = PWCBLoss()
    head.bind(stats)
    w = head.pos_weight
    assert w[:4].mean().item() == pytest.approx(1.0)
    assert w[4].item() == 0.0
    assert torch.all(w[:4].diff() > 0)  # tail labels get the larger positive weight


def test_label_index_selects_weight_subset():
    stats = _stats([50, 20, 5, 1])
    head = PWLoss()
    head.bind(stats)
    logits = torch.randn(3, 4)
    y = torch.ones(3, 4)
    idx = torch.tensor([1, 3])
    expected = _direct(logits[:, idx], y[:, idx], head.pos_weight[idx], "bce")
    assert head(logits[:, idx], y[:, idx], label_index=idx).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="surrogate"):
        NormalLoss(surrogate="hinge")
    with pytest.raises(ValueError, match="beta"):
        PWCBLoss(beta=1.0)
    head = NormalLoss()
    head.resize(3)
    with pytest.raises(ValueError, match="differ"):
        head(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="3 label weights"):
        head(torch.zeros(2, 4), torch.zeros(2, 4))


def test_positives_normalization_gives_the_positive_part_the_normal_mass():
    freqs = [500, 40, 5, 1, 0]
    stats = _stats(freqs)
    by_labels, by_positives, raw = PWCBLoss(), PWCBLoss(normalize="positives"), PWCBLoss(normalize=False)
    for head in (by_labels, by_positives, raw):
        head.bind(stats)
    n = torch.tensor(freqs, dtype=torch.float32)
    assert (n * by_positives.pos_weight).sum().item() == pytest.approx(n.sum().item(), rel=1e-5)
    # the same spread over labels, only the scale differs
    ratio = by_positives.pos_weight[:4] / raw.pos_weight[:4]
    assert torch.allclose(ratio, ratio[:1].expand(4))
    assert (n * by_labels.pos_weight).sum().item() < 0.5 * n.sum().item()  # head labels dominate the positives
    assert by_positives.pos_weight[4].item() == 0.0
    assert PWCBLoss(normalize=True).normalize == "labels" and PWLoss(normalize=False).normalize == "none"
    with pytest.raises(ValueError, match="normalize"):
        PWLoss(normalize="mean")


@pytest.mark.parametrize("surrogate", ["bce", "squared_hinge"])
@pytest.mark.parametrize("head", [NormalLoss, PWLoss, PWCBLoss])
def test_prior_scores_are_the_best_constant_scores(head, surrogate):
    """The weighted loss of a model that outputs one constant score per label is flat there (gradient 0)."""
    freqs, n_docs = [60, 12, 3, 1], 80
    stats = _stats(freqs, n_docs=n_docs)
    loss = head(surrogate=surrogate)
    loss.bind(stats)
    targets = torch.zeros(n_docs, len(freqs))
    for j, n in enumerate(freqs):
        targets[:n, j] = 1.0
    prior = loss.prior_scores(stats).requires_grad_(True)
    loss(prior.expand(n_docs, -1), targets).backward()
    assert prior.grad.abs().max().item() < 1e-6
    moved = (prior.detach() + 0.05).requires_grad_(True)  # and it is a minimum, not any point
    assert loss(moved.expand(n_docs, -1), targets).item() > loss(prior.detach().expand(n_docs, -1), targets).item()
    if head is not NormalLoss:  # the weights move the rare labels' starting scores up against the frequent ones'
        normal = NormalLoss(surrogate=surrogate)
        normal.bind(stats)
        shift = loss.prior_scores(stats) - normal.prior_scores(stats)
        if surrogate == "bce":  # exactly log w_j: monotone like the weights
            assert torch.allclose(shift, loss.pos_weight.log(), atol=1e-5)
        assert shift[-1] > shift[0]
