"""Readers of the two on-disk formats XMTC datasets come in, with errors that point at file and line.

1. AttentionXML raw text, in one directory: ``{split}_raw_texts.txt`` or ``{split}_raw_texts.txt.gz`` (one
   document a line, UTF-8), ``{split}_labels.txt`` (that line's label ids, space separated), optional
   ``{split}_ids.txt`` (one document id a line) and optional ``label_names.tsv`` (``label_id<TAB>name``).
2. APLC-XLNet CSV: ``{split}.csv`` with a header naming the columns ``id``, ``text`` and ``label`` (any order,
   extra columns ignored; ``label`` is a comma separated list), plus ``labels.txt`` (one label a line).

Files are read as bytes and split on ``\\n`` only, then decoded line by line: ``str.splitlines`` and text
mode would also break lines at ``\\r``, ``\\x0b``, ``\\x1c`` or ``\\u2028``, which occur inside scraped
documents and would silently shift every later document against its labels; decoding each line on its own
lets an encoding error name its line and byte offset. Only the line ending (``\\n`` or ``\\r\\n``) and a
UTF-8 byte order mark at the start of a file are removed; whitespace inside documents is left to the
tokenizer. Standard library only, so that datasets can be checked without the training stack.
"""

from __future__ import annotations

import csv
import gzip
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DataFormatError", "RawSplit", "has_split", "read_label_names", "read_split", "split_files"]

OnInvalid = Literal["error", "skip"]

_BOM = "\ufeff"
_CSV_COLUMNS = ("id", "text", "label")
_CSV_FIELD_LIMIT = 2**31 - 1  # documents can exceed the csv module's default 128 KiB field limit


class DataFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the 1-based line if any.

    ``path`` and ``line`` are kept as attributes so that callers (and tests) need not parse the message.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.detail = message
        self.path = None if path is None else str(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)

    def __reduce__(self):  # keep path/line when sent back from a DataLoader worker process
        return type(self), (self.detail, self.path, self.line)


class _InvalidDocument(DataFormatError):
    """One document is unusable; ``on_invalid="skip"`` drops it, ``"error"`` raises this as is."""

    def __init__(self, kind: str, message: str, path: str | Path, line: int) -> None:
        self.kind = kind
        super().__init__(message, path, line)

    def __reduce__(self):
        return type(self), (self.kind, self.detail, self.path, self.line)


@dataclass
class RawSplit:
    """One split as read from disk, before tokenization; the three lists are aligned document by document."""

    texts: list[str]
    labels: list[list[str]]  # label ids as strings, as in the files, order kept, duplicates removed
    ids: list[str]  # from {split}_ids.txt / the CSV id column; else f"{split}:{line_number}"
    source: str  # the main file read, for messages
    skipped: int = 0  # documents dropped under on_invalid="skip"


# --------------------------------------------------------------------------- locating files


def _axml_text_file(data_dir: Path, split: str) -> Path | None:
    """The raw-text file of an AttentionXML split; refuses to guess when both plain and gzip copies exist."""
    plain = data_dir / f"{split}_raw_texts.txt"
    gz = data_dir / f"{split}_raw_texts.txt.gz"
    if plain.is_file() and gz.is_file():
        raise DataFormatError(
            f"both {plain.name} and {gz.name} exist in {data_dir}; they may differ, so remove one of them"
        )
    if plain.is_file():
        return plain
    return gz if gz.is_file() else None


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The files that hold ``split`` (to hash for caching); ``[]`` when the split is absent.

    Only files that exist are listed; a split missing its labels file is reported by :func:`read_split`.
    Label names (``label_names.tsv`` / ``labels.txt``) are not part of any split and are not listed.
    """
    d = Path(data_dir)
    if not d.is_dir():
        return []
    text = _axml_text_file(d, split)
    if text is not None:
        others = [d / f"{split}_labels.txt", d / f"{split}_ids.txt"]
        return [text] + [p for p in others if p.is_file()]
    csv_path = d / f"{split}.csv"
    return [csv_path] if csv_path.is_file() else []


def has_split(data_dir: str | Path, split: str) -> bool:
    """Whether ``data_dir`` holds ``split`` in either format (optional splits such as dev may be absent)."""
    d = Path(data_dir)
    names = (f"{split}_raw_texts.txt", f"{split}_raw_texts.txt.gz", f"{split}.csv")
    return d.is_dir() and any((d / n).is_file() for n in names)


def _check_dir(data_dir: Path) -> None:
    if not data_dir.exists():
        raise DataFormatError(f"data directory {data_dir} does not exist")
    if not data_dir.is_dir():
        raise DataFormatError(f"data directory {data_dir} is not a directory")


# --------------------------------------------------------------------------- line level helpers


def _iter_lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a (possibly gzip) file without their ``\\n`` / ``\\r\\n``, streamed.

    A corrupt or truncated gzip stream is reported with the last line that could be read.
    """
    n = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as f:
            for raw in f:
                n += 1
                if raw.endswith(b"\n"):
                    raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
                yield raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(f"corrupt or truncated gzip data after line {n}: {e}", path) from e


