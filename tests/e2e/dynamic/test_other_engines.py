"""The other engines over HTTP, each against its real target on this machine: MariaDB users, Redis ACL users, IAM
users on moto's IAM (AWS's API on loopback) and SSH certificates checked with ``ssh-keygen``. Each: the engine
verified on creation, a role, credentials that work, and nothing left after revoke."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from moto.server import ThreadedMotoServer

from scaivault.bootstrap import Container
from tests.dynamic_targets import DatabaseAdmin, mariadb_admin, redis_admin  # noqa: F401
from tests.e2e.dynamic.helpers import admin_headers, create_engine, issue
from tests.e2e.helpers import error_of

AWS_KEYS = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


def revoke(client: TestClient, headers: dict[str, str], lease: dict[str, Any]) -> Any:
    return client.post(f"/v1/dynamic/leases/{lease['lease_id']}/revoke", headers=headers)


async def test_mariadb(client: TestClient, container: Container, mariadb_admin: DatabaseAdmin) -> None:  # noqa: F811
    headers = admin_headers(container)
    db = mariadb_admin
    await create_engine(client, headers, {"name": "maria", "type": "database", "config": {
        "plugin": "mysql",
        "connection_url": f"mysql://{{{{username}}}}:{{{{password}}}}@{db.host}:{db.port}/{db.database}"}},
        {"username": db.admin_user, "password": db.admin_password})
    response = await client.put("/v1/dynamic/engines/maria/roles/reader", headers=headers, json={
        "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                                f"GRANT SELECT ON `{db.database}`.* TO '{{{{name}}}}'@'%';"]})
    assert response.status == 201, await response.text()
    lease = await issue(client, headers, "maria", "reader")

    def login() -> None:
        pymysql.connect(host=db.host, port=db.port, user=lease["data"]["username"],
                        password=lease["data"]["password"], database=db.database).close()

    await asyncio.to_thread(login)
    assert (await revoke(client, headers, lease)).status == 200
    with pytest.raises(pymysql.err.OperationalError):
        await asyncio.to_thread(login)


async def test_redis(client: TestClient, container: Container, redis_admin: DatabaseAdmin) -> None:  # noqa: F811
    headers = admin_headers(container)
    admin = redis_admin
    await create_engine(client, headers, {"name": "cache", "type": "database", "config": {
        "plugin": "redis", "connection_url": f"redis://{{{{username}}}}:{{{{password}}}}@{admin.host}:{admin.port}/0"}},
        {"username": admin.admin_user, "password": admin.admin_password})
    response = await client.put("/v1/dynamic/engines/cache/roles/reader", headers=headers,
                                json={"creation_statements": ["~dyn:* +get"]})
    assert response.status == 201, await response.text()
    lease = await issue(client, headers, "cache", "reader")
    user = aioredis.Redis(host=admin.host, port=admin.port, username=lease["data"]["username"],
                          password=lease["data"]["password"])
    try:
        assert await user.get("dyn:nothing") is None
        with pytest.raises(aioredis.ResponseError):  # NOPERM: not granted
            await user.set("dyn:x", "1")
    finally:
        await user.aclose()
    assert (await revoke(client, headers, lease)).status == 200
    gone = aioredis.Redis(host=admin.host, port=admin.port, username=lease["data"]["username"],
                          password=lease["data"]["password"])
    try:
        with pytest.raises((aioredis.AuthenticationError, aioredis.ResponseError)):
            await gone.ping()
    finally:
        await gone.aclose()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


async def test_aws_iam_users(client: TestClient, container: Container, moto_endpoint: str) -> None:
    headers = admin_headers(container)
    await create_engine(client, headers, {"name": "aws-dev", "type": "aws", "config": {
        "region": "us-east-1", "iam_endpoint": moto_endpoint, "sts_endpoint": moto_endpoint}}, AWS_KEYS)
    response = await client.put("/v1/dynamic/engines/aws-dev/roles/reader", headers=headers,
                                json={"policy_document": {"Version": "2012-10-17", "Statement": [
                                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}})
    assert response.status == 201, await response.text()
    lease = await issue(client, headers, "aws-dev", "reader", ttl="15m")
    keys = lease["data"]
    assert set(keys) >= {"access_key_id", "secret_access_key"} and lease["renewable"] is True

    def whoami() -> str:
        sts = boto3.client("sts", endpoint_url=moto_endpoint, region_name="us-east-1",
                           aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])
        return str(sts.get_caller_identity()["Arn"])

    assert lease["data"]["access_key_id"] and "user/" in await asyncio.to_thread(whoami)
    assert (await revoke(client, headers, lease)).status == 200
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1",
                       aws_access_key_id=AWS_KEYS["access_key_id"], aws_secret_access_key=AWS_KEYS["secret_access_key"])
    users = await asyncio.to_thread(lambda: [u["UserName"] for u in iam.list_users()["Users"]])
    assert not [u for u in users if u.startswith("v_reader_")]


async def test_ssh_certificates(client: TestClient, container: Container, tmp_path: Path) -> None:
    headers = admin_headers(container)
    engine = await create_engine(client, headers, {"name": "bastion", "type": "ssh", "default_ttl": "10m"})
    response = await client.put("/v1/dynamic/engines/bastion/roles/ops", headers=headers,
                                json={"allowed_users": ["ubuntu"], "default_user": "ubuntu"})
    assert response.status == 201, await response.text()
    key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    lease = await issue(client, headers, "bastion", "ops", public_key=key)
    assert lease["renewable"] is False
    certificate = tmp_path / "key-cert.pub"
    certificate.write_text(lease["data"]["signed_key"] + "\n")
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(certificate)], capture_output=True, text=True, check=True)
    assert "ubuntu" in shown.stdout and lease["lease_id"] in shown.stdout
    ca = (await (await client.get("/v1/dynamic/engines/bastion/public-key", headers=headers)).json())["public_key"]
    assert ca == engine["public_key"]
    ca_file = tmp_path / "ca.pub"
    ca_file.write_text(ca + "\n")
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(ca_file)], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    assert f"Signing CA: ED25519 {fingerprint}" in shown.stdout
    assert await error_of(await client.post(f"/v1/dynamic/leases/{lease['lease_id']}/renew", headers=headers)) == (
        409, "lease_not_renewable")
    response = await client.post("/v1/dynamic/engines/bastion/creds/ops", headers=headers,
                                 json={"public_key": key, "valid_principals": ["root"]})
    assert response.status == 400  # a principal the role does not allow
