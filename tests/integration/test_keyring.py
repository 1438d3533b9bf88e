"""The key hierarchy in PostgreSQL: round trips, AAD binding, crypto-shredding, root rotation, nothing in the clear."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

import asyncpg
import pytest

from scaivault.crypto import (
    DecryptionFailed,
    KeyDestroyed,
    KeyNotFound,
    KeyRing,
    LocalRootKeyProvider,
    open_sealed,
    seal,
)
from scaivault.crypto.keyring import issuer_key_aad

PARTNER = "ptn_acme"
TENANT = "tnt_acme_prod"
OTHER_TENANT = "tnt_acme_dev"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def keyring(data_dir: Path) -> KeyRing:
    return KeyRing(LocalRootKeyProvider(data_dir))


async def provision(conn: asyncpg.Connection, keyring: KeyRing, *tenants: str, partner: str = PARTNER) -> None:
    async with conn.transaction():
        await keyring.ensure_partner_key(conn, partner)
        for tenant in tenants:
            await keyring.ensure_tenant_key(conn, partner, tenant)


async def test_hierarchy_round_trip(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
        await provision(conn, keyring, TENANT)  # idempotent
        assert await conn.fetchval("SELECT count(*) FROM scaivault_partner_keys") == 1
        assert await conn.fetchval("SELECT count(*) FROM scaivault_tenant_keys") == 1

        async with conn.transaction():
            tenant_dk = await keyring.new_data_key(conn, TENANT)
            partner_dk = await keyring.new_data_key(conn, PARTNER)  # partner-owned secret: no tenant level
        assert tenant_dk.id.startswith("dk_") and len(tenant_dk.id) == 29
        ciphertext = seal(tenant_dk.key, b"s3cr3t value", b"secret-version-1")

        assert await keyring.data_key(conn, tenant_dk.id, TENANT) == tenant_dk.key
        assert await keyring.data_key(conn, partner_dk.id, PARTNER) == partner_dk.key

        fresh = KeyRing(LocalRootKeyProvider(data_dir))  # another process: nothing cached
        key = await fresh.data_key(conn, tenant_dk.id, TENANT)
        assert open_sealed(key, ciphertext, b"secret-version-1") == b"s3cr3t value"
        wrapped = await conn.fetchval("SELECT wrapped FROM scaivault_data_keys WHERE id = $1", partner_dk.id)
        assert await fresh.unwrap_data_key(PARTNER, partner_dk.id, wrapped, conn=conn) == partner_dk.key
        assert await fresh.unwrap_data_key(PARTNER, partner_dk.id, wrapped) == partner_dk.key  # now cached
        await fresh.check(conn)


async def test_unwrap_without_connection(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
        dk = await keyring.new_data_key(conn, TENANT)
        wrapped = await conn.fetchval("SELECT wrapped FROM scaivault_data_keys WHERE id = $1", dk.id)
    cold = KeyRing(LocalRootKeyProvider(data_dir))
    with pytest.raises(KeyNotFound):
        await cold.unwrap_data_key(TENANT, dk.id, wrapped)
    assert await keyring.unwrap_data_key(TENANT, dk.id, wrapped) == dk.key
    with_pool = KeyRing(LocalRootKeyProvider(data_dir), pool=pool)  # a cold cache filled through the pool
    assert await with_pool.unwrap_data_key(TENANT, dk.id, wrapped) == dk.key
    with pytest.raises(KeyDestroyed):
        await with_pool.unwrap_data_key("tnt_gone", dk.id, wrapped)  # the owner's key no longer exists


async def test_local_key_file_is_private(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
    assert stat.S_IMODE((data_dir / "root-keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


async def test_provisioning_rules(pool: asyncpg.Pool, keyring: KeyRing) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(KeyNotFound):
            await keyring.ensure_tenant_key(conn, PARTNER, TENANT)  # the partner key comes first
        with pytest.raises(KeyNotFound):
            await keyring.new_data_key(conn, TENANT)
        await provision(conn, keyring, TENANT)
        await keyring.ensure_partner_key(conn, "ptn_other")
        with pytest.raises(ValueError):
            await keyring.ensure_tenant_key(conn, "ptn_other", TENANT)  # a tenant has one partner
        for bad in ("acme", "usr_x", ""):
            with pytest.raises(ValueError):
                await keyring.new_data_key(conn, bad)


async def test_concurrent_provisioning_agrees_on_one_key(pool: asyncpg.Pool, data_dir: Path) -> None:
    rings = [KeyRing(LocalRootKeyProvider(data_dir)) for _ in range(4)]
    await rings[0].root.check()  # create the key file once (file creation is covered by its own lock anyway)

    async def provision_in(ring: KeyRing) -> bytes:
        async with pool.acquire() as conn:
            await provision(conn, ring, TENANT)
            dk = await ring.new_data_key(conn, TENANT)
            return dk.key if await rings[0].data_key(conn, dk.id, TENANT) == dk.key else b""

    results = await asyncio.gather(*(provision_in(ring) for ring in rings))
    assert all(results)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scaivault_tenant_keys") == 1


async def test_rolled_back_key_is_never_used_for_writes(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await provision(conn, keyring, TENANT)
        await keyring.new_data_key(conn, TENANT)  # caches the (uncommitted) tenant key
        await tx.rollback()

        other = KeyRing(LocalRootKeyProvider(data_dir))
        await provision(conn, other, TENANT)  # a different key is committed
        dk = await keyring.new_data_key(conn, TENANT)  # must notice the cached key is not the committed one
        assert await KeyRing(LocalRootKeyProvider(data_dir)).data_key(conn, dk.id, TENANT) == dk.key
        assert await keyring.data_key(conn, dk.id, TENANT) == dk.key


async def test_swapped_tenant_keys_fail_to_unwrap(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT, OTHER_TENANT)
        dk = await keyring.new_data_key(conn, TENANT)
        await conn.execute(
            """UPDATE scaivault_tenant_keys t SET wrapped = o.wrapped
               FROM scaivault_tenant_keys o WHERE t.tenant_id = $1 AND o.tenant_id = $2""",
            TENANT,
            OTHER_TENANT,
        )
        with pytest.raises(DecryptionFailed):
            await KeyRing(LocalRootKeyProvider(data_dir)).data_key(conn, dk.id, TENANT)


async def test_swapped_or_moved_data_keys_fail_to_unwrap(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT, OTHER_TENANT)
        a = await keyring.new_data_key(conn, TENANT)
        b = await keyring.new_data_key(conn, TENANT)
        c = await keyring.new_data_key(conn, OTHER_TENANT)
        wrapped = {row["id"]: row["wrapped"] for row in await conn.fetch("SELECT id, wrapped FROM scaivault_data_keys")}
        await conn.execute("UPDATE scaivault_data_keys SET wrapped = $2 WHERE id = $1", a.id, wrapped[b.id])
        with pytest.raises(DecryptionFailed):
            await keyring.data_key(conn, a.id, TENANT)
        # A data key relabelled as another tenant's is opened with that tenant's key and AAD: refused.
        await conn.execute("UPDATE scaivault_data_keys SET owner = $2 WHERE id = $1", c.id, TENANT)
        with pytest.raises(DecryptionFailed):
            await KeyRing(LocalRootKeyProvider(data_dir)).data_key(conn, c.id, TENANT)


async def test_swapped_partner_keys_fail_to_unwrap(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
        await provision(conn, keyring, "tnt_globex_prod", partner="ptn_globex")
        dk = await keyring.new_data_key(conn, TENANT)
        await conn.execute(
            """UPDATE scaivault_partner_keys t SET wrapped = o.wrapped, root_key_id = o.root_key_id
               FROM scaivault_partner_keys o WHERE t.partner_id = $1 AND o.partner_id = $2""",
            PARTNER,
            "ptn_globex",
        )
        with pytest.raises(DecryptionFailed):
            await KeyRing(LocalRootKeyProvider(data_dir)).data_key(conn, dk.id, TENANT)


async def test_destroyed_data_key(pool: asyncpg.Pool, keyring: KeyRing) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
        doomed = await keyring.new_data_key(conn, TENANT)
        kept = await keyring.new_data_key(conn, TENANT)
        await keyring.destroy_data_keys(conn, [doomed.id])
        await keyring.destroy_data_keys(conn, [])
        with pytest.raises(KeyDestroyed) as info:
            await keyring.data_key(conn, doomed.id, TENANT)
        assert info.value.code == "version_not_found"
        with pytest.raises(KeyDestroyed):
            await keyring.data_key(conn, "dk_00000000000000000000000000", TENANT)
        with pytest.raises(KeyDestroyed):
            await keyring.data_key(conn, kept.id, OTHER_TENANT)  # wrong owner: not found
        assert await keyring.data_key(conn, kept.id, TENANT) == kept.key


async def test_root_rotation_rewraps_partner_keys_only(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT)
        await provision(conn, keyring, "tnt_globex_prod", partner="ptn_globex")
        tenant_dk = await keyring.new_data_key(conn, TENANT)
        partner_dk = await keyring.new_data_key(conn, "ptn_globex")
        before = {r["partner_id"]: dict(r) for r in await conn.fetch("SELECT * FROM scaivault_partner_keys")}
        tenants_before = await conn.fetch("SELECT tenant_id, wrapped FROM scaivault_tenant_keys ORDER BY tenant_id")
        data_before = await conn.fetch("SELECT id, wrapped FROM scaivault_data_keys ORDER BY id")

        assert await keyring.rotate_root_key(conn) == 2

        after = {r["partner_id"]: dict(r) for r in await conn.fetch("SELECT * FROM scaivault_partner_keys")}
        for partner, row in after.items():
            assert row["wrapped"] != before[partner]["wrapped"]
            assert row["root_key_id"] != before[partner]["root_key_id"]
            assert row["rewrapped_at"] is not None
        assert len({row["root_key_id"] for row in after.values()}) == 1
        file = json.loads((data_dir / "root-keys.json").read_text())
        assert file["active"] == next(iter(after.values()))["root_key_id"] and len(file["keys"]) == 2
        assert (
            await conn.fetch("SELECT tenant_id, wrapped FROM scaivault_tenant_keys ORDER BY tenant_id")
            == tenants_before
        )
        assert await conn.fetch("SELECT id, wrapped FROM scaivault_data_keys ORDER BY id") == data_before

        fresh = KeyRing(LocalRootKeyProvider(data_dir))  # no cache: walks the chain from the new root key
        assert await fresh.data_key(conn, tenant_dk.id, TENANT) == tenant_dk.key
        assert await fresh.data_key(conn, partner_dk.id, "ptn_globex") == partner_dk.key
        new_dk = await fresh.new_data_key(conn, TENANT)
        assert await keyring.data_key(conn, new_dk.id, TENANT) == new_dk.key


async def test_no_key_material_in_any_table(pool: asyncpg.Pool, keyring: KeyRing, data_dir: Path) -> None:
    from scaivault.auth.issuer import BuiltinIssuer

    async with pool.acquire() as conn:
        await provision(conn, keyring, TENANT, OTHER_TENANT)
        data_keys = [await keyring.new_data_key(conn, owner) for owner in (TENANT, OTHER_TENANT, PARTNER)]
        issuer = await BuiltinIssuer.load(conn, keyring.root, issuer="https://vault.test/issuer", audience="scaivault")
        await keyring.rotate_root_key(conn)

        secrets_: list[bytes] = [dk.key for dk in data_keys]
        secrets_ += [await keyring.owner_key(conn, owner) for owner in (PARTNER, TENANT, OTHER_TENANT)]
        root_file = json.loads((data_dir / "root-keys.json").read_text())
        secrets_ += [base64.b64decode(value) for value in root_file["keys"].values()]
        issuer_key = await conn.fetchrow(
            "SELECT root_key_id, wrapped_private_key FROM scaivault_issuer_keys WHERE kid = $1", issuer.kid
        )
        secrets_.append(await keyring.root.unwrap(
            issuer_key["root_key_id"], bytes(issuer_key["wrapped_private_key"]), issuer_key_aad(issuer.kid)
        ))
        assert len(secrets_) == 3 + 1 + 2 + 2 + 1 and all(len(s) == 32 for s in secrets_)

        needles_bytes = secrets_
        needles_text = [
            form
            for s in secrets_
            for form in (
                s.hex(),
                base64.b64encode(s).decode().rstrip("="),
                base64.urlsafe_b64encode(s).decode().rstrip("="),
            )
        ]
        columns = await conn.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = current_schema() AND data_type IN ('bytea', 'text', 'jsonb', 'json', 'ARRAY',
                     'character varying')"""
        )
        scanned = 0
        for column in columns:
            name, table = column["column_name"], column["table_name"]
            is_bytea = column["data_type"] == "bytea"
            rows = await conn.fetch(f'SELECT "{name}"{"" if is_bytea else "::text"} AS value FROM "{table}"')
            for row in rows:
                scanned += 1
                if is_bytea:
                    raw = bytes(row["value"] or b"")
                    assert not any(needle in raw for needle in needles_bytes), column
                    assert not any(n.encode() in raw for n in needles_text), column
                else:
                    text = row["value"] or ""
                    assert not any(needle in text for needle in needles_text), column
        assert scanned > 10
