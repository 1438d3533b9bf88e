"""Reading ACME accounts and orders, and answering http-01 challenges.

A caller sees its tenant's accounts and orders; another tenant's answer exactly like missing ones. Nothing here
holds key material: the account and certificate keys are sealed in other columns that are never selected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import asyncpg
from pydantic import Field

from scaivault.auth.caller import Caller
from scaivault.domain.errors import AcmeAccountNotFound, AcmeOrderNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]


class AccountListCursor(CursorState):
    v: Literal[1]
    after: str = Field(max_length=64)


class OrderListCursor(CursorState):
    v: Literal[1]
    status: str | None = Field(default=None, max_length=16)
    after: str = Field(max_length=64)

ACCOUNT_COLUMNS = """account_id, name, provider, environment, directory_url, email, status, account_uri,
    created_at, created_by, deactivated_at"""
ORDER_COLUMNS = """order_id, account_id, names, challenge_type, dns_provider_id, key_type, secret_path, auto_renew,
    renew_before_seconds, renewal_of, status, step, state, challenges, error, attempts, certificate_id,
    next_attempt_at, renew_at, created_at, created_by, updated_at"""


def account_document(row: Row) -> dict[str, Any]:
    return {
        "id": row["account_id"],
        "name": row["name"],
        "provider": row["provider"],
        "environment": row["environment"],
        "directory_url": row["directory_url"],
        "email": row["email"],
        "status": row["status"],
        "account_uri": row["account_uri"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "deactivated_at": row["deactivated_at"],
    }


def order_document(row: Row) -> dict[str, Any]:
    names = list(row["names"])
    state = row["state"] or {}
    return {
        "id": row["order_id"],
        "account_id": row["account_id"],
        "status": row["status"],
        "step": row["step"],
        "common_name": names[0],
        "alt_names": names[1:],
        "challenge_type": row["challenge_type"],
        "dns_provider_id": row["dns_provider_id"],
        "key_type": row["key_type"],
        "secret_path": row["secret_path"],
        "auto_renew": row["auto_renew"],
        "renew_before": f"{row['renew_before_seconds']}s",
        "renewal_of": row["renewal_of"],
        "challenges": row["challenges"],
        "error": row["error"] if row["status"] in ("invalid", "pending", "processing") else None,
        "attempts": row["attempts"],
        "certificate_id": row["certificate_id"],
        "order_url": state.get("url"),
        "expires": state.get("expires"),
        "next_attempt_at": row["next_attempt_at"],
        "renew_at": row["renew_at"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
    }


class AcmeReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def accounts(self, who: Caller, *, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """A page by id (ids sort by creation time): ``{accounts, cursor, has_more}``."""
        state = decode_cursor(cursor, AccountListCursor)
        rows = await self._pool.fetch(
            f"""SELECT {ACCOUNT_COLUMNS} FROM scaivault_acme_accounts WHERE tenant_id = $1
                AND ($2::text IS NULL OR account_id > $2) ORDER BY account_id LIMIT $3""",
            who.require_tenant(), state.after if state else None, limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(AccountListCursor(v=1, after=row["account_id"])))
        return page.document("accounts", account_document)

    async def account(self, who: Caller, account_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {ACCOUNT_COLUMNS} FROM scaivault_acme_accounts WHERE tenant_id = $1 AND account_id = $2",
            who.require_tenant(), account_id,
        )
        if row is None:
            raise AcmeAccountNotFound(account_id=account_id[:64])
        return account_document(row)

    async def orders(
        self, who: Caller, *, limit: int, status: str | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page by id, of one status when given: ``{orders, cursor, has_more}``."""
        state = decode_cursor(cursor, OrderListCursor, expected={"status": status})
        rows = await self._pool.fetch(
            f"""SELECT {ORDER_COLUMNS} FROM scaivault_acme_orders WHERE tenant_id = $1
                AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR order_id > $4)
                ORDER BY order_id LIMIT $2""",
            who.require_tenant(), limit + 1, status, state.after if state else None,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(
            OrderListCursor(v=1, status=status, after=row["order_id"])))
        return page.document("orders", order_document)

    async def order(self, who: Caller, order_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM scaivault_acme_orders WHERE tenant_id = $1 AND order_id = $2",
            who.require_tenant(), order_id,
        )
        if row is None:
            raise AcmeOrderNotFound(order_id=order_id[:64])
        return order_document(row)

    async def http01(self, token: str) -> str | None:
        """The key authorization of a presented http-01 token (public by design: the CA fetches it unauthenticated)."""
        value = await self._pool.fetchval(
            "SELECT key_authorization FROM scaivault_acme_http01_tokens WHERE token = $1", token
        )
        return str(value) if value is not None else None
