"""Benchmark: xmtc.metrics.XMCMetrics (batched torch) vs a straightforward full-matrix numpy evaluation.

Usage: .venv/bin/python bench/bench_metrics.py [--quick] [--ties] [--baseline GIT_REV] [--batch-size 1000]
       [--torch-threads 1]

What is measured, per implementation, each in its own freshly spawned process:
  * inputs (identical, seeded): dense float32 scores (N, L) and the true labels as a scipy CSR bool matrix
    (long-tailed label distribution, ~5 labels per document), inverse propensities (Jain et al., 2016)
    from the label frequencies; these are built first and are NOT part of the measurement;
  * seconds: wall time of computing P@{1,3,5}, nDCG@{1,3,5}, PSP@{1,3,5}, PSnDCG@{1,3,5} from those
    inputs (best of ``repeats`` runs);
  * peak memory: peak RSS (VmHWM, reset through /proc/self/clear_refs after the inputs exist) minus the RSS
    right after the inputs were built, i.e. the extra memory the evaluation itself needs.
ours:  XMCMetrics fed in row batches, as a validation loop does: a view of the score rows and the batch's
       targets densified from the CSR (``Y[i:j].toarray()``, bool); the densification is timed too.
numpy: full matrices in one go, the way pyxclib-style scripts do it: ``np.argpartition`` over every full row
       of the dense score matrix, then sorting the k survivors; hits looked up in the CSR (``Y[rows, cols]``);
       the ideal PSP denominators from each document's true-label weights taken from the CSR (a per-document
       loop over ~5 labels); nDCG and PSnDCG divide each document's DCG by IDCG(min(|y|, k)) as pyxclib does.
       The true labels are not densified: a dense (N, L) copy would only add memory.
Both must agree on every metric to 1e-4 or the script fails (not with --ties: numpy's argpartition breaks
ties arbitrarily, xmtc by label index; tests/test_metrics.py checks xmtc's rule against napkinxc).
--baseline REV: also times xmtc/metrics.py as committed at git revision REV ("ours@REV"), in the same run,
       so a change to the metrics can be timed side by side with the code it replaces; its values are not
       compared (a baseline may compute a metric differently).
--ties: scores rounded to bfloat16 precision (8 significant bits), as a bf16 model outputs them: most rows
       then have equal scores across place k, which is where xmtc's tie rule does extra work.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

KS = (1, 3, 5)
CASES = [(6_000, 4_271), (20_000, 30_938)]  # EUR-Lex-like and Wiki10-31K-like test sets
QUICK_CASES = [(2_000, 4_271)]


# ------------------------------------------------------------------------------------------------ inputs
def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest even) to the 8 significant bits of bfloat16, kept as float32."""
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def make_inputs(
    num_docs: int, num_labels: int, seed: int = 0, ties: bool = False
) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Seeded scores (N, L) float32, CSR bool targets with Zipf-like label popularity, inv. propensities."""
    from xmtc.data.label_stats import inverse_propensity

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_labels + 1)  # Zipf(1): a few head labels, a long tail
    popularity = rng.permutation(popularity / popularity.sum())
    per_doc = 1 + rng.poisson(4.0, num_docs)  # ~5 labels per document (fewer after de-duplication)
    rows = np.repeat(np.arange(num_docs), per_doc)
    cols = rng.choice(num_labels, size=rows.size, p=popularity)
    targets = sp.csr_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(num_docs, num_labels))
    targets.sum_duplicates()
    targets.data[:] = 1
    targets = targets.astype(bool)
    freqs = np.asarray(targets.sum(axis=0)).ravel()
    inv_prop = inverse_propensity(freqs, num_docs).astype(np.float32)
    # Uniform noise, true labels pushed up by a random margin: non-trivial P@k; ties are practically absent.
    scores = rng.random((num_docs, num_labels), dtype=np.float32)
    r, c = targets.nonzero()
    scores[r, c] += 0.5 * rng.random(r.size, dtype=np.float32)
    if ties:
        scores = round_to_bfloat16(scores)
    return scores, targets, inv_prop


# ------------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak RSS above the RSS at entry: kernel high-water mark if resettable, else 1 ms polling."""

    def __enter__(self) -> PeakRSS:
        self.baseline_kib = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._poll = None
        except OSError:
            self._peak, self._stop = self.baseline_kib, threading.Event()
            self._poll = threading.Thread(target=self._run, daemon=True)
            self._poll.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _status_kib("VmRSS"))

    def __exit__(self, *exc) -> None:
        if self._poll is None:
            self.peak_kib = _status_kib("VmHWM")
        else:
            self._stop.set()
            self._poll.join()
            self.peak_kib = max(self._peak, _status_kib("VmRSS"))
        self.extra_mib = (self.peak_kib - self.baseline_kib) / 1024
        self.method = "VmHWM" if self._poll is None else "polled VmRSS"


