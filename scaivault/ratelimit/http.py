"""Rate limiting of HTTP requests: what a request is charged, to whom, and the headers that report it.

A request is charged once its caller is authenticated (``scaivault/http/context.py``), to
the bucket of (the token's partner, tenant and identity; the route's category). A failed authentication is charged
to the client IP's ``unauthenticated`` bucket; with that bucket empty the answer is 429 instead of 401.
"""

from __future__ import annotations

import logging
import math
import time
from typing import NamedTuple

from aiohttp import web

from scaivault.auth.principal import Principal
from scaivault.domain.errors import RateLimited, ScaiVaultError
from scaivault.http.keys import CLIENT_IP
from scaivault.http.status import status_of
from scaivault.ratelimit.buckets import Outcome
from scaivault.ratelimit.categories import UNAUTHENTICATED, Unmapped, category_of
from scaivault.ratelimit.limiter import RateLimiter

log = logging.getLogger(__name__)


class Charged(NamedTuple):
    """Whose bucket this request was charged to, and the outcome its headers report."""

    identity: str
    outcome: Outcome


RATE_LIMIT: web.RequestKey[Charged] = web.RequestKey("rate_limit", Charged)

_unmapped_reported: set[str] = set()


def identity_key(principal: Principal) -> str:
    """Identity ids are unique within a tenant only (``sa:deployer`` may exist in many), so the key names the
    token's partner and tenant too. A partner admin acting in several tenants still has one bucket."""
    return f"{principal.partner_id or '-'}/{principal.tenant_id or '-'}/{principal.identity_id}"


def request_category(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    try:
        return category_of(request.method, resource.canonical)
    except Unmapped as exc:  # the category test keeps this from happening; should it anyway, say so once
        if str(exc) not in _unmapped_reported:
            _unmapped_reported.add(str(exc))
            log.error("route has no rate-limit category; it is not limited", extra={"route": str(exc)})
        return None


class RequestCharges:
    """Charges requests to the rate limiter: the HTTP side of ``scaivault/ratelimit/limiter.py``."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def charge_request(self, request: web.Request, principal: Principal) -> None:
        """Charge an authenticated request to its category; raise ``RateLimited`` when its bucket is empty. Called
        once per request: the caller is authenticated once and cached."""
        if not self._limiter.enabled:
            return
        category = request_category(request)
        if category is not None:
            await self._charge(request, identity_key(principal), category)

    async def charge_failed_authentication(self, request: web.Request, error: ScaiVaultError) -> None:
        """Charge a failed authentication to the client IP; raise ``RateLimited`` (from ``error``) past its
        limit."""
        if status_of(error.code) != 401 or RATE_LIMIT in request:
            return
        if self._limiter.enabled:
            await self._charge(request, f"ip/{request[CLIENT_IP] or 'unknown'}", UNAUTHENTICATED)

    async def charge_anonymous(self, request: web.Request) -> None:
        """Charge a request that needs no token (a CA's certificate, CRLs, OCSP: what relying parties fetch) to its
        client IP's bucket of the request's category."""
        if self._limiter.enabled:
            category = request_category(request)
            if category is not None:
                await self._charge(request, f"ip/{request[CLIENT_IP] or 'unknown'}", category)

    async def _charge(self, request: web.Request, identity: str, category: str) -> None:
        outcome = await self._limiter.charge(identity, category)
        if outcome is None:
            return
        request[RATE_LIMIT] = Charged(identity, outcome)
        if not outcome.allowed:
            raise RateLimited(category=outcome.charge.category, retry_after=outcome.retry_after)

    async def charge_extra(self, request: web.Request, category: str, count: int) -> None:
        """Charge ``count`` more units of ``category`` to the identity this request was charged to (a batch read's
        returned secrets). Never refuses: the bucket may go into debt, which the identity's next requests wait
        out."""
        charged = request.get(RATE_LIMIT)
        if charged is not None and count > 0:
            await self._limiter.charge_extra(charged.identity, category, count)


def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """X-RateLimit-Limit/-Remaining/-Reset (a Unix time when the bucket is full again) on every response of a
    charged request; Retry-After (seconds) on a refusal. A refusal reports the bucket that refused."""
    charged = request.get(RATE_LIMIT)
    if charged is None:
        return
    outcome = charged.outcome
    headers = response.headers
    headers["X-RateLimit-Limit"] = str(outcome.charge.limit.reported)
    headers["X-RateLimit-Remaining"] = str(max(0, math.floor(outcome.level)))
    headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + outcome.seconds_until_full))
    if not outcome.allowed:
        headers["Retry-After"] = str(outcome.retry_after)
