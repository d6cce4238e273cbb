"""A long run's durable store: what a resumable experiment needs to go on from a fresh machine, small enough to
commit to the repository.

A run directory (``logs/...``) and ``models/`` are ignored by git, so a new machine starts without them, and a run
of many sessions would start over. ``save`` mirrors into the store what a rerun needs: every small file (the steps
record, metrics, part records, attack results) and, of the checkpoints, only those later steps read, each in the
form they need (``Keep``); ``restore`` puts back whatever the working tree lacks, never overwriting. Paths in the
store are the files' paths in the repository (``OUTSIDE/<absolute path>`` for a file elsewhere, e.g. a test's
temporary run), so a restored run is the run as it was.

    python scripts/study_eurlex.py --scale cpu --store runs/study-eurlex-cpu      # saves after every step
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

SMALL = 50 * 2**20  # larger files (other than the checkpoints asked for and whole folders) are not kept, said so
CHECKPOINT = ".ckpt"
Keep = Literal["whole", "weights"]  # whole: resumable training; weights: the model alone (test, attack, scoring)
TRAINING_STATE = ("optimizer_states", "lr_schedulers")
OUTSIDE = "outside-the-repository"


def _key(f: Path, repo: Path) -> Path:
    full = Path(os.path.abspath(f))
    return full.relative_to(repo) if full.is_relative_to(repo) else Path(OUTSIDE, *full.parts[1:])


def _place(key: Path, repo: Path) -> Path:
    return Path("/", *key.parts[1:]) if key.parts[0] == OUTSIDE else repo / key


def slim_checkpoint(src: Path, dst: Path) -> None:
    """``src`` without its optimizer and scheduler state: a third of the size, still a Lightning checkpoint that
    ``load_from_checkpoint`` and ``trainer.test(ckpt_path=...)`` read (not one that ``fit`` resumes from)."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    for key in TRAINING_STATE:
        ckpt.pop(key, None)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, dst)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _stale(src: Path, dst: Path) -> bool:
    return not dst.exists() or src.stat().st_mtime > dst.stat().st_mtime


def save(store: Path, repo: Path, dirs: Iterable[Path], whole_dirs: Iterable[Path] = (),
         checkpoints: dict[Path, Keep] | None = None) -> list[Path]:
    """Mirror into ``store`` the files under ``dirs`` that are neither checkpoints nor over ``SMALL``, every file
    under ``whole_dirs`` (a model folder), and ``checkpoints`` as asked; a checkpoint the store holds that is no
    longer asked for is removed (a finished run keeps its best weights, not its last whole state). Only files
    newer than their copy are written. Returns the store paths written."""
    checkpoints = checkpoints or {}
    wanted: dict[Path, tuple[Path, Keep | None]] = {}
    for d in dirs:
        for f in d.rglob("*") if d.is_dir() else ():
            if f.is_file() and f.suffix != CHECKPOINT and not f.name.endswith(".tmp"):
                if f.stat().st_size <= SMALL:
                    wanted[f] = (f, None)
                else:
                    print(f"[store] {f}: {f.stat().st_size / 2**20:.0f} MB, not kept in {store}", flush=True)
    for d in whole_dirs:
        for f in d.rglob("*") if d.is_dir() else ():
            if f.is_file() and not f.name.endswith(".tmp"):
                wanted[f] = (f, None)
    for f, keep in checkpoints.items():
        wanted[f] = (f, keep)
    written = []
    for f, (src, keep) in wanted.items():
        dst = store / _key(f, repo)
        if not _stale(src, dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        (slim_checkpoint if keep == "weights" else _copy)(src, dst)
        written.append(dst)
    asked = {store / _key(f, repo) for f in checkpoints}
    for old in store.rglob(f"*{CHECKPOINT}") if store.is_dir() else ():
        if old not in asked:
            old.unlink()
    return written


def restore(store: Path, repo: Path) -> list[Path]:
    """Copy into ``repo`` every file of ``store`` the working tree lacks (a fresh machine's run directory);
    existing files, the newer work of this machine, are left alone. Returns the paths restored."""
    restored = []
    for f in sorted(store.rglob("*")) if store.is_dir() else ():
        if not f.is_file() or f.name == ".gitignore":
            continue
        dst = _place(f.relative_to(store), repo)
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        _copy(f, dst)
        restored.append(dst)
    return restored
