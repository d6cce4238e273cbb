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
    s = summarize(rows, sim_threshold=0.8, change_rate_cutoff=0.1, similarity_measure="cosine")
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


def test_paper_statistics_as_results_all_computed_them():
    """utils/results_all.py: success needs < 10% changes (whatever θ the attack ran with); similarity summed over
    those successes and divided by ALL attacked examples; change rate pooled over them."""

    def row(success, changes, words, sim):
        return {"model": "normal", "kind": "negative", "bin": "1-2", "success": success, "status": "success",
                "changes": [{}] * changes, "num_words": words, "change_rate": changes / words, "similarity": sim,
                "queries": 5}

    rows = [row(True, 2, 100, 0.9),   # counts, similar
            row(True, 3, 50, 0.7),    # counts (6%), not similar
            row(True, 30, 100, 0.95),  # 30%: allowed by θ = 0.5, not counted by the table
            row(False, 0, 80, None),
            row(False, 10, 200, 0.99)]
    s = summarize(rows)  # the cut-off is Table 3's 10%, fixed
    assert s["change_rate_cutoff"] == 0.1
    o = s["groups"][0]["overall"]
    assert o["success_rate"] == pytest.approx(3 / 5) and o["success_rate_change_budget"] == pytest.approx(2 / 5)
    p = o["paper"]
    assert p["success_rate"] == pytest.approx(2 / 5)
    assert p["success_rate_similar"] == pytest.approx(1 / 5)
    assert p["similarity"] == pytest.approx((0.9 + 0.7) / 5)  # not the mean over successes, 0.8
    assert p["change_rate"] == pytest.approx((2 + 3) / (100 + 50))  # pooled, not the mean of 2% and 6%
    assert o["mean_similarity"] == pytest.approx((0.9 + 0.7 + 0.95) / 3)  # xmtc's own: over the successes
    table = markdown_tables(s)
    assert "As the paper's `results_all.py` computed" in table
    assert "| normal | negative | 5 | 40.00 | 20.00 | 0.32 | 3.33 |" in table
