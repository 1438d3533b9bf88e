"""The AWS dynamic-secrets backend against moto's IAM and STS in server mode on loopback (real HTTP endpoints,
reached through the egress guard's pinned botocore sender): IAM users created, used and revoked, a failed creation
undone, STS credentials usable, root key rotation, and the guard refusing loopback when it is not allowed. moto does
not check signatures, so what is shown is what the keys are bound to (GetUser / GetCallerIdentity answer with the
user or session the key belongs to), not that AWS would refuse a deleted key."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from scaivault.dynamic.aws import AwsBackend
from scaivault.dynamic.port import EngineTarget, NewCredential, RoleRecipe, TargetRefused, TargetUnavailable
from tests.e2e.helpers import free_port

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ADMIN_KEYS = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
READ_ONLY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


def _client(service: str, endpoint: str, keys: dict[str, str]) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"],
                        aws_session_token=keys.get("session_token"))


def _target(endpoint: str, root: dict[str, str], allow: tuple[Any, ...] = LOOPBACK) -> EngineTarget:
    return EngineTarget("aws", {"region": "us-east-1", "iam_endpoint": endpoint, "sts_endpoint": endpoint}, root,
                        egress_allow=allow)


@pytest.fixture
def token() -> str:
    return "t" + secrets.token_hex(5)


@pytest.fixture
async def backend(moto_endpoint: str) -> AsyncIterator[AwsBackend]:
    backend = AwsBackend(_target(moto_endpoint, ADMIN_KEYS))
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def managed_policy(moto_endpoint: str, token: str) -> Iterator[str]:
    iam = _client("iam", moto_endpoint, ADMIN_KEYS)
    arn = str(iam.create_policy(PolicyName=f"{token}-read", PolicyDocument=json.dumps(READ_ONLY))["Policy"]["Arn"])
    try:
        yield arn
    finally:
        iam.delete_policy(PolicyArn=arn)


def _credential(token: str, minutes: int = 60, **parameters: Any) -> NewCredential:
    now = datetime.now(UTC)
    return NewCredential(lease_id=f"lease-{token}", username=f"{token}_app_user", password="unused",
                         issued_at=now, expires_at=now + timedelta(minutes=minutes), parameters=parameters)


def _user_exists(endpoint: str, name: str) -> bool:
    try:
        _client("iam", endpoint, ADMIN_KEYS).get_user(UserName=name)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchEntity"
        return False
    return True


async def test_verify_with_the_root_keys(backend: AwsBackend) -> None:
    await backend.verify()


async def test_iam_user_created_used_and_revoked(
    backend: AwsBackend, moto_endpoint: str, managed_policy: str, token: str
) -> None:
    iam = _client("iam", moto_endpoint, ADMIN_KEYS)
    iam.create_group(GroupName=f"{token}-devs")
    role = RoleRecipe("app", settings={"credential_type": "iam_user", "policy_arns": [managed_policy],
                                       "policy_document": json.dumps(READ_ONLY), "iam_groups": [f"{token}-devs"]})
    try:
        created = await backend.create(role, _credential(token))
        name = created.revocation["iam_user"]
        assert name == f"{token}_app_user"
        assert set(created.data) == {"access_key_id", "secret_access_key"}
        assert created.renewable is True

        user = iam.get_user(UserName=name)["User"]
        assert user["Path"] == "/scaivault/"
        assert {"Key": "scaivault-lease-id", "Value": f"lease-{token}"} in iam.list_user_tags(UserName=name)["Tags"]
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [managed_policy]
        assert iam.list_user_policies(UserName=name)["PolicyNames"] == ["scaivault-inline"]
        assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=name)["Groups"]] == [f"{token}-devs"]

        keys = {"access_key_id": created.data["access_key_id"], "secret_access_key": created.data["secret_access_key"]}
        assert _client("iam", moto_endpoint, keys).get_user()["User"]["UserName"] == name
        assert _client("sts", moto_endpoint, keys).get_caller_identity()["Arn"].endswith(f"user/scaivault/{name}")

        await backend.revoke(role, f"{token}_app_user", created.revocation)
        assert not _user_exists(moto_endpoint, name)
        assert iam.get_group(GroupName=f"{token}-devs")["Users"] == []
        assert _client("iam", moto_endpoint, keys).get_user()["User"]["UserName"] != name  # the key is unknown now
        await backend.revoke(role, f"{token}_app_user", created.revocation)
    finally:
        iam.delete_group(GroupName=f"{token}-devs")


async def test_a_failed_creation_leaves_no_user(backend: AwsBackend, moto_endpoint: str, token: str) -> None:
    role = RoleRecipe("broken", settings={
        "credential_type": "iam_user", "policy_document": READ_ONLY,
        "policy_arns": [f"arn:aws:iam::123456789012:policy/{token}-does-not-exist"],
    })
    with pytest.raises(TargetRefused, match="AWS AttachUserPolicy: NoSuchEntity") as refused:
        await backend.create(role, _credential(token))
    assert ADMIN_KEYS["secret_access_key"] not in str(refused.value)
    assert not _user_exists(moto_endpoint, f"{token}_app_user")


async def test_assumed_role_credentials_work(backend: AwsBackend, moto_endpoint: str, token: str) -> None:
    iam = _client("iam", moto_endpoint, ADMIN_KEYS)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=f"{token}-deployer", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    try:
        role = RoleRecipe("deployer", settings={"credential_type": "assumed_role", "role_arn": arn,
                                                "policy_document": READ_ONLY})
        created = await backend.create(role, _credential(token, minutes=5))
        assert created.renewable is False
        assert created.revocation == {}
        assert set(created.data) == {"access_key_id", "secret_access_key", "session_token", "expiration"}
        expiration = datetime.fromisoformat(created.data["expiration"])
        assert expiration - datetime.now(UTC) > timedelta(minutes=14)  # clamped up to STS's 15 minutes
        session = {"access_key_id": created.data["access_key_id"],
                   "secret_access_key": created.data["secret_access_key"],
                   "session_token": created.data["session_token"]}
        identity = _client("sts", moto_endpoint, session).get_caller_identity()
        assert identity["Arn"].endswith(f"assumed-role/{token}-deployer/{token}_app_user")
        await backend.revoke(role, f"{token}_app_user", created.revocation)
    finally:
        iam.delete_role(RoleName=f"{token}-deployer")


async def test_rotate_root_replaces_the_key(moto_endpoint: str, token: str) -> None:
    iam = _client("iam", moto_endpoint, ADMIN_KEYS)
    name = f"{token}-vault-root"
    iam.create_user(UserName=name)
    old = iam.create_access_key(UserName=name)["AccessKey"]
    root = {"access_key_id": old["AccessKeyId"], "secret_access_key": old["SecretAccessKey"], "region": "eu-west-1"}
    backend = AwsBackend(_target(moto_endpoint, root))
    try:
        rotated = await backend.rotate_root("ignored")
        assert set(rotated) == {"access_key_id", "secret_access_key", "region"}
        assert rotated["region"] == "eu-west-1"
        assert rotated["access_key_id"] != old["AccessKeyId"]
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        assert [k["AccessKeyId"] for k in keys] == [rotated["access_key_id"]]
        assert _client("iam", moto_endpoint, rotated).get_user()["User"]["UserName"] == name
        await backend.verify()  # the backend now acts with the new key
        assert (await backend.rotate_root("ignored"))["access_key_id"] != rotated["access_key_id"]
    finally:
        await backend.close()
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        iam.delete_user(UserName=name)


async def test_the_egress_guard_refuses_loopback_unless_allowed(moto_endpoint: str) -> None:
    backend = AwsBackend(_target(moto_endpoint, ADMIN_KEYS, allow=()))
    try:
        with pytest.raises(TargetRefused, match="Refused to connect"):
            await backend.verify()
    finally:
        await backend.close()


async def test_an_endpoint_nobody_listens_on_is_unavailable() -> None:
    backend = AwsBackend(_target(f"http://127.0.0.1:{free_port()}", ADMIN_KEYS))
    try:
        with pytest.raises(TargetUnavailable, match="could not be reached"):
            await asyncio.wait_for(backend.verify(), timeout=30)
    finally:
        await backend.close()


async def test_without_root_keys_the_servers_own_role_is_not_lent(moto_endpoint: str) -> None:
    backend = AwsBackend(_target(moto_endpoint, {"region": "us-east-1"}))
    with pytest.raises(TargetRefused, match="does not lend"):
        await backend.verify()
    assert ADMIN_KEYS["secret_access_key"] not in repr(AwsBackend(_target(moto_endpoint, ADMIN_KEYS)))
