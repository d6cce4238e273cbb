"""Summaries of attack results: success rates overall and per frequency bin, the paper's Table 3 /
Table 5 layout as markdown, and a Figure 2 style plot.

Works on the rows of ``results.jsonl`` (dicts), so a report can be rebuilt from a finished or
interrupted run without the models. Success rates count every attacked example: none is dropped
(the reference code dropped budget-exhausted ones from the denominator).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _group_stats(rows: Sequence[dict[str, Any]], sim_threshold: float, max_change_rate: float) -> dict[str, Any]:
    n = len(rows)
    successes = [r for r in rows if r["success"]]
    strict = [r for r in successes if r["change_rate"] < max_change_rate
              and r.get("similarity") is not None and r["similarity"] > sim_threshold]
    budget = [r for r in successes if r["change_rate"] < max_change_rate]
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
    }


def summarize(rows: Iterable[dict[str, Any]], sim_threshold: float = 0.8, max_change_rate: float = 0.1,
              similarity_measure: str | None = None) -> dict[str, Any]:
    """Per (model, kind): overall and per-bin statistics. Skipped rows (precondition not met) are
    reported as a count and excluded, since they were never attacked."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    skipped: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        key = (r.get("model", "model"), r["kind"])
        if r["status"] == "skipped":
            skipped[key] += 1
        else:
            groups[key].append(r)
    out: dict[str, Any] = {"similarity_measure": similarity_measure, "similarity_threshold": sim_threshold,
                           "max_change_rate": max_change_rate, "groups": []}
    for (model, kind), members in sorted(groups.items()):
        by_bin: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in members:
            by_bin[r["bin"]].append(r)
        bins = sorted(by_bin, key=lambda b: int(str(b).split("-")[0]))
        out["groups"].append({
            "model": model, "kind": kind, "skipped": skipped[(model, kind)],
            "overall": _group_stats(members, sim_threshold, max_change_rate),
            "bins": [{"bin": b, **_group_stats(by_bin[b], sim_threshold, max_change_rate)} for b in bins],
        })
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_tables(summary: dict[str, Any], dataset: str = "") -> str:
    """Table 3 (positive) / Table 5 (negative) layout, then the per-bin rows."""
    measure = summary.get("similarity_measure") or "unknown measure"
    budget = 100 * summary["max_change_rate"]
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
                               similarity_threshold: float = 0.8, max_change_rate: float = 0.1,
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
                                      f"< {100 * max_change_rate:g}%"))
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
