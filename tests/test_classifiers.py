"""The model protocol of the attack engine (xmtc.attack.classifier): xmtc's models, any Python callable and
a Hugging Face multilabel sequence classifier as targets; the last one trained here and attacked end to end."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from tiny_models import single_thread
from toydata import DEMO, toy_corpus

from xmtc.attack.classifier import (
    CallableClassifier,
    HuggingFaceClassifier,
    LogitCallableClassifier,
    TextClassifier,
    WordGradients,
    as_classifier,
    supports_word_gradients,
)
from xmtc.attack.goal import TargetedGoal
from xmtc.attack.importance import gradient_importance
from xmtc.data.label_stats import LabelStats
from xmtc.data.readers import read_split
from xmtc.data.tokenizer import WordTokenizer
from xmtc.errors import ModelPathError, UserError
from xmtc.models import APLCXLNet, AttentionXML

TINY_XLNET = {"d_model": 16, "n_layer": 1, "n_head": 2, "d_inner": 32, "dropout": 0.0}


def _stats(n: int) -> LabelStats:
    ids = [f"l{i}" for i in range(n)]
    return LabelStats(ids, [i.upper() for i in ids], np.arange(n, 0, -1) * 5, 100, 0.55, 1.5)


@pytest.fixture(scope="module")
def demo_texts() -> tuple[list[str], list[str]]:
    """Real EURLEX57K demo documents: 300 to build tokenizers from, 60 held out to cut."""
    return read_split(DEMO, "train").texts[:300], read_split(DEMO, "test").texts[:60]


@pytest.fixture(scope="module")
def axml(demo_texts) -> AttentionXML:
    torch.manual_seed(0)
    tok = WordTokenizer.build(demo_texts[0], max_length=200)  # the demo config's max_length
    return AttentionXML(tokenizer=tok, label_stats=_stats(4), embedding_dim=8, hidden_size=8, linear_sizes=[8])


@pytest.fixture(scope="module")
def aplc(demo_texts) -> APLCXLNet:
    from xmtc.data.train_tokenizer import train_unigram_tokenizer

    tok = train_unigram_tokenizer(demo_texts[0], vocab_size=400, max_length=96)
    torch.manual_seed(0)
    return APLCXLNet(tokenizer=tok, label_stats=_stats(4), encoder_config=TINY_XLNET, cutoffs=[2])


# -- xmtc's models --


def test_xmtc_models_are_classifiers(axml, aplc) -> None:
    for model in (axml, aplc):
        assert isinstance(model, TextClassifier) and as_classifier(model) is model
        assert model.label_ids == ["l0", "l1", "l2", "l3"]
        assert TargetedGoal(model).partial and TargetedGoal(model).space == "logit"
        assert model.visible_text("a short text") == ("a short text", "")
        with single_thread():
            assert model.score_texts(["fishing quotas", "milk"], labels=[3, 1]).shape == (2, 2)
    assert supports_word_gradients(axml) and isinstance(axml, WordGradients)
    assert not supports_word_gradients(aplc)


def test_visible_text_cuts_demo_documents_to_what_the_models_read(axml, aplc, demo_texts) -> None:
    for model in (axml, aplc):
        results = [model.visible_text(t) for t in demo_texts[1]]
        cut = [(t, r) for t, r in zip(demo_texts[1], results, strict=True) if r[1]]
        assert len(cut) > len(results) // 2  # demo documents are longer than both limits
        for text, (visible, note) in cut:
            assert text.split()[:len(visible.split())] == visible.split() and "model limit" in note
    # what AttentionXML reads of the visible part is what it reads of the whole document, and one word more
    # would not fit; APLC-XLNet's visible part fits its tokenizer's limit and one word more would not
    for text in demo_texts[1][:20]:
        visible = axml.visible_text(text)[0].split()
        assert np.array_equal(axml.tokenizer.encode(" ".join(visible)), axml.tokenizer.encode(text))
        if len(visible) < len(text.split()):
            longer = " ".join(text.split()[:len(visible) + 1])
            assert len(axml.tokenizer.words(longer)) > axml.tokenizer.max_length
        visible = aplc.visible_text(text)[0].split()
        limit = aplc.tokenizer.model_max_length
        assert len(aplc.tokenizer(" ".join(visible))["input_ids"]) <= limit
        if len(visible) < len(text.split()):
            assert len(aplc.tokenizer(" ".join(text.split()[:len(visible) + 1]))["input_ids"]) > limit


def test_attentionxml_word_gradients_are_gradient_importance_without_stop_words(axml) -> None:
    text = "The Council's fishing-quota regulation , on the catch of cod in zzzunknown waters --"
    words = text.split()
    axml.train()
    grads = axml.word_gradients(text, [1, 2])
    assert grads.dtype == torch.float64 and grads.shape == (len(words),) and axml.training
    assert all(p.grad is None for p in axml.parameters())
    assert grads[words.index(",")] == 0 and grads[-1] == 0 and bool((grads[:3] > 0).all())
    reference = gradient_importance(axml, text, [1, 2])
    finite = torch.isfinite(reference)
    assert not bool(finite.all()) and torch.equal(grads[finite], reference[finite])
    assert bool(torch.isfinite(grads).all())  # stop words are the engine's business


def test_attentionxml_word_gradients_past_max_length_are_zero(axml, demo_texts) -> None:
    text = demo_texts[1][0]
    visible, note = axml.visible_text(text)
    assert note
    grads = axml.word_gradients(text, [0])
    kept = len(visible.split())
    assert bool((grads[kept:] == 0).all()) and int((grads[:kept] > 0).sum()) > kept // 2


def test_checkpoint_state_keeps_its_layout(axml, aplc) -> None:
    for model, key in ((axml, "tokenizer"), (aplc, "subword_tokenizer")):
        checkpoint: dict = {}
        model.on_save_checkpoint(checkpoint)
        assert sorted(checkpoint["xmtc"]) == sorted(["label_stats", key])  # what older checkpoints hold
        if isinstance(model, AttentionXML):
            fresh = AttentionXML(vocab_size=len(model.tokenizer), num_labels=4, embedding_dim=8, hidden_size=8,
                                 linear_sizes=[8])
            fresh.on_load_checkpoint(checkpoint)
            assert fresh.tokenizer.vocab == model.tokenizer.vocab and fresh.label_ids == model.label_ids
        del checkpoint["xmtc"][key]
        with pytest.raises(ValueError, match="tokenizer"):
            model.on_load_checkpoint(checkpoint)



def test_attentionxml_prior_bias_starts_at_its_loss_prior(demo_texts) -> None:
    from xmtc.losses import PWCBLoss

    torch.manual_seed(0)
    tok = WordTokenizer.build(demo_texts[0], max_length=50)
    stats = _stats(4)
    model = AttentionXML(tokenizer=tok, label_stats=stats, loss=PWCBLoss(), embedding_dim=8, hidden_size=8,
                         linear_sizes=[8], prior_bias=True).eval()
    assert torch.equal(model.label_bias.detach(), model.loss.prior_scores(stats))
    plain = AttentionXML(tokenizer=tok, label_stats=stats, loss=PWCBLoss(), embedding_dim=8, hidden_size=8,
                         linear_sizes=[8])
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "label_bias"})
    with torch.no_grad():
        inputs = model.encode(demo_texts[1][:3])
        full = model(inputs)
        assert torch.allclose(full - plain.eval()(inputs), model.label_bias.expand(3, -1), atol=1e-6)
        labels = torch.tensor([3, 1])
        assert torch.allclose(model(inputs, labels), full[:, labels], atol=1e-6)  # label subsets get their biases
    restored = AttentionXML(vocab_size=len(tok), num_labels=4, embedding_dim=8, hidden_size=8, linear_sizes=[8],
                            prior_bias=True)
    model.label_bias.data.add_(1.0)  # a trained bias, not the prior: a checkpoint restores what it holds
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.label_bias, model.label_bias)


# -- any Python callable --


def _logits(texts: list[str]) -> np.ndarray:
    """Three labels: counts of "fish", "milk", "tax" in the text, minus 1."""
    return np.array([[t.split().count(w) - 1.0 for w in ("fish", "milk", "tax")] for t in texts], dtype=np.float32)


def test_callable_classifier_probability_and_logit() -> None:
    texts = ["fish fish milk", "tax", "nothing here"]
    probs = CallableClassifier(lambda t: torch.sigmoid(torch.from_numpy(_logits(t))), label_ids=["f", "m", "t"])
    logit = CallableClassifier(_logits, outputs="logit", max_words=2)
    assert isinstance(logit, LogitCallableClassifier) and type(probs) is CallableClassifier
    for clf in (probs, logit):
        assert isinstance(clf, TextClassifier) and as_classifier(clf) is clf and not supports_word_gradients(clf)
        expected = torch.sigmoid(torch.from_numpy(_logits(texts)))
        torch.testing.assert_close(clf.score_texts(texts, batch_size=2), expected)
        torch.testing.assert_close(clf.score_texts(texts, labels=[2, 0]), clf.score_texts(texts)[:, [2, 0]])
    # only the logit wrapper declares logits=, so the engine asks it for log-odds and not the other
    assert TargetedGoal(probs).space == "probability" and TargetedGoal(logit).space == "logit"
    assert TargetedGoal(probs).partial and TargetedGoal(logit).partial
    assert torch.equal(logit.score_texts(texts, logits=True), torch.from_numpy(_logits(texts)))
    assert probs.label_ids == ["f", "m", "t"] and logit.label_ids is None and logit.num_labels == 3
    assert probs.visible_text("a b c") == ("a b c", "")
    assert logit.visible_text("one  two three") == ("one two", "document cut to its first 2 of 3 words "
                                                               "(model limit 2 words)")
    assert logit.visible_text("one two") == ("one two", "")
    assert probs.score_texts([]).shape == (0, 3)


def test_callable_classifier_refuses_bad_outputs() -> None:
    with pytest.raises(ValueError, match=r"shape \(3,\) for 3 texts"):
        CallableClassifier(lambda t: np.zeros(len(t))).score_texts(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"shape \(1, 2\) for 2 texts"):
        CallableClassifier(lambda t: np.zeros((1, 2))).score_texts(["a", "b"])
    with pytest.raises(ValueError, match="returned 2 label columns; expected 3"):
        CallableClassifier(lambda t: np.zeros((len(t), 2)), num_labels=3).score_texts(["a"])
    widths = iter([3, 4])  # the first call fixes the width
    changing = CallableClassifier(lambda t: np.zeros((len(t), next(widths))))
    with pytest.raises(ValueError, match="returned 4 label columns; expected 3"):
        changing.score_texts(["a", "b"], batch_size=1)
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*outputs='logit'"):
        CallableClassifier(_logits).score_texts(["fish fish"])
    with pytest.raises(ValueError, match="numeric"):
        CallableClassifier(lambda t: [["x"] * 2 for _ in t]).score_texts(["a"])
    with pytest.raises(ValueError, match="out of range"):
        CallableClassifier(_logits, outputs="logit").score_texts(["a"], labels=[3])
    with pytest.raises(ValueError, match="outputs"):
        CallableClassifier(_logits, outputs="logits")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_labels=2 but 3 label_ids"):
        CallableClassifier(_logits, num_labels=2, label_ids=["a", "b", "c"])


def test_as_classifier_wraps_scorers_and_callables() -> None:
    class Scorer:  # the engine's older TextScorer: score_texts only, with a label subset
        def score_texts(self, texts: Sequence[str], batch_size: int = 64,
                        labels: Sequence[int] | None = None) -> torch.Tensor:
            rows = torch.sigmoid(torch.from_numpy(_logits(list(texts))))
            return rows if labels is None else rows[:, list(labels)]

    wrapped = as_classifier(Scorer())
    assert isinstance(wrapped, TextClassifier) and wrapped.visible_text("x y") == ("x y", "")
    assert TargetedGoal(wrapped).partial and TargetedGoal(wrapped).space == "probability"
    assert isinstance(as_classifier(_logits), CallableClassifier)
    with pytest.raises(TypeError, match="cannot attack a int"):
        as_classifier(3)


# -- a Hugging Face multilabel sequence classifier, trained here --


class TableTransformation:
    """Fixed candidates per (lower-cased) word."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]:
        return [list(self.table.get(words[p].lower(), [])) for p in positions]


