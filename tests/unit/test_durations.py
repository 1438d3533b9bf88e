from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.errors import InvalidDuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_spec_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1.5h", "10", "d", "1x", "1 d", "99999999999d", "1D", None, 5])
def test_bad_durations(text: object) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=36500 * 86400))
def test_format_round_trips(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
