"""The attack engine against a reference that costs what the paper's code costs (``xmtc.attack.reference``:
masked copies 12 to a model call, one forward pass per candidate, no score cache, the masked LM once per
document in the paper profile), side by side on the same model, (document, target) pairs and candidates.

    python bench/bench_attack.py [--ckpt CKPT] [--mlm DIR] [--pairs 20] [--candidates 48] [--threads 1]
                                 [--profile paper|algorithm1] [--beam_width 4] [--min_similarity 0.9]

``--profile paper`` (default): both test every candidate for success (the paper's code) and take masked-LM
candidates from the original document; ``algorithm1``: both test the kept candidate only, candidates from
the current text.

Without --ckpt / --mlm it builds what it needs on the bundled demo subset first (a 2-epoch AttentionXML
and a small masked LM from ``python -m xmtc.attack.mlm``), cached under bench/.cache.
Reports attacks per minute, queries per attack, the speed-up, whether both made the same decisions,
and where the engine's time goes (importance, masked LM, candidate scoring, similarity); then the same pairs
attacked with other parts (a beam search; the minimum similarity checked during the search) and their cost.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
DEMO = REPO / "data" / "eurlex57k-demo"


class Timed:
    """Wraps a callable attribute of an object and accumulates the seconds spent in it."""

    def __init__(self, obj: object, method: str) -> None:
        self.seconds, self.calls = 0.0, 0
        inner = getattr(obj, method)

        @functools.wraps(inner)  # keeps the signature, so the goal still sees `labels=`
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(obj, method, timed)


def _ensure_artifacts(ckpt: str | None, mlm: str | None) -> tuple[str, str]:
    CACHE.mkdir(parents=True, exist_ok=True)
    if ckpt is None:
        found = sorted((CACHE / "logs").rglob("last.ckpt"))
        if not found:
            subprocess.run([sys.executable, "-m", "xmtc", "fit", "--config", str(REPO / "configs/demo_axml.yaml"),
                            "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir", str(CACHE / "logs"),
                            "--trainer.enable_progress_bar", "false"], check=True)
            found = sorted((CACHE / "logs").rglob("last.ckpt"))
        ckpt = str(found[-1])
    if mlm is None:
        mlm = str(CACHE / "mlm")
        if not (Path(mlm) / "config.json").exists():
            subprocess.run([sys.executable, "-m", "xmtc.attack.mlm", "--data", str(DEMO), "--output", mlm,
                            "--steps", "600"], check=True)
    return ckpt, mlm


def bench_pairs(model: object, texts: list[str], labels: list[np.ndarray], n: int, seed: int) -> np.ndarray:
    """``n`` (document, label) pairs the model's top-5 gets right, a uniform seeded draw (no bins: the bench
    compares implementations on the same pairs, not frequencies)."""
    from xmtc.attack.selection import correct_pairs, predicted_topk_of

    pairs = correct_pairs([predicted_topk_of(model, texts, 5, 64)], labels, len(model.label_stats), by_rank=True)
    rng = np.random.default_rng(seed)
    return pairs[rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt")
    p.add_argument("--mlm")
    p.add_argument("--data", default=str(DEMO), help="dataset directory whose test split is attacked (default: the "
                   "bundled demo subset); labels are matched to the checkpoint's by id")
    p.add_argument("--max_docs", type=int, default=2000, help="test documents scored to find correct pairs")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--candidates", type=int, default=48)
    p.add_argument("--mlm_mode", default="unmasked", choices=["masked", "unmasked"])
    p.add_argument("--max_change_rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="paper", choices=["paper", "algorithm1"])
    p.add_argument("--beam_width", type=int, default=4)
    p.add_argument("--min_similarity", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's). 1 is the fair setting on a shared machine: with 2 threads "
                        "and another busy process, OpenMP spin-waits slow one-text passes up to 100x")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ckpt, mlm = _ensure_artifacts(a.ckpt, a.mlm)

    from xmtc.attack.attack import Attack, GreedyWordSearch
    from xmtc.attack.constraints import MinSimilarity, default_constraints
    from xmtc.attack.goal import TargetedGoal
    from xmtc.attack.importance import mask_importance
    from xmtc.attack.reference import reference_greedy_attack
    from xmtc.attack.search import BeamSearch
    from xmtc.attack.transformation import MaskedLMSubstitution
    from xmtc.data.readers import read_split
    from xmtc.models import AttentionXML

    model = AttentionXML.load_from_checkpoint(ckpt, map_location="cpu").eval()
    # the test split, cut to what the model reads (as `python -m xmtc attack` does), labels in the model's index
    split = read_split(a.data, "test")
    index = {label: i for i, label in enumerate(model.label_stats.label_ids)}
    texts = [model.visible_text(t)[0] for t in split.texts[: a.max_docs or None]]
    labels = [np.array([index[x] for x in y if x in index], dtype=np.int64) for y in split.labels[: len(texts)]]
    pairs = bench_pairs(model, texts, labels, a.pairs, a.seed)
    substitution = MaskedLMSubstitution(mlm, k=a.candidates, mode=a.mlm_mode, local_files_only=True)

    # the reference algorithm (one text per forward pass) and the engine (one document at a time, phases
    # timed), interleaved pair by pair and alternating which goes first, so both see the same machine load;
    # the masked LM's cache is cleared before each, so neither reuses the other's passes
    check, source = ("every", "original") if a.profile == "paper" else ("chosen", "current")
    goal = TargetedGoal(model, k=5, batch_size=64)
    search = GreedyWordSearch(goal, substitution, max_change_rate=a.max_change_rate, success_check=check,
                              candidates_from=source)
    t_scoring = Timed(model, "score_texts")
    t_mlm = Timed(substitution, "candidates")
    ref_results, results = [], []
    ref_seconds = seconds = scoring_single = mlm_single = 0.0
    calls_single = ref_calls = 0
    for i, (d, t) in enumerate(pairs):
        for which in ("reference", "engine") if i % 2 == 0 else ("engine", "reference"):
            substitution.clear_cache()
            s0, m0, c0, start = t_scoring.seconds, t_mlm.seconds, t_scoring.calls, time.perf_counter()
            if which == "reference":
                ref_results.append(reference_greedy_attack(model, texts[d], int(t), "positive", substitution,
                                                           k=5, max_change_rate=a.max_change_rate,
                                                           success_check=check, candidates_from=source))
                ref_seconds += time.perf_counter() - start
                ref_calls += t_scoring.calls - c0
            else:
                results.append(search.attack(texts[d], int(t), "positive"))
                seconds += time.perf_counter() - start
                scoring_single += t_scoring.seconds - s0
                mlm_single += t_mlm.seconds - m0
                calls_single += t_scoring.calls - c0
    # the importance phase on its own (masked copies of every document), to split scoring time
    start = time.perf_counter()
    for d, t in pairs:
        g = goal.fresh()
        words = texts[d].split()
        row = g.scores([" ".join(words)])[0]
        target, _ = g.target_for(row, "positive", int(t))
        mask_importance(g, words, target, g.scores([" ".join(words)], target.labels)[0])
    t_importance = time.perf_counter() - start
    # the engine with several documents at once (shared forward passes)
    substitution.clear_cache()
    calls_before_many = t_scoring.calls
    many, start = [], time.perf_counter()
    for i in range(0, len(pairs), 8):
        many += search.attack_many([(texts[d], int(t), "positive") for d, t in pairs[i:i + 8]])
    seconds_many = time.perf_counter() - start
    calls_many = t_scoring.calls - calls_before_many
    t_similarity = 0.0
    try:
        from xmtc.attack.similarity import SentenceTransformerEncoder, text_similarity

        encoder = SentenceTransformerEncoder()
        start = time.perf_counter()
        text_similarity(encoder, [r.original_text for r in results], [r.adversarial_text for r in results], "cosine")
        t_similarity = time.perf_counter() - start
    except ImportError as e:
        encoder = None
        print(f"similarity not timed: {e}")
    # other parts on the same pairs, 8 documents at once: a beam search, and the minimum similarity checked
    # during the search (the encoder scores every candidate text); their cost against the reference's
    variants = {f"beam search (width {a.beam_width})": Attack(
        goal, substitution, default_constraints(a.max_change_rate), search=BeamSearch(a.beam_width))}
    if encoder is not None:
        sim = MinSimilarity(a.min_similarity, "cosine", encoder)
        variants[f"min similarity {a.min_similarity:g} during the search"] = GreedyWordSearch(
            goal, substitution, max_change_rate=a.max_change_rate, success_check=check, candidates_from=source,
            constraints=[sim])
    variant_rows = []
    for name, attack in variants.items():
        substitution.clear_cache()
        found, start = [], time.perf_counter()
        for i in range(0, len(pairs), 8):
            found += attack.attack_many([(texts[d], int(t), "positive") for d, t in pairs[i:i + 8]])
        variant_rows.append((name, time.perf_counter() - start, found))

    same = sum(r.success == q.success and r.adversarial_text == q.adversarial_text
               for r, q in zip(results, ref_results, strict=True))
    same_many = sum(r.success == q.success and r.adversarial_text == q.adversarial_text
                    for r, q in zip(many, ref_results, strict=True))
    n = len(pairs)
    cand_scoring = max(scoring_single - t_importance, 0.0)  # scoring outside importance = candidates
    total = seconds + t_similarity
    print(f"\n{n} positive-targeted attacks on {Path(a.data).name} test documents, AttentionXML {ckpt}")
    print(f"masked LM {mlm} ({a.mlm_mode} mode, K={a.candidates}), max change rate {a.max_change_rate}, "
          f"{a.profile} profile, torch threads {torch.get_num_threads()}")
    print("| implementation | attacks/min | queries/attack | forward calls/attack | success rate |")
    print("|---|---:|---:|---:|---:|")
    ref_q = np.mean([r.queries for r in ref_results])
    print(f"| reference (the paper's code's cost) | {60 * n / ref_seconds:.1f} | {ref_q:.0f} | "
          f"{ref_calls / n:.1f} | {np.mean([r.success for r in ref_results]):.2f} |")
    print(f"| xmtc engine, one document at a time | {60 * n / seconds:.1f} | "
          f"{np.mean([r.queries for r in results]):.0f} | {calls_single / n:.1f} | "
          f"{np.mean([r.success for r in results]):.2f} |")
    print(f"| xmtc engine, 8 documents at once | {60 * n / seconds_many:.1f} | "
          f"{np.mean([r.queries for r in many]):.0f} | {calls_many / n:.1f} | "
          f"{np.mean([r.success for r in many]):.2f} |")
    for name, secs, found in variant_rows:
        print(f"| xmtc engine, {name}, 8 at once | {60 * n / secs:.1f} | {np.mean([r.queries for r in found]):.0f} | "
              f"| {np.mean([r.success for r in found]):.2f} |")
    print(f"speed-up over the reference: {ref_seconds / seconds:.1f}x one at a time, {ref_seconds / seconds_many:.1f}x "
          f"8 at once; same decisions (success and adversarial text): {same}/{n} and {same_many}/{n}")
    if variant_rows:
        print("other parts, 8 at once, against the reference: " + "; ".join(
            f"{name} {ref_seconds / secs:.1f}x" for name, secs, _ in variant_rows))
    print("engine time split: " + ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in (
        ("importance", t_importance), ("masked LM", mlm_single),
        ("candidate scoring", cand_scoring), ("similarity", t_similarity),
        ("other", max(seconds - t_importance - mlm_single - cand_scoring, 0.0)))))


if __name__ == "__main__":
    main()
