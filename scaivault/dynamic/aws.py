"""AWS dynamic credentials through boto3 (the ``aws`` extra): an IAM user with an access key per lease, or STS
temporary credentials from ``AssumeRole``. boto3 blocks, so every call runs in a thread.

The root credentials are the engine's own keys, never the server's: without them the backend refuses to act (boto3
would otherwise fall back to the server's ambient role). Every request goes to an address the egress guard checked
(``scaivault/egress_botocore.py``): the configured ``iam_endpoint``/``sts_endpoint`` (an emulator, a private
endpoint), or the public endpoint botocore resolves for the region.

STS credentials cannot be revoked at the source: they end at their expiration, which ``AssumeRole`` cannot make
shorter than 15 minutes, so such a lease may outlive its TTL by up to that much.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from scaivault import egress
from scaivault.dynamic.port import (
    CreatedCredential,
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetRefused,
    TargetUnavailable,
)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 20
IAM_PATH = "/scaivault/"
INLINE_POLICY_NAME = "scaivault-inline"
LEASE_TAG = "scaivault-lease-id"
STS_MIN_SECONDS = 900
STS_MAX_SECONDS = 43200
AUTH_CODES = frozenset({
    "InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
    "UnrecognizedClientException", "InvalidAccessKeyId", "ExpiredToken", "ExpiredTokenException",
    "IncompleteSignature", "MissingAuthenticationToken", "AuthFailure", "UnauthorizedOperation",
    "InvalidSignatureException", "NotAuthorized",
})
_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]", re.ASCII)
_T = TypeVar("_T")


def aws_name(name: str) -> str:
    """IAM user and STS session names allow 64 characters of ``[\\w+=,.@-]``; the domain's usernames may be longer."""
    return _NAME_UNSAFE.sub("_", name)[:64]


def sts_duration(issued_at: datetime, expires_at: datetime) -> int:
    """STS accepts 15 minutes to 12 hours (the role's own maximum may be lower, and AWS then refuses)."""
    return max(STS_MIN_SECONDS, min(STS_MAX_SECONDS, int((expires_at - issued_at).total_seconds())))


def _policy_text(document: Any) -> str | None:
    if document is None or document == "" or document == {}:
        return None
    return document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))


def _code(exc: Any) -> str:
    error = exc.response.get("Error", {}) if isinstance(getattr(exc, "response", None), dict) else {}
    return "".join(c for c in str(error.get("Code", "")) if c.isalnum() or c in ".-_")[:64] or "an unrecognised error"


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and _code(exc) == "NoSuchEntity"


