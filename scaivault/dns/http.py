"""The HTTP side of the provider clients: an aiohttp session whose every connection passes the egress guard.

Every address a provider's host resolves to is checked inside the connector's resolver (the webhook client's
``GuardedResolver``: the address checked is the address connected to); an IP-literal URL is checked before the
request. Redirects are not followed (a 3xx is a failure: a redirect must not carry a bearer token somewhere
unchecked), each request is bounded in time, and an answer larger than ``max_response_bytes`` is refused unread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from scaivault.dns.port import DnsProviderError
from scaivault.egress import EgressRefused, IPNetwork
from scaivault.webhooks.client import GuardedResolver, check_literal_host

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a zone list of a few thousand zones; nothing legitimate is larger
TIMEOUT_SECONDS = 20.0
CONNECT_TIMEOUT_SECONDS = 5.0


class GuardedHttp:
    """One session per client; ``provider`` names the provider in error messages."""

    def __init__(
        self, provider: str, allow: Sequence[IPNetwork] = (), *, timeout_seconds: float = TIMEOUT_SECONDS,
        max_response_bytes: int = MAX_RESPONSE_BYTES, confidential: Sequence[str] = (),
    ) -> None:
        """``confidential``: the credential values, scrubbed from any provider message quoted in an error."""
        self.provider = provider
        self._confidential = tuple(v for v in confidential if v)
        self._allow = tuple(allow)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=CONNECT_TIMEOUT_SECONDS)
        self._cap = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=GuardedResolver(self._allow), use_dns_cache=False, limit=8),
                timeout=self._timeout, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
        data: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and the parsed JSON answer (None when empty, the text when not JSON)."""
        what = f"{method} {_path_of(url)}"
        try:
            check_literal_host(url, self._allow)
            body = None if json is None else orjson.dumps(json)
            sent_headers = dict(headers or {})
            if body is not None:
                sent_headers["Content-Type"] = "application/json"
            async with self._open().request(
                method, url, headers=sent_headers, data=body if body is not None else data, params=params,
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(self._cap + 1)
                status = response.status
        except EgressRefused as refused:
            raise self._refused(refused) from None
        except aiohttp.ClientConnectorError as exc:
            cause = exc.__cause__ or exc.os_error
            if isinstance(cause, EgressRefused):
                raise self._refused(cause) from None
            raise DnsProviderError(f"could not connect to {self.provider} ({what})") from None
        except TimeoutError:
            raise DnsProviderError(f"{self.provider} did not answer in time ({what})") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise DnsProviderError(f"the request to {self.provider} failed ({what}): {type(exc).__name__}") from None
        if len(raw) > self._cap:
            raise DnsProviderError(f"{self.provider}'s answer to {what} is larger than {self._cap} bytes")
        if 300 <= status < 400:
            raise DnsProviderError(f"{self.provider} redirected {what} (HTTP {status}); redirects are not followed",
                                   status=status)
        if not raw:
            return status, None
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw.decode("utf-8", "replace")

    def _refused(self, refused: EgressRefused) -> DnsProviderError:
        log.warning("DNS provider request refused by the egress guard: %s", refused)
        return DnsProviderError(f"{self.provider}: {refused.public_message}")

    def failure(self, status: int, what: str, detail: str | None = None) -> DnsProviderError:
        """The error for an unexpected answer: the credentials refused (401/403) or another status."""
        if status in (401, 403):
            message = f"{self.provider} refused the credentials (HTTP {status}) for {what}"
        else:
            message = f"{self.provider} answered HTTP {status} to {what}"
        if detail:
            message += f": {self.scrub(_safe(detail))}"
        return DnsProviderError(message, status=status)


    def scrub(self, text: str) -> str:
        for value in self._confidential:
            text = text.replace(value, "[redacted]")
        return text


def _path_of(url: str) -> str:
    """The path of a request, for messages (no query string: a token could sit there)."""
    try:
        return urlsplit(url).path[:200] or "/"
    except ValueError:
        return "?"


def _safe(text: str) -> str:
    """A provider's error code or message, printable and short (a provider's own message names no credential)."""
    return "".join(c for c in str(text) if c.isprintable())[:200]
