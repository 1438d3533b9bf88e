"""The audit projection's fast canonical text of a time is the reference one (``scaivault.audit.chain``), for every
time an entry can carry: a hash computed either way must be the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from projections.audit.projector import _utc_text
from scaivault.audit.chain import _canonical_value

ZONE = timezone(timedelta(hours=2))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES))
def test_the_fast_utc_text_is_the_canonical_one(value: datetime) -> None:
    assert _utc_text(value) == _canonical_value(value)


def test_whole_seconds_and_other_zones_take_the_careful_path() -> None:
    for value in (datetime(2026, 11, 28, 7, 0, tzinfo=UTC), datetime(2026, 11, 28, 7, 0, 0, 5, tzinfo=ZONE)):
        assert _utc_text(value) == _canonical_value(value)

