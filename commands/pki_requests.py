"""The PKI's CSR workflow and trust anchors (docs/pki.md, "CSR requests" and "Trust anchors"). One command = one
transaction.

Submitting a CSR request needs ``pki:issue`` (checked by the edge) and passes every check ``POST /v1/pki/sign``
makes (``PkiCommands.check_sign``), so a request that could never be signed is refused at once, not left for an
administrator to find. Approving signs through ``PkiCommands.sign`` and records the approval in the same
transaction: a certificate exists exactly when its request says approved. Deciding a request and managing trust
anchors need an admin role for the tenant, like the rest of PKI management (``commands.pki.managed_tenant``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from commands.actor import Actor
from commands.pki import IssuedCertificate, LeafRequest, PkiCommands, issuing_tenant
from commands.policies import managed_tenant
from commands.ports import PkiRequestLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.database import Queryable
from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.errors import (
    CsrNotFound,
    InvalidCertificate,
    RoleNotFound,
    TrustAnchorExists,
    TrustAnchorNotFound,
)
from scaivault.domain.outcomes import Outcome
from scaivault.domain.pki import serial_text
from scaivault.domain.pki_requests import (
    CsrRequest,
    TrustAnchor,
    check_anchor_name,
    check_note,
    check_reason,
    csr_request_stream_id,
)
from scaivault.ids import new_id
from scaivault.pki import certificates as x509_builder
from scaivault.pki.certificates import PARSE_ERRORS


@dataclass(frozen=True)
class NewCsrRequest:
    csr_pem: str
    role: str
    ttl: str | None = None
    common_name: str | None = None
    alt_names: Sequence[str] = ()
    ip_sans: Sequence[str] = ()
    note: object = None


@dataclass(frozen=True)
class NewTrustAnchor:
    name: object
    certificate_pem: str
    description: object = None


@dataclass(frozen=True)
class AnchorCertificate:
    """What a trust anchor's certificate says of itself, read once when it is added."""

    certificate_pem: str
    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str


def read_anchor_certificate(pem: str) -> AnchorCertificate:
    """Exactly one X.509 certificate, of a CA (BasicConstraints cA): a leaf is no anchor to build trust on.
    ``InvalidCertificate`` (400) otherwise, saying why."""
    try:
        certificate = x509_builder.load_certificate(pem)
    except x509_builder.InvalidCertificate as exc:
        raise InvalidCertificate(f"certificate_pem: {exc}") from None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except PARSE_ERRORS:
        raise InvalidCertificate("certificate_pem: the certificate's extensions are malformed") from None
    if constraints is None or not constraints.ca:
        raise InvalidCertificate("certificate_pem: not a CA certificate (BasicConstraints cA is not set)")
    try:
        subject = certificate.subject.rfc4514_string()
        issuer = certificate.issuer.rfc4514_string()
        serial = certificate.serial_number
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    except PARSE_ERRORS:
        raise InvalidCertificate("certificate_pem: the certificate's names or dates are malformed") from None
    if serial < 0:
        raise InvalidCertificate("certificate_pem: the certificate's serial number is negative")
    return AnchorCertificate(
        certificate_pem=x509_builder.certificate_pem(certificate), subject=subject, issuer=issuer,
        serial_number=serial_text(serial), not_before=not_before, not_after=not_after,
        fingerprint_sha256=x509_builder.fingerprint_sha256(certificate),
    )


class CsrRequestCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, lookup: PkiRequestLookup, pki: PkiCommands, *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._runner = runner
        self._lookup = lookup
        self._pki = pki
        self._clock = clock

    async def submit(self, new: NewCsrRequest, actor: Actor, access: AccessRecord | None = None) -> CsrRequest:
        """A pending request, once the CSR passed every check signing it would make now."""
        tenant_id = issuing_tenant(actor)
        # A name no role can have finds none, like any unknown name: 404 role_not_found.
        role_name = new.role
        note = check_note(new.note)
        plan = await self._pki.check_sign(role_name, LeafRequest(
            common_name=new.common_name, alt_names=list(new.alt_names), ip_sans=list(new.ip_sans), ttl=new.ttl,
            csr_pem=new.csr_pem,
        ), actor)
        partner_id = actor.caller.partner_id if actor.caller is not None else None
        csr_id = new_id("csr_")

        async def work(uow: UnitOfWork) -> CsrRequest:
            request = CsrRequest(
                csr_id=csr_id, owner=tenant_id, tenant_id=tenant_id, partner_id=partner_id or "",
                role_name=role_name, role_id=plan.role["role_id"], csr_pem=new.csr_pem.strip() + "\n",
                common_name=plan.common_name, alt_names=plan.dns_names, ip_sans=plan.ip_sans,
                key_type=plan.spec.key_type, key_bits=plan.spec.key_bits, ttl=format_duration(plan.lifetime),
                note=note, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(request)
            record_outcome(access, Outcome.CREATED, csr_id=csr_id, role=role_name)
            return request

        return await self._runner.run(work, access=access)

    async def approve(
        self, csr_id: str, ttl: str | None, actor: Actor, access: AccessRecord | None = None
    ) -> IssuedCertificate:
        """Sign the request's CSR under its role (checked again, as the role is now) and record the approval with
        the certificate, in one transaction. ``ttl`` replaces the lifetime the request asked for."""
        tenant_id = managed_tenant(actor, "the PKI")
        # Refused before the signing work when it can be told now; checked again under the stream's lock.
        request = await self._visible(tenant_id, csr_id)
        request.check_can_approve(actor.identity_id)
        await self._require_same_role(self._runner.pool, tenant_id, request)
        lifetime = request.ttl if ttl is None else ttl

        async def alongside(uow: UnitOfWork, certificate_id: str) -> None:
            current = await self._load(uow, tenant_id, csr_id)
            await self._require_same_role(uow.conn, tenant_id, current)
            # ``sign`` has checked the lifetime against the role by now: it parses.
            current.approve(certificate_id=certificate_id, ttl=format_duration(parse_duration(lifetime)),
                            at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(current)

        leaf = LeafRequest(common_name=request.common_name, alt_names=list(request.alt_names),
                           ip_sans=list(request.ip_sans), ttl=lifetime, csr_pem=request.csr_pem)
        try:
            return await self._pki.sign(request.role_name, leaf, actor, access, source="csr", alongside=alongside)
        except RoleNotFound:
            raise _role_gone(request) from None

    async def reject(
        self, csr_id: str, reason: object, actor: Actor, access: AccessRecord | None = None
    ) -> CsrRequest:
        tenant_id = managed_tenant(actor, "the PKI")
        why = check_reason(reason)

        async def work(uow: UnitOfWork) -> CsrRequest:
            request = await self._load(uow, tenant_id, csr_id)
            request.reject(reason=why, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(request)
            return request

        return await self._runner.run(work, access=access)

    async def _require_same_role(self, conn: Queryable, tenant_id: str, request: CsrRequest) -> None:
        if await self._lookup.role_id(conn, tenant_id, request.role_name) != request.role_id:
            raise _role_gone(request)

    async def _visible(self, tenant_id: str, csr_id: str) -> CsrRequest:
        request = await self._runner.repository.get(self._runner.pool, csr_request_stream_id(csr_id))
        if not isinstance(request, CsrRequest) or request.owner != tenant_id:
            raise CsrNotFound(csr_id=csr_id[:64])
        return request

    @staticmethod
    async def _load(uow: UnitOfWork, tenant_id: str, csr_id: str) -> CsrRequest:
        """The tenant's request; another tenant's answers exactly like a missing one."""
        request = await uow.get(csr_request_stream_id(csr_id))
        if not isinstance(request, CsrRequest) or request.owner != tenant_id:
            raise CsrNotFound(csr_id=csr_id[:64])
        return request


def _role_gone(request: CsrRequest) -> RoleNotFound:
    return RoleNotFound(
        f"The request's role {request.role_name!r} was deleted after the request was submitted; the request stays "
        "pending: reject it (the requester may submit again under another role)",
        role=request.role_name, csr_id=request.csr_id,
    )


class TrustAnchorCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, lookup: PkiRequestLookup, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._runner = runner
        self._lookup = lookup
        self._clock = clock

    async def add(self, new: NewTrustAnchor, actor: Actor, access: AccessRecord | None = None) -> TrustAnchor:
        tenant_id = managed_tenant(actor, "the PKI")
        name = check_anchor_name(new.name)
        description = check_note(new.description, "description")
        read = read_anchor_certificate(new.certificate_pem)
        partner_id = actor.caller.partner_id if actor.caller is not None else None
        anchor_id = new_id("ta_")

        async def work(uow: UnitOfWork) -> TrustAnchor:
            # One lock per tenant for both uniqueness checks: adding anchors is rare, and two names for one
            # certificate added at once must not both pass.
            await uow.lock(f"pki-trust-anchors:{tenant_id}")
            taken = await self._lookup.trust_anchor_taken(uow.conn, tenant_id, name, read.fingerprint_sha256)
            if taken == "name":
                raise TrustAnchorExists(name=name)
            if taken is not None:
                raise TrustAnchorExists("The tenant already trusts this certificate under another name",
                                        fingerprint_sha256=read.fingerprint_sha256)
            anchor = TrustAnchor(
                anchor_id=anchor_id, owner=tenant_id, tenant_id=tenant_id, partner_id=partner_id or "", name=name,
                description=description, certificate_pem=read.certificate_pem, subject=read.subject,
                issuer=read.issuer, serial_number=read.serial_number, not_before=read.not_before,
                not_after=read.not_after, fingerprint_sha256=read.fingerprint_sha256, at=self._clock(),
                actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(anchor)
            record_outcome(access, Outcome.CREATED, trust_anchor_id=anchor_id)
            return anchor

        return await self._runner.run(work, access=access)

    async def remove(self, anchor_id: str, actor: Actor, access: AccessRecord | None = None) -> None:
        tenant_id = managed_tenant(actor, "the PKI")

        async def work(uow: UnitOfWork) -> None:
            stream = await self._lookup.trust_anchor_stream(uow.conn, tenant_id, anchor_id)
            anchor = await uow.get(stream) if stream is not None else None
            if not isinstance(anchor, TrustAnchor) or anchor.removed or anchor.owner != tenant_id:
                raise TrustAnchorNotFound(trust_anchor_id=anchor_id[:64])
            anchor.remove(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(anchor)
            record_outcome(access, Outcome.REMOVED, trust_anchor_id=anchor_id)

        await self._runner.run(work, access=access)
