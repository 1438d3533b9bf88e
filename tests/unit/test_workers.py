"""Which worker of `serve --workers N` a process is, and what that decides (docs/adr/0016)."""

from __future__ import annotations

import pytest

from scaivault.workers import ALONE, WorkerRole, usable_cores


def test_a_single_process_is_the_primary_of_one_and_changes_nothing() -> None:
    assert WorkerRole(0, 1) == ALONE and ALONE.singletons and ALONE.alone
    assert ALONE.session_suffix() == ""
    assert ALONE.internal_address("127.0.0.1:9464") == "127.0.0.1:9464"
    assert ALONE.describe() == {"index": 0, "workers": 1, "singletons": True}


def test_worker_0_runs_the_singletons_and_each_worker_has_its_own_internal_port() -> None:
    primary, other = WorkerRole(0, 3), WorkerRole(2, 3)
    assert primary.singletons and not other.singletons
    assert primary.internal_address("127.0.0.1:9464") == "127.0.0.1:9464"
    assert other.internal_address("127.0.0.1:9464") == "127.0.0.1:9466"
    assert other.internal_address("off") == "off"
    assert other.session_suffix() == " worker 2"


@pytest.mark.parametrize(("index", "count"), [(1, 1), (-1, 2), (0, 0)])
def test_a_worker_index_is_below_the_count(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        WorkerRole(index, count)


def test_usable_cores_are_at_least_one() -> None:
    assert usable_cores() >= 1
