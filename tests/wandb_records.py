"""Read an offline W&B run file (``run-*.wandb``) back, to check what a run really logged.

The file is a LevelDB-style log (7-byte header ``:W&B`` + magic + version, then 32 KiB blocks of
records: crc32 (4), length (2), type (1), data) holding ``wandb_internal_pb2.Record`` protobufs.
wandb >= 0.19 writes it from Go and no longer ships a Python reader.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HEADER = 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: str | Path, wait: float = 30.0) -> list[pb.Record]:
    """The run file's records. A run's file is complete once its ``exit`` record is written; wandb-core may
    still be writing it for a moment after ``wandb.finish()`` returns (seen on a loaded machine), so the file
    is read again until that record is there, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        records = _parse(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _parse(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    records, pos, pending = [], 7, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(path: str | Path) -> list[dict[str, Any]]:
    """Every ``wandb.log`` row, values decoded from JSON."""
    rows = []
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in r.history.item})
    return rows


def config(path: str | Path) -> dict[str, Any]:
    """The run config as last updated (keys with dots kept as W&B stores them)."""
    out: dict[str, Any] = {}
    for r in read_records(path):
        if r.WhichOneof("record_type") == "config":
            for item in r.config.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
