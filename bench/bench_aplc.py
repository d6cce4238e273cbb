"""APLC head against a full sigmoid output layer: training step time and peak memory, side by side.

    nice python bench/bench_aplc.py [--labels 4271 30938 670091] [--batch 16] [--hidden 768] [--steps 10]

Both heads train on the same encoder output (random hidden states of size ``--hidden`` that require
grad, as an encoder's would) with the same normal BCE loss head: one step = forward, loss, backward,
plain SGD update (no optimizer state, so memory is parameters, gradients and activations). Each
(labels, head) pair runs in its own process, so its peak RSS is its own; the table reports the peak
above the process's RSS before the layer is built.

Label sets are long-tailed: each document draws ``k`` distinct labels from a Zipf law over label ranks,
p(r) ~ r^-alpha, alpha = 1.2 (the exponent that matches EURLEX57K's training labels: the most frequent
half of the labels holds 97% of assignments), with ``k`` the dataset's mean labels per document
(EURLEX57K 5.07, Wiki10-31K 18.64, Amazon-670K 5.45). Cutoffs as in APLC-XLNet: halves below 100k
labels, quarters at Amazon-670K scale.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

#: labels -> (mean labels per document, APLC cutoffs as fractions)
SETTINGS = {4271: (5.07, [0.5]), 30938: (18.64, [0.5]), 670091: (5.45, [0.25, 0.5, 0.75])}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _label_batches(num_labels: int, mean_k: float, batch: int, n: int, alpha: float, seed: int = 0):
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    p = np.arange(1, num_labels + 1, dtype=np.float64) ** -alpha
    p /= p.sum()
    out = []
    for _ in range(n):
        y = torch.zeros(batch, num_labels)
        for row in range(batch):
            k = max(1, int(rng.poisson(mean_k)))
            y[row, torch.from_numpy(rng.choice(num_labels, size=k, replace=False, p=p))] = 1.0
        out.append(y)
    return out


def _run(num_labels: int, head_kind: str, args: argparse.Namespace, out: mp.Queue) -> None:
    import torch

    from xmtc.losses import NormalLoss
    from xmtc.models.aplc_head import APLCHead

    torch.manual_seed(0)
    mean_k, cutoffs = SETTINGS[num_labels]
    targets = _label_batches(num_labels, mean_k, args.batch, 4, args.alpha)
    hidden = [torch.randn(args.batch, args.hidden) for _ in targets]
    loss_head = NormalLoss()
    loss_head.resize(num_labels)
    base = _rss_mb()
    if head_kind == "full":
        layer = torch.nn.Linear(args.hidden, num_labels)

        def step_loss(h, y):
            return loss_head(layer(h), y)
    else:
        layer = APLCHead(args.hidden, num_labels, cutoffs=cutoffs)

        def step_loss(h, y):
            return layer.loss(h, y, loss_head)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    times = []
    for step in range(args.steps + 2):
        h = hidden[step % len(hidden)].clone().requires_grad_(True)
        y = targets[step % len(targets)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(h, y)
        loss.backward()
        opt.step()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"labels": num_labels, "head": head_kind, "step_ms": 1000 * sorted(times)[len(times) // 2],
              "peak_mb": peak - base, "params_M": sum(p.numel() for p in layer.parameters()) / 1e6}
    if head_kind == "aplc":
        active = torch.cat([layer.active_clusters(y).float() for y in targets]).mean(0)
        result["rows_active"] = [round(float(a), 3) for a in active]
    out.put(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", type=int, nargs="+", default=sorted(SETTINGS), choices=sorted(SETTINGS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported) after 2 warm-up steps")
    p.add_argument("--alpha", type=float, default=1.2, help="Zipf exponent of the label frequencies")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for num_labels in args.labels:
        for kind in ("full", "aplc"):
            q = ctx.Queue()
            proc = ctx.Process(target=_run, args=(num_labels, kind, args, q))
            proc.start()
            rows.append(q.get())
            proc.join()
    print(f"batch {args.batch}, hidden {args.hidden}, Zipf alpha {args.alpha}, median of {args.steps} SGD steps\n")
    print("| labels | head | params (M) | step (ms) | peak memory (MB) | APLC speed-up | APLC memory share |"
          " rows active per tail cluster |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    by = {(r["labels"], r["head"]): r for r in rows}
    for num_labels in args.labels:
        full, aplc = by[(num_labels, "full")], by[(num_labels, "aplc")]
        for r in (full, aplc):
            ratio = (f"{full['step_ms'] / aplc['step_ms']:.1f}x", f"{aplc['peak_mb'] / full['peak_mb']:.2f}") \
                if r is aplc else ("", "")
            active = ", ".join(f"{a:.0%}" for a in r.get("rows_active", []))
            print(f"| {num_labels:,} | {r['head']} | {r['params_M']:.1f} | {r['step_ms']:.1f} | {r['peak_mb']:.0f} |"
                  f" {ratio[0]} | {ratio[1]} | {active} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
