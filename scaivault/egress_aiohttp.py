"""aiohttp clients that reach only a checked destination (``scaivault.egress.pin_url``): webhooks, JWKS and the like.

``pinned_session(target)`` is a ``ClientSession`` whose connector resolves the target's host to the checked addresses
only (no DNS lookup, so a rebinding resolver gets no second say) and refuses every other host name; a middleware
refuses any request to another origin (an IP literal never reaches a resolver), and a trace hook refuses to follow a
redirect (pass ``allow_redirects=False`` to receive the 3xx response instead). TLS is verified against the URL's host
name: aiohttp sends it as the server name and checks the certificate against it, whatever address it connected to.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import types
from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from scaivault.egress import EgressRefused, PinnedTarget, normalize_host


class PinnedResolver(AbstractResolver):
    """Answers the pinned host with its checked addresses and refuses every other name."""

    def __init__(self, target: PinnedTarget) -> None:
        self._target = target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if normalize_host(host) != self._target.host:
            raise self._target.refuse_other(host)
        answers: list[ResolveResult] = []
        for address in self._target.addresses:
            address_family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, address_family):
                answers.append(
                    ResolveResult(
                        hostname=host,
                        host=address,
                        port=port,
                        family=address_family,
                        proto=0,
                        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                    )
                )
        if not answers:
            raise OSError(f"{host} has no checked address of the requested family")
        return answers

    async def close(self) -> None:
        return None


def _origin_guard(target: PinnedTarget) -> aiohttp.ClientMiddlewareType:
    async def only_the_pinned_origin(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if not target.is_origin_of(str(request.url)) or request.proxy is not None:
            raise target.refuse_other(str(request.url.with_query(None).with_fragment(None)))
        return await handler(request)

    return only_the_pinned_origin


async def _refuse_redirect(
    _session: aiohttp.ClientSession,
    _context: types.SimpleNamespace,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    params.response.close()
    raise EgressRefused(
        f"Refused to follow a redirect ({params.response.status}) from {params.url.with_query(None)}",
        public_message="Refused to connect: the destination answered with a redirect, which is not followed",
    )


def pinned_session(
    target: PinnedTarget,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
    headers: Mapping[str, str] | None = None,
) -> aiohttp.ClientSession:
    """A session that reaches only ``target`` (create it inside the event loop; close it when done).
    ``ssl_context`` replaces the system's trust store (certificates are always verified)."""
    no_redirects = aiohttp.TraceConfig()
    no_redirects.on_request_redirect.append(_refuse_redirect)
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(target), use_dns_cache=False, ssl=ssl_context if ssl_context is not None else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout or aiohttp.ClientTimeout(total=30, sock_connect=5),
        headers=headers,
        trust_env=False,
        middlewares=(_origin_guard(target),),
        trace_configs=[no_redirects],
    )
