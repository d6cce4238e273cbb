"""scripts/study_eurlex.py: its report step on run files of known numbers, and every step end to end on the toy
corpus (CI has no EURLEX57K), resume included."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from toydata import REPO, write_axml

from xmtc.attack.report import wilson_interval

SCRIPT = REPO / "scripts" / "study_eurlex.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_eurlex", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["study_eurlex"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _args(data: Path, out: Path, mlm: Path, encoder: Path) -> list[str]:
    # k = 2 of 5 toy labels, so that negative targets exist; the toy model needs a few epochs to learn anything
    return ["--scale", "smoke", "--data", str(data), "--out", str(out), "--masked-lm", str(mlm),
            "--encoder-path", str(encoder), "--in-process",
            "--attack-args", "--settings.k=2 --settings.max_change_rate=0.3 --settings.batch_size=16",
            "--", "--trainer.max_epochs=6", "--trainer.enable_model_summary=false"]


def _row(model: str, kind: str, bin_name: str, freq: int, success: bool, doc: int) -> dict:
    words = [f"w{i}" for i in range(20)]
    changes = [{"position": 3, "old": "w3", "new": "x3"}] if success else []
    adversarial = ["x3" if i == 3 and success else w for i, w in enumerate(words)]
    return {"model": model, "kind": kind, "doc_id": f"doc-{doc}", "bin": bin_name, "target_label": "L1",
            "target_name": "sugar product", "target_train_freq": freq, "target_index": 1, "success": success,
            "status": "success" if success else "change_budget", "rank_before": 1, "rank_after": 7 if success else 2,
            "changes": changes, "queries": 30, "similarity": 0.95 if success else None,
            "similarity_measure": "cosine", "change_rate": 0.05 if success else 0.1,
            "original_text": " ".join(words), "adversarial_text": " ".join(adversarial),
            "topk_before": ["L1", "L2"], "topk_after": ["L2", "L3"], "seconds": 1.0, "message": ""}


def _attack_dir(root: Path, name: str, rates: dict[tuple[str, str], tuple[float, float]], n: int = 100) -> None:
    """An attack run's files as `python -m xmtc attack` writes them, with given (tail, head) success rates."""
    from xmtc.attack.report import summarize
    from xmtc.attack.runner import AttackSettings, encoder_description

    rows, doc = [], 0
    for (model, kind), (tail, head) in rates.items():
        for bin_name, freq, rate in (("1-5", 3, tail), ("6-50", 20, (tail + head) / 2), ("51-900", 300, head)):
            for i in range(n):
                rows.append(_row(model, kind, bin_name, freq, i < round(rate * n), doc))
                doc += 1
    out = root / "attacks" / name
    out.mkdir(parents=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = AttackSettings()
    summary = summarize(rows, 0.8, 0.1, encoder_description(settings))
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "run.json").write_text(json.dumps({"settings": asdict(settings)}))


