#!/usr/bin/env python
"""The paper's study (Qaraei & Babbar 2021) on EURLEX57K with the project's own commands, step by step.

    python scripts/study_eurlex.py --scale cpu       # make study-eurlex; rerun after a stop to resume
    python scripts/study_eurlex.py --scale smoke --out logs/study-smoke   # the whole pipeline in minutes

Steps (each skipped when its output exists, so a stopped study resumes where it stopped):
  mlm        python -m xmtc.attack.mlm: a masked LM for substitutions on the training split (unless
             --masked-lm names a real one, e.g. a local bert-base-cased copy);
  fit-LOSS   python -m xmtc fit for normal, PW and PW-cb (a crashed fit resumes from its last.ckpt);
  test-LOSS  python -m xmtc test on the best checkpoint (P@k, nDCG@5, PSP@k from the CSV logger);
  bins       L (min_labels_per_bin) so that the correctly classified test pairs fall into >= 5 bins;
  attack-*   python -m xmtc attack: positive; negative with and without label clusters (normal model);
             the loss comparison on pairs all three models classify correctly (--compare, paper §4.3.2);
             an interrupted attack resumes by itself from its results.jsonl;
  report     Table 3 / Table 5 / Figure 2 / Table 6 style report, written only from the run's files, every
             success rate with its 95% Wilson interval (--report-only rewrites it; --redraw-figure2 REPORT redraws
             the figure from the counts REPORT prints, when the run's files are gone).

Every command run and its wall-clock go to ``<out>/steps.json``; the report lists them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("normal", "pw", "pwcb")
METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")
MIN_BINS = 5


@dataclass
class Scale:
    """How big the models, training and attacks are: what the machine allows decides it."""

    model: list[str]
    trainer: list[str]
    mlm_steps: int
    samples_per_bin: int
    candidates: int
    max_labels_per_bin: int = 100  # the paper's L for EURLEX57K / Wiki10-31K; lowered until >= 5 bins
    attack: list[str] = field(default_factory=list)
    mlm_docs: int | None = None  # train the masked LM on the first N training documents only (smoke)
    note: str = ""


SCALES: dict[str, Scale] = {
    # the configs as they are (AttentionXML's sizes, 30 epochs, early stopping): a GPU
    "paper": Scale(model=[], trainer=[], mlm_steps=1500, samples_per_bin=200, candidates=48,
                   note="configs/axml_eurlex_*.yaml as they are (AttentionXML's EUR-Lex sizes, 30 epochs with "
                        "early stopping on val/nDCG@5)"),
    # what 2 CPU cores allow in a session: ~25 minutes of training per loss, the same 2,000 steps for each loss
    "cpu": Scale(
        model=["--model.init_args.embedding_dim=100", "--model.init_args.hidden_size=64",
               "--model.init_args.linear_sizes=[128]", "--model.init_args.dropout=0.3",
               "--model.init_args.optimizer.init_args.lr=0.002", "--data.init_args.max_length=128",
               "--data.init_args.max_vocab_size=50000", "--data.init_args.min_word_freq=2",
               "--data.init_args.batch_size=32", "--data.init_args.eval_batch_size=128"],
        # two "epochs" of 1,000 random batches each (the loader reshuffles every epoch): 64,000 documents,
        # 1.4 passes over the 45,000; a step budget, not a time limit, so every loss gets the same training
        trainer=["--trainer.max_epochs=2", "--trainer.limit_train_batches=1000", "--trainer.val_check_interval=1.0",
                 "--trainer.log_every_n_steps=50"],
        mlm_steps=1500, samples_per_bin=30, candidates=32,
        note="a CPU-sized AttentionXML (embeddings 100, BiLSTM 64, MLP [128], first 128 words, vocabulary 50k), "
             "2,000 steps of 32 documents per loss (1.4 epochs), validation after 1,000 and 2,000"),
    # tiny: the whole pipeline end to end in minutes, numbers meaningless
    "smoke": Scale(
        model=["--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16",
               "--model.init_args.linear_sizes=[32]", "--data.init_args.max_length=48",
               "--data.init_args.max_vocab_size=20000", "--data.init_args.min_word_freq=2",
               "--data.init_args.batch_size=64", "--data.init_args.eval_batch_size=500",
               "--model.init_args.optimizer.init_args.lr=0.01"],
        trainer=["--trainer.max_epochs=1", "--trainer.limit_train_batches=30", "--trainer.limit_val_batches=2",
                 "--trainer.log_every_n_steps=10"],
        mlm_steps=20, mlm_docs=2000, samples_per_bin=2, candidates=8, attack=["--settings.documents_at_once=4"],
        note="smoke test only: tiny model, 30 training batches; the numbers mean nothing"),
}


# -- the step machinery --

class StepFailed(RuntimeError):
    """A command of a step exited with an error."""


class Study:
    """Runs the steps, records commands and wall-clock in ``steps.json``, skips what is done."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.scale = SCALES[args.scale]
        self.steps_file = self.out / "steps.json"
        self.steps: dict[str, Any] = json.loads(self.steps_file.read_text()) if self.steps_file.exists() else {}
        self.failed: list[str] = []
        self.mlm = args.masked_lm or (str(self.out / "mlm") if args.scale == "smoke" else "models/mlm-eurlex57k")

    def step(self, name: str, done: Callable[[], bool], body: Callable[[list[list[str]]], None]) -> None:
        if done():
            print(f"[study] {name}: done before, skipped")
            return
        print(f"[study] {name} ...", flush=True)
        commands: list[list[str]] = []
        began = time.perf_counter()
        earlier = self.steps.get(name, {}).get("seconds_before_resume", 0.0)  # time spent before a crash
        try:
            body(commands)
        except BaseException as e:
            self.steps[name] = {"seconds_before_resume": round(earlier + time.perf_counter() - began, 1),
                                "failed": str(e)[-500:]}
            self.steps_file.write_text(json.dumps(self.steps, indent=2))
            if not (isinstance(e, StepFailed) and name.startswith("attack-")):
                raise
            # an attack that cannot run (e.g. a bin without negative pairs) must not stop the others or the report
            self.failed.append(name)
            print(f"[study] {name} FAILED: {e}", flush=True)
            return
        seconds = time.perf_counter() - began
        self.steps[name] = {"seconds": round(seconds + earlier, 1),
                            "commands": [" ".join(cmd if cmd[0] == "#" else map(_quote, cmd)) for cmd in commands],
                            "finished": dt.datetime.now().isoformat(timespec="seconds")}
        self.steps_file.write_text(json.dumps(self.steps, indent=2))
        print(f"[study] {name}: {seconds:.0f} s", flush=True)

    def run(self, commands: list[list[str]], argv: list[str]) -> None:
        """Run ``python -m MODULE ...`` (in this process with --in-process, for the tests)."""
        commands.append(["python", *argv])
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        if not self.a.in_process:
            proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
            tail: list[str] = []
            for line in proc.stderr:  # shown as it comes; the last lines say why a command failed
                sys.stderr.write(line)
                tail = [*tail[-19:], line.rstrip()]
            if proc.wait():
                error = next((x for x in reversed(tail) if "Error" in x), tail[-1] if tail else "")
                raise StepFailed(f"{argv[1]} {argv[2]} exited with {proc.returncode}: {error}")
            return
        module, rest = argv[1], argv[2:]
        if module == "xmtc":
            from xmtc.cli import main
        else:
            from xmtc.attack.mlm import main
        main(rest)

    # -- the data and model arguments every xmtc command of a loss shares --

    def common(self, loss: str) -> list[str]:
        return ["--config", f"configs/axml_eurlex_{loss}.yaml", f"--data.init_args.data_dir={self.a.data}",
                *self.scale.model]

    # -- steps --

    def mlm_step(self) -> None:
        if self.a.masked_lm:
            return

        def body(commands: list[list[str]]) -> None:
            data = self.a.data
            if self.scale.mlm_docs:  # tokenizing all 45,000 documents alone takes minutes
                data = str(head_of_dataset(Path(data), self.out / "mlm-data", self.scale.mlm_docs))
            self.run(commands, ["-m", "xmtc.attack.mlm", "--data", data, "--output", self.mlm,
                                "--steps", str(self.a.mlm_steps or self.scale.mlm_steps)])

        self.step("mlm", lambda: (Path(self.mlm) / "quality.json").exists(), body)

    def fit_step(self, loss: str) -> None:
        root = self.out / "train" / loss
        marker = root / "fit.json"

        def body(commands: list[list[str]]) -> None:
            attempts = sorted(root.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            version = f"fit-{len(list(root.glob('fit-*'))) + 1}"
            argv = ["-m", "xmtc", "fit", *self.common(loss), *self.scale.trainer,
                    f"--trainer.logger={_csv_logger(self.out / 'train', loss, version)}",
                    "--trainer.enable_progress_bar=false", *self.a.extra]
            if attempts:  # a crashed or stopped fit: go on from its latest last.ckpt
                argv.append(f"--ckpt_path={attempts[-1]}")
            self.run(commands, argv)
            # a resumed fit with nothing left to do (max_epochs reached) writes no new checkpoint
            last = max(root.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            marker.write_text(json.dumps({"best": str(best_checkpoint(last)), "last": str(last),
                                          "resumed_from": str(attempts[-1]) if attempts else None}, indent=2))

        self.step(f"fit-{loss}", marker.exists, body)

    def ckpt(self, loss: str) -> str:
        return json.loads((self.out / "train" / loss / "fit.json").read_text())["best"]

    def test_step(self, loss: str) -> None:
        metrics = self.out / "test" / loss / "run" / "metrics.csv"
        self.step(f"test-{loss}", metrics.exists, lambda c: self.run(c, [
            "-m", "xmtc", "test", *self.common(loss), f"--trainer.logger={_csv_logger(self.out / 'test', loss, 'run')}",
            "--trainer.enable_progress_bar=false", f"--ckpt_path={self.ckpt(loss)}", *self.a.extra]))

    def bins_step(self) -> None:
        path = self.out / "attacks" / "bins.json"

        def body(commands: list[list[str]]) -> None:
            commands.append(["#", "in this script: choose_min_labels_per_bin() scores the test split with each "
                                  "checkpoint and writes attacks/bins.json"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(choose_min_labels_per_bin(
                {loss: self.ckpt(loss) for loss in LOSSES}, self.a.data, self.scale.max_labels_per_bin), indent=2))

        self.step("bins", path.exists, body)

    def attack_step(self, name: str, kinds: str, clusters: bool, compare: bool) -> None:
        out = self.out / "attacks" / name
        bins = json.loads((self.out / "attacks" / "bins.json").read_text())
        argv = ["-m", "xmtc", "attack", *self.common("normal"), "--config", "configs/attack_paper.yaml",
                "--trainer.logger=false", f"--ckpt_path={self.ckpt('normal')}", f"--output_dir={out}",
                f"--settings.kinds={kinds}", f"--settings.negative_clusters={str(clusters).lower()}",
                f"--settings.min_labels_per_bin={bins['compare' if compare else 'normal']['min_labels_per_bin']}",
                f"--settings.samples_per_bin={self.a.samples_per_bin or self.scale.samples_per_bin}",
                f"--settings.candidates={self.a.candidates or self.scale.candidates}",
                f"--settings.masked_lm={self.mlm}", f"--settings.encoder={self.a.encoder}",
                f"--settings.encoder_path={self.a.encoder_path or 'null'}",
                f"--settings.similarity_measure={self.a.similarity_measure}",
                "--show_progress=false", *self.scale.attack, *self.a.extra, *shlex.split(self.a.attack_args)]
        if compare:
            argv.append(f"--compare={{pw: {self.ckpt('pw')}, pwcb: {self.ckpt('pwcb')}}}")
        self.step(f"attack-{name}", (out / "summary.json").exists, lambda c: self.run(c, argv))

    def all(self) -> Path:
        (self.out / "study.json").write_text(json.dumps({
            "scale": self.a.scale, "scale_note": self.scale.note, "data": self.a.data, "masked_lm": self.mlm,
            "encoder": self.a.encoder, "encoder_path": self.a.encoder_path, "extra": self.a.extra,
            "attack_args": self.a.attack_args,
            "command": " ".join(_quote(x) for x in ["python", "scripts/study_eurlex.py", *sys.argv[1:]])
            if not self.a.in_process else None}, indent=2))
        self.mlm_step()
        for loss in LOSSES:
            self.fit_step(loss)
        for loss in LOSSES:
            self.test_step(loss)
        self.bins_step()
        self.attack_step("positive", "[positive]", clusters=True, compare=False)
        self.attack_step("negative-clusters", "[negative]", clusters=True, compare=False)
        self.attack_step("negative-no-clusters", "[negative]", clusters=False, compare=False)
        self.attack_step("compare-losses", "[positive]", clusters=True, compare=True)
        report = Path(self.a.report) if self.a.report else (
            self.out / "study_eurlex.md" if self.a.scale == "smoke" else Path("docs/study_eurlex.md"))
        began = time.perf_counter()
        write_report(self.out, report, data_dir=Path(self.a.data))
        print(f"[study] report: {report} ({time.perf_counter() - began:.1f} s)")
        if self.failed:
            raise SystemExit(f"[study] failed steps (see {self.steps_file} and the report): {', '.join(self.failed)}")
        return report


def _rel(path: str) -> str:
    """``path`` relative to the repository when inside it, else absolute."""
    full = Path(os.path.abspath(path))  # symlinks kept: data/eurlex57k stays data/eurlex57k
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(full)


def _quote(s: str) -> str:
    return s if s and all(ch.isalnum() or ch in "-_=./:@,+" for ch in s) else "'" + s.replace("'", "'\\''") + "'"


def _csv_logger(save_dir: Path, name: str, version: str) -> str:
    """One CSV logger in place of the configs' CSV + offline W&B pair (the study reads metrics.csv only)."""
    return json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(save_dir), "name": name, "version": version}})


