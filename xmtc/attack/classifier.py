"""The model side of the attack engine: what a classifier under attack must offer, and wrappers that make
any multilabel classifier one.

A ``TextClassifier`` scores raw texts and says which part of a text it reads (``visible_text``), so an
attack never edits words the model cannot see. A classifier that can also give word gradients
(``WordGradients``) supports white-box importance. xmtc's models (``xmtc.models.XMTCModule``) are
classifiers; ``CallableClassifier`` wraps any Python function from texts to a score matrix, and
``HuggingFaceClassifier`` any multilabel ``AutoModelForSequenceClassification`` checkpoint. This module
imports nothing of ``xmtc.models``.

The engine (``xmtc.attack.goal.TargetedGoal``) looks at the signature of ``score_texts``: ``labels=`` is
used to ask for a subset of label columns, ``logits=`` to ask for log-odds. A classifier declares
``logits`` only when it returns real log-odds (log-odds recovered from float32 probabilities saturate at
~16.6, where a positive target can no longer be seen falling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from xmtc.errors import UserError
from xmtc.model_paths import ModelKind, check_model_path, hub_offline, load_error, no_loading_bar

OutputSpace = Literal["probability", "logit"]

HF_CLASSIFIER = ModelKind(
    "Hugging Face multilabel sequence classifier", "HuggingFaceClassifier.name_or_path",
    "save one there with `model.save_pretrained('{path}')` and `tokenizer.save_pretrained('{path}')` (an "
    "AutoModelForSequenceClassification with problem_type='multi_label_classification')")


@runtime_checkable
class TextClassifier(Protocol):
    """A multilabel classifier of raw texts, as the attack engine sees it.

    ``score_texts`` returns (len(texts), L) float CPU scores, higher = more likely (probabilities for sigmoid
    models); with ``labels`` only those columns, in that order. A classifier returning real log-odds also
    declares ``logits: bool = False`` (see the module docstring). ``visible_text`` returns the leading
    whitespace words of ``text`` the model reads and a one-line note on what was cut ("" when nothing).
    Classifiers also carry ``label_ids`` (the label names in column order, or None when unknown).
    """

    def score_texts(self, texts: Sequence[str], batch_size: int = 64,
                    labels: Sequence[int] | None = None) -> Tensor: ...

    def visible_text(self, text: str) -> tuple[str, str]: ...


@runtime_checkable
class WordGradients(Protocol):
    """White-box word importance (paper §3.1, the gradient variant).

    ``word_gradients(text, labels)``: float64 (len(text.split()),), for each whitespace word the max over
    its tokens of the L2 norm of d(Σ_labels score)/d(token embedding); 0 for words without tokens or cut
    off. Stop words are left to the caller (the engine's importance sets them to -inf).
    """

    def word_gradients(self, text: str, labels: Sequence[int]) -> Tensor: ...


def supports_word_gradients(obj: Any) -> bool:
    """Whether ``obj`` can give word gradients (white-box importance)."""
    return isinstance(obj, WordGradients)


def cut_note(kept: int, total: int, limit: int | str) -> str:
    """The note ``visible_text`` gives when it cuts a document."""
    return f"document cut to its first {kept} of {total} words (model limit {limit})"


# -- helpers for implementers --


def visible_by_words(tokenizer: Any, text: str) -> tuple[str, str]:
    """``visible_text`` for a word tokenizer (``words(text)``, ``max_length``; AttentionXML's) that reads the first
    ``max_length`` tokens: the whitespace words whose tokens all fall within them."""
    limit = tokenizer.max_length
    if len(tokenizer.words(text)) <= limit:
        return text, ""
    words = text.split()
    counts = np.cumsum([len(tokenizer.words(w)) for w in words])
    keep = int(np.searchsorted(counts, limit, side="right"))
    return " ".join(words[:keep]), cut_note(keep, len(words), limit)


def visible_text_of(model: Any, text: str) -> tuple[str, str]:
    """``model.visible_text(text)``, or the whole text for a model that does not say what it reads."""
    visible = getattr(model, "visible_text", None)
    return visible(text) if callable(visible) else (text, "")


def visible_by_offsets(tokenizer: Any, text: str, limit: int) -> tuple[str, str]:
    """``visible_text`` for a fast Hugging Face tokenizer that truncates at ``limit`` tokens (specials
    included): the whitespace words wholly inside the span the truncated encoding covers."""
    if len(tokenizer(text, truncation=False)["input_ids"]) <= limit:
        return text, ""
    words = text.split()
    text = " ".join(words)
    offsets = tokenizer(text, truncation=True, max_length=limit, return_offsets_mapping=True)["offset_mapping"]
    covered = max(end for _, end in offsets)
    ends = np.cumsum([len(w) + 1 for w in words]) - 1  # end offset of each word in the joined text
    keep = int(np.searchsorted(ends, covered, side="right"))
    return " ".join(words[:keep]), cut_note(keep, len(words), limit)


def embedding_gradients(model: nn.Module, embedding: nn.Module, total: Callable[[], Tensor]) -> Tensor:
    """d total() / d(output of ``embedding``), with ``model`` in eval mode (its mode restored after).

    The embedding output is replaced (by a forward hook) with a leaf tensor that requires grad, so frozen
    embeddings work and no parameter ``.grad`` is touched. cuDNN is off because its RNN backward refuses
    to run in eval mode. ``total`` runs the model and returns the scalar to differentiate.
    """
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured["embedded"] = leaf
        return leaf

    handle = embedding.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            value = total()
            if "embedded" not in captured:
                raise TypeError(f"{type(model).__name__}'s forward pass did not call its embedding module "
                                f"{type(embedding).__name__}")
            (grad,) = torch.autograd.grad(value, captured["embedded"])
    finally:
        handle.remove()
        model.train(was_training)
    return grad


def max_per_word(token_values: Tensor, token_word: Tensor, num_words: int) -> Tensor:
    """float64 (num_words,): for each word the max of its tokens' (non-negative) values, 0 without tokens;
    ``token_word[t]`` is the word of token t (negative: no word, such as a special token)."""
    out = torch.zeros(num_words, dtype=torch.float64)
    keep = token_word >= 0
    return out.scatter_reduce(0, token_word[keep].long(), token_values[keep].double(), "amax", include_self=True)


# -- any Python callable --


class CallableClassifier:
    """A Python function ``fn(texts) -> (N, L)`` score matrix (numpy array or tensor) as a classifier.

    ``outputs="probability"``: ``fn`` returns probabilities in [0, 1]. ``outputs="logit"``: it returns
    log-odds; scores are their sigmoid and ``logits=True`` returns them as they are (the engine then
    compares gains on them). ``max_words``: the model reads only the first ``max_words`` whitespace words.
    ``num_labels`` (or ``label_ids``) fixes the width every call must have.
    """

    def __new__(cls, fn: Callable[[list[str]], Any], num_labels: int | None = None,
                outputs: OutputSpace = "probability", label_ids: Sequence[str] | None = None,
                max_words: int | None = None) -> CallableClassifier:
        # only a classifier of real log-odds declares ``logits=`` (the engine reads the signature)
        if cls is CallableClassifier and outputs == "logit":
            cls = LogitCallableClassifier
        return super().__new__(cls)

    def __init__(self, fn: Callable[[list[str]], Any], num_labels: int | None = None,
                 outputs: OutputSpace = "probability", label_ids: Sequence[str] | None = None,
                 max_words: int | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableClassifier needs a callable texts -> scores; got {type(fn).__name__}")
        if outputs not in ("probability", "logit"):
            raise ValueError(f"outputs must be 'probability' or 'logit'; got {outputs!r}")
        if label_ids is not None:
            if num_labels is not None and num_labels != len(label_ids):
                raise ValueError(f"num_labels={num_labels} but {len(label_ids)} label_ids")
            num_labels = len(label_ids)
        if max_words is not None and max_words < 1:
            raise ValueError(f"max_words must be >= 1 or None; got {max_words}")
        self.fn = fn
        self.num_labels = num_labels
        self.outputs = outputs
        self.label_ids = list(label_ids) if label_ids is not None else None
        self.max_words = max_words

    def _call(self, texts: Sequence[str], batch_size: int) -> Tensor:
        """The callable's raw outputs, batched, checked, as one float32 CPU tensor."""
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            raw = self.fn(chunk)
            try:
                rows = raw.detach().float() if isinstance(raw, Tensor) else torch.from_numpy(
                    np.asarray(raw, dtype=np.float32))
            except (TypeError, ValueError) as e:
                raise ValueError(f"the classifier function must return a numeric (texts, labels) matrix; got "
                                 f"{type(raw).__name__} ({e})") from e
            if rows.ndim != 2 or rows.shape[0] != len(chunk):
                raise ValueError(f"the classifier function returned shape {tuple(rows.shape)} for {len(chunk)} "
                                 f"texts; it must return a (texts, labels) matrix, one row per text")
            if self.num_labels is None:
                self.num_labels = int(rows.shape[1])  # later calls must agree
            elif rows.shape[1] != self.num_labels:
                raise ValueError(f"the classifier function returned {rows.shape[1]} label columns; expected "
                                 f"{self.num_labels} (num_labels / label_ids, or its first call)")
            out.append(rows.cpu())
        scores = torch.cat(out) if out else torch.zeros(0, self.num_labels or 0)
        if self.outputs == "probability" and scores.numel() and not bool(((scores >= 0) & (scores <= 1)).all()):
            raise ValueError("the classifier function returned scores outside [0, 1] with outputs='probability'; "
                             "if it returns log-odds, say outputs='logit'")
        return scores

    @staticmethod
    def _columns(scores: Tensor, labels: Sequence[int] | None) -> Tensor:
        if labels is None:
            return scores
        index = torch.as_tensor(list(labels), dtype=torch.long)
        if index.numel() and not bool(((index >= 0) & (index < scores.shape[1])).all()):
            raise ValueError(f"label indices out of range for {scores.shape[1]} labels: {list(labels)}")
        return scores[:, index]

    def score_texts(self, texts: Sequence[str], batch_size: int = 64,
                    labels: Sequence[int] | None = None) -> Tensor:
        """Probabilities (len(texts), L), or the columns ``labels`` (computed in full, then sliced)."""
        scores = self._call(texts, batch_size)
        return self._columns(torch.sigmoid(scores) if self.outputs == "logit" else scores, labels)

    def visible_text(self, text: str) -> tuple[str, str]:
        """The first ``max_words`` words (all of them without a limit)."""
        words = text.split()
        if self.max_words is None or len(words) <= self.max_words:
            return text, ""
        return " ".join(words[:self.max_words]), cut_note(self.max_words, len(words), f"{self.max_words} words")

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"{type(self).__name__}({name}, num_labels={self.num_labels}, outputs={self.outputs!r})"


class LogitCallableClassifier(CallableClassifier):
    """``CallableClassifier(fn, outputs="logit")``: also gives the function's log-odds (``logits=True``)."""

    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None,
                    logits: bool = False) -> Tensor:
        """Probabilities (the sigmoid of the function's log-odds) or, with ``logits``, the log-odds."""
        scores = self._call(texts, batch_size)
        return self._columns(scores if logits else torch.sigmoid(scores), labels)


class _ScorerClassifier:
    """A scorer with ``score_texts`` but no ``visible_text``, as a classifier that reads whole texts. Its
    ``score_texts`` is the scorer's own bound method, so the engine sees its very signature."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.score_texts = scorer.score_texts
        self.label_ids = getattr(scorer, "label_ids", None)
        if supports_word_gradients(scorer):
            self.word_gradients = scorer.word_gradients

    def visible_text(self, text: str) -> tuple[str, str]:
        return text, ""


def as_classifier(obj: Any) -> TextClassifier:
    """``obj`` as a ``TextClassifier``: classifiers as they are, a scorer with only ``score_texts`` as one
    that reads whole texts, a plain callable wrapped in ``CallableClassifier`` (probabilities)."""
    if isinstance(obj, TextClassifier):
        return obj
    if callable(getattr(obj, "score_texts", None)):
        return _ScorerClassifier(obj)
    if callable(obj):
        return CallableClassifier(obj)
    raise TypeError(f"cannot attack a {type(obj).__name__}: expected a classifier (score_texts and "
                    "visible_text), an object with score_texts, or a callable texts -> scores")


# -- Hugging Face sequence classifiers --


class HuggingFaceClassifier:
    """A Hugging Face ``AutoModelForSequenceClassification`` trained for multilabel classification
    (``problem_type="multi_label_classification"``: one sigmoid per label) as a classifier.

    Scores are the sigmoids of its logits (``logits=True``: the logits); texts are read through its own
    tokenizer (a fast one: truncation is mapped back to words by offsets), cut at ``max_length`` tokens
    (default: the tokenizer's ``model_max_length``, else the model's position embeddings). ``label_ids``
    are ``config.id2label`` in index order (None when they are transformers' LABEL_i placeholders).

    ``name_or_path``: a local folder (never looked up on the hub, ``xmtc.model_paths``) or a hub id
    (from the cache when ``HF_HUB_OFFLINE`` is set or ``local_files_only``).
    """

    def __init__(self, name_or_path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32,
                 max_length: int | None = None, local_files_only: bool = False) -> None:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        given = str(name_or_path)
        name = check_model_path(given, HF_CLASSIFIER)
        offline = local_files_only or hub_offline()
        try:
            with no_loading_bar():
                config = AutoConfig.from_pretrained(name, local_files_only=offline)
        except (OSError, ValueError) as e:
            raise load_error(HF_CLASSIFIER, given, e) from e
        if config.problem_type != "multi_label_classification":
            raise UserError(f"{given}: problem_type is {config.problem_type!r}, not 'multi_label_classification'; "
                            "only multilabel sequence classifiers (one sigmoid per label) can be attacked")
        try:
            with no_loading_bar():
                tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
                model = AutoModelForSequenceClassification.from_pretrained(name, config=config,
                                                                           local_files_only=offline)
        except (OSError, ValueError) as e:
            raise load_error(HF_CLASSIFIER, given, e) from e
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"{given}: the tokenizer {type(tokenizer).__name__} is not a fast tokenizer; "
                            "HuggingFaceClassifier maps tokens back to words by their offsets, which only "
                            "fast (Rust) tokenizers give")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.name_or_path = given
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = int(max_length) if max_length is not None else _default_max_length(tokenizer, config)
        self.num_labels = int(config.num_labels)
        names = [str(config.id2label[i]) for i in range(self.num_labels)]
        self.label_ids = None if names == [f"LABEL_{i}" for i in range(self.num_labels)] else names

    def _encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt", **kwargs)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int | None = None, labels: Sequence[int] | None = None,
                    logits: bool = False) -> Tensor:
        """Sigmoid scores (len(texts), L) on the CPU, or their logits; with ``labels`` only those columns
        (the head computes every label anyway: this only slices)."""
        index = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
        if index is not None and index.numel() and not bool(((index >= 0) & (index < self.num_labels)).all()):
            raise ValueError(f"label indices out of range for {self.num_labels} labels: {list(labels)}")
        step = batch_size or self.batch_size
        out = []
        for start in range(0, len(texts), step):
            enc = self._encode(texts[start:start + step]).to(self.device)
            rows = self.model(**enc).logits.float()
            rows = rows if index is None else rows[:, index.to(rows.device)]
            out.append((rows if logits else torch.sigmoid(rows)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_labels if index is None else index.numel())

    def visible_text(self, text: str) -> tuple[str, str]:
        """The whitespace words wholly inside what the model reads of ``text`` (``max_length`` tokens)."""
        return visible_by_offsets(self.tokenizer, text, self.max_length)

    def word_gradients(self, text: str, labels: Sequence[int]) -> Tensor:
        """Per whitespace word, the max over its tokens of |d(Σ_labels sigmoid)/d(input embedding)|."""
        words = text.split()
        joined = " ".join(words)
        enc = self._encode([joined], return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0]  # (T, 2); specials are (0, 0)
        enc = enc.to(self.device)
        index = torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        grad = embedding_gradients(self.model, self.model.get_input_embeddings(),
                                   lambda: torch.sigmoid(self.model(**enc).logits.float())[0, index].sum())
        norms = grad[0].norm(dim=-1).double().cpu()
        starts = torch.as_tensor(np.cumsum([0] + [len(w) + 1 for w in words[:-1]]), dtype=torch.long)
        word = torch.searchsorted(starts, offsets[:, 0].contiguous(), right=True) - 1
        word[offsets[:, 1] <= offsets[:, 0]] = -1  # special tokens cover no text
        return max_per_word(norms, word, len(words))

    def __repr__(self) -> str:
        return f"HuggingFaceClassifier({self.name_or_path!r}, labels={self.num_labels}, max_length={self.max_length})"


def _default_max_length(tokenizer: Any, config: Any) -> int:
    """The tokenizer's ``model_max_length`` when it is set (transformers puts ~1e30 when unknown), else the
    model's position embeddings, else 512."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    positions = getattr(config, "max_position_embeddings", None)
    return int(positions) if isinstance(positions, int) and positions > 0 else 512
