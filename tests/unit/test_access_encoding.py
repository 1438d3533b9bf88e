"""The hand-written encoding of access events (``scaivault/audit/access_encoding.py``) against its reference,
eventsourcing's ``Mapper`` over our transcoder: byte-identical stored events, the same decoded fields, for any
record a request can leave (and the same refusal for any the transcoder refuses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from hypothesis import given

from scaivault.audit.access_encoding import (
    access_fields,
    stored_access_event,
    touched_no_secret,
)
from scaivault.audit.access_records import AccessRecord
from scaivault.eventstore.mapper import create_mapper
from tests.access_strategies import ANY_RECORDS, RECORDS

MAPPER = create_mapper()


def _stock_mapper() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


STOCK_MAPPER = _stock_mapper()  # not ours: the fast path must step aside for it


def _outcome(encode: Callable[..., StoredEvent], *args: Any) -> Any:
    """The stored event, or the kind of error that refused it."""
    try:
        stored = encode(*args)
    except Exception as exc:  # noqa: BLE001 (the refusal itself is what is compared)
        return type(exc)
    return stored, type(stored.originator_id)


@given(ANY_RECORDS)
def test_the_fast_encoder_gives_the_mappers_very_bytes(record: AccessRecord) -> None:
    for mapper in (MAPPER, STOCK_MAPPER):
        fast = _outcome(stored_access_event, record.storable_fields(), mapper.transcoder)
        assert fast == _outcome(mapper.to_stored_event, record.event())


@given(RECORDS)
def test_the_fast_decoder_gives_what_the_mapper_decodes(record: AccessRecord) -> None:
    stored = MAPPER.to_stored_event(record.event())
    reference = MAPPER.transcoder.decode(stored.state)
    # repr, not ==: an equal time in another zone, or a UUID of another type, would be a different decoding.
    assert repr(access_fields(stored.state)) == repr(reference)
    assert repr(access_fields(stored.state, streams=False)) == repr({**reference, "accessed_streams": []})
    event = vars(MAPPER.to_domain_event(stored))
    assert {name: repr(event[name]) for name in reference} == {name: repr(value) for name, value in reference.items()}
    assert touched_no_secret(stored.state) == (not reference["accessed_streams"])


def test_a_read_is_seen_whatever_extra_holds() -> None:
    record = AccessRecord(recorded_at=datetime(2026, 1, 1, tzinfo=UTC), request_id="req_1", method="GET", route="/",
                          action="read", status=200, extra={"accessed_streams": []}, accessed_streams=[uuid4()])
    for stored in (stored_access_event(record.storable_fields(), MAPPER.transcoder),
                   MAPPER.to_stored_event(record.event())):
        assert not touched_no_secret(stored.state)
    record.accessed_streams = []
    for stored in (stored_access_event(record.storable_fields(), MAPPER.transcoder),
                   MAPPER.to_stored_event(record.event())):
        assert touched_no_secret(stored.state)
