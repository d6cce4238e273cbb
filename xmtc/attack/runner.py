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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xmtc.attack.base import AttackResult
from xmtc.attack.recipe import (  # noqa: F401 (re-exported: the settings' old home)
    AttackSettings,
    SimilarityMeasure,
    add_similarity,
    attack_documents,
    build_search,
    encoder_description,
    fit_to_model,
    load_encoder,
)
from xmtc.attack.report import markdown_tables, plot_success_by_frequency, summarize
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
