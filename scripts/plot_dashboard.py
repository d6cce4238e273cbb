"""A dashboard-like PNG of a run with the robustness callback, from its CSV logs (what the W&B panels of
docs/dashboards.md show): P@k and loss, per-bin success rates over training, success against label frequency.

    python scripts/plot_dashboard.py logs/demo_axml/<run> docs/dashboard_demo.png [--kind positive]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xmtc.attack.report import bin_center  # noqa: E402


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the CSV logger's version directory (holds metrics.csv, robustness/)")
    ap.add_argument("output", type=Path)
    ap.add_argument("--kind", default="positive")
    ap.add_argument("--prefix", default="robustness")
    args = ap.parse_args()
    metrics = _rows(args.run_dir / "metrics.csv")
    summary = [r for r in _rows(args.run_dir / args.prefix / "summary.csv") if r["kind"] == args.kind]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
        key = f"{args.prefix}/{args.kind}/success_rate_strict/freq_{b}"
        pts = [(int(r["step"]), 100 * float(r[key])) for r in metrics if r.get(key)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"freq {b}")
    ax.set_xlabel("trainer/global_step")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{args.prefix}/{args.kind}/success_rate_strict/freq_*")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[2]
    steps = sorted({int(r["global_step"]) for r in summary})
    cmap = plt.get_cmap("viridis")
    for i, step in enumerate(steps):
        mine = sorted((r for r in summary if int(r["global_step"]) == step and r["bin"] != "all"
                       and int(r["attacked"])), key=lambda r: bin_center(r["bin"]))
        ax.plot([bin_center(r["bin"]) for r in mine], [100 * float(r["success_rate_strict"]) for r in mine],
                marker="o", color=cmap(0.85 * (1 - i / max(1, len(steps) - 1))), label=f"step {step}")
    ax.set_xscale("log")
    ax.set_xlabel("label frequency in training (bin centre)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{args.prefix}/{args.kind}/success_by_frequency_fig2")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
