"""/v1/pki/acme over HTTP against a real ACME server (pebble, with pebble-challtestsrv answering every name with
127.0.0.1): accounts (registered with the CA at once, the key kept sealed and never shown), orders by http-01 (the
app itself answers pebble's validation authority) and tls-alpn-01 (the responder the server runs), errors, scopes,
tenant isolation, no key material in answers, events or the audit log, an order resumed by a new server after the
first stopped mid-order, and renewal (a new certificate with ``renewal_of``, ``certificate.renewed``, a new secret
version)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from tests.acme_server import Pebble, free_port, pebble_missing, start_pebble
from tests.e2e.acme_helpers import ACCOUNTS, ORDERS, order, register, serving, until_ended, verify_chain
from tests.e2e.conftest import GENEROUS_RATE_LIMITS, OTHER_TENANT, PARTNER, TENANT
from tests.e2e.helpers import caller_token, caught_up
from tests.e2e.pki_helpers import error_of, fields_of, get, make_csr, make_key, pki_admin, pki_issuer, post

pytestmark = pytest.mark.skipif(pebble_missing() is not None, reason=pebble_missing() or "")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = start_pebble(tmp_path_factory.mktemp("pebble"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, pebble: Pebble) -> Settings:
    """pebble runs on loopback: the operator allows it; the tls-alpn-01 responder listens where pebble looks."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32",
        acme_tls_alpn_address=f"127.0.0.1:{pebble.tls_port}",
    )


@pytest.fixture
async def client(container: Container, pebble: Pebble) -> Any:
    async with serving(container, pebble) as client:
        yield client


def reader(container: Container, tenant: str = TENANT) -> dict[str, str]:
    return caller_token(container, "secrets:read", identity="user:admin@acme.example", tenant=tenant,
                        roles=("tenant_admin",))


