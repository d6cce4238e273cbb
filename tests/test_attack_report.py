"""Attack summaries: every attacked example counts, thresholds as in Table 3 / Figure 2, 95% Wilson intervals,
and the plots."""

from __future__ import annotations

import math

import pytest

from xmtc.attack.report import (
    bin_center,
    fit_title,
    markdown_tables,
    plot_success_by_frequency,
    plot_success_over_training,
    summarize,
    wilson_interval,
    with_intervals,
)

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson's (1927) closed form: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p, z2 = k / n, Z95 ** 2
    centre, half = p + z2 / (2 * n), Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half) / (1 + z2 / n), (centre + half) / (1 + z2 / n)


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
    # every rate with its count and Wilson interval
    assert (o["successes_change_budget"], o["successes_strict"]) == (2, 1)
    for rate, k in (("success_rate", 3), ("success_rate_change_budget", 2), ("success_rate_strict", 1)):
        assert (o[f"{rate}_lo"], o[f"{rate}_hi"]) == pytest.approx(_wilson_by_hand(k, 5))
    assert (g["bins"][1]["success_rate_strict_lo"], g["bins"][1]["success_rate_strict_hi"]) == \
        pytest.approx(_wilson_by_hand(0, 2))
    table = markdown_tables(s, dataset="EURLEX57K")
    lo, hi = _wilson_by_hand(2, 5)
    assert f"| normal | EURLEX57K | positive | 5 | 40.00 [{100 * lo:.1f}, {100 * hi:.1f}] |" in table
    assert "Similarity: cosine" in table and "95% Wilson score interval" in table


@pytest.mark.parametrize(("k", "n"), [(7, 10), (28, 29), (141, 150), (1, 3)])
def test_wilson_interval_is_the_closed_form(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)


def test_wilson_interval_published_values_and_edges():
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score interval without correction)
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                             (1, 29): (0.0061, 0.1718)}.items():
        assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2))  # k = 0: (0, z²/(n+z²))
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + Z95 ** 2))  # k = n: the mirror image
    assert wilson_interval(0, 0) is None  # no attacks, no rate, no interval
    for bad in ((3, 2), (-1, 4), (1.5, 4)):
        with pytest.raises(ValueError, match="wilson_interval"):
            wilson_interval(*bad)


def test_older_summaries_get_counts_and_intervals_filled_in():
    old = {"attacked": 30, "successes": 28, "success_rate": 28 / 30, "success_rate_change_budget": 0.9,
           "success_rate_strict": None}
    before = dict(old)
    new = with_intervals(old)
    assert new["successes_change_budget"] == 27 and "successes_strict" not in new  # k = rate × n; no rate, no k
    assert (new["success_rate_lo"], new["success_rate_hi"]) == pytest.approx(_wilson_by_hand(28, 30))
    assert (new["success_rate_change_budget_lo"], new["success_rate_change_budget_hi"]) == \
        pytest.approx(_wilson_by_hand(27, 30))
    assert "success_rate_strict_lo" not in new and old == before  # the input is left as it was
    assert with_intervals({**old, "success_rate_lo": 0.5, "success_rate_hi": 0.6})["success_rate_lo"] == 0.5
    paper = with_intervals({"success_rate_similar": 0.25}, ("success_rate_similar",), n=8)
    assert (paper["success_rate_similar_lo"], paper["success_rate_similar_hi"]) == pytest.approx(_wilson_by_hand(2, 8))


