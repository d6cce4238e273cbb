"""Summaries of attack results: success rates overall and per frequency bin, the paper's Table 3 /
Table 5 layout as markdown, and a Figure 2 style plot.

Works on the rows of ``results.jsonl`` (dicts), so a report can be rebuilt from a finished or
interrupted run without the models. Success rates count every attacked example: none is dropped (the
paper's figures, from its ``utils/results_all.py``, drop none either).

Two sets of statistics stand side by side, both with Table 3's FIXED 10% change-rate cut-off (whatever
budget θ the attack ran with; the paper's run script used θ = 0.5):
- xmtc's: success rates over all attacked examples (plain, < 10% changes, and also similar enough),
  mean similarity and change rate of the successes;
- ``paper``: what ``results_all.py`` printed for Table 3 / Table 5: success (< 10% changes) and success
  with similarity > 0.8 over all attacked examples, similarity SUMMED over those successes and divided by
  ALL attacked examples (why Table 5's similarities read 0.00-0.30), and the change rate pooled over
  those successes (their changed words / their words).

Every success rate comes with its count of successes and a 95% Wilson score interval (``wilson_interval``):
per bin only a few dozen pairs are attacked, so a rate alone overstates what is known.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Confidence level of every interval in the reports.
CONFIDENCE = 0.95
#: The success rates of ``summarize``'s groups and bins, each with its count of successes (``k`` of ``attacked``).
RATE_COUNTS = {"success_rate": "successes", "success_rate_change_budget": "successes_change_budget",
               "success_rate_strict": "successes_strict"}


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion ``successes / n`` (scipy's ``binomtest``); ``None`` when
    ``n == 0`` (no rate, so no interval). Wilson, not the normal approximation: it stays inside [0, 1] and has a
    width at 0 or n successes, which small bins often have."""
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise ValueError(f"wilson_interval needs integer counts, got successes={successes!r}, n={n!r}")
    successes, n = int(successes), int(n)
    if not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def interval_fields(rate: str, successes: int, n: int) -> dict[str, float | None]:
    """``{rate}_lo`` and ``{rate}_hi``: the Wilson interval of ``successes / n`` (``None`` for ``n == 0``)."""
    ci = wilson_interval(successes, n)
    return {f"{rate}_lo": ci[0] if ci else None, f"{rate}_hi": ci[1] if ci else None}


def rate_interval(stats: dict[str, Any], rate: str) -> tuple[float, float] | None:
    """The interval stored next to ``rate`` in a summary's group or bin (``None`` if absent or n = 0)."""
    lo, hi = stats.get(f"{rate}_lo"), stats.get(f"{rate}_hi")
    return None if lo is None or hi is None else (float(lo), float(hi))


def with_intervals(stats: dict[str, Any], rates: Iterable[str] = RATE_COUNTS, n: int | None = None) -> dict[str, Any]:
    """A copy of ``stats`` (a summary's group or bin written before the intervals, or a ``summary.csv`` row as
    numbers) with each rate's count and Wilson interval filled in where missing, so older runs' files report
    intervals too. The count is the stored one (``RATE_COUNTS``) or else round(rate × n), exact for a rate that
    is k / n; ``n`` defaults to ``stats["attacked"]``."""
    out = dict(stats)
    n = int(out.get("attacked") or 0) if n is None else n
    for rate in rates:
        if out.get(rate) is None or out.get(f"{rate}_lo") is not None:
            continue
        count = RATE_COUNTS.get(rate)
        k = int(out[count]) if count and out.get(count) is not None else round(float(out[rate]) * n)
        if count:
            out[count] = k
        out |= interval_fields(rate, k, n)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


#: Table 3's change-rate cut-off: a success counts only below it (fixed, as in the paper's results_all.py).
TABLE_CHANGE_RATE = 0.1


