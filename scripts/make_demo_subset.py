"""Build the bundled EURLEX57K demo subset (data/eurlex57k-demo) from a full copy of the dataset.

    python scripts/make_demo_subset.py ../shared/datasets/eurlex57k data/eurlex57k-demo

Seeded sample of train and test documents, each truncated to the first ``--words`` words; label
names are kept for the labels that occur. The result is committed, so ``make demo`` and the tests
run offline on a fresh clone.
"""

from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

ATTRIBUTION = """# EURLEX57K demo subset

A seeded sample of EURLEX57K (Chalkidis, Fergadiotis, Malakasiotis, Androutsopoulos: "Large-Scale
Multi-Label Text Classification on EU Legislation", ACL 2019), built by
`python scripts/make_demo_subset.py <eurlex57k> data/eurlex57k-demo \\
  --train {n_train} --test {n_test} --words {words} --seed {seed}`.

Every document is truncated to its first {words} words. Labels are EuroVoc concept ids, names in
`label_names.tsv`. The data is distributed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/);
this subset is a derivative under the same licence and keeps this attribution.

| split | docs | distinct labels |
|---|---|---|
| train | {n_train} | {train_labels} |
| test | {n_test} | {test_labels} |
"""


def read_split(src: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    with gzip.open(src / f"{split}_raw_texts.txt.gz", "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    labels = (src / f"{split}_labels.txt").read_text(encoding="utf-8").splitlines()
    ids = (src / f"{split}_ids.txt").read_text(encoding="utf-8").splitlines()
    return texts, labels, ids


def write_split(dst: Path, split: str, rows: list[tuple[str, str, str]]) -> None:
    with gzip.GzipFile(dst / f"{split}_raw_texts.txt.gz", "wb", mtime=0) as f:
        f.write("".join(t + "\n" for t, _, _ in rows).encode("utf-8"))
    (dst / f"{split}_labels.txt").write_text("".join(y + "\n" for _, y, _ in rows), encoding="utf-8")
    (dst / f"{split}_ids.txt").write_text("".join(i + "\n" for _, _, i in rows), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--words", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    a.dst.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    counts = {}
    for split, n in (("train", a.train), ("test", a.test)):
        texts, labels, ids = read_split(a.src, split)
        idx = sorted(rng.sample(range(len(texts)), n))
        rows = [(" ".join(texts[i].split()[: a.words]), labels[i], ids[i]) for i in idx]
        write_split(a.dst, split, rows)
        split_labels = {lab for _, y, _ in rows for lab in y.split()}
        used |= split_labels
        counts[f"{split}_labels"] = len(split_labels)
    names = [ln for ln in (a.src / "label_names.tsv").read_text(encoding="utf-8").splitlines()
             if ln.split("\t", 1)[0] in used]
    (a.dst / "label_names.tsv").write_text("\n".join(names) + "\n", encoding="utf-8")
    (a.dst / "README.md").write_text(
        ATTRIBUTION.format(n_train=a.train, n_test=a.test, words=a.words, seed=a.seed, **counts),
        encoding="utf-8")


if __name__ == "__main__":
    main()