def test_an_empty_bin_has_no_interval_and_the_tables_say_so():
    s = summarize([_row("normal", "1-2", True)])
    o = s["groups"][0]["overall"]
    assert o["success_rate_lo"] == pytest.approx(_wilson_by_hand(1, 1)[0]) and o["success_rate_hi"] == 1.0
    empty = {**o, "attacked": 0, "successes": 0, "success_rate": None, "success_rate_lo": None,
             "success_rate_hi": None, "success_rate_change_budget": None, "success_rate_change_budget_lo": None,
             "success_rate_change_budget_hi": None}
    s["groups"][0]["bins"][0] = {"bin": "1-2", **empty}
    assert "| normal | positive | 1-2 | 0 | - |" in markdown_tables(s)


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
    lo2, hi2 = _wilson_by_hand(2, 5)
    lo1, hi1 = _wilson_by_hand(1, 5)
    assert (p["successes"], p["successes_similar"], p["attacked"]) == (2, 1, 5)
    assert (p["success_rate_similar_lo"], p["success_rate_similar_hi"]) == pytest.approx((lo1, hi1))
    assert (f"| normal | negative | 5 | 40.00 [{100 * lo2:.1f}, {100 * hi2:.1f}] | 20.00 [{100 * lo1:.1f}, "
            f"{100 * hi1:.1f}] | 0.32 | 3.33 |") in table


def test_plots_draw_intervals_and_titles_fit(tmp_path, monkeypatch):
    """Error bars (Figure 2 plot) and bands (callback plot) span the Wilson bounds; long titles stay inside."""
    import matplotlib.figure

    saved = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        real_savefig(fig, *args, **kwargs)
        saved.append((fig, fig.canvas.get_renderer()))  # as drawn into the file, before the figure is closed

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    rows = [_row("normal", "1-2", i < 3) for i in range(4)] + [_row("normal", "3-9", i < 1) for i in range(5)]
    s = summarize(rows, similarity_measure="sentence-transformers all-MiniLM-L6-v2 (xmtc[minilm]), cosine")
    long_title = "EURLEX57K, positive-targeted (sim. > 0.8, sentence-transformers all-MiniLM-L6-v2 " \
                 "(xmtc[minilm]), cosine), same pairs for every model"
    plot_success_by_frequency(s, tmp_path / "fig2.png", title=long_title)
    fig, renderer = saved[-1]
    ax = fig.axes[0]
    bars = [c for c in ax.collections if c.get_segments()]
    tops = sorted(max(seg[:, 1]) for c in bars for seg in c.get_segments())
    lows = sorted(min(seg[:, 1]) for c in bars for seg in c.get_segments())
    expected = [_wilson_by_hand(3, 4), _wilson_by_hand(1, 5)]
    assert tops == pytest.approx(sorted(100 * hi for _, hi in expected))
    assert lows == pytest.approx(sorted(100 * lo for lo, _ in expected))
    box, inside = ax.title.get_window_extent(renderer), fig.bbox
    assert box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1, (box, inside)
    assert "\n" in ax.get_title()  # wrapped, not cut

    records = [{"global_step": step, "kind": "positive", **b} for step in (10, 20) for b in s["groups"][0]["bins"]]
    plot_success_over_training(records, tmp_path / "curves.png")
    fig, renderer = saved[-1]
    bands = [c for c in fig.axes[1].collections]
    assert len(bands) == 2  # one band per evaluation
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(100 * _wilson_by_hand(1, 5)[0])
    assert max(ys) == pytest.approx(100 * _wilson_by_hand(3, 4)[1])
    for text in (fig._suptitle, *(a.title for a in fig.axes)):
        box = text.get_window_extent(renderer)
        assert box.x0 >= fig.bbox.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    assert fit_title("a " * 100, 2.0, 10).count("\n") >= 3


def test_describe_change_reads_replacements_and_insertions():
    from xmtc.attack.report import describe_change

    assert describe_change({"position": 3, "old": "duty", "new": "levy"}) == "duty -> levy"
    assert describe_change({"position": 3, "old": "duty", "new": "levy", "kind": "replace"}) == "duty -> levy"
    assert describe_change({"position": 7, "old": "", "new": "sugar", "kind": "insert_before"}) == \
        "+sugar before word 7"
    assert describe_change({"position": 0, "old": "", "new": "EU", "kind": "insert_after"}) == "+EU after word 0"
