"""Changing secrets over HTTP: write a version, update metadata, delete (soft, one version, or all), restore. Each
is one command (``commands/secrets.py``), which checks the caller's policies on the path; the token's scope is
checked here, first, as for reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from commands.actor import Actor
from commands.secrets import SecretCommands, UpdateSecretMetadata, WriteSecret
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import InvalidDuration, InvalidRequest
from scaivault.domain.secrets import Secret, SecretAddress, check_secret_type
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.query import Flag, QueryModel, WholeNumber, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.schemas import MetadataPatchIn, WriteSecretIn, check_metadata_patch, parse_body
from scaivault.http.secrets.addressing import address_of
from scaivault.metrics import Metrics


class DeleteQuery(QueryModel):
    permanent: Flag = False
    version: WholeNumber | None = None


def _duration(value: str | None, field: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except InvalidDuration as exc:
        raise InvalidDuration(value, field=field) from exc


def _state_document(secret: Secret) -> dict[str, Any]:
    """A write's answer: the secret's metadata and its new version, never the value."""
    return {
        "path": secret.path,
        "secret_type": secret.secret_type,
        "version": secret.current_version,
        "current_version": secret.current_version,
        "version_count": len(secret.versions),
        "max_versions": secret.max_versions,
        "metadata": secret.metadata,
        "created_at": secret.created_at,
        "updated_at": secret.updated_at,
        "expires_at": secret.expires_at,
        "rotation_policy_id": secret.rotation_policy_id,
        "secret_policy_id": secret.secret_policy_id,
        "deleted": secret.deleted_at is not None,
    }


class SecretWritesApi:
    def __init__(self, callers: Callers, commands: SecretCommands, metrics: Metrics) -> None:
        self._callers = callers
        self._commands = commands
        self._metrics = metrics

    async def _changing(self, request: web.Request, scope: str) -> tuple[SecretAddress, Actor]:
        """The secret the request changes, and the actor: the caller, holding the scope ``secrets:<permission>``.
        The command checks the caller's policies on the path before anything is looked up."""
        who = await self._callers.with_scope(request, scope)
        return address_of(request, who), actor_of(request, who)

    async def write_secret(self, request: web.Request) -> web.Response:
        address, actor = await self._changing(request, "secrets:write")
        body = parse_body(WriteSecretIn, await read_json_object(request, opaque=frozenset({"data"})))
        options = body.options
        command = WriteSecret(
            address=address,
            data=body.data,
            secret_type=check_secret_type(body.secret_type) if body.secret_type is not None else None,
            metadata=body.metadata.document() if body.metadata is not None else None,
            max_versions=options.max_versions if options else None,
            expires_in=_duration(options.expires_in if options else None, "options.expires_in"),
            rotation_policy_id=options.rotation_policy_id if options else None,
            cas=options.cas if options else None,
            secret_policy_id=options.secret_policy_id if options else None,
        )
        secret, _ = await self._commands.write(command, actor, request[ACCESS])
        self._metrics.secret_writes.labels(address.owner).inc()
        return committed_response(request, _state_document(secret))

    async def update_metadata(self, request: web.Request) -> web.Response:
        address, actor = await self._changing(request, "secrets:write")
        body = parse_body(MetadataPatchIn, await read_json_object(request))
        check_metadata_patch(body.metadata)
        given = body.model_fields_set  # an explicit null clears; a field left out keeps
        command = UpdateSecretMetadata(
            address=address,
            metadata_patch=body.metadata,
            secret_type=check_secret_type(body.secret_type) if body.secret_type is not None else None,
            max_versions=body.max_versions,
            expires_in=_duration(body.expires_in, "expires_in"),
            clear_expiry="expires_at" in given,
            rotation_policy_id=body.rotation_policy_id,
            secret_policy_id=body.secret_policy_id,
            clear_rotation_policy="rotation_policy_id" in given and body.rotation_policy_id is None,
            clear_secret_policy="secret_policy_id" in given and body.secret_policy_id is None,
        )
        secret = await self._commands.update_metadata(command, actor, request[ACCESS])
        return json_response(_state_document(secret))

    async def delete_secret(self, request: web.Request) -> web.Response:
        address, actor = await self._changing(request, "secrets:delete")
        query = parse_query(DeleteQuery, request)
        access = request[ACCESS]
        if query.version is not None:
            if not query.permanent:
                raise InvalidRequest("Deleting one version destroys it: add permanent=true", parameter="permanent")
            await self._commands.destroy_version(address, query.version, actor, access)
            return json_response({"path": address.path, "permanent": True, "destroyed_versions": [query.version]})
        if query.permanent:
            destroyed = await self._commands.destroy(address, actor, access)
            return json_response({"path": address.path, "permanent": True, "destroyed_versions": destroyed})
        secret = await self._commands.delete(address, actor, access)
        return json_response(
            {
                "path": address.path,
                "permanent": False,
                "deleted_at": secret.deleted_at,
                "recoverable_until": secret.recoverable_until,
            }
        )

    async def restore_secret(self, request: web.Request) -> web.Response:
        address, actor = await self._changing(request, "secrets:delete")
        secret = await self._commands.restore(address, actor, request[ACCESS])
        return json_response(_state_document(secret))

