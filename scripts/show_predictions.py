"""Print ``predict`` output beside the documents' true labels (used by ``make demo``).

    python scripts/show_predictions.py predictions.jsonl test_labels.txt label_names.tsv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(pred_path: str, labels_path: str, names_path: str) -> None:
    names = dict(line.split("\t", 1) for line in Path(names_path).read_text(encoding="utf-8").splitlines())
    truth = Path(labels_path).read_text(encoding="utf-8").splitlines()
    for line in Path(pred_path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        true = set(truth[row["index"]].split())
        print(f"document {row['index']}: true labels: " + "; ".join(names.get(t, t) for t in sorted(true)))
        for label, name, score in zip(row["labels"], row["names"], row["scores"], strict=True):
            print(f"   {'+' if label in true else ' '} {score:.3f}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