# ------------------------------------------------------------------------------------------------ workers
def load_metrics_module(baseline: str | None) -> types.ModuleType:
    """xmtc.metrics, or with ``baseline`` its source at that git revision loaded as a separate module."""
    if baseline is None:
        import xmtc.metrics

        return xmtc.metrics
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{baseline}:xmtc/metrics.py"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"xmtc_metrics_at_{baseline}")
    module.__file__ = f"<git {baseline}:xmtc/metrics.py>"
    sys.modules[module.__name__] = module  # dataclass / NamedTuple machinery looks modules up by name
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def eval_ours(
    scores: np.ndarray, targets: sp.csr_matrix, inv_prop: np.ndarray, batch_size: int, module: types.ModuleType
) -> dict:
    import torch

    metric = module.XMCMetrics(ks=KS, inv_propensity=torch.from_numpy(inv_prop))
    for start in range(0, scores.shape[0], batch_size):
        stop = start + batch_size
        metric.update(torch.from_numpy(scores[start:stop]), torch.from_numpy(targets[start:stop].toarray()))
    return {name: float(v) for name, v in metric.compute().items()}


def eval_numpy(
    scores: np.ndarray, targets: sp.csr_matrix, inv_prop: np.ndarray, batch_size: int, module: None
) -> dict:
    del batch_size, module  # full matrices
    num_docs, num_labels = scores.shape
    k = max(KS)
    top = np.argpartition(scores, num_labels - k, axis=1)[:, num_labels - k :]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)  # (N, k), best first
    hits = np.asarray(targets[np.repeat(np.arange(num_docs), k), top.ravel()]).reshape(num_docs, k)
    hits = hits.astype(np.float64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    num_true = np.diff(targets.indptr)
    ideal = np.zeros((num_docs, k))
    for i in range(num_docs):
        w = np.sort(inv_prop[targets.indices[targets.indptr[i] : targets.indptr[i + 1]]])[::-1][:k]
        ideal[i, : w.size] = w
    gain = hits * inv_prop[top]
    cum_disc = np.concatenate([[0.0], np.cumsum(disc)])

    def per_doc_ndcg(flags: np.ndarray, kk: int) -> np.ndarray:
        """(N,) DCG@kk of 0/1 or weighted flags over IDCG(min(|y|, kk)); 0 for documents without labels."""
        idcg = cum_disc[np.minimum(num_true, kk)]
        dcg = (flags[:, :kk] * disc[:kk]).sum(axis=1)
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)

    out = {}
    for kk in KS:
        out[f"P@{kk}"] = hits[:, :kk].sum() / (kk * num_docs)
    for kk in KS:
        out[f"nDCG@{kk}"] = per_doc_ndcg(hits, kk).mean()
    for kk in KS:
        out[f"PSP@{kk}"] = gain[:, :kk].sum() / ideal[:, :kk].sum()
    for kk in KS:
        out[f"PSnDCG@{kk}"] = per_doc_ndcg(gain, kk).mean() / per_doc_ndcg(ideal, kk).mean()
    return out


IMPLEMENTATIONS: dict[str, Callable[..., dict]] = {"ours": eval_ours, "numpy": eval_numpy}


