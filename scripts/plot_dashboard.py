"""A dashboard-like PNG of a run with the robustness callback, from its CSV logs (what the W&B panels of
docs/dashboards.md show): P@k and loss, per-bin success rates over training, success against label frequency;
success rates with their 95% Wilson intervals as bands.

    python scripts/plot_dashboard.py logs/demo_axml/<run> docs/dashboard_demo.png [--kind positive]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xmtc.attack.report import bin_center, fit_title, with_intervals  # noqa: E402

RATE = "success_rate_strict"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _bounds(row: dict[str, str], rate: str = RATE, attacked: str = "attacked", lo: str = f"{RATE}_lo",
            hi: str = f"{RATE}_hi") -> tuple[float, float]:
    """A rate's 95% Wilson bounds (%) from a summary.csv or metrics.csv row (column names given), computed from
    the rate and n where the row predates them."""
    stats = with_intervals({"attacked": round(float(row[attacked])), RATE: float(row[rate]),
                            **{f"{RATE}{end}": float(row[key]) for end, key in (("_lo", lo), ("_hi", hi))
                               if row.get(key)}}, (RATE,))
    return 100 * stats[f"{RATE}_lo"], 100 * stats[f"{RATE}_hi"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the CSV logger's version directory (holds metrics.csv, robustness/)")
    ap.add_argument("output", type=Path)
    ap.add_argument("--kind", default="positive")
    ap.add_argument("--prefix", default="robustness")
    args = ap.parse_args()
    metrics = _rows(args.run_dir / "metrics.csv")
    summary = [r for r in _rows(args.run_dir / args.prefix / "summary.csv") if r["kind"] == args.kind]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    ax = axes[0]
    for key in ("val/P@1", "val/P@5", "val/nDCG@5"):
        pts = [(int(r["step"]), float(r[key])) for r in metrics if r.get(key)]
        ax.plot(*zip(*pts, strict=True), marker="o", label=key)
    ax.set_xlabel("trainer/global_step")
    ax.set_title("validation metrics")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    bins = sorted({r["bin"] for r in summary if r["bin"] != "all"}, key=bin_center)
    for b in bins:
        key, lo, hi, n = (f"{args.prefix}/{args.kind}/{stat}/freq_{b}"
                          for stat in (RATE, f"{RATE}_lo", f"{RATE}_hi", "attacked"))
        rows = [r for r in metrics if r.get(key) and r.get(n)]
        if rows:
            steps = [int(r["step"]) for r in rows]
            line, = ax.plot(steps, [100 * float(r[key]) for r in rows], marker="o", label=f"freq {b}")
            bounds = [_bounds(r, key, n, lo, hi) for r in rows]
            ax.fill_between(steps, [x[0] for x in bounds], [x[1] for x in bounds], color=line.get_color(),
                            alpha=0.12, linewidth=0)
    ax.set_xlabel("trainer/global_step")
    ax.set_ylabel("success rate (%), band: 95% Wilson interval")
    ax.set_ylim(0, 102)
    ax.set_title(fit_title(f"{args.prefix}/{args.kind}/{RATE}/freq_*", 4.5, 10), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[2]
    steps = sorted({int(r["global_step"]) for r in summary})
    cmap = plt.get_cmap("viridis")
    for i, step in enumerate(steps):
        mine = sorted((r for r in summary if int(r["global_step"]) == step and r["bin"] != "all"
                       and int(r["attacked"])), key=lambda r: bin_center(r["bin"]))
        color = cmap(0.85 * (1 - i / max(1, len(steps) - 1)))
        xs = [bin_center(r["bin"]) for r in mine]
        ax.plot(xs, [100 * float(r[RATE]) for r in mine], marker="o", color=color, label=f"step {step}")
        bounds = [_bounds(r) for r in mine]
        ax.fill_between(xs, [b[0] for b in bounds], [b[1] for b in bounds], color=color, alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("label frequency in training (bin centre)")
    ax.set_ylim(0, 102)
    ax.set_title(fit_title(f"{args.prefix}/{args.kind}/success_by_frequency_fig2 (band: 95% Wilson interval)", 4.5,
                           10), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
