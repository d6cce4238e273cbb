"""Word importance (paper §3.1, eq. 3.1-3.3): which words to attack first.

Black box (``mask_importance``): every word in turn is masked (or deleted) and the masked copies are scored
together through the goal, so they are batched, cached and counted as queries; a word's importance is how
far masking it moves the text toward the goal. Unlike the reference code, the last word is included.

White box (``gradient_importance``): the L2 norm of the gradient of the target scores w.r.t. each token's
embedding, for models that expose their embedding (AttentionXML); it costs no queries.

Stop words get importance -inf in both: they are never attacked (paper §3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xmtc.attack.goal import GoalTarget, ScoreRequest, TargetedGoal, as_label_list, drive
from xmtc.attack.stopwords import is_stop_word

ImportanceName = Literal["mask", "deletion", "gradient"]


def attackable_positions(words: Sequence[str]) -> list[int]:
    """Positions of the words an attack may change (all but stop words)."""
    return [i for i, w in enumerate(words) if not is_stop_word(w)]


def masked_text(words: Sequence[str], position: int, mask_token: str | None = "[UNK]") -> str:
    """The text with word ``position`` replaced by ``mask_token``, or deleted when ``mask_token`` is None."""
    if mask_token is None:
        return " ".join([*words[:position], *words[position + 1:]])
    return " ".join([*words[:position], mask_token, *words[position + 1:]])


def mask_importance(
    goal: TargetedGoal,
    words: Sequence[str],
    target: GoalTarget,
    reference: Tensor,
    mask_token: str | None = "[UNK]",
) -> Tensor:
    """Importance (len(words),) float64: progress toward the goal when each word is masked, -inf for stop
    words (whose masked copies are not even scored). One batched goal call for all copies, of the Γ
    columns only.

    ``reference`` holds the Γ scores of the unmasked text (``goal.scores([text], target.labels)[0]``).
    """
    return drive(mask_importance_steps(goal, words, target, reference, mask_token), goal.score_batched)


def mask_importance_steps(
    goal: TargetedGoal,
    words: Sequence[str],
    target: GoalTarget,
    reference: Tensor,
    mask_token: str | None = "[UNK]",
    positions: Sequence[int] | None = None,
) -> Generator[ScoreRequest, Tensor, Tensor]:
    """``mask_importance`` as a scoring generator (see ``TargetedGoal.request``); only ``positions`` (default:
    every word but stop words) are masked, the others get -inf."""
    importance = torch.full((len(words),), float("-inf"), dtype=torch.float64)
    positions = attackable_positions(words) if positions is None else list(positions)
    if positions:
        rows = yield from goal.request([masked_text(words, p, mask_token) for p in positions], target.labels)
        importance[positions] = goal.progress(rows, target, reference)
    return importance


class WordImportance(ABC):
    """How much each word matters to the goal: the search visits words in descending importance."""

    def check(self, scorer: object) -> None:
        """Raise a TypeError when ``scorer`` cannot be used (before any attack starts); any scorer by default."""
        return None

    @abstractmethod
    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        """A scoring generator returning (len(words),) float64 importance; -inf outside ``positions`` (the
        positions the constraints allow), which are never visited. ``reference``: the Γ columns of the text."""


class MaskImportance(WordImportance):
    """Black box (eq. 3.1-3.3): progress toward the goal when the word is replaced by ``mask_token``."""

    def __init__(self, mask_token: str | None = "[UNK]") -> None:
        self.mask_token = mask_token

    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        return (yield from mask_importance_steps(goal, words, target, reference, self.mask_token, positions))


class DeletionImportance(MaskImportance):
    """Black box: progress toward the goal when the word is deleted (TextFooler's leave-one-out)."""

    def __init__(self) -> None:
        super().__init__(mask_token=None)


class GradientImportance(WordImportance):
    """White box: the gradient of the target scores w.r.t. the word's embedding (no queries); needs a model with
    ``word_gradients(text, labels)`` (``xmtc.attack.classifier.WordGradients``), such as AttentionXML."""

    def check(self, scorer: object) -> None:
        _check_gradient_model(scorer)

    def steps(self, goal: TargetedGoal, words: Sequence[str], positions: Sequence[int], target: GoalTarget,
              reference: Tensor) -> Generator[ScoreRequest, Tensor, Tensor]:
        grads = gradient_importance(goal.scorer, " ".join(words), list(target.labels))  # type: ignore[arg-type]
        importance = torch.full((len(words),), float("-inf"), dtype=torch.float64)
        allowed = list(positions)
        importance[allowed] = grads[allowed]
        return importance
        yield  # a scoring generator that asks for nothing


def importance_method(name: str | WordImportance, mask_token: str | None = "[UNK]") -> WordImportance:
    """The importance a setting names: ``mask`` (with ``mask_token``; None deletes), ``deletion``, ``gradient``."""
    if isinstance(name, WordImportance):
        return name
    if name == "mask":
        return MaskImportance(mask_token)
    if name == "deletion":
        return DeletionImportance()
    if name == "gradient":
        return GradientImportance()
    raise ValueError(f"importance must be 'mask', 'deletion' or 'gradient'; got {name!r}")


# -- white box --


def _check_gradient_model(model: Any) -> None:
    """Raise a TypeError naming what the model lacks for gradient importance."""
    problems = []
    if not isinstance(model, nn.Module):
        problems.append("it is not a torch.nn.Module")
    if not isinstance(getattr(model, "embedding", None), nn.Module):
        problems.append("no `embedding` module")
    if not callable(getattr(model, "encode", None)):
        problems.append("no `encode(texts)` method")
    if not callable(getattr(getattr(model, "tokenizer", None), "words", None)):
        problems.append("no word tokenizer (`tokenizer.words(text)`) to map tokens back to words")
    if problems:
        raise TypeError(f"gradient importance needs a model like xmtc.models.AttentionXML, but "
                        f"{type(model).__name__} has {'; '.join(problems)}; use importance='mask' instead")


def supports_gradient_importance(model: Any) -> bool:
    """Whether ``gradient_importance`` can run on ``model``."""
    try:
        _check_gradient_model(model)
    except TypeError:
        return False
    return True


def token_gradient_norms(model: nn.Module, text: str, labels: Sequence[int]) -> Tensor:
    """L2 norm (T,) of d(Σ_labels score)/d(embedding of token t) for one text, in eval mode.

    The embedding output is replaced (by a forward hook) with a leaf tensor that requires grad, so frozen
    embeddings work and no parameter ``.grad`` is touched. cuDNN is off because its RNN backward refuses
    to run in eval mode.
    """
    _check_gradient_model(model)
    inputs = model.encode([text])
    device = next(model.parameters()).device
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured["embedded"] = leaf
        return leaf

    handle = model.embedding.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            logits = model({k: v.to(device) for k, v in inputs.items()})
            to_scores = getattr(model, "scores_from_logits", torch.sigmoid)
            total = to_scores(logits)[0, list(labels)].sum()
            if "embedded" not in captured:
                raise TypeError(f"{type(model).__name__}.forward did not call its `embedding` module")
            (grad,) = torch.autograd.grad(total, captured["embedded"])
    finally:
        handle.remove()
        model.train(was_training)
    return grad[0].norm(dim=-1).double().cpu()


def gradient_importance(model: nn.Module, text: str, target: int | Sequence[int]) -> Tensor:
    """Importance (len(text.split()),) float64 from embedding gradients of the target score(s).

    Each whitespace word is tokenized on its own (the AttentionXML tokenizer's ``\\w+`` never crosses
    whitespace, so the pieces line up with the tokens of the whole text); a word's importance is the max
    over its tokens. Words without tokens (punctuation) or cut off by the model's ``max_length`` get 0;
    stop words get -inf.
    """
    _check_gradient_model(model)
    words = text.split()
    norms = token_gradient_norms(model, " ".join(words), as_label_list(target))
    counts = [len(model.tokenizer.words(w)) for w in words]
    total = sum(counts)
    if total and total < norms.numel():
        raise ValueError(f"the model encodes {norms.numel()} tokens but its tokenizer finds {total} in the "
                         "words; gradient importance cannot map tokens back to words")
    importance = torch.zeros(len(words), dtype=torch.float64)
    start = 0
    for i, n in enumerate(counts):
        piece = norms[start:min(start + n, norms.numel())] if total else norms[:0]
        if piece.numel():
            importance[i] = piece.max()
        start += n
    for i, w in enumerate(words):
        if is_stop_word(w):
            importance[i] = float("-inf")
    return importance