def test_hugging_face_classifier_scores_like_the_model(hf_classifier_dir) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    clf = HuggingFaceClassifier(hf_classifier_dir, batch_size=2)
    assert isinstance(clf, TextClassifier) and supports_word_gradients(clf)
    assert clf.label_ids == ["dairy", "fishery", "taxation", "transport", "wine"] and clf.max_length == 64
    assert TargetedGoal(clf).partial and TargetedGoal(clf).space == "logit"
    texts = ["milk cheese butter cows the council", "rail train freight", "vineyard grapes wine tax duty"]
    model = AutoModelForSequenceClassification.from_pretrained(str(hf_classifier_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_classifier_dir))
    with single_thread(), torch.no_grad():
        logits = clf.score_texts(texts, logits=True)
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
        torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clf.score_texts(texts), torch.sigmoid(logits))
        torch.testing.assert_close(clf.score_texts(texts, labels=[4, 0], logits=True), logits[:, [4, 0]])
    # the toy task is learnt: on held-out toy documents the top label is nearly always a true one
    held_out, truth = toy_corpus(60, seed=11)
    with single_thread():
        top = clf.score_texts(held_out).argmax(dim=1).tolist()
    assert sum(clf.label_ids[j] in y for j, y in zip(top, truth, strict=True)) >= 54


