"""scripts/study_eurlex.py: its report step on run files of known numbers, and every step end to end on the toy
corpus (CI has no EURLEX57K), resume included."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from toydata import REPO, load_script, write_axml

from xmtc.attack.report import wilson_interval

PARTS = 4  # fit parts of the smoke pipeline (one toy epoch each): the toy models need a few epochs to learn


@pytest.fixture(scope="module")
def study():
    return load_script("study_eurlex")


def _args(data: Path, out: Path, mlm: Path, encoder: Path, store: Path | None = None) -> list[str]:
    # k = 2 of 5 toy labels, so that negative targets exist; the toy model needs a few epochs to learn anything
    return [*(["--store", str(store)] if store else []),
            "--scale", "smoke", "--data", str(data), "--out", str(out), "--masked-lm", str(mlm),
            "--encoder-path", str(encoder), "--in-process",
            "--attack-args", "--settings.k=2 --settings.max_change_rate=0.3 --settings.batch_size=16",
            "--parts", str(PARTS), "--", "--trainer.enable_model_summary=false"]


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
    out = root / name
    out.mkdir(parents=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = AttackSettings()
    summary = summarize(rows, 0.8, 0.1, encoder_description(settings))
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "run.json").write_text(json.dumps({"settings": asdict(settings)}))


def _ci(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _verdict_counts(study, a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float]:
    d, lo, hi, _ = study.difference_interval(a, b)
    return lo, hi


def test_difference_interval_known_answers(study):
    """Newcombe's hybrid score interval (Newcombe 1998, method 10): his example 56/70 vs 48/80 gives
    0.0524 to 0.3339; the detectable difference shrinks as 1/sqrt(n)."""
    d, lo, hi, det = study.difference_interval((56, 70), (48, 80))
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)
    _, _, _, det4 = study.difference_interval((224, 280), (192, 320))
    assert det4 == pytest.approx(det / 2, rel=0.02)
    assert study.difference_interval((0, 2), (0, 2))[3] > 0.5  # no success at all: a large effect, not 0, undetectable
    assert "not decidable at this budget" in study._verdict(-0.1, 0.2, 0.25) and "25.0 points" in \
        study._verdict(-0.1, 0.2, 0.25)
    assert study._verdict(0.01, 0.2, 0.1) == "**holds**" and study._verdict(-0.2, -0.01, 0.1) == "**does not hold**"


def test_report_from_run_files_tables_and_verdicts(study, tmp_path, monkeypatch):
    """The report step alone, on run files of known success rates for two models: tables with 95% Wilson
    intervals, validation curves, figures and a verdict per finding."""
    out = tmp_path / "run"
    axml, aplc = out / "attacks" / "axml", out / "attacks" / "aplc"
    _attack_dir(axml, "positive", {("normal", "positive"): (0.9, 0.5)})
    _attack_dir(axml, "negative-clusters", {("normal", "negative"): (0.3, 0.1)})
    _attack_dir(axml, "negative-no-clusters", {("normal", "negative"): (0.05, 0.05)})
    # a run from before the intervals: its summary.json has rates only, the report fills counts and intervals in
    old = axml / "negative-no-clusters" / "summary.json"
    summary = json.loads(old.read_text())
    for g in summary["groups"]:
        for stats in (g["overall"], *g["bins"]):
            for key in [k for k in stats if k.endswith(("_lo", "_hi")) or k.startswith("successes_")]:
                del stats[key]
    old.write_text(json.dumps(summary))
    _attack_dir(axml, "compare-losses", {("normal", "positive"): (0.9, 0.5), ("pw", "positive"): (0.5, 0.5),
                                         ("pwcb", "positive"): (0.88, 0.5)})
    # APLC-XLNet: a positive attack below 50% (F1 does not hold) and a compare run only
    _attack_dir(aplc, "positive", {("normal", "positive"): (0.2, 0.2)})
    _attack_dir(aplc, "compare-losses", {("normal", "positive"): (0.6, 0.5), ("pw", "positive"): (0.62, 0.5),
                                         ("pwcb", "positive"): (0.7, 0.5)})
    bins = {"normal": {"min_labels_per_bin": 40, "bins": ["1-5", "6-50", "51-900"], "labels": 130, "pairs": 900,
                       "pairs_per_bin": [300, 300, 300], "enough_pairs": True},
            "compare": {"min_labels_per_bin": 30, "bins": ["1-5", "6-50", "51-900"], "labels": 100, "pairs": 700,
                        "pairs_per_bin": [100, 300, 300], "enough_pairs": False},
            "per_bin": 200, "rarest_correct": {"normal": 2, "pw": 1, "pwcb": 1}}
    (out / "attacks" / "bins.json").write_text(json.dumps({"axml": bins, "aplc": bins}))
    metrics = out / "test" / "axml" / "pw" / "run" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("epoch,step,test/P@1,test/P@5,test/nDCG@5,test/PSP@5\n0,0,0.61,0.42,0.5,0.33\n")
    # validation curves: two parts (the second resumed in fit-2), normal still rising, pw below 80% of normal
    for loss, (first, second) in {"normal": (0.30, 0.40), "pw": (0.20, 0.25), "pwcb": (0.31, 0.33)}.items():
        for version, (step, value) in (("fit-1", (999, first)), ("fit-2", (1999, second))):
            curve = out / "train" / "axml" / loss / version / "metrics.csv"
            curve.parent.mkdir(parents=True)
            curve.write_text(f"epoch,step,train/loss,val/P@5,val/nDCG@5\n0,{step - 10},0.5,,\n"
                             f"{step // 1000},{step},,{value},{value}\n")
    lr = "--model.init_args.optimizer.init_args.lr=0.004"
    (out / "study.json").write_text(json.dumps({"scale": "cpu", "models": ["axml", "aplc"],
                                                "loss_args": {"pw": [lr]}}))
    (out / "steps.json").write_text(json.dumps({
        "fit-axml-pw-part1": {"seconds": 3600.0,
                              "commands": ["python -m xmtc fit --config configs/axml_eurlex_pw.yaml"],
                              "finished": "2026-11-21T10:00:00"},
        "attack-axml-positive": {"seconds_before_resume": 12.0}}))  # crashed, not rerun yet: not listed
    report = study.write_report(out, tmp_path / "docs" / "study.md", data_dir=tmp_path)
    text = report.read_text()
    assert "| AttentionXML | pw | 2000 steps, epoch 2, best val nDCG@5 25.00 | 61.00 | - | 42.00 | 50.00 | - | - | " \
           "33.00 |" in text
    assert "pw: `--model.init_args.optimizer.init_args.lr=0.004`" in text
    # the plan of study.json (two models, one part each, the tokenizer for APLC-XLNet): 22 steps, the crashed
    # attack not done
    assert "**Status: in progress**, 1 of 22 steps done (1 of 6 fit parts); next: `tokenizer`." in text
    # validation curves after each part, the last part's gain and the 80% condition
    assert "| 1000 | 30.00 | 20.00 | 31.00 |" in text and "| 2000 | 40.00 | 25.00 | 33.00 |" in text
    assert "normal: the last part added +10.00 points (still rising)" in text
    assert "pw at 62% of normal's (**does not reach** the 80%" in text and "pwcb at 82% of normal's (reaches" in text
    # Table 3: (90 + 70 + 50) / 3 = 210 of 300
    assert f"| AttentionXML positive | normal | 300 | 70.00 {_ci(210, 300)} | 0.950 | 5.00 | 30 |" in text
    assert f"| APLC-XLNet positive | normal | 300 | 20.00 {_ci(60, 300)} |" in text
    assert f"| AttentionXML with label clusters | normal | 300 | 20.00 {_ci(60, 300)} |" in text
    assert f"| AttentionXML without clusters | normal | 300 | 5.00 {_ci(15, 300)} |" in text  # the old run's
    assert "| APLC-XLNet with label clusters | (not run yet) |" in text
    assert "95% Wilson score interval" in text
    # per bin: n, success within the budget and Figure 2's, each with its interval
    assert f"| axml/compare-losses | pwcb | positive | 1-5 | 100 | 88.00 {_ci(88, 100)} | 88.00 {_ci(88, 100)} |" \
        in text
    assert f"| axml/negative-no-clusters | normal | negative | 6-50 | 100 | 5.00 {_ci(5, 100)} |" in text
    assert "similarity: **sentence-transformers all-MiniLM-L6-v2 (xmtc[minilm]), cosine**" in text
    assert "L = 40 labels per bin gives 3 bins 1-5, 6-50, 51-900 holding 300, 300, 300 pairs (**fewer than 5" in text
    assert "no binning gives every bin 200 pairs" in text
    assert "the rarest label each loss gets right has normal 2, pw 1, pwcb 1 training documents" in text
    findings = text.split("## The paper's findings here")[1]
    assert f"**F1** (AttentionXML) *XMTC models are very vulnerable to positive-targeted attacks* (taken as a " \
           f"success rate above 50%): **holds**: 70.00% {_ci(210, 300)}" in findings
    assert "**F1** (APLC-XLNet) *XMTC models are very vulnerable to positive-targeted attacks* (taken as a success " \
           "rate above 50%): **does not hold**: 20.00%" in findings
    assert "**F2** (AttentionXML) *Much less vulnerable to negative-targeted attacks*: **holds**" in findings
    assert "**F3** (AttentionXML) *Label clusters help the negative attacker*: **holds**: 20.00%" in findings
    lo, hi = _verdict_counts(study, (90, 100), (50, 100))
    assert "**F4** (AttentionXML) *Tail labels are far more vulnerable than head labels* (Figure 2 rate, normal " \
           "model): **holds**: 90.00%" in findings and f"+40.0 points [{100 * lo:+.1f}, {100 * hi:+.1f}]" in findings
    assert f"**F5** (AttentionXML) *PW makes tail labels more robust* (same pairs for all losses, rarest bin 1-5): " \
           f"**holds**: 50.00% {_ci(50, 100)} for PW vs 90.00% {_ci(90, 100)}" in findings
    assert "**F6** (AttentionXML) *PW-cb makes tail labels more robust* (same pairs for all losses, rarest bin " \
           "1-5): **not decidable at this budget** (an effect of" in findings
    assert "**F6** (APLC-XLNet) *PW-cb makes tail labels more robust* (same pairs for all losses, rarest bin " \
           "1-5): **does not hold**" not in findings  # 70% vs 60% of 100: not decidable either
    assert "**F2** (APLC-XLNet)" not in findings  # no negative attack on it
    assert "| fit-axml-pw-part1 | 60.0 min |" in text and "attack-axml-positive |" not in text.split("## Steps")[1]
    assert "~~w3~~ **x3**" in text and "*sugar product* (3 training documents)" in text
    figures = [tmp_path / "docs" / f"study_figure2_{m}.png" for m in ("aplc", "axml")]
    assert all(f.stat().st_size > 5000 for f in figures)

    # Figure 2 again from the counts the report prints alone (the run's files gone), through the command line
    for f in figures:
        f.unlink()
    monkeypatch.chdir(tmp_path)
    assert study.main(["--redraw-figure2", "docs/study.md"]) == [Path("docs/study_figure2_aplc.png"),
                                                                   Path("docs/study_figure2_axml.png")]
    assert all(f.stat().st_size > 5000 for f in figures)
    drawn = study.figure2_from_report(report)[report.parent / "study_figure2_axml.png"]
    compare = json.loads((axml / "compare-losses" / "summary.json").read_text())
    assert {g["model"]: [(b["bin"], b["attacked"], b["successes_strict"]) for b in g["bins"]]
            for g in drawn["groups"]} == {g["model"]: [(b["bin"], b["attacked"], b["successes_strict"])
                                                       for b in g["bins"]] for g in compare["groups"]}
    assert drawn["similarity_measure"] == "sentence-transformers all-MiniLM-L6-v2 (xmtc[minilm]), cosine"
    (tmp_path / "docs" / "empty.md").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.md: no per-bin table"):
        study.figure2_from_report(tmp_path / "docs" / "empty.md")


def test_figure2_redrawn_from_a_one_model_report_of_before(study, tmp_path):
    """docs/study_eurlex.md of the one-model study (run column ``compare-losses``) still redraws."""
    report = tmp_path / "old.md"
    report.write_text("similarity: **cosine**, threshold 0.8\n\n" + study.BIN_TABLE + "\n|---|\n"
                      "| compare-losses | normal | positive | 1-5 | 30 | 90.00 [1, 2] | 80.00 [1, 2] |\n"
                      "| compare-losses | pw | positive | 1-5 | 30 | 90.00 [1, 2] | 70.00 [1, 2] |\n\nend\n")
    drawn = study.figure2_from_report(report)
    assert list(drawn) == [tmp_path / "old_figure2.png"]
    assert [b["successes_strict"] for g in drawn[tmp_path / "old_figure2.png"]["groups"] for b in g["bins"]] == [24, 21]


def test_time_budget_stops_where_a_rerun_resumes(study, tmp_path):
    """--hours: a fit part is not started when the model's most recently finished part took longer than the time
    left; a running command is
    stopped at the deadline; both end the run with OutOfTime (the report is then written from what is done)."""
    import argparse
    import time

    out = tmp_path / "run"
    out.mkdir()
    (out / "steps.json").write_text(json.dumps({"fit-axml-pw-part1": {"seconds": 3600.0, "commands": [],
                                                                      "finished": "2026-11-21T10:00:00"}}))
    args = argparse.Namespace(out=str(out), scale="smoke", masked_lm="m", in_process=False, hours=2 / 3600)
    s = study.Study(args)
    ran = []
    with pytest.raises(study.OutOfTime, match="fit-axml-pw-part2 would not finish"):
        s.step("fit-axml-pw-part2", lambda: False, lambda c: ran.append("part2"))
    # a first part is expected to take what the model's parts take: not started either
    with pytest.raises(study.OutOfTime, match="fit-axml-normal-part1 would not finish"):
        s.step("fit-axml-normal-part1", lambda: False, lambda c: ran.append("normal"))
    s.step("fit-aplc-normal-part1", lambda: False, lambda c: ran.append("aplc"))  # nothing known: started
    assert ran == ["aplc"]
    began = time.monotonic()
    with pytest.raises(study.OutOfTime, match="stopped at the end of --hours"):
        s.step("attack-axml-positive", lambda: False,
               lambda c: s.run(c, ["-c", "import time; time.sleep(60)", "sleeping"]))
    assert time.monotonic() - began < 30
    assert "seconds_before_resume" in json.loads((out / "steps.json").read_text())["attack-axml-positive"]

    # the latest part sets the estimate, not the part's own predecessor: part 1 ran beside other jobs, part 2 of
    # another loss on idle cores
    (out / "steps.json").write_text(json.dumps({
        "fit-axml-pw-part1": {"seconds": 7200.0, "commands": [], "finished": "2026-11-21T10:00:00"},
        "fit-axml-normal-part2": {"seconds": 60.0, "commands": [], "finished": "2026-11-21T13:00:00"}}))
    s = study.Study(argparse.Namespace(**{**vars(args), "hours": 1.0}))
    s.step("fit-axml-pw-part2", lambda: False, lambda c: ran.append("pw part2"))
    assert ran == ["aplc", "pw part2"]


@pytest.mark.slow
def test_study_pipeline_on_toy_data_resumes_and_reports(study, tmp_path, tiny_attack_models, monkeypatch):
    monkeypatch.chdir(REPO)
    mlm, encoder = tiny_attack_models
    data = write_axml(tmp_path / "toy", {"train": 160, "dev": 30, "test": 50})
    out, store = tmp_path / "run", tmp_path / "store"
    report = study.main(_args(data, out, mlm, encoder, store))
    assert report == out / "study_eurlex.md"

    steps = json.loads((out / "steps.json").read_text())
    models, losses = ("axml", "aplc"), ("normal", "pw", "pwcb")
    # one run at a time, all its parts, loss by loss: a stop leaves at most one run unfinished
    names = ["tokenizer", *(f"fit-{m}-{loss}-part{i}" for loss in losses for m in models for i in range(1, PARTS + 1)),
             *(f"test-{m}-{loss}" for m in models for loss in losses), "bins",
             *(f"attack-{m}-{a}" for m in models
               for a in ("positive", "negative-clusters", "negative-no-clusters", "compare-losses"))]
    assert list(steps) == names  # the mlm step is skipped: a masked LM was given
    assert study.plan(models, PARTS, mlm=False) == names  # the plan the report's status line counts
    for m in models:  # part i trains to epoch i from part i - 1's last.ckpt
        part2 = steps[f"fit-{m}-pw-part2"]["commands"][0]
        assert "--trainer.max_epochs=2" in part2 and f"train/{m}/pw/fit-1/checkpoints/last.ckpt" in part2
        assert "--ckpt_path" not in steps[f"fit-{m}-pw-part1"]["commands"][0]
        assert "--compare={pw: " in steps[f"attack-{m}-compare-losses"]["commands"][0]
        assert "--settings.negative_clusters=false" in steps[f"attack-{m}-negative-no-clusters"]["commands"][0]
        compare = json.loads((out / "attacks" / m / "compare-losses" / "summary.json").read_text())
        assert {g["model"] for g in compare["groups"]} == set(losses)
    assert "aplc_eurlex_pw.yaml" in steps["fit-aplc-pw-part1"]["commands"][0]
    assert "--data.init_args.tokenizer=" in steps["fit-aplc-pw-part1"]["commands"][0]
    bins = json.loads((out / "attacks" / "bins.json").read_text())
    for m in models:
        b = bins[m]["normal"]
        assert b["min_labels_per_bin"] >= 1 and b["bins"] and sum(b["pairs_per_bin"]) == b["pairs"]
        assert b["enough_pairs"] == (min(b["pairs_per_bin"]) >= 2)  # the smoke scale's 2 pairs per bin

    text = report.read_text()
    for part in ("## Models (test split)", "| AttentionXML | normal |", "| APLC-XLNet | pwcb |", "## Table 3",
                 "## Table 5", "with label clusters", "without clusters", "## Figure 2", "## Table 6",
                 "## Validation curves", f"| {PARTS * 3} |", "## The paper's findings",
                 "## Steps: wall-clock and commands", "python -m xmtc attack", "cosine"):
        assert part in text, part
    assert "**F1** (AttentionXML) *XMTC models are very vulnerable to positive-targeted attacks*" in text
    assert "**F1** (APLC-XLNet)" in text
    assert all((out / f"study_eurlex_figure2_{m}.png").stat().st_size > 5000 for m in models)

    # the store holds what a fresh machine needs: every finished run's best weights, no training state
    stored = lambda pattern: sorted(store.rglob(pattern))  # noqa: E731
    assert len(stored("*.ckpt")) == 6 and not stored("last.ckpt")
    for ckpt in stored("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert "state_dict" in state and "optimizer_states" not in state
    assert stored("steps.json") and stored("results.jsonl") and stored("tokenizer.json")

    # a part that stopped after its checkpoint was written goes on from last.ckpt, on a fresh machine too: the
    # store keeps the unfinished run's last.ckpt whole; a test and an attack redone read the stored best weights
    for marker in (f"part{PARTS}.json", "fit.json"):  # here and in the store, or the store puts them back
        (out / "train" / "axml" / "pw" / marker).unlink()
        stored(f"axml/pw/{marker}")[0].unlink()
    study.Study(study.parse_args(_args(data, out, mlm, encoder, store))).save_store()
    assert len(stored("last.ckpt")) == 1 and "optimizer_states" in torch.load(
        stored("last.ckpt")[0], map_location="cpu", weights_only=False)
    for done in stored("test/aplc/normal/run/metrics.csv") + stored("attacks/aplc/compare-losses/summary.json"):
        done.unlink()
    shutil.rmtree(out)
    study.main(_args(data, out, mlm, encoder, store))
    again = json.loads((out / "steps.json").read_text())
    assert f"axml/pw/fit-{PARTS}/checkpoints/last.ckpt" in again[f"fit-axml-pw-part{PARTS}"]["commands"][0]
    assert again["attack-axml-positive"] == steps["attack-axml-positive"]
    for redone in ("test-aplc-normal", "attack-aplc-compare-losses"):
        assert again[redone]["finished"] > steps[redone]["finished"]
    print({name: s["seconds"] for name, s in again.items()})
    assert (out / "train" / "axml" / "pw" / f"fit-{PARTS + 1}").is_dir()
    assert not stored("last.ckpt")  # the run finished again: its best weights are all the store keeps

    # the report alone, from the files
    (out / "study_eurlex.md").unlink()
    study.main([*_args(data, out, mlm, encoder)[:8], "--report-only"])
    assert "## Table 3" in (out / "study_eurlex.md").read_text()
    assert "**Status: complete.**" in (out / "study_eurlex.md").read_text()


def test_reweighted_share_is_taken_at_a_step_both_runs_have(study):
    """A run stopped between parts leaves normal a part ahead: the 80% check compares the same step."""
    curves = {"normal": [(1000, 0.20), (2000, 0.36)], "pw": [(1000, 0.19)], "pwcb": [(1000, 0.15), (2000, 0.30)]}
    text = "\n".join(study.curve_lines(curves, "AttentionXML"))
    assert "pw at 95% of normal's at step 1000, the last both have (reaches the 80%" in text
    assert "pwcb at 83% of normal's (reaches the 80%" in text
    assert "| 2000 | 36.00 | - | 30.00 |" in text


def test_status_follows_the_plan_of_study_json(study):
    done = {"seconds": 1.0}
    paper = {"models": ["axml"], "parts": None, "mlm_init": "minilm"}  # one fit command per model and loss
    assert study._status(paper, {"mlm": done, "fit-axml-normal": done}) == (
        "**Status: in progress**, 2 of 12 steps done (1 of 3 fit parts); next: `fit-axml-pw`. This page is "
        "rewritten whenever the run stops or ends.")
    parts = {"models": ["axml"], "parts": 2, "mlm_init": None}
    assert "1 of 14 steps done (1 of 6 fit parts); next: `fit-axml-normal-part2`" in study._status(
        parts, {"fit-axml-normal-part1": done, "fit-axml-normal-part2": {"seconds_before_resume": 9.0}})
    # the masked LM is made after the bins, when the attacks need it
    assert study.plan(["axml"], 1, mlm=True)[-6:-4] == ["bins", "mlm"]


def test_a_later_part_without_a_last_checkpoint_is_refused(study, tmp_path):
    """A finished run restored from a store has its best weights only: raising --parts must not train from
    scratch under the name of part 7."""
    args = study.parse_args(["--scale", "cpu", "--out", str(tmp_path / "run"), "--in-process",
                             "--data", str(tmp_path / "no-data")])  # without the check: a quick failure, no training
    s = study.Study(args)
    (s.fit_root("axml", "normal") / "fit-6" / "checkpoints").mkdir(parents=True)
    (s.fit_root("axml", "normal") / "part6.json").write_text("{}")
    with pytest.raises(study.StepFailed, match="part 6 is done but no last.ckpt"):
        s.fit_step("normal", "axml", only_part=7)
