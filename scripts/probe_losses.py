#!/usr/bin/env python
"""How fast each loss head learns on the demo subset: short AttentionXML fits of configs/demo_axml.yaml, one per
variant, and their validation P@5 (and PSP@5) after every epoch as a Markdown table.

    python scripts/probe_losses.py                    # all variants, 4 epochs each (~5 min per fit on 1 core)
    python scripts/probe_losses.py --only pwcb pwcb-pos-bias --epochs 8
    python scripts/probe_losses.py --ceiling logs/demo_axml/RUN/checkpoints/last.ckpt   # what the weights allow

A fit whose metrics.csv exists is not run again (delete its folder under --out to rerun it), so a stopped probe
resumes. The study (scripts/study_eurlex.py) takes its loss settings from what this measures: the issue asks for
PW and PW-cb at 80% of the normal loss's validation P@5 before they are compared.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOSS = {"normal": "NormalLoss", "pw": "PWLoss", "pwcb": "PWCBLoss"}
BIAS = "--model.init_args.prior_bias=true"
W2V_FILE = "models/w2v-eurlex57k-demo.txt"  # made by python -m xmtc.data.train_word_vectors when missing
W2V = f"--model.init_args.word_vectors={W2V_FILE}"

#: name -> (loss, normalize, extra overrides)
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "normal": ("normal", "labels", []),
    "normal-bias": ("normal", "labels", [BIAS]),
    "pw": ("pw", "labels", []),
    "pw-pos": ("pw", "positives", []),
    "pw-pos-bias": ("pw", "positives", [BIAS]),
    "pwcb": ("pwcb", "labels", []),
    "pwcb-lr0.03": ("pwcb", "labels", ["--model.init_args.optimizer.init_args.lr=0.03"]),
    "pwcb-w2v": ("pwcb", "labels", [W2V]),
    "pwcb-pos": ("pwcb", "positives", []),
    "pwcb-bias": ("pwcb", "labels", [BIAS]),
    "pwcb-pos-bias": ("pwcb", "positives", [BIAS]),
}


CONFIGS = {"axml": "configs/demo_axml.yaml", "aplc": "configs/demo_aplc.yaml"}


def fit(name: str, out: Path, epochs: int, model: str = "axml", code: Path = REPO) -> Path:
    """One fit of a variant; ``code``: another checkout of xmtc to run it with (an A/B against older code), the
    data, tokenizer and output paths staying this repository's."""
    loss, normalize, extra = VARIANTS[name]
    label = name if model == "axml" else f"{model}-{name}"
    if code != REPO:
        label += f"-{code.name}"
    metrics = out / label / "v" / "metrics.csv"
    if metrics.exists():
        return metrics
    if W2V in extra and not (REPO / W2V_FILE).exists():
        subprocess.run([sys.executable, "-m", "xmtc.data.train_word_vectors", "--data", "data/eurlex57k-demo",
                        "--output", W2V_FILE, "--workers", "1"], cwd=REPO, check=True)
    out = out.resolve()
    paths = [f"--data.init_args.data_dir={REPO / 'data/eurlex57k-demo'}"]
    if model == "aplc":
        paths.append(f"--data.init_args.tokenizer={REPO / 'models/tok-eurlex57k-demo'}")
    argv = [sys.executable, "-m", "xmtc", "fit", "--config", CONFIGS[model], *paths,
            f"--model.init_args.loss=xmtc.losses.{LOSS[loss]}",
            f"--model.init_args.loss.init_args.normalize={normalize}", *extra,
            "--trainer.callbacks=null", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            f"--trainer.max_epochs={epochs}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={label}", "--trainer.logger.init_args.version=v"]
    print(f"[probe] {label}: {' '.join(argv[1:])}", flush=True)
    subprocess.run(argv, cwd=code, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
                                                    "PYTHONPATH": str(code)}, stdout=subprocess.DEVNULL)
    return metrics


