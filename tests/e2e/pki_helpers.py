"""What the PKI end-to-end tests share: callers, requests, ``openssl`` as a relying party runs it, CSRs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from scaivault.bootstrap import Container
from tests.e2e.conftest import PARTNER, TENANT
from tests.e2e.helpers import caller_token

PKI_SCOPES = ("pki:admin", "pki:issue")
ACCESS_TOPIC = "scaivault.domain.access:AccessRecorded"


def pki_admin(container: Container, tenant: str = TENANT, partner: str = PARTNER) -> dict[str, str]:
    return caller_token(container, *PKI_SCOPES, identity="user:admin@acme.example", tenant=tenant, partner=partner,
                        roles=("tenant_admin",))


def pki_issuer(container: Container, tenant: str = TENANT) -> dict[str, str]:
    """A workload: ``pki:issue`` and no role, as a service account holding a role's grant would be."""
    return caller_token(container, "pki:issue", identity="sa:issuer", tenant=tenant)


async def post(client: TestClient, path: str, headers: dict[str, str], body: dict[str, Any],
               status: int = 201) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    document = await response.json()
    assert response.status == status, document
    return dict(document)


async def get(client: TestClient, path: str, headers: dict[str, str], status: int = 200) -> dict[str, Any]:
    response = await client.get(path, headers=headers)
    document = await response.json()
    assert response.status == status, document
    return dict(document)


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error envelope of a refused request, checked for its status and code."""
    body = await response.json()
    assert response.status == status, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def fields_of(error: dict[str, Any]) -> list[str]:
    return [problem["field"] for problem in error.get("details", {}).get("fields", [])]


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    if stdin is not None:
        done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=stdin, timeout=30)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


async def create_ca(client: TestClient, headers: dict[str, str], name: str, *, status: int = 201,
                    **fields: Any) -> dict[str, Any]:
    body = {"name": name, "common_name": f"{name} CA", "ca_type": "root", **fields}
    return await post(client, "/v1/pki/ca", headers, body, status=status)


async def create_role(client: TestClient, headers: dict[str, str], name: str, ca_id: str, *, status: int = 201,
                      **settings: Any) -> dict[str, Any]:
    return await post(client, "/v1/pki/roles", headers, {"name": name, "ca_id": ca_id, **settings}, status=status)


async def build_hierarchy(client: TestClient, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tutorial's root, intermediate and ``svc-mtls`` role."""
    root = await post(client, "/v1/pki/ca", headers, {
        "name": "acme-root", "common_name": "Acme Root CA", "ca_type": "root", "key_type": "ec", "key_size": 256,
        "validity_days": 3650,
    })
    intermediate = await post(client, "/v1/pki/ca", headers, {
        "name": "acme-mtls-intermediate", "common_name": "Acme mTLS Intermediate", "ca_type": "intermediate",
        "parent_ca_id": root["id"], "key_type": "ec", "key_size": 256, "validity_days": 1825,
    })
    await post(client, "/v1/pki/roles", headers, {
        "name": "svc-mtls", "ca_id": intermediate["id"], "allowed_domains": ["*.svc.cluster.local", "*.internal"],
        "max_ttl": "720h",
    })
    return root, intermediate


async def event_count(container: Container) -> int:
    """Events other than access records: what a command would have appended."""
    return int(await container.pool.fetchval(f"SELECT count(*) FROM scaivault_events WHERE topic <> '{ACCESS_TOPIC}'"))


def make_key(kind: str = "ec256") -> Any:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP384R1() if kind == "ec384" else ec.SECP256R1())


def make_csr(key: Any, common_name: str | None = None, *, dns_names: tuple[str, ...] = (),
             extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
             general_names: tuple[x509.GeneralName, ...] = ()) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    names = [x509.DNSName(n) for n in dns_names] + list(general_names)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path
