"""Robustness while training: the attack suite at validation end, per label frequency (paper §4, Figure 2).

Every ``every_n_epochs`` validations the callback draws (document, label) pairs of the validation set that the
current model classifies correctly, binned by the label's training frequency, attacks them (positive- and/or
negative-targeted) and logs per bin: success rate (plain and with Figure 2's similarity and change-rate
thresholds), mean similarity, change rate and queries, at the step Lightning logs the validation metrics at,
so the curves line up with loss and P@k. A ``WandbLogger`` also gets a line chart of success rate against
label frequency (one line per evaluation) and a table of adversarial examples; every logger gets the scalars;
CSV, JSONL and PNG files go to ``<log_dir>/robustness``.

Departures from ``python -m xmtc attack`` (which attacks a finished model once), for curves that compare over
training: the bins are fixed at the first evaluation from all true (document, label) pairs of the validation
documents considered (the attack suite's rule, then merged down to ``max_bins``), not from the currently correct
ones, and a bin with fewer correct pairs than ``samples_per_bin`` is attacked with what it has instead of cutting
every bin to the smallest.

Training is unchanged by it: it runs in eval mode without gradients and restores every module's mode and the
python, numpy and torch (CPU and CUDA) random states afterwards. Under DDP, rank 0 chooses the pairs and
broadcasts them, groups of ``documents_at_once`` pairs are dealt to the ranks (the same groups whatever the
number of ranks, so results equal a single-process run), the results are gathered on every rank, and rank 0
alone logs and writes. Every rank enters every collective the same number of times, whether or not it has pairs
left, and the time limit is decided jointly (any rank over it stops all), so nothing hangs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from xmtc.attack.recipe import (
    AttackSettings,
    attack_documents,
    build_search,
    build_transformation,
    encoder_description,
    load_encoder,
)
from xmtc.attack.report import (
    CONFIDENCE,
    RATE_COUNTS,
    TABLE_CHANGE_RATE,
    bin_center,
    describe_change,
    plot_success_over_training,
    summarize,
)
from xmtc.attack.runner import result_row
from xmtc.attack.selection import (
    FrequencyBin,
    choose_pairs,
    frequency_bins,
    label_clusters,
    predicted_topk_of,
)
from xmtc.errors import UserError

# Small by default: an evaluation should cost a fraction of an epoch (docs/performance.md).
DEFAULT_SETTINGS = AttackSettings(kinds=["positive"], candidates=24, min_labels_per_bin=50, samples_per_bin=8,
                                  split="val", batch_size=64, documents_at_once=8)
# every success rate with its 95% Wilson interval (``<rate>_lo``, ``<rate>_hi``; none where nothing was attacked)
STATS = ("attacked", *(f"{rate}{end}" for rate in RATE_COUNTS for end in ("", "_lo", "_hi")), "mean_similarity",
         "mean_change_rate", "mean_queries")
SUMMARY_COLUMNS = ("global_step", "epoch", "kind", "bin", "freq_low", "freq_high", *RATE_COUNTS.values(), *STATS)


@dataclasses.dataclass(frozen=True)
class _Job:
    """One pair to attack; ``order`` is its place in the evaluation's job list (results are sorted by it)."""

    order: int
    kind: str
    doc: int
    target: int
    bin: int


@contextmanager
def training_state_preserved(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; every submodule's mode and the python, numpy and torch random states
    restored on the way out, so training continues exactly as without the callback."""
    modes = [(m, m.training) for m in module.modules()]
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _logging_step(trainer: L.Trainer) -> int:
    """The step Lightning's own validation metrics are logged at (the optimizer steps so far, counted as its
    loggers count them: one less than ``global_step`` at the end of an epoch), so the curves line up with P@k."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


def merge_bins(bins: Sequence[FrequencyBin], max_bins: int | None) -> list[FrequencyBin]:
    """At most ``max_bins`` bins by merging neighbours (groups of nearly equal numbers of bins)."""
    if max_bins is None or len(bins) <= max_bins:
        return list(bins)
    groups = np.array_split(np.arange(len(bins)), max_bins)
    return [FrequencyBin(bins[g[0]].low, bins[g[-1]].high) for g in groups]


