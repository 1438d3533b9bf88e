"""Structured logs: one JSON object per line (LOG_FORMAT=json, the default) or plain text.

Only fields passed deliberately through ``extra=`` are emitted, and in a worker of ``serve --workers N`` its index
(``worker``) on every line; request bodies, headers and secret values are never handed to a logger, so they cannot
reach a log line. Libraries' loggers stay at WARNING whatever ``LOG_LEVEL`` says: their debug output is not ours to
vet.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from scaivault.serialization import format_timestamp

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": format_timestamp(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# Our own loggers (``logging.getLogger(__name__)`` in these packages) follow LOG_LEVEL; every other library stays
# at WARNING whatever it is: at debug, some print what they send (botocore printed STS session tokens).
OWN_LOGGERS = ("scaivault", "projections", "commands")
THIRD_PARTY_LEVEL = logging.WARNING


class WorkerField(logging.Filter):
    """Names the worker process on every record its handler writes."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(level: str = "info", fmt: str = "json", *, worker: int | None = None) -> None:
    """``worker``: the index of this worker of ``serve --workers N``, added to every line (None: not a worker)."""
    handler = logging.StreamHandler(sys.stderr)
    tag = "" if worker is None else " [worker %(worker)s]"
    text = logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag} %(message)s")
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    if worker is not None:
        handler.addFilter(WorkerField(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(THIRD_PARTY_LEVEL)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(_LEVELS.get(level, logging.INFO))
