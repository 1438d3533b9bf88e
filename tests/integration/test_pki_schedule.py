"""The PKI's scheduled work on the real database: certificates under an ``auto_renew`` role are renewed once (same
key, new serial, ``certificate.renewed``), expiry is announced once (``certificate.expiring``), CRLs are re-signed
before their next update, and two schedulers never take a step twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509

from commands.actor import Actor
from commands.pki import LeafRequest, NewCa, PkiCommands, PublicationUrls
from projections.pki.lookup import PostgresPkiLookup
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.clock import utcnow
from scaivault.config import Settings
from scaivault.crypto.ca_keys import CaKeys
from tests.integration.fanout_runs import run_fan_out
from tests.integration.test_fanout import CollectingSink, wants

ADMIN = Actor.of(Caller(Principal(
    identity_id="user:admin@x.example", identity_type="user", display_name=None, tenant_id="tnt_a",
    partner_id="ptn_a", scopes=frozenset({"pki:admin", "pki:issue"}), roles=frozenset({"tenant_admin"}), groups=(),
    mfa_verified_at=None, expires_at=None, issued_at=None, token_kind="jwt", token_id="t1",
), "tnt_a", "ptn_a"), request_id="req_pki")


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_a")
    try:
        yield container
    finally:
        await container.close()


def commands_at(container: Container, clock: Callable[[], datetime]) -> PkiCommands:
    """The container's PKI commands, seeing ``clock`` as the time (a scheduler running later)."""
    return PkiCommands(container.runner, PostgresPkiLookup(), container.keyring, CaKeys(container.keyring),
                       PublicationUrls("https://vault.example"), clock=clock)


async def hierarchy(container: Container, **role: object) -> None:
    commands = container.pki_commands
    ca = await commands.create_ca(NewCa(name="root", common_name="Root", ca_type="root", key_type="ec"), ADMIN)
    await commands.create_role("svc", ca.ca_id, {"allowed_domains": ["*.svc.local"], **role}, ADMIN)


async def test_auto_renewal_reissues_the_same_key_once_and_tells_receivers(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await wants(pool, "tnt_a", ["certificate.*"])
    await hierarchy(container, auto_renew=True, renew_before="2d", ttl="7d")
    issued = await container.pki_commands.issue("svc", LeafRequest(common_name="billing.svc.local"), ADMIN)
    start = utcnow()
    early = commands_at(container, lambda: start + timedelta(days=4))
    await early.run_due(limit=100)  # re-signs the CRL (due after 2 of its 3 days); renewal is due 2 days before expiry
    assert await pool.fetchval("SELECT count(*) FROM scaivault_pki_certificates") == 1
    later = commands_at(container, lambda: start + timedelta(days=5, hours=1))
    one, two = await asyncio.gather(later.run_due(limit=100), later.run_due(limit=100))  # two schedulers
    assert one + two >= 1

    rows = await pool.fetch("SELECT certificate_id, renewal_of, renewed_by, certificate_pem, source "
                            "FROM scaivault_pki_certificates ORDER BY issued_at")
    assert len(rows) == 2  # renewed exactly once
    old, new = rows
    assert old["renewed_by"] == new["certificate_id"] and new["renewal_of"] == issued.certificate_id
    assert new["source"] == "renewal"
    old_cert = x509.load_pem_x509_certificate(old["certificate_pem"].encode())
    new_cert = x509.load_pem_x509_certificate(new["certificate_pem"].encode())
    assert old_cert.public_key() == new_cert.public_key() and old_cert.serial_number != new_cert.serial_number
    assert new_cert.not_valid_after_utc - new_cert.not_valid_before_utc == timedelta(days=7, seconds=60)
    assert await later.run_due(limit=100) == 0  # nothing left: the old one is neither renewed nor warned again

    sink = CollectingSink()
    await run_fan_out(container, database_url, [sink], seen=2)
    assert [e.event_type for e in sink.entries] == ["certificate.issued", "certificate.renewed"]
    assert sink.entries[1].envelope["data"]["renewal_of"] == issued.certificate_id
    assert "path" not in sink.entries[0].envelope or sink.entries[0].envelope["path"] is None


async def test_expiry_is_announced_once(container: Container, pool: asyncpg.Pool, database_url: str) -> None:
    await wants(pool, "tnt_a", ["certificate.expiring"])
    await hierarchy(container, ttl="30d")
    issued = await container.pki_commands.issue("svc", LeafRequest(common_name="api.svc.local"), ADMIN)
    start = utcnow()
    await commands_at(container, lambda: start + timedelta(days=22)).run_due(limit=100)
    later = commands_at(container, lambda: start + timedelta(days=23, hours=1))
    await later.run_due(limit=100)
    assert await later.run_due(limit=100) == 0
    sink = CollectingSink()
    await run_fan_out(container, database_url, [sink], seen=1)
    (entry,) = sink.entries
    assert entry.event_type == "certificate.expiring"
    assert entry.envelope["data"]["certificate_id"] == issued.certificate_id
    assert entry.envelope["data"]["days_remaining"] == 6


async def test_a_renewal_the_role_no_longer_allows_fails_once_and_the_warning_still_comes(
    container: Container, pool: asyncpg.Pool
) -> None:
    await hierarchy(container, auto_renew=True, ttl="7d")
    await container.pki_commands.issue("svc", LeafRequest(common_name="old.svc.local"), ADMIN)
    await container.pki_commands.update_role("svc", None, {"allowed_domains": ["*.other.local"]}, ADMIN)
    start = utcnow()
    later = commands_at(container, lambda: start + timedelta(days=6, hours=12))
    assert await later.run_due(limit=100) >= 1
    assert await pool.fetchval("SELECT count(*) FROM scaivault_pki_certificates") == 1
    topics = [r["topic"] for r in await pool.fetch("SELECT topic FROM scaivault_events ORDER BY notification_id")]
    assert sum(t.endswith("Certificate.RenewalFailed") for t in topics) == 1
    assert sum(t.endswith("Certificate.ExpiryWarned") for t in topics) == 1


async def test_crls_are_resigned_before_their_next_update(container: Container, pool: asyncpg.Pool) -> None:
    await hierarchy(container)
    first = await pool.fetchrow("SELECT crl_number, next_update FROM scaivault_pki_crls")
    start = utcnow()
    assert await commands_at(container, lambda: start + timedelta(days=1)).run_due(limit=100) == 0
    later = commands_at(container, lambda: start + timedelta(days=2, hours=1))
    assert await later.run_due(limit=100) == 1
    second = await pool.fetchrow("SELECT crl_number, next_update FROM scaivault_pki_crls")
    assert second["crl_number"] > first["crl_number"] and second["next_update"] > first["next_update"]
