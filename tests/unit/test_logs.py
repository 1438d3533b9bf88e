"""Log configuration: LOG_LEVEL reaches our loggers only; libraries stay at WARNING (at debug, botocore printed STS
session tokens)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from scaivault.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    touched = ["scaivault", "projections", "commands", "botocore", "urllib3"]
    levels = {name: logging.getLogger(name).level for name in touched}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in levels.items():
        logging.getLogger(name).setLevel(previous)


@pytest.mark.parametrize("name", ["botocore.endpoint", "botocore.auth", "urllib3.connectionpool", "asyncpg", "moto"])
def test_libraries_stay_at_warning_at_debug_level(restore_logging: None, name: str) -> None:
    configure_logging("debug", "json")
    logger = logging.getLogger(name)
    assert not logger.isEnabledFor(logging.INFO)
    assert not logger.isEnabledFor(logging.DEBUG)
    assert logger.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("name", ["scaivault.http", "projections.runner", "commands.secrets"])
def test_our_loggers_follow_the_level(restore_logging: None, name: str) -> None:
    configure_logging("debug", "json")
    assert logging.getLogger(name).isEnabledFor(logging.DEBUG)
    configure_logging("error", "json")
    assert not logging.getLogger(name).isEnabledFor(logging.WARNING)


def test_a_library_debug_line_never_reaches_the_output(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", "json")
    logging.getLogger("botocore.endpoint").debug("Sending http request: X-Amz-Security-Token=canary-session-token")
    logging.getLogger("scaivault.test").debug("our own debug line")
    err = capsys.readouterr().err
    assert "canary-session-token" not in err
    assert "our own debug line" in err


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_worker_names_itself_on_every_line(
    restore_logging: None, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure_logging("info", fmt, worker=3)
    logging.getLogger("scaivault.access").info("request", extra={"status": 200})
    logging.getLogger("asyncpg").warning("a library's warning")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    if fmt == "json":
        assert [orjson.loads(line)["worker"] for line in lines] == [3, 3]
    else:
        assert all("[worker 3]" in line for line in lines)


def test_a_single_process_adds_no_worker_field(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    logging.getLogger("scaivault.access").info("request")
    assert "worker" not in orjson.loads(capsys.readouterr().err)
