"""The output directory of an attack run: its identity, what is done, rows streamed per process, one merge.

- ``run.json``: the run's identity (settings, checkpoints, data). Once a result is stored, a rerun with
  another identity is refused (results would mix); a run that stopped before its first result does not lock
  the directory.
- ``results.jsonl``: one line per attacked example, in job order once a run has finished.
- ``results.part-<rank>.jsonl``: while a run is under way, every process appends its rows here and flushes
  after each group, so a crash loses at most the group in flight. Rank 0 merges the parts into
  ``results.jsonl`` at the end, and at the start of a rerun (what a crashed run left behind counts as done).

Rows are told apart by their key (model, kind, doc_id, target_index): merging keeps the first row of a key, so
a crash between writing the merged file and removing the parts duplicates nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from xmtc.errors import UserError

JobKey = tuple[str, str, str, int]
RESULTS = "results.jsonl"


def row_key(row: dict[str, Any]) -> JobKey:
    """What identifies a result row: the model, the kind of attack, the document and the target (for a
    non-targeted attack, whose target is all true labels, the label it was binned by)."""
    return row["model"], row["kind"], row["doc_id"], int(row.get("bin_label_index", row["target_index"]))


def _read_rows(path: Path, repair: bool) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file. A cut LAST line (a crash while it was written) is dropped, and with
    ``repair`` removed from the file; a broken line elsewhere is a user error naming file and line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # redone by this run
                if repair:
                    _write_lines(path, lines[:-1])
                break
            raise UserError(f"{path}:{i + 1}: not valid JSON; delete the line or use another output "
                            "directory") from None
    return rows


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` atomically (a crash leaves the old file or the new one, never half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunStore:
    """One attack run's output directory (module docstring). ``identity``: JSON-able description of the run."""

    def __init__(self, out_dir: str | Path, identity: dict[str, Any]) -> None:
        self.out = Path(out_dir)
        self.identity = json.loads(json.dumps(identity))  # as it reads back from run.json
        self.results = self.out / RESULTS

    def part(self, rank: int) -> Path:
        return self.out / f"results.part-{rank}.jsonl"

    def parts(self) -> list[Path]:
        return sorted(self.out.glob("results.part-*.jsonl"))

    def holds_results(self) -> bool:
        """Whether a whole result line is stored (merged or in a part): only then would other arguments mix."""
        for path in [self.results, *self.parts()]:
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        json.loads(line)
                        return True
                    except json.JSONDecodeError:  # blank, or cut by a crash while the first result was written
                        continue
        return False

    def open(self) -> set[JobKey]:
        """Check the identity against an earlier run's, record it, fold what a crashed run left in part files
        into results.jsonl, and return the keys already done. Rank 0 only (the others wait for its answer)."""
        self.out.mkdir(parents=True, exist_ok=True)
        run_file = self.out / "run.json"
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else None
        except json.JSONDecodeError:
            previous = {}
        ident = self.identity
        if previous is not None and previous != ident and self.holds_results():
            diff = sorted(k for k in set(previous) | set(ident) if previous.get(k) != ident.get(k))
            sdiff = sorted(k for k in ident.get("settings", {}) if previous.get("settings", {}).get(k)
                           != ident["settings"][k]) if "settings" in diff else []
            raise UserError(f"{self.out} holds a run with other arguments ({', '.join(diff)}"
                            + (f": {', '.join(sdiff)}" if sdiff else "") + "); results would mix. "
                            "Use another output directory, or delete it to start over.")
        if previous != ident:
            run_file.write_text(json.dumps(ident, indent=2), encoding="utf-8")
        rows = self.merge()
        return {row_key(r) for r in rows}

    def merge(self, order: Callable[[JobKey], int] | None = None) -> list[dict[str, Any]]:
        """results.jsonl and the part files as one results.jsonl, each key once, sorted by ``order(key)`` when
        given (stable: rows of equal order keep their place); the parts are removed. Returns the rows."""
        parts = self.parts()
        rows, seen = [], set()
        for path in [self.results, *parts]:
            for row in _read_rows(path, repair=path == self.results and not parts):
                if (key := row_key(row)) not in seen:
                    seen.add(key)
                    rows.append(row)
        if order is not None:
            rows.sort(key=lambda r: order(row_key(r)))
        if parts or order is not None:
            _write_lines(self.results, (json.dumps(r, ensure_ascii=False) for r in rows))
            for path in parts:
                path.unlink()
        return rows

    def rows(self) -> list[dict[str, Any]]:
        return _read_rows(self.results, repair=False)

    def writer(self, rank: int) -> PartWriter:
        return PartWriter(self.part(rank))


class PartWriter:
    """Appends one process's rows to its part file, flushed (and synced) after every group."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open across groups; close())
        self._file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
