"""APLC head against a full sigmoid output layer on the same small XLNet, trained the same way; test P@k.

    nice python scripts/aplc_vs_full.py --data data/eurlex57k --tokenizer models/tok-eurlex57k-demo \
        --epochs 1 --max-length 128 --lr-encoder 1e-3 --out logs/aplc_vs_full

Both models are ``APLCXLNet`` with the same seed, encoder, summary, data order, optimiser and schedule;
the baseline swaps the APLC head for ``Linear(summary, L)`` trained with the same loss head on every
label. Prints and writes (``--out``/results.json) test P@1/3/5, nDCG@5, PSP@5, training time per model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xmtc.losses import LossHead
from xmtc.models import APLCXLNet
from xmtc.models.aplc_head import label_prior, prior_logit


class SigmoidHead(nn.Module):
    """A full output layer with APLCHead's interface: one logit per label, loss on every label."""

    def __init__(self, in_features: int, num_labels: int, prior: tuple[np.ndarray, int] | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, num_labels)
        self.bounds = [0, num_labels]
        if prior is not None:  # logit(n_j / N), as APLCHead.init_label_prior for its head labels
            with torch.no_grad():
                self.layer.bias.copy_(prior_logit(label_prior(*prior)))

    def forward(self, hidden: Tensor, labels: Tensor | None = None) -> Tensor:
        logits = self.layer(hidden).float()
        return logits if labels is None else logits[:, labels]

    def loss(self, hidden: Tensor, targets: Tensor, loss: LossHead) -> Tensor:
        return loss(self(hidden), targets)


def run(kind: str, args: argparse.Namespace) -> dict:
    import lightning as L

    from xmtc.data.datamodule import XMTCDataModule

    L.seed_everything(args.seed)
    dm = XMTCDataModule(args.data, tokenizer=args.tokenizer, max_length=args.max_length, batch_size=args.batch_size,
                        eval_batch_size=128, val_fraction=0.0)
    small = {"d_model": args.d_model, "n_layer": args.layers, "n_head": 2, "d_inner": 2 * args.d_model, "dropout": 0.1}
    model = APLCXLNet(tokenizer=dm.tokenizer, label_stats=dm.label_stats, cutoffs=[0.5],
                      encoder=args.encoder or "xlnet-base-cased", encoder_config=None if args.encoder else small,
                      lr_encoder=args.lr_encoder, lr_summary=args.lr_summary, lr_head=args.lr_head, warmup=args.warmup,
                      summary_pooling=args.summary_pooling, prior_bias=args.prior_bias)
    if kind == "full":
        stats = dm.label_stats
        state = torch.get_rng_state()  # the full head's own seed, then the APLC run's RNG state again, so
        torch.manual_seed(args.seed + 1)  # data order and dropout masks are the same in both runs
        model.head = SigmoidHead(model.summary[0].out_features, model.num_labels,
                                 (stats.freqs, stats.num_train_docs) if args.prior_bias else None)
        torch.set_rng_state(state)
    trainer = L.Trainer(max_epochs=args.epochs, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        limit_train_batches=args.limit_train_batches)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {"head": kind, "train_minutes": train_s / 60, "test_minutes": (time.perf_counter() - start) / 60,
            "head_params_M": sum(p.numel() for p in model.head.parameters()) / 1e6,
            "labels": model.num_labels, "train_docs": len(dm.datasets["train"]),
            **{k: float(v) for k, v in metrics.items() if k.split("/")[-1] in
               ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/eurlex57k")
    p.add_argument("--tokenizer", default="models/tok-eurlex57k-demo")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit-train-batches", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--encoder", help="pretrained XLNet (name or directory) instead of the small one built from scratch")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr-encoder", type=float, default=3e-4)
    p.add_argument("--lr-summary", type=float, default=1e-3)
    p.add_argument("--lr-head", type=float, default=3e-3)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--summary-pooling", default="mean", choices=["last", "mean"],
                   help="mean: a from-scratch encoder learns it much faster than APLC-XLNet's last token")
    p.add_argument("--prior-bias", action=argparse.BooleanOptionalAction, default=True,
                   help="both heads' output biases start at the training label prior (APLCXLNet prior_bias); "
                        "without it a from-scratch encoder collapses to the prior (docs/aplc.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the encoder, the data order and the APLC head "
                   "(the full head's is seed + 1)")
    p.add_argument("--out", default="logs/aplc_vs_full")
    args = p.parse_args()
    results = [run(kind, args) for kind in ("aplc", "full")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print("| head | labels | head params (M) | train (min) | P@1 | P@3 | P@5 | nDCG@5 | PSP@5 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['head']} | {r['labels']:,} | {r['head_params_M']:.2f} | {r['train_minutes']:.1f} | "
              + " | ".join(f"{100 * r['test/' + k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")) + " |")


if __name__ == "__main__":
    main()
