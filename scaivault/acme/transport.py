"""The requests session the ``acme`` library talks through, held to the egress guard.

The library is synchronous and runs in a worker thread; each origin (scheme, host, port) it reaches is checked once
per session by ``scaivault.egress.pin_url`` on the event loop the session was opened from, and every connection goes
to the address that check returned: no second DNS lookup for a rebinding resolver to answer differently. The host
name stays the TLS server name (and the certificate is verified against it) and the ``Host`` header. Redirects are
refused rather than followed (RFC 8555 has none to follow, and a redirect would lead a signed request to a
destination nobody checked); proxies and ``REQUESTS_CA_BUNDLE`` from the environment are ignored.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3 import HTTPSConnectionPool

from scaivault.egress import RESOLVE_TIMEOUT_SECONDS, EgressRefused, IPNetwork, PinnedTarget, pin_url


class RedirectRefused(requests.exceptions.RequestException):
    """The ACME server answered with a redirect, which is not followed."""


def trust_context(ca_bundle_pem: str | None) -> ssl.SSLContext:
    """Certificates are checked against ``ca_bundle_pem`` alone when given (an enterprise CA, a test server), else
    against the bundle requests ships (certifi)."""
    if ca_bundle_pem:
        return ssl.create_default_context(cadata=ca_bundle_pem)
    return ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)


class PinnedAdapter(HTTPAdapter):
    """A transport adapter that sends every request to the checked address of its origin."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        allow: Sequence[IPNetwork],
        *,
        ca_bundle_pem: str | None = None,
        max_connections: int = 4,
    ) -> None:
        super().__init__(max_retries=0)
        self._loop = loop
        self._allow = tuple(allow)
        self._context = trust_context(ca_bundle_pem)
        self._max_connections = max_connections
        self._pools: dict[tuple[str, str, int], tuple[PinnedTarget, HTTPSConnectionPool]] = {}
        self._lock = threading.Lock()

    def _origin(self, url: str) -> tuple[PinnedTarget, HTTPSConnectionPool]:
        parts = urlsplit(url)
        try:
            key = (parts.scheme, (parts.hostname or "").lower(), parts.port or 443)
        except ValueError:
            raise EgressRefused("Refused to connect: the URL is malformed") from None
        with self._lock:
            known = self._pools.get(key)
        if known is not None:
            return known
        # The guard's resolver is asynchronous: the check runs on the loop while this worker thread waits (from the
        # loop's own thread this would wait on itself; the adapter is only used from worker threads).
        future = asyncio.run_coroutine_threadsafe(pin_url(url, self._allow, schemes=("https",)), self._loop)
        try:
            target = future.result(timeout=RESOLVE_TIMEOUT_SECONDS + 5)
        except TimeoutError:
            future.cancel()
            raise
        pool = HTTPSConnectionPool(
            target.address,
            target.port,
            ssl_context=self._context,
            server_hostname=target.host,
            assert_hostname=target.host,
            maxsize=self._max_connections,
            retries=False,
        )
        with self._lock:
            known = self._pools.setdefault(key, (target, pool))
        if known[1] is not pool:
            pool.close()
        return known

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: Any = None,
    ) -> HTTPSConnectionPool:
        return self._origin(request.url or "")[1]

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The pool's TLS settings are fixed when it is made; requests' own would swap in another CA bundle.
        return None

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        target, _ = self._origin(request.url or "")
        if not target.is_origin_of(request.url or ""):
            raise target.refuse_other(request.url or "")
        request.headers["Host"] = target.host_header
        kwargs["proxies"] = {}
        response = super().send(request, *args, **kwargs)
        if response.is_redirect or response.is_permanent_redirect:
            response.close()
            raise RedirectRefused("the ACME server answered with a redirect, which is not followed")
        return response

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for _, pool in pools:
            pool.close()
        super().close()


class PinnedSession(requests.Session):
    """A session whose only transport is a ``PinnedAdapter`` (plain http has none: it fails)."""

    def __init__(self, adapter: PinnedAdapter) -> None:
        super().__init__()
        self.trust_env = False
        self.max_redirects = 0
        self.adapters.clear()
        self.mount("https://", adapter)

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)