def test_hugging_face_classifier_reads_what_fits(hf_classifier_dir) -> None:
    clf = HuggingFaceClassifier(hf_classifier_dir, max_length=16)
    text = "the council adopted fishing quotas for vessels and milk butter cheese tariffs on wine grapes rail"
    visible, note = clf.visible_text(text)
    kept = len(visible.split())
    assert 0 < kept < len(text.split()) and note == f"document cut to its first {kept} of 16 words (model limit 16)"
    assert len(clf.tokenizer(visible)["input_ids"]) <= 16  # every kept word is read whole
    assert len(clf.tokenizer(" ".join(text.split()[:kept + 1]))["input_ids"]) > 16  # the next one would not be
    assert clf.visible_text("milk cows") == ("milk cows", "")
    # the model reads the visible part's tokens first, then (some of) the next word's
    read = clf.tokenizer(text, truncation=True, max_length=16)["input_ids"]
    own = clf.tokenizer(visible)["input_ids"][:-1]  # without [SEP]
    assert read[:len(own)] == own and len(read) == 16


def test_hugging_face_word_gradients(hf_classifier_dir) -> None:
    clf = HuggingFaceClassifier(hf_classifier_dir, max_length=12)
    text = "milk-cheese butter , cows the council wine grapes tax duty rail train"
    words = text.split()
    with single_thread():
        grads = clf.word_gradients(text, [0, 4])
    assert grads.dtype == torch.float64 and grads.shape == (len(words),)
    assert all(p.grad is None for p in clf.model.parameters())
    # independent check: the gradient w.r.t. inputs_embeds of the same truncated encoding
    enc = clf.tokenizer(text, truncation=True, max_length=12, return_tensors="pt")
    embeds = clf.model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
    scores = torch.sigmoid(clf.model(inputs_embeds=embeds, attention_mask=enc["attention_mask"],
                                     token_type_ids=enc["token_type_ids"]).logits)
    scores[0, [0, 4]].sum().backward()
    norms = embeds.grad[0].norm(dim=-1).double()
    owner = np.full(len(text), -1)  # the whitespace word of each character
    position = 0
    for i, word in enumerate(words):
        position = text.index(word, position)
        owner[position:position + len(word)] = i
        position += len(word)
    by_word: dict[int, float] = {}
    offsets = clf.tokenizer(text, truncation=True, max_length=12, return_offsets_mapping=True)["offset_mapping"]
    for t, (start, end) in enumerate(offsets):
        if end > start:  # not a special token
            w = int(owner[start])
            by_word[w] = max(by_word.get(w, 0.0), float(norms[t]))
    expected = [by_word.get(i, 0.0) for i in range(len(words))]
    np.testing.assert_allclose(grads.numpy(), expected, rtol=1e-5, atol=1e-9)
    visible = len(clf.visible_text(text)[0].split())
    assert all(g > 0 for g in expected[:visible]) and all(g == 0 for g in expected[visible + 1:])


