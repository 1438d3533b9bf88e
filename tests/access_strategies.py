"""Hypothesis strategies for access records: anything a request can leave in one, and more, for the suites that
hold the hand-written encodings of access events equal to the reference ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from asyncpg.pgproto.pgproto import UUID as AsyncpgUUID
from hypothesis import strategies as st

from scaivault.audit.access_records import AccessRecord
from scaivault.ids import ulid_text

# Fixed offsets (one with seconds), and named zones (historic offsets included).
ZONES: st.SearchStrategy[tzinfo] = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)),
     timezone(timedelta(hours=1, minutes=2, seconds=3))]
) | st.timezones()


def _times(earliest: datetime, latest: datetime) -> st.SearchStrategy[datetime]:
    """In any zone, or naive."""
    return st.datetimes(earliest, latest, timezones=ZONES) | st.datetimes(earliest, latest)


# A day short of datetime's limits, so that every time has a UTC equivalent.
_ANY_TIME = _times(datetime(1, 1, 2), datetime(9999, 12, 30))
TIMES = (
    _ANY_TIME
    | _ANY_TIME.map(lambda at: at.replace(microsecond=0))
    | _times(datetime(1, 1, 2), datetime(999, 12, 31))
    | st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
)
# Unicode, control characters and NUL included; some longer than any stored field's bound.
TEXT = st.text(max_size=40) | st.text(min_size=500, max_size=1500)
OPTIONAL_TEXT = st.none() | TEXT
# The key of a tag: a dict with exactly these keys cannot be encoded (it would read back as a tag).
TAG_KEY = st.sampled_from(["_type_", "_data_"])
UUIDS = st.uuids() | st.uuids().map(lambda u: AsyncpgUUID(u.bytes))  # rows read by asyncpg hold its own UUID type


def _objects(keys: st.SearchStrategy[str], values: st.SearchStrategy[Any], *, tags: bool) -> st.SearchStrategy[Any]:
    objects = st.dictionaries(keys, values, max_size=4)
    if tags:  # exactly a tag's keys, which random keys would seldom be
        tag = st.fixed_dictionaries({"_type_": st.sampled_from(["uuid_hex", "x"]) | values, "_data_": values})
        return objects | tag
    return objects.filter(lambda obj: obj.keys() != {"_type_", "_data_"})


def _json_values(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str], *, tags: bool) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=3) | st.lists(children, max_size=2).map(tuple)
        | _objects(keys, children, tags=tags),
        max_leaves=8,
    )


_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | UUIDS
    | TIMES | st.binary(max_size=8)
)
_KEYS = st.text(max_size=10) | TAG_KEY
EXTRA = _objects(_KEYS, _json_values(_LEAVES, _KEYS, tags=False), tags=False) | st.fixed_dictionaries(
    {}, optional={"version": st.integers(1, 10**6), "as_of": st.text(max_size=30), "n": st.floats()})
# Values the transcoder refuses, and so must the fast path: integers beyond 64 bits, lone surrogates, dicts that
# would read back as tags.
_UNENCODABLE_LEAVES = _LEAVES | st.integers() | st.just("\ud800")
_ANY_KEYS = _KEYS | st.just("\udfff")
ANY_EXTRA = _objects(_ANY_KEYS, _json_values(_UNENCODABLE_LEAVES, _ANY_KEYS, tags=True), tags=True)


def access_records(
    *,
    extra: st.SearchStrategy[dict[str, Any]] = EXTRA,
    tenants: st.SearchStrategy[str | None] = OPTIONAL_TEXT,
    user_agents: st.SearchStrategy[str | None] = OPTIONAL_TEXT,
) -> st.SearchStrategy[AccessRecord]:
    return st.builds(
        AccessRecord,
        recorded_at=TIMES,
        request_id=st.text(max_size=40) | st.integers(0, 2**128 - 1).map(lambda v: "req_" + ulid_text(v)),
        method=OPTIONAL_TEXT,
        route=OPTIONAL_TEXT,
        action=st.sampled_from(["read", "write", "list", "unknown"]) | st.text(max_size=20),
        source_ip=OPTIONAL_TEXT,
        user_agent=user_agents,
        partner_id=OPTIONAL_TEXT,
        tenant_id=tenants,
        identity_id=OPTIONAL_TEXT,
        identity_type=OPTIONAL_TEXT,
        secret_path=OPTIONAL_TEXT,
        status=st.sampled_from([200, 201, 204, 304, 400, 403, 404, 500]) | st.integers(0, 999),
        error_code=st.none() | st.sampled_from(["not_found", "access_denied"]) | st.text(max_size=20),
        duration_ms=st.integers(0, 10**9),
        extra=extra,
        accessed_streams=st.lists(UUIDS, max_size=3),
    )


RECORDS = access_records()
# Records the transcoder may refuse: the fast path must refuse them too. (A header's undecodable bytes reach a
# record as lone surrogates.)
ANY_RECORDS = access_records(extra=ANY_EXTRA, user_agents=OPTIONAL_TEXT | st.just("curl\udcff"))
