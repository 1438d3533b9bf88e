"""The key hierarchy kept in PostgreSQL: partner keys wrapped by the root key, tenant keys by their partner key,
data keys (one per secret version) by their owner's key.

Every wrapped key is bound by AAD to its place — partner key to the partner id (and, inside the root provider, the
root key id), tenant key to (partner id, tenant id), data key to (owner, data key id) — so a row copied or swapped in
the database fails to open (DecryptionFailed) rather than yielding another key.

Unwrapped partner and tenant keys are cached in a bounded LRU, so a read usually costs one local AES-GCM open of the
data key. Data keys are never cached: destroying one (crypto-shredding) takes effect at once.

Cache safety: a cached owner key may come from a row that its transaction later rolled back. Reads tolerate that
(AES-GCM refuses the wrong key, and a failed open with a cached key is retried from the database), and writes never
trust a cache entry whose wrapped blob differs from the row they just read, so nothing is ever sealed under a key
that is not the committed one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from scaivault.crypto.aead import DecryptionFailed, context, generate_key, open_sealed, seal
from scaivault.crypto.root_keys import RootKeyProvider
from scaivault.database import Queryable
from scaivault.domain.errors import ScaiVaultError, VersionNotFound
from scaivault.ids import new_id

PARTNER_PREFIX = "ptn_"
TENANT_PREFIX = "tnt_"


class KeyDestroyed(VersionNotFound):
    """The data key is gone (crypto-shredded, or its owner's key is gone): the ciphertext can never be read again."""

    default_message = "The encryption key of that version was destroyed"


class KeyNotFound(ScaiVaultError):
    """A key that must exist before this call does not (e.g. a tenant key before ``ensure_tenant_key``)."""

    code = "internal_error"
    default_message = "A required encryption key does not exist"


@dataclass(frozen=True, slots=True)
class DataKey:
    id: str
    key: bytes = field(repr=False)


def partner_key_aad(partner_id: str) -> bytes:
    return context("partner-key", partner_id)


def tenant_key_aad(partner_id: str, tenant_id: str) -> bytes:
    return context("tenant-key", partner_id, tenant_id)


def data_key_aad(owner: str, data_key_id: str) -> bytes:
    return context("data-key", owner, data_key_id)


def system_key_aad(name: str) -> bytes:
    return context("system-key", name)


def issuer_key_aad(kid: str) -> bytes:
    """AAD of the built-in token issuer's private key, wrapped directly by the root key."""
    return context("issuer-key", kid)


def _check_partner(partner_id: str) -> None:
    if not isinstance(partner_id, str) or not partner_id.startswith(PARTNER_PREFIX) or len(partner_id) <= 4:
        raise ValueError("a partner id starts with 'ptn_'")


def _check_tenant(tenant_id: str) -> None:
    if not isinstance(tenant_id, str) or not tenant_id.startswith(TENANT_PREFIX) or len(tenant_id) <= 4:
        raise ValueError("a tenant id starts with 'tnt_'")


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner.startswith((PARTNER_PREFIX, TENANT_PREFIX)) or len(owner) <= 4:
        raise ValueError("a key owner is a tenant id ('tnt_...') or a partner id ('ptn_...')")


class _Lru:
    """Bounded LRU of unwrapped keys: owner id -> (wrapped blob it came from, key)."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._items: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    def get(self, owner: str, wrapped: bytes | None = None) -> bytes | None:
        item = self._items.get(owner)
        if item is None or (wrapped is not None and item[0] != wrapped):
            return None
        self._items.move_to_end(owner)
        return item[1]

    def put(self, owner: str, wrapped: bytes, key: bytes) -> None:
        self._items[owner] = (wrapped, key)
        self._items.move_to_end(owner)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def entry(self, owner: str) -> tuple[bytes, bytes] | None:
        """(wrapped blob, key) as cached, without checking it against the database."""
        return self._items.get(owner)

    def pop(self, owner: str) -> None:
        self._items.pop(owner, None)

    def __len__(self) -> int:
        return len(self._items)


# One query fetches an owner's wrapped key and its partner's, for a tenant or a partner owner.
_OWNER_CHAIN = """
    SELECT p.partner_id, p.root_key_id, p.wrapped AS partner_wrapped, t.wrapped AS tenant_wrapped
    FROM (SELECT $1::text AS owner) o
    LEFT JOIN scaivault_tenant_keys t ON t.tenant_id = o.owner
    JOIN scaivault_partner_keys p ON p.partner_id = COALESCE(t.partner_id, o.owner)
"""

_INSERT_DATA_KEY_IF_OWNER_KEY_IS = """
    INSERT INTO scaivault_data_keys (id, owner, wrapped)
    SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM scaivault_tenant_keys WHERE tenant_id = $2 AND wrapped = $4)
    RETURNING true
