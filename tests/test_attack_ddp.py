"""``python -m xmtc attack`` sharded over 2 gloo DDP processes on the CPU: the same rows as one process, and a
run killed part way resumed without losing or redoing a finished group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_models import single_thread
from toydata import REPO, write_axml

from xmtc.cli import main

pytestmark = pytest.mark.slow

TINY_MODEL = ["--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16",
              "--model.init_args.linear_sizes=[16]", "--model.init_args.dropout=0.0",
              "--model.init_args.embedding_dropout=0.0", "--model.init_args.optimizer.init_args.lr=0.02"]
DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_attack_models):
    root = tmp_path_factory.mktemp("attack_ddp")
    data = write_axml(root / "toy", {"train": 240, "test": 40})
    common = [f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}", *TINY_MODEL]
    with single_thread():
        main(["fit", *common, f"--trainer.logger.init_args.save_dir={root / 'logs'}", "--trainer.max_epochs=6",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    mlm, encoder = tiny_attack_models
    return [*common, f"--ckpt_path={next((root / 'logs').rglob('last.ckpt'))}", f"--settings.masked_lm={mlm}",
            f"--settings.encoder_path={encoder}", "--settings.candidates=8", "--settings.kinds=[positive,negative]",
            "--settings.min_labels_per_bin=2", "--settings.samples_per_bin=3", "--settings.batch_size=16",
            "--settings.max_change_rate=0.3", "--settings.k=2", "--show_progress=false"]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _whole_lines(path: Path) -> list[dict]:
    """The rows of a part file (a line cut by the kill left out)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def _without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _ddp(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xmtc", "attack", *args, *DDP], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_two_processes_give_the_rows_of_one_and_resume_after_a_kill(setup, tmp_path):
    # documents_at_once=2: 6 groups of 2 jobs (3 per process), dealt round robin
    args = [*setup, "--settings.documents_at_once=2"]
    single, ddp, killed = tmp_path / "single", tmp_path / "ddp", tmp_path / "killed"
    began = time.perf_counter()
    with single_thread():  # as each of the 2 DDP processes on 2 cores
        main(["attack", *args, f"--output_dir={single}", "--trainer.accelerator=cpu"])
    one_process = time.perf_counter() - began

    began = time.perf_counter()
    done = _ddp([*args, f"--output_dir={ddp}"], tmp_path)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-4000:]
    two_processes = time.perf_counter() - began
    expected = _rows(single)
    assert len(expected) == 12 and {r["kind"] for r in expected} == {"positive", "negative"}
    assert _without_seconds(_rows(ddp)) == _without_seconds(expected)  # same rows, same (job) order
    assert sorted(p.name for p in ddp.iterdir() if p.suffix == ".jsonl") == ["results.jsonl"]  # parts merged
    summary = json.loads((ddp / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads((single / "summary.json").read_text(encoding="utf-8"))
    assert out.count("attack results in") == 1  # rank 0 alone reports
    print(f"toy attack, 12 jobs: 1 process {one_process:.1f} s, 2 DDP processes {two_processes:.1f} s (with start-up)")

    # killed once both processes have written a group: what they wrote is kept, the rest is redone on resume
    run = _ddp([*args, "--settings.documents_at_once=1", f"--output_dir={killed}"], tmp_path, start_new_session=True)
    parts = [killed / "results.part-0.jsonl", killed / "results.part-1.jsonl"]
    deadline = time.monotonic() + 240
    while not all(p.exists() and p.stat().st_size for p in parts) and run.poll() is None:
        assert time.monotonic() < deadline, "the DDP run wrote nothing in time"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    written = [row for p in parts for row in _whole_lines(p)]
    assert not (killed / "results.jsonl").exists() and 2 <= len(written) < 12, "killed too late to test resuming"
    with single_thread():  # resumed in one process: the parts of two are folded in
        main(["attack", *args, "--settings.documents_at_once=1", f"--output_dir={killed}", "--trainer.accelerator=cpu"])
    resumed = _rows(killed)
    assert [p.name for p in killed.glob("results.part-*")] == []
    keys = [(r["kind"], r["doc_id"], r["target_index"]) for r in resumed]
    assert keys == [(r["kind"], r["doc_id"], r["target_index"]) for r in expected]  # each once, in job order
    by_key = {(r["kind"], r["doc_id"], r["target_index"]): r for r in resumed}
    for row in written:  # kept as written before the kill (their timing included), not redone
        assert by_key[row["kind"], row["doc_id"], row["target_index"]] == row
