"""The attack run's output directory: identity, what counts as done, part files folded in, one merge in job order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmtc.attack.run_store import RunStore, row_key
from xmtc.errors import UserError

IDENTITY = {"settings": {"k": 5, "seed": 0}, "data_dir": "data/toy"}


def _row(doc: int, target: int, kind: str = "positive", model: str = "normal", **extra) -> dict:
    return {"model": model, "kind": kind, "doc_id": f"d{doc}", "target_index": target, "success": doc % 2 == 0,
            **extra}


def _write(path: Path, rows: list[dict], cut: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + cut, encoding="utf-8")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_parts_are_merged_once_each_in_job_order(tmp_path):
    store = RunStore(tmp_path, IDENTITY)
    assert store.open() == set() and json.loads((tmp_path / "run.json").read_text()) == IDENTITY
    jobs = [_row(d, t) for d, t in [(3, 1), (0, 2), (5, 0), (1, 1), (4, 4)]]
    order = {row_key(r): i for i, r in enumerate(jobs)}
    first, second = store.writer(0), store.writer(1)
    first.write([jobs[4], jobs[0]])  # as dealt: whatever order the ranks finish in
    second.write([jobs[3]])
    second.write([jobs[1], jobs[2]])
    first.close()
    second.close()
    assert [p.name for p in store.parts()] == ["results.part-0.jsonl", "results.part-1.jsonl"]
    merged = store.merge(order=lambda key: order[key])
    assert merged == jobs and _lines(tmp_path / "results.jsonl") == jobs
    assert store.parts() == [] and store.rows() == jobs


def test_a_crashed_run_s_parts_count_as_done_and_a_cut_line_is_redone(tmp_path):
    store = RunStore(tmp_path, IDENTITY)
    store.open()
    _write(tmp_path / "results.jsonl", [_row(0, 1)])  # merged by an earlier, finished run
    _write(store.part(0), [_row(1, 1), _row(2, 2)], cut='{"model": "normal", "ki')  # killed while writing
    _write(store.part(1), [_row(3, 0), _row(0, 1)])  # a row also merged already (crash between merge and unlink)
    again = RunStore(tmp_path, IDENTITY)
    assert again.holds_results()
    done = again.open()
    assert done == {("normal", "positive", f"d{d}", t) for d, t in [(0, 1), (1, 1), (2, 2), (3, 0)]}
    assert again.parts() == [] and len(again.rows()) == 4  # folded into results.jsonl, each key once


def test_a_cut_last_line_of_results_is_dropped_a_broken_one_elsewhere_is_an_error(tmp_path):
    store = RunStore(tmp_path, IDENTITY)
    store.open()
    _write(tmp_path / "results.jsonl", [_row(0, 1), _row(1, 2)], cut='{"model": "nor')
    assert store.open() == {("normal", "positive", "d0", 1), ("normal", "positive", "d1", 2)}
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    (tmp_path / "results.jsonl").write_text('{"broken\n' + json.dumps(_row(0, 1)) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"results.jsonl:1: not valid JSON"):
        store.open()


def test_other_arguments_are_refused_once_a_result_is_stored_even_in_a_part(tmp_path):
    RunStore(tmp_path, IDENTITY).open()
    other = {**IDENTITY, "settings": {"k": 3, "seed": 0}}
    assert RunStore(tmp_path, other).open() == set()  # nothing stored yet: the directory is not locked
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["k"] == 3
    store = RunStore(tmp_path, other)
    writer = store.writer(1)
    writer.write([_row(0, 1)])
    writer.close()
    with pytest.raises(UserError, match=r"holds a run with other arguments \(settings: k\)"):
        RunStore(tmp_path, IDENTITY).open()
    assert store.parts()  # the refused run touched nothing
