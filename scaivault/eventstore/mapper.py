"""Event state <-> bytes: eventsourcing's ``Mapper`` with an orjson transcoder.

Non-JSON values are written as ``{"_type_": name, "_data_": value}``, the format of eventsourcing's ``JSONTranscoder``
(same names for ``datetime`` and ``UUID``), so its tools can decode our events with the stock transcodings.

Access events are also written and read by hand, for speed (``scaivault/audit/access_encoding.py``, and the audit
log's ``projections/audit/fast_chain.py``): a change to the format here must be followed there, and their
equivalence tests fail until it is.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, Transcoder, TranscodingNotRegisteredError

DATETIME_TAG = "datetime_iso"  # eventsourcing.persistence.DatetimeAsISO.name
UUID_TAG = "uuid_hex"  # eventsourcing.persistence.UUIDAsHex.name
BYTES_TAG = "bytes_b64"

TAG_KEYS = frozenset(("_type_", "_data_"))  # a dict with exactly these keys is a tag
# Cheap pre-check on the raw bytes: most values need no walk after orjson.loads.
_TAG_MARKER = b'"_type_"'


def datetime_tag(value: datetime) -> dict[str, str]:
    return {"_type_": DATETIME_TAG, "_data_": value.isoformat()}


def uuid_tag(value: UUID) -> dict[str, str]:
    return {"_type_": UUID_TAG, "_data_": value.hex}


def _encode_default(obj: Any) -> dict[str, str]:
    # orjson calls this for the types it does not serialise itself (datetime only because of PASSTHROUGH_DATETIME).
    if isinstance(obj, datetime):
        return datetime_tag(obj)
    if isinstance(obj, bytes):
        return {"_type_": BYTES_TAG, "_data_": base64.b64encode(obj).decode("ascii")}
    msg = f"Object of type {type(obj)} is not serializable by OrjsonTranscoder"
    raise TranscodingNotRegisteredError(msg)


# Exact types that hold no UUID: skipped without the isinstance checks (most values of most events are these).
_LEAVES = frozenset((str, int, float, bool, type(None), datetime, bytes))


def _tag_uuids(obj: Any) -> Any:
    """Return ``obj`` with every UUID replaced by its tag, copying only the containers that change.

    orjson writes UUIDs as plain strings (there is no passthrough option for them), which would not decode back to
    UUIDs, so they are tagged before ``dumps``. The walk also refuses dicts that would read back as tags.
    """
    if isinstance(obj, dict):
        if obj.keys() == TAG_KEYS:
            msg = f"A dict with exactly the keys {sorted(TAG_KEYS)} cannot be encoded: it would decode as a tag"
            raise ValueError(msg)
        changed: dict[Any, Any] | None = None
        for key, value in obj.items():
            if type(value) in _LEAVES:
                continue
            if isinstance(value, (dict, list, tuple, UUID)):
                new = _tag_uuids(value)
                if new is not value:
                    if changed is None:
                        changed = dict(obj)
                    changed[key] = new
        return obj if changed is None else changed
    if isinstance(obj, (list, tuple)):
        items: list[Any] | None = None
        for index, value in enumerate(obj):
            if type(value) in _LEAVES:
                continue
            if isinstance(value, (dict, list, tuple, UUID)):
                new = _tag_uuids(value)
                if new is not value:
                    if items is None:
                        items = list(obj)
                    items[index] = new
        return obj if items is None else items
    if isinstance(obj, UUID):
        return uuid_tag(obj)
    return obj


def decode_tag(tag: dict[str, Any]) -> Any:
    """The value a ``{"_type_", "_data_"}`` tag stands for."""
    name, data = tag["_type_"], tag["_data_"]
    if name == DATETIME_TAG:
        return datetime.fromisoformat(data)
    if name == UUID_TAG:
        return UUID(data)
    if name == BYTES_TAG:
        return base64.b64decode(data)
    msg = f"Data serialized with name {name!r} is not deserializable by OrjsonTranscoder"
    raise TranscodingNotRegisteredError(msg)


def untag(obj: Any) -> Any:
    """Replace tags by their values, in place (the structure is fresh from ``orjson.loads``)."""
    if type(obj) is dict:
        if len(obj) == 2 and obj.keys() == TAG_KEYS:
            return decode_tag(obj)
        for key, value in obj.items():
            if type(value) is dict or type(value) is list:
                obj[key] = untag(value)  # replacing a value does not resize the dict: safe while iterating
        return obj
    if type(obj) is list:
        for index, value in enumerate(obj):
            if type(value) is dict or type(value) is list:
                obj[index] = untag(value)
        return obj
    return obj


class OrjsonTranscoder(Transcoder):
    """JSON via orjson, for dict/list/str/int/float/bool/None plus datetime, UUID and bytes (tuples read back as lists).

    Limits inherited from orjson: integers must fit in 64 bits, floats must be finite, str keys only.
    """

    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(_tag_uuids(obj), default=_encode_default, option=self._OPTIONS)

    def decode(self, data: bytes) -> Any:
        obj = orjson.loads(data)
        if _TAG_MARKER not in data:
            return obj
        return untag(obj)


def create_mapper() -> Mapper[UUID]:
    # No cipher: secret values are encrypted before they enter events. No compression: states are small.
    return Mapper(transcoder=OrjsonTranscoder())