def paper_statistics(rows: Sequence[dict[str, Any]], sim_threshold: float = 0.8,
                     change_rate_cutoff: float = TABLE_CHANGE_RATE) -> dict[str, float | None]:
    """Table 3 / 5 figures as the paper's ``utils/results_all.py`` computed them (module docstring).

    ``changes`` and ``num_words`` of each row give the change rate, as that script's ``change / num_word``.
    Each rate has its count (``successes``, ``successes_similar`` of ``attacked``) and Wilson ``_lo``/``_hi``."""
    n = len(rows)
    hits = [r for r in rows if r["success"] and _num_changes(r) / max(r["num_words"], 1) < change_rate_cutoff]
    similar = [r for r in hits if (r.get("similarity") or 0.0) > sim_threshold]
    words = sum(r["num_words"] for r in hits)
    return {
        "attacked": n,
        "successes": len(hits),
        "success_rate": len(hits) / n if n else None,
        **interval_fields("success_rate", len(hits), n),
        "successes_similar": len(similar),
        "success_rate_similar": len(similar) / n if n else None,
        **interval_fields("success_rate_similar", len(similar), n),
        "similarity": sum(r.get("similarity") or 0.0 for r in hits) / n if n else None,
        "change_rate": sum(_num_changes(r) for r in hits) / words if words else None,
    }


def _num_changes(row: dict[str, Any]) -> int:
    changes = row.get("changes")
    return len(changes) if changes is not None else round(row["change_rate"] * row["num_words"])


def describe_change(change: dict[str, Any]) -> str:
    """A result row's change for people: ``old -> new``, or ``+new before`` / ``+new after`` for an insertion
    (whose ``old`` is empty)."""
    kind = change.get("kind", "replace")
    if kind == "replace":
        return f"{change['old']} -> {change['new']}"
    return f"+{change['new']} {kind.removeprefix('insert_')} word {change['position']}"


def counts_as_success(row: dict[str, Any], sim_threshold: float, change_rate_cutoff: float,
                      strict: bool = True) -> bool:
    """Whether a result row counts as a success in the tables: below the change-rate cut-off (Table 3) and, when
    ``strict``, above the similarity threshold too (Figure 2)."""
    if not row["success"] or row["change_rate"] >= change_rate_cutoff:
        return False
    return not strict or (row.get("similarity") is not None and row["similarity"] > sim_threshold)


def _group_stats(rows: Sequence[dict[str, Any]], sim_threshold: float, change_rate_cutoff: float) -> dict[str, Any]:
    n = len(rows)
    successes = [r for r in rows if r["success"]]
    strict = [r for r in successes if counts_as_success(r, sim_threshold, change_rate_cutoff)]
    budget = [r for r in successes if counts_as_success(r, sim_threshold, change_rate_cutoff, strict=False)]
    paper = paper_statistics(rows, sim_threshold, change_rate_cutoff) if all("num_words" in r for r in rows) else None
    counts = {"successes": len(successes),
              # Table 3: a success counts only below the change-rate budget
              "successes_change_budget": len(budget),
              # Figure 2: ... and above the similarity threshold
              "successes_strict": len(strict)}
    rates: dict[str, Any] = {}
    for rate, count in RATE_COUNTS.items():
        k = counts[count]
        rates |= {count: k, rate: k / n if n else None, **interval_fields(rate, k, n)}
    return {
        "attacked": n,
        **rates,
        # similarity and change rate describe the adversarial examples found, i.e. the successes
        "mean_similarity": _mean([r["similarity"] for r in successes if r.get("similarity") is not None]),
        "mean_change_rate": _mean([r["change_rate"] for r in successes]),
        "mean_queries": _mean([r["queries"] for r in rows]),
        "paper": paper,
    }


