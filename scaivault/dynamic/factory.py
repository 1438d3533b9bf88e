"""Which engine types this server runs, and the backend for each. The database adapters are imported when a backend
is built, so the engine types list (read by the domain and the API) needs neither their drivers nor boto3."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from scaivault.domain.dynamic import NOT_YET_SUPPORTED, SUPPORTED_TYPES
from scaivault.dynamic.port import CredentialBackend, EngineTarget

# One list, the domain's: what an engine's ``type`` may be, and the words refusing the types not served.
SUPPORTED_ENGINE_TYPES: tuple[str, ...] = SUPPORTED_TYPES
UNSUPPORTED_ENGINE_TYPES: Mapping[str, str] = MappingProxyType(NOT_YET_SUPPORTED)
ENGINE_TYPES: tuple[str, ...] = SUPPORTED_ENGINE_TYPES + tuple(UNSUPPORTED_ENGINE_TYPES)


class UnsupportedEngine(ValueError):
    """An engine type this server does not run; ``str()`` says so in words fit for the API caller."""


def unsupported_reason(engine_type: str) -> str | None:
    """Why ``engine_type`` cannot be used here, or None when it can."""
    if engine_type in SUPPORTED_ENGINE_TYPES:
        return None
    if engine_type in UNSUPPORTED_ENGINE_TYPES:
        return UNSUPPORTED_ENGINE_TYPES[engine_type]
    return f"unknown engine type {engine_type[:64]!r} (one of {', '.join(ENGINE_TYPES)})"


def build_backend(target: EngineTarget) -> CredentialBackend:
    """The adapter for ``target.engine_type``; ``UnsupportedEngine`` for a type this server does not run."""
    engine_type = target.engine_type
    if engine_type == "database.postgresql":
        from scaivault.dynamic.postgresql import PostgresBackend

        return PostgresBackend(target)
    if engine_type == "database.mysql":
        from scaivault.dynamic.mysql import MySqlBackend

        return MySqlBackend(target)
    if engine_type == "database.redis":
        from scaivault.dynamic.redis_acl import RedisAclBackend

        return RedisAclBackend(target)
    if engine_type == "aws":
        from scaivault.dynamic.aws import AwsBackend

        return AwsBackend(target)
    if engine_type == "ssh":
        from scaivault.dynamic.ssh import SshBackend

        return SshBackend(target)
    raise UnsupportedEngine(unsupported_reason(engine_type) or f"no backend for {engine_type[:64]!r}")
