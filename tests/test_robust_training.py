"""scripts/robust_training.py's report, from run files of known outcomes: clean metrics, epoch times against the
clean counterpart, success per bin with intervals, and paired (same-pair) differences with exact McNemar tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toydata import load_script

from xmtc.attack.report import summarize, wilson_interval


@pytest.fixture(scope="module")
def robust():
    return load_script("robust_training")


def _row(model: str, bin_name: str, doc: int, success: bool) -> dict:
    return {"model": model, "kind": "positive", "doc_id": f"d{doc}", "target_index": doc % 3, "bin": bin_name,
            "target_train_freq": 3 if bin_name == "1-5" else 40, "success": success,
            "status": "success" if success else "failed", "changes": [], "queries": 20, "num_words": 50,
            "similarity": 0.95 if success else None, "change_rate": 0.04 if success else 0.0,
            "rank_before": 1, "rank_after": 6 if success else 1}


# successes per (model, bin) on 20 pairs per bin; the adversarially trained normal model loses pairs 0-4 of bin
# 1-5 that the clean one loses too, and none other; pwcb-adv loses exactly the pairs pwcb loses
LOST = {("normal", "1-5"): range(0, 16), ("normal-adv", "1-5"): range(0, 5),
        ("normal", "6-50"): range(0, 10), ("normal-adv", "6-50"): range(0, 10),
        ("pwcb", "1-5"): range(0, 12), ("pwcb-adv", "1-5"): range(0, 12),
        ("pwcb", "6-50"): range(0, 8), ("pwcb-adv", "6-50"): range(0, 8)}


def _run(root: Path, epochs: dict[str, list[float]]) -> Path:
    out = root / "run"
    rows = [_row(model, b, (0 if b == "1-5" else 100) + i, i in lost)
            for (model, b), lost in LOST.items() for i in range(20)]
    (out / "attack").mkdir(parents=True)
    (out / "attack" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "attack" / "summary.json").write_text(json.dumps(summarize(rows, 0.8, 0.1, "test encoder")))
    (out / "attack-bins.json").write_text(json.dumps({"min_labels_per_bin": 7, "bins": ["1-5", "6-50"],
                                                      "pairs_per_bin": [23, 61], "labels": 30, "common_pairs": 84,
                                                      "min_pairs": 20}))
    # the normal loss with its twin alone: the same pairs' rows
    pair = [r for r in rows if r["model"] in ("normal", "normal-adv")]
    (out / "attack-normal").mkdir()
    (out / "attack-normal" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pair))
    (out / "attack-normal" / "summary.json").write_text(json.dumps(summarize(pair, 0.8, 0.1, "test encoder")))
    (out / "experiment.json").write_text(json.dumps({"epochs": len(epochs["normal"]), "command": None}))
    (out / "steps.json").write_text(json.dumps({"fit-normal": {"seconds": 100.0, "commands": ["python -m xmtc fit"]}}))
    for i, model in enumerate(["normal", "normal-adv", "pwcb", "pwcb-adv"]):
        test = out / "test" / model / "run" / "metrics.csv"
        test.parent.mkdir(parents=True)
        test.write_text("epoch,step,test/P@1,test/P@3,test/P@5,test/nDCG@5,test/PSP@5\n"
                        f"0,0,0.{50 - i},0.40,0.30,0.45,0.20\n")
        fit = out / "train" / model / "fit-1" / "metrics.csv"
        fit.parent.mkdir(parents=True)
        fit.write_text("epoch,step,time/train_epoch_seconds,val/P@5\n" + "".join(
            f"{e},{10 * e},{s},0.{20 + e}\n" for e, s in enumerate(epochs[model])))
    return out


def test_report_tables_times_and_paired_tests(robust, tmp_path):
    out = _run(tmp_path, {"normal": [30.0, 40.0, 40.0], "normal-adv": [30.0, 70.0, 70.0],
                          "pwcb": [30.0, 50.0, 50.0], "pwcb-adv": [31.0, 75.0, 75.0]})
    text = robust.write_report(out, tmp_path / "docs" / "robust.md").read_text()
    # clean metrics, mean time of epochs 2+ against the clean counterpart, the validation curve
    assert "| normal-adv | 49.00 | 40.00 | 30.00 | 45.00 | 20.00 | 70.0 | 1.75x | 20.0, 21.0, 22.0 |" in text
    assert "| pwcb-adv | 47.00 | 40.00 | 30.00 | 45.00 | 20.00 | 75.0 | 1.50x |" in text
    lo, hi = wilson_interval(16, 20)
    assert f"| 1-5 | normal | 20 | 80.00 [{100 * lo:.1f}, {100 * hi:.1f}] |" in text
    # bin 1-5: the adversarially trained model lost 5 pairs, the clean one 16; 11 discordant pairs, all for
    # the clean one: difference -55 points, two-sided exact p = 2 * 0.5**11
    assert f"| normal-adv - normal | 1-5 | 20 | -55.0 | 0 / 11 | {2 * 0.5 ** 11:.3g} |" in text
    assert "| pwcb-adv - pwcb | 1-5 | 20 | 0.0 | 0 / 0 | 1 |" in text
    # over all 40 pairs the same 11 discordant pairs
    assert f"normal-adv: attack success 27.5 points lower than normal over 40 shared pairs, a difference " \
           f"outside chance (p < 0.05), p = {2 * 0.5 ** 11:.3g}." in text
    assert "pwcb-adv: attack success 0.0 points higher than pwcb over 40 shared pairs, inside chance" in text
    assert (tmp_path / "docs" / "robust.png").stat().st_size > 0
    normal = text.split("## Robustness per label frequency: normal loss")[1].split("## ")[0]
    assert f"| normal-adv - normal | 1-5 | 20 | -55.0 | 0 / 11 | {2 * 0.5 ** 11:.3g} |" in normal
    assert "pwcb-adv - pwcb" not in normal and (tmp_path / "docs" / "robust_normal.png").exists()
    assert "(this attack has not run yet)" in text.split("## Robustness per label frequency: pw-cb")[1]
    assert "| fit-normal | 100.0 | `python -m xmtc fit` |" in text


def test_paired_difference_counts_only_the_shared_pairs(robust):
    rows = [_row("a", "1-5", 1, True), _row("b", "1-5", 1, False), _row("a", "1-5", 2, True)]
    d = robust.paired_difference(rows, "a", "b", 0.8)
    assert (d["n"], d["only_a"], d["only_b"], d["difference"], d["p"]) == (1, 1, 0, 1.0, 1.0)
