"""Label clustering and pair selection at extreme-classification scale (synthetic, seeded).

    python bench/bench_selection.py [--labels 30938] [--docs 6616]

Balanced hierarchical 2-means over sparse label representations (L x 50,000, ~300 nonzeros per label,
as summed TF-IDF rows are) and cluster-restricted negative pairs for 1,000 targets over the test documents.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.sparse as sp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labels", type=int, default=30938)
    p.add_argument("--docs", type=int, default=6616)
    p.add_argument("--vocab", type=int, default=50000)
    a = p.parse_args()
    from xmtc.attack.selection import balanced_2means, negative_pairs

    rng = np.random.default_rng(0)
    nnz = 300
    rows = np.repeat(np.arange(a.labels), nnz)
    topics = rng.integers(0, 500, a.labels)  # words cluster by topic, so there is structure to find
    cols = (topics[rows] * 97 + rng.integers(0, 2000, len(rows))) % a.vocab
    reps = sp.csr_matrix((rng.random(len(rows)), (rows, cols)), shape=(a.labels, a.vocab))
    reps = sp.diags(1 / np.sqrt(reps.multiply(reps).sum(1).A1)) @ reps
    start = time.perf_counter()
    clusters = balanced_2means(reps, min_size=3, seed=0)
    t_cluster = time.perf_counter() - start
    sizes = np.bincount(clusters)
    freq = rng.zipf(1.6, a.labels).clip(1, 5000)
    labels = [rng.choice(a.labels, size=min(rng.integers(1, 30), a.labels), replace=False, p=freq / freq.sum())
              for _ in range(a.docs)]
    topk = rng.integers(0, a.labels, (a.docs, 5))
    targets = rng.choice(a.labels, 1000, replace=False)
    start = time.perf_counter()
    pairs = negative_pairs(topk, labels, a.labels, targets, clusters=clusters)
    t_pairs = time.perf_counter() - start
    print("| step | size | seconds |\n|---|---|---:|")
    print(f"| balanced 2-means | {a.labels:,} labels x {a.vocab:,} features, {nnz} nnz/label -> {len(sizes):,} "
          f"clusters of {sizes.min()}-{sizes.max()} labels | {t_cluster:.1f} |")
    print(f"| cluster-restricted negative pairs | {a.docs:,} docs x 1,000 targets -> {len(pairs):,} pairs | "
          f"{t_pairs:.1f} |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
