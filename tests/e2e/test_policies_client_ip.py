"""ip_ranges behind a trusted reverse proxy: X-Forwarded-For is believed only from SCAIVAULT_TRUSTED_PROXIES."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.helpers import caller_token, error_of, grant, put_secrets


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test client connects from 127.0.0.1: here, that is the trusted proxy."""
    return settings.model_copy(update={"trusted_proxies": "127.0.0.1/32, ::1/128"})


async def test_the_client_behind_a_trusted_proxy_is_the_forwarded_address(
    client: TestClient, container: Container
) -> None:
    await put_secrets(client, container, "vpn/db")
    await grant(client, container, [{"path_pattern": "vpn/*", "permissions": ["read"],
                                     "conditions": {"ip_ranges": ["10.0.0.0/8"]}}])
    svc = caller_token(container, "secrets:read")
    inside = await client.get("/v1/secrets/vpn/db", headers={**svc, "X-Forwarded-For": "10.1.2.3"})
    assert inside.status == 200
    # The proxy appends what it saw: a client-written first entry does not count.
    forged = await client.get("/v1/secrets/vpn/db", headers={**svc, "X-Forwarded-For": "10.1.2.3, 8.8.8.8"})
    assert await error_of(forged) == (403, "ip_not_allowed")
    garbage = await client.get("/v1/secrets/vpn/db", headers={**svc, "X-Forwarded-For": "10.1.2.3, not-an-ip"})
    assert await error_of(garbage) == (403, "ip_not_allowed")
    # Without the header the proxy itself is the client (127.0.0.1: outside 10/8).
    assert await error_of(await client.get("/v1/secrets/vpn/db", headers=svc)) == (403, "ip_not_allowed")
    record = await container.pool.fetchval(
        """SELECT convert_from(state, 'UTF8')::jsonb ->> 'source_ip' FROM scaivault_events
           WHERE topic = 'scaivault.domain.access:AccessRecorded'
             AND convert_from(state, 'UTF8')::jsonb ->> 'status' = '200'
             AND convert_from(state, 'UTF8')::jsonb ->> 'action' = 'read'""")
    assert record == "10.1.2.3"  # the access record names the same client
