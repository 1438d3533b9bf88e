"""What an export writes: audit-log entries as JSONL or CSV, in part files whose size and SHA-256 are computed as
they are written (the manifest lists both)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from projections.audit.documents import audit_entry_document
from scaivault.serialization import dumps, format_timestamp

CSV_FIELDS = (
    "id", "sequence", "timestamp", "action", "identity_type", "identity_id", "secret_path", "source_ip", "user_agent",
    "success", "status", "error_code", "duration_ms", "request_id", "method", "route", "extra_data", "hash",
)
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "json": "application/json"}


def encode_jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """One line per entry: exactly the audit log API's entry."""
    return b"".join(dumps(audit_entry_document(row)) + b"\n" for row in rows)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def encode_csv(rows: Sequence[Mapping[str, Any]], *, header: bool) -> bytes:
    """RFC 4180 (CRLF line ends, quoting as needed), UTF-8. Values are exact: no spreadsheet-formula escaping."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_FIELDS)
    for row in rows:
        entry = audit_entry_document(row)
        writer.writerow([_csv_value(entry[name]) for name in CSV_FIELDS])
    return out.getvalue().encode()


def encode(rows: Sequence[Mapping[str, Any]], fmt: str) -> bytes:
    """Entries in ``fmt`` (a CSV part's header is written when the part is opened)."""
    return encode_jsonl(rows) if fmt == "jsonl" else encode_csv(rows, header=False)


class PartFile:
    """A part being written to a scratch file (0600, never through a symlink)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.records = 0
        self.bytes = 0
        self._hash = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._file = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    async def write(self, data: bytes, records: int) -> None:
        await asyncio.to_thread(self._write, data)
        self.records += records
        self.bytes += len(data)

    async def close(self) -> dict[str, Any]:
        """Close the file; return what the manifest says of it."""
        await asyncio.to_thread(self._file.close)
        return {"key": self.key, "records": self.records, "bytes": self.bytes, "sha256": self._hash.hexdigest()}

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
