"""A TCP forwarder on loopback to a server the tests use (PostgreSQL, over TCP or its Unix socket), which can be shut
(the server "goes away": new connections refused, open ones cut) and opened again on the same port. It starts shut,
so a client can be started against a server that refuses it. It can also freeze: the server sees its clients leave,
and the clients hear nothing at all (a failover, a partition), as if their connections were still open."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Where a DSN connects: a Unix socket's path, or a host and port.
Upstream = str | tuple[str, int]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_upstream(dsn: str) -> Upstream:
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    port = int(query.get("port") or parts.port or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


class TcpProxy:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstream_writers: set[asyncio.StreamWriter] = set()
        self.frozen = False

    @classmethod
    def to_postgres(cls, dsn: str) -> TcpProxy:
        return cls(postgres_upstream(dsn))

    def postgres_dsn(self, dsn: str) -> str:
        """``dsn``, connecting through this proxy instead."""
        parts = urlsplit(dsn)
        query = [(key, value) for key, value in parse_qsl(parts.query) if key not in {"host", "port"}]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def shut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    def freeze(self) -> None:
        self.frozen = True
        for writer in list(self._upstream_writers):
            writer.transport.abort()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.upstream, str):
            return await asyncio.open_unix_connection(self.upstream)
        return await asyncio.open_connection(*self.upstream)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.frozen:  # accepted, never answered
            self._writers.add(client_writer)
            return
        upstream_reader, upstream_writer = await self._open_upstream()
        self._writers |= {client_writer, upstream_writer}
        self._upstream_writers.add(upstream_writer)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            if not self.frozen:
                writer.transport.abort()

        try:
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
        finally:
            self._writers.discard(upstream_writer)
            self._upstream_writers.discard(upstream_writer)
            if not self.frozen:
                self._writers.discard(client_writer)
