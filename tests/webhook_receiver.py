"""A webhook receiver for tests: a real HTTP server on loopback that records every delivery, verifies it the way the
spec's reference receiver does (advanced/webhook-signatures), and answers as the test tells it to (a status per
request, a delay, a redirect)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def envelope(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))

    def verifies_with(self, secret: str, *, max_age: int = 300) -> bool:
        """The spec's reference verification of this request's headers and raw body."""
        timestamp = self.headers.get("X-ScaiVault-Timestamp", "")
        signature = self.headers.get("X-ScaiVault-Signature", "")
        if not timestamp or not signature.startswith("sha256=") or abs(time.time() - int(timestamp)) > max_age:
            return False
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature.removeprefix("sha256="))


@dataclass
class Receiver:
    """``answer``: the status (or a ``web.Response``) for the n-th request (0-based); 200 by default."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answer: Callable[[int], int | web.StreamResponse] = lambda n: 200
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        index = len(self.received)
        self.received.append(Received(dict(request.headers), body, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answer(index)
        return answer if isinstance(answer, web.StreamResponse) else web.json_response({"ok": True}, status=answer)

    def event_types(self) -> list[str]:
        return [r.headers["X-ScaiVault-Event-Type"] for r in self.received]


@asynccontextmanager
async def receiving(path: str = "/hook", host: str = "127.0.0.1") -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    async with TestServer(app, host=host) as server:
        receiver.url = str(server.make_url(path))
        yield receiver
