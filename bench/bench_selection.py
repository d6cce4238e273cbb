"""Label clustering and pair selection at extreme-classification scale (synthetic, seeded).

    python bench/bench_selection.py [--labels 30938] [--docs 6616] [--amazon-docs 306782] [--quick]

1. Balanced hierarchical 2-means over sparse label representations (L x 50,000, ~300 nonzeros per label, as
   summed TF-IDF rows are).
2. Negative-targeted pairs for two compared models, 200 per bin x 5 frequency bins: the sampler
   (``sample_negative_pairs``) against the former path of ``AttackRun.choose_pairs`` (200 random targets per
   bin, ``negative_pairs`` per model, the models' pairs intersected as tuple sets, one pair per target moved
   first, ``sample_per_bin``), at Wiki10-31K size (clusters off and on) and AmazonCat-13K size (13,330 labels x
   306,782 test documents). The former path is skipped where its tuple sets would not fit in ``--old-limit-gb``.

Each measurement runs in a forked child: seconds, and peak memory as the growth of the child's resident set
(VmHWM after resetting it, minus VmRSS at the start), so the inputs built beforehand are not counted.
``--quick`` replaces 2-means by random clusters of 4 labels (a run of seconds instead of a minute).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp

PER_BIN, BINS, MODELS, K = 200, 5, 2, 5


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(fn: Callable[[], Any], queue: Any) -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set to the current one
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    queue.put((seconds, (_status_kib("VmHWM") - base) / 1024, out))


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak resident-set growth in MiB, fn's result) of ``fn`` run in a forked child."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def synthetic(num_labels: int, docs: int, per_doc: int, seed: int = 0):
    """Zipf-distributed true labels (CSR), two models' random top-5, 5 bins of labels by frequency rank."""
    rng = np.random.default_rng(seed)
    freq = rng.zipf(1.6, num_labels).clip(1, 5000).astype(float)
    rows = np.repeat(np.arange(docs), per_doc)
    cols = rng.choice(num_labels, size=len(rows), p=freq / freq.sum())
    truth = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(docs, num_labels))
    tops = [rng.integers(0, num_labels, (docs, K)) for _ in range(MODELS)]
    rank = np.argsort(np.argsort(freq, kind="stable"), kind="stable")
    label_bin = np.minimum(rank * BINS // num_labels, BINS - 1)
    return truth, tops, label_bin


def new_path(truth, tops, label_bin, clusters):
    from xmtc.attack.selection import sample_negative_pairs

    s = sample_negative_pairs(tops, truth, truth.shape[1], label_bin, BINS, PER_BIN, seed=0, clusters=clusters)
    return len(s.pairs), len(np.unique(s.pairs[:, 1])), s.empty_bins


def old_path(truth, tops, label_bin, clusters):
    """The negative branch of ``AttackRun.choose_pairs`` before ``sample_negative_pairs`` (commit 2836030)."""
    from xmtc.attack.selection import negative_pairs, sample_per_bin

    labels = np.split(truth.indices, truth.indptr[1:-1])
    rng = np.random.default_rng(1)
    targets = np.concatenate([rng.permutation(np.flatnonzero(label_bin == b))[:PER_BIN] for b in range(BINS)])
    keys = [set(map(tuple, negative_pairs(t, labels, truth.shape[1], targets, clusters))) for t in tops]
    neg = np.array(sorted(set.intersection(*keys)), dtype=np.int64).reshape(-1, 2)
    del keys
    neg = neg[rng.permutation(len(neg))]
    _, first = np.unique(neg[:, 1], return_index=True)
    neg = np.concatenate([neg[first], np.delete(neg, first, axis=0)])
    pairs, _ = sample_per_bin(neg, label_bin, BINS, PER_BIN, 0)
    return len(pairs), len(np.unique(pairs[:, 1])), []


def _candidates_per_target(truth: sp.csr_matrix, clusters: np.ndarray | None) -> float:
    """Mean candidate documents of a target: all documents, or those with a label in its cluster."""
    if clusters is None:
        return float(truth.shape[0])
    member = sp.csr_matrix((np.ones(len(clusters), np.int32), (np.arange(len(clusters)), clusters)))
    per_cluster = np.diff((truth.astype(np.int32) @ member).tocsc().indptr)
    return float(per_cluster[clusters].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labels", type=int, default=30938)
    p.add_argument("--docs", type=int, default=6616)
    p.add_argument("--vocab", type=int, default=50000)
    p.add_argument("--amazon-labels", type=int, default=13330)
    p.add_argument("--amazon-docs", type=int, default=306782)
    p.add_argument("--old-limit-gb", type=float, default=6.0,
                   help="skip the former path where its tuple sets would need more (~200 bytes a pair and model)")
    p.add_argument("--quick", action="store_true", help="random clusters of 4 labels instead of 2-means")
    a = p.parse_args()
    from xmtc.attack.selection import balanced_2means

    rng = np.random.default_rng(0)
    print("| step | size | seconds |\n|---|---|---:|")
    if a.quick:
        clusters = rng.permutation(np.arange(a.labels) // 4)
    else:
        nnz = 300
        rows = np.repeat(np.arange(a.labels), nnz)
        topics = rng.integers(0, 500, a.labels)  # words cluster by topic, so there is structure to find
        cols = (topics[rows] * 97 + rng.integers(0, 2000, len(rows))) % a.vocab
        reps = sp.csr_matrix((rng.random(len(rows)), (rows, cols)), shape=(a.labels, a.vocab))
        reps = sp.diags(1 / np.sqrt(reps.multiply(reps).sum(1).A1)) @ reps
        start = time.perf_counter()
        clusters = balanced_2means(reps, min_size=3, seed=0)
        sizes = np.bincount(clusters)
        print(f"| balanced 2-means | {a.labels:,} labels x {a.vocab:,} features, {nnz} nnz/label -> "
              f"{len(sizes):,} clusters of {sizes.min()}-{sizes.max()} labels | {time.perf_counter() - start:.1f} |")
        del reps

    print(f"\nNegative pairs: {MODELS} models (top-{K}), {PER_BIN} per bin x {BINS} bins\n")
    print("| data | clusters | method | pairs chosen | distinct targets | seconds | peak MiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    wiki = synthetic(a.labels, a.docs, per_doc=19)
    amazon_clusters = rng.permutation(np.arange(a.amazon_labels) // 4)
    cases = [(f"{a.labels:,} labels x {a.docs:,} docs", wiki, None, "off"),
             (f"{a.labels:,} labels x {a.docs:,} docs", wiki, clusters, "on"),
             (f"{a.amazon_labels:,} labels x {a.amazon_docs:,} docs", None, None, "off"),
             (f"{a.amazon_labels:,} labels x {a.amazon_docs:,} docs", None, amazon_clusters, "on (random, 4 labels)")]
    amazon = None
    for name, data, cl, cl_name in cases:
        if data is None:
            amazon = amazon or synthetic(a.amazon_labels, a.amazon_docs, per_doc=5)
            data = amazon
        truth, tops, label_bin = data
        for method, fn in (("sample_negative_pairs", new_path), ("former: negative_pairs + tuple sets", old_path)):
            if fn is old_path:
                per_model = _candidates_per_target(truth, cl) * PER_BIN * BINS
                if per_model * MODELS * 200 / 2**30 > a.old_limit_gb:
                    print(f"| {name} | {cl_name} | {method} | not run: ~{per_model / 1e6:,.1f}M pairs per model, "
                          f"~{per_model * MODELS * 200 / 2**30:,.0f} GiB as tuple sets | | | |")
                    continue
            seconds, mib, (n, distinct, empty) = measure(partial(fn, truth, tops, label_bin, cl))
            note = f" (empty bins {empty})" if empty else ""
            print(f"| {name} | {cl_name} | {method} | {n:,}{note} | {distinct:,} | {seconds:.3f} | {mib:,.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