def head_of_dataset(data: Path, out: Path, docs: int) -> Path:
    """The first ``docs`` training and ``docs // 10`` test documents of an AttentionXML-form directory."""
    import gzip
    import itertools

    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", docs), ("test", max(1, docs // 10))):
        for name in (f"{split}_raw_texts.txt", f"{split}_labels.txt"):
            plain, packed = data / name, data / f"{name}.gz"
            opener = gzip.open if packed.exists() and not plain.exists() else open
            with opener(packed if opener is gzip.open else plain, "rt", encoding="utf-8") as f:
                (out / name).write_text("".join(itertools.islice(f, n)), encoding="utf-8")
    return out


def best_checkpoint(last: Path) -> Path:
    """The best-by-val/nDCG@5 checkpoint that ``last.ckpt``'s ModelCheckpoint state names (itself if none):
    after a resume the best file may lie in an earlier attempt's directory."""
    import torch

    state = torch.load(last, map_location="cpu", weights_only=False).get("callbacks", {})
    for key, cb in state.items():
        if key.startswith("ModelCheckpoint") and "val/nDCG@5" in key and cb.get("best_model_path"):
            best = Path(cb["best_model_path"])
            if best.is_file():
                return best
    return last


def choose_min_labels_per_bin(checkpoints: dict[str, str], data_dir: str, cap: int, k: int = 5,
                              batch_size: int = 256) -> dict[str, Any]:
    """The largest L <= ``cap`` that splits the correctly classified test labels into >= 5 frequency bins,
    for the normal model alone and for the pairs all models share (a weak model gets few labels right,
    so the paper's L = 100 would leave one or two bins)."""
    import numpy as np

    from xmtc.attack.selection import correct_pairs, frequency_bins, predicted_topk_of
    from xmtc.data.readers import read_split
    from xmtc.models import AttentionXML

    test = read_split(data_dir, "test")
    tops: dict[str, np.ndarray] = {}
    label_ids = freqs = None
    for name, path in checkpoints.items():
        model = AttentionXML.load_from_checkpoint(path, map_location="cpu").eval()
        if label_ids is not None and model.label_stats.label_ids != label_ids:
            raise ValueError(f"{path}: another label space than the other checkpoints'; compare models of one dataset")
        label_ids, freqs = model.label_stats.label_ids, np.asarray(model.label_stats.freqs)
        tops[name] = predicted_topk_of(model, test.texts, k, batch_size)
    index = {lab: i for i, lab in enumerate(label_ids)}
    labels = [np.array([index[x] for x in y if x in index], dtype=np.int64) for y in test.labels]

    def choose(chosen: np.ndarray) -> dict[str, Any]:
        targets = np.unique(chosen[:, 1])
        if len(targets) == 0:
            return {"min_labels_per_bin": 1, "bins": [], "labels": 0, "pairs": 0}
        best = 1
        for size in range(cap, 0, -1):
            if len(frequency_bins(freqs, targets, size)) >= MIN_BINS:
                best = size
                break
        bins = frequency_bins(freqs, targets, best)
        return {"min_labels_per_bin": best, "bins": [b.name for b in bins], "labels": len(targets),
                "pairs": len(chosen)}

    pairs = {name: correct_pairs([top], labels, len(index)) for name, top in tops.items()}
    common = correct_pairs(list(tops.values()), labels, len(index))
    return {"normal": choose(pairs["normal"]), "compare": choose(common),
            "correct_pairs": {name: len(p) for name, p in pairs.items()}}


