"""Reading secrets: the one place that turns a caller's request into values and metadata.

Every read is authorized here (the caller's policies, through the authorizer, before anything is looked up: a
denied caller learns nothing about whether a path exists), values are opened here (data key unwrapped by the key
ring, value decrypted in memory), and a value read is noted on the request's access record (the stream, for its
last-access time, and the version). The HTTP API and background jobs (audit exports' credentials) read through this
same service, so both are held to the same rules.

Partner secrets (owner a partner, no tenant) keep the spec's own rule instead of policies (docs/policies.md):
readable by every identity of the partner's tenants; the API confines them to the caller's own partner.

Forensic reads (``as_of``) answer from the event history, not the read model. A past *value* (which may be that of a
secret deleted since) needs the ``audit:read`` scope besides ``secrets:read`` and the ``read`` permission (for a
partner secret, a partner admin); past metadata and versions need no more than their live forms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import model_validator

from projections.secrets import history, queries
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.crypto.aead import DecryptionFailed
from scaivault.crypto.aead import context as aead_context
from scaivault.crypto.keyring import KeyDestroyed, KeyRing
from scaivault.crypto.secret_values import open_value
from scaivault.domain.errors import AccessDenied, InternalError, ScaiVaultError, SecretNotFound, VersionNotFound
from scaivault.domain.globs import expand_pattern
from scaivault.domain.paths import parse_path
from scaivault.domain.policies import ListingPlan
from scaivault.domain.secrets import SecretAddress
from scaivault.eventstore.repository import Repository
from scaivault.metrics import Metrics
from scaivault.pagination import CursorState, Page, SealedCursors, page_of

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
# A policy-aware page examines at most this many secrets; when most are hidden, a page may end short (even empty)
# with has_more and a cursor from which the next page goes on.
LIST_SCAN_BUDGET = 10_000
# The path a listing resumes after is sealed in its cursor: when most secrets are hidden from the caller, a page cut
# short by the scan budget resumes after a path the caller may not see, and a readable cursor would name it.
CURSOR_KEY = "list-cursor"
FORENSIC_SCOPE = "audit:read"
Row = Mapping[str, Any]


class ListCursor(CursorState):
    v: Literal[3]
    prefix: str
    after: str

    @model_validator(mode="after")
    def _resumes_in_its_prefix(self) -> ListCursor:
        if not self.after.startswith(self.prefix):
            raise ValueError("a listing resumes after a path under its prefix")
        return self


@dataclass(frozen=True)
class Owner:
    """Whose secrets a listing or batch covers: a tenant's, or (``tenant_id`` None) a partner's."""

    owner: str
    partner_id: str
    tenant_id: str | None

    def address(self, path: str) -> SecretAddress:
        return SecretAddress(owner=self.owner, partner_id=self.partner_id, tenant_id=self.tenant_id, path=path)


@dataclass(frozen=True)
class BatchOptions:
    include_metadata: bool = False
    fail_fast: bool = False
    version: int | None = None
    expand_wildcards: bool = False


class SecretReader:
    def __init__(
        self, pool: asyncpg.Pool, repository: Repository, keyring: KeyRing, authorizer: Authorizer, metrics: Metrics,
        *, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``clock``: what expiry and rotation grace periods are judged by."""
        self._clock = clock
        self._pool = pool
        self._repository = repository
        self._keyring = keyring
        self._authorizer = authorizer
        self._metrics = metrics

    # ---- values ------------------------------------------------------------------------------------------------

    async def read(
        self,
        caller: Caller,
        address: SecretAddress,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        access: AccessRecord | None = None,
    ) -> dict[str, Any]:
        """One secret with its value (the current version, or ``version``; as it was at ``as_of``)."""
        await self._authorize(caller, address, "read")
        if as_of is None:
            with self._metrics.stage["read_model"]:
                row = await queries.secret_value_row(self._pool, address.owner, address.path, version)
        else:
            _require_forensic_right(caller, address)
            row = await history.secret_value_row_as_of(
                self._pool, self._repository, address.owner, address.path, version, as_of
            )
        problem = _not_found_or_deleted(address.path, row) or _missing_version(row, version)
        if problem is None and as_of is None:
            problem = _no_longer_readable(row, self._clock())
        if problem is not None:
            raise problem
        assert row is not None
        document = _secret_document(row, await self._open(row))
        if as_of is not None:
            document["as_of"] = as_of
        self._noted(row, access)
        return document

    async def batch_read(
        self, caller: Caller, owner: Owner, paths: Sequence[str], options: BatchOptions,
        access: AccessRecord | None = None,
    ) -> dict[str, Any]:
        """Many secrets' values; each path authorized and reported on its own (``errors``), unless ``fail_fast``."""
        found: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        readable: list[str] = []
        for raw in dict.fromkeys(paths):  # de-duplicated, order kept
            try:
                path = parse_path(raw)
                await self._authorize(caller, owner.address(path), "read")  # a batch never bypasses access control
                readable.append(path)
            except ScaiVaultError as exc:
                if options.fail_fast:
                    raise
                errors[str(raw)[:512]] = _error_entry(exc)
        rows = {row["path"]: row for row in await queries.secret_value_rows(
            self._pool, owner.owner, readable, options.version
        )}
        for path in readable:
            row = rows.get(path)
            try:
                problem = (_not_found_or_deleted(path, row) or _missing_version(row, options.version)
                           or _no_longer_readable(row, self._clock()))
                if problem is not None:
                    raise problem
                assert row is not None
                data = await self._open(row)
            except ScaiVaultError as exc:
                if options.fail_fast:
                    raise
                errors[path] = _error_entry(exc)
                continue
            item: dict[str, Any] = {"data": data, "version": row["version"], "secret_type": row["secret_type"]}
            if options.include_metadata:
                item.update(
                    metadata=row["metadata"], created_at=row["created_at"], updated_at=row["updated_at"],
                    expires_at=row["version_expires_at"],
                )
            found[path] = item
            self._noted(row, access, version=False)
        if access is not None:
            access.extra.update({"paths": list(found), "errors": len(errors)})
        return {"secrets": found, "errors": errors}

    async def _open(self, row: Row) -> dict[str, Any]:
        owner, path, version = row["owner"], row["path"], row["version"]
        try:
            with self._metrics.stage["decrypt"]:
                key = await self._keyring.unwrap_data_key(
                    owner, row["data_key_id"], row["wrapped_data_key"], conn=self._pool
                )
                data = open_value(key, row["ciphertext"], owner=owner, path=path, version=version)
        except KeyDestroyed:
            raise VersionNotFound("That version was destroyed", path=path, version=version) from None
        except DecryptionFailed:
            # Stored data no longer matches its place: a tampered or swapped row. Never answer with it.
            log.error("integrity: a secret version failed authentication", extra={"path": path, "version": version})
            raise InternalError() from None
        self._metrics.secret_reads.labels(owner, row["secret_type"]).inc()
        return data

    @staticmethod
    def _noted(row: Row, access: AccessRecord | None, *, version: bool = True) -> None:
        """A value read: its stream's last access moves, and its access record says which version it was."""
        if access is not None:
            access.accessed_streams.append(row["stream_id"])
            if version:
                access.extra["version"] = row["version"]

    # ---- metadata ----------------------------------------------------------------------------------------------

    async def metadata(
        self, caller: Caller, address: SecretAddress, *, as_of: datetime | None = None
    ) -> dict[str, Any]:
        await self._authorize(caller, address, "list")
        if as_of is None:
            row: Row | None = await queries.secret_metadata_row(self._pool, address.owner, address.path)
        else:
            row = await history.secret_metadata_row_as_of(
                self._pool, self._repository, address.owner, address.path, as_of
            )
        if row is None:
            raise SecretNotFound(path=address.path)
        document = queries.metadata_document(row)
        if as_of is not None:
            document["as_of"] = as_of
        return document

    async def versions(
        self, caller: Caller, address: SecretAddress, *, as_of: datetime | None = None
    ) -> dict[str, Any]:
        await self._authorize(caller, address, "list")
        version_rows: Sequence[Row]
        if as_of is None:
            row: Row | None = await queries.secret_metadata_row(self._pool, address.owner, address.path)
            version_rows = await queries.version_rows(self._pool, row["stream_id"]) if row is not None else []
        else:
            found = await history.secret_versions_as_of(
                self._pool, self._repository, address.owner, address.path, as_of
            )
            row, version_rows = found if found is not None else (None, [])
        if row is None:
            raise SecretNotFound(path=address.path)
        document = {
            "path": address.path,
            "current_version": row["current_version"],
            "versions": [
                {
                    "version": v["version"],
                    "created_at": v["created_at"],
                    "created_by": v["created_by"],
                    "expires_at": v["expires_at"],
                    "destroyed": v["destroyed_at"] is not None,
                    "destroyed_at": v["destroyed_at"],
                    "current": v["version"] == row["current_version"],
                    # superseded by a rotation: readable until its grace period ends (docs/rotation.md)
                    "readable_until": v.get("readable_until"),
                }
                for v in version_rows
            ],
            "cursor": None,
            "has_more": False,
        }
        if as_of is not None:
            document["as_of"] = as_of
        return document

    async def batch_metadata(
        self, caller: Caller, owner: Owner, paths: Sequence[str], options: BatchOptions
    ) -> dict[str, Any]:
        """Metadata of many secrets (no values). With ``expand_wildcards``, an entry may be a glob (``*`` one
        segment, ``**`` any number) that expands to the matching paths the caller may list."""
        found: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for raw in dict.fromkeys(paths):
            try:
                if options.expand_wildcards and "*" in raw:
                    prefix, matches = expand_pattern(raw)
                    rows, _ = await self._listed_rows(
                        owner, await self._listing_plan(caller, owner, prefix), prefix=prefix, after=None,
                        limit=MAX_LIST_LIMIT, include_deleted=False,
                    )
                    found.update((row["path"], queries.metadata_document(row)) for row in rows if matches(row["path"]))
                    continue
                path = parse_path(raw)
                await self._authorize(caller, owner.address(path), "list")
                row = await queries.secret_metadata_row(self._pool, owner.owner, path)
                problem = _not_found_or_deleted(path, row)
                if problem is not None:
                    raise problem
                assert row is not None
                found[path] = queries.metadata_document(row)
            except ScaiVaultError as exc:
                if options.fail_fast:
                    raise
                errors[str(raw)[:512]] = _error_entry(exc)
        return {"secrets": found, "errors": errors}

    # ---- listing -----------------------------------------------------------------------------------------------

    async def listing(
        self, caller: Caller, owner: Owner, *, prefix: str, limit: int, cursor: str | None, include_deleted: bool,
        expiring_within: timedelta | None = None,
    ) -> dict[str, Any]:
        """A page of the secrets under ``prefix`` the caller may list, in path order; with ``expiring_within``,
        only those expiring within that time from now (expired ones included: they are listed, not readable)."""
        expiring_before = None if expiring_within is None else self._clock() + expiring_within
        cursors = await self._cursors()
        bound_to = aead_context("list-cursor", owner.owner, prefix)
        state = cursors.decode(cursor, ListCursor, bound_to, expected={"prefix": prefix})
        after = parse_path(state.after) if state is not None else None
        plan = await self._listing_plan(caller, owner, prefix)
        rows, resume_after = await self._listed_rows(
            owner, plan, prefix=prefix, after=after, limit=limit, include_deleted=include_deleted,
            expiring_before=expiring_before,
        )
        sealed = None if resume_after is None else cursors.encode(
            ListCursor(v=3, prefix=prefix, after=resume_after), bound_to
        )
        return Page(rows, sealed).document("secrets", queries.metadata_document)

    async def _cursors(self) -> SealedCursors:
        return SealedCursors(await self._keyring.system_key(self._pool, CURSOR_KEY))

    async def _listing_plan(self, caller: Caller, owner: Owner, prefix: str) -> ListingPlan | None:
        """What the caller may list under ``prefix`` (None: everything)."""
        if owner.tenant_id is None:
            return None
        return await self._authorizer.listing(
            caller.principal, caller.tenant_id, caller.partner_id, prefix, caller.context()
        )

    async def _listed_rows(
        self, owner: Owner, plan: ListingPlan | None, *, prefix: str, after: str | None, limit: int,
        include_deleted: bool, expiring_before: datetime | None = None,
    ) -> tuple[list[Row], str | None]:
        """Up to ``limit`` listable rows after ``after`` in path order, and the path to resume after (None: no more).

        With a plan, only the plan's ranges are scanned (each a path prefix; disjoint, in path order, so the pages of
        all ranges together are in path order) and a row is kept only if the plan shows it."""
        if plan is None:
            rows = await queries.list_secret_rows(
                self._pool, owner.owner, prefix=prefix, after=after, limit=limit + 1, include_deleted=include_deleted,
                expiring_before=expiring_before,
            )
            page = page_of(rows, limit, lambda row: row["path"])
            return page.items, page.cursor
        kept: list[Row] = []
        scanned = 0
        batch = min(max(limit + 1, 100), MAX_LIST_LIMIT + 1)
        for start in plan.ranges:
            if after is not None and after >= start + "~":  # the whole range lies before the cursor
                continue
            position = after if after is not None and after >= start else None
            while True:
                rows = await queries.list_secret_rows(
                    self._pool, owner.owner, prefix=start, after=position, limit=batch,
                    include_deleted=include_deleted, expiring_before=expiring_before,
                )
                for row in rows:
                    if plan.visible(row["path"]):
                        if len(kept) == limit:
                            return kept, kept[-1]["path"]
                        kept.append(row)
                    position = row["path"]
                    scanned += 1
                    if scanned >= LIST_SCAN_BUDGET:
                        return kept, position
                if len(rows) < batch:
                    break
        return kept, None

    async def _authorize(self, caller: Caller, address: SecretAddress, permission: str) -> None:
        with self._metrics.stage["authorize"]:
            await self._authorizer.require_on_secret(caller, address, permission)


