"""AccessRecorded events to and from their stored bytes, by hand: nine events in ten are access events, the group
commit encodes thousands a second and a rebuild decodes millions, and the generic path spent most of that time.

Each function here shadows a reference path, and must give exactly what that path gives:

- ``stored_access_event(fields, transcoder)`` is ``create_mapper().to_stored_event(AccessRecorded.of(**fields))``
  (``AccessRecord.event()``, through eventsourcing's ``Mapper`` and ``scaivault.eventstore.mapper.OrjsonTranscoder``),
  byte for byte;
- ``access_fields(state)`` is ``OrjsonTranscoder().decode(state)``, the state ``Mapper.to_domain_event`` builds the
  event from;
- ``touched_no_secret(state)`` is True only when the decoded ``accessed_streams`` is empty.

``tests/unit/test_access_encoding.py`` holds them equal over arbitrary records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent, Transcoder

from scaivault.domain.access import ACCESS_TOPIC, AccessRecorded, access_stream_id
from scaivault.eventstore.mapper import (
    TAG_KEYS,
    OrjsonTranscoder,
    datetime_tag,
    decode_tag,
    untag,
    uuid_tag,
)

# ``access_fields`` reads the stored fields as they are: should AccessRecorded ever get a class_version, old events
# need the mapper's upcasting, and readers must decode through the mapper instead.
ACCESS_FIELDS_AS_STORED = getattr(AccessRecorded, "class_version", 1) == 1

_PLAIN = frozenset((str, int, float, bool, type(None)))


def is_plain_object(value: Any) -> bool:
    """Whether ``value`` is a dict the transcoder writes (and reads back) exactly as orjson does: its values are
    text, numbers, booleans or None, and its keys cannot read as a tag. Lets a hot path skip the walk for tags."""
    return type(value) is dict and (not value or (
        all(type(item) in _PLAIN for item in value.values()) and value.keys() != TAG_KEYS))


def stored_access_event(fields: dict[str, Any], transcoder: Transcoder) -> StoredEvent:
    """What ``mapper.to_stored_event(AccessRecorded.of(**fields))`` gives, built directly from the event's fields
    (``AccessRecord.storable_fields()``, which this takes over and changes)."""
    extra = fields["extra"]
    if type(transcoder) is not OrjsonTranscoder or type(fields["timestamp"]) is not datetime or not is_plain_object(
        extra
    ):
        state = transcoder.encode(fields)
    else:
        # The transcoder's very bytes, without its walk in search of values to tag: here the only ones are known
        # (`extra` of a read holds a version number at most).
        fields["timestamp"] = datetime_tag(fields["timestamp"])
        fields["accessed_streams"] = [uuid_tag(stream) for stream in fields["accessed_streams"]]
        state = orjson.dumps(fields)
    return StoredEvent(
        originator_id=access_stream_id(fields["request_id"]), originator_version=1, topic=ACCESS_TOPIC, state=state
    )


def access_fields(state: bytes, *, streams: bool = True) -> dict[str, Any]:
    """The fields of a stored AccessRecorded event, the inverse of ``stored_access_event``: what the mapper's
    transcoder decodes, found more cheaply by decoding only the values that can be tagged (the time, the secret
    streams, anything in ``extra``) instead of walking every value. A rebuild decodes a million of these. With
    ``streams=False`` the secret streams are left out (as an empty list), for readers that do not use them."""
    fields = orjson.loads(state)
    fields["timestamp"] = decode_tag(fields["timestamp"])
    fields["accessed_streams"] = [decode_tag(tag) for tag in fields["accessed_streams"]] if streams else []
    if fields["extra"]:
        fields["extra"] = untag(fields["extra"])
    return fields


def touched_no_secret(state: bytes) -> bool:
    """Whether a stored AccessRecorded event read no secret value (most do not), told without decoding it. False
    when unsure: the caller then decodes."""
    return state.endswith(_NO_STREAMS)


# How the transcoder (orjson, compact, keys in field order) ends an event that read no secret: accessed_streams is
# the event's last field, and matching the end means a key of the same name inside `extra` cannot fool it.
_NO_STREAMS = b'"accessed_streams":[]}'
