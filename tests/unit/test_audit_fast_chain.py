"""The audit log's fast path (``projections/audit/fast_chain.py``) against its reference: entries built from the
mapper's decoded event (``audit_entry``), their canonical text and hash from ``scaivault.audit.chain``. Whether the
fast path takes an event or declines it, the entry, the row and the hash must be the reference's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections.audit.fast_chain import (
    Decoded,
    chain_entries,
    decoded_as_stored,
    utc_text,
)
from projections.audit.projector import (
    AuditLogProjection,
    audit_entry,
    decoded_from_fields,
)
from scaivault.audit.access_encoding import access_fields
from scaivault.audit.access_records import AccessRecord
from scaivault.audit.chain import GENESIS, canonical_value, entry_hash
from scaivault.eventstore.mapper import create_mapper
from tests.access_strategies import RECORDS, TIMES, access_records

MAPPER = create_mapper()
KEY = b"k" * 32


async def _no_key(conn: Any) -> bytes:
    raise AssertionError("decoding needs no key")


PROJECTION = AuditLogProjection(_no_key)
# Few tenants, so that entries extend each other's chains.
CHAINED_RECORDS = access_records(tenants=st.sampled_from([None, "", "tnt_a", "tnt_b"]))


def _reference(stored: Any) -> Decoded:
    """The entry of the event the mapper decodes, with the canonical text of its time."""
    entry = audit_entry(0, vars(MAPPER.to_domain_event(stored)))
    return dict(entry, recorded_at=canonical_value(entry["recorded_at"])), entry["recorded_at"]


def _strictly(decoded: Decoded) -> tuple[dict[str, str], str]:
    # repr: an equal time in another zone, or an int for a bool, would be a different entry.
    entry, at = decoded
    return {name: repr(value) for name, value in entry.items()}, repr(at)


@given(TIMES | st.none() | st.integers() | st.text(max_size=5))
def test_the_fast_utc_text_is_the_canonical_one(value: Any) -> None:
    assert utc_text(value) == canonical_value(value)


def test_whole_seconds_other_zones_and_early_years_take_the_careful_path() -> None:
    for value in (datetime(2026, 11, 28, 7, 0, tzinfo=UTC), datetime(2026, 11, 28, 7, 0, 0, 5, tzinfo=timezone(
            timedelta(hours=2))), datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC), datetime(1000, 1, 1, 0, 30,
            tzinfo=timezone(timedelta(hours=1)))):
        assert utc_text(value) == canonical_value(value)


@given(RECORDS)
def test_an_access_event_decodes_to_the_reference_entry_whichever_path_it_takes(record: AccessRecord) -> None:
    stored = MAPPER.to_stored_event(record.event())
    expected = _strictly(_reference(stored))
    assert _strictly(PROJECTION.decode(MAPPER, stored)) == expected
    assert _strictly(decoded_from_fields(access_fields(stored.state, streams=False))) == expected
    fast = decoded_as_stored(stored.state)
    if fast is not None:
        assert _strictly(fast) == expected


def test_the_usual_access_event_is_decoded_straight_from_its_json_and_others_are_declined() -> None:
    usual = AccessRecord(recorded_at=datetime(2026, 11, 28, 7, 0, 0, 123456, tzinfo=UTC), request_id="req_1",
                         method="GET", route="/v1/secrets/{path}", action="read", tenant_id="tnt_a", status=200)
    for taken in ({}, {"extra": {"version": 3}}):
        assert decoded_as_stored(MAPPER.to_stored_event(AccessRecord(**{**vars(usual), **taken}).event()).state)
    for unusual in ({"extra": {"ids": [1]}}, {"extra": {"at": datetime(2026, 1, 1, tzinfo=UTC)}},
                    {"recorded_at": datetime(2026, 11, 28, 7, tzinfo=UTC)},
                    {"recorded_at": datetime(2026, 11, 28, 7, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))},
                    {"recorded_at": datetime(999, 11, 28, 7, 0, 0, 1, tzinfo=UTC)},
                    {"recorded_at": datetime(2026, 11, 28, 7, 0, 0, 1)}):
        record = AccessRecord(**{**vars(usual), **unusual})
        assert decoded_as_stored(MAPPER.to_stored_event(record.event()).state) is None, unusual


def _outcome(compute: Callable[[], Any]) -> Any:
    """What ``compute`` gives, or the kind of error it raises (bytes in ``extra`` have no canonical text)."""
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 (the refusal itself is what is compared)
        return type(exc)


def _reference_rows(
    heads: dict[str, tuple[int, bytes]], events: list[tuple[int, Any]]
) -> list[tuple[Any, ...]]:
    rows = []
    for notification_id, stored in events:
        entry = audit_entry(notification_id, vars(MAPPER.to_domain_event(stored)))
        seq, prev_hash = heads.get(entry["chain"], (0, GENESIS))
        entry["seq"] = seq + 1
        digest = entry_hash(KEY, prev_hash, entry)
        heads[entry["chain"]] = (seq + 1, digest)
        rows.append((*entry.values(), prev_hash, digest))
    return rows


HEADS = st.dictionaries(st.sampled_from(["", "tnt_a"]), st.tuples(st.integers(1, 10**6), st.binary(min_size=32,
                                                                                                    max_size=32)))


@given(st.lists(CHAINED_RECORDS, min_size=1, max_size=6), st.integers(1, 2**40), HEADS)
def test_chained_entries_have_the_reference_rows_and_hashes(
    records: list[AccessRecord], first: int, heads: dict[str, tuple[int, bytes]]
) -> None:
    """Events decoded either way, in one batch, chained on from existing heads (a live batch, or a rebuild
    resuming from a retention anchor)."""
    events = [(n, MAPPER.to_stored_event(record.event())) for n, record in enumerate(records, start=first)]
    reference_heads = dict(heads)
    expected = _outcome(lambda: _reference_rows(reference_heads, events))
    fast_heads = dict(heads)
    decoded = [(n, PROJECTION.decode(MAPPER, stored)) for n, stored in events]
    page = _outcome(lambda: chain_entries(KEY, fast_heads, decoded))
    if isinstance(expected, type):
        assert page is expected
        return
    assert page.rows == expected
    assert fast_heads == reference_heads
    assert page.heads == {chain: reference_heads[chain] for chain in {row[0] for row in expected}}


@given(st.lists(CHAINED_RECORDS, min_size=1, max_size=4), st.integers(1, 2**40))
def test_a_batch_whose_canonical_text_drifts_from_the_reference_takes_the_reference_hash(
    records: list[AccessRecord], first: int
) -> None:
    """The fast canonical text is checked against ``canonical`` on each batch's first entry: an entry it would
    hash differently (here, one with a field the chain does not cover) sends the batch down the reference path."""
    events = [(n, MAPPER.to_stored_event(record.event())) for n, record in enumerate(records, start=first)]
    expected = _outcome(lambda: _reference_rows({}, events))
    decoded = [(n, PROJECTION.decode(MAPPER, stored)) for n, stored in events]
    for _, (entry, _at) in decoded:
        entry["not_chained"] = "a field canonical() leaves out"
    assert _outcome(lambda: chain_entries(KEY, {}, decoded).rows) == expected