def worker(
    impl: str,
    num_docs: int,
    num_labels: int,
    batch_size: int,
    repeats: int,
    threads: int,
    ties: bool = False,
    baseline: str | None = None,
) -> dict:
    """Runs in a fresh spawned process: build inputs, then time and measure one implementation."""
    module = None
    if impl == "ours":
        import torch

        torch.set_num_threads(threads)
        module = load_metrics_module(baseline)  # import cost is not part of the measurement
    scores, targets, inv_prop = make_inputs(num_docs, num_labels, ties=ties)
    fn = IMPLEMENTATIONS[impl]
    times = []
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            values = fn(scores, targets, inv_prop, batch_size, module)
            times.append(time.perf_counter() - t0)
    return {
        "seconds": min(times),
        "extra_mib": mem.extra_mib,
        "baseline_mib": mem.baseline_kib / 1024,
        "method": mem.method,
        "values": values,
        "labels_per_doc": targets.nnz / num_docs,
    }


def run_isolated(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(worker, *args).result()


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case only (smoke test)")
    parser.add_argument("--ties", action="store_true", help="scores at bfloat16 precision: many tied scores")
    parser.add_argument("--baseline", metavar="GIT_REV", help="also time xmtc/metrics.py at this git revision")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--torch-threads", type=int, default=1, help="1: same as numpy's single thread")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (best is reported)")
    args = parser.parse_args()

    cpu = platform.processor() or platform.machine()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"# python {platform.python_version()}, numpy {np.__version__}, torch threads {args.torch_threads}")
    print(f"# ours: XMCMetrics, batches of {args.batch_size} rows; numpy: full matrices (see module doc)")
    print("# time: best of the runs; mem: peak RSS above the RSS after inputs were built, own process each")
    if args.ties:
        print("# --ties: scores rounded to bfloat16 precision; values not compared with numpy (see module doc)")
    rows = []
    for num_docs, num_labels in QUICK_CASES if args.quick else CASES:
        repeats = args.repeats
        common = (num_docs, num_labels, args.batch_size, repeats, args.torch_threads, args.ties)
        res = {impl: run_isolated(impl, *common) for impl in IMPLEMENTATIONS}
        if args.baseline:
            res["baseline"] = run_isolated("ours", *common, args.baseline)
        ours, ref = res["ours"]["values"], res["numpy"]["values"]
        assert ours.keys() == ref.keys(), (ours.keys(), ref.keys())
        if not args.ties:
            for name in ours:
                assert math.isclose(ours[name], ref[name], abs_tol=1e-4), (name, ours[name], ref[name])
        rows.append((num_docs, num_labels, res))
        agreement = "values" if args.ties else "agree to 1e-4 on"
        print(
            f"# {num_docs}x{num_labels}: {res['ours']['labels_per_doc']:.2f} labels/doc, {agreement} "
            + ", ".join(f"{n}={ours[n]:.4f}" for n in ("P@1", "P@5", "nDCG@5", "PSP@5", "PSnDCG@5"))
            + f"; memory via {res['ours']['method']}, runs per impl: {repeats}"
        )

    print()
    print(
        "| scores (N x L) | ours s | numpy s | time numpy/ours "
        "| ours peak MiB | numpy peak MiB | mem numpy/ours |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for num_docs, num_labels, res in rows:
        o, n = res["ours"], res["numpy"]
        print(
            f"| {num_docs:,} x {num_labels:,} | {o['seconds']:.2f} | {n['seconds']:.2f} "
            f"| {n['seconds'] / o['seconds']:.1f}x | {o['extra_mib']:.0f} | {n['extra_mib']:.0f} "
            f"| {n['extra_mib'] / max(o['extra_mib'], 1e-9):.1f}x |"
        )
    if args.baseline:
        print()
        print(f"| scores (N x L) | ours@{args.baseline} s | ours s | time ours/baseline | baseline MiB | ours MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for num_docs, num_labels, res in rows:
            o, b = res["ours"], res["baseline"]
            print(
                f"| {num_docs:,} x {num_labels:,} | {b['seconds']:.2f} | {o['seconds']:.2f} "
                f"| {o['seconds'] / b['seconds']:.2f}x | {b['extra_mib']:.0f} | {o['extra_mib']:.0f} |"
            )


if __name__ == "__main__":
    main()
