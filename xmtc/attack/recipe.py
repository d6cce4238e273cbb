"""What attack to run: the settings a user writes, and the parts they build (TextAttack's recipe).

``AttackSettings`` is the configuration (``settings:`` in an attack config); ``build_search`` turns it into an
attack for one target model and ``attack_documents`` runs it on a group of documents and measures the results.
The CLI subcommand, the robustness callback, the study and the benchmarks all go through these two.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from xmtc.attack.attack import Attack
from xmtc.attack.base import AttackResult
from xmtc.attack.classifier import visible_text_of
from xmtc.attack.constraints import Constraint, MinSimilarity, default_constraints
from xmtc.attack.goal import TargetedGoal
from xmtc.attack.importance import importance_method
from xmtc.attack.search import GreedySearch, SearchMethod
from xmtc.attack.transformation import WordSubstitution
from xmtc.errors import UserError

SimilarityMeasure = Literal["cosine", "angular", "arccos"]
AttackProfile = Literal["algorithm1", "paper"]


@dataclass
class AttackSettings:
    """What to attack and how (paper §3-4; docs/attack.md).

    Args:
        profile: how the attack is measured. ``algorithm1``: as Algorithm 1 reads (change budget, change
            rate and similarity on the text the model reads; success tested on the kept candidate only;
            candidates asked on the current text). ``paper``: as the paper's code measured (adv_xmtc.py):
            budget and change rate over the whole document's words, similarity of the whole documents,
            lower-cased, with the changes put back; success tested on every candidate, the first that
            succeeds ending the attack; the masked LM asked on the original document. docs/attack.md
            lists what remains different.
        kinds: ``positive`` and/or ``negative`` targeted attacks, and/or ``nontargeted`` ones (the target is a
            document's true labels; success when one correctly predicted label leaves the top-k).
        k: size of the predicted top-k set.
        max_change_rate: θ, the largest share of words that may change.
        query_budget: largest number of target-model queries per attacked example (None: no limit).
        importance: ``mask`` (black box, paper), ``deletion`` (black box, the word left out), ``gradient``
            (white box: a model with ``word_gradients``, such as AttentionXML) or ``label`` (black box, for
            negative targets: where the target's TF-IDF word, put in by replacement or insertion, raises it
            most; ``xmtc.attack.importance.LabelProbeImportance``).
        mask_token: what replaces a word for importance; null deletes it instead.
        masked_lm: Hugging Face masked LM name or local path for substitutions.
        candidates: K substitutions per word.
        mlm_mode: ``masked`` (one masked pass per position, Algorithm 1) or ``unmasked`` (one pass over
            the text, BERT-Attack's shortcut that the reference code took; xmtc splits words into the MLM's
            pieces where that code fed each word as one token, docs/attack.md).
        encoder: sentence encoder for similarity: ``sentence-transformers`` (default: the offline
            all-MiniLM-L6-v2 of ``xmtc[minilm]``), ``use`` (TF-Hub handle or local SavedModel), or null.
        encoder_path: model path / handle of the encoder.
        similarity_measure: ``cosine``, ``angular`` (1 - arccos/pi) or ``arccos`` (1 - arccos, the
            reference code's).
        similarity_threshold: Figure 2's similarity threshold.
        min_labels_per_bin: L of the paper's binning (100 for Wiki10-31K, 400 for AmazonCat-13K).
        samples_per_bin: pairs attacked per bin (the smallest bin's count if larger or null).
        negative_clusters: restrict negative attacks to documents with a true label in the target's
            label cluster (balanced 2-means over TF-IDF label representations).
        labels: attack only these targets (label ids or names); null: all.
        split: held-out split to attack.
        seed: sampling seed.
        batch_size: texts per target-model forward pass.
        documents_at_once: documents attacked together, their texts sharing forward passes (results are
            written after each group).
        min_similarity: keep only candidates whose text stays at least this similar to the original
            (``encoder``, ``similarity_measure``), checked during the search (``MinSimilarity``); null: only the
            post-hoc threshold ``similarity_threshold`` of the reports, as in the paper.
        transformation: the substitutions as a part (``class_path``/``init_args``, e.g.
            ``xmtc.attack.word_vectors.WordVectorNeighbours``, ``xmtc.attack.insertion.WordInsertion``,
            ``xmtc.attack.label_guided.LabelGuidedWords``; their ``masked_lm: null`` uses ``masked_lm``); null:
            the masked LM of ``masked_lm``, ``candidates`` and ``mlm_mode``.
        search: the search method as a part (``xmtc.attack.search.GreedySearch`` or ``BeamSearch``); null: the
            profile's greedy search.
        constraints: more constraints (``xmtc.attack.constraints``) besides the paper's (stop words,
            ``max_change_rate``, no word changed twice).
    """

    profile: AttackProfile = "algorithm1"
    kinds: list[Literal["positive", "negative", "nontargeted"]] = field(default_factory=lambda: ["positive"])
    k: int = 5
    max_change_rate: float = 0.1
    query_budget: int | None = None
    importance: Literal["mask", "deletion", "gradient", "label"] = "mask"
    mask_token: str | None = "[UNK]"
    masked_lm: str = "bert-base-cased"
    candidates: int = 48
    mlm_mode: Literal["masked", "unmasked"] = "masked"
    encoder: Literal["sentence-transformers", "use"] | None = "sentence-transformers"
    encoder_path: str | None = None
    similarity_measure: SimilarityMeasure = "cosine"
    similarity_threshold: float = 0.8
    min_labels_per_bin: int = 100
    samples_per_bin: int | None = 200
    negative_clusters: bool = True
    labels: list[str] | None = None
    split: str = "test"
    seed: int = 0
    batch_size: int = 64
    documents_at_once: int = 8
    min_similarity: float | None = None
    transformation: WordSubstitution | None = None
    search: SearchMethod | None = None
    constraints: list[Constraint] = field(default_factory=list)

    def identity(self) -> dict[str, Any]:
        """The settings as JSON data (run.json), parts as ``{"class_path", "init_args"}``. Options added with the
        parts are left out while unset, so a run directory of an earlier xmtc still resumes."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _PARTS_DEFAULTS and value == _PARTS_DEFAULTS[f.name]:
                continue
            out[f.name] = describe(value) if f.name in _PARTS_DEFAULTS else (list(value) if isinstance(value, list)
                                                                             else value)
        return out


_PARTS_DEFAULTS: dict[str, Any] = {"min_similarity": None, "transformation": None, "search": None, "constraints": []}


def describe(part: Any) -> Any:
    """A part as ``{"class_path", "init_args"}`` from the attributes named like its ``__init__`` arguments (the
    parts keep them so), for run.json: two runs with other parts are told apart."""
    if part is None or isinstance(part, (str, int, float, bool)):
        return part
    if isinstance(part, (list, tuple)):
        return [describe(p) for p in part]
    cls = type(part)
    args = {}
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for name in (p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
        value = getattr(part, name, None)
        if value is None or isinstance(value, (str, int, float, bool)):
            args[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            args[name] = list(value)
        else:
            args[name] = f"<{type(value).__name__}>"
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def load_encoder(settings: AttackSettings, device: str = "cpu") -> Any:
    """The sentence encoder the settings name (None for no similarity); sentence-transformers on ``device``."""
    from xmtc.attack import similarity

    if settings.encoder is None:
        return None
    if settings.encoder == "use" and not settings.encoder_path:
        raise UserError("settings.encoder 'use' needs settings.encoder_path: a TF-Hub handle (https://...) or a local "
                        "SavedModel folder")
    try:
        if settings.encoder == "use":
            return similarity.UniversalSentenceEncoder(settings.encoder_path)
        return similarity.SentenceTransformerEncoder(settings.encoder_path, device=device)
    except ImportError as err:  # an optional extra not installed: the message says which
        raise UserError(str(err)) from err



def encoder_description(settings: AttackSettings) -> str:
    """The similarity measure as reports name it (every report names it: the paper does not)."""
    default = "all-MiniLM-L6-v2 (xmtc[minilm])" if settings.encoder == "sentence-transformers" else ""
    return f"{settings.encoder or 'no encoder'} {settings.encoder_path or default}, {settings.similarity_measure}"


def add_similarity(encoder: Any, originals: Sequence[str], results: Sequence[AttackResult],
                   measure: SimilarityMeasure, lowercase: bool = False) -> None:
    """Similarity of every changed text to its original, in one encoder call; 1.0 when unchanged.
    ``lowercase``: compare lower-cased texts, as the paper's code fed USE."""
    if encoder is None:
        return
    from xmtc.attack.similarity import text_similarity

    def prepared(text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if lowercase else text

    changed = [i for i, r in enumerate(results) if r.changes]
    for r in results:
        r.similarity = 1.0
    if changed:
        sims = text_similarity(encoder, [prepared(originals[i]) for i in changed],
                               [prepared(results[i].adversarial_text) for i in changed], measure)
        for i, sim in zip(changed, sims.tolist(), strict=True):
            results[i].similarity = float(sim)


def build_transformation(settings: AttackSettings, device: str = "cpu") -> WordSubstitution:
    """The settings' transformation on ``device``: their part (given the masked LM ``masked_lm`` names when it
    asks for one: ``attach_masked_lm``, its own ``masked_lm`` unset), or the masked LM they name."""
    from xmtc.attack.transformation import MaskedLMSubstitution

    part = settings.transformation
    if part is not None:
        if hasattr(part, "attach_masked_lm") and getattr(part, "mlm", None) is None:
            part.attach_masked_lm(MaskedLMSubstitution(settings.masked_lm, k=part.k, mode="masked",
                                                       batch_size=settings.batch_size, device=device))
        return part.to(device)
    return MaskedLMSubstitution(settings.masked_lm, k=settings.candidates, mode=settings.mlm_mode,
                                batch_size=settings.batch_size, device=device)


def needs_label_words(settings: AttackSettings) -> bool:
    """Whether a part of the settings' attack works from the training split's TF-IDF label words
    (``xmtc.attack.label_words.LabelWords``): the run then fits them once."""
    return settings.importance == "label" or bool(getattr(settings.transformation, "needs_label_words", False))


def build_search(scorer: Any, transformation: Any, settings: AttackSettings, encoder: Any = None,
                 label_words: Any = None) -> Attack:
    """The attack the settings describe, with a goal of its own, for ``scorer``: the profile's greedy search
    (or the settings' search part), the paper's constraints plus the settings' own, and ``MinSimilarity`` with
    ``encoder`` when ``min_similarity`` is set. ``label_words``: the training split's TF-IDF label words, given
    to the parts that use them (``needs_label_words``)."""
    paper = settings.profile == "paper"
    goal = TargetedGoal(scorer, k=settings.k, batch_size=settings.batch_size, query_budget=settings.query_budget)
    search = settings.search if settings.search is not None else GreedySearch(
        success_check="every" if paper else "chosen", candidates_from="original" if paper else "current")
    constraints = [*default_constraints(settings.max_change_rate), *settings.constraints]
    if settings.min_similarity is not None:
        constraints.append(MinSimilarity(settings.min_similarity, settings.similarity_measure, encoder))
    for c in constraints:
        if isinstance(c, MinSimilarity) and c.encoder is None:
            if encoder is None:
                raise UserError("a minimum similarity during the search needs a sentence encoder: set "
                                "settings.encoder (and encoder_path)")
            c.encoder = encoder
    importance = importance_method(settings.importance, settings.mask_token)
    for part in (transformation, importance):
        if getattr(part, "needs_label_words", False):
            if label_words is None:
                raise UserError(f"{type(part).__name__} needs the training split's label words: run it through "
                                "`python -m xmtc attack` (which fits them), or pass label_words=LabelWords.fit(...)")
            part.set_label_words(label_words)
    return Attack(goal, transformation, constraints=constraints, importance=importance, search=search)


def attack_documents(search: Attack, model: Any, documents: Sequence[str],
                     targets: Sequence[tuple[int | list[int], str]], settings: AttackSettings,
                     encoder: Any) -> list[AttackResult]:
    """Attack documents together (their texts share forward passes), each cut to what the model reads, and
    measure them as ``settings.profile`` says: under ``paper`` the whole document's words count for the
    budget and change rate, and the result holds the whole documents with the changes put back, whose
    similarity is measured lower-cased. ``targets``: (target, kind) per document."""
    paper = settings.profile == "paper"
    fitted = [visible_text_of(model, doc) for doc in documents]
    jobs = [(text, target, kind, len(doc.split()) if paper else None)
            for (text, _), doc, (target, kind) in zip(fitted, documents, targets, strict=True)]
    results = search.attack_many(jobs)
    for result, (text, note), doc in zip(results, fitted, documents, strict=True):
        if note:
            result.message = f"{note}; {result.message}" if result.message else note
        if paper:
            words = doc.split()
            result.original_text = " ".join(words)
            result.adversarial_text = " ".join([*result.adversarial_text.split(), *words[len(text.split()):]])
    originals = [r.original_text for r in results] if paper else [text for text, _ in fitted]
    add_similarity(encoder, originals, results, settings.similarity_measure, lowercase=paper)
    return results
