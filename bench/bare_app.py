"""Baseline A: the cheapest possible aiohttp handler, served the way `scaivault serve` serves the real app.

Run as `python -m bench.bare_app 127.0.0.1:PORT`; `GET /v1/health` answers 200 with a small JSON body.
"""

from __future__ import annotations

import sys

from aiohttp import web

BODY = {"status": "healthy", "timestamp": "2026-01-01T00:00:00.000000Z"}


async def health(_: web.Request) -> web.Response:
    return web.json_response(BODY)


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    app = web.Application()
    app.router.add_get("/v1/health", health)
    web.run_app(app, host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
