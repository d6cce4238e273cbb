"""AttentionXML training throughput (documents/s) and peak memory on EURLEX57K, on this machine.

    python bench/bench_attentionxml.py [--data data/eurlex57k] [--steps 30]

Each model size runs in its own process (so peak RSS is its own): the datamodule reads and
tokenizes the training split, then ``--steps`` optimizer steps are timed after 3 warm-up steps.
Falls back to the bundled demo subset when the full dataset is not in place (and says so).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

SIZES = {
    # the CPU run of docs/results.md
    "cpu-run (E100 H64 MLP128, 256 words)": dict(embedding_dim=100, hidden_size=64, linear_sizes=[128],
                                                  max_length=256, batch_size=32),
    # AttentionXML's own EUR-Lex sizes (configs/axml_eurlex_*.yaml)
    "paper (E300 H256 MLP256, 500 words)": dict(embedding_dim=300, hidden_size=256, linear_sizes=[256],
                                                max_length=500, batch_size=40),
}


def _run(name: str, data: str, steps: int, out: mp.Queue) -> None:
    import torch

    from xmtc.data.datamodule import XMTCDataModule
    from xmtc.models import AttentionXML

    cfg = SIZES[name]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dm = XMTCDataModule(data, max_length=cfg["max_length"], max_vocab_size=50_000, min_word_freq=2,
                        batch_size=cfg["batch_size"])
    dm.setup("fit")
    model = AttentionXML(tokenizer=dm.tokenizer, label_stats=dm.label_stats, embedding_dim=cfg["embedding_dim"],
                         hidden_size=cfg["hidden_size"], linear_sizes=cfg["linear_sizes"])
    prep = time.perf_counter() - t0
    opt = model.configure_optimizers()
    loader = iter(dm.train_dataloader())
    model.train()
    docs = 0
    for step in range(steps + 3):
        if step == 3:
            start, docs = time.perf_counter(), 0
        batch = model.on_before_batch_transfer(next(loader), 0)
        loss, _ = model.compute_loss(batch["inputs"], batch["targets"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        docs += batch["targets"].shape[0]
    elapsed = time.perf_counter() - start
    out.put({"name": name, "labels": model.num_labels, "train_docs": len(dm.datasets["train"]),
             "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "prep_s": prep,
             "docs_per_s": docs / elapsed, "s_per_step": elapsed / steps,
             "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
             "threads": torch.get_num_threads()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/eurlex57k")
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    data = a.data
    if not Path(data).is_dir():
        data = "data/eurlex57k-demo"
        print(f"{a.data} not found; using the bundled subset {data} (figures are NOT full-EURLEX57K figures)")
    ctx = mp.get_context("spawn")
    rows = []
    for name in SIZES:
        q: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(name, data, a.steps, q))
        proc.start()
        rows.append(q.get())
        proc.join()
        r = rows[-1]
        print(f"{name}: {r['docs_per_s']:.1f} docs/s, {r['s_per_step']:.2f} s/step, "
              f"peak RSS {r['peak_rss_GiB']:.2f} GiB", flush=True)
    print(f"\nAttentionXML training on {data} ({rows[0]['train_docs']} training docs, {rows[0]['labels']} labels), "
          f"{a.steps} timed steps, torch threads {rows[0]['threads']}")
    print("| model | params (M) | docs/s | s/step | data prep s | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['params_M']:.1f} | {r['docs_per_s']:.1f} | {r['s_per_step']:.2f} | "
              f"{r['prep_s']:.0f} | {r['peak_rss_GiB']:.2f} |")
    ratio = rows[0]["docs_per_s"] / rows[1]["docs_per_s"]
    print(f"cpu-run / paper throughput ratio: {ratio:.1f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