def curve(metrics: Path, key: str) -> list[float]:
    with open(metrics, newline="") as f:
        return [100 * float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def ceiling(ckpt: str, data: str, split: str = "test", batch_size: int = 256) -> str:
    """P@5 and PSP@5 of a normal-loss model's scores re-ranked as a reweighted loss's optimum ranks them.

    The weighted BCE's best score for label j is its odds times w_j (the weights only move the positives), so
    ranking the normal model's odds times each head's normalised weights shows what the weights cost in P@5 for a
    model that knows what this one knows: an upper bound on how close a reweighted loss can get, whatever its
    training budget."""
    import numpy as np
    import torch

    from xmtc.attack.targets import checkpoint_class
    from xmtc.data.readers import read_split
    from xmtc.losses import NormalLoss, PWCBLoss, PWLoss
    from xmtc.metrics import precision_at_k, psp_at_k

    model = checkpoint_class(ckpt, None).load_from_checkpoint(ckpt, map_location="cpu").eval()
    stats = model.label_stats
    texts_labels = read_split(data, split)
    index = {label: i for i, label in enumerate(stats.label_ids)}
    targets = torch.zeros(len(texts_labels.texts), len(index))
    for row, labels in enumerate(texts_labels.labels):
        targets[row, [index[x] for x in labels if x in index]] = 1.0
    with torch.no_grad():
        scores = torch.cat([model.score_texts(texts_labels.texts[i:i + batch_size], batch_size=batch_size).float()
                            for i in range(0, len(texts_labels.texts), batch_size)])
    p = scores if float(scores.min()) >= 0 and float(scores.max()) <= 1 else torch.sigmoid(scores)
    log_odds = torch.logit(p.double(), eps=1e-7)
    inv_p = torch.as_tensor(np.asarray(stats.inv_propensity), dtype=torch.float32)
    rows = ["| ranking | P@5 | share of normal's | PSP@5 |", "|---|---:|---:|---:|"]
    base = None
    for name, head in [("normal", NormalLoss()), ("PW", PWLoss()), ("PW-cb (beta 0.9)", PWCBLoss(0.9)),
                       ("PW-cb (beta 0.99)", PWCBLoss(0.99)), ("PW-cb (beta 0.999)", PWCBLoss(0.999))]:
        head.bind(stats)
        ranked = (log_odds + head.pos_weight.double().clamp_min(1e-12).log()).float()
        p5 = 100 * float(precision_at_k(ranked, targets, 5))
        base = base or p5
        psp5 = 100 * float(psp_at_k(ranked, targets, inv_p, 5))
        rows.append(f"| {name} | {p5:.1f} | {100 * p5 / base:.0f}% | {psp5:.1f} |")
    table = "\n".join(rows)
    print(f"{ckpt} on the {split} split of {data} ({len(targets)} documents):\n{table}")
    return table


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--model", choices=sorted(CONFIGS), default="axml")
    p.add_argument("--code", default=str(REPO), help="run the fits with this checkout of xmtc (A/B against older code)")
    p.add_argument("--out", default="logs/probe-losses")
    p.add_argument("--ceiling", metavar="CKPT", help="only re-rank CKPT's scores as each loss's optimum would")
    p.add_argument("--data", default="data/eurlex57k-demo", help="the dataset --ceiling scores")
    a = p.parse_args(argv)
    if a.ceiling:
        return ceiling(a.ceiling, a.data)
    out = Path(a.out)
    rows = ["| variant | val P@5 by epoch | val PSP@5 by epoch | last P@5 / normal's |", "|---|---|---|---:|"]
    curves = {name: fit(name, out, a.epochs, a.model, Path(a.code).resolve()) for name in a.only}
    normal = curve(curves["normal"], "val/P@5")[-1] if "normal" in curves else None
    for name, metrics in curves.items():
        p5, psp5 = curve(metrics, "val/P@5"), curve(metrics, "val/PSP@5")
        share = f"{100 * p5[-1] / normal:.0f}%" if normal and p5 else "-"
        rows.append(f"| {name} | {' · '.join(f'{x:.1f}' for x in p5)} | {' · '.join(f'{x:.1f}' for x in psp5)} "
                    f"| {share} |")
    table = "\n".join(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
