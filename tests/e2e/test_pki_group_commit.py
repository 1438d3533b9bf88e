"""Issuances that arrive together are committed together (commands/group_commit.py), yet each stays its own
command: every request gets its own certificate and its own audit record, and a request refused inside a batch
fails alone."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.pki_helpers import ACCESS_TOPIC, build_hierarchy, pki_admin, pki_issuer


async def test_concurrent_issuances_each_get_a_certificate_and_an_audit_record(
    client: TestClient, container: Container
) -> None:
    headers = pki_admin(container)
    _, intermediate = await build_hierarchy(client, headers)
    issuer = pki_issuer(container)
    before = await container.pool.fetchval("SELECT count(*) FROM scaivault_events WHERE topic = $1", ACCESS_TOPIC)

    async def issue(n: int) -> tuple[int, dict[str, object]]:
        name = f"svc{n}.svc.cluster.local" if n % 10 else "evil.example.com"  # every tenth is refused
        response = await client.post("/v1/pki/issue/svc-mtls", headers=issuer, json={"common_name": name})
        return response.status, await response.json()

    answers = await asyncio.gather(*(issue(n) for n in range(60)))
    issued = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status != 200]
    assert len(issued) == 54 and len(refused) == 6
    assert all(body["error"]["code"] == "validation_error" for body in refused)
    assert len({body["id"] for body in issued}) == 54 and len({body["serial_number"] for body in issued}) == 54

    transactions = await container.pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM scaivault_events WHERE topic LIKE '%:Certificate.Issued'"
    )
    assert transactions < 54  # they were committed together, several to a transaction

    stored = await container.pool.fetch("SELECT certificate_id FROM scaivault_pki_certificates")
    assert {row["certificate_id"] for row in stored} == {body["id"] for body in issued}
    counted = await client.get(f"/v1/pki/ca/{intermediate['id']}", headers=headers)
    assert (await counted.json())["certificates_issued"] == 54
    records = await container.pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic = $1", ACCESS_TOPIC
    ) - before
    assert records >= 60  # one per request, the refused ones included (recorded by the front door)
    issued_records = await container.pool.fetch(
        """SELECT state FROM scaivault_events WHERE topic = $1 AND convert_from(state, 'UTF8') LIKE '%cert_%'""",
        ACCESS_TOPIC,
    )
    assert len(issued_records) >= 54


async def test_a_role_changed_while_a_batch_waits_refuses_only_what_it_no_longer_allows(
    client: TestClient, container: Container
) -> None:
    headers = pki_admin(container)
    await build_hierarchy(client, headers)
    issuer = pki_issuer(container)

    async def issue(n: int) -> int:
        response = await client.post("/v1/pki/issue/svc-mtls", headers=issuer,
                                     json={"common_name": f"c{n}.svc.cluster.local"})
        return response.status

    async def change_role() -> int:
        response = await client.patch("/v1/pki/roles/svc-mtls", headers=headers, json={"max_ttl": "240h"})
        return response.status

    statuses = await asyncio.gather(*(issue(n) for n in range(20)), change_role(), *(issue(n) for n in range(20, 40)))
    assert statuses[20] == 200
    issues = statuses[:20] + statuses[21:]
    assert set(issues) <= {200, 409}  # a request built from the old role may be told to retry; none fails otherwise
    count = await container.pool.fetchval("SELECT count(*) FROM scaivault_pki_certificates")
    assert count == issues.count(200)
