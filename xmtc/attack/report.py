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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


#: Table 3's change-rate cut-off: a success counts only below it (fixed, as in the paper's results_all.py).
TABLE_CHANGE_RATE = 0.1


def paper_statistics(rows: Sequence[dict[str, Any]], sim_threshold: float = 0.8,
                     change_rate_cutoff: float = TABLE_CHANGE_RATE) -> dict[str, float | None]:
    """Table 3 / 5 figures as the paper's ``utils/results_all.py`` computed them (module docstring).

    ``changes`` and ``num_words`` of each row give the change rate, as that script's ``change / num_word``."""
    n = len(rows)
    hits = [r for r in rows if r["success"] and _num_changes(r) / max(r["num_words"], 1) < change_rate_cutoff]
    similar = [r for r in hits if (r.get("similarity") or 0.0) > sim_threshold]
    words = sum(r["num_words"] for r in hits)
    return {
        "success_rate": len(hits) / n if n else None,
        "success_rate_similar": len(similar) / n if n else None,
        "similarity": sum(r.get("similarity") or 0.0 for r in hits) / n if n else None,
        "change_rate": sum(_num_changes(r) for r in hits) / words if words else None,
    }


def _num_changes(row: dict[str, Any]) -> int:
    changes = row.get("changes")
    return len(changes) if changes is not None else round(row["change_rate"] * row["num_words"])


