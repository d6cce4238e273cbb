"""Small real corpora written to disk, for tests: single words decide labels, so models learn them fast."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as module ``name``, registered in ``sys.modules`` (dataclasses and pickling
    look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


DEMO = REPO / "data" / "eurlex57k-demo"

# A toy corpus in which single words decide labels, so a model can learn it in seconds.
_TOPICS = {
    "fish": ("fishery", "fishing vessels catch quota sea"),
    "milk": ("dairy", "milk cheese butter cows"),
    "tax": ("taxation", "tax customs duty tariff"),
    "rail": ("transport", "rail train freight track"),
    "wine": ("wine", "wine grapes vineyard"),
}


def toy_corpus(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    import random

    rng = random.Random(seed)
    keys = sorted(_TOPICS)
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.sample(keys, rng.choice([1, 2]))
        words = [w for k in chosen for w in _TOPICS[k][1].split()]
        words += rng.choices(["the", "council", "regulation", "article", "member", "states"], k=8)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append([_TOPICS[k][0] for k in chosen])
    return texts, labels


def write_axml(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(splits.items()):
        texts, labels = toy_corpus(n, seed + i)
        (root / f"{split}_raw_texts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        (root / f"{split}_labels.txt").write_text("".join(" ".join(y) + "\n" for y in labels), encoding="utf-8")
    (root / "label_names.tsv").write_text(
        "".join(f"{name}\t{name.title()} (EuroVoc)\n" for name, _ in _TOPICS.values()), encoding="utf-8")
    return root
