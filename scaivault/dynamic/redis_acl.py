"""The ``database.redis`` backend: ACL users created with the engine's root user over redis.asyncio.

A role's ``creation_statements`` are ACL rules (``"~cache:* +get +set"``), not commands: every rule is sent as an
argument of its own to ``ACL SETUSER``, so a rule cannot smuggle in another command. The rules that touch the
password or the user's on/off state are refused: the password is ours to set, and a role must not be able to make
its users passwordless or keep a second password.

ACL users live in the server's memory: a server that loads its users from an ``aclfile`` forgets ours on restart
unless someone runs ``ACL SAVE`` (then the leases outlive their users, which is the safe way round).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scaivault.dynamic.connection_urls import (
    ParsedUrl,
    UrlBackend,
    checked_address,
    tls_context,
    unencrypted_context,
)
from scaivault.dynamic.port import (
    CreatedCredential,
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetRefused,
    TargetUnavailable,
)
from scaivault.dynamic.statements import check_substitutable, scrub

DEFAULT_RULES = ("~*", "+@read")
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 10.0
_SCHEMES = ("redis", "rediss")
_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")
_FORBIDDEN_RULES = frozenset({"nopass", "resetpass", "on", "off", "reset"})
_FORBIDDEN_PREFIXES = (">", "<", "#", "!")
_ROOT_REFUSED = "Redis refused the root credentials"


def check_rules(statements: Sequence[str]) -> list[str]:
    """The role's ACL rules as separate tokens; ``TargetRefused`` for one that would touch the password or the
    on/off state (the message names the rule's kind, never its text: ``>...`` is a password)."""
    rules: list[str] = []
    for index, statement in enumerate(statements, start=1):
        for token in statement.split():
            lowered = token.lower()
            if lowered in _FORBIDDEN_RULES:
                raise TargetRefused(f"statement {index} of creation_statements may not use the ACL rule {lowered}")
            if token.startswith(_FORBIDDEN_PREFIXES):
                raise TargetRefused(
                    f"statement {index} of creation_statements may not set or remove passwords "
                    f"(rules starting with {token[0]})"
                )
            if "{{" in token:
                raise TargetRefused(f"statement {index} of creation_statements: ACL rules take no placeholders")
            rules.append(token)
    return rules


class RedisAclBackend(UrlBackend):
    """One engine's Redis. One client, created on first use, with its own small pool."""

    SCHEMES = _SCHEMES
    OPTIONS = _OPTIONS
    LABEL = "Redis"

    def __init__(self, target: EngineTarget) -> None:
        super().__init__(target)
        self._client: redis.Redis | None = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> redis.Redis:
        async with self._lock:
            if self._client is None:
                url = self._url()
                address = await checked_address(url.host, url.port, self._target.egress_allow)
                try:
                    db = int(url.database or "0")
                except ValueError:
                    raise TargetRefused("the Redis connection_url's path must be a database number") from None
                kwargs: dict[str, Any] = {
                    "host": address,
                    "port": url.port,
                    "db": db,
                    "username": url.username or None,
                    "password": url.password or None,
                    "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
                    "socket_timeout": COMMAND_TIMEOUT_SECONDS,
                    "max_connections": int(self._target.config.get("max_open_connections", 4) or 4),
                    "connection_class": Connection,
                }
                if url.scheme == "rediss":
                    kwargs["connection_class"] = _PinnedSSLConnection
                    kwargs["pinned_context"] = _redis_tls(url)
                pool = redis.ConnectionPool(**kwargs)
                self._client = redis.Redis(connection_pool=pool)
            return self._client

    @asynccontextmanager
    async def _mapped(self, kind: str, *extra_secrets: str) -> AsyncIterator[None]:
        try:
            yield
        except (TargetRefused, TargetUnavailable):
            raise
        except AuthenticationError:
            raise TargetRefused(_ROOT_REFUSED) from None
        except ResponseError as exc:
            text = scrub(str(exc), *self._secrets(*extra_secrets))
            if text.startswith(("WRONGPASS", "NOAUTH")):
                raise TargetRefused(_ROOT_REFUSED) from None
            raise TargetRefused(f"{kind} failed: {text}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise TargetRefused("the Redis server's TLS certificate failed verification") from None
            raise TargetUnavailable(f"Redis could not be reached: {type(exc).__name__}") from None
        except RedisError as exc:
            raise TargetRefused(f"{kind} failed: {scrub(str(exc), *self._secrets(*extra_secrets))}") from None

    async def verify(self) -> None:
        async with self._mapped("the verification"):
            client = await self._get_client()
            whoami = _text(await client.execute_command("ACL", "WHOAMI"))
            try:
                answer = _text(await client.execute_command("ACL", "DRYRUN", whoami, "ACL", "SETUSER", "probe"))
            except ResponseError as exc:
                if "unknown subcommand" not in str(exc).lower():
                    raise
                # Redis before 7.0 has no DRYRUN: ACL USERS needs the same @admin category.
                await client.execute_command("ACL", "USERS")
                return
            if answer != "OK":
                raise TargetRefused("the root user may not manage ACL users (ACL SETUSER)")

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        try:
            check_substitutable(credential.username, "username")
            check_substitutable(credential.password, "password")
        except ValueError as exc:
            raise TargetRefused(str(exc)) from None
        rules = check_rules(role.creation_statements) or list(DEFAULT_RULES)
        async with self._mapped("creating the ACL user", credential.password):
            client = await self._get_client()
            try:
                await client.execute_command(
                    "ACL", "SETUSER", credential.username, "reset", "on", f">{credential.password}", *rules
                )
            except ResponseError:
                await self._delete_quietly(client, credential.username)
                raise
        return CreatedCredential(data={"username": credential.username, "password": credential.password})

    async def _delete_quietly(self, client: redis.Redis, username: str) -> None:
        """A failed SETUSER of a new user leaves nothing on Redis 7; older servers applied the rules up to the bad
        one, so the user is deleted anyway."""
        try:
            await client.execute_command("ACL", "DELUSER", username)
        except RedisError:
            pass

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        """Redis users do not expire: the lease's expiry revokes them."""

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        try:
            check_substitutable(username, "username")
        except ValueError as exc:
            raise TargetRefused(str(exc)) from None
        async with self._mapped("deleting the ACL user"):
            client = await self._get_client()
            try:
                await client.execute_command("CLIENT", "KILL", "USER", username)
            except ResponseError as exc:
                if "no such user" not in str(exc).lower():
                    raise
            # DELUSER also disconnects the user's clients, which catches one that connected after the KILL.
            await client.execute_command("ACL", "DELUSER", username)

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        try:
            check_substitutable(new_password, "password")
        except ValueError as exc:
            raise TargetRefused(str(exc)) from None
        url = self._url()
        if not url.username or url.username == "default":
            raise TargetRefused(
                "the root credentials of a Redis engine must name an ACL user other than default to be rotated "
                "(the default user's password is every unnamed client's)"
            )
        async with self._mapped("rotating the root password", new_password):
            client = await self._get_client()
            await client.execute_command("ACL", "SETUSER", url.username, "resetpass", f">{new_password}")
        await self.close()
        self._root_password_override = new_password
        return {**dict(self._target.root), "username": url.username, "password": new_password}

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass


class _PinnedSSLConnection(SSLConnection):
    """TLS to the checked address with the certificate checked against the URL's host (the context carries it)."""

    def __init__(self, *, pinned_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pinned_context = pinned_context

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {"host": self.host, "port": self.port, "ssl": self._pinned_context}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redis_tls(url: ParsedUrl) -> ssl.SSLContext:
    """redis-py's own option names: ``ssl_cert_reqs=none`` for a server with a self-made certificate,
    ``ssl_check_hostname=false`` to check only the CA, ``ssl_ca_certs`` for a CA file."""
    cert_reqs = url.options.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in ("none", "required"):
        raise TargetRefused("ssl_cert_reqs must be none or required")
    if cert_reqs == "none":
        return unencrypted_context()
    check_hostname = url.options.get("ssl_check_hostname", "true").lower() not in ("false", "0", "no")
    return tls_context(server_name=url.host, verify_name=check_hostname, ca_file=url.options.get("ssl_ca_certs"))
