"""The machine's real Redis (127.0.0.1:6379) for the rate-limit tests, and a TCP proxy in front of it that can be
shut ("Redis goes away": new connections refused, open ones cut) and reopened on the same port."""

from __future__ import annotations

import socket

import pytest

from tests.tcp_proxy import TcpProxy

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# `.ci/run` starts the machine's Redis; elsewhere, without one, the tests that need it say why they did not run.
requires_redis = pytest.mark.skipif(not redis_answers(), reason=f"no Redis answers on {REDIS_HOST}:{REDIS_PORT}")


class RedisProxy(TcpProxy):
    """A TCP forwarder to the real Redis that can be shut (Redis "down") and reopened on the same port."""

    def __init__(self) -> None:
        super().__init__((REDIS_HOST, REDIS_PORT))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
