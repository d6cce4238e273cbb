"""Attack summaries: every attacked example counts, thresholds as in Table 3 / Figure 2, and the plot."""

from __future__ import annotations

import pytest

from xmtc.attack.report import bin_center, markdown_tables, plot_success_by_frequency, summarize


def _row(model, bin_, success, change_rate=0.02, sim=0.9, queries=10, status=None, kind="positive"):
    return {"model": model, "kind": kind, "bin": bin_, "success": success, "change_rate": change_rate,
            "similarity": sim, "queries": queries, "status": status or ("success" if success else "failed")}


def test_rates_count_every_attacked_example_and_apply_thresholds():
    rows = [
        _row("normal", "1-2", True),
        _row("normal", "1-2", True, sim=0.5),  # success, but not similar enough for Figure 2
        _row("normal", "1-2", False, status="query_budget"),  # budget-exhausted still counts as attacked
        _row("normal", "3-9", True, change_rate=0.2),  # beyond the 10% change budget
        _row("normal", "3-9", False),
        _row("normal", "3-9", False, status="skipped"),  # never attacked: excluded, reported
    ]
    s = summarize(rows, sim_threshold=0.8, max_change_rate=0.1, similarity_measure="cosine")
    (g,) = s["groups"]
    assert g["skipped"] == 1
    o = g["overall"]
    assert o["attacked"] == 5 and o["successes"] == 3
    assert o["success_rate"] == pytest.approx(3 / 5)
    assert o["success_rate_change_budget"] == pytest.approx(2 / 5)
    assert o["success_rate_strict"] == pytest.approx(1 / 5)
    assert o["mean_similarity"] == pytest.approx((0.9 + 0.5 + 0.9) / 3)
    assert [b["bin"] for b in g["bins"]] == ["1-2", "3-9"]
    assert g["bins"][0]["success_rate_strict"] == pytest.approx(1 / 3)
    table = markdown_tables(s, dataset="EURLEX57K")
    assert "| normal | EURLEX57K | positive | 5 | 40.00 |" in table
    assert "Similarity: cosine" in table


def test_plot_has_one_line_per_model(tmp_path):
    rows = [_row(m, b, ok) for m in ("normal", "pwcb") for b, ok in (("1-2", True), ("3-9", False))]
    path = plot_success_by_frequency(summarize(rows, similarity_measure="angular"), tmp_path / "fig.png")
    assert path.stat().st_size > 5000
    assert bin_center("1-4") == pytest.approx(2.0) and bin_center("7") == pytest.approx(7.0)