def _require_forensic_right(caller: Caller, address: SecretAddress) -> None:
    """A past value needs ``audit:read``; a partner secret's past value also a partner admin: partner secrets are
    governed by the spec's own rule, not by the tenants' policies, and any identity of any tenant of the partner may
    read the present value, not what a partner admin has since deleted or replaced."""
    caller.require_scope(FORENSIC_SCOPE)
    if address.partner_owned and not caller.principal.is_partner_admin:
        raise AccessDenied("Past values of partner secrets are for partner admins")


def _error_entry(error: ScaiVaultError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def _missing_version(row: Row | None, requested: int | None) -> ScaiVaultError | None:
    if row is None:
        return None
    if row["version"] is None:
        return VersionNotFound(path=row["path"], version=requested or row["current_version"])
    if row["ciphertext"] is None or row["wrapped_data_key"] is None:
        return VersionNotFound("That version was destroyed", path=row["path"], version=row["version"], destroyed=True)
    return None


def _no_longer_readable(row: Row | None, at: datetime) -> ScaiVaultError | None:
    """An expired secret reads as missing (``expired``: true); a version a rotation superseded, once its grace
    period has ended, as a version no longer kept (``grace_period_ended``: true). docs/api-decisions.md."""
    if row is None:
        return None
    expires_at = row["expires_at"]
    if expires_at is not None and expires_at <= at:
        return SecretNotFound("The secret has expired", path=row["path"], expired=True, expired_at=expires_at)
    readable_until = row["readable_until"]
    if readable_until is not None and readable_until <= at:
        return VersionNotFound(
            "That version was replaced by a rotation and its grace period has ended", path=row["path"],
            version=row["version"], grace_period_ended=True, readable_until=readable_until,
        )
    return None


def _not_found_or_deleted(path: str, row: Row | None) -> ScaiVaultError | None:
    if row is None:
        return SecretNotFound(path=path)
    if row["deleted_at"] is not None:
        return SecretNotFound(
            "The secret is deleted; it can be restored",
            path=path,
            deleted=True,
            recoverable_until=row["recoverable_until"],
        )
    return None


def _secret_document(row: Row, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": row["path"],
        "secret_type": row["secret_type"],
        "version": row["version"],
        "current_version": row["current_version"],
        "data": data,
        "metadata": row["metadata"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "expires_at": row["version_expires_at"],
        "last_accessed_at": row["last_accessed_at"],
        "rotation_policy_id": row["rotation_policy_id"],
        "secret_policy_id": row["secret_policy_id"],
        "version_created_at": row["version_created_at"],
        "version_created_by": row["version_created_by"],
    }