def summarize(rows: Iterable[dict[str, Any]], sim_threshold: float = 0.8,
              change_rate_cutoff: float = TABLE_CHANGE_RATE, similarity_measure: str | None = None) -> dict[str, Any]:
    """Per (model, kind): overall and per-bin statistics. Skipped rows (precondition not met) are
    reported as a count and excluded, since they were never attacked. ``change_rate_cutoff``: Table 3's
    (10%), not the attack's budget θ. Every rate ``r`` has its count (``RATE_COUNTS``) and Wilson interval
    ``r_lo``, ``r_hi`` (``None`` where nothing was attacked)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    skipped: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        key = (r.get("model", "model"), r["kind"])
        if r["status"] == "skipped":
            skipped[key] += 1
        else:
            groups[key].append(r)
    out: dict[str, Any] = {"similarity_measure": similarity_measure, "similarity_threshold": sim_threshold,
                           "change_rate_cutoff": change_rate_cutoff,
                           "intervals": f"{100 * CONFIDENCE:g}% Wilson score (<rate>_lo, <rate>_hi; k = successes*, "
                                        "n = attacked)", "groups": []}
    for (model, kind), members in sorted(groups.items()):
        by_bin: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in members:
            by_bin[r["bin"]].append(r)
        bins = sorted(by_bin, key=lambda b: int(str(b).split("-")[0]))
        out["groups"].append({
            "model": model, "kind": kind, "skipped": skipped[(model, kind)],
            "overall": _group_stats(members, sim_threshold, change_rate_cutoff),
            "bins": [{"bin": b, **_group_stats(by_bin[b], sim_threshold, change_rate_cutoff)} for b in bins],
        })
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_rate(stats: dict[str, Any], rate: str, digits: int = 2) -> str:
    """``rate`` of a summary's group or bin in percent with its 95% interval: ``72.00 [58.1, 82.5]``."""
    value = stats.get(rate)
    if value is None:
        return "-"
    ci = rate_interval(stats, rate)
    return f"{100 * value:.{digits}f}" + ("" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")


def markdown_tables(summary: dict[str, Any], dataset: str = "") -> str:
    """Table 3 (positive) / Table 5 (negative) layout, then the per-bin rows; rates with 95% Wilson intervals."""
    measure = summary.get("similarity_measure") or "unknown measure"
    budget = 100 * summary["change_rate_cutoff"]
    ci = f"[{100 * CONFIDENCE:g}% CI]"
    lines = [f"Success rate counts a success only with change rate < {budget:g}%. Similarity: {measure}. "
             f"In brackets: {100 * CONFIDENCE:g}% Wilson score interval of each success rate (n = attacked).", "",
             f"| Model | Dataset | Attack | Attacked | Success rate (%) {ci} | Similarity | Change rate (%) "
             "| Queries |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for g in summary["groups"]:
        o = g["overall"]
        lines.append(f"| {g['model']} | {dataset} | {g['kind']} | {o['attacked']} | "
                     f"{format_rate(o, 'success_rate_change_budget')} | {_num(o['mean_similarity'])} | "
                     f"{_pct(o['mean_change_rate'])} | {_num(o['mean_queries'])} |")
    thr = summary["similarity_threshold"]
    lines += ["", f"Per label-frequency bin (Figure 2: success with similarity > {thr:g} and change rate "
              f"< {budget:g}%):", "",
              f"| Model | Attack | Bin (train freq.) | Attacked | Success (%) {ci} | Figure 2 success (%) {ci} "
              "| Similarity |",
              "|---|---|---|---:|---:|---:|---:|"]
    for g in summary["groups"]:
        for b in g["bins"]:
            lines.append(f"| {g['model']} | {g['kind']} | {b['bin']} | {b['attacked']} | "
                         f"{format_rate(b, 'success_rate_change_budget')} | {format_rate(b, 'success_rate_strict')} | "
                         f"{_num(b['mean_similarity'])} |")
    papers = [g for g in summary["groups"] if g["overall"].get("paper")]
    if papers:
        lines += ["", f"As the paper's `results_all.py` computed Table 3 / 5 (over all attacked examples; successes "
                  f"count below {budget:g}% changes; similarity summed over them and divided by all; change rate "
                  "pooled over them):", "",
                  f"| Model | Attack | Attacked | Success (%) {ci} | Success, similarity > {thr:g} (%) {ci} | "
                  "Similarity | Change rate (%) |", "|---|---|---:|---:|---:|---:|---:|"]
        for g in papers:
            p = g["overall"]["paper"]
            lines.append(f"| {g['model']} | {g['kind']} | {g['overall']['attacked']} | "
                         f"{format_rate(p, 'success_rate')} | {format_rate(p, 'success_rate_similar')} | "
                         f"{_num(p['similarity'])} | {_pct(p['change_rate'])} |")
    return "\n".join(lines) + "\n"


def fit_title(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_inches`` at ``fontsize`` points (a generous average glyph
    width of 0.6 em), so no title runs off the figure."""
    import textwrap

    return textwrap.fill(text, width=max(20, int(width_inches * 72 / (0.6 * fontsize))), break_on_hyphens=False)


def _band(rows: Sequence[dict[str, Any]], rate: str) -> tuple[list[float], list[float]]:
    """Lower and upper interval bounds (%) of ``rate`` for each row; the rate itself where none is stored."""
    lows, highs = [], []
    for r in rows:
        ci = rate_interval(r, rate)
        value = 100 * (r.get(rate) or 0.0)
        lows.append(100 * ci[0] if ci else value)
        highs.append(100 * ci[1] if ci else value)
    return lows, highs


def bin_center(name: str) -> float:
    """Geometric centre of a bin ``low-high`` (for a log x axis)."""
    low, _, high = str(name).partition("-")
    lo, hi = float(low), float(high or low)
    return math.sqrt(max(lo, 1.0) * max(hi, 1.0))


def plot_success_by_frequency(summary: dict[str, Any], path: str | Path, kind: str = "positive",
                              strict: bool = True, title: str | None = None) -> Path:
    """Figure 2 style: success rate against label frequency (log x), one line per model, with 95% Wilson
    intervals as error bars (the models' points moved slightly apart so the bars stay readable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "success_rate_strict" if strict else "success_rate_change_budget"
    groups = [g for g in summary["groups"] if g["kind"] == kind]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for i, g in enumerate(groups):
        dodge = 1.06 ** (i - (len(groups) - 1) / 2)  # a few percent apart on the log axis
        bins = [b for b in g["bins"] if b["attacked"]]
        xs = [bin_center(b["bin"]) * dodge for b in bins]
        ys = [100 * (b[key] or 0.0) for b in bins]
        lows, highs = _band(bins, key)
        ax.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows, strict=True)],
                                  [hi - y for y, hi in zip(ys, highs, strict=True)]],
                    marker="o", capsize=3, label=g["model"])
    ax.set_xscale("log")
    ax.set_xlabel("label frequency in training (bin centre)")
    ax.set_ylabel(f"success rate (%), {100 * CONFIDENCE:g}% Wilson interval")
    ax.set_ylim(0, 102)
    measure = summary.get("similarity_measure") or "similarity"
    text = title or f"{kind}-targeted attacks" + (f" (sim. > {summary['similarity_threshold']:g}, "
                                                  f"{measure})" if strict else "")
    ax.set_title(fit_title(text, fig.get_figwidth() * 0.9, 11), fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend(fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_success_over_training(records: Sequence[dict[str, Any]], path: str | Path, kind: str = "positive",
                               similarity_threshold: float = 0.8, change_rate_cutoff: float = TABLE_CHANGE_RATE,
                               title: str | None = None) -> Path:
    """Success rate against label frequency, one line per evaluation during training (later = darker), for
    the plain rate and Figure 2's (similarity and change-rate thresholds), each with its 95% Wilson interval as
    a band; the robustness callback's picture.

    ``records``: per-bin rows with ``global_step``, ``kind``, ``bin``, ``attacked``, ``success_rate``,
    ``success_rate_strict`` and their ``_lo``/``_hi`` (rows whose ``bin`` is ``all`` are the overall figures and
    are left out; a row without bounds gets no band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["kind"] == kind and r["bin"] != "all" and r["attacked"]]
    steps = sorted({r["global_step"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True, layout="constrained")
    cmap = plt.get_cmap("viridis")
    panels = (("success_rate", "success"),
              ("success_rate_strict", f"success with similarity > {similarity_threshold:g} and change rate "
                                      f"< {100 * change_rate_cutoff:g}%"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, step in enumerate(steps):
            mine = sorted((r for r in rows if r["global_step"] == step), key=lambda r: bin_center(r["bin"]))
            color = cmap(0.85 * (1 - i / max(1, len(steps) - 1)))
            xs = [bin_center(r["bin"]) for r in mine]
            ax.plot(xs, [100 * (r[key] or 0.0) for r in mine], marker="o", color=color, label=f"step {step}")
            lows, highs = _band(mine, key)
            ax.fill_between(xs, lows, highs, color=color, alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("label frequency in training (bin centre)")
        ax.set_title(fit_title(label, fig.get_figwidth() * 0.4, 9), fontsize=9)
        ax.set_ylim(0, 102)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"success rate (%), band: {100 * CONFIDENCE:g}% Wilson interval")
    if steps:
        axes[1].legend(fontsize=8)
    text = title or f"{kind}-targeted attacks on validation pairs during training"
    fig.suptitle(fit_title(text, fig.get_figwidth() * 0.9, 12), fontsize=12)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
