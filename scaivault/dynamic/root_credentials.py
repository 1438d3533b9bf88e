"""An engine's root credentials, read as the engine itself.

An engine acts as the system identity ``dynamic:<engine name>`` of its tenant (spec api-guides/dynamic-secrets): it
holds no role and no token, only what policies bound to that identity grant, so an administrator decides with an
ordinary policy binding which secret the engine may read (``read``) and rotate (``rotate``), and can cut it off by
unbinding it. The read goes through the secret reader a GET goes through (the policy decision, decryption, the access
note) and leaves an access record (``read`` by ``dynamic:<name>``, method ``JOB``, route ``dynamic-engine``), durable
before the credentials are used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from projections.secrets.reader import SecretReader
from scaivault.audit.access_records import AccessRecord, AccessRecorder
from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.clock import utcnow
from scaivault.domain.errors import InvalidConfig, ScaiVaultError, ServiceUnavailable
from scaivault.domain.secrets import SecretAddress
from scaivault.ids import new_request_id

ROUTE = "dynamic-engine"
_REFUSED = frozenset({"access_denied", "insufficient_scope", "mfa_required", "ip_not_allowed",
                      "time_window_violation", "tenant_access_denied"})


def engine_identity(engine_name: str) -> str:
    return f"dynamic:{engine_name}"


def engine_caller(tenant_id: str, partner_id: str, engine_name: str) -> Caller:
    """The engine as a caller: its identity, no roles, the scopes of reading and rotating secrets (what it may do
    is what its policies grant)."""
    principal = Principal(
        identity_id=engine_identity(engine_name), identity_type="service_account", display_name=None,
        tenant_id=tenant_id, partner_id=partner_id or None, scopes=frozenset({"secrets:read", "secrets:rotate"}),
        roles=frozenset(), groups=(), mfa_verified_at=None, expires_at=None, issued_at=None, token_kind="system",
        token_id=f"engine:{engine_name}",
    )
    return Caller(principal, tenant_id, partner_id or None)


class PolicyBoundRootCredentials:
    def __init__(self, reader: SecretReader, authorizer: Authorizer, access_recorder: AccessRecorder) -> None:
        self._reader = reader
        self._authorizer = authorizer
        self._access_recorder = access_recorder

    async def read(self, tenant_id: str, partner_id: str, engine_name: str, path: str) -> tuple[dict[str, Any], int]:
        caller = engine_caller(tenant_id, partner_id, engine_name)
        address = SecretAddress(owner=tenant_id, partner_id=partner_id, tenant_id=tenant_id, path=path)
        record = AccessRecord(
            recorded_at=utcnow(), request_id=new_request_id(), method="JOB", route=ROUTE, action="read",
            partner_id=partner_id, tenant_id=tenant_id, identity_id=caller.identity_id,
            identity_type="service_account", secret_path=path, extra={"via": ROUTE, "engine": engine_name},
        )
        try:
            document = await self._reader.read(caller, address, access=record)
        except ScaiVaultError as exc:
            record.status, record.error_code = (403 if exc.code in _REFUSED else 404), exc.code
            await self._durable(record)
            if exc.code in _REFUSED:
                raise InvalidConfig(
                    f"The engine's identity {caller.identity_id} may not read {path}: bind it a policy granting "
                    "read on that path", field="config.root_credentials_path",
                ) from None
            raise InvalidConfig(f"The root credentials secret {path} could not be read ({exc.code})",
                                field="config.root_credentials_path") from None
        record.status = 200
        await self._durable(record)
        data = document.get("data")
        if not isinstance(data, dict):
            raise InvalidConfig(f"The root credentials secret {path} is not a JSON object",
                                field="config.root_credentials_path")
        return data, int(document.get("version") or 0)

    async def may_rotate(self, tenant_id: str, partner_id: str, engine_name: str, path: str) -> None:
        caller = engine_caller(tenant_id, partner_id, engine_name)
        decision = await self._authorizer.decide(
            caller.principal, tenant_id, partner_id or None, path, "rotate", caller.context(datetime.now(UTC))
        )
        if not decision.allowed:
            raise InvalidConfig(
                f"The engine's identity {caller.identity_id} may not rotate {path}: bind it a policy granting "
                "rotate on that path", field="config.root_credentials_path",
            )

    async def _durable(self, record: AccessRecord) -> None:
        try:
            await self._access_recorder.record(record)
        except ScaiVaultError:
            raise ServiceUnavailable("The engine's read of its root credentials could not be recorded") from None
