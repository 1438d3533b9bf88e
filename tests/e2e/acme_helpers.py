"""What the ACME end-to-end tests share: a real pebble, the app served where pebble's validation authority looks
for http-01 answers, and polling an order until it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from scaivault.bootstrap import Container
from scaivault.http.app import create_app
from tests.acme_server import Pebble
from tests.e2e.pki_helpers import get, openssl, post, write

ACCOUNTS = "/v1/pki/acme/accounts"
ORDERS = "/v1/pki/acme/orders"


@asynccontextmanager
async def serving(container: Container, pebble: Pebble) -> AsyncIterator[TestClient]:
    """The app on 127.0.0.1 at pebble's http-01 port: pebble's validation authority fetches
    /.well-known/acme-challenge/{token} from it (its DNS resolves every name to 127.0.0.1)."""
    server = TestServer(create_app(container=container), host="127.0.0.1", port=pebble.http_port)
    async with TestClient(server) as client:
        yield client


async def register(client: TestClient, headers: dict[str, str], pebble: Pebble, name: str = "pebble",
                   **fields: Any) -> dict[str, Any]:
    body = {"name": name, "provider": "custom", "environment": "staging", "directory_url": pebble.directory_url,
            "email": "certs@acme.example", "terms_of_service_agreed": True, "ca_bundle": pebble.ca_bundle, **fields}
    return await post(client, ACCOUNTS, headers, body)


async def order(client: TestClient, headers: dict[str, str], account_id: str, common_name: str,
                **fields: Any) -> dict[str, Any]:
    return await post(client, ORDERS, headers, {"account_id": account_id, "common_name": common_name, **fields},
                      status=202)


async def until_ended(client: TestClient, headers: dict[str, str], order_id: str, *, seconds: float = 60,
                      seen: list[str] | None = None) -> dict[str, Any]:
    """Poll the order until it is valid, invalid or cancelled; ``seen`` collects each status observed, once."""
    deadline = time.monotonic() + seconds
    while True:
        document = await get(client, f"{ORDERS}/{order_id}", headers)
        if seen is not None and (not seen or seen[-1] != document["status"]):
            seen.append(document["status"])
        if document["status"] in ("valid", "invalid", "cancelled"):
            return document
        assert time.monotonic() < deadline, document
        await asyncio.sleep(0.05)


def verify_chain(directory: Path, root_pem: str, leaf_pem: str, chain_pem: str) -> None:
    """``openssl verify`` of the leaf, through the chain the CA sent, to pebble's root."""
    root = write(directory, "root.pem", root_pem)
    chain = write(directory, "chain.pem", chain_pem)
    leaf = write(directory, "leaf.pem", leaf_pem)
    done = openssl("verify", "-CAfile", str(root), "-untrusted", str(chain), str(leaf), cwd=directory)
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