def _decode(raw: bytes, path: Path, line: int) -> str:
    """Decode one line as UTF-8, naming line, byte offset and column of the first bad byte."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        col = len(raw[: e.start].decode("utf-8", "replace")) + 1
        bad = raw[e.start : e.end].hex(" ")
        raise _InvalidDocument(
            "invalid UTF-8",
            f"invalid UTF-8 (byte(s) {bad} at byte offset {e.start}, column {col}; {e.reason})",
            path,
            line,
        ) from None
    if line == 1 and s.startswith(_BOM):
        s = s[1:]
    return s


def _mismatch(a: Path, n_a: int, b: Path, n_b: int) -> DataFormatError:
    return DataFormatError(
        f"{a} has {n_a} lines but {b} has {n_b} lines; line i of each file must describe the same document"
    )


class _Collector:
    """Applies ``on_invalid`` and summarises the skipped documents in one warning."""

    def __init__(self, on_invalid: OnInvalid) -> None:
        if on_invalid not in ("error", "skip"):
            raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
        self.on_invalid = on_invalid
        self.kinds: Counter[str] = Counter()
        self.first: _InvalidDocument | None = None

    @property
    def skipped(self) -> int:
        return sum(self.kinds.values())

    def add(self, err: _InvalidDocument) -> None:
        self.kinds[err.kind] += 1
        if self.first is None:
            self.first = err

    def warn(self, what: str) -> None:
        if self.first is None:
            return
        reasons = ", ".join(f"{kind}: {n}" for kind, n in self.kinds.most_common())
        warnings.warn(
            f"skipped {self.skipped} invalid document(s) of {what} ({reasons}); "
            f"first at {self.first.path}:{self.first.line}: {self.first.detail}",
            UserWarning,
            stacklevel=4,  # warn <- _read_* <- read_split <- the caller
        )


# --------------------------------------------------------------------------- AttentionXML


def _read_small(path: Path) -> list[bytes]:
    """Labels and ids files are small (~1 MB for 45k documents), so they are held as raw lines."""
    return list(_iter_lines(path))


def _parse_labels(raw: bytes, path: Path, line: int) -> list[str]:
    labels = _decode(raw, path, line).split()
    if not labels:
        raise _InvalidDocument(
            "blank label line", "blank label line (the document has no labels)", path, line
        )
    return list(dict.fromkeys(labels))


def _parse_id(raw: bytes, path: Path, line: int) -> str:
    doc_id = _decode(raw, path, line).strip()
    if not doc_id:
        raise _InvalidDocument("empty id", "empty document id", path, line)
    return doc_id


def _read_axml(data_dir: Path, split: str, text_path: Path, col: _Collector) -> RawSplit:
    label_path = data_dir / f"{split}_labels.txt"
    if not label_path.is_file():
        raise DataFormatError(f"missing {label_path.name} next to {text_path.name}", label_path)
    id_path = data_dir / f"{split}_ids.txt"
    label_lines = _read_small(label_path)
    id_lines = _read_small(id_path) if id_path.is_file() else None
    if id_lines is not None and len(id_lines) != len(label_lines):
        raise _mismatch(id_path, len(id_lines), label_path, len(label_lines))

    n_labels = len(label_lines)
    texts: list[str] = []
    labels: list[list[str]] = []
    ids: list[str] = []
    pending: _InvalidDocument | None = None
    n = 0
    lines = _iter_lines(text_path)
    for n, raw in enumerate(lines, 1):
        if n > n_labels:
            break
        try:
            text = _decode(raw, text_path, n)
            if not text or text.isspace():
                raise _InvalidDocument("empty document", "empty or whitespace-only document", text_path, n)
            doc_labels = _parse_labels(label_lines[n - 1], label_path, n)
            doc_id = f"{split}:{n}" if id_lines is None else _parse_id(id_lines[n - 1], id_path, n)
        except _InvalidDocument as err:
            if col.on_invalid == "error":
                pending = err  # raised after the line counts are checked: a shift explains more
                break
            col.add(err)
            continue
        texts.append(text)
        labels.append(doc_labels)
        ids.append(doc_id)
    n_texts = n + sum(1 for _ in lines)  # the rest of the file, undecoded, when the loop stopped early
    if n_texts != n_labels:
        raise _mismatch(text_path, n_texts, label_path, n_labels)
    if pending is not None:
        raise pending
    if n_texts == 0:
        raise DataFormatError("no documents (the file is empty)", text_path)
    col.warn(f"split {split!r} ({text_path})")
    return RawSplit(texts, labels, ids, str(text_path), col.skipped)


# --------------------------------------------------------------------------- APLC-XLNet CSV


def _csv_lines(path: Path, bad_lines: dict[int, _InvalidDocument]) -> Iterator[str]:
    """Decoded lines with their endings kept (the csv module needs them inside quoted fields).

    Undecodable lines are replaced leniently so the csv parser stays in step, and recorded in
    ``bad_lines`` so that the row containing them can be rejected with the exact line.
    """
    for n, raw in enumerate(_iter_lines_keepends(path), 1):
        try:
            s = _decode(raw, path, n)
        except _InvalidDocument as err:
            bad_lines[n] = err
            s = raw.decode("utf-8", "replace")
        yield s


def _iter_lines_keepends(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        yield from f


def _header_columns(header: list[str], path: Path) -> dict[str, int]:
    found = [h.strip() for h in header]
    index: dict[str, int] = {}
    for i, name in enumerate(found):
        key = name.lower()
        if key in _CSV_COLUMNS:
            if key in index:
                raise DataFormatError(f"column {key!r} appears twice in the header {found}", path, 1)
            index[key] = i
    missing = [c for c in _CSV_COLUMNS if c not in index]
    if missing:
        raise DataFormatError(
            f"header lacks required column(s) {missing}; found columns {found} "
            f"(expected {list(_CSV_COLUMNS)}, in any order)",
            path,
            1,
        )
    return index


def _parse_row(
    row: list[str], n_cols: int, cols: dict[str, int], path: Path, line: int
) -> tuple[str, list[str], str]:
    if len(row) != n_cols:
        raise _InvalidDocument(
            "wrong number of fields", f"row has {len(row)} fields, the header has {n_cols}", path, line
        )
    text = row[cols["text"]]
    if not text or text.isspace():
        raise _InvalidDocument("empty text field", "empty or whitespace-only text field", path, line)
    labels = list(dict.fromkeys(p.strip() for p in row[cols["label"]].split(",") if p.strip()))
    if not labels:
        raise _InvalidDocument(
            "empty label field", "empty label field (the document has no labels)", path, line
        )
    doc_id = row[cols["id"]].strip()
    if not doc_id:
        raise _InvalidDocument("empty id", "empty id field", path, line)
    return text, labels, doc_id


def _read_csv(path: Path, split: str, col: _Collector) -> RawSplit:
    bad_lines: dict[int, _InvalidDocument] = {}
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    texts: list[str] = []
    labels: list[list[str]] = []
    ids: list[str] = []
    end = 0  # last physical line of the last complete row; a csv.Error lies in the row after it
    try:
        # strict: a stray quote must not swallow the rest of the file into one field unnoticed
        reader = csv.reader(_csv_lines(path, bad_lines), strict=True)
        header = next(reader, None)
        if header is None:
            raise DataFormatError("empty file; expected a header with columns id,text,label", path)
        if 1 in bad_lines:
            raise bad_lines[1]
        cols = _header_columns(header, path)
        n_cols = len(header)
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:  # blank line: no data, skipped like pandas.read_csv does
                continue
            try:
                bad = next((bad_lines[i] for i in range(start, end + 1) if i in bad_lines), None)
                if bad is not None:
                    raise bad
                text, doc_labels, doc_id = _parse_row(row, n_cols, cols, path, start)
            except _InvalidDocument as err:
                if col.on_invalid == "error":
                    raise
                col.add(err)
                continue
            texts.append(text)
            labels.append(doc_labels)
            ids.append(doc_id)
    except csv.Error as e:
        raise DataFormatError(f"malformed CSV in the row starting here: {e}", path, end + 1) from e
    finally:
        csv.field_size_limit(old_limit)
    if not texts and not col.skipped:
        raise DataFormatError("no documents (only a header)", path)
    col.warn(f"split {split!r} ({path})")
    return RawSplit(texts, labels, ids, str(path), col.skipped)


# --------------------------------------------------------------------------- public entry points


def read_split(data_dir: str | Path, split: str, on_invalid: OnInvalid = "error") -> RawSplit:
    """Read ``split``: AttentionXML files when ``{split}_raw_texts.txt[.gz]`` exists, else ``{split}.csv``.

    Line count mismatches, a missing header column and malformed CSV quoting always raise
    :class:`DataFormatError`. A single bad document (empty text, undecodable bytes, no labels, wrong
    number of CSV fields) raises too, unless ``on_invalid="skip"``: then it is dropped, counted in
    ``RawSplit.skipped`` and summarised in one warning, so one bad line need not stop a long run.
    """
    d = Path(data_dir)
    _check_dir(d)
    col = _Collector(on_invalid)
    text_path = _axml_text_file(d, split)
    if text_path is not None:
        return _read_axml(d, split, text_path, col)
    csv_path = d / f"{split}.csv"
    if csv_path.is_file():
        return _read_csv(csv_path, split, col)
    present = sorted(p.name for p in d.iterdir())
    shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "") if present else "nothing"
    raise DataFormatError(
        f"no {split!r} split in {d}: looked for {split}_raw_texts.txt, {split}_raw_texts.txt.gz "
        f"(with {split}_labels.txt) and {split}.csv; the directory holds {shown}"
    )


def _read_names_tsv(path: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, raw in enumerate(_iter_lines(path), 1):
        s = _decode(raw, path, n)
        if not s.strip():
            continue
        if "\t" not in s:
            raise DataFormatError(f"no TAB in {s[:60]!r}; expected label_id<TAB>name", path, n)
        label, name = s.split("\t", 1)
        label = label.strip()
        if not label:
            raise DataFormatError("empty label id before the TAB", path, n)
        if label in names:
            raise DataFormatError(
                f"duplicate label id {label!r} (first on line {first_line[label]})", path, n
            )
        names[label] = name.strip()
        first_line[label] = n
    return names


def _read_labels_txt(path: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for n, raw in enumerate(_iter_lines(path), 1):
        label = _decode(raw, path, n).strip()
        if label:
            names.setdefault(label, label)
    return names


def read_label_names(data_dir: str | Path) -> dict[str, str]:
    """Label id -> human readable name, from ``label_names.tsv``, else ``labels.txt``, else ``{}``.

    Names are for display only (reports, prediction dumps); the label set itself comes from the splits.
    """
    d = Path(data_dir)
    _check_dir(d)
    tsv = d / "label_names.tsv"
    if tsv.is_file():
        return _read_names_tsv(tsv)
    txt = d / "labels.txt"
    if txt.is_file():
        return _read_labels_txt(txt)
    return {}


def read_text_lines(path: str | Path, on_invalid: OnInvalid = "error") -> list[str]:
    """Documents of a raw text file (one per line, ``.txt`` or ``.txt.gz``), e.g. for ``predict``.

    Lines are kept in input order; an empty or undecodable line raises (or, with ``skip``, is
    dropped and counted in one warning) so that output lines never silently shift.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"text file {p} does not exist")
    col = _Collector(on_invalid)
    texts: list[str] = []
    for n, raw in enumerate(_iter_lines(p), 1):
        try:
            text = _decode(raw, p, n)
            if not text.strip():
                raise _InvalidDocument("empty document", "empty or whitespace-only document", p, n)
        except _InvalidDocument as err:
            if on_invalid == "error":
                raise
            col.add(err)
            continue
        texts.append(text)
    if not texts:
        raise DataFormatError("no documents", p)
    col.warn(str(p))
    return texts
