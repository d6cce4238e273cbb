"""Print the robustness callback's summary.csv as a table: success rate per bin, one column per evaluation.

    python scripts/show_robustness.py logs/demo_axml/<run>/robustness
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(directory: str) -> None:
    path = Path(directory) / "summary.csv"
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{path}: no evaluation yet")
        return
    steps = sorted({int(r["global_step"]) for r in rows})
    header = " | ".join(f"step {s}: success (Fig. 2) %, n" for s in steps)
    print(f"| attack | bin (train freq.) | {header} |")
    print("|---|---|" + "---:|" * len(steps))
    def order(key: tuple[str, str]) -> tuple[str, int]:
        return key[0], -1 if key[1] == "all" else int(key[1].split("-")[0])

    keys = sorted(dict.fromkeys((r["kind"], r["bin"]) for r in rows), key=order)
    for kind, bin_ in keys:
        cells = []
        for s in steps:
            r = next((r for r in rows if (r["kind"], r["bin"], int(r["global_step"])) == (kind, bin_, s)), None)
            cells.append("-" if r is None else
                         f"{100 * float(r['success_rate']):.0f} ({100 * float(r['success_rate_strict']):.0f}), "
                         f"{r['attacked']}")
        print(f"| {kind} | {bin_} | " + " | ".join(cells) + " |")
    print(f"\ncurves: {', '.join(str(p) for p in sorted(path.parent.glob('*.png')))}")


if __name__ == "__main__":
    main(sys.argv[1])
