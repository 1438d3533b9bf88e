"""The audit projection's fast canonical text of a time is the reference one (``scaivault.audit.chain``), for every
time an entry can carry: a hash computed either way must be the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from projections.audit.projector import _chain, _decoded, _decoded_as_stored, _utc_text, audit_entry
from scaivault.audit.access_records import access_fields
from scaivault.audit.chain import GENESIS, _canonical_value, entry_hash
from tests.unit.test_access_records import MAPPER, records

ZONE = timezone(timedelta(hours=2))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES))
def test_the_fast_utc_text_is_the_canonical_one(value: datetime) -> None:
    assert _utc_text(value) == _canonical_value(value)


def test_whole_seconds_and_other_zones_take_the_careful_path() -> None:
    for value in (datetime(2026, 11, 28, 7, 0, tzinfo=UTC), datetime(2026, 11, 28, 7, 0, 0, 5, tzinfo=ZONE)):
        assert _utc_text(value) == _canonical_value(value)



@given(st.lists(records, min_size=1, max_size=4), st.integers(1, 2**40))
def test_entries_decoded_from_the_stored_json_chain_to_the_reference_rows_and_hashes(records: list, first: int) -> None:
    """An audit rebuild decodes most access events straight from their stored JSON; whichever way an event is
    decoded, its row and its hash must be those of the reference (``audit_entry`` and ``entry_hash``)."""
    key, heads, expected = b"k" * 32, {}, []
    states = [record.stored_event(MAPPER.transcoder).state for record in records]
    for notification_id, state in enumerate(states, start=first):
        entry = audit_entry(notification_id, access_fields(state, streams=False))
        seq, prev = heads.get(entry["chain"], (0, GENESIS))
        entry["seq"] = seq + 1
        digest = entry_hash(key, prev, entry)
        heads[entry["chain"]] = (seq + 1, digest)
        expected.append((*entry.values(), prev, digest))
    for decode in (_decoded_as_stored, lambda state: _decoded(access_fields(state, streams=False))):
        decoded = [(n, decode(state) or _decoded(access_fields(state, streams=False)))
                   for n, state in enumerate(states, start=first)]
        assert _chain(key, {}, decoded).rows == expected


def test_the_usual_access_event_is_decoded_straight_from_its_json() -> None:
    from scaivault.audit.access_records import AccessRecord

    usual = AccessRecord(recorded_at=datetime(2026, 11, 28, 7, 0, 0, 123456, tzinfo=UTC), request_id="req_1",
                         method="GET", route="/v1/secrets/{path}", action="read", tenant_id="tnt_a", status=200)
    assert _decoded_as_stored(usual.stored_event(MAPPER.transcoder).state) is not None
    read = AccessRecord(**{**vars(usual), "extra": {"version": 3}})
    assert _decoded_as_stored(read.stored_event(MAPPER.transcoder).state) is not None
    for unusual in ({"extra": {"ids": [1]}}, {"recorded_at": datetime(2026, 11, 28, 7, tzinfo=UTC)}):
        record = AccessRecord(**{**vars(usual), **unusual})
        assert _decoded_as_stored(record.stored_event(MAPPER.transcoder).state) is None