async def no_key_material(pool: asyncpg.Pool) -> None:
    """No private key in any event (the audit log's included) or read model row, in plaintext."""
    assert await pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE position('PRIVATE KEY'::bytea IN state) > 0") == 0
    for table in ("scaivault_acme_accounts", "scaivault_acme_orders", "scaivault_pki_certificates"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%PRIVATE KEY%'") == 0


async def wants_certificate_events(pool: asyncpg.Pool) -> None:
    """A webhook of the tenant asking for certificate events (so the fan-out keeps them in the feed)."""
    await pool.execute(
        """INSERT INTO scaivault_webhooks (webhook_id, stream_id, tenant_id, partner_id, name, url, events, filters,
               enabled, secret_ciphertext, secret_key_id, created_at, created_by, updated_at, updated_by)
           VALUES ('wh_certs', gen_random_uuid(), $1, $2, 'certs', 'https://127.0.0.1:9/', '{certificate.*}', '{}',
                   true, '\\x00', 'dk_x', now(), 'test', now(), 'test')""",
        TENANT, PARTNER,
    )


# ---- accounts -----------------------------------------------------------------------------------------------------


async def test_accounts_are_registered_at_once_and_their_key_is_never_shown(
    client: TestClient, container: Container, pebble: Pebble, pool: asyncpg.Pool
) -> None:
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    assert account["id"].startswith("acct_")
    assert (account["name"], account["provider"], account["environment"], account["status"]) == (
        "pebble", "custom", "staging", "valid")
    assert account["directory_url"] == pebble.directory_url and account["email"] == "certs@acme.example"
    assert account["account_uri"].startswith(pebble.directory_url.rsplit("/", 1)[0])
    assert not any("key" in name for name in account)
    assert await get(client, f"{ACCOUNTS}/{account['id']}", admin) == account
    assert await get(client, f"{ACCOUNTS}/{account['id']}", pki_issuer(container)) == account
    assert [a["id"] for a in (await get(client, ACCOUNTS, admin))["accounts"]] == [account["id"]]
    assert await get(client, f"/v1/t/{TENANT}/pki/acme/accounts/{account['id']}", admin) == account

    # Another tenant's account answers exactly like a missing one.
    other = pki_admin(container, tenant=OTHER_TENANT)
    await error_of(await client.get(f"{ACCOUNTS}/{account['id']}", headers=other), 404, "acme_account_not_found")
    await error_of(await client.delete(f"{ACCOUNTS}/{account['id']}", headers=other), 404, "acme_account_not_found")
    assert (await get(client, ACCOUNTS, other))["accounts"] == []
    await error_of(await client.get(f"{ACCOUNTS}/acct_missing", headers=admin), 404, "acme_account_not_found")

    await no_key_material(pool)
    await caught_up(container)
    audit = await pool.fetchval("SELECT count(*) FROM scaivault_audit_log WHERE extra::text LIKE '%PRIVATE KEY%'")
    assert audit == 0

    # Deleting deactivates at the CA and destroys the key's data key.
    data_key = await pool.fetchval("SELECT key_data_key_id FROM scaivault_acme_accounts WHERE account_id = $1",
                                   account["id"])
    response = await client.delete(f"{ACCOUNTS}/{account['id']}", headers=admin)
    assert response.status == 204
    gone = await get(client, f"{ACCOUNTS}/{account['id']}", admin)
    assert gone["status"] == "deactivated"
    assert await pool.fetchval("SELECT count(*) FROM scaivault_data_keys WHERE id = $1", data_key) == 0
    await error_of(await client.delete(f"{ACCOUNTS}/{account['id']}", headers=admin), 404, "acme_account_not_found")
    # An order on it is refused.
    response = await client.post(ORDERS, json={"account_id": account["id"], "common_name": "a.acme.test",
                                               "challenge_type": "http-01"}, headers=admin)
    await error_of(response, 404, "acme_account_not_found")


async def test_account_errors_and_scopes(client: TestClient, container: Container, pebble: Pebble,
                                         pool: asyncpg.Pool) -> None:
    admin = pki_admin(container)
    body = {"name": "x", "provider": "custom", "directory_url": pebble.directory_url, "ca_bundle": pebble.ca_bundle}
    # pki:issue cannot manage accounts; pki:admin without an admin role cannot either.
    await error_of(await client.post(ACCOUNTS, json=body, headers=pki_issuer(container)), 403,
                   "insufficient_scope")
    no_role = caller_token(container, "pki:admin", identity="sa:ops")
    await error_of(await client.post(ACCOUNTS, json=body, headers=no_role), 403, "access_denied")
    await error_of(await client.get(ACCOUNTS, headers=caller_token(container, "secrets:read")), 403,
                   "insufficient_scope")
    await error_of(await client.get(ACCOUNTS), 401, "authentication_required")

    error = await error_of(await client.post(ACCOUNTS, json={**body, "provider": "nope"}, headers=admin), 422,
                           "validation_error")
    assert fields_of(error) == ["provider"]
    error = await error_of(await client.post(ACCOUNTS, json={**body, "directory_url": None}, headers=admin), 422,
                           "validation_error")
    assert fields_of(error) == ["directory_url"]
    error = await error_of(await client.post(ACCOUNTS, json={**body, "email": "not-an-address"}, headers=admin), 422,
                           "validation_error")
    assert fields_of(error) == ["email"]
    # The CA unreachable, or refusing: 400 invalid_config with its reason; nothing is stored.
    closed = f"https://127.0.0.1:{free_port()}/dir"
    await error_of(await client.post(ACCOUNTS, json={**body, "directory_url": closed}, headers=admin), 400,
                   "invalid_config")
    untrusted = {**body, "ca_bundle": None}  # pebble's TLS certificate is not publicly trusted
    await error_of(await client.post(ACCOUNTS, json=untrusted, headers=admin), 400, "invalid_config")
    error = await error_of(await client.post(ACCOUNTS, json={**body, "terms_of_service_agreed": False},
                                             headers=admin), 422, "validation_error")
    assert fields_of(error) == ["terms_of_service_agreed"]
    assert await pool.fetchval("SELECT count(*) FROM scaivault_acme_accounts WHERE status = 'valid'") == 0


# ---- orders -------------------------------------------------------------------------------------------------------


async def test_http01_order_end_to_end(client: TestClient, container: Container, pebble: Pebble,
                                       pool: asyncpg.Pool, tmp_path: Path) -> None:
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    issuer = pki_issuer(container)
    created = await order(client, admin, account["id"], "www.acme.test", alt_names=["api.acme.test"],
                          challenge_type="http-01", key_type="rsa")
    assert created["id"].startswith("acmeo_") and created["status"] == "pending"
    assert created["secret_path"] == "certificates/www_acme_test" and created["auto_renew"] is True
    seen: list[str] = []
    done = await until_ended(client, issuer, created["id"], seen=seen)
    assert done["status"] == "valid", done
    assert seen[-1] == "valid" and set(seen) <= {"pending", "processing", "valid"}
    assert done["error"] is None and done["step"] == "completed"
    assert {(c["type"], c["identifier"], c["status"]) for c in done["challenges"]} == {
        ("http-01", "www.acme.test", "removed"), ("http-01", "api.acme.test", "removed")}
    assert await pool.fetchval("SELECT count(*) FROM scaivault_acme_http01_tokens") == 0  # cleaned up

    certificate = await get(client, f"/v1/pki/certificates/{done['certificate_id']}", admin)
    assert certificate["id"] == done["certificate_id"]
    secret = await get(client, "/v1/secrets/certificates/www_acme_test", reader(container))
    assert secret["secret_type"] == "certificate"
    data = secret["data"]
    assert set(data) == {"cert_pem", "key_pem", "chain_pem"}
    leaf = x509.load_pem_x509_certificate(data["cert_pem"].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"www.acme.test", "api.acme.test"}
    key = serialization.load_pem_private_key(data["key_pem"].encode(), None)
    assert key.public_key() == leaf.public_key()
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    verify_chain(tmp_path, pebble.root_pem(), data["cert_pem"], data["chain_pem"])
    orders = (await get(client, ORDERS, issuer))["orders"]
    assert [o["id"] for o in orders] == [created["id"]]
    assert (await get(client, f"/v1/t/{TENANT}/pki/acme/orders/{created['id']}", issuer))["status"] == "valid"
    await no_key_material(pool)
    # Types of events recorded for the order, in order.
    topics = [row["topic"].rsplit(".", 1)[-1] for row in await pool.fetch(
        "SELECT topic FROM scaivault_events WHERE originator_id = (SELECT stream_id FROM scaivault_acme_orders "
        "WHERE order_id = $1) ORDER BY originator_version", created["id"])]
    assert topics[0] == "Requested" and topics[-1] == "Completed"
    assert {"Stepped", "ChallengePresented", "ChallengeCleanedUp"} <= set(topics)


async def test_order_errors_scopes_and_isolation(client: TestClient, container: Container, pebble: Pebble) -> None:
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    issuer = pki_issuer(container)

    async def refused(body: dict[str, Any], status: int, code: str, headers: dict[str, str] = admin) -> list[str]:
        response = await client.post(ORDERS, json={"account_id": account["id"], **body}, headers=headers)
        return fields_of(await error_of(response, status, code))

    assert await refused({"common_name": "*.acme.test", "challenge_type": "http-01"}, 422,
                         "validation_error") == ["challenge_type"]
    assert await refused({"common_name": "a.acme.test", "challenge_type": "smoke-01"}, 422,
                         "validation_error") == ["challenge_type"]
    assert await refused({"common_name": "not a name", "challenge_type": "http-01"}, 422, "validation_error")
    assert await refused({"common_name": "a.acme.test", "challenge_type": "http-01", "key_type": "dsa"}, 422,
                         "validation_error") == ["key_type"]
    await refused({"common_name": "a.acme.test", "challenge_type": "http-01", "renew_before": "soon"}, 400,
                  "invalid_duration")
    # dns-01 needs a DNS provider managing the names.
    await refused({"common_name": "a.acme.test"}, 404, "dns_provider_not_found")
    # A CSR must ask for every name.
    csr = make_csr(make_key(), "other.acme.test", dns_names=("other.acme.test",))
    assert await refused({"common_name": "a.acme.test", "challenge_type": "http-01", "csr_pem": csr}, 422,
                         "validation_error") == ["csr_pem"]
    await refused({"common_name": "a.acme.test", "challenge_type": "http-01"}, 403, "insufficient_scope",
                  caller_token(container, "secrets:read"))
    other = pki_admin(container, tenant=OTHER_TENANT)
    await refused({"common_name": "a.acme.test", "challenge_type": "http-01"}, 404, "acme_account_not_found", other)

    # Ordering a publicly trusted certificate (and writing it to a secret) is a tenant administrator's.
    await refused({"common_name": "a.acme.test", "challenge_type": "http-01"}, 403, "access_denied", issuer)
    created = await order(client, admin, account["id"], "c.acme.test", challenge_type="http-01")
    await error_of(await client.get(f"{ORDERS}/{created['id']}", headers=other), 404, "acme_order_not_found")
    await error_of(await client.post(f"{ORDERS}/{created['id']}/cancel", headers=other), 404, "acme_order_not_found")
    await error_of(await client.get(f"{ORDERS}/acmeo_missing", headers=issuer), 404, "acme_order_not_found")
    assert (await get(client, ORDERS, other))["orders"] == []
    done = await until_ended(client, issuer, created["id"])
    assert done["status"] == "valid"
    # An ended order cannot be cancelled.
    await error_of(await client.post(f"{ORDERS}/{created['id']}/cancel", headers=issuer), 400, "invalid_request")


async def test_caller_csr_and_cancel(client: TestClient, container: Container, pebble: Pebble,
                                     pool: asyncpg.Pool) -> None:
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    key = make_key()
    csr = make_csr(key, "own.acme.test", dns_names=("own.acme.test",))
    created = await order(client, admin, account["id"], "own.acme.test", challenge_type="http-01", csr_pem=csr,
                          secret_path="tls/own")
    done = await until_ended(client, admin, created["id"])
    assert done["status"] == "valid", done
    data = (await get(client, "/v1/secrets/tls/own", reader(container)))["data"]
    assert set(data) == {"cert_pem", "chain_pem"}  # the caller keeps its key
    leaf = x509.load_pem_x509_certificate(data["cert_pem"].encode())
    assert leaf.public_key() == key.public_key()

    # Cancelled before a worker takes it: the order never reaches the CA.
    await container.acme_worker.tick()  # nothing pending
    stopped = await post(client, ORDERS, admin, {"account_id": account["id"], "common_name": "x.acme.test",
                                                  "challenge_type": "http-01"}, status=202)
    response = await client.post(f"{ORDERS}/{stopped['id']}/cancel", headers=admin)
    if response.status == 200:  # the usual case: cancelled before the worker finished it
        assert (await response.json())["status"] == "cancelled"
        await asyncio.sleep(1)  # a worker that held it stops at its next step
        assert (await get(client, f"{ORDERS}/{stopped['id']}", admin))["status"] == "cancelled"
    else:
        await error_of(response, 400, "invalid_request")

    # Listings page by id, with a cursor bound to the listing's filter.
    first = await get(client, f"{ORDERS}?limit=1", admin)
    assert [o["id"] for o in first["orders"]] == [created["id"]] and first["has_more"] is True
    rest = await get(client, f"{ORDERS}?limit=1&cursor={first['cursor']}", admin)
    assert [o["id"] for o in rest["orders"]] == [stopped["id"]] and rest["has_more"] is False
    await error_of(await client.get(f"{ORDERS}?limit=1&status=valid&cursor={first['cursor']}", headers=admin), 400,
                   "invalid_cursor")
    assert created["id"] in [o["id"] for o in (await get(client, f"{ORDERS}?status=valid", admin))["orders"]]
    accounts = await get(client, f"{ACCOUNTS}?limit=1", admin)
    assert accounts["has_more"] is False and accounts["cursor"] is None


async def test_tls_alpn01_order(client: TestClient, container: Container, pebble: Pebble, tmp_path: Path) -> None:
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    created = await order(client, admin, account["id"], "alpn.acme.test", challenge_type="tls-alpn-01")
    done = await until_ended(client, admin, created["id"])
    assert done["status"] == "valid", done
    assert [(c["type"], c["status"]) for c in done["challenges"]] == [("tls-alpn-01", "removed")]
    data = (await get(client, "/v1/secrets/certificates/alpn_acme_test", reader(container)))["data"]
    verify_chain(tmp_path, pebble.root_pem(), data["cert_pem"], data["chain_pem"])


async def test_a_new_server_resumes_an_order_the_stopped_one_left(
    container: Container, pebble: Pebble, settings: Settings, pool: asyncpg.Pool
) -> None:
    """The first server stops right after recording ``challenges_presented`` (as if it were killed there); a new
    server, on the same database, resumes from the recorded state and completes it."""
    reached = asyncio.Event()
    record_step = container.acme_commands.record_step

    async def stop_after_presenting(order_id: str, step: str, state: dict[str, Any]) -> None:
        await record_step(order_id, step, state)
        if step == "challenges_presented":
            reached.set()
            await asyncio.Event().wait()  # hangs here until the server stops

    container.acme_commands.record_step = stop_after_presenting  # type: ignore[method-assign]
    admin = pki_admin(container)
    async with serving(container, pebble) as first:
        account = await register(first, admin, pebble)
        created = await order(first, admin, account["id"], "resume.acme.test", challenge_type="http-01")
        await asyncio.wait_for(reached.wait(), 30)
        assert (await get(first, f"{ORDERS}/{created['id']}", admin))["step"] == "challenges_presented"
    # The first server stopped: its presented challenge was taken down.
    assert await pool.fetchval("SELECT count(*) FROM scaivault_acme_http01_tokens") == 0

    second_container = await build_container(settings)
    try:
        async with serving(second_container, pebble) as second:
            done = await until_ended(second, admin, created["id"])
            assert done["status"] == "valid", done
            assert (await get(second, "/v1/secrets/certificates/resume_acme_test", reader(second_container)))
    finally:
        await second_container.close()
    topics = [row["topic"].rsplit(".", 1)[-1] for row in await pool.fetch(
        "SELECT topic FROM scaivault_events WHERE originator_id = (SELECT stream_id FROM scaivault_acme_orders "
        "WHERE order_id = $1) ORDER BY originator_version", created["id"])]
    # Presented by the first server, taken down as it stopped, presented again by the second; one CA order.
    assert topics.count("ChallengePresented") == 2 and topics.count("ChallengeCleanedUp") == 2
    assert topics.count("Requested") == 1 and topics[-1] == "Completed"


async def test_renewal_issues_a_successor_and_a_new_secret_version(
    client: TestClient, container: Container, pebble: Pebble, pool: asyncpg.Pool
) -> None:
    await wants_certificate_events(pool)
    admin = pki_admin(container)
    account = await register(client, admin, pebble)
    created = await order(client, admin, account["id"], "renew.acme.test", challenge_type="http-01",
                          renew_before="30d")
    first = await until_ended(client, admin, created["id"])
    assert first["status"] == "valid" and first["renew_at"] is not None
    certificate = await get(client, f"/v1/pki/certificates/{first['certificate_id']}", admin)
    expires = await pool.fetchval("SELECT not_after FROM scaivault_pki_certificates WHERE certificate_id = $1",
                                  first["certificate_id"])
    # Not due yet now; due a day before expiry. Two schedulers start one renewal.
    assert await container.acme_commands.run_due(limit=10) == 0
    later = expires - timedelta(days=1)
    await asyncio.gather(container.acme_commands.run_due(limit=10, at=later),
                         container.acme_commands.run_due(limit=10, at=later))
    orders = (await get(client, ORDERS, admin))["orders"]
    assert len(orders) == 2
    renewal = next(o for o in orders if o["id"] != created["id"])
    assert renewal["renewal_of"] == first["certificate_id"]
    done = await until_ended(client, admin, renewal["id"])
    assert done["status"] == "valid", done
    rows = await pool.fetch("SELECT certificate_id, renewal_of, renewed_by, source FROM scaivault_pki_certificates "
                            "ORDER BY issued_at")
    assert [(r["renewal_of"], r["renewed_by"], r["source"]) for r in rows] == [
        (None, done["certificate_id"], "acme"), (first["certificate_id"], None, "acme")]
    secret = await get(client, "/v1/secrets/certificates/renew_acme_test", reader(container))
    assert secret["version"] == 2
    assert certificate["id"] == first["certificate_id"]
    await caught_up(container)
    types = [row["event_type"] for row in await pool.fetch(
        "SELECT event_type FROM scaivault_event_feed WHERE event_type LIKE 'certificate.%' ORDER BY position")]
    assert "certificate.renewed" in types, types


async def test_the_egress_guard_applies_to_the_acme_server(
    database_url: str, tmp_path: Path, pebble: Pebble, pool: asyncpg.Pool
) -> None:
    """Without the operator's allow list, a CA on loopback is refused before any connection (400 invalid_config,
    the guard's reason in the operator's log only), and nothing is stored."""
    guarded = await build_container(Settings(
        database_url=database_url, data_dir=tmp_path / "guarded", rate_limits=GENEROUS_RATE_LIMITS,
    ))
    try:
        await guarded.tenancy_commands.register_tenant(PARTNER, TENANT)
        async with serving(guarded, pebble) as client:
            response = await client.post(ACCOUNTS, headers=pki_admin(guarded), json={
                "name": "pebble", "provider": "custom", "directory_url": pebble.directory_url,
                "ca_bundle": pebble.ca_bundle,
            })
            error = await error_of(response, 400, "invalid_config")
            assert "127.0.0.1" not in error["message"]
            assert error["details"]["reason"] == "egress_refused"
    finally:
        await guarded.close()
    assert await pool.fetchval("SELECT count(*) FROM scaivault_acme_accounts") == 0


async def test_two_servers_never_drive_the_same_order(
    client: TestClient, container: Container, pebble: Pebble, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A second server process on the same database runs its own order worker: each order is driven by one of them
    (one CA order, one presentation per name), and every order completes."""
    second = await build_container(settings.model_copy(update={"acme_tls_alpn_address": None}))
    try:
        async with second.running_background():
            admin = pki_admin(container)
            account = await register(client, admin, pebble)
            created = [await order(client, admin, account["id"], f"n{i}.acme.test", challenge_type="http-01")
                       for i in range(4)]
            second.acme_worker.wake()
            for each in created:
                assert (await until_ended(client, admin, each["id"]))["status"] == "valid"
    finally:
        await second.close()
    for each in created:
        topics = [row["topic"].rsplit(".", 1)[-1] for row in await pool.fetch(
            "SELECT topic FROM scaivault_events WHERE originator_id = (SELECT stream_id FROM scaivault_acme_orders "
            "WHERE order_id = $1) ORDER BY originator_version", each["id"])]
        assert topics.count("ChallengePresented") == 1 and topics.count("Completed") == 1, topics
        created_steps = await pool.fetchval(
            """SELECT count(*) FROM scaivault_events WHERE originator_id = (SELECT stream_id FROM
                   scaivault_acme_orders WHERE order_id = $1) AND topic LIKE '%Stepped'
                 AND convert_from(state, 'UTF8')::jsonb->>'step' = 'order_created'""", each["id"])
        assert created_steps == 1
