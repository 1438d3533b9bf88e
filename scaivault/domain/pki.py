"""The internal PKI (spec core-concepts/pki, reference/pki): certificate authorities, roles and certificates.

Each is an aggregate whose events are the record auditors replay: a CA's creation (with its certificate), the import
of an externally signed intermediate, its CRLs and its revocation; a role's settings; each certificate issued and
revoked. Key material never appears in an event in the clear: a CA's private key (and an issued key kept under a
role with ``store_private_keys``) is sealed by the command under a data key of the tenant
(``scaivault/crypto/sealed_keys.py``); events carry the ciphertext and the data key's id.

Revoking a CA revokes everything it signed as one fact (``CertificateAuthority.Revoked``): the certificates read
model marks them all in the same transaction, and their status answers (API, CRL of the parent, OCSP) follow from it.
A CA revoked is never active again.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import CaNotActive

CA_TYPES = ("root", "intermediate")
ACTIVE = "active"
PENDING_SIGNATURE = "pending_signature"
REVOKED = "revoked"
FULL_CRL = ""  # the partition name of a CA's complete CRL

_CA_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/pki-ca")
_ROLE_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/pki-role")
_CERTIFICATE_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/pki-certificate")


def ca_stream_id(ca_id: str) -> UUID:
    return uuid5(_CA_NAMESPACE, ca_id)


def role_stream_id(role_id: str) -> UUID:
    return uuid5(_ROLE_NAMESPACE, role_id)


def certificate_stream_id(certificate_id: str) -> UUID:
    return uuid5(_CERTIFICATE_NAMESPACE, certificate_id)


class CertificateAuthority(Aggregate):
    @staticmethod
    def create_id(ca_id: str) -> UUID:
        return ca_stream_id(ca_id)

    class Created(Aggregate.Created):
        ca_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        name: str
        common_name: str
        ca_type: str
        parent_ca_id: str | None
        key_type: str
        key_bits: int
        status: str
        certificate_pem: str | None
        chain_pems: list[str]
        csr_pem: str | None
        serial_number: str | None
        not_before: datetime | None
        not_after: datetime | None
        key_ciphertext: bytes
        key_data_key_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, ca_id: str, owner: str, tenant_id: str | None, partner_id: str, name: str, common_name: str,
        ca_type: str, parent_ca_id: str | None, key_type: str, key_bits: int, status: str,
        certificate_pem: str | None, chain_pems: list[str], csr_pem: str | None, serial_number: str | None,
        not_before: datetime | None, not_after: datetime | None, key_ciphertext: bytes, key_data_key_id: str,
        at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.ca_id = ca_id
        self.owner = owner
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.common_name = common_name
        self.ca_type = ca_type
        self.parent_ca_id = parent_ca_id
        self.key_type = key_type
        self.key_bits = key_bits
        self.status = status
        self.certificate_pem = certificate_pem
        self.chain_pems = chain_pems
        self.csr_pem = csr_pem
        self.serial_number = serial_number
        self.not_before = not_before
        self.not_after = not_after
        self.key_ciphertext = key_ciphertext
        self.key_data_key_id = key_data_key_id
        self.created_at = at
        self.revoked_at: datetime | None = None
        self.revocation_reason: str | None = None
        self.crl_number = 0

    def check_can_sign(self, at: datetime) -> None:
        if self.status != ACTIVE:
            raise CaNotActive(f"The certificate authority is {self.status.replace('_', ' ')}", ca_id=self.ca_id)
        if self.not_after is None or self.not_after <= at:
            raise CaNotActive("The certificate authority has expired", ca_id=self.ca_id)

    def import_signed_certificate(
        self, *, certificate_pem: str, chain_pems: list[str], serial_number: str, not_before: datetime,
        not_after: datetime, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        """An intermediate created for an external root gets the certificate that root signed (checked by the
        command against the CA's key and the chain)."""
        if self.status != PENDING_SIGNATURE:
            raise CaNotActive("Only an intermediate waiting for its signed certificate can import one",
                              ca_id=self.ca_id, status=self.status)
        self._imported(certificate_pem=certificate_pem, chain_pems=chain_pems, serial_number=serial_number,
                       not_before=not_before, not_after=not_after, at=at, actor=actor, request_id=request_id)

    class SignedCertificateImported(Aggregate.Event):
        certificate_pem: str
        chain_pems: list[str]
        serial_number: str
        not_before: datetime
        not_after: datetime
        at: datetime
        actor: str
        request_id: str | None

    @event(SignedCertificateImported)
    def _imported(
        self, certificate_pem: str, chain_pems: list[str], serial_number: str, not_before: datetime,
        not_after: datetime, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.status = ACTIVE
        self.certificate_pem = certificate_pem
        self.chain_pems = chain_pems
        self.serial_number = serial_number
        self.not_before = not_before
        self.not_after = not_after

    def next_crl_number(self) -> int:
        return self.crl_number + 1

    def publish_crl(
        self, *, partition: str, crl_number: int, this_update: datetime, next_update: datetime, entries: int,
        der: bytes, at: datetime,
    ) -> None:
        self._crl_published(partition=partition, crl_number=crl_number, this_update=this_update,
                            next_update=next_update, entries=entries, der=der, at=at)

    class CrlPublished(Aggregate.Event):
        """A signed CRL: the complete one (``partition`` ``""``) or one partition (RFC 5280 issuing distribution
        point). CRL numbers increase across all of a CA's CRLs, so each scope's numbers increase too."""

        partition: str
        crl_number: int
        this_update: datetime
        next_update: datetime
        entries: int
        der: bytes
        at: datetime

    @event(CrlPublished)
    def _crl_published(
        self, partition: str, crl_number: int, this_update: datetime, next_update: datetime, entries: int,
        der: bytes, at: datetime,
    ) -> None:
        self.crl_number = max(self.crl_number, crl_number)

    def revoke(self, *, reason: str, cascade_from: str | None, at: datetime, actor: str,
               request_id: str | None) -> bool:
        """Revoke the CA (and so, in the read models, everything it signed). False if it was revoked already."""
        if self.status == REVOKED:
            return False
        self._revoked(reason=reason, cascade_from=cascade_from, at=at, actor=actor, request_id=request_id)
        return True

    class Revoked(Aggregate.Event):
        reason: str
        cascade_from: str | None  # the ancestor CA whose revocation this one follows
        at: datetime
        actor: str
        request_id: str | None

    @event(Revoked)
    def _revoked(self, reason: str, cascade_from: str | None, at: datetime, actor: str,
                 request_id: str | None) -> None:
        self.status = REVOKED
        self.revoked_at = at
        self.revocation_reason = reason


class PkiRole(Aggregate):
    @staticmethod
    def create_id(role_id: str) -> UUID:
        return role_stream_id(role_id)

    class Created(Aggregate.Created):
        role_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        name: str
        ca_id: str
        settings: dict[str, Any]
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, role_id: str, owner: str, tenant_id: str | None, partner_id: str, name: str, ca_id: str,
        settings: dict[str, Any], at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.role_id = role_id
        self.owner = owner
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.ca_id = ca_id
        self.settings = settings
        self.deleted = False

    def update(self, *, ca_id: str, settings: dict[str, Any], at: datetime, actor: str,
               request_id: str | None) -> None:
        self._updated(ca_id=ca_id, settings=settings, at=at, actor=actor, request_id=request_id)

    class Updated(Aggregate.Event):
        ca_id: str
        settings: dict[str, Any]
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(self, ca_id: str, settings: dict[str, Any], at: datetime, actor: str,
                 request_id: str | None) -> None:
        self.ca_id = ca_id
        self.settings = settings

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self._deleted(at=at, actor=actor, request_id=request_id)

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True


class Certificate(Aggregate):
    @staticmethod
    def create_id(certificate_id: str) -> UUID:
        return certificate_stream_id(certificate_id)

    class Issued(Aggregate.Created):
        """``source``: ``issue`` (key generated here), ``sign`` (a CSR), ``csr`` (an approved CSR request),
        ``acme`` (a public CA, through ACME), ``renewal``. ``crl_partition``: the CRL that lists it if revoked."""

        certificate_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        ca_id: str | None
        role_name: str | None
        serial_number: str
        common_name: str | None
        dns_names: list[str]
        ip_sans: list[str]
        not_before: datetime
        not_after: datetime
        certificate_pem: str
        chain_pems: list[str]
        fingerprint_sha256: str
        key_type: str
        key_bits: int
        source: str
        crl_partition: str | None
        key_ciphertext: bytes | None
        key_data_key_id: str | None
        renewal_of: str | None
        warn_at: datetime | None
        renew_at: datetime | None
        at: datetime
        actor: str
        request_id: str | None

    @event(Issued)
    def __init__(
        self, certificate_id: str, owner: str, tenant_id: str | None, partner_id: str, ca_id: str | None,
        role_name: str | None, serial_number: str, common_name: str | None, dns_names: list[str],
        ip_sans: list[str], not_before: datetime, not_after: datetime, certificate_pem: str, chain_pems: list[str],
        fingerprint_sha256: str, key_type: str, key_bits: int, source: str, crl_partition: str | None,
        key_ciphertext: bytes | None, key_data_key_id: str | None, renewal_of: str | None,
        warn_at: datetime | None, renew_at: datetime | None, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.certificate_id = certificate_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.certificate_pem = certificate_pem
        self.dns_names = dns_names
        self.ip_sans = ip_sans
        self.common_name = common_name
        self.not_before = not_before
        self.warned = False
        self.renewal_failed: str | None = None
        self.owner = owner
        self.ca_id = ca_id
        self.role_name = role_name
        self.serial_number = serial_number
        self.not_after = not_after
        self.source = source
        self.revoked_at: datetime | None = None
        self.renewed_by: str | None = None

    def revoke(self, *, reason: str, at: datetime, actor: str, request_id: str | None) -> bool:
        """False (and no event) when it was revoked already: revoking is idempotent."""
        if self.revoked_at is not None:
            return False
        self._revoked(reason=reason, at=at, actor=actor, request_id=request_id)
        return True

    class Revoked(Aggregate.Event):
        reason: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Revoked)
    def _revoked(self, reason: str, at: datetime, actor: str, request_id: str | None) -> None:
        self.revoked_at = at

    def mark_renewed(self, *, renewed_by: str, at: datetime, actor: str) -> None:
        self._renewed(renewed_by=renewed_by, at=at, actor=actor)

    class Renewed(Aggregate.Event):
        renewed_by: str
        at: datetime
        actor: str

    @event(Renewed)
    def _renewed(self, renewed_by: str, at: datetime, actor: str) -> None:
        self.renewed_by = renewed_by

    def renewal_due(self, at: datetime) -> bool:
        return self.revoked_at is None and self.renewed_by is None and self.renewal_failed is None \
            and self.not_after > at

    def fail_renewal(self, *, reason: str, at: datetime, actor: str) -> None:
        self._renewal_failed(reason=reason, at=at, actor=actor)

    class RenewalFailed(Aggregate.Event):
        """Auto-renewal could not issue a successor (role deleted, CA revoked or expired, names no longer allowed):
        not retried; the expiry warning still comes."""

        reason: str
        at: datetime
        actor: str

    @event(RenewalFailed)
    def _renewal_failed(self, reason: str, at: datetime, actor: str) -> None:
        self.renewal_failed = reason

    def warn_expiry(self, *, at: datetime, actor: str) -> bool:
        """Announce the coming expiry once (False: not needed: revoked, renewed, expired or warned already)."""
        if self.warned or self.revoked_at is not None or self.renewed_by is not None or self.not_after <= at:
            return False
        self._expiry_warned(expires_at=self.not_after, at=at, actor=actor)
        return True

    class ExpiryWarned(Aggregate.Event):
        expires_at: datetime
        at: datetime
        actor: str

    @event(ExpiryWarned)
    def _expiry_warned(self, expires_at: datetime, at: datetime, actor: str) -> None:
        self.warned = True


COUNTER_SHARDS = 16


def counter_shard(certificate_id: str) -> int:
    """Which of its CA's issuance counters a certificate adds to (the read model keeps 16 per CA, so concurrent
    issuances do not all queue on one row)."""
    return zlib.crc32(certificate_id.encode()) % COUNTER_SHARDS


def serial_text(serial: int) -> str:
    """A serial number as the API writes it: lowercase hex byte pairs joined by colons (``1f:a0:...``)."""
    digits = format(serial, "x")
    digits = digits.zfill(len(digits) + len(digits) % 2)
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def serial_value(text: str) -> int:
    return int(text.replace(":", ""), 16)


def crl_partition(not_after: datetime) -> str:
    """The CRL partition of a certificate: the ISO week it expires in (``2026-w52``). A partition's certificates all
    expire within a week of each other, so whole partitions fall out of use, and each CRL stays a week's worth of
    revocations."""
    year, week, _ = not_after.isocalendar()
    return f"{year}-w{week:02d}"
