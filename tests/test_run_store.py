"""scripts/run_store.py: what a long run keeps for a fresh machine, and how it comes back. The study's pipeline test
(tests/test_study.py) runs it end to end on real checkpoints: a run resumed from the store alone."""

from __future__ import annotations

import os

import pytest
import torch
from toydata import load_script


@pytest.fixture(scope="module")
def store_mod():
    return load_script("run_store")


def _checkpoint(path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((4,), value)}, "optimizer_states": [{"exp_avg": torch.ones(4)}],
                "lr_schedulers": [{"last_epoch": 3}], "hyper_parameters": {"lr": 0.1}}, path)


def test_save_keeps_small_files_and_the_checkpoints_asked_for(store_mod, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(store_mod, "SMALL", 1000)
    repo, store = tmp_path / "repo", tmp_path / "store"
    run = repo / "logs" / "run"
    (run / "train").mkdir(parents=True)
    (run / "steps.json").write_text("{}")
    (run / "train" / "metrics.csv").write_text("step,val\n1,0.5\n")
    (run / "cache.bin").write_bytes(b"x" * (store_mod.SMALL + 1))  # large and not asked for: left out
    best, last, stale = run / "fit-1" / "best.ckpt", run / "fit-2" / "last.ckpt", run / "fit-1" / "last.ckpt"
    for i, ckpt in enumerate((best, last, stale)):
        _checkpoint(ckpt, float(i))
    model = repo / "models" / "mlm"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"w" * (store_mod.SMALL + 1))  # a whole folder: kept, however large

    written = store_mod.save(store, repo, [run], [model], {best: "weights", last: "whole"})
    names = {p.relative_to(store).as_posix() for p in written}
    assert "cache.bin: 0 MB, not kept in" in capsys.readouterr().out
    assert names == {"logs/run/steps.json", "logs/run/train/metrics.csv", "logs/run/fit-1/best.ckpt",
                     "logs/run/fit-2/last.ckpt", "models/mlm/model.safetensors"}
    slim = torch.load(store / "logs/run/fit-1/best.ckpt", weights_only=False)
    assert set(slim) == {"state_dict", "hyper_parameters"} and torch.equal(slim["state_dict"]["w"], torch.zeros(4))
    assert "optimizer_states" in torch.load(store / "logs/run/fit-2/last.ckpt", weights_only=False)

    # unchanged files are not written again; a checkpoint no longer asked for leaves the store
    assert store_mod.save(store, repo, [run], [model], {best: "weights", last: "whole"}) == []
    (run / "steps.json").write_text('{"a": 1}')
    os.utime(run / "steps.json", (1e10, 1e10))
    assert [p.name for p in store_mod.save(store, repo, [run], [model], {best: "weights"})] == ["steps.json"]
    assert not (store / "logs/run/fit-2/last.ckpt").exists() and (store / "logs/run/fit-1/best.ckpt").exists()


def test_restore_fills_in_what_is_missing_and_never_overwrites(store_mod, tmp_path):
    repo, store, elsewhere = tmp_path / "repo", tmp_path / "store", tmp_path / "elsewhere"
    run = repo / "logs" / "run"
    run.mkdir(parents=True)
    elsewhere.mkdir()
    (run / "steps.json").write_text("old")
    (run / "part1.json").write_text("{}")
    (elsewhere / "results.jsonl").write_text('{"doc": 1}\n')  # outside the repository (a test's tmp run)
    store_mod.save(store, repo, [run, elsewhere])
    assert (store / store_mod.OUTSIDE).is_dir()

    (run / "steps.json").write_text("newer work on this machine")
    (run / "part1.json").unlink()
    (elsewhere / "results.jsonl").unlink()
    restored = store_mod.restore(store, repo)
    assert sorted(p.name for p in restored) == ["part1.json", "results.jsonl"]
    assert (run / "steps.json").read_text() == "newer work on this machine"
    assert (elsewhere / "results.jsonl").read_text() == '{"doc": 1}\n'
    assert store_mod.restore(store, repo) == []