def _group_stats(rows: Sequence[dict[str, Any]], sim_threshold: float, change_rate_cutoff: float) -> dict[str, Any]:
    n = len(rows)
    successes = [r for r in rows if r["success"]]
    strict = [r for r in successes if r["change_rate"] < change_rate_cutoff
              and r.get("similarity") is not None and r["similarity"] > sim_threshold]
    budget = [r for r in successes if r["change_rate"] < change_rate_cutoff]
    paper = paper_statistics(rows, sim_threshold, change_rate_cutoff) if all("num_words" in r for r in rows) else None
    return {
        "attacked": n,
        "successes": len(successes),
        "success_rate": len(successes) / n if n else None,
        # Table 3: a success counts only below the change-rate budget
        "success_rate_change_budget": len(budget) / n if n else None,
        # Figure 2: ... and above the similarity threshold
        "success_rate_strict": len(strict) / n if n else None,
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
    (10%), not the attack's budget θ."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    skipped: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        key = (r.get("model", "model"), r["kind"])
        if r["status"] == "skipped":
            skipped[key] += 1
        else:
            groups[key].append(r)
    out: dict[str, Any] = {"similarity_measure": similarity_measure, "similarity_threshold": sim_threshold,
                           "change_rate_cutoff": change_rate_cutoff, "groups": []}
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


def markdown_tables(summary: dict[str, Any], dataset: str = "") -> str:
    """Table 3 (positive) / Table 5 (negative) layout, then the per-bin rows."""
    measure = summary.get("similarity_measure") or "unknown measure"
    budget = 100 * summary["change_rate_cutoff"]
    lines = [f"Success rate counts a success only with change rate < {budget:g}%. Similarity: {measure}.", "",
             "| Model | Dataset | Attack | Attacked | Success rate (%) | Similarity | Change rate (%) | Queries |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for g in summary["groups"]:
        o = g["overall"]
        lines.append(f"| {g['model']} | {dataset} | {g['kind']} | {o['attacked']} | "
                     f"{_pct(o['success_rate_change_budget'])} | {_num(o['mean_similarity'])} | "
                     f"{_pct(o['mean_change_rate'])} | {_num(o['mean_queries'])} |")
    thr = summary["similarity_threshold"]
    lines += ["", f"Per label-frequency bin (Figure 2: success with similarity > {thr:g} and change rate "
              f"< {budget:g}%):", "",
              "| Model | Attack | Bin (train freq.) | Attacked | Success (%) | Figure 2 success (%) | Similarity |",
              "|---|---|---|---:|---:|---:|---:|"]
    for g in summary["groups"]:
        for b in g["bins"]:
            lines.append(f"| {g['model']} | {g['kind']} | {b['bin']} | {b['attacked']} | "
                         f"{_pct(b['success_rate_change_budget'])} | {_pct(b['success_rate_strict'])} | "
                         f"{_num(b['mean_similarity'])} |")
    papers = [g for g in summary["groups"] if g["overall"].get("paper")]
    if papers:
        lines += ["", f"As the paper's `results_all.py` computed Table 3 / 5 (over all attacked examples; successes "
                  f"count below {budget:g}% changes; similarity summed over them and divided by all; change rate "
                  "pooled over them):", "",
                  f"| Model | Attack | Attacked | Success (%) | Success, similarity > {thr:g} (%) | Similarity | "
                  "Change rate (%) |", "|---|---|---:|---:|---:|---:|---:|"]
        for g in papers:
            p = g["overall"]["paper"]
            lines.append(f"| {g['model']} | {g['kind']} | {g['overall']['attacked']} | {_pct(p['success_rate'])} | "
                         f"{_pct(p['success_rate_similar'])} | {_num(p['similarity'])} | {_pct(p['change_rate'])} |")
    return "\n".join(lines) + "\n"


def bin_center(name: str) -> float:
    """Geometric centre of a bin ``low-high`` (for a log x axis)."""
    low, _, high = str(name).partition("-")
    lo, hi = float(low), float(high or low)
    return math.sqrt(max(lo, 1.0) * max(hi, 1.0))


def plot_success_by_frequency(summary: dict[str, Any], path: str | Path, kind: str = "positive",
                              strict: bool = True, title: str | None = None) -> Path:
    """Figure 2 style: success rate against label frequency (log x), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "success_rate_strict" if strict else "success_rate_change_budget"
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in summary["groups"]:
        if g["kind"] != kind:
            continue
        xs = [bin_center(b["bin"]) for b in g["bins"]]
        ys = [100 * (b[key] or 0.0) for b in g["bins"]]
        ax.plot(xs, ys, marker="o", label=g["model"])
    ax.set_xscale("log")
    ax.set_xlabel("label frequency in training (bin centre)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    measure = summary.get("similarity_measure") or "similarity"
    ax.set_title(title or f"{kind}-targeted attacks" + (f" (sim. > {summary['similarity_threshold']:g}, "
                                                        f"{measure})" if strict else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_success_over_training(records: Sequence[dict[str, Any]], path: str | Path, kind: str = "positive",
                               similarity_threshold: float = 0.8, change_rate_cutoff: float = TABLE_CHANGE_RATE,
                               title: str | None = None) -> Path:
    """Success rate against label frequency, one line per evaluation during training (later = darker), for
    the plain rate and Figure 2's (similarity and change-rate thresholds); the robustness callback's picture.

    ``records``: per-bin rows with ``global_step``, ``kind``, ``bin``, ``success_rate``, ``success_rate_strict``
    (rows whose ``bin`` is ``all`` are the overall figures and are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["kind"] == kind and r["bin"] != "all" and r["attacked"]]
    steps = sorted({r["global_step"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    cmap = plt.get_cmap("viridis")
    panels = (("success_rate", "success"),
              ("success_rate_strict", f"success with similarity > {similarity_threshold:g} and change rate "
                                      f"< {100 * change_rate_cutoff:g}%"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, step in enumerate(steps):
            mine = sorted((r for r in rows if r["global_step"] == step), key=lambda r: bin_center(r["bin"]))
            color = cmap(0.85 * (1 - i / max(1, len(steps) - 1)))
            ax.plot([bin_center(r["bin"]) for r in mine], [100 * (r[key] or 0.0) for r in mine], marker="o",
                    color=color, label=f"step {step}")
        ax.set_xscale("log")
        ax.set_xlabel("label frequency in training (bin centre)")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("success rate (%)")
    if steps:
        axes[1].legend(fontsize=8)
    fig.suptitle(title or f"{kind}-targeted attacks on validation pairs during training")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