def test_hugging_face_classifier_is_attacked_end_to_end(hf_classifier_dir) -> None:
    from xmtc.attack.attack import GreedyWordSearch

    clf = HuggingFaceClassifier(hf_classifier_dir)
    text = "milk the council regulation article member states"  # one dairy word among the toy corpus's noise
    dairy = clf.label_ids.index("dairy")
    goal = TargetedGoal(clf, k=2)
    assert goal.space == "logit" and goal.partial
    table = TableTransformation({"milk": ["cheese", "wine"], "council": ["vineyard"], "regulation": ["rail"]})
    with single_thread():
        before = goal.scores([text])[0]
        assert dairy in goal.topk(before)  # a pair the model predicts
        result = GreedyWordSearch(goal, table, max_change_rate=0.5).attack(text, dairy, "positive")
        after = clf.score_texts([result.adversarial_text], logits=True)[0]
    assert result.status == "success" and result.success and result.queries > 0 and result.num_words == 7
    assert result.rank_before == TargetedGoal.rank(before, dairy) <= 2
    assert result.rank_after == TargetedGoal.rank(after, dairy) > 2 and result.topk_after == goal.topk(after)
    # "milk" drives the label; "cheese" keeps it, "wine" takes it away
    assert [(c.old, c.new) for c in result.changes] == [("milk", "wine")]
    assert result.adversarial_text == text.replace("milk", "wine", 1)