"""
_INSERT_DATA_KEY_IF_PARTNER_KEY_IS = """
    INSERT INTO scaivault_data_keys (id, owner, wrapped)
    SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM scaivault_partner_keys WHERE partner_id = $2 AND wrapped = $4)
    RETURNING true
"""


class KeyRing:
    def __init__(self, root: RootKeyProvider, *, cache_size: int = 10_000, pool: asyncpg.Pool | None = None) -> None:
        """``pool`` (optional) lets :meth:`unwrap_data_key` fill a cold cache when its caller passes no connection."""
        self.root = root
        self.pool = pool
        self._partner_keys = _Lru(cache_size)
        self._tenant_keys = _Lru(cache_size)
        self._system_keys: dict[str, bytes] = {}  # a system key never changes (root rotation only re-wraps it)

    def __repr__(self) -> str:
        return f"<KeyRing root={self.root.name} cached={len(self._partner_keys) + len(self._tenant_keys)}>"

    # --- provisioning -------------------------------------------------------------------------------------------

    async def ensure_partner_key(self, conn: asyncpg.Connection, partner_id: str) -> None:
        _check_partner(partner_id)
        if await conn.fetchval("SELECT 1 FROM scaivault_partner_keys WHERE partner_id = $1", partner_id):
            return
        key = generate_key()
        root_key_id, wrapped = await self.root.wrap(key, partner_key_aad(partner_id))
        # A racing process may win; ours is then discarded. Not cached: the caller's transaction may still roll back.
        await conn.execute(
            """INSERT INTO scaivault_partner_keys (partner_id, root_key_id, root_provider, wrapped)
               VALUES ($1, $2, $3, $4) ON CONFLICT (partner_id) DO NOTHING""",
            partner_id,
            root_key_id,
            self.root.name,
            wrapped,
        )

    async def ensure_tenant_key(self, conn: asyncpg.Connection, partner_id: str, tenant_id: str) -> None:
        _check_partner(partner_id)
        _check_tenant(tenant_id)
        existing = await conn.fetchval("SELECT partner_id FROM scaivault_tenant_keys WHERE tenant_id = $1", tenant_id)
        if existing is None:
            partner_key = await self.owner_key(conn, partner_id)
            await conn.execute(
                """INSERT INTO scaivault_tenant_keys (tenant_id, partner_id, wrapped)
                   VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING""",
                tenant_id,
                partner_id,
                seal(partner_key, generate_key(), tenant_key_aad(partner_id, tenant_id)),
            )
            existing = await conn.fetchval(
                "SELECT partner_id FROM scaivault_tenant_keys WHERE tenant_id = $1", tenant_id
            )
        if existing != partner_id:
            raise ValueError("that tenant's key belongs to another partner")

    # --- data keys ----------------------------------------------------------------------------------------------

    async def new_data_key(self, conn: asyncpg.Connection, owner: str) -> DataKey:
        """A fresh data key for one secret version, its wrapped form inserted through ``conn`` (the caller's
        transaction). The owner's key must exist (``ensure_partner_key`` / ``ensure_tenant_key``)."""
        _check_owner(owner)
        data_key = DataKey(new_id("dk_"), generate_key())
        aad = data_key_aad(owner, data_key.id)
        tenant_owned = owner.startswith(TENANT_PREFIX)
        cached = (self._tenant_keys if tenant_owned else self._partner_keys).entry(owner)
        if cached is not None:
            # One round trip: insert only if the cached key is still the stored one (it always is, unless it came
            # from a transaction that rolled back); the database compares, so a stale cache never seals a value.
            inserted = await conn.fetchval(
                _INSERT_DATA_KEY_IF_OWNER_KEY_IS if tenant_owned else _INSERT_DATA_KEY_IF_PARTNER_KEY_IS,
                data_key.id,
                owner,
                seal(cached[1], data_key.key, aad),
                cached[0],
            )
            if inserted:
                return data_key
        owner_key = await self.owner_key(conn, owner)
        await conn.execute(
            "INSERT INTO scaivault_data_keys (id, owner, wrapped) VALUES ($1, $2, $3)",
            data_key.id,
            owner,
            seal(owner_key, data_key.key, aad),
        )
        return data_key

    async def data_key(self, conn: asyncpg.Connection, data_key_id: str, owner: str) -> bytes:
        _check_owner(owner)
        wrapped = await conn.fetchval(
            "SELECT wrapped FROM scaivault_data_keys WHERE id = $1 AND owner = $2", data_key_id, owner
        )
        if wrapped is None:
            raise KeyDestroyed()
        return await self.unwrap_data_key(owner, data_key_id, wrapped, conn=conn)

    async def unwrap_data_key(
        self, owner: str, data_key_id: str, wrapped: bytes, *, conn: asyncpg.Connection | None = None
    ) -> bytes:
        """Open a wrapped data key a reader fetched itself (e.g. joined with the secret version).

        Uses the cached owner key. On a cold cache (or a stale entry) the owner's key is read through ``conn`` or,
        without one, through the KeyRing's ``pool``; with neither, raises KeyNotFound. An owner whose key is gone
        raises KeyDestroyed.
        """
        _check_owner(owner)
        aad = data_key_aad(owner, data_key_id)
        source = conn if conn is not None else self.pool
        cache = self._tenant_keys if owner.startswith(TENANT_PREFIX) else self._partner_keys
        cached = cache.get(owner)
        if cached is not None:
            try:
                return open_sealed(cached, wrapped, aad)
            except DecryptionFailed:
                if source is None:
                    raise
                cache.pop(owner)  # possibly stale (from a rolled-back row): retry from the database
        if source is None:
            raise KeyNotFound("The owner's key is not cached: pass a connection, or give the KeyRing a pool")
        try:
            owner_key = await self.owner_key(source, owner)  # one query: works on a pool as on a connection
        except KeyNotFound:
            raise KeyDestroyed() from None
        return open_sealed(owner_key, wrapped, aad)

    async def destroy_data_keys(self, conn: asyncpg.Connection, ids: Sequence[str]) -> None:
        """Crypto-shredding: delete the wrapped keys; their ciphertexts can never be opened again."""
        if ids:
            await conn.execute("DELETE FROM scaivault_data_keys WHERE id = ANY($1::text[])", list(ids))

    # --- root key -----------------------------------------------------------------------------------------------

    async def rotate_root_key(self, conn: asyncpg.Connection) -> int:
        """Make a new root key and re-wrap every partner key (and the built-in issuer's signing keys) under it, in
        one transaction. Tenant keys, data keys and secret ciphertext are not rewritten. Returns how many partner
        keys were re-wrapped."""
        await self.root.rotate()
        async with conn.transaction():
            partners = await conn.fetch(
                "SELECT partner_id, root_key_id, wrapped FROM scaivault_partner_keys ORDER BY partner_id FOR UPDATE"
            )
            for row in partners:
                aad = partner_key_aad(row["partner_id"])
                key = await self.root.unwrap(row["root_key_id"], row["wrapped"], aad)
                root_key_id, wrapped = await self.root.wrap(key, aad)
                await conn.execute(
                    """UPDATE scaivault_partner_keys SET root_key_id = $2, root_provider = $3, wrapped = $4,
                       rewrapped_at = now() WHERE partner_id = $1""",
                    row["partner_id"],
                    root_key_id,
                    self.root.name,
                    wrapped,
                )
            await self._rewrap(conn, "scaivault_issuer_keys", "kid", "wrapped_private_key", issuer_key_aad)
            await self._rewrap(conn, "scaivault_system_keys", "name", "wrapped", system_key_aad)
        return len(partners)

    async def _rewrap(
        self, conn: asyncpg.Connection, table: str, key_column: str, blob_column: str, aad: Callable[[str], bytes]
    ) -> None:
        """Re-wrap every key of ``table`` (wrapped directly by the root key) under the current root key."""
        rows = await conn.fetch(
            f"SELECT {key_column} AS id, root_key_id, {blob_column} AS blob FROM {table} ORDER BY 1 FOR UPDATE"
        )
        for row in rows:
            key = await self.root.unwrap(row["root_key_id"], bytes(row["blob"]), aad(row["id"]))
            root_key_id, wrapped = await self.root.wrap(key, aad(row["id"]))
            await conn.execute(
                f"UPDATE {table} SET root_key_id = $2, {blob_column} = $3 WHERE {key_column} = $1",
                row["id"],
                root_key_id,
                wrapped,
            )

    async def system_key(self, conn: Queryable, name: str) -> bytes:
        """A 256-bit key of the server's own (e.g. the audit chain's MAC key), created on first use, wrapped by the
        root key. Two processes creating it at once agree on the first one stored."""
        known = self._system_keys.get(name)
        if known is not None:
            return known
        aad = system_key_aad(name)
        row = await conn.fetchrow("SELECT root_key_id, wrapped FROM scaivault_system_keys WHERE name = $1", name)
        if row is None:
            root_key_id, wrapped = await self.root.wrap(generate_key(), aad)
            await conn.execute(
                "INSERT INTO scaivault_system_keys (name, root_key_id, wrapped) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                root_key_id,
                wrapped,
            )
            row = await conn.fetchrow("SELECT root_key_id, wrapped FROM scaivault_system_keys WHERE name = $1", name)
        key = await self.root.unwrap(row["root_key_id"], bytes(row["wrapped"]), aad)
        self._system_keys[name] = key
        return key

    async def check(self, conn: asyncpg.Connection) -> None:
        """Readiness: the root key provider answers a round trip (and the key tables are reachable)."""
        await conn.fetchval("SELECT count(*) FROM scaivault_partner_keys WHERE false")
        await self.root.check()

    # --- owner keys ---------------------------------------------------------------------------------------------

    async def owner_key(self, conn: Queryable, owner: str) -> bytes:
        """The unwrapped key of a tenant or partner, as committed (or as written by ``conn``'s transaction); cached.
        Only the key ring itself needs it to wrap data keys; it is public for checks that no key is stored in the
        clear."""
        row = await conn.fetchrow(_OWNER_CHAIN, owner)
        if row is None or (owner.startswith(TENANT_PREFIX) and row["tenant_wrapped"] is None):
            raise KeyNotFound(f"No encryption key for {owner[:64]}: provision it first")
        partner_id = row["partner_id"]
        partner_wrapped = bytes(row["partner_wrapped"])
        partner_key = self._partner_keys.get(partner_id, partner_wrapped)
        if partner_key is None:
            partner_key = await self.root.unwrap(row["root_key_id"], partner_wrapped, partner_key_aad(partner_id))
            self._partner_keys.put(partner_id, partner_wrapped, partner_key)
        if owner.startswith(PARTNER_PREFIX):
            return partner_key
        tenant_wrapped = bytes(row["tenant_wrapped"])
        tenant_key = self._tenant_keys.get(owner, tenant_wrapped)
        if tenant_key is None:
            tenant_key = open_sealed(partner_key, tenant_wrapped, tenant_key_aad(partner_id, owner))
            self._tenant_keys.put(owner, tenant_wrapped, tenant_key)
        return tenant_key


__all__ = [
    "DataKey",
    "KeyDestroyed",
    "KeyNotFound",
    "KeyRing",
]
