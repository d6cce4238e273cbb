"""Convert a dataset's official release into xmtc's AttentionXML raw-text form.

``python -m xmtc.data.convert eurlex57k SRC DST [--descriptors EURLEX57K.json]``

EURLEX57K (Chalkidis et al., ACL 2019; http://nlp.cs.aueb.gr/software_and_datasets/EURLEX57K/) is
released as ``datasets.zip``: ``dataset/{train,dev,test}/<celex id>.json``, one legal act a file, with the
fields ``celex_id``, ``uri``, ``type``, ``concepts`` (EuroVoc ids), ``title``, ``header``, ``recitals``,
``main_body`` (a list of strings) and ``attachments``; the EuroVoc descriptors come separately as
``EURLEX57K.json`` (``eurovoc_en.json`` on the site): ``{concept id: {"label": name, ...}}``. SRC is that
zip or the directory it was extracted to (with or without the ``dataset/`` level); macOS ``__MACOSX`` and
``._*`` entries are skipped. The descriptors are looked for in SRC (and beside the zip) unless given.

DST gets, per split, ``{split}_raw_texts.txt.gz`` (title, header, recitals, main body and attachments
joined with single spaces, runs of whitespace collapsed), ``{split}_labels.txt`` (the concepts, sorted,
space separated) and ``{split}_ids.txt`` (CELEX ids); ``label_names.tsv`` (numeric concept ids in numeric
order, then the others); and ``SHA256SUMS``. Documents are in file-name order, which is the order of
the AttentionXML-form copy this project was developed on. The gzip files carry no time stamp, so the
same release always converts to the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xmtc.data.readers import DataFormatError

__all__ = ["EURLEX57K_SPLITS", "convert_eurlex57k", "document_text", "main"]

EURLEX57K_SPLITS = ("train", "dev", "test")
#: the text fields of a EURLEX57K document, in the order they are joined
TEXT_FIELDS = ("title", "header", "recitals", "main_body", "attachments")
DESCRIPTOR_NAMES = ("EURLEX57K.json", "eurovoc_en.json")
_OUTPUTS = ("label_names.tsv", "SHA256SUMS") + tuple(
    f"{s}_{kind}" for s in EURLEX57K_SPLITS for kind in ("raw_texts.txt.gz", "labels.txt", "ids.txt"))
_SPLIT_MEMBER = re.compile(r"(?:^|/)(train|dev|test)/([^/]+\.json)$")


@dataclass(frozen=True)
class _Entry:
    """One document file of the release, in the zip or on disk."""

    split: str
    name: str  # file name, the sort key
    where: str  # for messages: path, or zip:member
    read: Callable[[], bytes]


def _junk(path: str) -> bool:
    """macOS resource forks that zips made on a Mac carry (``__MACOSX/``, ``._name``)."""
    parts = PurePosixPath(path).parts
    return "__MACOSX" in parts or PurePosixPath(path).name.startswith("._")


def _zip_entries(src: Path, zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in zf.infolist():
        m = _SPLIT_MEMBER.search(info.filename)
        if info.is_dir() or m is None or _junk(info.filename):
            continue
        yield _Entry(m.group(1), m.group(2), f"{src}:{info.filename}",
                     lambda info=info: zf.read(info))


def _dir_entries(src: Path) -> Iterator[_Entry]:
    root = src / "dataset" if (src / "dataset").is_dir() else src
    for split in EURLEX57K_SPLITS:
        d = root / split
        if not d.is_dir():
            continue
        for p in d.glob("*.json"):
            if not _junk(p.name) and p.is_file():
                yield _Entry(split, p.name, str(p), p.read_bytes)


def _flatten(value: object, field: str, where: str) -> list[str]:
    """A text field as a list of strings: a string, a list of strings, or null/absent (nothing)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise DataFormatError(f"field {field!r} must be a string or a list of strings, got {type(value).__name__}",
                          where)


def document_text(doc: dict, where: str = "<document>") -> str:
    """Title, header, recitals, main body and attachments joined by single spaces, whitespace collapsed."""
    parts = [s for field in TEXT_FIELDS for s in _flatten(doc.get(field), field, where)]
    return " ".join(" ".join(parts).split())


def _parse(entry: _Entry) -> tuple[str, str, str]:
    """(text, labels line, CELEX id) of one document file, or an error naming the file and field."""
    try:
        doc = json.loads(entry.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"not valid JSON: {e}", entry.where) from None
    if not isinstance(doc, dict):
        raise DataFormatError(f"expected a JSON object, got {type(doc).__name__}", entry.where)
    celex = doc.get("celex_id")
    if not isinstance(celex, str) or not celex.strip() or len(celex.split()) != 1:
        raise DataFormatError(f"field 'celex_id' missing or not a single word: {celex!r}", entry.where)
    concepts = doc.get("concepts")
    if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) for c in concepts):
        raise DataFormatError(f"field 'concepts' must be a non-empty list of EuroVoc ids, got {concepts!r}",
                              entry.where)
    labels = sorted({c.strip() for c in concepts})
    if any(not c or len(c.split()) != 1 for c in labels):
        raise DataFormatError(f"field 'concepts' holds an empty id or one with spaces: {concepts!r}", entry.where)
    text = document_text(doc, entry.where)
    if not text:
        raise DataFormatError(f"no text: the fields {', '.join(TEXT_FIELDS)} are all empty", entry.where)
    return text, " ".join(labels), celex.strip()


