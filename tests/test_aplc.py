"""APLC-XLNet: the APLC head against its definitions, the model with a tiny XLNet and a project-trained tokenizer,
and the CLI from fit to predict on toy data in APLC's CSV form."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import single_thread
from toydata import DEMO, REPO, toy_corpus

from xmtc.cli import main
from xmtc.data.label_stats import LabelStats
from xmtc.data.readers import read_split
from xmtc.data.tokenizer import WordTokenizer
from xmtc.data.train_tokenizer import train_unigram_tokenizer
from xmtc.losses import NormalLoss, PWCBLoss, PWLoss
from xmtc.models import APLCXLNet
from xmtc.models.aplc_head import APLCHead, resolve_cutoffs

TINY_XLNET = {"d_model": 32, "n_layer": 1, "n_head": 2, "d_inner": 64, "dropout": 0.0}


def _stats(freqs: list[int], num_docs: int = 100) -> LabelStats:
    ids = [f"l{i}" for i in range(len(freqs))]
    return LabelStats(label_ids=ids, label_names=ids, freqs=np.asarray(freqs), num_train_docs=num_docs,
                      propensity_a=0.55, propensity_b=1.5)


FREQS = [60, 50, 40, 30, 20, 12, 8, 5, 3, 2, 1, 1]  # 12 labels, most frequent first


@pytest.fixture(scope="module")
def subword_dir(tmp_path_factory) -> Path:
    """A Unigram tokenizer trained by the project on toy + demo documents (no download)."""
    texts, _ = toy_corpus(240, 0)
    tok = train_unigram_tokenizer(read_split(DEMO, "train").texts[:200] + texts, vocab_size=500, max_length=64)
    path = tmp_path_factory.mktemp("tok") / "tok"
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(subword_dir):
    from xmtc.data.subword import load_subword_tokenizer

    return load_subword_tokenizer(str(subword_dir), max_length=64)


# --------------------------------------------------------------------------- cutoffs


def test_cutoffs_as_counts_or_fractions():
    assert resolve_cutoffs([15469], 30938) == [15469]
    assert resolve_cutoffs([15469.0], 30938) == [15469]  # YAML / CLI numbers may arrive as floats
    assert resolve_cutoffs([0.5], 30938) == [15469]
    assert resolve_cutoffs([0.25, 0.5, 0.75], 670091) == [167523, 335046, 502568]


@pytest.mark.parametrize("cutoffs, match", [
    ([6, 3], "strictly increasing"),
    ([3, 3], "strictly increasing"),
    ([0.6, 0.3], "strictly increasing"),
    ([12], r"1\.\.11"),
    ([0], r"1\.\.11"),
    ([-2], r"1\.\.11"),
    ([0.99], r"1\.\.11"),  # rounds to all 12 labels: no tail left
    ([0.5, 7], "not a mix"),
    ([], "at least one cutoff"),
])
def test_bad_cutoffs_are_refused(cutoffs, match):
    with pytest.raises(ValueError, match=match):
        APLCHead(8, 12, cutoffs=cutoffs)


# --------------------------------------------------------------------------- the head against its definitions


def _head(tail_loss: str = "joint", seed: int = 0) -> APLCHead:
    torch.manual_seed(seed)
    head = APLCHead(16, 12, cutoffs=[4, 8], tail_loss=tail_loss).double()
    head.head.weight.data.mul_(3.0)  # spread the scores so that products differ visibly from their factors
    return head


def _targets(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(6, 12, generator=g) < 0.2).double()
    y[0] = 0.0
    y[0, 1] = 1.0  # row 0: head only
    y[1, :8] = 0.0
    y[1, 9] = 1.0  # row 1: last cluster only
    y[:, 4:8][2:] = 0.0  # cluster 1 active in rows 0-1 at most (here: none)
    return y


def test_head_layout_and_projections():
    head = APLCHead(768, 30938, cutoffs=[0.5], div_value=2.0)
    assert head.bounds == [0, 15469, 30938] and head.cluster_sizes == [15469]
    assert head.head.out_features == 15469 + 1  # shortlist + one root per tail cluster
    assert head.tails[0][0].out_features == 384 and isinstance(head.tails[0][1], torch.nn.LayerNorm)
    quarters = APLCHead(512, 1000, cutoffs=[0.25, 0.5, 0.75])
    assert [t[0].out_features for t in quarters.tails] == [256, 128, 64]


def test_scores_are_probabilities_root_times_conditional():
    head = _head().eval()
    h = torch.randn(5, 16, dtype=torch.float64)
    scores = torch.sigmoid(head(h))
    assert scores.shape == (5, 12) and bool(((scores >= 0) & (scores <= 1)).all())
    z = head.head(h)
    assert torch.allclose(scores[:, :4], torch.sigmoid(z[:, :4]))
    for i, (lo, hi) in enumerate([(4, 8), (8, 12)]):
        expected = torch.sigmoid(z[:, 4 + i:5 + i]) * torch.sigmoid(head.tails[i](h))
        assert torch.allclose(scores[:, lo:hi], expected, atol=1e-12)
        assert bool((scores[:, lo:hi] <= torch.sigmoid(z[:, 4 + i:5 + i]) + 1e-12).all())  # never above the root


def test_label_prior_init_starts_every_score_at_its_training_frequency():
    freqs, num_docs = np.array([50, 40, 30, 20, 9, 8, 7, 6, 3, 2, 1, 1]), 100
    head = APLCHead(16, 12, cutoffs=[4, 8], label_bias=True).double()
    head.init_label_prior(freqs, num_docs)
    for layer in [head.head, *(t[0] for t in head.tails)]:
        torch.nn.init.zeros_(layer.weight)  # scores from the biases alone
    h = torch.randn(3, 16, dtype=torch.float64)
    scores = torch.sigmoid(head(h))
    torch.testing.assert_close(scores, torch.from_numpy(freqs / num_docs).expand(3, 12))  # root x conditional
    q = 1 - np.prod(1 - freqs[4:8] / num_docs)  # the first cluster's root: some label of it is positive
    assert float(torch.sigmoid(head.head.bias[4])) == pytest.approx(q)
    labels = torch.tensor([9, 0, 5])
    torch.testing.assert_close(head(h, labels), head(h)[:, labels])  # the subset path has the biases too
    with pytest.raises(ValueError, match="label_bias=True"):
        APLCHead(16, 12, cutoffs=[4, 8]).init_label_prior(freqs, num_docs)
    # with the loss head's weights every label's odds are multiplied by its weight; the roots keep theirs
    weights = np.linspace(0.5, 4.0, 12)
    weighted = APLCHead(16, 12, cutoffs=[4, 8], label_bias=True).double()
    weighted.load_state_dict(head.state_dict())
    weighted.init_label_prior(freqs, num_docs, weights)
    odds = lambda b: torch.exp(b)  # noqa: E731
    torch.testing.assert_close(odds(weighted.head.bias[:4]), odds(head.head.bias[:4]) * torch.from_numpy(weights[:4]))
    torch.testing.assert_close(weighted.head.bias[4:], head.head.bias[4:])
    for i, (lo, hi) in enumerate([(4, 8), (8, 12)]):
        torch.testing.assert_close(odds(weighted.tails[i][-1].bias),
                                   odds(head.tails[i][-1].bias) * torch.from_numpy(weights[lo:hi]))


def _unweighted(surrogate: str = "bce", num_labels: int = 12) -> NormalLoss:
    """The normal loss head (every label weight 1) sized for ``num_labels``."""
    loss = NormalLoss(surrogate=surrogate)
    loss.resize(num_labels)
    return loss


def test_extreme_logits_stay_finite():
    head = _head()
    h = 1e4 * torch.randn(3, 16, dtype=torch.float64)
    logits = head(h)
    assert bool(torch.isfinite(logits).all())
    assert bool(torch.isfinite(head.loss(h, _targets()[:3], _unweighted())).all())


def test_forward_with_labels_equals_full_then_index():
    head = _head().eval()
    h = torch.randn(4, 16, dtype=torch.float64)
    full = head(h)
    for labels in ([0], [11], [9, 0, 5, 5, 3], list(range(12)), [7, 6]):
        idx = torch.tensor(labels)
        assert torch.allclose(head(h, idx), full[:, idx], atol=1e-12)
    assert head(h, torch.tensor([], dtype=torch.long)).shape == (4, 0)


def test_label_outside_the_training_label_space_is_refused():
    with pytest.raises(ValueError, match="seen in training"):
        _head()(torch.randn(2, 16, dtype=torch.float64), torch.tensor([3, 12]))


def _reference_loss(head: APLCHead, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, mode: str) -> float:
    """The APLC loss term by term, row by row, from its definition (slow, independent of the vectorised code)."""
    z = head.head(h)
    s, bounds = head.shortlist, head.bounds
    total = 0.0
    for b in range(h.shape[0]):
        terms = []
        for j in range(s):
            terms.append(w[j] * y[b, j] * F.softplus(-z[b, j]) + (1 - y[b, j]) * F.softplus(z[b, j]))
        for c in range(head.num_clusters):
            lo, hi = bounds[c + 1], bounds[c + 2]
            r = z[b, s + c]
            active = bool(y[b, lo:hi].sum() > 0)
            if mode == "conditional":
                terms.append(F.softplus(-r) if active else F.softplus(r))
            elif not active:
                terms.append(F.softplus(r))
            if not active:
                continue
            t = head.tails[c](h[b:b + 1])[0]
            for j in range(lo, hi):
                if mode == "joint":
                    p = torch.sigmoid(r) * torch.sigmoid(t[j - lo])
                    terms.append(-(w[j] * y[b, j] * torch.log(p) + (1 - y[b, j]) * torch.log(1 - p)))
                else:
                    terms.append(w[j] * y[b, j] * F.softplus(-t[j - lo]) + (1 - y[b, j]) * F.softplus(t[j - lo]))
        total += float(sum(terms).detach()) / len(terms)
    return total / h.shape[0]


@pytest.mark.parametrize("mode", ["joint", "conditional"])
@pytest.mark.parametrize("loss_cls", [NormalLoss, PWLoss, PWCBLoss])
def test_loss_matches_its_element_wise_definition(mode, loss_cls):
    head = _head(mode)
    loss = loss_cls()
    loss.bind(_stats(FREQS), groups=head.bounds)
    w = loss.pos_weight.double()
    h = torch.randn(6, 16, dtype=torch.float64)
    y = _targets()
    got = float(head.loss(h, y, loss).detach())
    assert got == pytest.approx(_reference_loss(head, h, y, w, mode), rel=1e-9)


def test_tail_loss_only_on_rows_with_a_positive_in_the_cluster():
    head = _head()
    y = _targets()
    assert not bool(y[:, 4:8].any())  # cluster 0 (labels 4..7) has no positive in the batch
    h = torch.randn(6, 16, dtype=torch.float64, requires_grad=True)
    head.loss(h, y, _unweighted()).backward()
    assert all(p.grad is None for p in head.tails[0].parameters())  # never computed
    assert all(p.grad is not None for p in head.tails[1].parameters())
    # a row's loss does not depend on the tail clusters it has no positive in
    rows_in_last = y[:, 8:].any(dim=1)
    before = head.loss(h, y, _unweighted())
    with torch.no_grad():
        head.tails[1][-1].weight.add_(1.0)
    after = head.loss(h, y, _unweighted())
    assert rows_in_last.any() and not torch.isclose(before, after)
    assert torch.equal(head.active_clusters(y), torch.stack([y[:, 4:8].any(1), y[:, 8:].any(1)], dim=1))


def test_pw_weights_are_normalised_within_each_cluster():
    stats = _stats(FREQS)
    bounds = [0, 4, 8, 12]
    for loss in (PWLoss(), PWCBLoss(beta=0.9)):
        raw = np.asarray(loss.label_weights(stats))  # the element-wise formula: (2/p - 1), times C_j for PW-cb
        loss.bind(stats, groups=bounds)
        w = loss.pos_weight.double().numpy()
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            assert w[lo:hi].mean() == pytest.approx(1.0)
            assert np.allclose(w[lo:hi], raw[lo:hi] / raw[lo:hi].mean())  # same ratios as the formula
    assert torch.allclose(NormalLoss().pos_weight.new_ones(12), _bound(NormalLoss(), stats, bounds))


def _bound(loss, stats, bounds):
    loss.bind(stats, groups=bounds)
    return loss.pos_weight


def _focal_term(s: torch.Tensor, y: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    """A focal loss term (Lin et al., 2017, gamma 2) of one logit, written from its definition."""
    p = torch.sigmoid(s)
    return -(w * y * (1 - p) ** 2 * torch.log(p) + (1 - y) * p ** 2 * torch.log(1 - p))


def _bce_term(s: torch.Tensor, y: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    p = torch.sigmoid(s)
    return -(w * y * torch.log(p) + (1 - y) * torch.log(1 - p))


class _FocalLoss(PWLoss):
    """A loss head with terms of its own (vectorised and stable, unlike ``_focal_term``)."""

    def terms(self, logits, targets, weight=1.0):
        p = torch.sigmoid(logits)
        y = targets.to(p.dtype)
        return weight * y * (1 - p) ** 2 * F.softplus(-logits) + (1 - y) * p ** 2 * F.softplus(logits)


class _AffineLoss(PWLoss):
    """Every term of the PW loss times 3, plus 0.5: a mean of such terms is 3 * the PW loss + 0.5."""

    def terms(self, logits, targets, weight=1.0):
        return 3.0 * super().terms(logits, targets, weight) + 0.5


def _reference_loss_of_terms(head: APLCHead, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, mode: str,
                             term) -> float:
    """The APLC loss from its definition for any element-wise ``term(logit, y, w)``, row by row: shortlist
    labels weighted, roots with weight 1 (target: the cluster is active; joint: only on inactive rows), the
    labels of active clusters on the logit of their score (joint: of sigmoid(root) * sigmoid(tail))."""
    z = head.head(h)
    s, bounds = head.shortlist, head.bounds
    total = 0.0
    for b in range(h.shape[0]):
        terms = [term(z[b, j], y[b, j], w[j]) for j in range(s)]
        for c in range(head.num_clusters):
            lo, hi = bounds[c + 1], bounds[c + 2]
            r = z[b, s + c]
            active = bool(y[b, lo:hi].sum() > 0)
            if mode == "conditional" or not active:
                terms.append(term(r, float(active), 1.0))
            if not active:
                continue
            t = head.tails[c](h[b:b + 1])[0]
            for j in range(lo, hi):
                if mode == "joint":
                    p = torch.sigmoid(r) * torch.sigmoid(t[j - lo])
                    logit = torch.log(p) - torch.log(1 - p)
                else:
                    logit = t[j - lo]
                terms.append(term(logit, y[b, j], w[j]))
        total += float(sum(terms).detach()) / len(terms)
    return total / h.shape[0]


@pytest.mark.parametrize("mode", ["joint", "conditional"])
def test_a_loss_head_with_terms_of_its_own_changes_aplc_as_it_changes_the_full_layer(mode):
    head = _head(mode)
    stats = _stats(FREQS)
    h = torch.randn(6, 16, dtype=torch.float64)
    y = _targets()
    pw, focal, affine = PWLoss(), _FocalLoss(), _AffineLoss()
    for loss in (pw, focal, affine):
        loss.bind(stats, groups=head.bounds)
    w = pw.pos_weight.double()
    # the reference for any term is the one from the APLC definition when the term is cross-entropy
    assert _reference_loss_of_terms(head, h, y, w, mode, _bce_term) == pytest.approx(
        _reference_loss(head, h, y, w, mode), rel=1e-9)
    # a focal loss head: APLC and the full sigmoid layer both apply its terms
    assert float(head.loss(h, y, focal).detach()) == pytest.approx(
        _reference_loss_of_terms(head, h, y, w, mode, _focal_term), rel=1e-9)
    logits = 3 * torch.randn(6, 12, dtype=torch.float64)
    full_focal = torch.stack([_focal_term(logits[b, j], y[b, j], w[j]) for b in range(6) for j in range(12)]).mean()
    assert float(focal(logits, y)) == pytest.approx(float(full_focal), rel=1e-5)  # forward runs in float32
    # terms changed by an affine map change both losses by that map (every loss is a mean of terms)
    assert float(head.loss(h, y, affine).detach()) == pytest.approx(3 * float(head.loss(h, y, pw).detach()) + 0.5,
                                                                    rel=1e-12)
    assert float(affine(logits, y)) == pytest.approx(3 * float(pw(logits, y)) + 0.5, rel=1e-6)


def test_joint_loss_needs_cross_entropy():
    from xmtc.losses import NormalLoss as N

    head = _head()
    with pytest.raises(ValueError, match="conditional"):
        head.loss(torch.randn(2, 16, dtype=torch.float64), _targets()[:2], _unweighted("squared_hinge"))
    cond = _head("conditional")
    value = cond.loss(torch.randn(2, 16, dtype=torch.float64), _targets()[:2], _unweighted("squared_hinge"))
    assert math.isfinite(float(value.detach()))
    assert N(surrogate="squared_hinge").surrogate == "squared_hinge"


# --------------------------------------------------------------------------- the model with a tiny XLNet


def _model(tokenizer, **kw) -> APLCXLNet:
    torch.manual_seed(0)
    return APLCXLNet(tokenizer=tokenizer, label_stats=_stats(FREQS), encoder_config=TINY_XLNET, cutoffs=[4, 8], **kw)


def test_model_prior_bias_is_the_label_prior(tokenizer):
    model = _model(tokenizer, prior_bias=True)
    p = FREQS[0] / 100
    assert float(model.head.head.bias[0]) == pytest.approx(math.log(p / (1 - p)), rel=1e-5)
    assert _model(tokenizer).head.head.bias is None  # APLC-XLNet as published: no head bias


def test_model_weights_are_bound_per_cluster(tokenizer):
    model = _model(tokenizer, loss=PWLoss())
    w = model.loss.pos_weight
    assert [round(float(w[a:b].mean()), 6) for a, b in ((0, 4), (4, 8), (8, 12))] == [1.0, 1.0, 1.0]


def test_model_loss_is_its_loss_heads(tokenizer):
    texts = ["milk cheese butter cows", "The council adopted the regulation on fishing quotas .", "tax"]
    y = torch.zeros(3, 12)
    y[0, [0, 5]] = 1.0
    y[1, 10] = 1.0
    y[2, 2] = 1.0
    with single_thread():
        pw, affine = (_model(tokenizer, loss=loss).eval() for loss in (PWLoss(), _AffineLoss()))
        loss_pw, _ = pw.compute_loss(pw.encode(texts), y)
        loss_affine, _ = affine.compute_loss(affine.encode(texts), y)
    assert float(loss_affine) == pytest.approx(3 * float(loss_pw) + 0.5, rel=1e-5)


def test_model_scores_subsets_and_padding(tokenizer):
    model = _model(tokenizer).eval()
    texts = ["milk cheese butter cows", "The council adopted the regulation on fishing quotas . " * 3, "tax"]
    with single_thread():
        full = model.score_texts(texts)
        assert full.shape == (3, 12) and bool(((full >= 0) & (full <= 1)).all())
        labels = [11, 2, 6]
        assert torch.allclose(model.score_texts(texts, labels=labels), full[:, labels], atol=1e-6)
        # left padding: a short text scores the same alone as next to a long one
        assert torch.allclose(model.score_texts(texts[2:]), full[2:], atol=1e-5)
    enc = model.encode(texts)
    assert int(enc["input_ids"][2, -1]) == tokenizer.cls_token_id and int(enc["attention_mask"][2, 0]) == 0


def test_mean_pooled_summary_ignores_padding_and_is_the_mean_of_real_tokens(tokenizer):
    model = _model(tokenizer, summary_pooling="mean").eval()
    texts = ["milk cheese butter cows", "The council adopted the regulation on fishing quotas . " * 3, "tax"]
    with single_thread():
        together = model.score_texts(texts)
        torch.testing.assert_close(model.score_texts(texts[2:]), together[2:], atol=1e-5, rtol=0)
        inputs = model.encode(texts[:1])
        states = model.encoder(**inputs, use_mems=False).last_hidden_state
        torch.testing.assert_close(model.summarise(inputs), model.summary(states.mean(1)), atol=1e-6, rtol=0)
    assert not torch.allclose(together, _model(tokenizer).eval().score_texts(texts))  # not the last token
    with pytest.raises(ValueError, match="summary_pooling"):
        _model(tokenizer, summary_pooling="max")


def test_word_tokenizer_is_refused(tokenizer):
    with pytest.raises(TypeError, match="data.init_args.tokenizer"):
        APLCXLNet(tokenizer=WordTokenizer(["<pad>", "<unk>", "a"]), label_stats=_stats(FREQS),
                  encoder_config=TINY_XLNET)


def test_tokenizer_larger_than_the_encoder_is_refused(tokenizer):
    with pytest.raises(ValueError, match="embeddings"):
        APLCXLNet(tokenizer=tokenizer, label_stats=_stats(FREQS), encoder_config={**TINY_XLNET, "vocab_size": 50})


def test_missing_pretrained_encoder_is_explained(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="xlnet-base-cased"):
        APLCXLNet(tokenizer=tokenizer, label_stats=_stats(FREQS), encoder=str(tmp_path / "no-xlnet"))


def test_more_positive_labels_than_expected_is_refused(tokenizer):
    model = _model(tokenizer, max_positives=2)
    targets = torch.zeros(3, 12)
    targets[1, :3] = 1.0
    batch = {"index": torch.tensor([7, 8, 9]), "texts": ["a", "b", "c"], "targets": targets}
    with pytest.raises(ValueError, match=r"document 8 .* 3 positive labels, more than .*max_positives=2"):
        model.on_before_batch_transfer(batch, 0)
    targets[1, 2] = 0.0
    assert "inputs" in model.on_before_batch_transfer(batch, 0)


def test_pretrained_encoder_loads_from_a_local_directory(tokenizer, tmp_path):
    from transformers import XLNetConfig, XLNetModel

    torch.manual_seed(1)
    saved = XLNetModel(XLNetConfig(vocab_size=len(tokenizer), **TINY_XLNET))
    saved.save_pretrained(str(tmp_path / "xlnet"))
    model = APLCXLNet(tokenizer=tokenizer, label_stats=_stats(FREQS), encoder=str(tmp_path / "xlnet"))
    assert torch.equal(model.encoder.word_embedding.weight, saved.word_embedding.weight)


def test_three_learning_rates_and_linear_schedule(tokenizer):
    import lightning as L

    model = _model(tokenizer, lr_encoder=1e-5, lr_summary=1e-4, lr_head=1e-3, weight_decay=0.01, warmup=0.5)
    trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model.trainer = trainer
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    lrs = sorted({g["initial_lr"] for g in opt.param_groups})
    assert lrs == [1e-5, 1e-4, 1e-3]
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    plain = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    norms = [m.weight for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert norms and all(id(p) in plain for p in norms)  # no weight decay on LayerNorm weights and biases
    assert linears and not any(id(p) in plain for p in linears)
    assert opt.param_groups[0]["lr"] == 0.0  # warmup starts at 0
    for _ in range(5):
        opt.step()
        sched.step()
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(1e-3)  # peak after 5 of 10 steps
    for _ in range(5):
        opt.step()
        sched.step()
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.0)


# --------------------------------------------------------------------------- CLI on toy data in APLC's CSV form


def _write_aplc_csv(root: Path, splits: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for i, (split, n) in enumerate(splits.items()):
        texts, labels = toy_corpus(n, i)
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "label"])
            for j, (t, y) in enumerate(zip(texts, labels, strict=True)):
                w.writerow([f"{split}{j}", t, ",".join(y)])
                names.update(y)
    (root / "labels.txt").write_text("".join(n + "\n" for n in sorted(names)), encoding="utf-8")
    return root


def _cli(sub: str, data: Path, logs: Path, tok: Path, *extra: str) -> list[str]:
    return [sub, f"--config={REPO / 'configs' / 'demo_aplc.yaml'}", f"--data.init_args.data_dir={data}",
            f"--data.init_args.tokenizer={tok}", "--data.init_args.max_length=48", "--data.init_args.batch_size=16",
            "--data.init_args.val_split=dev", "--data.init_args.test_split=dev",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--model.init_args.encoder_config.d_model=32",
            "--model.init_args.encoder_config.n_layer=1", "--model.init_args.encoder_config.n_head=2",
            "--model.init_args.encoder_config.d_inner=64", "--model.init_args.encoder_config.dropout=0.0",
            "--model.init_args.cutoffs=[2, 4]", "--model.init_args.lr_encoder=0.003",
            "--model.init_args.lr_summary=0.003", "--model.init_args.lr_head=0.01", "--model.init_args.warmup=0",
            "--model.init_args.max_positives=2", *extra]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, subword_dir) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("aplc_e2e")
    data = _write_aplc_csv(root / "toy", {"train": 240, "dev": 60})
    with single_thread():
        main(_cli("fit", data, root / "logs", subword_dir, "--trainer.max_epochs=5"))
    return data, root / "logs", next((root / "logs").rglob("last.ckpt"))


def test_cli_fit_learns_the_toy_task(fitted):
    _, logs, _ = fitted
    with open(next(logs.rglob("metrics.csv")), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/P@1"]) for r in rows if r.get("val/P@1")]
    assert len(val) == 5 and val[-1] > 0.8, val  # two of five labels decide P@1: chance is about 0.3


def test_cli_test_and_predict_from_the_checkpoint(fitted, subword_dir, tmp_path):
    data, _, ckpt = fitted
    with single_thread():
        cli = main(_cli("test", data, tmp_path, subword_dir, f"--ckpt_path={ckpt}"))
    assert cli.trainer.callback_metrics["test/P@1"] > 0.8
    texts, labels = toy_corpus(20, seed=11)
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    with single_thread():
        main(_cli("predict", data, tmp_path, subword_dir, f"--ckpt_path={ckpt}",
                  f"--data.init_args.predict_file={docs}",
                  "--trainer.callbacks+=xmtc.prediction_writer.JsonlPredictionWriter",
                  f"--trainer.callbacks.output={out}", "--trainer.callbacks.top_k=2"))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == list(range(20)) and all(len(r["labels"]) == 2 for r in rows)
    hits = [r["labels"][0] in y for r, y in zip(rows, labels, strict=True)]
    assert sum(hits) >= 16, hits


def test_checkpoint_alone_scores_raw_texts(fitted):
    _, _, ckpt = fitted
    model = APLCXLNet.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.tokenizer is not None and model.head.bounds == [0, 2, 4, 5]
    texts, labels = toy_corpus(20, seed=12)
    with single_thread():
        scores = model.score_texts(texts, batch_size=8)
        assert torch.allclose(scores[:3], model.score_texts(texts[:3]), atol=1e-5)  # batching does not matter
    names = model.label_stats.label_ids
    hits = [names[i] in y for i, y in zip(scores.argmax(dim=1).tolist(), labels, strict=True)]
    assert sum(hits) >= 16, hits
    assert bool(((scores >= 0) & (scores <= 1)).all())


def test_checkpoint_refuses_another_tokenizer(fitted, tmp_path):
    data, _, ckpt = fitted
    texts, _ = toy_corpus(200, 3)
    other = train_unigram_tokenizer(read_split(DEMO, "train").texts[200:300] + texts, vocab_size=300)
    other.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        main(_cli("validate", data, tmp_path, tmp_path / "other", f"--ckpt_path={ckpt}",
                  "--model.init_args.max_positives=null"))


def test_mixed_precision_keeps_scores_and_loss_in_float32(tokenizer):
    model = _model(tokenizer)
    inputs = model.encode(["milk cheese butter cows", "tax customs duty"])
    targets = torch.zeros(2, 12)
    targets[0, [1, 9]] = 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.compute_loss(inputs, targets)
        logits = model(inputs)
        subset = model(inputs, labels=torch.tensor([9, 1]))
    assert loss.dtype == logits.dtype == subset.dtype == torch.float32
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(logits).all())
    loss.backward()
    assert model.encoder.word_embedding.weight.grad is not None


@pytest.mark.slow
def test_ddp_two_processes_train_with_the_paper_configs_strategy(fitted, subword_dir, tmp_path):
    """2-process gloo DDP fit with the strategy of the paper configs (a tail cluster without positives in a
    rank's batch gets no gradient there): it learns as the single-process fit does, rank 0 writes the
    checkpoint, and the checkpoint scores raw text."""
    data, _, _ = fitted
    logs = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "xmtc", *_cli("fit", data, logs, subword_dir, "--trainer.max_epochs=5"),
           "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true",
           "--data.init_args.batch_size=8"]  # 2 ranks x 8: the single-process fit's 16 documents a step
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(next(logs.rglob("metrics.csv")), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/P@1"]) for r in rows if r.get("val/P@1")]
    assert len(val) == 5 and val[-1] > 0.8, val
    model = APLCXLNet.load_from_checkpoint(next(logs.rglob("last.ckpt")), map_location="cpu")
    texts, labels = toy_corpus(20, seed=12)
    names = model.label_stats.label_ids
    with single_thread():
        top = model.score_texts(texts).argmax(dim=1).tolist()
    assert sum(names[i] in y for i, y in zip(top, labels, strict=True)) >= 16
