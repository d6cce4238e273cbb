"""An attack run on held-out data: choose pairs, plan the jobs, attack them in groups, summarise.

``AttackRun`` is what to attack and how; ``AttackRun.run`` drives it through Lightning's test loop
(``xmtc.attack.lightning.AttackModule``), on one device or sharded over DDP processes by the trainer given.
The output directory (``xmtc.attack.run_store``):
- ``run.json``: the settings, checkpoints and data of the run (once a result is stored, a rerun with other
  ones is refused);
- ``results.jsonl``: one line per attacked example, in job order; while the run is under way each process
  streams its rows to ``results.part-<rank>.jsonl``, flushed per group, so an interrupted run loses at most the
  groups in flight and a rerun skips what is done;
- ``summary.json``, ``tables.md``, ``success_by_frequency_<kind>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmtc.attack.base import AttackResult
from xmtc.attack.recipe import (  # noqa: F401 (re-exported: the settings' old home)
    AttackSettings,
    SimilarityMeasure,
    add_similarity,
    attack_documents,
    build_search,
    build_transformation,
    encoder_description,
    load_encoder,
    needs_label_words,
)
from xmtc.attack.report import markdown_tables, plot_success_by_frequency, summarize
from xmtc.attack.run_store import JobKey, RunStore
from xmtc.attack.selection import FrequencyBin, choose_pairs, label_clusters, label_tfidf, predicted_topk_of
from xmtc.errors import UserError


def result_row(r: AttackResult, stats: Any, model: str, doc_id: str, doc_index: int, bin_name: str,
               measure: SimilarityMeasure, seconds: float, bin_label: int | None = None) -> dict[str, Any]:
    """One line of results.jsonl: the result with label ids and names instead of indices (``stats``:
    the model's LabelStats). ``bin_label``: the label a non-targeted job was binned by (its target is all
    true labels), kept as ``bin_label_index``: it identifies the job (``run_store.row_key``)."""
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
    for change in row["changes"]:  # the paper's substitutions keep their rows as they were
        if change.get("kind") == "replace":
            del change["kind"]
    if r.kind == "nontargeted" and bin_label is not None:
        row["bin_label_index"] = int(bin_label)
    return row


def _label_ids(model: Any) -> list[str] | None:
    """A target's label ids in column order: its own ``label_ids``, else its ``label_stats``' (None: unknown)."""
    ids = getattr(model, "label_ids", None)
    if ids is None:
        ids = getattr(getattr(model, "label_stats", None), "label_ids", None)
    return None if ids is None else list(ids)


@dataclass(frozen=True)
class Job:
    """One (model, kind, document, target) to attack; ``order``: its place in the run's job list, which is the
    order of results.jsonl."""

    order: int
    model: str
    kind: str
    doc: int
    target: int


@dataclass
class Plan:
    """What rank 0 decided and every process attacks by: the jobs (all of them, done ones included, so groups
    are the same on a rerun), the keys already done, the bins and what was left empty."""

    jobs: list[Job]
    done: set[JobKey]
    bins: list[FrequencyBin]
    label_bin: np.ndarray
    empty_bins: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Tools:
    """What attacking needs beside the models, built on each process's device: a search per model and the
    sentence encoder."""

    searches: dict[str, Any]
    encoder: Any


class AttackRun:
    """One attack run over one or several models (compared on the same pairs, paper §4.3.2).

    Args:
        models: the targets by name (classifiers: ``score_texts``, and ``label_ids`` or ``label_stats``).
        texts, labels, doc_ids: the held-out documents, their true label indices and their ids.
        settings: what to attack and how.
        output_dir: where the results go (module docstring).
        identity: what else identifies the run in run.json (checkpoints, data).
        train: training texts and label indices (label clusters for negative attacks).
        device: where a trainer this run makes for itself runs (``run`` without ``trainer``).
        stats: the label space with training frequencies (bins); default: the first model's ``label_stats``.
    """

    def __init__(self, models: dict[str, Any], texts: Sequence[str], labels: Sequence[np.ndarray],
                 doc_ids: Sequence[str], settings: AttackSettings, output_dir: str | Path,
                 identity: dict[str, Any] | None = None,
                 train: tuple[Sequence[str], Sequence[np.ndarray]] | None = None, device: str = "cpu",
                 stats: Any = None) -> None:
        if not models:
            raise ValueError("nothing to attack: no model given")
        first_name, first = next(iter(models.items()))
        self.stats = stats if stats is not None else first.label_stats
        for name, m in models.items():
            ids = _label_ids(m)
            if ids is not None and ids != list(self.stats.label_ids):
                raise UserError(f"model {name!r} has another label space than "
                                + (f"{first_name!r}; compare only models trained on the same dataset"
                                   if stats is None else "the data"))
        self.models, self.texts, self.labels, self.doc_ids = models, texts, labels, doc_ids
        self.settings = settings
        self.train = train
        self.device = str(device)
        self.out = Path(output_dir)
        self.identity = {"settings": settings.identity(), **(identity or {})}
        self.store = RunStore(self.out, self.identity)
        self.empty_bins: dict[str, list[str]] = {}  # bins without an eligible pair, per kind
        self.bins: list[FrequencyBin] = []
        self.label_bin = np.zeros(0, np.int64)
        self._tfidf: tuple[list[str], Any] | None = None

    # -- choosing pairs --

    def choose_pairs(self) -> tuple[dict[str, np.ndarray], list[FrequencyBin]]:
        """Pairs every model classifies correctly, binned by training frequency, equal numbers per bin
        (``xmtc.attack.selection.choose_pairs``). A bin without pairs of a kind is reported (``empty_bins``);
        a kind without any pair is a user error."""
        s = self.settings
        tops = [predicted_topk_of(m, self.texts, s.k, s.batch_size) for m in self.models.values()]
        allowed = None if s.labels is None else self.stats.indices_of(s.labels)
        clusters = self._clusters() if "negative" in s.kinds and s.negative_clusters else None
        choice = choose_pairs(tops, self.labels, self.stats, s.kinds, samples_per_bin=s.samples_per_bin,
                              min_labels_per_bin=s.min_labels_per_bin, seed=s.seed, allowed=allowed,
                              clusters=clusters)
        self.bins, self.label_bin, self.empty_bins = choice.bins, choice.label_bin, dict(choice.empty_bins)
        for kind, names in self.empty_bins.items():  # reported in summary.json and tables.md; the rest is attacked
            print(f"{kind} attacks: no eligible pairs in bin(s) {', '.join(names)}")
        return choice.pairs, choice.bins

    def _label_tfidf(self, why: str) -> tuple[list[str], Any]:
        """The training split's TF-IDF vocabulary and label representations, fitted once per run (the label
        clusters and the label-guided parts share them)."""
        if self._tfidf is None:
            if self.train is None:
                raise ValueError(f"{why} needs the training documents (label representations)")
            self._tfidf = label_tfidf(self.train[0], self.train[1], len(self.stats))
        return self._tfidf

    def _clusters(self) -> np.ndarray:
        reps = self._label_tfidf("negative_clusters")[1]
        return label_clusters(self.train[0], self.train[1], len(self.stats), seed=self.settings.seed,  # type: ignore[index]
                              representations=reps)

    def label_words(self) -> Any:
        """The training split's TF-IDF label words (``xmtc.attack.label_words.LabelWords``)."""
        from xmtc.attack.label_words import LabelWords

        return LabelWords(*self._label_tfidf("label-guided attack parts"))

    # -- planning --

    def key(self, job: Job) -> JobKey:
        return job.model, job.kind, self.doc_ids[job.doc], job.target

    def plan(self) -> Plan:
        """Check the output directory, choose the pairs and list the jobs: model by model, kind by kind, pair by
        pair. Rank 0 only; the other processes get the plan from it."""
        done = self.store.open()
        chosen, bins = self.choose_pairs()
        todo = [(name, kind, int(d), int(t))
                for name in self.models for kind, pairs in chosen.items() for d, t in pairs]
        return Plan([Job(i, *job) for i, job in enumerate(todo)], done, bins, self.label_bin, dict(self.empty_bins))

    def adopt(self, plan: Plan) -> None:
        """Take rank 0's plan (bins name the rows' bins; empty bins go into the report)."""
        self.bins, self.label_bin, self.empty_bins = plan.bins, plan.label_bin, dict(plan.empty_bins)

    def groups(self, plan: Plan) -> list[list[Job]]:
        """The jobs left, in groups of ``documents_at_once`` attacked together. Groups are cut from the whole job
        list, per model, before what is done is taken out, so a rerun attacks a job with the same companions
        (the same forward passes) as an uninterrupted run; groups left empty are dropped."""
        size = max(1, self.settings.documents_at_once)
        out = []
        for name in self.models:
            mine = [j for j in plan.jobs if j.model == name]
            for start in range(0, len(mine), size):
                left = [j for j in mine[start:start + size] if self.key(j) not in plan.done]
                if left:
                    out.append(left)
        return out

    # -- attacking --

    def tools(self, device: str) -> Tools:
        """The transformation, the sentence encoder and an attack per model, on ``device``."""
        s = self.settings
        transformation = build_transformation(s, device=device)
        encoder = load_encoder(s, device=device)
        words = self.label_words() if needs_label_words(s) else None
        return Tools({name: build_search(m, transformation, s, encoder, words) for name, m in self.models.items()},
                     encoder)

    def attack_group(self, group: Sequence[Job], tools: Tools) -> list[dict[str, Any]]:
        """Attack one group (one model's jobs, their texts sharing forward passes); its result rows."""
        name = group[0].model
        began = time.perf_counter()
        # a non-targeted attack acts on the document's true labels; its job's label only bins it
        targets = [([int(t) for t in self.labels[j.doc]] if j.kind == "nontargeted" else j.target, j.kind)
                   for j in group]
        results = attack_documents(tools.searches[name], self.models[name], [self.texts[j.doc] for j in group],
                                   targets, self.settings, tools.encoder)
        seconds = (time.perf_counter() - began) / len(group)
        return [result_row(r, self.stats, name, self.doc_ids[j.doc], j.doc, self.bins[self.label_bin[j.target]].name,
                           self.settings.similarity_measure, seconds, bin_label=j.target)
                for j, r in zip(group, results, strict=True)]

    def run(self, show_progress: bool = True, trainer: Any = None) -> dict[str, Any]:
        """Attack everything not done yet and write the report; returns the summary (on every process).

        ``trainer``: the Lightning Trainer whose test loop runs the attack (its devices and strategy shard the
        groups: ``devices=N, strategy="ddp"``); default: one process on ``device``, no logger or checkpoints."""
        from xmtc.attack.lightning import AttackModule, attack_trainer, run_quietly

        module = AttackModule(self, show_progress=show_progress)
        run_quietly(trainer or attack_trainer(self.device), module)
        if module.summary is None:  # ran in spawned processes (ddp_spawn): their module's summary stayed there
            return json.loads((self.out / "summary.json").read_text(encoding="utf-8"))
        return module.summary

    def report(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """summary.json, tables.md and the plots, from ``rows`` (default: results.jsonl)."""
        rows = self.store.rows() if rows is None else rows
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