def _label_order(concept: str) -> tuple[int, int, str]:
    return (0, int(concept), "") if concept.isdigit() else (1, 0, concept)


def _label_names(raw: bytes, where: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"not valid JSON: {e}", where) from None
    if not isinstance(data, dict):
        raise DataFormatError("expected an object {concept id: {\"label\": name, ...}}", where)
    rows = []
    for concept, entry in data.items():
        name = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not concept.strip():
            raise DataFormatError(f"concept {concept!r}: no string 'label' field", where)
        rows.append((concept.strip(), " ".join(name.split())))
    return sorted(rows, key=lambda r: _label_order(r[0]))


def _find_descriptors(src: Path, zf: zipfile.ZipFile | None) -> tuple[bytes, str] | None:
    if zf is not None:
        for info in zf.infolist():
            if PurePosixPath(info.filename).name in DESCRIPTOR_NAMES and not _junk(info.filename):
                return zf.read(info), f"{src}:{info.filename}"
    base = src.parent if zf is not None else src
    for d in (base, base / "dataset"):
        for name in DESCRIPTOR_NAMES:
            if (d / name).is_file():
                return (d / name).read_bytes(), str(d / name)
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_eurlex57k(src: str | Path, dst: str | Path, descriptors: str | Path | None = None,
                      overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, int]:
    """Write the AttentionXML form of the EURLEX57K release ``src`` (zip or directory) to ``dst``.

    Returns the number of documents per split. Raises :class:`DataFormatError` naming the file (and
    zip member) that is missing or malformed.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataFormatError("does not exist; give datasets.zip or the directory it was extracted to", src)
    if dst.exists() and not overwrite:
        clash = [n for n in _OUTPUTS if (dst / n).exists()]
        if clash:
            raise DataFormatError(f"already holds {', '.join(clash[:3])}; choose an empty directory or pass "
                                  "--overwrite", dst)
    zf = None
    if src.is_file():
        if not zipfile.is_zipfile(src):
            raise DataFormatError("is neither a zip file nor a directory", src)
        zf = zipfile.ZipFile(src)
    try:
        entries = list(_zip_entries(src, zf) if zf is not None else _dir_entries(src))
        by_split = {s: sorted((e for e in entries if e.split == s), key=lambda e: e.name) for s in EURLEX57K_SPLITS}
        for split in ("train", "test"):
            if not by_split[split]:
                raise DataFormatError(f"no {split}/*.json documents found; expected the EURLEX57K release layout "
                                      "dataset/{train,dev,test}/<celex id>.json", src)
        if descriptors is not None:
            p = Path(descriptors)
            if not p.is_file():
                raise DataFormatError("descriptor file does not exist", p)
            found: tuple[bytes, str] | None = (p.read_bytes(), str(p))
        else:
            found = _find_descriptors(src, zf)
        dst.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        seen: dict[str, str] = {}
        for split, split_entries in by_split.items():
            if not split_entries:
                continue
            with (gzip.GzipFile(dst / f"{split}_raw_texts.txt.gz", "wb", mtime=0) as texts,
                  open(dst / f"{split}_labels.txt", "w", encoding="utf-8", newline="\n") as labels,
                  open(dst / f"{split}_ids.txt", "w", encoding="utf-8", newline="\n") as ids):
                for entry in split_entries:
                    text, label_line, celex = _parse(entry)
                    if celex in seen:
                        raise DataFormatError(f"CELEX id {celex} also in {seen[celex]}", entry.where)
                    seen[celex] = entry.where
                    texts.write((text + "\n").encode("utf-8"))
                    labels.write(label_line + "\n")
                    ids.write(celex + "\n")
            counts[split] = len(split_entries)
            log(f"{split}: {len(split_entries)} documents")
        if found is None:
            log(f"no {' or '.join(DESCRIPTOR_NAMES)} in {src}: label_names.tsv not written (give --descriptors "
                "to add names; training does not need them)")
        else:
            rows = _label_names(*found)
            with open(dst / "label_names.tsv", "w", encoding="utf-8", newline="\n") as f:
                f.writelines(f"{c}\t{n}\n" for c, n in rows)
            log(f"label_names.tsv: {len(rows)} concepts from {found[1]}")
    finally:
        if zf is not None:
            zf.close()
    written = sorted(n for n in _OUTPUTS if n != "SHA256SUMS" and (dst / n).is_file())
    (dst / "SHA256SUMS").write_text("".join(f"{_sha256(dst / n)}  {n}\n" for n in written), encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xmtc.data.convert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="dataset", required=True)
    e = sub.add_parser("eurlex57k", help="EURLEX57K release (datasets.zip or its extracted directory)")
    e.add_argument("src", type=Path, help="datasets.zip, or the directory holding dataset/{train,dev,test}")
    e.add_argument("dst", type=Path, help="output directory (e.g. data/eurlex57k)")
    e.add_argument("--descriptors", type=Path, default=None,
                   help="EURLEX57K.json / eurovoc_en.json (default: looked for in SRC or beside the zip)")
    e.add_argument("--overwrite", action="store_true", help="replace the output files in DST")
    a = p.parse_args(argv)
    try:
        counts = convert_eurlex57k(a.src, a.dst, a.descriptors, overwrite=a.overwrite)
    except DataFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {sum(counts.values())} documents to {a.dst} (SHA256SUMS beside them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