def test_hugging_face_classifier_refusals(hf_classifier_dir, tmp_path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(hf_classifier_dir))
    single = tmp_path / "single"
    single.mkdir()
    config.problem_type = "single_label_classification"
    config.save_pretrained(str(single))
    with pytest.raises(UserError, match=f"{single}: problem_type is 'single_label_classification'"):
        HuggingFaceClassifier(single)
    with pytest.raises(ModelPathError, match="folder not found: ./no/such/classifier"):
        HuggingFaceClassifier("./no/such/classifier")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelPathError, match="is not a Hugging Face multilabel sequence classifier folder"):
        HuggingFaceClassifier(empty)


def test_documents_are_cut_to_what_the_model_reads():
    from types import SimpleNamespace

    from xmtc.attack.classifier import visible_by_words, visible_text_of
    from xmtc.data.tokenizer import WordTokenizer

    tok = WordTokenizer(["<pad>", "<unk>"], max_length=4)
    text, note = visible_by_words(tok, "one two-three four five six")  # "two-three" is two tokens
    assert text == "one two-three four" and "first 3 of 5 words (model limit 4)" in note
    assert visible_by_words(tok, "short text") == ("short text", "")
    assert visible_text_of(SimpleNamespace(), "no visible_text at all") == ("no visible_text at all", "")


def test_documents_are_cut_to_what_a_subword_model_reads():
    from xmtc.attack.classifier import visible_by_offsets
    from xmtc.data.train_tokenizer import train_unigram_tokenizer

    corpus = ["the council adopted the regulation on fishing quotas", "import licences for sugar products"] * 20
    tok = train_unigram_tokenizer(corpus, vocab_size=60, max_length=12)
    text = "the council adopted the regulation on fishing quotas for sugar products"
    cut, note = visible_by_offsets(tok, text, tok.model_max_length)
    words = cut.split()
    assert 0 < len(words) < len(text.split()) and text.startswith(cut) and "model limit 12" in note
    # every kept word is read whole by the model: its encoding fits the limit with the specials
    assert len(tok(cut)["input_ids"]) <= 12
    longer = " ".join(text.split()[:len(words) + 1])
    assert len(tok(longer)["input_ids"]) > 12  # and the next word would not have fit
    assert visible_by_offsets(tok, "sugar", tok.model_max_length) == ("sugar", "")
