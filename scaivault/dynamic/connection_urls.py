"""The engines' ``connection_url``: filling its ``{{username}}``/``{{password}}`` template with the root
credentials, taking it apart, and checking its host with the egress guard before a backend connects.

The filled URL holds a password, so nothing here puts the URL (or its password) into an exception: errors name the
part that is wrong, never the text.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from scaivault.dynamic.port import EngineTarget, TargetRefused
from scaivault.egress import EgressRefused, IPNetwork, resolve_and_check

DEFAULT_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "redis": 6379,
    "rediss": 6379,
}


@dataclass(frozen=True)
class ParsedUrl:
    """A filled ``connection_url`` taken apart. ``database``: the path without its ``/`` (a database name, or
    Redis's db number), empty when the URL has none."""

    scheme: str
    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    options: Mapping[str, str] = field(default_factory=dict)


def fill(template: str, username: str, password: str) -> str:
    """The template with the root credentials in it, URL-quoted so that ``@``, ``:`` or ``/`` in a password cannot
    move the host."""
    return template.replace("{{username}}", quote(username, safe="")).replace("{{password}}", quote(password, safe=""))


def parse_target(url: str, scheme_allowed: tuple[str, ...]) -> ParsedUrl:
    """Take a filled connection URL apart; ``TargetRefused`` for one a backend cannot use."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise TargetRefused("the connection_url is malformed") from None
    if parts.scheme not in scheme_allowed:
        raise TargetRefused(f"the connection_url's scheme must be one of {', '.join(scheme_allowed)}")
    if not host:
        raise TargetRefused("the connection_url has no host")
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme)
        if port is None:
            raise TargetRefused("the connection_url has no port")
    try:
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise TargetRefused("the connection_url's query string is malformed") from None
    return ParsedUrl(
        scheme=parts.scheme,
        host=host,
        port=port,
        database=unquote(parts.path.lstrip("/")),
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        options=options,
    )


def target_url(config: Mapping[str, Any], root: Mapping[str, Any], scheme_allowed: tuple[str, ...]) -> ParsedUrl:
    """The engine's URL filled with its root credentials and parsed (what every backend starts from)."""
    template = config.get("connection_url")
    if not isinstance(template, str) or not template:
        raise TargetRefused("the engine has no connection_url")
    username = root.get("username")
    password = root.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise TargetRefused("the root credentials need a username and a password")
    parsed = parse_target(fill(template, username, password), scheme_allowed)
    # A template without the placeholders still connects as the root user: the stored secret is the truth.
    return ParsedUrl(
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        username=parsed.username or username,
        password=parsed.password or password,
        options=parsed.options,
    )


async def checked_address(host: str, port: int, allow: Iterable[IPNetwork]) -> str:
    """The address to connect to: the one the egress guard checked, so a resolver cannot answer differently for the
    connection itself. The guard's public message names neither host nor address (the URL came from a secret)."""
    try:
        addresses = await resolve_and_check(host, port, allow)
    except EgressRefused as exc:
        raise TargetRefused(exc.public_message) from None
    return addresses[0]


class _NamedServerContext(ssl.SSLContext):
    """A client context that checks the certificate against the URL's host name while the socket goes to the
    checked address: drivers pass the host they connect to (our address) as the server name, and this puts the name
    back (for SNI and for the hostname check)."""

    server_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)

    def wrap_socket(
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, self.server_name, session
        )


def tls_context(*, server_name: str, verify_name: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context (system CAs, or ``ca_file``). ``verify_name``: check the certificate names
    ``server_name`` (``verify-full``), else only that a trusted CA signed it (``verify-ca``)."""
    context = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = verify_name
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError):
        raise TargetRefused("the CA file named in the connection_url could not be read") from None
    return context


def unencrypted_context() -> ssl.SSLContext:
    """Encryption without verification (``require``): libpq's meaning, kept for servers with self-made
    certificates; ``verify-ca``/``verify-full`` are the ones that stop an active attacker."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def refuse_unknown_options(parsed: ParsedUrl, known: Iterable[str], engine: str) -> None:
    """A misspelt ``sslmode`` must not silently mean no TLS."""
    unknown = sorted(set(parsed.options) - set(known))
    if unknown:
        names = ", ".join(name[:40] for name in unknown[:5])
        raise TargetRefused(f"the {engine} connection_url has unsupported options: {names}")


class UrlBackend:
    """What the database backends share: the engine's connection URL filled in with its root credentials (or with
    the password a rotation has just set), and the secrets to scrub from any message."""

    SCHEMES: tuple[str, ...] = ()
    OPTIONS: tuple[str, ...] = ()
    LABEL = ""

    def __init__(self, target: EngineTarget) -> None:
        self._target = target
        self._root_password_override: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine_type={self._target.engine_type!r})"

    def _url(self) -> ParsedUrl:
        root = dict(self._target.root)
        if self._root_password_override is not None:
            root["password"] = self._root_password_override
        parsed = target_url(self._target.config, root, self.SCHEMES)
        refuse_unknown_options(parsed, self.OPTIONS, self.LABEL)
        return parsed

    def _secrets(self, *extra: str) -> tuple[str, ...]:
        password = self._target.root.get("password")
        found = [password] if isinstance(password, str) else []
        if self._root_password_override is not None:
            found.append(self._root_password_override)
        return (*found, *extra)