def _refusal(exc: BaseException) -> TargetRefused | TargetUnavailable:
    """Translate what boto3 raised. AWS's own error messages name resources and actions, never a secret key; the
    keys travel only in the signature, which no message repeats."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in AUTH_CODES:
            return TargetRefused(f"AWS refused: {code}")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(exc.response.get("Error", {}).get("Message", ""))[:300]
        if code in ("Throttling", "ThrottlingException", "ServiceUnavailable", "InternalFailure") or (
            isinstance(status, int) and status >= 500
        ):
            return TargetUnavailable(f"AWS {exc.operation_name}: {code}: {message}")
        return TargetRefused(f"AWS {exc.operation_name}: {code}: {message}")
    if isinstance(exc, egress.EgressRefused):
        return _egress_refusal(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, egress.EgressRefused):
        return _egress_refusal(cause)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return TargetRefused("AWS: the root credentials are incomplete")
    if isinstance(exc, ParamValidationError):
        return TargetRefused(f"AWS: the request was invalid: {str(exc)[:300]}")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError,
                        HTTPClientError)):
        return TargetUnavailable(f"AWS could not be reached ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return TargetUnavailable(f"AWS: the request failed ({type(exc).__name__})")
    return TargetRefused(f"AWS: the request failed ({type(exc).__name__})")


def _egress_refusal(refused: egress.EgressRefused) -> TargetRefused | TargetUnavailable:
    """A host that did not resolve (a name, no address) may resolve later; an address refused will not change."""
    if refused.host is not None and refused.address is None:
        return TargetUnavailable(f"AWS: {refused.public_message}")
    return TargetRefused(f"AWS: {refused.public_message}")


class AwsBackend:
    """One engine's AWS account, reached with its root keys (``access_key_id``, ``secret_access_key``, optional
    ``session_token``) and its config (``region``, optional ``iam_endpoint`` and ``sts_endpoint``)."""

    def __init__(self, target: EngineTarget) -> None:
        root = target.root
        access_key_id = root.get("access_key_id")
        secret_access_key = root.get("secret_access_key")
        session_token = root.get("session_token")
        self._keys: tuple[str | None, str | None, str | None] = (
            str(access_key_id) if access_key_id else None,
            str(secret_access_key) if secret_access_key else None,
            str(session_token) if session_token else None,
        )
        self._root_region = root.get("region")
        self._region = str(target.config.get("region") or "us-east-1")
        self._endpoints = {
            "iam": target.config.get("iam_endpoint") or None,
            "sts": target.config.get("sts_endpoint") or None,
        }
        self._allow = tuple(target.egress_allow)
        self._clients: dict[str, Any] | None = None
        self._closing: list[Any] = []
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AwsBackend(region={self._region!r})"

    # ---- clients ---------------------------------------------------------------------------------------------------

    async def _open(self) -> dict[str, Any]:
        async with self._lock:
            if self._clients is None:
                access_key_id, secret_access_key, _ = self._keys
                if not access_key_id or not secret_access_key:
                    raise TargetRefused(
                        "AWS: the root credentials need access_key_id and secret_access_key (this server does not "
                        "lend its own AWS role)"
                    )
                try:
                    clients = await asyncio.to_thread(self._build)
                except ValueError:
                    raise TargetRefused("AWS: an endpoint URL in the engine's config is invalid") from None
                closing: list[Any] = list(clients.values())
                try:
                    for client in clients.values():
                        target = await egress.pin_url(client.meta.endpoint_url, self._allow)
                        closing.insert(0, await asyncio.to_thread(self._pin, client, target))
                except egress.EgressRefused as refused:
                    await asyncio.to_thread(_close_all, closing)
                    raise _egress_refusal(refused) from None
                self._clients, self._closing = clients, closing
            return self._clients

    def _build(self) -> dict[str, Any]:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"}, ignore_configured_endpoint_urls=True,
        )
        access_key_id, secret_access_key, session_token = self._keys
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token, region_name=self._region,
        )
        return {
            service: session.client(service, endpoint_url=self._endpoints[service], config=config)
            for service in ("iam", "sts")
        }

    @staticmethod
    def _pin(client: Any, target: egress.PinnedTarget) -> Any:
        from scaivault.egress_botocore import pin_client

        return pin_client(client, target)

    async def _run(self, work: Callable[[dict[str, Any]], _T]) -> _T:
        clients = await self._open()
        try:
            return await asyncio.to_thread(work, clients)
        except (TargetRefused, TargetUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - the port lets only TargetRefused and TargetUnavailable out
            raise _refusal(exc) from None

    # ---- the port --------------------------------------------------------------------------------------------------

    async def verify(self) -> None:
        """GetCallerIdentity proves the keys; GetUser proves IAM answers them (skipped for session credentials,
        which IAM's GetUser does not accept without a user name)."""

        def work(clients: dict[str, Any]) -> None:
            clients["sts"].get_caller_identity()
            if self._keys[2] is None:
                clients["iam"].get_user()

        await self._run(work)

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        kind = role.settings.get("credential_type", "iam_user")
        if kind == "iam_user":
            return await self._run(lambda clients: _create_iam_user(clients["iam"], role, credential))
        if kind == "assumed_role":
            return await self._run(lambda clients: _assume_role(clients["sts"], role, credential))
        raise TargetRefused(f"AWS: unknown credential_type {str(kind)[:32]!r} (iam_user or assumed_role)")

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        """An IAM user's key has no expiry on AWS (the server revokes it when the lease ends); STS credentials cannot
        be extended. Nothing to do on the target."""

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        """Deletes the lease's IAM user and everything attached to it; an STS lease has nothing to revoke (its
        credentials end at their expiration)."""
        name = revocation.get("iam_user")
        if not name and role.settings.get("credential_type", "iam_user") == "iam_user" and username:
            name = aws_name(username)
        if not name:
            return
        await self._run(lambda clients: _delete_iam_user(clients["iam"], str(name)))

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        """A new access key for the IAM user the root keys belong to, then the old key deleted (with the old key,
        which still works while the new one propagates). If the old key cannot be deleted, the new one is deleted
        again, so the user never keeps a key the server does not know."""
        old_key = self._keys[0]
        if self._keys[2] is not None:
            raise TargetRefused("AWS: root credentials with a session token cannot be rotated")

        def work(clients: dict[str, Any]) -> dict[str, Any]:
            iam = clients["iam"]
            user = iam.get_user()["User"]
            if str(user.get("Arn", "")).endswith(":root"):
                raise TargetRefused("AWS: the root keys belong to the account's root user, not an IAM user")
            name = user["UserName"]
            created = iam.create_access_key(UserName=name)["AccessKey"]
            try:
                iam.delete_access_key(UserName=name, AccessKeyId=old_key)
            except Exception:
                try:
                    iam.delete_access_key(UserName=name, AccessKeyId=created["AccessKeyId"])
                except Exception:  # noqa: BLE001 - the first failure is the one to report
                    pass
                raise
            return {"access_key_id": created["AccessKeyId"], "secret_access_key": created["SecretAccessKey"]}

        data = await self._run(work)
        if self._root_region is not None:
            data["region"] = self._root_region
        await self.close()
        self._keys = (data["access_key_id"], data["secret_access_key"], None)
        return data

    async def close(self) -> None:
        async with self._lock:
            closing, self._closing, self._clients = self._closing, [], None
        if closing:
            await asyncio.to_thread(_close_all, closing)


def _close_all(resources: list[Any]) -> None:
    for resource in resources:
        try:
            resource.close()
        except Exception:  # noqa: BLE001 - closing is best effort, one failure must not keep the rest open
            pass


def _create_iam_user(iam: Any, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
    settings = role.settings
    name = aws_name(credential.username)
    options: dict[str, Any] = {
        "UserName": name,
        "Path": IAM_PATH,
        "Tags": [{"Key": LEASE_TAG, "Value": credential.lease_id}],
    }
    if settings.get("permissions_boundary_arn"):
        options["PermissionsBoundary"] = str(settings["permissions_boundary_arn"])
    iam.create_user(**options)
    try:
        for arn in settings.get("policy_arns") or ():
            iam.attach_user_policy(UserName=name, PolicyArn=str(arn))
        document = _policy_text(settings.get("policy_document"))
        if document is not None:
            iam.put_user_policy(UserName=name, PolicyName=INLINE_POLICY_NAME, PolicyDocument=document)
        for group in settings.get("iam_groups") or ():
            iam.add_user_to_group(UserName=name, GroupName=str(group))
        key = iam.create_access_key(UserName=name)["AccessKey"]
    except BaseException as failure:
        try:
            _delete_iam_user(iam, name)
        except Exception as undo:  # noqa: BLE001 - both failures are reported, as TargetRefused/Unavailable
            refusal = _refusal(failure)
            raise type(refusal)(f"{refusal}; removing the partly created user {name} also failed: "
                                f"{_refusal(undo)}") from None
        raise
    return CreatedCredential(
        data={"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
        revocation={"iam_user": name},
        renewable=True,
    )


def _delete_iam_user(iam: Any, name: str) -> None:
    """Every step tolerates NoSuchEntity: what is gone is what revoking wants."""
    steps: list[tuple[str, str, str, Callable[[Any], None]]] = [
        ("list_access_keys", "AccessKeyMetadata", "AccessKeyId",
         lambda key_id: iam.delete_access_key(UserName=name, AccessKeyId=key_id)),
        ("list_attached_user_policies", "AttachedPolicies", "PolicyArn",
         lambda arn: iam.detach_user_policy(UserName=name, PolicyArn=arn)),
        ("list_user_policies", "PolicyNames", "",
         lambda policy: iam.delete_user_policy(UserName=name, PolicyName=policy)),
        ("list_groups_for_user", "Groups", "GroupName",
         lambda group: iam.remove_user_from_group(UserName=name, GroupName=group)),
    ]
    try:
        for lister, field, key, delete in steps:
            items = [
                item[key] if key else item
                for page in iam.get_paginator(lister).paginate(UserName=name)
                for item in page.get(field) or []
            ]
            for item in items:
                _ignoring_missing(delete, item)
        iam.delete_user(UserName=name)
    except Exception as exc:
        if not _is_missing(exc):
            raise


def _ignoring_missing(action: Callable[[Any], None], item: Any) -> None:
    try:
        action(item)
    except Exception as exc:
        if not _is_missing(exc):
            raise


def _assume_role(sts: Any, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
    role_arn = role.settings.get("role_arn")
    if not role_arn:
        raise TargetRefused("AWS: an assumed_role role needs a role_arn")
    options: dict[str, Any] = {
        "RoleArn": str(role_arn),
        "RoleSessionName": aws_name(credential.username),
        "DurationSeconds": sts_duration(credential.issued_at, credential.expires_at),
    }
    document = _policy_text(role.settings.get("policy_document"))
    if document is not None:
        options["Policy"] = document
    issued = sts.assume_role(**options)["Credentials"]
    expiration = issued["Expiration"]
    return CreatedCredential(
        data={
            "access_key_id": issued["AccessKeyId"],
            "secret_access_key": issued["SecretAccessKey"],
            "session_token": issued["SessionToken"],
            "expiration": expiration.isoformat() if isinstance(expiration, datetime) else str(expiration),
        },
        revocation={},
        renewable=False,
    )
