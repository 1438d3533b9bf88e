"""The serving event loop (SCAIVAULT_EVENT_LOOP)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from scaivault.cli.serve import new_event_loop
from scaivault.config import ConfigurationError, Settings


def test_requests_are_served_on_uvloop_unless_asked_otherwise() -> None:
    loop = new_event_loop(Settings.from_env({}))
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    loop = new_event_loop(Settings.from_env({"SCAIVAULT_EVENT_LOOP": "asyncio"}))
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_an_unknown_event_loop_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({"SCAIVAULT_EVENT_LOOP": "tokio"})
