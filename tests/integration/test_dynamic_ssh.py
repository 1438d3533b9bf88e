"""The SSH certificate authority checked by OpenSSH itself: ``ssh-keygen -L`` parses each certificate and shows its
type, key id, serial, principals, validity, options and signing CA, which must be what the role and the request asked
for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scaivault.dynamic.port import EngineTarget, NewCredential, RoleRecipe, TargetRefused
from scaivault.dynamic.ssh import CA_KEY_TYPES, SshBackend, generate_ca_key, public_key_of

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen is not installed")
USER_ROLE = RoleRecipe("ops", settings={
    "cert_type": "user", "allowed_users": ["alice", "deploy"], "default_user": "deploy",
    "critical_options": {"source-address": "10.0.0.0/8"},
})
HOST_ROLE = RoleRecipe("hosts", settings={"cert_type": "host", "allowed_domains": ["example.com"]})


def _keygen(*args: str) -> str:
    done = subprocess.run([SSH_KEYGEN, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TZ": "UTC"}, check=True)
    return done.stdout


def _listing(tmp_path: Path, signed_key: str) -> str:
    path = tmp_path / "id-cert.pub"
    path.write_text(signed_key + "\n")
    return _keygen("-L", "-f", str(path))


def _fingerprint(tmp_path: Path, public_line: str) -> str:
    path = tmp_path / "key.pub"
    path.write_text(public_line + "\n")
    return _keygen("-l", "-E", "sha256", "-f", str(path)).split()[1]


def _section(listing: str, title: str) -> list[str]:
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    if lines[start].strip() != f"{title}:" and lines[start].strip().endswith("(none)"):
        return []
    items = []
    for line in lines[start + 1:]:
        if not line.startswith("                "):
            break
        items.append(line.strip())
    return items


def _field(listing: str, name: str) -> str:
    match = re.search(rf"^\s+{name}: (.*)$", listing, re.MULTILINE)
    assert match, listing
    return match.group(1).strip()


def _credential(minutes: int = 60, **parameters: Any) -> NewCredential:
    now = datetime.now(UTC).replace(microsecond=0)
    return NewCredential("lease-0123", "unused", "unused", now, now + timedelta(minutes=minutes), parameters)


def _backend(key_type: str = "ed25519") -> tuple[SshBackend, str]:
    pem, public = generate_ca_key(key_type)
    return SshBackend(EngineTarget("ssh", {}, {}, private_key_pem=pem)), public


def _subject_public(key: Any) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode())


@pytest.mark.parametrize("key_type", CA_KEY_TYPES)
async def test_a_user_certificate_as_openssh_reads_it(tmp_path: Path, key_type: str) -> None:
    backend, ca_public = _backend(key_type)
    await backend.verify()
    subject = ec.generate_private_key(ec.SECP256R1())
    credential = _credential(public_key=_subject_public(subject), valid_principals=["alice", "deploy"])
    created = await backend.create(USER_ROLE, credential)

    assert "private_key" not in created.data
    assert created.renewable is False
    assert created.revocation == {"serial": created.data["serial_number"]}
    assert created.data["valid_principals"] == ["alice", "deploy"]
    listing = _listing(tmp_path, created.data["signed_key"])
    assert _field(listing, "Type") == "ecdsa-sha2-nistp256-cert-v01@openssh.com user certificate"
    assert _field(listing, "Key ID") == '"lease-0123"'
    assert _field(listing, "Serial") == created.data["serial_number"]
    after = (credential.issued_at - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    before = credential.expires_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert _field(listing, "Valid") == f"from {after} to {before}"
    assert _section(listing, "Principals") == ["alice", "deploy"]
    assert _section(listing, "Critical Options") == ["source-address 10.0.0.0/8"]
    assert _section(listing, "Extensions") == [
        "permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc",
    ]
    signing_ca = _field(listing, "Signing CA")
    assert _fingerprint(tmp_path, ca_public) in signing_ca
    assert public_key_of(backend_pem(backend)) == ca_public
    assert _fingerprint(tmp_path, _subject_public(subject)) in _field(listing, "Public key")


def backend_pem(backend: SshBackend) -> bytes:
    pem = backend._pem  # noqa: SLF001 - the test reads back the key it gave
    assert pem is not None
    return pem


async def test_default_principal_and_generated_key_pair(tmp_path: Path) -> None:
    backend, _ = _backend()
    created = await backend.create(USER_ROLE, _credential())
    assert created.data["valid_principals"] == ["deploy"]
    private = serialization.load_ssh_private_key(created.data["private_key"].encode(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert created.data["public_key"] == _subject_public(private)
    listing = _listing(tmp_path, created.data["signed_key"])
    assert _section(listing, "Principals") == ["deploy"]
    assert _fingerprint(tmp_path, _subject_public(private)) in _field(listing, "Public key")
    key_path = tmp_path / "id_ed25519"
    key_path.write_text(created.data["private_key"])
    key_path.chmod(0o600)
    assert _keygen("-y", "-f", str(key_path)).split()[:2] == created.data["public_key"].split()[:2]


async def test_principals_outside_the_role_are_refused() -> None:
    backend, _ = _backend()
    subject = _subject_public(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(TargetRefused, match="'root' is not in the role's allowed_users"):
        await backend.create(USER_ROLE, _credential(public_key=subject, valid_principals=["alice", "root"]))
    anyone = RoleRecipe("any", settings={"allowed_users": ["*"]})
    with pytest.raises(TargetRefused, match="valid_principals is required"):
        await backend.create(anyone, _credential(public_key=subject))
    for bad in ("*", "a,b", "al ice", ""):
        with pytest.raises(TargetRefused, match="not a valid name"):
            await backend.create(anyone, _credential(public_key=subject, valid_principals=[bad]))
    created = await backend.create(anyone, _credential(public_key=subject, valid_principals=["whoever"]))
    assert created.data["valid_principals"] == ["whoever"]


async def test_bad_public_keys_are_refused() -> None:
    backend, _ = _backend()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(TargetRefused, match="at least 2048 bits"):
        await backend.create(USER_ROLE, _credential(public_key=_subject_public(weak)))
    with pytest.raises(TargetRefused, match="not an OpenSSH public key"):
        await backend.create(USER_ROLE, _credential(public_key="ssh-ed25519 not-base64"))


async def test_a_host_certificate(tmp_path: Path) -> None:
    backend, _ = _backend("ecdsa-p256")
    subject = _subject_public(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    created = await backend.create(
        HOST_ROLE, _credential(public_key=subject, valid_principals=["web1.example.com", "example.com"])
    )
    listing = _listing(tmp_path, created.data["signed_key"])
    assert _field(listing, "Type") == "ssh-rsa-cert-v01@openssh.com host certificate"
    assert _section(listing, "Principals") == ["web1.example.com", "example.com"]
    assert _section(listing, "Critical Options") == []
    assert _section(listing, "Extensions") == []
    with pytest.raises(TargetRefused, match="allowed_domains"):
        await backend.create(HOST_ROLE, _credential(public_key=subject, valid_principals=["evil-example.com"]))


async def test_revoke_and_rotate() -> None:
    backend, _ = _backend()
    await backend.revoke(USER_ROLE, "unused", {"serial": "1"})
    with pytest.raises(TargetRefused, match="no root credentials"):
        await backend.rotate_root("ignored")
    with pytest.raises(TargetRefused, match="no CA key"):
        await SshBackend(EngineTarget("ssh", {}, {})).verify()
    with pytest.raises(ValueError, match="unknown CA key type"):
        generate_ca_key("dsa")
