"""Running the attack suite on held-out data: choose pairs, attack, stream results, summarise.

Output directory:
- ``run.json``: the settings, checkpoints and data of the run (once results.jsonl holds a result, a rerun
  with other ones is refused);
- ``results.jsonl``: one line per attacked example, appended and flushed as each finishes, so an
  interrupted run loses nothing and a rerun skips what is done;
- ``summary.json``, ``tables.md``, ``success_by_frequency_<kind>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from xmtc.attack.base import AttackResult
from xmtc.attack.goal import TargetedGoal
from xmtc.attack.report import markdown_tables, plot_success_by_frequency, summarize
from xmtc.attack.search import GreedyWordSearch
from xmtc.attack.selection import (
    FrequencyBin,
    bin_of,
    frequency_bins,
    label_clusters,
    positive_pairs,
    predicted_topk,
    sample_negative_pairs,
    sample_per_bin,
)
from xmtc.errors import UserError

SimilarityMeasure = Literal["cosine", "angular", "arccos"]
AttackProfile = Literal["algorithm1", "paper"]


@dataclass
class AttackSettings:
    """What to attack and how (paper §3-4; NOTES §1).

    Args:
        profile: how the attack is measured. ``algorithm1``: as Algorithm 1 reads (change budget, change
            rate and similarity on the text the model reads; success tested on the kept candidate only;
            candidates asked on the current text). ``paper``: as the paper's code measured (adv_xmtc.py):
            budget and change rate over the whole document's words, similarity of the whole documents,
            lower-cased, with the changes put back; success tested on every candidate, the first that
            succeeds ending the attack; the masked LM asked on the original document. docs/attack.md
            lists what remains different.
        kinds: ``positive`` and/or ``negative`` targeted attacks.
        k: size of the predicted top-k set.
        max_change_rate: θ, the largest share of words that may change.
        query_budget: largest number of target-model queries per attacked example (None: no limit).
        importance: ``mask`` (black box, paper) or ``gradient`` (white box, AttentionXML).
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
    """

    profile: AttackProfile = "algorithm1"
    kinds: list[Literal["positive", "negative"]] = field(default_factory=lambda: ["positive"])
    k: int = 5
    max_change_rate: float = 0.1
    query_budget: int | None = None
    importance: Literal["mask", "gradient"] = "mask"
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
    """The similarity measure as reports name it (NOTES §1: every report names its measure)."""
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


def result_row(r: AttackResult, stats: Any, model: str, doc_id: str, doc_index: int, bin_name: str,
               measure: SimilarityMeasure, seconds: float) -> dict[str, Any]:
    """One line of results.jsonl: the result with label ids and names instead of indices (``stats``:
    the model's LabelStats)."""
    row = asdict(r)
    row.update(
        model=model, doc_id=doc_id, doc_index=doc_index, bin=bin_name,
        target_index=r.target, target_label=stats.label_ids[r.target], target_name=stats.label_names[r.target],
        target_train_freq=int(stats.freqs[r.target]), change_rate=r.change_rate,
        topk_before=[stats.label_ids[i] for i in r.topk_before], topk_after=[stats.label_ids[i] for i in r.topk_after],
        similarity_measure=measure if r.similarity is not None else None,
        seconds=round(seconds, 3),
    )
    row.pop("target")
    return row


def _resolve_labels(wanted: Sequence[str], label_ids: Sequence[str], label_names: Sequence[str]) -> np.ndarray:
    by_id = {lab: i for i, lab in enumerate(label_ids)}
    by_name = {name.lower(): i for i, name in enumerate(label_names)}
    out = []
    for w in wanted:
        idx = by_id.get(w, by_name.get(w.lower()))
        if idx is None:
            close = [n for n in label_names if w.lower() in n.lower()][:5]
            raise UserError(f"settings.labels: unknown label {w!r}: not a label id or name of the model's label space"
                             + (f"; did you mean {close}?" if close else ""))
        out.append(idx)
    return np.array(sorted(set(out)), dtype=np.int64)


def fit_to_model(model: Any, text: str) -> tuple[str, str]:
    """Cut a document to the words the model reads, so no attack edits text the model never sees.

    Word tokenizers (AttentionXML) count ``max_length`` tokens; Hugging Face tokenizers (APLC-XLNet) keep the
    whitespace words that lie wholly inside the span their truncated encoding covers.
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return text, ""
    words = text.split()
    if hasattr(tok, "words") and getattr(tok, "max_length", None) is not None:
        limit = tok.max_length
        if len(tok.words(text)) <= limit:
            return text, ""
        counts = np.cumsum([len(tok.words(w)) for w in words])
        keep = int(np.searchsorted(counts, limit, side="right"))
    elif callable(tok) and getattr(tok, "is_fast", False) and getattr(tok, "model_max_length", None):
        limit = int(tok.model_max_length)
        if len(tok(text, truncation=False)["input_ids"]) <= limit:
            return text, ""
        text = " ".join(words)
        offsets = tok(text, truncation=True, max_length=limit, return_offsets_mapping=True)["offset_mapping"]
        covered = max(end for _, end in offsets)
        ends = np.cumsum([len(w) + 1 for w in words]) - 1  # end offset of each word in the joined text
        keep = int(np.searchsorted(ends, covered, side="right"))
    else:
        return text, ""
    return " ".join(words[:keep]), f"document cut to its first {keep} of {len(words)} words (model limit {limit})"



def build_search(scorer: Any, transformation: Any, settings: AttackSettings) -> GreedyWordSearch:
    """The greedy search the settings describe, with a goal of its own, for ``scorer``."""
    paper = settings.profile == "paper"
    goal = TargetedGoal(scorer, k=settings.k, batch_size=settings.batch_size, query_budget=settings.query_budget)
    return GreedyWordSearch(goal, transformation, max_change_rate=settings.max_change_rate,
                            mask_token=settings.mask_token, importance=settings.importance,
                            success_check="every" if paper else "chosen",
                            candidates_from="original" if paper else "current")


def attack_documents(search: GreedyWordSearch, model: Any, documents: Sequence[str],
                     targets: Sequence[tuple[int | list[int], str]], settings: AttackSettings,
                     encoder: Any) -> list[AttackResult]:
    """Attack documents together (their texts share forward passes), each cut to what the model reads, and
    measure them as ``settings.profile`` says: under ``paper`` the whole document's words count for the
    budget and change rate, and the result holds the whole documents with the changes put back, whose
    similarity is measured lower-cased. ``targets``: (target, kind) per document."""
    paper = settings.profile == "paper"
    fitted = [fit_to_model(model, doc) for doc in documents]
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


class AttackRun:
    """One attack run over one or several models (compared on the same pairs, paper §4.3.2)."""

    def __init__(self, models: dict[str, Any], texts: Sequence[str], labels: Sequence[np.ndarray],
                 doc_ids: Sequence[str], settings: AttackSettings, output_dir: str | Path,
                 identity: dict[str, Any] | None = None,
                 train: tuple[Sequence[str], Sequence[np.ndarray]] | None = None, device: str = "cpu") -> None:
        if not models:
            raise ValueError("nothing to attack: no model given")
        first = next(iter(models.values()))
        for name, m in models.items():
            if m.label_stats.label_ids != first.label_stats.label_ids:
                raise UserError(f"model {name!r} has another label space than {next(iter(models))!r}; "
                                 "compare only models trained on the same dataset")
        self.models, self.texts, self.labels, self.doc_ids = models, texts, labels, doc_ids
        self.settings = settings
        self.train = train
        self.device = str(device)  # where the masked LM and a sentence-transformers encoder run
        self.stats = first.label_stats
        self.out = Path(output_dir)
        self.identity = {"settings": asdict(settings), **(identity or {})}
        self.empty_bins: dict[str, list[str]] = {}  # bins without an eligible pair, per kind

    # -- the run directory --

    def _holds_results(self) -> bool:
        """Whether results.jsonl holds a whole result line: only then do other arguments mix with earlier ones."""
        path = self.out / "results.jsonl"
        if not path.exists():
            return False
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    json.loads(line)
                    return True
                except json.JSONDecodeError:  # blank, or cut by a crash while the first result was written
                    continue
        return False

    def _check_run_dir(self) -> set[tuple[str, str, str, int]]:
        self.out.mkdir(parents=True, exist_ok=True)
        run_file = self.out / "run.json"
        ident = json.loads(json.dumps(self.identity))
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else None
        except json.JSONDecodeError:
            previous = {}
        # a run that stopped before its first result (a wrong path, say) does not lock the directory
        if previous is not None and previous != ident and self._holds_results():
            diff = sorted(k for k in set(previous) | set(ident) if previous.get(k) != ident.get(k))
            sdiff = sorted(k for k in ident["settings"] if previous.get("settings", {}).get(k)
                           != ident["settings"][k]) if "settings" in diff else []
            raise UserError(f"{self.out} holds a run with other arguments ({', '.join(diff)}"
                            + (f": {', '.join(sdiff)}" if sdiff else "") + "); results would mix. "
                            "Use another output directory, or delete it to start over.")
        if previous != ident:
            run_file.write_text(json.dumps(ident, indent=2), encoding="utf-8")
        done: set[tuple[str, str, str, int]] = set()
        results = self.out / "results.jsonl"
        if results.exists():
            lines = results.read_text(encoding="utf-8").splitlines()
            for i, line in enumerate(lines):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # a line cut by a crash: drop it, it will be redone
                        with open(results, "w", encoding="utf-8") as f:
                            f.write("".join(x + "\n" for x in lines[:-1]))
                        break
                    raise UserError(f"{results}:{i + 1}: not valid JSON; delete the line or use another "
                                    "output directory") from None
                done.add((r["model"], r["kind"], r["doc_id"], r["target_index"]))
        return done

    # -- choosing pairs --

    def _topk(self, model: Any) -> np.ndarray:
        bs = self.settings.batch_size
        batches = (model.score_texts(self.texts[i:i + bs], batch_size=bs) for i in range(0, len(self.texts), bs))
        return predicted_topk(batches, self.settings.k)

    def choose_pairs(self) -> tuple[dict[str, np.ndarray], list[FrequencyBin]]:
        """Pairs every model classifies correctly, binned by training frequency, equal numbers per bin."""
        s, n_labels = self.settings, len(self.stats)
        tops = {name: self._topk(m) for name, m in self.models.items()}
        allowed = None if s.labels is None else _resolve_labels(s.labels, self.stats.label_ids,
                                                                 self.stats.label_names)

        def common(pairs_by_model: list[np.ndarray]) -> np.ndarray:
            keys = [set(map(tuple, p)) for p in pairs_by_model]
            both = set.intersection(*keys)
            out = np.array(sorted(both), dtype=np.int64).reshape(-1, 2)
            return out if allowed is None else out[np.isin(out[:, 1], allowed)]

        pos = common([positive_pairs(t, self.labels, n_labels) for t in tops.values()])
        if len(pos) == 0:
            raise UserError("no correctly classified (document, label) pairs to attack"
                             + (" among the requested labels" if allowed is not None else ""))
        bins = frequency_bins(self.stats.freqs, pos[:, 1], s.min_labels_per_bin)
        label_bin = bin_of(self.stats.freqs, bins)
        chosen: dict[str, np.ndarray] = {}
        if "positive" in s.kinds:
            pairs, _ = sample_per_bin(pos, label_bin, len(bins), s.samples_per_bin, s.seed)
            chosen["positive"] = pairs
        self.empty_bins = {}
        if "negative" in s.kinds:
            # drawn per target, one document per target before any gets a second, eligible for every model;
            # never all eligible pairs listed (millions at 30k labels)
            clusters = self._clusters() if s.negative_clusters else None
            sample = sample_negative_pairs(list(tops.values()), self.labels, n_labels, label_bin, len(bins),
                                           s.samples_per_bin or 200, s.seed + 1, clusters=clusters, allowed=allowed)
            chosen["negative"] = sample.pairs
            if sample.empty_bins:  # reported in summary.json and tables.md; the other bins are attacked
                self.empty_bins["negative"] = [bins[b].name for b in sample.empty_bins]
                print(f"negative attacks: no eligible pairs in bin(s) {', '.join(self.empty_bins['negative'])}")
        self.bins, self.label_bin = bins, label_bin
        return chosen, bins

    def _clusters(self) -> np.ndarray:
        if self.train is None:
            raise ValueError("negative_clusters needs the training documents (label representations)")
        return label_clusters(self.train[0], self.train[1], len(self.stats), seed=self.settings.seed)

    # -- attacking --

    def run(self, show_progress: bool = True) -> dict[str, Any]:
        done = self._check_run_dir()
        chosen, bins = self.choose_pairs()
        s = self.settings
        from xmtc.attack.transformation import MaskedLMSubstitution

        transformation = MaskedLMSubstitution(s.masked_lm, k=s.candidates, mode=s.mlm_mode, batch_size=s.batch_size,
                                              device=self.device)
        encoder = load_encoder(s, device=self.device)
        jobs = [(name, kind, int(d), int(t)) for name in self.models for kind, pairs in chosen.items()
                for d, t in pairs if (name, kind, self.doc_ids[d], int(t)) not in done]
        total = sum(len(p) for p in chosen.values()) * len(self.models)
        results_path = self.out / "results.jsonl"
        with open(results_path, "a", encoding="utf-8") as sink, \
                tqdm(total=total, initial=total - len(jobs), desc="attacks", disable=not show_progress) as bar:
            searches = {name: build_search(m, transformation, s) for name, m in self.models.items()}
            for name in self.models:
                mine = [job for job in jobs if job[0] == name]
                for start in range(0, len(mine), max(1, s.documents_at_once)):
                    group = mine[start:start + max(1, s.documents_at_once)]
                    began = time.perf_counter()
                    results = attack_documents(searches[name], self.models[name],
                                               [self.texts[d] for _, _, d, _ in group],
                                               [(t, kind) for _, kind, _, t in group], s, encoder)
                    seconds = (time.perf_counter() - began) / len(group)
                    for (_, _, d, t), result in zip(group, results, strict=True):
                        row = self._row(name, d, self.label_bin[t], result, seconds)
                        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    sink.flush()
                    bar.update(len(group))
        return self.report()

    def _row(self, model: str, doc: int, bin_index: int, r: AttackResult, seconds: float) -> dict[str, Any]:
        return result_row(r, self.stats, model, self.doc_ids[doc], doc, self.bins[bin_index].name,
                          self.settings.similarity_measure, seconds)

    def report(self) -> dict[str, Any]:
        rows = [json.loads(line) for line in (self.out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
        s = self.settings
        summary = summarize(rows, s.similarity_threshold, similarity_measure=encoder_description(s))
        summary["empty_bins"] = empty = self.empty_bins
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        dataset = Path(self.identity.get("data_dir", "")).name
        tables = markdown_tables(summary, dataset=dataset)
        for kind, names in empty.items():
            tables += f"\nNo eligible {kind} pairs in bin(s) {', '.join(names)}: not attacked.\n"
        (self.out / "tables.md").write_text(tables, encoding="utf-8")
        for kind in {g["kind"] for g in summary["groups"]}:
            plot_success_by_frequency(summary, self.out / f"success_by_frequency_{kind}.png", kind=kind)
        return summary
