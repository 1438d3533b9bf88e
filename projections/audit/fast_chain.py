"""The audit log's fast path: access events to chained entries and their hashes, by hand. A rebuild chains a
million entries, and the reference path (decoded fields, ``audit_entry``, ``scaivault.audit.chain.entry_hash``)
spent most of its time building dicts, formatting times and setting up HMACs.

Each function here shadows a reference path, and must give exactly what that path gives:

- ``decoded_as_stored(state)`` is ``projector.decoded_from_fields(access_fields(state, streams=False))`` (the entry
  from the event's decoded fields), or None where it declines: for any event but the usual one;
- ``chain_entries`` gives the rows and hashes of ``projector.audit_entry`` and ``entry_hash``: its canonical text is
  orjson's sorted dump of the prepared entry, where ``scaivault.audit.chain.canonical`` builds a dict first; a batch
  whose first entry's text differs from ``canonical``'s takes ``entry_hash`` for every entry;
- ``utc_text(value)`` is ``scaivault.audit.chain``'s canonical value (``canonical_value``).

``tests/unit/test_audit_fast_chain.py`` holds them equal over arbitrary access records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from scaivault.audit.access_encoding import is_plain_object
from scaivault.audit.chain import (
    ENTRY_FIELDS,
    GENESIS,
    SYSTEM_CHAIN,
    canonical,
    canonical_value,
    chain_mac,
    entry_hash,
)
from scaivault.eventstore.mapper import DATETIME_TAG

# An access event decoded for the chain: its entry (ENTRY_FIELDS, with ``recorded_at`` as the canonical text and
# ``seq``/``notification_id`` still 0), and ``recorded_at`` as the time it is stored as.
Decoded = tuple[dict[str, Any], datetime]
_AFTER_TIME = itemgetter(*ENTRY_FIELDS[4:])  # the row's fields after chain, seq, notification_id, recorded_at
assert ENTRY_FIELDS[:4] == ("chain", "seq", "notification_id", "recorded_at")
# An AccessRecorded state's keys (18): the entry's but chain, seq, notification_id and recorded_at, plus timestamp
# and accessed_streams.
_STORED_KEYS = len(ENTRY_FIELDS) - 2


@dataclass
class ChainedPage:
    """Audit rows ready to write, and the heads of the chains they extend."""

    rows: list[tuple[Any, ...]]
    heads: dict[str, tuple[int, bytes]]


def decoded_as_stored(state: bytes) -> Decoded | None:
    """The decoded entry made from the stored JSON itself, for the usual event (a UTC time with microseconds,
    nothing tagged in ``extra``, such as a read's version number): its keys become the entry's and the time's text
    its canonical text, so no second dict is built and no time is formatted. None for any other event (the caller
    takes the reference path)."""
    entry = orjson.loads(state)
    if len(entry) != _STORED_KEYS or not is_plain_object(entry.get("extra")):
        return None
    text = _datetime_tag_text(entry.pop("timestamp", None))
    if entry.pop("accessed_streams", None) is None or text is None:
        return None
    if len(text) != 32 or not text.endswith("+00:00") or text[0] == "0":
        return None  # not UTC with microseconds from the year 1000 on: the reference path formats it
    entry["recorded_at"] = text[:26] + "Z"
    entry["chain"] = entry["tenant_id"] or SYSTEM_CHAIN
    entry["seq"] = entry["notification_id"] = 0
    if len(entry) != len(ENTRY_FIELDS):
        return None
    return entry, datetime.fromisoformat(text)


def _datetime_tag_text(value: Any) -> str | None:
    """The ISO text a datetime tag holds; None for anything else."""
    if type(value) is dict and value.get("_type_") == DATETIME_TAG and type(value.get("_data_")) is str:
        return value["_data_"]
    return None


def chain_entries(
    key: bytes, heads: dict[str, tuple[int, bytes]], events: Sequence[tuple[int, Decoded]]
) -> ChainedPage:
    """The entries of ``events`` extending ``heads`` (which it moves on), with their hashes."""
    page = ChainedPage([], {})
    if not events:
        return page
    # The canonical text is orjson's sorted dump of the prepared entry; the first entry is checked against the
    # reference (``scaivault.audit.chain.canonical``), and should they ever differ the batch takes that path.
    notification_id, (probe, at) = events[0]
    reference = dict(probe, recorded_at=at, notification_id=notification_id)
    fast = orjson.dumps(dict(probe, notification_id=notification_id), option=orjson.OPT_SORT_KEYS) == canonical(
        reference)
    mac = chain_mac(key)
    for notification_id, (entry, at) in events:
        chain = entry["chain"]
        seq, prev_hash = heads.get(chain, (0, GENESIS))
        entry["seq"] = seq = seq + 1
        entry["notification_id"] = notification_id
        if fast:
            digest = mac(prev_hash + orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))
        else:
            digest = entry_hash(key, prev_hash, dict(entry, recorded_at=at))
        heads[chain] = page.heads[chain] = (seq, digest)
        page.rows.append((chain, seq, notification_id, at, *_AFTER_TIME(entry), prev_hash, digest))
    return page


def utc_text(value: Any) -> Any:
    """What ``canonical`` makes of a value: a datetime becomes its UTC time with microseconds and Z (isoformat is
    twice strftime's speed and gives the same text from the year 1000 on); anything else stays as it is."""
    if type(value) is not datetime:
        return canonical_value(value)
    if value.tzinfo is UTC and value.microsecond and value.year >= 1000:
        return value.isoformat()[:-6] + "Z"  # already UTC (as recorded), and isoformat shows the microseconds
    at = value.astimezone(UTC)
    if at.year < 1000:
        return canonical_value(value)
    return at.isoformat(timespec="microseconds")[:-6] + "Z"