class RobustnessCallback(Callback):
    """Attack the model at validation end, per label-frequency bin, and log the results (module docstring).

    Args:
        settings: the attack (``xmtc.attack.runner.AttackSettings``: kinds, k, max_change_rate, masked_lm,
            candidates, encoder, similarity_threshold, min_labels_per_bin, samples_per_bin, labels, seed, ...);
            ``split`` is ignored (always the validation set) and ``importance`` must be ``mask`` (no gradients).
        every_n_epochs: evaluate after every n-th epoch's validation (never during the sanity check).
        max_bins: merge neighbouring frequency bins down to this many (null: the attack suite's bins).
        max_documents: validation documents the pairs are drawn from (a seeded subset, the same every time;
            they are all scored once per evaluation). null: all.
        time_limit: seconds per evaluation; no new group of pairs starts after it (null: no limit).
        examples_logged: adversarial examples per evaluation in the W&B table (successes first).
        dirpath: where the files go (default ``<trainer.log_dir>/robustness``).
        write_files: write ``summary.csv``, ``results.jsonl`` and ``success_by_frequency_<kind>.png`` there.
        prefix: name prefix of the logged metrics (and the callback's state key, so instances with other
            settings and prefixes can run side by side).
    """

    def __init__(
        self,
        settings: AttackSettings = DEFAULT_SETTINGS,
        every_n_epochs: int = 1,
        max_bins: int | None = 4,
        max_documents: int | None = 1000,
        time_limit: float | None = 300.0,
        examples_logged: int = 50,
        dirpath: str | None = None,
        write_files: bool = True,
        prefix: str = "robustness",
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if max_bins is not None and max_bins < 1:
            raise ValueError(f"max_bins must be >= 1 or null, got {max_bins}")
        if settings.importance != "mask":
            raise ValueError("the robustness callback runs without gradients: settings.importance must be 'mask'")
        if not settings.kinds or set(settings.kinds) - {"positive", "negative", "nontargeted"}:
            raise ValueError(f"settings.kinds must be positive, negative and/or nontargeted, got {settings.kinds}")
        self.settings = dataclasses.replace(settings, kinds=list(settings.kinds))
        self.every_n_epochs = every_n_epochs
        self.max_bins = max_bins
        self.max_documents = max_documents
        self.time_limit = time_limit
        self.examples_logged = examples_logged
        self.dirpath = dirpath
        self.write_files = write_files
        self.prefix = prefix
        self.curves: list[dict[str, Any]] = []  # summary rows of every evaluation so far (kept in checkpoints)
        self.last: dict[str, Any] = {}  # the latest evaluation: rows, summary, scalars, seconds
        self._tools: tuple[Any, Any] | None = None
        self._docs: np.ndarray | None = None
        self._bins: list[FrequencyBin] = []
        self._clusters: np.ndarray | None = None
        self._epoch_started = time.perf_counter()

    # -- Lightning hooks --

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Load the masked LM and the sentence encoder now, so a wrong path fails before training, not after it."""
        if stage not in ("fit", "validate"):
            return
        for needed in ("score_texts", "label_stats"):
            if not hasattr(pl_module, needed):
                raise TypeError(f"RobustnessCallback needs a model with {needed} (an xmtc XMTCModule)")
        self._load_tools(pl_module, trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        epoch_seconds = time.perf_counter() - self._epoch_started
        out_dir = self._out_dir(trainer)  # trainer.log_dir is a collective: every rank asks
        began = time.perf_counter()
        with training_state_preserved(pl_module):
            rows, time_limited = self._evaluate(trainer, pl_module)
        seconds = time.perf_counter() - began
        self._report(trainer, rows, time_limited, seconds, epoch_seconds, out_dir)

    @property
    def state_key(self) -> str:
        """Several instances may run side by side if their prefixes differ."""
        return self._generate_state_key(prefix=self.prefix)

    def state_dict(self) -> dict[str, Any]:
        return {"curves": self.curves}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curves = list(state_dict.get("curves", []))

    # -- the evaluation --

    def _load_tools(self, pl_module: L.LightningModule, device: torch.device) -> None:
        if self._tools is not None:
            return
        s = self.settings
        with training_state_preserved(pl_module):  # building models draws random numbers
            transformation = build_transformation(s, device=str(device))
            encoder = load_encoder(s, device=str(device))
        self._tools = (transformation, encoder)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list[dict[str, Any]], bool]:
        """Every rank: pairs from rank 0, its share of the groups, then everybody's rows (in job order)."""
        started = time.perf_counter()
        self._load_tools(pl_module, trainer.strategy.root_device)
        texts, _ = self._val_data(trainer)
        jobs: list[_Job] = []
        error = ""
        if trainer.is_global_zero:
            try:
                jobs = self._choose_jobs(trainer, pl_module)
            except ValueError as e:  # nothing to attack yet (e.g. no correct pairs): log nothing this time
                warnings.warn(f"robustness evaluation skipped: {e}", stacklevel=2)
            except Exception as e:  # passed on, so that the other ranks fail too instead of waiting forever
                if trainer.world_size == 1:
                    raise
                error = f"{type(e).__name__}: {e}"
        jobs, self._bins, error = trainer.strategy.broadcast((jobs, self._bins, error), src=0)
        if error:
            raise RuntimeError(f"robustness callback: choosing pairs failed on rank 0: {error}")

        s = self.settings
        transformation, encoder = self._tools  # type: ignore[misc]
        search = build_search(pl_module, transformation, s, encoder)
        size = max(1, s.documents_at_once)
        groups = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        world, rank = trainer.world_size, trainer.global_rank
        mine = groups[rank::world]  # whole groups, so forward passes hold the same texts whatever the world size
        rows: list[dict[str, Any]] = []
        time_limited, failure = False, ""
        for round_ in range(math.ceil(len(groups) / world)):
            over = self.time_limit is not None and time.perf_counter() - started > self.time_limit
            # one joint decision per round, taken by every rank with or without a group left: any rank over the
            # time limit (or failed) stops all of them together
            if trainer.strategy.reduce_boolean_decision(over or bool(failure), all=False):
                time_limited = not failure
                break
            if round_ < len(mine):
                try:
                    rows += self._attack_group(trainer, pl_module, search, encoder, texts, mine[round_])
                except Exception as e:
                    if world == 1:
                        raise
                    failure = f"rank {rank}: {type(e).__name__}: {e}"
        parts = self._gather(trainer, (rows, failure))
        failures = [f for _, f in parts if f]
        if failures:
            raise RuntimeError(f"robustness callback: attacks failed: {'; '.join(failures)}")
        rows = sorted((row for part, _ in parts for row in part), key=lambda r: r["job"])
        return rows, time_limited and len(rows) < len(jobs)

    def _val_data(self, trainer: L.Trainer) -> tuple[Sequence[str], Sequence[np.ndarray]]:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
        data = getattr(loader, "dataset", None)
        if data is None or not hasattr(data, "texts"):
            data = getattr(trainer.datamodule, "datasets", {}).get("val")
        if data is None or getattr(data, "labels", None) is None:
            raise ValueError("the robustness callback needs a validation set with texts and labels (an XMTCDataModule)")
        return data.texts, data.labels

    def _choose_jobs(self, trainer: L.Trainer, pl_module: Any) -> list[_Job]:
        """Rank 0: correctly classified pairs of the validation documents, up to ``samples_per_bin`` per bin and kind,
        ordered round robin over kinds and bins (so a time limit still leaves every bin some pairs)."""
        s, stats = self.settings, pl_module.label_stats
        texts, labels = self._val_data(trainer)
        allowed = None if s.labels is None else stats.indices_of(s.labels)
        if self._docs is None:
            rng = np.random.default_rng(s.seed)
            docs = np.arange(len(texts))
            if self.max_documents is not None and len(texts) > self.max_documents:
                docs = np.sort(rng.choice(len(texts), self.max_documents, replace=False))
            true = np.concatenate([labels[d] for d in docs]) if len(docs) else np.zeros(0, np.int64)
            if allowed is not None:
                true = true[np.isin(true, allowed)]
            bins = merge_bins(frequency_bins(stats.freqs, true, s.min_labels_per_bin), self.max_bins)
            # the outer bins reach to the rarest and the most frequent label, so every label has a bin
            bins[0] = FrequencyBin(int(min(stats.freqs.min(), bins[0].low)), bins[0].high)
            bins[-1] = FrequencyBin(bins[-1].low, int(max(stats.freqs.max(), bins[-1].high)))
            self._docs, self._bins = docs, bins
        docs = self._docs
        doc_labels = [labels[d] for d in docs]
        top = predicted_topk_of(pl_module, [texts[d] for d in docs], s.k, s.batch_size)
        per_kind: dict[str, list[np.ndarray]] = {}
        missing = []
        for kind in s.kinds:  # one kind at a time: a kind without pairs yet leaves the others attacked
            clusters = self._label_clusters(trainer, len(stats)) if kind == "negative" and s.negative_clusters else None
            try:
                # the bins stay those of the first evaluation; each bin gives what it has (equal=False)
                choice = choose_pairs([top], doc_labels, stats, [kind], samples_per_bin=s.samples_per_bin,
                                      min_labels_per_bin=s.min_labels_per_bin, seed=s.seed, allowed=allowed,
                                      clusters=clusters, bins=self._bins, equal=False, negative_seed=s.seed)
            except UserError as e:
                missing.append(str(e))
                continue
            per_kind[kind] = choice.by_bin(kind)
        jobs: list[_Job] = []
        longest = max((len(p) for bins in per_kind.values() for p in bins), default=0)
        for j in range(longest):
            for kind in per_kind:
                for b, pairs in enumerate(per_kind[kind]):
                    if j < len(pairs):
                        jobs.append(_Job(len(jobs), kind, int(docs[pairs[j, 0]]), int(pairs[j, 1]), b))
        if not jobs:
            raise ValueError("no correctly classified validation pairs to attack: " + "; ".join(missing))
        return jobs

    def _label_clusters(self, trainer: L.Trainer, n_labels: int) -> np.ndarray | None:
        """Label clusters for negative attacks (paper §4.2.2), from the training split, computed once."""
        if self._clusters is None:
            train = getattr(trainer.datamodule, "train_split", None)
            if train is None:
                warnings.warn("no training split to cluster labels by: negative targets are not restricted to "
                              "their label cluster", stacklevel=2)
                return None
            index = trainer.datamodule.label_index
            self._clusters = label_clusters(train.texts, [index(y) for y in train.labels], n_labels,
                                            seed=self.settings.seed)
        return self._clusters

    def _attack_group(self, trainer: L.Trainer, pl_module: Any, search: Any, encoder: Any, texts: Sequence[str],
                      group: Sequence[_Job]) -> list[dict[str, Any]]:
        s = self.settings
        began = time.perf_counter()
        labels = self._val_data(trainer)[1]  # a non-targeted attack's target: the document's true labels
        targets = [([int(t) for t in labels[job.doc]] if job.kind == "nontargeted" else job.target, job.kind)
                   for job in group]
        results = attack_documents(search, pl_module, [texts[job.doc] for job in group], targets, s, encoder)
        seconds = (time.perf_counter() - began) / len(group)
        step, rows = _logging_step(trainer), []
        for job, result in zip(group, results, strict=True):
            row = result_row(result, pl_module.label_stats, type(pl_module).__name__, f"val:{job.doc}", job.doc,
                             self._bins[job.bin].name, s.similarity_measure, seconds, bin_label=job.target)
            rows.append({"job": job.order, "rank": trainer.global_rank, "global_step": step,
                         "epoch": trainer.current_epoch, **row})
        return rows

    @staticmethod
    def _gather(trainer: L.Trainer, item: Any) -> list[Any]:
        """Every rank's ``item`` on every rank (so all agree on the summary put in ``callback_metrics``)."""
        if trainer.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return [item]
        parts: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, item)
        return parts

    # -- reporting --

    def _out_dir(self, trainer: L.Trainer) -> Path | None:
        if not self.write_files:
            return None
        if self.dirpath is not None:
            return Path(self.dirpath)
        log_dir = trainer.log_dir  # broadcasts: called on every rank
        return Path(log_dir or trainer.default_root_dir) / "robustness"

    def _report(self, trainer: L.Trainer, rows: list[dict[str, Any]], time_limited: bool, seconds: float,
                epoch_seconds: float, out_dir: Path | None) -> None:
        s, step, epoch = self.settings, _logging_step(trainer), trainer.current_epoch
        summary = summarize(rows, s.similarity_threshold, similarity_measure=encoder_description(s))
        bounds = {b.name: b for b in self._bins}
        records = []
        for g in summary["groups"]:
            for b in [{"bin": "all", **g["overall"]}, *g["bins"]]:
                fb = bounds.get(b["bin"])
                records.append({"global_step": step, "epoch": epoch, "kind": g["kind"], "bin": b["bin"],
                                "freq_low": fb.low if fb else None, "freq_high": fb.high if fb else None,
                                **{k: b[k] for k in (*RATE_COUNTS.values(), *STATS)}})
        p = self.prefix
        scalars: dict[str, float] = {f"{p}/seconds": seconds, f"{p}/time_limited": float(time_limited),
                                     f"{p}/share_of_epoch": seconds / max(epoch_seconds + seconds, 1e-9)}
        for r in records:
            where = "" if r["bin"] == "all" else f"/freq_{r['bin']}"
            for k in STATS:
                if r[k] is not None:
                    scalars[f"{p}/{r['kind']}/{k}{where}"] = float(r[k])
        self.curves += records
        self.last = {"rows": rows, "summary": summary, "scalars": scalars, "records": records,
                     "time_limited": time_limited}
        for key, value in scalars.items():  # every rank, so EarlyStopping / ModelCheckpoint may monitor them
            trainer.callback_metrics[key] = torch.tensor(value)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_metrics({**scalars, **self._wandb_media(rows, step)}, step=step)
            else:
                logger.log_metrics(scalars, step=step)
        if out_dir is not None:
            self._write_files(out_dir, rows, records)

    def _wandb_media(self, rows: list[dict[str, Any]], step: int) -> dict[str, Any]:
        """Line charts of success rate against label frequency (one line per evaluation so far; their tables hold
        the 95% Wilson bounds too), the same with the bounds drawn as bands (an image: W&B's line preset draws no
        bands) and a table of this evaluation's adversarial examples."""
        import tempfile

        import PIL.Image
        import wandb

        s, p = self.settings, self.prefix
        media: dict[str, Any] = {}
        columns = ["label_frequency", "bin", "success_rate", "success_rate_fig2", "success_rate_lo",
                   "success_rate_hi", "success_rate_fig2_lo", "success_rate_fig2_hi", "attacked", "evaluation"]
        for kind in s.kinds:
            curves = [r for r in self.curves if r["kind"] == kind and r["bin"] != "all" and r["attacked"]]
            data = [[bin_center(r["bin"]), r["bin"], r["success_rate"], r["success_rate_strict"],
                     r.get("success_rate_lo"), r.get("success_rate_hi"), r.get("success_rate_strict_lo"),
                     r.get("success_rate_strict_hi"), r["attacked"], f"step {r['global_step']}"] for r in curves]
            if not data:
                continue
            table = wandb.Table(columns=columns, data=data)
            media[f"{p}/{kind}/success_by_frequency"] = wandb.plot.line(
                table, "label_frequency", "success_rate", stroke="evaluation",
                title=f"{kind}-targeted success rate by label frequency")
            media[f"{p}/{kind}/success_by_frequency_fig2"] = wandb.plot.line(
                table, "label_frequency", "success_rate_fig2", stroke="evaluation",
                title=f"{kind}-targeted success (similarity > {s.similarity_threshold:g}, change rate "
                      f"< {100 * TABLE_CHANGE_RATE:g}%) by label frequency")
            with tempfile.TemporaryDirectory() as tmp:  # the pixels are read in: W&B copies the file later
                png = plot_success_over_training(curves, Path(tmp) / f"{kind}.png", kind=kind,
                                                 similarity_threshold=s.similarity_threshold)
                with PIL.Image.open(png) as image:
                    pixels = image.convert("RGB")
            media[f"{p}/{kind}/success_by_frequency_bands"] = wandb.Image(
                pixels, caption=f"{100 * CONFIDENCE:g}% Wilson intervals as bands, one line per evaluation")
        attacked = [r for r in rows if r["status"] != "skipped"]
        attacked.sort(key=lambda r: not r["success"])  # stable: successes first, in job order
        columns = ["global_step", "kind", "bin", "target_label", "target_name", "target_train_freq", "rank_before",
                   "rank_after", "success", "similarity", "change_rate", "queries", "changes", "original",
                   "adversarial"]
        data = [[step, r["kind"], r["bin"], r["target_label"], r["target_name"], r["target_train_freq"],
                 r["rank_before"], r["rank_after"], r["success"], r["similarity"], r["change_rate"], r["queries"],
                 "; ".join(describe_change(c) for c in r["changes"]), r["original_text"],
                 r["adversarial_text"]] for r in attacked[:self.examples_logged]]
        media[f"{p}/examples"] = wandb.Table(columns=columns, data=data)
        return media

    def _write_files(self, out_dir: Path, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "results.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        summary_csv = out_dir / "summary.csv"
        columns: Sequence[str] = SUMMARY_COLUMNS
        if summary_csv.exists():  # appended to: keep its columns, so the rows stay under their headers
            with open(summary_csv, encoding="utf-8", newline="") as f:
                columns = next(csv.reader(f), []) or SUMMARY_COLUMNS
            if missing := [c for c in SUMMARY_COLUMNS if c not in columns]:
                warnings.warn(f"{summary_csv} was started without the columns {', '.join(missing)} (an older "
                              "xmtc): its new rows go without them; move the file away to get them", stacklevel=2)
        with open(summary_csv, "a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if columns is SUMMARY_COLUMNS and f.tell() == 0:
                writer.writeheader()
            writer.writerows(records)
        s = self.settings
        for kind in s.kinds:
            if any(r["kind"] == kind for r in self.curves):
                plot_success_over_training(self.curves, out_dir / f"success_by_frequency_{kind}.png", kind=kind,
                                           similarity_threshold=s.similarity_threshold)
