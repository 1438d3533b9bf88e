"""A client for ScaiKey's directory, and the parsing of what it reports into the mirror's terms.

The contract (what a ScaiKey-compatible endpoint must speak; the same JSON shapes as ScaiVault's own identity API):

- ``GET {SCAIKEY_URL}/api/v1/partners`` -> ``{"partners": [{"id", "name", "slug", "region", "status"}], "total"}``
- ``GET {SCAIKEY_URL}/api/v1/tenants?partner_id=`` -> ``{"tenants": [{"id", "partner_id", "name", ...}], "total"}``
- ``GET {SCAIKEY_URL}/api/v1/tenants/{tenant_id}/users`` -> ``{"users": [{"id", "email", "display_name", "status",
  "mfa_enabled", "groups": [group ids], "roles": [...]}], "total"}``
- ``GET {SCAIKEY_URL}/api/v1/tenants/{tenant_id}/groups`` -> ``{"groups": [{"id", "name", "description",
  "status"}], "total"}``

Every list is paged with ``page`` (from 1) and ``page_size``; pages are read until ``total`` is reached or a page
comes back short. With ``SCAIKEY_CLIENT_ID``/``SCAIKEY_CLIENT_SECRET`` the client first gets a token by the
client-credentials grant (``POST {SCAIKEY_URL}/oauth/token``, spec getting-started/authentication) and sends it as a
bearer token. The token and the client secret never appear in an error, a log line or an event; neither does any
part of ScaiKey's answers other than the parsed directory.

The URL is the operator's static configuration, not something an API caller can aim, so the egress guard (which
keeps callers from aiming the server at internal addresses) does not apply; ScaiKey is usually an internal service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from scaivault.domain.errors import ScaiVaultError
from scaivault.domain.identities import (
    ROLES,
    ReportedState,
    ReportedUser,
    is_group_id,
    parse_group_id,
    parse_user_id,
    profile_of_group,
    profile_of_user,
)
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id

PAGE_SIZE = 200
MAX_PAGES = 10_000
MAX_PAGE_BYTES = 8 * 1024 * 1024
TOKEN_MARGIN_SECONDS = 30
MAX_SKIPPED_LISTED = 20


class ScaiKeyUnavailable(Exception):
    """ScaiKey could not be asked, or its answer was not the directory. ``str()`` is safe to record and show."""


@dataclass
class Skipped:
    """Records ScaiKey reported that the mirror cannot hold (a malformed e-mail address, say): counted, a few
    listed (kind, id, reason), never fatal to the sync."""

    count: int = 0
    listed: list[dict[str, str]] = field(default_factory=list)

    def add(self, kind: str, raw_id: object, reason: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_SKIPPED_LISTED:
            self.listed.append({"kind": kind, "id": str(raw_id)[:80], "reason": reason[:200]})


def skip_reason(exc: ScaiVaultError) -> str:
    fields = exc.details.get("fields")
    if fields:
        return f"{fields[0]['field']}: {fields[0]['message']}"
    return exc.message


def _known_role(role: object) -> bool:
    return isinstance(role, str) and role in ROLES


def reported_user(raw: Mapping[str, Any]) -> tuple[str, ReportedUser]:
    """Parse one user as ScaiKey reports it (raises ``ValidationFailed``). Roles other than ScaiVault's admin roles
    are not ScaiVault's business and are dropped; so are group ids that are not group ids."""
    user_id = parse_user_id(raw.get("id"))
    roles = raw.get("roles")
    groups = raw.get("groups")
    return user_id, ReportedUser(
        profile=profile_of_user(raw),
        roles=None if not isinstance(roles, list) else tuple(sorted({r for r in roles if _known_role(r)})),
        groups=None if not isinstance(groups, list) else tuple(sorted({g for g in groups if is_group_id(g)})),
    )


