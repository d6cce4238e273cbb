#!/usr/bin/env python
"""The paper's study (Qaraei & Babbar 2021) on EURLEX57K with the project's own commands, step by step.

    python scripts/study_eurlex.py --scale cpu       # make study-eurlex; rerun after a stop to resume
    python scripts/study_eurlex.py --scale smoke --out logs/study-smoke   # the whole pipeline in minutes

Two models, as in the paper: AttentionXML (``axml``) and APLC-XLNet (``aplc``: at the cpu and smoke scales a
small XLNet trained from scratch with a tokenizer the project trains, configs/demo_aplc.yaml's recipe), each with
the normal, PW and PW-cb losses on the same step budget per model.

Steps, one model and loss at a time, loss by loss (each skipped when its output exists, so a stopped study resumes
where it stopped; with --store DIR on a fresh machine too, scripts/run_store.py):
  tokenizer      python -m xmtc.data.train_tokenizer: APLC-XLNet's subword tokenizer on the training split;
  fit-M-L-partI  python -m xmtc fit for model M and loss L, one part (one "epoch" of limit_train_batches steps,
                 validated at its end) per command, each part resuming from the last one's last.ckpt (a crashed
                 part resumes from its own); the learning rate is constant after a warm-up, so more parts extend
                 the same run;
  test-M-L       python -m xmtc test on the best checkpoint (P@k, nDCG@5, PSP@k from the CSV logger);
  bins           per model, L (min_labels_per_bin): the finest binning of the correctly classified test pairs
                 in which every bin holds at least --samples-per-bin pairs (the paper's binning walks up from the
                 rarest label a model gets right, so the rarest bin holds it);
  mlm            python -m xmtc.attack.mlm --init minilm, when the attacks need it: the masked LM for substitutions,
                 fine-tuned from the pretrained all-MiniLM-L6-v2 of xmtc[minilm] on the training split (--mlm-init
                 scratch: trained from scratch; --masked-lm names a real one, e.g. a local bert-base-cased copy, and
                 skips the step);
  attack-M-*     python -m xmtc attack: positive; negative with and without label clusters (normal model);
                 the loss comparison on pairs all three models classify correctly (--compare, paper §4.3.2);
                 an interrupted attack resumes by itself from its results.jsonl;
  report         the models with their validation curves, Table 3 / Table 5 / Figure 2 / Table 6, and a verdict
                 on each of the paper's findings F1-F6 with its 95% interval, written only from the run's files
                 (--report-only rewrites it; --redraw-figure2 REPORT redraws the figure from the counts REPORT
                 prints, when the run's files are gone).

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
sys.path.insert(0, str(REPO / "scripts"))

import run_store  # noqa: E402 (the sibling script: the durable store of a long run)

LOSSES = ("normal", "pw", "pwcb")
MODELS = ("axml", "aplc")
MODEL_NAMES = {"axml": "AttentionXML", "aplc": "APLC-XLNet"}
METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")
MIN_BINS = 5
# the attack runs per model: (kinds, negative label clusters, the loss comparison)
ATTACK_SETTINGS = {"positive": ("[positive]", True, False), "negative-clusters": ("[negative]", True, False),
                   "negative-no-clusters": ("[negative]", False, False), "compare-losses": ("[positive]", True, True)}
ATTACKS = tuple(ATTACK_SETTINGS)
REWEIGHTED_SHARE = 0.8  # PW and PW-cb are compared once their validation P@5 reaches this share of normal's
Z95, Z80 = 1.959964, 0.841621  # two-sided 95%; power 80%: the detectable effect is (Z95 + Z80) standard errors


@dataclass
class Scale:
    """How big the models, training and attacks are: what the machine allows decides it."""

    model: list[str]  # AttentionXML's overrides of configs/axml_eurlex_<loss>.yaml
    trainer: list[str]  # both models: the size of one part (limit_train_batches) and the validation
    mlm_steps: int
    samples_per_bin: int
    candidates: int
    # the largest L tried: at L = 100, AttentionXML normal (cpu scale) got 150 test pairs right in its rarest bin
    # (3-18 training documents; measured 2026-12-08); 200 pairs in every bin need coarser bins
    max_labels_per_bin: int = 200
    attack: list[str] = field(default_factory=list)
    mlm_docs: int | None = None  # train the masked LM on the first N training documents only (smoke)
    parts: int | None = None  # fit commands per model and loss, one epoch each; None: the configs' max_epochs
    aplc_model: list[str] = field(default_factory=list)  # APLC-XLNet's overrides of configs/aplc_eurlex_<loss>.yaml
    tokenizer: list[str] = field(default_factory=list)  # python -m xmtc.data.train_tokenizer options
    loss_args: dict[str, list[str]] = field(default_factory=dict)  # per loss, both models; --loss-args adds to it
    note: str = ""


def _aplc_small(d_model: int, layers: int, heads: int, inner: int, warmup_steps: int) -> list[str]:
    """A small XLNet trained from scratch as in configs/demo_aplc.yaml (prior bias, mean pooling, larger steps),
    on the CPU, with a constant learning rate after a linear warm-up: the same schedule whatever the number of
    parts (the configs' linear decay is set from max_epochs, which grows with every part)."""
    schedule = {"class_path": "torch.optim.lr_scheduler.LinearLR",
                "init_args": {"start_factor": 0.05, "end_factor": 1.0, "total_iters": warmup_steps}}
    return [f"--model.init_args.encoder_config={{d_model: {d_model}, n_layer: {layers}, n_head: {heads}, "
            f"d_inner: {inner}, dropout: 0.1}}",
            "--model.init_args.summary_pooling=mean", "--model.init_args.prior_bias=true",
            "--model.init_args.lr_encoder=0.001", "--model.init_args.lr_summary=0.001",
            "--model.init_args.lr_head=0.003", f"--model.init_args.lr_scheduler={json.dumps(schedule)}",
            "--trainer.precision=32", "--trainer.strategy=auto", "--trainer.devices=1"]


SCALES: dict[str, Scale] = {
    # the configs as they are (AttentionXML's sizes, 30 epochs, early stopping; APLC-XLNet on xlnet-base-cased): GPUs
    "paper": Scale(model=[], trainer=[], mlm_steps=300, samples_per_bin=200, candidates=48,
                   note="configs/axml_eurlex_*.yaml and configs/aplc_eurlex_*.yaml as they are (AttentionXML's "
                        "EUR-Lex sizes, 30 epochs with early stopping on val/nDCG@5; APLC-XLNet on a local "
                        "xlnet-base-cased copy, 8 epochs), one fit command per model and loss"),
    # what 2 CPU cores allow: parts of 1,000 steps (~25 min AttentionXML, ~35 min APLC-XLNet), validated after each
    "cpu": Scale(
        model=["--model.init_args.embedding_dim=100", "--model.init_args.hidden_size=64",
               "--model.init_args.linear_sizes=[128]", "--model.init_args.dropout=0.3",
               "--model.init_args.optimizer.init_args.lr=0.002", "--data.init_args.max_length=128",
               "--data.init_args.max_vocab_size=50000", "--data.init_args.min_word_freq=2",
               "--data.init_args.batch_size=32", "--data.init_args.eval_batch_size=128"],
        # "epochs" of 1,000 random batches (the loader reshuffles every epoch): a step budget, not a time limit,
        # so every loss of a model gets the same training
        trainer=["--trainer.limit_train_batches=1000", "--trainer.val_check_interval=1.0",
                 "--trainer.log_every_n_steps=50"],
        # 6 parts: the first run's curves to 8,000 steps (docs/study_eurlex_first_run.md) put every reweighted run
        # above 90% of normal's validation P@5 by 4,000 and AttentionXML normal within 1.5 points of its 8,000-step
        # P@5 at 6,000 (APLC-XLNet flat by then); the two parts more would cost ~2 hours on a slower 2-core machine
        parts=6, mlm_steps=300, samples_per_bin=200, candidates=32,
        aplc_model=[*_aplc_small(128, 2, 4, 256, 400), "--data.init_args.max_length=128",
                    "--data.init_args.batch_size=32", "--data.init_args.eval_batch_size=64"],
        tokenizer=["--max-length", "128"],
        # measured on the demo subset (docs/reweighted_losses.md, scripts/probe_losses.py): PW learns faster with
        # its positives at the normal loss's mass (92% of normal's val P@5 after 4 epochs, against 83%)
        loss_args={loss: ["--model.init_args.loss.init_args.normalize=positives"] for loss in ("pw", "pwcb")},
        note="a CPU-sized AttentionXML (embeddings 100, BiLSTM 64, MLP [128], first 128 words, vocabulary 50k) "
             "and a small APLC-XLNet from scratch (XLNet d_model 128, "
             "2 layers, first 128 subword tokens, the project's 8,000-token tokenizer); PW and PW-cb with their "
             "positive weights at the normal loss's mass (normalize=positives); per model and loss 6 parts of "
             "1,000 steps of 32 documents (4.3 epochs), validation after each part"),
    # tiny: the whole pipeline end to end in minutes, numbers meaningless
    "smoke": Scale(
        model=["--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16",
               "--model.init_args.linear_sizes=[32]", "--data.init_args.max_length=48",
               "--data.init_args.max_vocab_size=20000", "--data.init_args.min_word_freq=2",
               "--data.init_args.batch_size=64", "--data.init_args.eval_batch_size=500",
               "--model.init_args.optimizer.init_args.lr=0.01"],
        trainer=["--trainer.limit_train_batches=15", "--trainer.limit_val_batches=2",
                 "--trainer.log_every_n_steps=5"],
        parts=2, mlm_steps=20, mlm_docs=2000, samples_per_bin=2, candidates=8,
        attack=["--settings.documents_at_once=4"],
        aplc_model=[*_aplc_small(16, 1, 2, 32, 5), "--data.init_args.max_length=48",
                    "--data.init_args.batch_size=64", "--data.init_args.eval_batch_size=500"],
        tokenizer=["--max-length", "48", "--vocab-size", "2000"],
        note="smoke test only: tiny models, 2 parts of 15 training batches; the numbers mean nothing"),
}


# -- the step machinery --

class StepFailed(RuntimeError):
    """A command of a step exited with an error."""


class OutOfTime(RuntimeError):
    """The run's --hours are spent: the study stops where a rerun resumes (a fit part is not started unless the
    time left holds the wall-clock of the model's latest part; an attack is stopped and resumes from its
    results.jsonl)."""


class Steps:
    """Runs the steps, records commands and wall-clock in ``steps.json``, skips what is done (the study's and
    ``scripts/robust_training.py``'s). ``args``: ``out``, ``in_process`` and optionally ``hours`` and ``store`` (a
    durable store, ``scripts/run_store.py``: restored from at the start, saved to after every step)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.out = Path(args.out)
        self.store = Path(args.store) if getattr(args, "store", None) else None
        if self.store is not None:
            restored = run_store.restore(self.store, REPO)
            if restored:
                print(f"[study] restored {len(restored)} files from the store {self.store}", flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.steps_file = self.out / "steps.json"
        self.steps: dict[str, Any] = json.loads(self.steps_file.read_text()) if self.steps_file.exists() else {}
        self.failed: list[str] = []
        hours = getattr(args, "hours", None)
        self.deadline = time.monotonic() + 3600 * hours if hours else None

    def store_contents(self) -> tuple[list[Path], list[Path], dict[Path, run_store.Keep]]:
        """What the store keeps: folders of small files, whole folders, checkpoints and their form."""
        return [self.out], [], {}

    def save_store(self) -> None:
        if self.store is not None:
            dirs, whole, checkpoints = self.store_contents()
            run_store.save(self.store, REPO, dirs, whole, checkpoints)

    def time_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def _expected_seconds(self, name: str) -> float:
        """A fit part is expected to take what the model's most recently finished part (``fit-M-...``, any loss)
        took: the parts of a model are alike, and the latest reflects how busy the cores are now (an earlier part
        run beside other jobs took twice as long). 0 when none is known and for other steps."""
        head, sep, part = name.rpartition("-part")
        if not sep or not part.isdigit():
            return 0.0
        model = "-".join(head.split("-")[:2]) + "-"  # fit-axml-
        finished = [s for n, s in self.steps.items() if n.startswith(model) and "-part" in n and "seconds" in s]
        return float(max(finished, key=lambda s: s.get("finished", ""))["seconds"]) if finished else 0.0

    def step(self, name: str, done: Callable[[], bool], body: Callable[[list[list[str]]], None]) -> None:
        if done():
            print(f"[study] {name}: done before, skipped")
            return
        if self.time_left() < self._expected_seconds(name):
            raise OutOfTime(f"{name} would not finish in the {self.time_left() / 60:.0f} minutes left")
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
            self.save_store()
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
        self.save_store()
        print(f"[study] {name}: {seconds:.0f} s", flush=True)

    def run(self, commands: list[list[str]], argv: list[str]) -> None:
        """Run ``python -m MODULE ...`` (in this process with --in-process, for the tests)."""
        commands.append(["python", *argv])
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        if not self.a.in_process:
            proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
            tail: list[str] = []
            timer = None
            if self.deadline is not None:  # stopped at the deadline: the step resumes from its files next time
                import threading

                timer = threading.Timer(max(self.time_left(), 0.0), proc.terminate)
                timer.start()
            try:
                for line in proc.stderr:  # shown as it comes; the last lines say why a command failed
                    sys.stderr.write(line)
                    tail = [*tail[-19:], line.rstrip()]
                code = proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            if code and self.time_left() <= 0:
                raise OutOfTime(f"{argv[1]} {argv[2]} stopped at the end of --hours")
            if code:
                error = next((x for x in reversed(tail) if "Error" in x), tail[-1] if tail else "")
                raise StepFailed(f"{argv[1]} {argv[2]} exited with {proc.returncode}: {error}")
            return
        module, rest = argv[1], argv[2:]
        if module == "xmtc":
            from xmtc.cli import main
        elif module == "xmtc.data.train_tokenizer":
            from xmtc.data.train_tokenizer import main
        else:
            from xmtc.attack.mlm import main
        main(rest)



class Study(Steps):
    """The study's steps (``Steps``) with its scale, masked LM, tokenizer and models."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.scale = SCALES[args.scale]
        smoke = args.scale == "smoke"
        init = getattr(args, "mlm_init", "minilm")
        default_mlm = "models/mlm-minilm-eurlex57k" if init == "minilm" else "models/mlm-eurlex57k"
        self.mlm = args.masked_lm or (str(self.out / "mlm") if smoke else default_mlm)
        self.tokenizer = getattr(args, "tokenizer", None) or (str(self.out / "tokenizer") if smoke
                                                               else "models/tok-eurlex57k")
        self.models = tuple(getattr(args, "models", None) or MODELS)
        given = getattr(args, "loss_args", None) or {}
        self.loss_args = {loss: [*self.scale.loss_args.get(loss, []), *given.get(loss, [])] for loss in LOSSES
                          if self.scale.loss_args.get(loss) or given.get(loss)}

    # -- the data and model arguments every xmtc command of a model and loss shares --

    def common(self, loss: str, model: str = "axml") -> list[str]:
        if model == "aplc":
            return ["--config", f"configs/aplc_eurlex_{loss}.yaml", f"--data.init_args.data_dir={self.a.data}",
                    f"--data.init_args.tokenizer={self.tokenizer}", *self.scale.aplc_model,
                    *self.loss_args.get(loss, [])]
        return ["--config", f"configs/axml_eurlex_{loss}.yaml", f"--data.init_args.data_dir={self.a.data}",
                *self.scale.model, *self.loss_args.get(loss, [])]

    # -- steps --

    def mlm_step(self) -> None:
        if self.a.masked_lm:
            return

        def body(commands: list[list[str]]) -> None:
            data = self.a.data
            if self.scale.mlm_docs:  # tokenizing all 45,000 documents alone takes minutes
                data = str(head_of_dataset(Path(data), self.out / "mlm-data", self.scale.mlm_docs))
            init = [] if self.a.mlm_init == "scratch" else ["--init", self.a.mlm_init]
            steps = self.a.mlm_steps or (self.scale.mlm_steps if init else 5 * self.scale.mlm_steps)
            self.run(commands, ["-m", "xmtc.attack.mlm", "--data", data, "--output", self.mlm, *init,
                                "--steps", str(steps)])

        self.step("mlm", lambda: (Path(self.mlm) / "quality.json").exists(), body)

    def tokenizer_step(self) -> None:
        self.step("tokenizer", lambda: (Path(self.tokenizer) / "tokenizer.json").exists(), lambda c: self.run(c, [
            "-m", "xmtc.data.train_tokenizer", "--data", self.a.data, "--output", self.tokenizer,
            *self.scale.tokenizer]))

    def store_contents(self) -> tuple[list[Path], list[Path], dict[Path, run_store.Keep]]:
        """The run's small files, the tokenizer and masked LM the study made, and of the checkpoints: a finished
        run's best weights (what test, bins and attacks read); the unfinished run's last.ckpt whole (to resume
        training exactly) and its best weights so far (the best of the finished run may be an earlier part's)."""
        made = [*([self.tokenizer] if "aplc" in self.models else []), *([] if self.a.masked_lm else [self.mlm])]
        whole = [Path(p) for p in made if Path(p).is_dir()]
        checkpoints: dict[Path, run_store.Keep] = {}
        for model in self.models:
            for loss in LOSSES:
                root = self.fit_root(model, loss)
                if (root / "fit.json").exists():
                    checkpoints[Path(json.loads((root / "fit.json").read_text())["best"])] = "weights"
                    continue
                lasts = sorted(root.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
                if lasts:
                    checkpoints[best_checkpoint(lasts[-1])] = "weights"
                    checkpoints[lasts[-1]] = "whole"  # last.ckpt itself where it is the best
        return [self.out], whole, checkpoints

    def fit_root(self, model: str, loss: str) -> Path:
        return self.out / "train" / model / loss

    def fit_step(self, loss: str, model: str = "axml", only_part: int | None = None) -> None:
        """One command per part: part i trains up to epoch i, from the latest last.ckpt of this model and loss
        (``only_part``: that part alone)."""
        root = self.fit_root(model, loss)
        marker = root / "fit.json"
        parts = self.a.parts or self.scale.parts

        def part_body(part: int | None) -> Callable[[list[list[str]]], None]:
            def body(commands: list[list[str]]) -> None:
                attempts = sorted(root.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
                if not attempts and part and part > 1:  # training from scratch would pass for part `part`
                    raise StepFailed(f"{root}: part {part - 1} is done but no last.ckpt is there to go on from (a "
                                     "store keeps only the best weights of a finished run); train the run again")
                version = f"fit-{len(list(root.glob('fit-*'))) + 1}"
                budget = [] if part is None else [f"--trainer.max_epochs={part}"]
                argv = ["-m", "xmtc", "fit", *self.common(loss, model), *self.scale.trainer, *budget,
                        f"--trainer.logger={_csv_logger(root.parent, loss, version)}",
                        "--trainer.enable_progress_bar=false", *self.a.extra]
                if attempts:  # the previous part, or a crashed or stopped try of this one: go on from there
                    argv.append(f"--ckpt_path={attempts[-1]}")
                self.run(commands, argv)
                # a resumed fit with nothing left to do (max_epochs reached) writes no new checkpoint
                last = max(root.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
                record = {"best": str(best_checkpoint(last)), "last": str(last),
                          "resumed_from": str(attempts[-1]) if attempts else None, "parts": parts}
                if part is not None:
                    (root / f"part{part}.json").write_text(json.dumps(record, indent=2))
                if part is None or part == parts:
                    marker.write_text(json.dumps(record, indent=2))
            return body

        if parts is None:
            self.step(f"fit-{model}-{loss}", marker.exists, part_body(None))
            return
        for part in range(1, parts + 1) if only_part is None else [only_part]:
            done = root / f"part{part}.json"
            self.step(f"fit-{model}-{loss}-part{part}", done.exists, part_body(part))

    def ckpt(self, loss: str, model: str = "axml") -> str:
        return json.loads((self.fit_root(model, loss) / "fit.json").read_text())["best"]

    def test_step(self, loss: str, model: str = "axml") -> None:
        metrics = self.out / "test" / model / loss / "run" / "metrics.csv"
        self.step(f"test-{model}-{loss}", metrics.exists, lambda c: self.run(c, [
            "-m", "xmtc", "test", *self.common(loss, model),
            f"--trainer.logger={_csv_logger(self.out / 'test' / model, loss, 'run')}",
            "--trainer.enable_progress_bar=false", f"--ckpt_path={self.ckpt(loss, model)}", *self.a.extra]))

    def bins_step(self) -> None:
        path = self.out / "attacks" / "bins.json"

        def body(commands: list[list[str]]) -> None:
            commands.append(["#", "in this script: choose_bins() scores the test split with each checkpoint and "
                                  "writes attacks/bins.json"])
            path.parent.mkdir(parents=True, exist_ok=True)
            per_bin = self.a.samples_per_bin or self.scale.samples_per_bin
            path.write_text(json.dumps({model: choose_bins(
                {loss: self.ckpt(loss, model) for loss in LOSSES}, self.a.data, self.scale.max_labels_per_bin,
                per_bin) for model in self.models}, indent=2))

        self.step("bins", path.exists, body)

    def attack_step(self, name: str, kinds: str, clusters: bool, compare: bool, model: str = "axml") -> None:
        out = self.out / "attacks" / model / name
        bins = json.loads((self.out / "attacks" / "bins.json").read_text())[model]
        argv = ["-m", "xmtc", "attack", *self.common("normal", model), "--config", "configs/attack_paper.yaml",
                "--trainer.logger=false", f"--ckpt_path={self.ckpt('normal', model)}", f"--output_dir={out}",
                f"--settings.kinds={kinds}", f"--settings.negative_clusters={str(clusters).lower()}",
                f"--settings.min_labels_per_bin={bins['compare' if compare else 'normal']['min_labels_per_bin']}",
                f"--settings.samples_per_bin={self.a.samples_per_bin or self.scale.samples_per_bin}",
                f"--settings.candidates={self.a.candidates or self.scale.candidates}",
                f"--settings.masked_lm={self.mlm}", f"--settings.encoder={self.a.encoder}",
                f"--settings.encoder_path={self.a.encoder_path or 'null'}",
                f"--settings.similarity_measure={self.a.similarity_measure}",
                "--show_progress=false", *self.scale.attack, *self.a.extra, *shlex.split(self.a.attack_args)]
        if compare:
            argv.append(f"--compare={{pw: {self.ckpt('pw', model)}, pwcb: {self.ckpt('pwcb', model)}}}")
        self.step(f"attack-{model}-{name}", (out / "summary.json").exists, lambda c: self.run(c, argv))

    def run_step(self, name: str) -> None:
        """The step ``name`` of ``plan()``."""
        if name in ("mlm", "tokenizer", "bins"):
            {"mlm": self.mlm_step, "tokenizer": self.tokenizer_step, "bins": self.bins_step}[name]()
            return
        kind, model, rest = name.split("-", 2)
        if kind == "fit":
            loss, _, part = rest.partition("-part")
            self.fit_step(loss, model, only_part=int(part) if part else None)
        elif kind == "test":
            self.test_step(rest, model)
        else:
            self.attack_step(rest, *ATTACK_SETTINGS[rest], model=model)

    def all(self) -> Path:
        (self.out / "study.json").write_text(json.dumps({
            "scale": self.a.scale, "scale_note": self.scale.note, "data": self.a.data, "masked_lm": self.mlm,
            "mlm_init": None if self.a.masked_lm else self.a.mlm_init, "tokenizer": self.tokenizer,
            "models": list(self.models), "parts": self.a.parts or self.scale.parts, "loss_args": self.loss_args,
            "encoder": self.a.encoder, "encoder_path": self.a.encoder_path, "extra": self.a.extra,
            "attack_args": self.a.attack_args,
            "command": " ".join(_quote(x) for x in ["python", "scripts/study_eurlex.py", *sys.argv[1:]])
            if not self.a.in_process else None}, indent=2))
        stopped = None
        try:
            for name in plan(self.models, self.a.parts or self.scale.parts, mlm=not self.a.masked_lm):
                self.run_step(name)
        except OutOfTime as e:
            stopped = str(e)
        report = Path(self.a.report) if self.a.report else (
            self.out / "study_eurlex.md" if self.a.scale == "smoke" else Path("docs/study_eurlex.md"))
        began = time.perf_counter()
        write_report(self.out, report, data_dir=Path(self.a.data))
        print(f"[study] report: {report} ({time.perf_counter() - began:.1f} s)")
        self.save_store()
        if stopped:
            print(f"[study] stopped: {stopped}; run the same command again to go on", flush=True)
            return report
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


def choose_bins(checkpoints: dict[str, str], data_dir: str, cap: int, per_bin: int, k: int = 5,
                batch_size: int = 256) -> dict[str, Any]:
    """L (min_labels_per_bin) for the attacks on one model: for its normal loss's correct test pairs and for the
    pairs all its losses share, the smallest L <= ``cap`` whose bins each hold >= ``per_bin`` pairs (the finest
    binning that still gives every bin the pairs it is to attack); where no L does, the one whose smallest bin
    holds the most, flagged. The paper's binning walks up from the rarest target label, so the rarest bin holds
    the rarest label the attacked pairs have; ``rarest_correct`` says how rare the rarest label each loss gets
    right is (the shared pairs can only hold labels all losses get right)."""
    import numpy as np

    from xmtc.attack.selection import bin_of, correct_pairs, frequency_bins, predicted_topk_of
    from xmtc.attack.targets import checkpoint_class
    from xmtc.data.readers import read_split

    test = read_split(data_dir, "test")
    tops: dict[str, np.ndarray] = {}
    label_ids = freqs = None
    for name, path in checkpoints.items():
        model = checkpoint_class(path, None).load_from_checkpoint(path, map_location="cpu").eval()
        if label_ids is not None and model.label_stats.label_ids != label_ids:
            raise ValueError(f"{path}: another label space than the other checkpoints'; compare models of one dataset")
        label_ids, freqs = model.label_stats.label_ids, np.asarray(model.label_stats.freqs)
        tops[name] = predicted_topk_of(model, test.texts, k, batch_size)
    index = {lab: i for i, lab in enumerate(label_ids)}
    labels = [np.array([index[x] for x in y if x in index], dtype=np.int64) for y in test.labels]

    def choose(chosen: np.ndarray) -> dict[str, Any]:
        targets = np.unique(chosen[:, 1])
        if len(targets) == 0:
            return {"min_labels_per_bin": 1, "bins": [], "pairs_per_bin": [], "labels": 0, "pairs": 0,
                    "enough_pairs": False}
        found, fallback = None, (-1, 1)
        for size in range(1, min(cap, len(targets)) + 1):
            bins = frequency_bins(freqs, targets, size)
            smallest = int(np.bincount(bin_of(freqs, bins)[chosen[:, 1]], minlength=len(bins)).min())
            if smallest >= per_bin:
                found = size
                break
            if smallest > fallback[0]:
                fallback = (smallest, size)
        size = found or fallback[1]
        bins = frequency_bins(freqs, targets, size)
        counts = np.bincount(bin_of(freqs, bins)[chosen[:, 1]], minlength=len(bins))
        return {"min_labels_per_bin": size, "bins": [b.name for b in bins], "pairs_per_bin": counts.tolist(),
                "labels": len(targets), "pairs": len(chosen), "enough_pairs": found is not None}

    pairs = {name: correct_pairs([top], labels, len(index)) for name, top in tops.items()}
    common = correct_pairs(list(tops.values()), labels, len(index))
    return {"normal": choose(pairs["normal"]), "compare": choose(common), "per_bin": per_bin,
            "correct_pairs": {name: len(p) for name, p in pairs.items()},
            "rarest_correct": {name: int(freqs[p[:, 1]].min()) if len(p) else None for name, p in pairs.items()}}


def choose_min_labels_per_bin(checkpoints: dict[str, str], data_dir: str, cap: int, k: int = 5,
                              batch_size: int = 256) -> dict[str, Any]:
    """:func:`choose_bins` asking for one pair per bin (the binning with the most bins)."""
    return choose_bins(checkpoints, data_dir, cap, 1, k, batch_size)


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
    best = max((float(r["val/nDCG@5"]) for r in rows if r.get("val/nDCG@5")), default=None)
    return (f"{steps + 1} steps, epoch {epochs + 1}, best val nDCG@5 "
            + ("- (not validated yet)" if best is None else f"{100 * best:.2f}"))


def plan(models: Sequence[str], parts: int | None, mlm: bool) -> list[str]:
    """The names of the steps ``Study.all`` runs, in order. One run at a time (all parts of a model and loss, then
    the next): a stop leaves at most one run unfinished, the only one whose optimizer state must be kept (the
    durable store, ``--store``). Loss by loss, both models (normal first): runs of different lengths alternate, so
    a session's share more often ends between runs. The masked LM is made when the attacks need it."""
    fits = ([f"fit-{m}-{loss}-part{i}" for loss in LOSSES for m in models for i in range(1, parts + 1)] if parts
            else [f"fit-{m}-{loss}" for loss in LOSSES for m in models])  # the paper scale: one fit command each
    return [*(["tokenizer"] if "aplc" in models else []), *fits,
            *(f"test-{m}-{loss}" for m in models for loss in LOSSES), "bins", *(["mlm"] if mlm else []),
            *(f"attack-{m}-{a}" for m in models for a in ATTACKS)]


def _status(study: dict[str, Any], steps: dict[str, Any]) -> str:
    """How far the run has got: steps done of the steps its plan has (study.json's models and parts)."""
    names = plan(study.get("models") or list(MODELS), study.get("parts", 1), bool(study.get("mlm_init")))
    fits = [name for name in names if name.startswith("fit-")]
    done = [name for name in names if "seconds" in steps.get(name, {})]
    if len(done) == len(names):
        return "**Status: complete.**"
    left = next(name for name in names if name not in done)
    return (f"**Status: in progress**, {len(done)} of {len(names)} steps done ({sum(f in done for f in fits)} of "
            f"{len(fits)} fit parts); next: `{left}`. This page is rewritten whenever the run stops or ends.")


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


def bin_table(attacks: dict[str, Any]) -> list[str]:
    """Per run (``model/attack``), loss and bin: n attacked, success within the change budget and Figure 2's,
    with intervals."""
    lines = [BIN_TABLE, "|---|---|---|---|---:|---:|---:|"]
    for run, summary in attacks.items():
        for g in (summary or {}).get("groups", []):
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


def figure2(summary: dict[str, Any], measure: str, figure: Path, model: str = "") -> Path:
    """Figure 2: the loss comparison's Figure 2 success rate by label frequency, with 95% Wilson error bars."""
    from xmtc.attack.report import TABLE_CHANGE_RATE, plot_success_by_frequency

    return plot_success_by_frequency(
        summary, figure, kind="positive",
        title=f"EURLEX57K{', ' + model if model else ''}, positive-targeted, same pairs for all losses; success: "
              f"similarity > "
              f"{summary['similarity_threshold']:g} ({measure}), change rate < {100 * TABLE_CHANGE_RATE:g}%")


def figure2_from_report(report: Path) -> dict[Path, dict[str, Any]]:
    """Redraw ``report``'s Figure 2 PNGs from the per-bin counts the report prints (its ``M/compare-losses`` rows
    of the per-bin table, ``compare-losses`` in a one-model report: n attacked and the Figure 2 rate, so
    k = rate × n), for when the run's files are gone. Returns each figure written with the summary drawn."""
    import re

    from xmtc.attack.report import interval_fields

    text = report.read_text(encoding="utf-8")
    measure = re.search(r"similarity: \*\*(.+?)\*\*", text)
    threshold = re.search(r"threshold ([0-9.]+)", text)
    if BIN_TABLE not in text or not measure or not threshold:
        raise ValueError(f"{report}: no per-bin table ({BIN_TABLE!r}) or no 'similarity: **...**, threshold ...' in "
                         "its attack settings: regenerate it with scripts/study_eurlex.py --report-only")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in text.split(BIN_TABLE, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        run, loss, kind, bin_, n, _, strict = (c.strip() for c in line.strip("|").split("|"))
        model, _, attack = run.rpartition("/")
        if attack != "compare-losses" or kind != "positive" or strict == "-":
            continue
        n, rate = int(n), float(strict.split()[0])
        k = round(rate * n / 100)
        if f"{100 * k / n:.2f}" != f"{rate:.2f}":
            raise ValueError(f"{report}: {line!r}: {rate}% of {n} is no whole number of successes")
        runs.setdefault(model, {}).setdefault(loss, []).append({
            "bin": bin_, "attacked": n, "successes_strict": k, "success_rate_strict": k / n,
            **interval_fields("success_rate_strict", k, n)})
    if not runs:
        raise ValueError(f"{report}: no compare-losses rows in its per-bin table: nothing to draw")
    drawn = {}
    for model, groups in runs.items():
        summary = {"similarity_threshold": float(threshold.group(1)), "similarity_measure": measure.group(1),
                   "groups": [{"model": m, "kind": "positive", "bins": b} for m, b in groups.items()]}
        suffix = f"_{model}" if model else ""
        figure = figure2(summary, measure.group(1), report.parent / f"{report.stem}_figure2{suffix}.png",
                         MODEL_NAMES.get(model, model))
        drawn[figure] = summary
    return drawn


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _group(summary: dict[str, Any] | None, model: str, kind: str) -> dict[str, Any] | None:
    for g in (summary or {}).get("groups", []):
        if g["model"] == model and g["kind"] == kind:
            return g
    return None


def _count(stats: dict[str, Any], key: str) -> tuple[int, int]:
    """(successes, attacked) behind a rate (k = rate × n is exact for a rate that is k / n)."""
    n = int(stats.get("attacked") or 0)
    return round((stats.get(key) or 0.0) * n), n


def difference_interval(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float, float, float]:
    """Rate a - rate b, its 95% interval (Newcombe's hybrid score interval from the two Wilson intervals; for
    the same pairs attacked on two models it is conservative) and the difference that a two-sided 5% test
    would detect with 80% power at these sample sizes (pooled rate)."""
    from xmtc.attack.report import wilson_interval

    (ka, na), (kb, nb) = a, b
    if not na or not nb:
        return math.nan, math.nan, math.nan, math.nan
    pa, pb = ka / na, kb / nb
    (la, ua), (lb, ub) = wilson_interval(ka, na), wilson_interval(kb, nb)
    d = pa - pb
    lo = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    # the pooled rate, kept one success away from 0 and 1 (where the binomial variance, and so any test, vanishes)
    pool = min(max((ka + kb) / (na + nb), 1 / (na + nb)), 1 - 1 / (na + nb))
    detectable = (Z95 + Z80) * math.sqrt(pool * (1 - pool) * (1 / na + 1 / nb))
    return d, lo, hi, detectable


def _verdict(lo: float, hi: float, detectable: float, threshold: float = 0.0) -> str:
    """holds when the interval lies above ``threshold``, does not hold when below, else not decidable."""
    if math.isnan(lo):
        return "**not decidable** (nothing attacked)"
    if lo > threshold:
        return "**holds**"
    if hi < threshold:
        return "**does not hold**"
    return (f"**not decidable at this budget** (an effect of {100 * detectable:.1f} points would have been seen "
            "with 80% power)")


def _diff_text(d: float, lo: float, hi: float) -> str:
    return f"difference {100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def findings(attacks: dict[str, Any], model_name: str = "") -> list[str]:
    """F1-F6 for one model: a verdict per paper finding from its 95% interval (holds / does not hold / not
    decidable, with the effect size the samples could have detected), with the numbers it rests on."""
    from xmtc.attack.report import wilson_interval

    lines = []
    tag = f" ({model_name})" if model_name else ""
    budget, strict = "success_rate_change_budget", "success_rate_strict"
    pos = _group(attacks.get("positive"), "normal", "positive")
    neg = _group(attacks.get("negative-clusters"), "normal", "negative")
    neg_free = _group(attacks.get("negative-no-clusters"), "normal", "negative")
    if pos:
        k, n = _count(pos["overall"], budget)
        lo, hi = wilson_interval(k, n) or (math.nan, math.nan)
        half = (hi - lo) / 2 if n else math.nan
        lines.append(f"- **F1**{tag} *XMTC models are very vulnerable to positive-targeted attacks* (taken as a "
                     f"success rate above 50%): {_verdict(lo, hi, half, 0.5)}: {_pct_ci(pos['overall'], budget)} of "
                     f"{n} positive attacks on the normal model succeed within the change budget.")
    if pos and neg:
        d, lo, hi, det = difference_interval(_count(pos["overall"], budget), _count(neg["overall"], budget))
        lines.append(f"- **F2**{tag} *Much less vulnerable to negative-targeted attacks*: {_verdict(lo, hi, det)}: "
                     f"positive {_pct_ci(pos['overall'], budget)} (n = {pos['overall']['attacked']}) vs negative "
                     f"{_pct_ci(neg['overall'], budget)} (n = {neg['overall']['attacked']}), "
                     f"{_diff_text(d, lo, hi)}.")
    if neg and neg_free:
        d, lo, hi, det = difference_interval(_count(neg["overall"], budget), _count(neg_free["overall"], budget))
        lines.append(f"- **F3**{tag} *Label clusters help the negative attacker*: {_verdict(lo, hi, det)}: "
                     f"{_pct_ci(neg['overall'], budget)} with the cluster restriction (n = "
                     f"{neg['overall']['attacked']}) vs {_pct_ci(neg_free['overall'], budget)} without (n = "
                     f"{neg_free['overall']['attacked']}), {_diff_text(d, lo, hi)}.")
    if pos and len(pos["bins"]) >= 2:
        tail, head = pos["bins"][0], pos["bins"][-1]
        d, lo, hi, det = difference_interval(_count(tail, strict), _count(head, strict))
        lines.append(f"- **F4**{tag} *Tail labels are far more vulnerable than head labels* (Figure 2 rate, normal "
                     f"model): {_verdict(lo, hi, det)}: {_pct_ci(tail, strict)} in the rarest bin ({tail['bin']} "
                     f"training documents, n = {tail['attacked']}) vs {_pct_ci(head, strict)} in the most frequent "
                     f"({head['bin']}, n = {head['attacked']}), {_diff_text(d, lo, hi)}.")
    cmp_ = attacks.get("compare-losses")
    base = _group(cmp_, "normal", "positive")
    for number, other, label in ((5, "pw", "PW"), (6, "pwcb", "PW-cb")):
        g = _group(cmp_, other, "positive")
        if base and g and base["bins"] and g["bins"]:
            d, lo, hi, det = difference_interval(_count(base["bins"][0], strict), _count(g["bins"][0], strict))
            lines.append(f"- **F{number}**{tag} *{label} makes tail labels more robust* (same pairs for all losses, "
                         f"rarest bin {base['bins'][0]['bin']}): {_verdict(lo, hi, det)}: "
                         f"{_pct_ci(g['bins'][0], strict)} for {label} vs {_pct_ci(base['bins'][0], strict)} for "
                         f"normal (n = {g['bins'][0]['attacked']} each), normal minus {label}: "
                         f"{_diff_text(d, lo, hi)}.")
    return lines


def validation_curves(train: Path) -> dict[str, list[tuple[int, float]]]:
    """Per loss under ``train`` (train/<model>), the (step, val/P@5) points of all its fit attempts in step order."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for loss in LOSSES:
        points: dict[int, float] = {}
        for m in sorted((train / loss).glob("fit-*/metrics.csv")):
            with open(m, newline="") as f:
                for r in csv.DictReader(f):
                    if r.get("val/P@5") and r.get("step"):
                        points[int(r["step"]) + 1] = float(r["val/P@5"])
        curves[loss] = sorted(points.items())
    return curves


def curve_lines(curves: dict[str, list[tuple[int, float]]], name: str) -> list[str]:
    """The validation P@5 after every part, how much the last part still added (far from converged when it
    added much), and whether PW and PW-cb reach REWEIGHTED_SHARE of the normal model's, the condition for
    comparing them."""
    steps = sorted({s for c in curves.values() for s, _ in c})
    if not steps:
        return [f"{name}: no validation yet.", ""]
    lines = [f"**{name}**: validation P@5 (%) after each part", "",
             "| step | " + " | ".join(LOSSES) + " |", "|---:|" + "---:|" * len(LOSSES)]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(_pct(dict(curves[loss]).get(step)) for loss in LOSSES) + " |")
    lines.append("")
    notes = []
    for loss, c in curves.items():
        if len(c) >= 2:
            gain = c[-1][1] - c[-2][1]
            state = "still rising" if gain > 0.005 else "flat" if gain >= -0.005 else "falling"
            notes.append(f"{loss}: the last part added {100 * gain:+.2f} points ({state})")
    normal = {step: value for step, value in curves.get("normal", []) if value > 0}
    for loss in ("pw", "pwcb"):  # at the same step: a run stopped between parts has losses at different steps
        shared = [(step, value) for step, value in curves.get(loss, []) if step in normal]
        if shared:
            step, value = shared[-1]
            share = value / normal[step]
            ok = "reaches" if share >= REWEIGHTED_SHARE else "**does not reach**"
            at = "" if step == steps[-1] else f" at step {step}, the last both have"
            notes.append(f"{loss} at {100 * share:.0f}% of normal's{at} ({ok} the {100 * REWEIGHTED_SHARE:.0f}% "
                         "set for comparing the losses)")
    return lines + (["; ".join(notes) + ".", ""] if notes else [])


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


def _load_attacks(out: Path, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One model's attack summaries (with intervals) and run.json files, by attack name."""
    root = out / "attacks" / model
    return ({n: _with_intervals(_load(root / n / "summary.json")) for n in ATTACKS},
            {n: _load(root / n / "run.json") for n in ATTACKS})


def write_report(out: Path, report: Path, data_dir: Path) -> Path:
    """docs/study_eurlex.md (and its Figure 2 PNGs beside it) from the files of a study run."""
    report.parent.mkdir(parents=True, exist_ok=True)
    study = _load(out / "study.json") or {}
    steps = _load(out / "steps.json") or {}
    bins = _load(out / "attacks" / "bins.json") or {}
    models = [m for m in study.get("models", MODELS) if (out / "train" / m).exists() or m in bins]
    quality = _load(Path(study.get("masked_lm", "")) / "quality.json") if study.get("masked_lm") else None
    names = {}
    if (data_dir / "label_names.tsv").exists():
        for line in (data_dir / "label_names.tsv").read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                key, name = line.split("\t", 1)
                names[key] = name
    attacks = {m: _load_attacks(out, m) for m in models}
    settings = next((r["settings"] for m in models for r in attacks[m][1].values() if r), {})
    measure = next((s["similarity_measure"] for m in models for s in attacks[m][0].values() if s), None) or "-"
    rel = os.path.relpath(out, report.parent)
    loss_args = study.get("loss_args") or {}
    lines = [
        "# The paper's study on EURLEX57K: normal vs PW vs PW-cb, AttentionXML and APLC-XLNet",
        "",
        f"Generated by `{study.get('command') or 'python scripts/study_eurlex.py'}` (`make study-eurlex`) from the "
        f"files of its run directory `{rel}`; rerunning the command regenerates this page (every step whose "
        "output exists is skipped). Scale: "
        f"**{study.get('scale', '?')}**: {study.get('scale_note', '')}.",
        "",
        _status(study, steps),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {_gpu()}, Python {platform.python_version()}, "
        f"torch {_version('torch')}, lightning {_version('lightning')}; report written "
        f"{dt.datetime.now().isoformat(timespec='minutes')}.",
        "",
        "## Models (test split)",
        "",
        "Training: the steps each run had (all losses of a model the same budget), the parts it was trained in and "
        "its best validation nDCG@5." + (" Loss-specific settings: " + ", ".join(
            f"{k}: `{' '.join(v)}`" for k, v in loss_args.items()) + "." if loss_args else ""),
        "",
        "| model | loss | training | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---:|" * len(METRICS),
    ]
    for model in models:
        for loss in LOSSES:
            m = _read_metrics(out / "test" / model / loss / "run" / "metrics.csv")
            lines.append(f"| {MODEL_NAMES[model]} | {loss} | {_fit_progress(out / 'train' / model / loss)} | "
                         + " | ".join(_pct(m.get(f"test/{k}")) for k in METRICS) + " |")
    lines += ["", "## Validation curves: how far from converged", ""]
    for model in models:
        lines += curve_lines(validation_curves(out / "train" / model), MODEL_NAMES[model])
    lines += ["## Attack settings", ""]
    if settings:
        lines.append(f"k = {settings['k']}, θ = {100 * settings['max_change_rate']:g}% of the words, masked LM "
                     f"`{settings['masked_lm']}` ({settings['candidates']} candidates, {settings['mlm_mode']} mode), "
                     f"similarity: **{measure}**, "
                     f"threshold {settings['similarity_threshold']}, "
                     f"up to {settings['samples_per_bin']} pairs per bin.")
    if not settings and not quality:
        lines.append("(no attack yet: the masked LM is made after the fits, tests and bins)")
    if quality:
        keys = [k for k in quality if k.startswith("top")]
        lines.append(f"Masked LM quality (`{quality.get('init', 'scratch')}`; a masked held-out word among its top-K "
                     "predictions): " + ", ".join(f"{k.split('_')[0]} {100 * quality[k]:.1f}%" for k in keys) + ".")
    for model in models:
        mb = bins.get(model) or {}
        rarest = {k: v for k, v in (mb.get("rarest_correct") or {}).items() if v is not None}
        if rarest:
            lines.append(f"{MODEL_NAMES[model]}: the rarest label each loss gets right has "
                         + ", ".join(f"{k} {v}" for k, v in rarest.items()) + " training documents.")
        for key, what in (("normal", "normal model's"), ("compare", "pairs all three losses share")):
            b = mb.get(key)
            if b:
                flags = []
                if len(b["bins"]) < MIN_BINS:
                    flags.append(f"**fewer than {MIN_BINS} bins**")
                if not b.get("enough_pairs", True):
                    flags.append(f"**no binning gives every bin {mb.get('per_bin')} pairs**")
                counts = b.get("pairs_per_bin")
                lines.append(f"{MODEL_NAMES[model]} bins ({what} {b['pairs']} correct pairs over {b['labels']} "
                             f"labels): L = {b['min_labels_per_bin']} labels per bin gives {len(b['bins'])} bins "
                             f"{', '.join(b['bins'])}" + (f" holding {', '.join(map(str, counts))} pairs" if counts
                                                          else "") + (f" ({'; '.join(flags)})" if flags else "") + ".")
    lines += ["", "## Table 3: positive-targeted attacks", "",
              f"Success within the change budget; similarity ({measure}) and change rate of the adversarial "
              f"examples found; the loss comparison attacks the same pairs for every loss. {CI_NOTE}", "",
              "| run | model | attacked | success rate (%) [95% CI] | similarity | change rate (%) | queries |",
              "|---|---|---:|---:|---:|---:|---:|"]

    def table_rows(model: str, run: str, kind: str, label: str) -> list[str]:
        failed = steps.get(f"attack-{model}-{run}", {}).get("failed")
        return [row.replace("| ", f"| {MODEL_NAMES[model]} ", 1)
                for row in attack_rows(attacks[model][0].get(run), kind, label, failed)]

    for model in models:
        lines += table_rows(model, "positive", "positive", "positive")
        lines += table_rows(model, "compare-losses", "positive", "loss comparison")
    lines += ["", "## Table 5: negative-targeted attacks (normal model)", "",
              "| run | model | attacked | success rate (%) [95% CI] | similarity | change rate (%) | queries |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for model in models:
        lines += table_rows(model, "negative-clusters", "negative", "with label clusters")
        lines += table_rows(model, "negative-no-clusters", "negative", "without clusters")
    lines += ["", "## Figure 2: success rate by label frequency", ""]
    for model in models:
        cmp_ = attacks[model][0].get("compare-losses")
        if cmp_:
            figure = figure2(cmp_, measure, report.parent / f"{report.stem}_figure2_{model}.png",
                             MODEL_NAMES[model])
            lines += [f"![Figure 2, {MODEL_NAMES[model]}]({figure.name})", ""]
    lines += ["Error bars: 95% Wilson score intervals (the losses' points are set slightly apart).", "",
              "Per bin (training frequency): success within the change budget and Figure 2's (also similarity > "
              f"threshold), of n pairs attacked per loss. {CI_NOTE}", ""]
    lines += bin_table({f"{m}/{n}": attacks[m][0].get(n) for m in models for n in ATTACKS})
    lines += ["", "## Table 6: adversarial examples on tail labels", ""]
    for model in models:
        root = out / "attacks" / model
        lines += [f"### {MODEL_NAMES[model]}", ""]
        lines += examples(_rows(root / "positive" / "results.jsonl")
                          + _rows(root / "negative-clusters" / "results.jsonl"), names)
    lines += ["## The paper's findings here", ""]
    if study.get("scale") == "smoke":
        lines += ["(A smoke run: the models are untrained and the samples tiny, so none of this is evidence.)", ""]
    found = [line for model in models for line in findings(attacks[model][0], MODEL_NAMES[model])]
    lines += ["Verdicts from 95% intervals: a finding **holds** when the interval of its rate (F1, against 50%) or "
              "of its difference of rates (F2-F6, Newcombe's interval from the Wilson intervals) lies wholly on its "
              "side, **does not hold** when it lies wholly on the other, and is **not decidable at this budget** "
              "otherwise, with the difference a two-sided 5% test would have detected with 80% power at these "
              "sample sizes.", "", *found] if found else ["(no attack results yet)"]
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


def _loss_args(text: str) -> tuple[str, list[str]]:
    loss, sep, args = text.partition("=")
    if not sep or loss not in LOSSES:
        raise argparse.ArgumentTypeError(f"--loss-args wants LOSS=ARGS with LOSS one of {', '.join(LOSSES)}: {text!r}")
    return loss, shlex.split(args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, every path made relative to the repository (the commands run there, recorded that way)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--data", default="data/eurlex57k")
    p.add_argument("--out", default=None, help="run directory (default logs/study-eurlex-<scale>)")
    p.add_argument("--report", default=None,
                   help="report file (default docs/study_eurlex.md; <out>/study_eurlex.md for --scale smoke)")
    p.add_argument("--masked-lm", default=None, help="a real masked LM (name or local path): skips the mlm step")
    p.add_argument("--mlm-steps", type=int, default=None)
    p.add_argument("--mlm-init", default="minilm",
                   help="the mlm step's --init (minilm: the pretrained all-MiniLM-L6-v2 of xmtc[minilm]; scratch: "
                        "trained from scratch, for corpora in other languages)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--tokenizer", default=None, help="APLC-XLNet's tokenizer folder (made by the tokenizer step)")
    p.add_argument("--parts", type=int, default=None,
                   help="fit parts per model and loss (one epoch of limit_train_batches steps each; default: the "
                        "scale's); raising it on a finished run trains the same runs further")
    p.add_argument("--loss-args", type=_loss_args, action="append", default=[], metavar="LOSS=ARGS",
                   help="xmtc overrides for one loss's fit/test/attack, e.g. pw='--model.init_args.optimizer."
                        "init_args.lr=0.004' (repeatable)")
    p.add_argument("--encoder", default="sentence-transformers", choices=["sentence-transformers", "use"])
    p.add_argument("--encoder-path", default=None, help="encoder path/handle (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--similarity-measure", default="cosine", choices=["cosine", "angular", "arccos"],
                   help="cosine for MiniLM; the paper (USE-large) used arccos")
    p.add_argument("--samples-per-bin", type=int, default=None)
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--attack-args", default="", help="more --settings.* overrides for the attacks, one string")
    p.add_argument("--hours", type=float, default=None,
                   help="stop after this many hours where a rerun resumes (no fit part is started that the time left "
                        "would not hold; a running attack is stopped and resumes from its results.jsonl); the report "
                        "is written from what is done")
    p.add_argument("--store", default=None,
                   help="a durable store to commit (e.g. runs/study-eurlex-cpu): what the run needs to go on from a "
                        "fresh machine, restored at the start and saved after every step (scripts/run_store.py)")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite the report from the run's files (and save the store)")
    p.add_argument("--redraw-figure2", metavar="REPORT", default=None,
                   help="only redraw REPORT's Figure 2 PNG from the per-bin counts REPORT prints (no run files needed)")
    p.add_argument("--in-process", action="store_true", help="run the xmtc commands in this process (tests)")
    p.add_argument("extra", nargs="*", help="more xmtc overrides for every fit/test/attack (after --)")
    a = p.parse_args(argv)
    a.loss_args = {loss: args for loss, args in a.loss_args}
    a.out = _rel(a.out or f"logs/study-eurlex-{a.scale}")
    a.data = _rel(a.data)
    a.report = _rel(a.report) if a.report else None
    a.store = _rel(a.store) if a.store else None
    a.masked_lm = _rel(a.masked_lm) if a.masked_lm and Path(a.masked_lm).exists() else a.masked_lm
    a.encoder_path = _rel(a.encoder_path) if a.encoder_path and Path(a.encoder_path).exists() else a.encoder_path
    return a


def main(argv: Sequence[str] | None = None) -> Path | list[Path]:
    a = parse_args(argv)
    if a.redraw_figure2:  # needs nothing else: no run directory, no data
        return sorted(figure2_from_report(Path(a.redraw_figure2)))
    os.chdir(REPO)
    study = Study(a)
    if a.report_only:
        report = Path(a.report) if a.report else (
            study.out / "study_eurlex.md" if a.scale == "smoke" else Path("docs/study_eurlex.md"))
        written = write_report(study.out, report, Path(a.data))
        study.save_store()
        return written
    return study.all()


if __name__ == "__main__":
    main()
