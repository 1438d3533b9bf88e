"""The HTTP client deliveries go out through.

Every address a webhook's host resolves to is checked by the egress guard inside the connector's resolver
(``GuardedResolver``), so the address checked is the address connected to (no second lookup for a rebinding DNS
server to answer differently); a URL naming an IP literal (which aiohttp connects to without resolving) is checked
before the request, in the form aiohttp will use: yarl's canonical host (IDNA folds full-width digits and
ideographic full stops, so ``https://１２７.０.０.１/`` is 127.0.0.1), and a host aiohttp takes for an address
without resolving it must be one the guard can check. Redirects are not followed: a 3xx answer is a failed delivery
(a receiver that moved must be updated by its owner, and a redirect must not lead a signed request somewhere
unchecked). Each send is bounded in time, and the receiver's answer is not read beyond a small cap.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address

from scaivault.egress import EgressRefused, IPNetwork, check_address, client_host, resolve_and_check
from scaivault.webhooks.signing import SignedRequest

log = logging.getLogger(__name__)

RESPONSE_READ_CAP = 1024
MAX_ERROR_LENGTH = 500


def _refusal(refused: EgressRefused) -> str:
    """What a delivery records (its owner reads it): that the guard refused, never where the host resolved, which
    would let a tenant map the internal network by name. The operator's log gets the whole story."""
    log.warning("webhook delivery refused by the egress guard: %s", refused)
    return refused.public_message


class GuardedResolver(AbstractResolver):
    """Resolves like the system does, and refuses the host unless every address passes the egress guard."""

    def __init__(self, allow: Sequence[IPNetwork]) -> None:
        self._allow = tuple(allow)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_and_check(host, port, self._allow)
        return [
            ResolveResult(
                hostname=host, host=address, port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class SendResult:
    success: bool
    response_code: int | None
    duration_ms: int
    error: str | None


class WebhookClient:
    """One session for every delivery of a process (its connection pool is shared by all receivers)."""

    def __init__(
        self, allow: Sequence[IPNetwork] = (), *, timeout_seconds: float = 10.0, connect_timeout_seconds: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self._allow = tuple(allow)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect_timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._allow), use_dns_cache=False, limit=self._max_connections,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, url: str, request: SignedRequest) -> SendResult:
        """POST the signed request; 2xx is success, anything else (or no answer) a failure with its reason."""
        started = time.monotonic()

        def done(code: int | None, error: str | None) -> SendResult:
            duration = int((time.monotonic() - started) * 1000)
            return SendResult(error is None, code, duration, None if error is None else error[:MAX_ERROR_LENGTH])

        try:
            self._check_literal(url)
            async with self._open().post(
                url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                await response.content.read(RESPONSE_READ_CAP)
                code = response.status
        except EgressRefused as refused:
            return done(None, _refusal(refused))
        except aiohttp.ClientConnectorError as exc:
            cause = exc.__cause__ or exc.os_error
            if isinstance(cause, EgressRefused):
                return done(None, _refusal(cause))
            return done(None, f"could not connect: {type(cause).__name__}: {cause}")
        except TimeoutError:
            return done(None, "timed out")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return done(None, f"request failed: {type(exc).__name__}: {exc}")
        if 200 <= code < 300:
            return done(code, None)
        if 300 <= code < 400:
            return done(code, f"redirected (HTTP {code}); deliveries do not follow redirects")
        return done(code, f"the receiver answered HTTP {code}")

    def _check_literal(self, url: str) -> None:
        check_literal_host(url, self._allow)


def check_literal_host(url: str, allow: Sequence[IPNetwork]) -> None:
    """Check the host of ``url`` if aiohttp would connect to it without resolving it (an IP literal, in whatever
    form the URL spells it); a host name is left to ``GuardedResolver``."""
    try:
        host = client_host(url)
    except ValueError:
        raise EgressRefused("Refused to connect: the URL is malformed") from None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if is_ip_address(host):  # aiohttp would not resolve it: it must be an address we can check
            raise EgressRefused(f"Refused to connect: {host[:100]} is not an IP address in canonical form") from None
        return
    check_address(literal, allow, host=host)