def reported_state(users: list[Any], groups: list[Any], skipped: Skipped) -> ReportedState:
    state = ReportedState()
    for kind, records in (("group", groups), ("user", users)):
        for raw in records:
            if not isinstance(raw, Mapping):
                skipped.add(kind, "?", "not a JSON object")
                continue
            try:
                if kind == "group":
                    state.groups[parse_group_id(raw.get("id"))] = profile_of_group(raw)
                else:
                    user_id, user = reported_user(raw)
                    state.users[user_id] = user
            except ScaiVaultError as exc:
                skipped.add(kind, raw.get("id"), skip_reason(exc))
    return state


class ScaiKeyClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._client_id = client_id
        self._client_secret = client_secret
        self._page_size = page_size
        self._clock = clock
        self._token: tuple[str, float] | None = None

    async def partners(self) -> list[Any]:
        return await self._all("/api/v1/partners", "partners", {})

    async def tenants(self, partner_id: str | None = None) -> list[Any]:
        params = {} if partner_id is None else {"partner_id": parse_partner_id(partner_id)}
        return await self._all("/api/v1/tenants", "tenants", params)

    async def users(self, tenant_id: str) -> list[Any]:
        return await self._all(f"/api/v1/tenants/{quote(parse_tenant_id(tenant_id))}/users", "users", {})

    async def groups(self, tenant_id: str) -> list[Any]:
        return await self._all(f"/api/v1/tenants/{quote(parse_tenant_id(tenant_id))}/groups", "groups", {})

    async def _all(self, path: str, key: str, params: dict[str, str]) -> list[Any]:
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            body = await self._get(path, {**params, "page": str(page), "page_size": str(self._page_size)})
            batch, total = body.get(key), body.get("total")
            if not isinstance(batch, list) or (total is not None and (not isinstance(total, int) or total < 0)):
                raise ScaiKeyUnavailable(f"ScaiKey's answer to GET {path} is not a list of {key}")
            items.extend(batch)
            if len(batch) < self._page_size or (total is not None and len(items) >= total):
                return items
        raise ScaiKeyUnavailable(f"ScaiKey's list at {path} did not end after {MAX_PAGES} pages")

    async def _get(self, path: str, params: dict[str, str], *, retry_auth: bool = True) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        token = await self._bearer()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            request = self._session.get(self._base + path, params=params, headers=headers, allow_redirects=False)
            async with request as resp:
                if resp.status == 401 and token is not None and retry_auth:
                    self._token = None  # expired or revoked early: one fresh token, one more try
                    return await self._get(path, params, retry_auth=False)
                if resp.status != 200:
                    raise ScaiKeyUnavailable(f"ScaiKey answered {resp.status} to GET {path}")
                raw = await resp.content.read(MAX_PAGE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ScaiKeyUnavailable(f"ScaiKey could not be reached for GET {path} ({type(exc).__name__})") from None
        return self._object(raw, f"GET {path}")

    async def _bearer(self) -> str | None:
        if not self._client_id or not self._client_secret:
            return None
        if self._token is not None and self._token[1] > self._clock():
            return self._token[0]
        form = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}
        try:
            async with self._session.post(self._base + "/oauth/token", data=form, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise ScaiKeyUnavailable(f"ScaiKey refused the client credentials ({resp.status})")
                raw = await resp.content.read(MAX_PAGE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ScaiKeyUnavailable(f"ScaiKey could not be reached for a token ({type(exc).__name__})") from None
        body = self._object(raw, "POST /oauth/token")
        token, lifetime = body.get("access_token"), body.get("expires_in", 300)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise ScaiKeyUnavailable("ScaiKey's token answer has no access_token")
        self._token = (token, self._clock() + max(0.0, float(lifetime) - TOKEN_MARGIN_SECONDS))
        return token

    @staticmethod
    def _object(raw: bytes, what: str) -> dict[str, Any]:
        if len(raw) > MAX_PAGE_BYTES:
            raise ScaiKeyUnavailable(f"ScaiKey's answer to {what} is larger than {MAX_PAGE_BYTES} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise ScaiKeyUnavailable(f"ScaiKey's answer to {what} is not a JSON object")
        return body