def _ci(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def test_report_from_run_files_tables_and_verdicts(study, tmp_path, monkeypatch):
    """The report step alone, on run files of known success rates: tables with 95% Wilson intervals, figure and a
    verdict per finding."""
    out = tmp_path / "run"
    _attack_dir(out, "positive", {("normal", "positive"): (0.9, 0.5)})
    _attack_dir(out, "negative-clusters", {("normal", "negative"): (0.3, 0.1)})
    _attack_dir(out, "negative-no-clusters", {("normal", "negative"): (0.05, 0.05)})
    # a run from before the intervals: its summary.json has rates only, the report fills counts and intervals in
    old = out / "attacks" / "negative-no-clusters" / "summary.json"
    summary = json.loads(old.read_text())
    for g in summary["groups"]:
        for stats in (g["overall"], *g["bins"]):
            for key in [k for k in stats if k.endswith(("_lo", "_hi")) or k.startswith("successes_")]:
                del stats[key]
    old.write_text(json.dumps(summary))
    _attack_dir(out, "compare-losses", {("normal", "positive"): (0.9, 0.5), ("pw", "positive"): (0.5, 0.5),
                                        ("pwcb", "positive"): (0.88, 0.5)})
    (out / "attacks" / "bins.json").write_text(json.dumps({
        "normal": {"min_labels_per_bin": 40, "bins": ["1-5", "6-50", "51-900"], "labels": 130, "pairs": 900},
        "compare": {"min_labels_per_bin": 30, "bins": ["1-5", "6-50", "51-900"], "labels": 100, "pairs": 700}}))
    metrics = out / "test" / "pw" / "run" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("epoch,step,test/P@1,test/P@5,test/nDCG@5,test/PSP@5\n0,0,0.61,0.42,0.5,0.33\n")
    (out / "steps.json").write_text(json.dumps({
        "fit-pw": {"seconds": 3600.0, "commands": ["python -m xmtc fit --config configs/axml_eurlex_pw.yaml"],
                   "finished": "2026-11-21T10:00:00"},
        "attack-positive": {"seconds_before_resume": 12.0}}))  # crashed, not rerun yet: not listed
    report = study.write_report(out, tmp_path / "docs" / "study.md", data_dir=tmp_path)
    text = report.read_text()
    assert "| pw | - | 61.00 | - | 42.00 | 50.00 | - | - | 33.00 |" in text
    # Table 3: (90 + 70 + 50) / 3 = 210 of 300
    assert f"| positive | normal | 300 | 70.00 {_ci(210, 300)} | 0.950 | 5.00 | 30 |" in text
    assert f"| with label clusters | normal | 300 | 20.00 {_ci(60, 300)} |" in text
    assert f"| without clusters | normal | 300 | 5.00 {_ci(15, 300)} |" in text  # the old run's, filled in
    assert "95% Wilson score interval" in text
    # per bin: n, success within the budget and Figure 2's, each with its interval
    assert f"| compare-losses | pwcb | positive | 1-5 | 100 | 88.00 {_ci(88, 100)} | 88.00 {_ci(88, 100)} |" in text
    assert f"| negative-no-clusters | normal | negative | 6-50 | 100 | 5.00 {_ci(5, 100)} |" in text
    assert "similarity: **sentence-transformers all-MiniLM-L6-v2 (xmtc[minilm]), cosine**" in text
    assert "L = 40 labels per bin gives 3 bins" in text
    assert "fewer than 5 bins" in text
    findings = text.split("## The paper's findings here")[1]
    assert f"very vulnerable to positive-targeted attacks*: **holds**: 70.00% {_ci(210, 300)}" in findings
    assert "Much less vulnerable to negative-targeted attacks*: **holds**" in findings
    assert "Label clusters help the negative attacker*: **holds**: 20.00%" in findings
    assert "far more vulnerable than head labels* (Figure 2 rate, normal model): **holds**: 90.00%" in findings
    assert "*PW makes tail labels more robust*" in findings
    assert f"**holds**: 50.00% {_ci(50, 100)} for PW vs 90.00% {_ci(90, 100)}" in findings
    assert "*PW-cb makes tail labels more robust*" in findings and "within 2 standard errors" in findings
    assert "| fit-pw | 60.0 min |" in text and "attack-positive |" not in text.split("## Steps")[1]
    assert "~~w3~~ **x3**" in text and "*sugar product* (3 training documents)" in text
    figure = tmp_path / "docs" / "study_figure2.png"
    assert figure.stat().st_size > 5000

    # Figure 2 again from the counts the report prints alone (the run's files gone), through the command line
    figure.unlink()
    monkeypatch.chdir(tmp_path)
    assert study.main(["--redraw-figure2", "docs/study.md"]) == Path("docs/study_figure2.png")
    assert figure.stat().st_size > 5000
    drawn = study.figure2_from_report(report)
    compare = json.loads((out / "attacks" / "compare-losses" / "summary.json").read_text())
    assert {g["model"]: [(b["bin"], b["attacked"], b["successes_strict"]) for b in g["bins"]]
            for g in drawn["groups"]} == {g["model"]: [(b["bin"], b["attacked"], b["successes_strict"])
                                                       for b in g["bins"]] for g in compare["groups"]}
    assert drawn["similarity_measure"] == "sentence-transformers all-MiniLM-L6-v2 (xmtc[minilm]), cosine"
    (tmp_path / "docs" / "empty.md").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.md: no per-bin table"):
        study.figure2_from_report(tmp_path / "docs" / "empty.md")


@pytest.mark.slow
def test_study_pipeline_on_toy_data_resumes_and_reports(study, tmp_path, tiny_attack_models, monkeypatch):
    monkeypatch.chdir(REPO)
    mlm, encoder = tiny_attack_models
    data = write_axml(tmp_path / "toy", {"train": 160, "dev": 30, "test": 50})
    out = tmp_path / "run"
    report = study.main(_args(data, out, mlm, encoder))
    assert report == out / "study_eurlex.md"

    steps = json.loads((out / "steps.json").read_text())
    names = ["fit-normal", "fit-pw", "fit-pwcb", "test-normal", "test-pw", "test-pwcb", "bins", "attack-positive",
             "attack-negative-clusters", "attack-negative-no-clusters", "attack-compare-losses"]
    assert list(steps) == names  # the mlm step is skipped: a masked LM was given
    assert "--compare={pw: " in steps["attack-compare-losses"]["commands"][0]
    assert "--settings.negative_clusters=false" in steps["attack-negative-no-clusters"]["commands"][0]
    compare = json.loads((out / "attacks" / "compare-losses" / "summary.json").read_text())
    assert {g["model"] for g in compare["groups"]} == {"normal", "pw", "pwcb"}
    bins = json.loads((out / "attacks" / "bins.json").read_text())
    assert bins["normal"]["min_labels_per_bin"] >= 1 and bins["normal"]["bins"]

    text = report.read_text()
    for part in ("## Models (test split)", "| normal |", "| pwcb |", "## Table 3", "## Table 5",
                 "with label clusters", "without clusters", "## Figure 2", "## Table 6", "## The paper's findings",
                 "## Steps: wall-clock and commands", "python -m xmtc attack", "cosine"):
        assert part in text, part
    assert "*XMTC models are very vulnerable to positive-targeted attacks*" in text
    assert (out / "study_eurlex_figure2.png").stat().st_size > 5000

    # a fit that stopped after its checkpoint was written goes on from last.ckpt; done steps are skipped
    (out / "train" / "pw" / "fit.json").unlink()
    study.main(_args(data, out, mlm, encoder))
    again = json.loads((out / "steps.json").read_text())
    assert "--ckpt_path=" in again["fit-pw"]["commands"][0] and "fit-1/checkpoints/last.ckpt" in \
        again["fit-pw"]["commands"][0]
    assert again["attack-positive"] == steps["attack-positive"]
    print({name: s["seconds"] for name, s in again.items()})
    assert (out / "train" / "pw" / "fit-2").is_dir()

    # the report alone, from the files
    (out / "study_eurlex.md").unlink()
    study.main([*_args(data, out, mlm, encoder)[:8], "--report-only"])
    assert "## Table 3" in (out / "study_eurlex.md").read_text()