# -- the report: from the run's files only --

def _read_metrics(path: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning CSV logger's metrics.csv."""
    out: dict[str, float] = {}
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


def _fit_progress(root: Path) -> str:
    rows: list[dict[str, str]] = []
    for m in sorted(root.glob("fit-*/metrics.csv")):
        with open(m, newline="") as f:
            rows += list(csv.DictReader(f))
    if not rows:
        return "-"
    steps = max(int(r["step"]) for r in rows if r.get("step"))
    epochs = max(int(r["epoch"]) for r in rows if r.get("epoch"))
    best = max((float(r["val/nDCG@5"]) for r in rows if r.get("val/nDCG@5")), default=float("nan"))
    return f"{steps + 1} steps, epoch {epochs + 1}, best val nDCG@5 {100 * best:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


CI_NOTE = ("In brackets: the 95% Wilson score interval of each success rate (k successes of n attacked; "
           "`xmtc.attack.report.wilson_interval`).")


def _with_intervals(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """An attack's summary.json with every rate's count and Wilson interval (filled in from the rate and n when
    the run predates them), so an older run's report gets intervals too."""
    if summary is None:
        return None
    from xmtc.attack.report import with_intervals

    for g in summary.get("groups", []):
        g["overall"] = with_intervals(g["overall"])
        g["bins"] = [with_intervals(b) for b in g["bins"]]
        if g["overall"].get("paper"):
            g["overall"]["paper"] = with_intervals(g["overall"]["paper"], ("success_rate", "success_rate_similar"),
                                                   n=g["overall"]["attacked"])
    return summary


def _rate(stats: dict[str, Any], key: str) -> str:
    """A rate in percent with its interval, for the tables: ``94.00 [88.9, 96.8]``."""
    from xmtc.attack.report import format_rate

    return format_rate(stats, key)


def _pct_ci(stats: dict[str, Any], key: str) -> str:
    """A rate in percent with its interval, for the findings' sentences: ``94.00% [88.9, 96.8]``."""
    text = _rate(stats, key)
    return text.replace(" [", "% [", 1) if "[" in text else f"{text}%"


BIN_TABLE = ("| run | model | attack | bin (train freq.) | attacked | success (%) [95% CI] | "
             "Figure 2 success (%) [95% CI] |")


def bin_table(attacks: dict[str, Any], runs: Sequence[str]) -> list[str]:
    """Per run, model and bin: n attacked, success within the change budget and Figure 2's, with intervals."""
    lines = [BIN_TABLE, "|---|---|---|---|---:|---:|---:|"]
    for run in runs:
        for g in (attacks.get(run) or {}).get("groups", []):
            for b in g["bins"]:
                lines.append(f"| {run} | {g['model']} | {g['kind']} | {b['bin']} | {b['attacked']} | "
                             f"{_rate(b, 'success_rate_change_budget')} | {_rate(b, 'success_rate_strict')} |")
    return lines


def attack_rows(summary: dict[str, Any] | None, kind: str, label: str, failed: str | None = None) -> list[str]:
    """Table 3 / 5 rows of one attack run: n attacked, success within the change budget with its interval,
    similarity, change rate and queries."""
    rows = []
    for g in (summary or {}).get("groups", []):
        if g["kind"] == kind:
            o = g["overall"]
            rows.append(f"| {label} | {g['model']} | {o['attacked']} | {_rate(o, 'success_rate_change_budget')} "
                        f"| {_fmt(o['mean_similarity'], 3)} | {_pct(o['mean_change_rate'])} "
                        f"| {_fmt(o['mean_queries'], 0)} |")
    return rows or [f"| {label} | {'failed: ' + failed if failed else '(not run yet)'} | | | | | |"]


def figure2(summary: dict[str, Any], measure: str, figure: Path) -> Path:
    """Figure 2: the loss comparison's Figure 2 success rate by label frequency, with 95% Wilson error bars."""
    from xmtc.attack.report import TABLE_CHANGE_RATE, plot_success_by_frequency

    return plot_success_by_frequency(
        summary, figure, kind="positive",
        title=f"EURLEX57K, positive-targeted, same pairs for all models; success: similarity > "
              f"{summary['similarity_threshold']:g} ({measure}), change rate < {100 * TABLE_CHANGE_RATE:g}%")


def figure2_from_report(report: Path) -> dict[str, Any]:
    """Redraw ``report``'s Figure 2 PNG from the per-bin counts the report prints (its ``compare-losses`` rows of
    the per-bin table: n attacked and the Figure 2 rate, so k = rate × n), for when the run's files are gone.
    Returns the summary drawn."""
    import re

    from xmtc.attack.report import interval_fields

    text = report.read_text(encoding="utf-8")
    measure = re.search(r"similarity: \*\*(.+?)\*\*", text)
    threshold = re.search(r"threshold ([0-9.]+)", text)
    if BIN_TABLE not in text or not measure or not threshold:
        raise ValueError(f"{report}: no per-bin table ({BIN_TABLE!r}) or no 'similarity: **...**, threshold ...' in "
                         "its attack settings: regenerate it with scripts/study_eurlex.py --report-only")
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in text.split(BIN_TABLE, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        run, model, kind, bin_, n, _, strict = (c.strip() for c in line.strip("|").split("|"))
        if run != "compare-losses" or kind != "positive" or strict == "-":
            continue
        n, rate = int(n), float(strict.split()[0])
        k = round(rate * n / 100)
        if f"{100 * k / n:.2f}" != f"{rate:.2f}":
            raise ValueError(f"{report}: {line!r}: {rate}% of {n} is no whole number of successes")
        groups.setdefault(model, []).append({"bin": bin_, "attacked": n, "successes_strict": k,
                                             "success_rate_strict": k / n, **interval_fields("success_rate_strict",
                                                                                             k, n)})
    if not groups:
        raise ValueError(f"{report}: no compare-losses rows in its per-bin table: nothing to draw")
    summary = {"similarity_threshold": float(threshold.group(1)), "similarity_measure": measure.group(1),
               "groups": [{"model": m, "kind": "positive", "bins": b} for m, b in groups.items()]}
    figure2(summary, measure.group(1), report.parent / f"{report.stem}_figure2.png")
    return summary


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _group(summary: dict[str, Any] | None, model: str, kind: str) -> dict[str, Any] | None:
    for g in (summary or {}).get("groups", []):
        if g["model"] == model and g["kind"] == kind:
            return g
    return None


def _compare_rates(a: dict[str, Any], b: dict[str, Any], key: str) -> tuple[float, float, float]:
    """Rates of two groups and 2 standard errors of their difference (normal approximation)."""
    pa, pb = a[key] or 0.0, b[key] or 0.0
    se = math.sqrt(pa * (1 - pa) / max(a["attacked"], 1) + pb * (1 - pb) / max(b["attacked"], 1))
    return pa, pb, 2 * se


def _verdict(holds: bool, diff: float, noise: float) -> str:
    if abs(diff) <= noise:
        return "**not measurable here** (the difference is within 2 standard errors)"
    return "**holds**" if holds else "**does not hold**"


def findings(attacks: dict[str, Any]) -> list[str]:
    """One line per paper finding, with the numbers it rests on (Table 3 rates, Figure 2 rates per bin)."""
    lines = []
    budget, strict = "success_rate_change_budget", "success_rate_strict"
    pos = _group(attacks.get("positive"), "normal", "positive")
    neg = _group(attacks.get("negative-clusters"), "normal", "negative")
    neg_free = _group(attacks.get("negative-no-clusters"), "normal", "negative")
    if pos:
        rate = pos["overall"][budget] or 0.0
        lines.append(f"1. *XMTC models are very vulnerable to positive-targeted attacks*: "
                     f"{'**holds**' if rate >= 0.5 else '**does not hold**'}: {_pct_ci(pos['overall'], budget)} of "
                     f"{pos['overall']['attacked']} positive attacks on the normal model succeed within the "
                     f"change budget (taken as holding from 50% up).")
    if pos and neg:
        p, n, noise = _compare_rates(pos["overall"], neg["overall"], budget)
        lines.append(f"2. *Much less vulnerable to negative-targeted attacks*: {_verdict(n < p, p - n, noise)}: "
                     f"negative {_pct_ci(neg['overall'], budget)} (n = {neg['overall']['attacked']}) vs positive "
                     f"{_pct_ci(pos['overall'], budget)} "
                     f"(n = {pos['overall']['attacked']}).")
    if neg and neg_free:
        c, f, noise = _compare_rates(neg["overall"], neg_free["overall"], budget)
        lines.append(f"3. *Label clusters help the negative attacker*: {_verdict(c > f, c - f, noise)}: "
                     f"{_pct_ci(neg['overall'], budget)} with the cluster restriction (n = "
                     f"{neg['overall']['attacked']}) vs {_pct_ci(neg_free['overall'], budget)} "
                     f"without (n = {neg_free['overall']['attacked']}).")
    if pos and len(pos["bins"]) >= 2:
        tail, head = pos["bins"][0], pos["bins"][-1]
        t, h, noise = _compare_rates(tail, head, strict)
        lines.append(f"4. *Tail labels are far more vulnerable than head labels* (Figure 2 rate, normal model): "
                     f"{_verdict(t > h, t - h, noise)}: {_pct_ci(tail, strict)} in the rarest bin ({tail['bin']} "
                     f"training documents, n = {tail['attacked']}) vs {_pct_ci(head, strict)} in the most frequent "
                     f"({head['bin']}, "
                     f"n = {head['attacked']}).")
    cmp_ = attacks.get("compare-losses")
    base = _group(cmp_, "normal", "positive")
    for other, label in (("pw", "PW"), ("pwcb", "PW-cb")):
        g = _group(cmp_, other, "positive")
        if base and g and base["bins"] and g["bins"]:
            b, o, noise = _compare_rates(base["bins"][0], g["bins"][0], strict)
            lines.append(f"{4 + (1 if other == 'pw' else 2)}. *{label} makes tail labels more robust* (same pairs "
                         f"for all models, rarest bin {base['bins'][0]['bin']}): {_verdict(o < b, b - o, noise)}: "
                         f"{_pct_ci(g['bins'][0], strict)} for {label} vs {_pct_ci(base['bins'][0], strict)} for "
                         f"normal (n = {g['bins'][0]['attacked']} each).")
    return lines


def _excerpt(row: dict[str, Any], width: int = 8) -> str:
    """The words around the changes, changed words as ~~old~~ **new**."""
    words = row["original_text"].split()
    changes = {c["position"]: c for c in row["changes"]}
    keep = sorted({i for p in changes for i in range(max(0, p - width), min(len(words), p + width + 1))})
    out, last = [], -2
    for i in keep:
        if i != last + 1:
            out.append("...")
        out.append(f"~~{words[i]}~~ **{changes[i]['new']}**" if i in changes else words[i])
        last = i
    return " ".join(out + (["..."] if keep and keep[-1] < len(words) - 1 else []))


def examples(rows: list[dict[str, Any]], names: dict[str, str], count: int = 3) -> list[str]:
    """Table 6 style: successful attacks on the rarest target labels, one per document."""
    found = sorted((r for r in rows if r["success"] and r["changes"]),
                   key=lambda r: (r["target_train_freq"], r["change_rate"]))
    lines, seen = [], set()
    for r in found:
        if r["doc_id"] in seen:
            continue
        seen.add(r["doc_id"])
        before = "; ".join(names.get(x, x) for x in r["topk_before"])
        after = "; ".join(names.get(x, x) for x in r["topk_after"])
        sim = "-" if r.get("similarity") is None else f"{r['similarity']:.3f}"
        lines += [f"**{r['model']}, {r['kind']}, document {r['doc_id']}**, target *{r['target_name']}* "
                  f"({r['target_train_freq']} training documents), rank {r['rank_before']} -> {r['rank_after']}, "
                  f"{len(r['changes'])} word(s) changed ({_pct(r['change_rate'])}%), similarity {sim}:", "",
                  f"> {_excerpt(r)}", "", f"- top 5 before: {before}", f"- top 5 after: {after}", ""]
        if len(seen) == count:
            break
    return lines or ["(no successful attack with changes in this run)", ""]


def write_report(out: Path, report: Path, data_dir: Path) -> Path:
    """docs/study_eurlex.md (and its Figure 2 PNG beside it) from the files of a study run."""
    report.parent.mkdir(parents=True, exist_ok=True)
    study = _load(out / "study.json") or {}
    steps = _load(out / "steps.json") or {}
    bins = _load(out / "attacks" / "bins.json") or {}
    quality = _load(Path(study.get("masked_lm", "")) / "quality.json") if study.get("masked_lm") else None
    names = {}
    if (data_dir / "label_names.tsv").exists():
        for line in (data_dir / "label_names.tsv").read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                key, name = line.split("\t", 1)
                names[key] = name
    attack_names = ("positive", "negative-clusters", "negative-no-clusters", "compare-losses")
    attacks = {n: _with_intervals(_load(out / "attacks" / n / "summary.json")) for n in attack_names}
    runs = {n: _load(out / "attacks" / n / "run.json") for n in attack_names}
    settings = next((r["settings"] for r in runs.values() if r), {})
    measure = next((s["similarity_measure"] for s in attacks.values() if s), None) or "-"
    rel = os.path.relpath(out, report.parent)
    lines = [
        "# The paper's study on EURLEX57K: normal vs PW vs PW-cb",
        "",
        f"Generated by `{study.get('command') or 'python scripts/study_eurlex.py'}` (`make study-eurlex`) from the "
        f"files of its run directory `{rel}`; rerunning the command regenerates this page (every step whose "
        "output exists is skipped). Scale: "
        f"**{study.get('scale', '?')}**: {study.get('scale_note', '')}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {_gpu()}, Python {platform.python_version()}, "
        f"torch {_version('torch')}, lightning {_version('lightning')}; report written "
        f"{dt.datetime.now().isoformat(timespec='minutes')}.",
        "",
        "## Models (test split)",
        "",
        "| loss | training | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for loss in LOSSES:
        m = _read_metrics(out / "test" / loss / "run" / "metrics.csv")
        lines.append(f"| {loss} | {_fit_progress(out / 'train' / loss)} | "
                     + " | ".join(_pct(m.get(f"test/{k}")) for k in METRICS) + " |")
    lines += ["", "## Attack settings", ""]
    if settings:
        lines.append(f"k = {settings['k']}, θ = {100 * settings['max_change_rate']:g}% of the words, masked LM "
                     f"`{settings['masked_lm']}` ({settings['candidates']} candidates, {settings['mlm_mode']} mode), "
                     f"similarity: **{measure}**, "
                     f"threshold {settings['similarity_threshold']}, "
                     f"up to {settings['samples_per_bin']} pairs per bin.")
    if quality:
        keys = [k for k in quality if k.startswith("top")]
        lines.append("Masked LM quality (a masked held-out word among its top-K predictions): "
                     + ", ".join(f"{k.split('_')[0]} {100 * quality[k]:.1f}%" for k in keys) + ".")
    for key, what in (("normal", "normal model's"), ("compare", "pairs all three models share")):
        b = bins.get(key)
        if b:
            flag = "" if len(b["bins"]) >= MIN_BINS else f" (**fewer than {MIN_BINS} bins**: too few labels right)"
            lines.append(f"Bins ({what} {b['pairs']} correct pairs over {b['labels']} labels): L = "
                         f"{b['min_labels_per_bin']} labels per bin gives {len(b['bins'])} bins "
                         f"{', '.join(b['bins'])}{flag}.")
    lines += ["", "## Table 3: positive-targeted attacks", "",
              f"Success within the change budget; similarity ({measure}) and change rate of the adversarial "
              f"examples found; the loss comparison attacks the same pairs for every model. {CI_NOTE}", "",
              "| run | model | attacked | success rate (%) [95% CI] | similarity | change rate (%) | queries |",
              "|---|---|---:|---:|---:|---:|---:|"]

    def table_rows(run: str, kind: str, label: str) -> list[str]:
        return attack_rows(attacks.get(run), kind, label, steps.get(f"attack-{run}", {}).get("failed"))

    lines += table_rows("positive", "positive", "positive")
    lines += table_rows("compare-losses", "positive", "loss comparison")
    lines += ["", "## Table 5: negative-targeted attacks (normal model)", "",
              "| run | model | attacked | success rate (%) [95% CI] | similarity | change rate (%) | queries |",
              "|---|---|---:|---:|---:|---:|---:|"]
    lines += table_rows("negative-clusters", "negative", "with label clusters")
    lines += table_rows("negative-no-clusters", "negative", "without clusters")
    lines += ["", "## Figure 2: success rate by label frequency", ""]
    cmp_ = attacks.get("compare-losses")
    if cmp_:
        figure = figure2(cmp_, measure, report.parent / f"{report.stem}_figure2.png")
        lines += [f"![Figure 2]({figure.name})", "",
                  "Error bars: 95% Wilson score intervals (the models' points are set slightly apart).", ""]
    lines += ["Per bin (training frequency): success within the change budget and Figure 2's (also similarity > "
              f"threshold), of n pairs attacked per model. {CI_NOTE}", ""]
    lines += bin_table(attacks, attack_names)
    lines += ["", "## Table 6: adversarial examples on tail labels", ""]
    lines += examples(_rows(out / "attacks" / "positive" / "results.jsonl")
                      + _rows(out / "attacks" / "negative-clusters" / "results.jsonl"), names)
    lines += ["## The paper's findings here", ""]
    if study.get("scale") == "smoke":
        lines += ["(A smoke run: the models are untrained and the samples tiny, so none of this is evidence.)", ""]
    found = findings(attacks)
    lines += ["Rates in percent, 95% Wilson score interval in brackets.", "", *found] if found else \
        ["(no attack results yet)"]
    lines += ["", "## Steps: wall-clock and commands", "", "| step | wall-clock | finished |", "|---|---:|---|"]
    total = 0.0
    for name, s in steps.items():
        if "failed" in s:
            lines.append(f"| {name} | failed after {_duration(s['seconds_before_resume'])}: {s['failed']} | |")
    steps = {name: s for name, s in steps.items() if "seconds" in s}  # stopped ones are not done
    for name, s in steps.items():
        total += s["seconds"]
        lines.append(f"| {name} | {_duration(s['seconds'])} | {s['finished']} |")
    lines += [f"| **total** | {_duration(total)} | |", "", "```bash"]
    for name, s in steps.items():
        lines += [f"# {name}", *s["commands"]]
    lines += ["```", ""]
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 (a report line, not a failure)
        return "?"


def _gpu() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001
        return "no GPU"


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--data", default="data/eurlex57k")
    p.add_argument("--out", default=None, help="run directory (default logs/study-eurlex-<scale>)")
    p.add_argument("--report", default=None,
                   help="report file (default docs/study_eurlex.md; <out>/study_eurlex.md for --scale smoke)")
    p.add_argument("--masked-lm", default=None, help="a real masked LM (name or local path): skips the mlm step")
    p.add_argument("--mlm-steps", type=int, default=None)
    p.add_argument("--encoder", default="sentence-transformers", choices=["sentence-transformers", "use"])
    p.add_argument("--encoder-path", default=None, help="encoder path/handle (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--similarity-measure", default="cosine", choices=["cosine", "angular", "arccos"],
                   help="cosine for MiniLM; the paper (USE-large) used arccos")
    p.add_argument("--samples-per-bin", type=int, default=None)
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--attack-args", default="", help="more --settings.* overrides for the attacks, one string")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the run's files")
    p.add_argument("--redraw-figure2", metavar="REPORT", default=None,
                   help="only redraw REPORT's Figure 2 PNG from the per-bin counts REPORT prints (no run files needed)")
    p.add_argument("--in-process", action="store_true", help="run the xmtc commands in this process (tests)")
    p.add_argument("extra", nargs="*", help="more xmtc overrides for every fit/test/attack (after --)")
    a = p.parse_args(argv)
    # every path relative to the repository (the commands run there and are recorded that way)
    a.out = _rel(a.out or f"logs/study-eurlex-{a.scale}")
    a.data = _rel(a.data)
    a.report = _rel(a.report) if a.report else None
    a.masked_lm = _rel(a.masked_lm) if a.masked_lm and Path(a.masked_lm).exists() else a.masked_lm
    a.encoder_path = _rel(a.encoder_path) if a.encoder_path and Path(a.encoder_path).exists() else a.encoder_path
    if a.redraw_figure2:  # needs nothing else: no run directory, no data
        report = Path(a.redraw_figure2)
        figure2_from_report(report)
        return report.parent / f"{report.stem}_figure2.png"
    os.chdir(REPO)
    study = Study(a)
    if a.report_only:
        report = Path(a.report) if a.report else (
            study.out / "study_eurlex.md" if a.scale == "smoke" else Path("docs/study_eurlex.md"))
        return write_report(study.out, report, Path(a.data))
    return study.all()


if __name__ == "__main__":
    main()
