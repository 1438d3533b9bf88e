"""Access records: what of a request is stored, the last-access times they imply, the stream each is stored in.
(Their encoding as stored events: test_access_encoding.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from scaivault.audit.access_records import AccessRecord, last_access_times
from scaivault.domain.access import access_stream_id
from scaivault.eventstore.mapper import create_mapper
from scaivault.ids import new_id, ulid_text
from tests.access_strategies import RECORDS


@given(RECORDS)
def test_stored_text_has_no_control_characters_and_is_bounded(record: AccessRecord) -> None:
    fields = record.storable_fields()
    for name in ("method", "route", "partner_id", "tenant_id", "identity_id", "identity_type", "secret_path",
                 "source_ip", "user_agent"):
        value = fields[name]
        assert value is None or (value and len(value) <= 512 and not any(ord(c) < 32 or ord(c) == 127 for c in value))
    assert fields["accessed_streams"] == (record.accessed_streams if record.success else [])


def test_a_headers_undecodable_bytes_are_stored_as_replacement_characters() -> None:
    """aiohttp reads a header's bytes that are not UTF-8 as lone surrogates, which no stored event can hold: such a
    User-Agent made the group commit fail the batch of every request it was in (503s)."""
    record = AccessRecord(recorded_at=datetime(2026, 1, 1, tzinfo=UTC), request_id="req_1", method="GET", route="/",
                          action="read", user_agent="curl\udcff\udcfe/8", source_ip="10.0.0.1\ud800")
    fields = record.storable_fields()
    assert (fields["user_agent"], fields["source_ip"]) == ("curl\ufffd\ufffd/8", "10.0.0.1\ufffd")
    assert create_mapper().to_stored_event(record.event()).state


def test_last_access_is_the_latest_time_per_stream_in_a_fixed_order() -> None:
    a, b = sorted([uuid4(), uuid4()])
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert last_access_times([(late, [b]), (early, [a, b]), (early, [])]) == ([a, b], [early, late])
    assert last_access_times([(late.replace(microsecond=999_999), [a])]) == ([a], [late])


VERSION_AND_VARIANT = 0xF << 76 | 0x3 << 62


@given(st.integers(0, 2**128 - 1))
def test_a_request_ids_stream_is_its_ulid_as_a_uuid7(value: int) -> None:
    stream = access_stream_id("req_" + ulid_text(value))
    assert (stream.version, stream.variant) == (7, "specified in RFC 4122")
    assert stream.int & ~VERSION_AND_VARIANT == value & ~VERSION_AND_VARIANT


@given(st.integers(0, 2**48 - 2), st.integers(1, 2**48 - 1), st.integers(0, 2**80 - 1), st.integers(0, 2**80 - 1))
def test_streams_of_later_requests_sort_after_earlier_ones(ms: int, later_by: int, first: int, second: int) -> None:
    """So the event store's primary key grows at its right edge as requests are recorded."""
    later = min(ms + later_by, 2**48 - 1)
    earlier_stream = access_stream_id("req_" + ulid_text(ms << 80 | first))
    assert earlier_stream < access_stream_id("req_" + ulid_text(later << 80 | second))


def test_the_server_s_request_ids_map_to_uuid7_and_any_other_id_keeps_its_uuid5() -> None:
    assert access_stream_id(new_id("req_")).version == 7
    # Any other id gets its uuid5, pinned here so that the namespace cannot drift.
    assert access_stream_id("req_test") == UUID("2e5b80c7-9e16-5afa-83fa-09d13ee853c6")
    ulid = new_id("req_")[4:]
    for other in ("REQ_" + ulid, "req_" + ulid.upper(), "req_" + ulid[:-1], "req_8" + ulid[1:],
                  "req_" + ulid[:-1] + "u", "tok_" + ulid, "req_" + ulid + "0"):
        assert access_stream_id(other).version == 5 and access_stream_id(other) == access_stream_id(other)
