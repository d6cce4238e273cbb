"""Print the robustness callback's summary.csv as a table: success rate per bin with its 95% Wilson interval,
one column per evaluation.

    python scripts/show_robustness.py logs/demo_axml/<run>/robustness
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from xmtc.attack.report import RATE_COUNTS, with_intervals

RATES = ("success_rate", "success_rate_strict")


def _stats(row: dict[str, str]) -> dict[str, Any]:
    """A summary.csv row's rates, counts and bounds as numbers (empty cells: none); a file written before the
    intervals gets them from its rates and n."""
    stats: dict[str, Any] = {"attacked": int(row["attacked"])}
    for key in (*RATES, *(f"{r}{end}" for r in RATES for end in ("_lo", "_hi")), *RATE_COUNTS.values()):
        if row.get(key) not in (None, ""):
            stats[key] = float(row[key]) if not key.startswith("successes") else int(row[key])
    return with_intervals(stats, RATES)


def cell(row: dict[str, str] | None) -> str:
    """``success [lo, hi] / Figure 2 success [lo, hi], n`` in whole percent."""
    if row is None:
        return "-"
    s = _stats(row)

    def rate(key: str) -> str:
        if s.get(key) is None:
            return "-"
        lo, hi = s.get(f"{key}_lo"), s.get(f"{key}_hi")
        return f"{100 * s[key]:.0f}" + ("" if lo is None else f" [{100 * lo:.0f}, {100 * hi:.0f}]")

    return f"{rate('success_rate')} / {rate('success_rate_strict')}, {s['attacked']}"


def main(directory: str) -> None:
    path = Path(directory) / "summary.csv"
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{path}: no evaluation yet")
        return
    steps = sorted({int(r["global_step"]) for r in rows})
    header = " | ".join(f"step {s}: success / Fig. 2 (%) [95% CI], n" for s in steps)
    print(f"| attack | bin (train freq.) | {header} |")
    print("|---|---|" + "---:|" * len(steps))

    def order(key: tuple[str, str]) -> tuple[str, int]:
        return key[0], -1 if key[1] == "all" else int(key[1].split("-")[0])

    keys = sorted(dict.fromkeys((r["kind"], r["bin"]) for r in rows), key=order)
    for kind, bin_ in keys:
        cells = [cell(next((r for r in rows if (r["kind"], r["bin"], int(r["global_step"])) == (kind, bin_, s)),
                           None)) for s in steps]
        print(f"| {kind} | {bin_} | " + " | ".join(cells) + " |")
    print("\nIn brackets: 95% Wilson score interval (n = pairs attacked).")
    print(f"curves: {', '.join(str(p) for p in sorted(path.parent.glob('*.png')))}")


if __name__ == "__main__":
    main(sys.argv[1])
