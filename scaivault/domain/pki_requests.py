"""The PKI's CSR workflow and trust store (spec core-concepts/pki: "CSR workflow", "Trust anchors"; docs/pki.md).

A ``CsrRequest`` is a CSR submitted for later signing: the requester holds ``pki:issue``, an administrator of the
tenant approves (the certificate is signed in the same transaction as ``Approved``) or rejects it. Whoever submitted
a request never approves it: the point of the workflow over ``POST /v1/pki/sign/{role}`` is a second pair of eyes.
A decision is final: a request is decided once.

A ``TrustAnchor`` is the certificate of a CA outside ScaiVault that the tenant's stack should trust. It is public
data (a certificate, never a key), so its events carry it whole.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import CsrNotPending, Forbidden
from scaivault.domain.labels import MAX_DESCRIPTION_LENGTH, clean_name, field_error, is_description

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
CSR_STATUSES = (PENDING, APPROVED, REJECTED)
MAX_REASON_LENGTH = 1024

_CSR_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/pki-csr-request")
_ANCHOR_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/pki-trust-anchor")


def csr_request_stream_id(csr_id: str) -> UUID:
    return uuid5(_CSR_NAMESPACE, csr_id)


def trust_anchor_stream_id(anchor_id: str) -> UUID:
    return uuid5(_ANCHOR_NAMESPACE, anchor_id)


def check_note(note: object, field_name: str = "note") -> str | None:
    if not is_description(note):
        raise field_error(field_name, f"a string of at most {MAX_DESCRIPTION_LENGTH} characters")
    if note is None:
        return None
    return note.strip() or None


def check_reason(reason: object) -> str:
    """A rejection says why: the requester reads it to know what to change."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LENGTH:
        raise field_error("reason", f"1-{MAX_REASON_LENGTH} characters saying why the request is rejected")
    return reason.strip()


def check_anchor_name(name: object) -> str:
    cleaned = clean_name(name)
    if cleaned is None:
        raise field_error("name", "1-128 printable characters")
    return cleaned


class CsrRequest(Aggregate):
    @staticmethod
    def create_id(csr_id: str) -> UUID:
        return csr_request_stream_id(csr_id)

    class Submitted(Aggregate.Created):
        """The names, key shape and lifetime as checked against the role at submission; ``ttl`` is the lifetime
        the certificate would get (the role's default when none was asked). ``role_id``: the role it was checked
        against, so a role deleted and created again under the same name is not taken for it."""

        csr_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        role_name: str
        role_id: str
        csr_pem: str
        common_name: str | None
        alt_names: list[str]
        ip_sans: list[str]
        key_type: str
        key_bits: int
        ttl: str
        note: str | None
        at: datetime
        actor: str
        request_id: str | None

    @event(Submitted)
    def __init__(
        self, csr_id: str, owner: str, tenant_id: str | None, partner_id: str, role_name: str, role_id: str,
        csr_pem: str, common_name: str | None, alt_names: list[str], ip_sans: list[str], key_type: str,
        key_bits: int, ttl: str, note: str | None, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.csr_id = csr_id
        self.owner = owner
        self.role_name = role_name
        self.role_id = role_id
        self.csr_pem = csr_pem
        self.common_name = common_name
        self.alt_names = alt_names
        self.ip_sans = ip_sans
        self.ttl = ttl
        self.requested_by = actor
        self.requested_at = at
        self.status = PENDING
        self.certificate_id: str | None = None

    def check_can_approve(self, approver: str) -> None:
        """Raises unless ``approver`` may approve now: the request is pending and ``approver`` did not submit it."""
        self._check_pending()
        if approver == self.requested_by:
            raise Forbidden(
                "A CSR request must be approved by someone other than its requester (four-eyes principle)",
                csr_id=self.csr_id,
            )

    def approve(self, *, certificate_id: str, ttl: str, at: datetime, actor: str, request_id: str | None) -> None:
        self.check_can_approve(actor)
        self._approved(certificate_id=certificate_id, ttl=ttl, at=at, actor=actor, request_id=request_id)

    class Approved(Aggregate.Event):
        """``certificate_id``: the certificate signed in the same transaction; ``ttl``: the lifetime it got."""

        certificate_id: str
        ttl: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Approved)
    def _approved(self, certificate_id: str, ttl: str, at: datetime, actor: str, request_id: str | None) -> None:
        self.status = APPROVED
        self.certificate_id = certificate_id

    def reject(self, *, reason: str, at: datetime, actor: str, request_id: str | None) -> None:
        self._check_pending()
        self._rejected(reason=check_reason(reason), at=at, actor=actor, request_id=request_id)

    class Rejected(Aggregate.Event):
        reason: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Rejected)
    def _rejected(self, reason: str, at: datetime, actor: str, request_id: str | None) -> None:
        self.status = REJECTED

    def _check_pending(self) -> None:
        if self.status != PENDING:
            raise CsrNotPending(f"The CSR request is {self.status}: only a pending request can be decided",
                                csr_id=self.csr_id, status=self.status)


class TrustAnchor(Aggregate):
    @staticmethod
    def create_id(anchor_id: str) -> UUID:
        return trust_anchor_stream_id(anchor_id)

    class Added(Aggregate.Created):
        """What the certificate says of itself (subject, issuer, serial, validity, SHA-256 fingerprint) is read
        once, by the command, and kept with it: listings and the bundle's filter need no X.509 parsing."""

        anchor_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        name: str
        description: str | None
        certificate_pem: str
        subject: str
        issuer: str
        serial_number: str
        not_before: datetime
        not_after: datetime
        fingerprint_sha256: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Added)
    def __init__(
        self, anchor_id: str, owner: str, tenant_id: str | None, partner_id: str, name: str, description: str | None,
        certificate_pem: str, subject: str, issuer: str, serial_number: str, not_before: datetime,
        not_after: datetime, fingerprint_sha256: str, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.anchor_id = anchor_id
        self.owner = owner
        self.name = name
        self.fingerprint_sha256 = fingerprint_sha256
        self.removed = False

    def remove(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self._removed(at=at, actor=actor, request_id=request_id)

    class Removed(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Removed)
    def _removed(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.removed = True
