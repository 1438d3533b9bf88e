"""An SSH certificate authority: each lease is a certificate signed with the engine's CA key (``cryptography``'s
``SSHCertificateBuilder`` writes the OpenSSH format). There is no target system to reach: the CA key comes from the
engine's sealed store, opened by the command.

A certificate cannot be revoked at the source: it ends at its ``valid_before`` (the lease's expiry). Revoking one
early would need a KRL distributed to every server, which this engine does not do; ``revoke`` does nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from scaivault.dynamic.port import CreatedCredential, EngineTarget, NewCredential, RoleRecipe, TargetRefused

CA_KEY_TYPES = ("ed25519", "ecdsa-p256", "rsa-3072")
CLOCK_SKEW = timedelta(seconds=30)
MIN_RSA_BITS = 2048
MAX_PRINCIPAL_LENGTH = 256
DEFAULT_USER_EXTENSIONS: Mapping[str, str] = {
    "permit-X11-forwarding": "",
    "permit-agent-forwarding": "",
    "permit-port-forwarding": "",
    "permit-pty": "",
    "permit-user-rc": "",
}
# Wildcards would widen a host certificate (OpenSSH matches host principals as patterns), commas split principal
# lists in authorized_principals files and ``ssh-keygen -n``.
_PRINCIPAL_FORBIDDEN = frozenset("*?!,") | frozenset(" \t\r\n\x0b\x0c")

CAPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_ca_key(key_type: str = "ed25519") -> tuple[bytes, str]:
    """A new CA key: (unencrypted PKCS8 PEM, for the sealed store; the public key as an authorized_keys line, for
    servers' ``TrustedUserCAKeys`` and clients' ``@cert-authority`` lines)."""
    key: CAPrivateKey
    if key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa-3072":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"unknown CA key type {key_type[:32]!r} (one of {', '.join(CA_KEY_TYPES)})")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, _openssh_public(key)


def public_key_of(private_pem: bytes) -> str:
    """The CA's public key as an authorized_keys line (the engine's ``/public-key`` endpoint)."""
    return _openssh_public(_load_ca_key(private_pem))


def _openssh_public(key: CAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _load_ca_key(private_pem: bytes | None) -> CAPrivateKey:
    if not private_pem:
        raise TargetRefused("the ssh engine has no CA key")
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TargetRefused("the ssh engine's CA key could not be loaded") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TargetRefused("the ssh engine's CA key is of a type SSH certificates cannot be signed with")
    return key


def _texts(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TargetRefused(f"{what} must be a list of names")
    return [str(item) for item in value]


def _options(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TargetRefused(f"{what} must be an object of names to values")
    return {str(name): "" if option is None else str(option) for name, option in value.items()}


def _allowed(principal: str, cert_type: str, settings: Mapping[str, Any]) -> bool:
    if cert_type == "host":
        domains = [d.lower().rstrip(".") for d in _texts(settings.get("allowed_domains"), "allowed_domains")]
        name = principal.lower().rstrip(".")
        return "*" in domains or any(name == d or name.endswith("." + d) for d in domains)
    users = _texts(settings.get("allowed_users"), "allowed_users")
    return "*" in users or principal in users


def _principals(role: RoleRecipe, credential: NewCredential, cert_type: str) -> list[str]:
    """The requested principals, each allowed by the role. Never empty: a certificate without principals is valid
    for every user (or every host) that trusts the CA."""
    settings = role.settings
    requested = credential.parameters.get("valid_principals")
    if requested is None or requested == []:
        default = settings.get("default_user")
        if not default:
            raise TargetRefused("valid_principals is required: the role has no default_user")
        principals = [str(default)]
    else:
        principals = _texts(requested, "valid_principals")
    for principal in principals:
        if not principal or len(principal) > MAX_PRINCIPAL_LENGTH or any(
            c in _PRINCIPAL_FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F for c in principal
        ):
            raise TargetRefused(f"the principal {principal[:64]!r} is not a valid name")
        if not _allowed(principal, cert_type, settings):
            what = "allowed_domains" if cert_type == "host" else "allowed_users"
            raise TargetRefused(f"the principal {principal[:64]!r} is not in the role's {what}")
    return list(dict.fromkeys(principals))


def _subject_key(text: Any) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise TargetRefused("public_key must be an OpenSSH public key (e.g. 'ssh-ed25519 AAAA...')")
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise TargetRefused("public_key is not an OpenSSH public key of a supported type") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise TargetRefused("public_key must be an Ed25519, ECDSA or RSA key")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise TargetRefused(f"an RSA public_key needs at least {MIN_RSA_BITS} bits")
    return key


def _seconds(moment: datetime) -> int:
    return max(0, int(moment.timestamp()))


class SshBackend:
    """Signs user or host certificates with the engine's CA key (``target.private_key_pem``)."""

    def __init__(self, target: EngineTarget) -> None:
        self._pem = target.private_key_pem

    def __repr__(self) -> str:
        return "SshBackend()"

    async def verify(self) -> None:
        """The CA key loads and signs a certificate."""
        ca = _load_ca_key(self._pem)
        now = datetime.now().astimezone()
        builder = (
            SSHCertificateBuilder()
            .public_key(ed25519.Ed25519PrivateKey.generate().public_key())
            .serial(1)
            .type(SSHCertificateType.USER)
            .key_id(b"scaivault-verify")
            .valid_principals([b"scaivault-verify"])
            .valid_after(_seconds(now))
            .valid_before(_seconds(now + timedelta(minutes=1)))
        )
        try:
            builder.sign(ca)
        except (ValueError, TypeError):
            raise TargetRefused("the ssh engine's CA key cannot sign certificates") from None

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        settings = role.settings
        cert_type = str(settings.get("cert_type") or "user")
        if cert_type not in ("user", "host"):
            raise TargetRefused(f"cert_type must be user or host, not {cert_type[:16]!r}")
        ca = _load_ca_key(self._pem)
        principals = _principals(role, credential, cert_type)
        data: dict[str, Any] = {}
        if credential.parameters.get("public_key"):
            subject = _subject_key(credential.parameters["public_key"])
        else:
            generated = ed25519.Ed25519PrivateKey.generate()
            subject = generated.public_key()
            data["private_key"] = generated.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ).decode()
        if "extensions" in settings and settings["extensions"] is not None:
            extensions = _options(settings["extensions"], "extensions")
        else:
            extensions = dict(DEFAULT_USER_EXTENSIONS) if cert_type == "user" else {}
        critical_options = _options(settings.get("critical_options"), "critical_options")
        valid_after = credential.issued_at - CLOCK_SKEW
        if credential.expires_at <= valid_after:
            raise TargetRefused("the certificate would expire before it becomes valid")
        serial = secrets.randbelow(2**64 - 1) + 1  # a KRL cannot name serial 0
        builder = (
            SSHCertificateBuilder()
            .public_key(subject)
            .serial(serial)
            .type(SSHCertificateType.HOST if cert_type == "host" else SSHCertificateType.USER)
            .key_id(credential.lease_id.encode())
            .valid_principals([p.encode() for p in principals])
            .valid_after(_seconds(valid_after))
            .valid_before(_seconds(credential.expires_at))
        )
        for name, value in critical_options.items():
            builder = builder.add_critical_option(name.encode(), value.encode())
        for name, value in extensions.items():
            builder = builder.add_extension(name.encode(), value.encode())
        try:
            certificate = builder.sign(ca)
        except (ValueError, TypeError) as exc:
            raise TargetRefused(f"the certificate could not be signed: {str(exc)[:200]}") from None
        data.update({
            "signed_key": certificate.public_bytes().decode(),
            "serial_number": str(serial),
            "valid_principals": principals,
            "public_key": subject.public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ).decode(),
        })
        return CreatedCredential(data=data, revocation={"serial": str(serial)}, renewable=False)

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        """A certificate's validity is signed into it; it cannot be extended (the lease is not renewable)."""

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        """Nothing at the source: the certificate stays valid until its ``valid_before`` (see the module's
        docstring)."""

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        raise TargetRefused("an ssh engine has no root credentials")

    async def close(self) -> None:
        """Holds no connection."""
