"""The group commit maps access records straight to stored events; that shortcut must give exactly what the
generic path (DomainEvent, then eventsourcing's Mapper) gives, for any record a request can produce."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from scaivault.audit.access_records import AccessRecord, access_fields, last_access_times, touched_no_secret
from scaivault.domain.access import access_stream_id
from scaivault.eventstore.mapper import create_mapper
from scaivault.ids import new_id, ulid_text

MAPPER = create_mapper()
ANY_TEXT = st.none() | st.text(max_size=600)  # control characters, NUL, non-ASCII, over-long: all of it
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | st.uuids(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)

records = st.builds(
    AccessRecord,
    recorded_at=st.datetimes(timezones=st.just(UTC)),
    request_id=st.text(min_size=1, max_size=40) | st.integers(0, 2**128 - 1).map(lambda v: "req_" + ulid_text(v)),
    method=st.text(min_size=1, max_size=20),
    route=st.text(max_size=300),
    action=st.sampled_from(["read", "write", "list", "unknown"]),
    source_ip=ANY_TEXT,
    user_agent=ANY_TEXT,
    partner_id=ANY_TEXT,
    tenant_id=ANY_TEXT,
    identity_id=ANY_TEXT,
    identity_type=ANY_TEXT,
    secret_path=ANY_TEXT,
    status=st.integers(100, 599),
    error_code=st.none() | st.sampled_from(["not_found", "access_denied"]),
    duration_ms=st.integers(0, 10**6),
    extra=st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("_type_", "_data_")), JSON_VALUES,
                          max_size=3),
    accessed_streams=st.lists(st.uuids(), max_size=3),
)


@given(records)
def test_the_direct_stored_event_is_what_the_mapper_makes_of_the_event(record: AccessRecord) -> None:
    direct = record.stored_event(MAPPER.transcoder)
    generic = MAPPER.to_stored_event(record.event())
    assert (direct.originator_id, direct.originator_version, direct.topic) == (
        generic.originator_id, generic.originator_version, generic.topic)
    assert MAPPER.transcoder.decode(direct.state) == MAPPER.transcoder.decode(generic.state)
    assert MAPPER.to_domain_event(direct) == MAPPER.to_domain_event(generic)


@given(records)
def test_the_direct_stored_event_has_the_transcoders_very_bytes(record: AccessRecord) -> None:
    assert record.stored_event(MAPPER.transcoder).state == MAPPER.transcoder.encode(record.storable_fields())
    for plain in ({}, {"version": 3}, {"as_of": "2026-01-01T00:00:00Z", "n": 1.5, "ok": True, "none": None}):
        record.extra = plain  # the shortcut taken by most records
        assert record.stored_event(MAPPER.transcoder).state == MAPPER.transcoder.encode(record.storable_fields())


@given(records)
def test_stored_text_has_no_control_characters_and_is_bounded(record: AccessRecord) -> None:
    fields = record.storable_fields()
    for name in ("method", "route", "partner_id", "tenant_id", "identity_id", "identity_type", "secret_path",
                 "source_ip", "user_agent"):
        value = fields[name]
        assert value is None or (value and len(value) <= 512 and not any(ord(c) < 32 or ord(c) == 127 for c in value))
    assert fields["accessed_streams"] == (record.accessed_streams if record.success else [])


def test_last_access_is_the_latest_time_per_stream_in_a_fixed_order() -> None:
    a, b = sorted([uuid4(), uuid4()])
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert last_access_times([(late, [b]), (early, [a, b]), (early, [])]) == ([a, b], [early, late])
    assert last_access_times([(late.replace(microsecond=999_999), [a])]) == ([a], [late])


@given(records)
def test_access_fields_decode_what_the_transcoder_decodes(record: AccessRecord) -> None:
    state = record.stored_event(MAPPER.transcoder).state
    assert access_fields(state) == MAPPER.transcoder.decode(state)
    assert touched_no_secret(state) == (not MAPPER.transcoder.decode(state)["accessed_streams"])


def test_a_read_is_seen_whatever_extra_holds() -> None:
    record = AccessRecord(recorded_at=datetime(2026, 1, 1, tzinfo=UTC), request_id="req_1", method="GET", route="/",
                          action="read", status=200, extra={"accessed_streams": []}, accessed_streams=[uuid4()])
    for stored in (record.stored_event(MAPPER.transcoder), MAPPER.to_stored_event(record.event())):
        assert not touched_no_secret(stored.state)
    record.accessed_streams = []
    for stored in (record.stored_event(MAPPER.transcoder), MAPPER.to_stored_event(record.event())):
        assert touched_no_secret(stored.state)


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
    assert access_stream_id("req_" + ulid_text(ms << 80 | first)) < access_stream_id("req_" + ulid_text(later << 80 | second))


def test_the_server_s_request_ids_map_to_uuid7_and_any_other_id_keeps_its_uuid5() -> None:
    assert access_stream_id(new_id("req_")).version == 7
    # Any other id gets its uuid5, pinned here so that the namespace cannot drift.
    assert access_stream_id("req_test") == UUID("2e5b80c7-9e16-5afa-83fa-09d13ee853c6")
    ulid = new_id("req_")[4:]
    for other in ("REQ_" + ulid, "req_" + ulid.upper(), "req_" + ulid[:-1], "req_8" + ulid[1:], "req_" + ulid[:-1] + "u",
                  "tok_" + ulid, "req_" + ulid + "0"):
        assert access_stream_id(other).version == 5 and access_stream_id(other) == access_stream_id(other)
