"""Internal PKI use cases: CAs, roles, issuing and signing, revocation and CRLs. One command = one transaction.

Who may do what (docs/pki.md): managing CAs and roles and revoking needs an admin role for the tenant (the edge has
checked ``pki:admin``); issuing and signing under a role needs ``pki:issue`` and nothing more: the role is the grant,
and what it allows is all the caller can get.

Issuing does its CPU work (key generation, signing) before its transaction and keeps the transaction to the checks
that must be atomic with the append: the CA is still active (a shared lock on the CA, which revocation takes
exclusively, so no certificate is issued under a CA after its revocation committed) and the role is still the one
the certificate was built from.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives import serialization

from commands.actor import Actor
from commands.group_commit import BatchScope, GroupCommit
from commands.policies import managed_tenant
from commands.ports import PkiLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.ca_keys import CaKeys
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.sealed_keys import CA_KEY, ISSUED_KEY, SealedKey, seal_private_key
from scaivault.database import Queryable
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import (
    AccessDenied,
    CaExists,
    CaNotActive,
    CaNotFound,
    CertificateNotFound,
    InvalidCertificate,
    InvalidCsr,
    RoleExists,
    RoleNotFound,
    ScaiVaultError,
    ValidationFailed,
    VersionConflict,
)
from scaivault.domain.labels import MAX_NAME_LENGTH, clean_name, field_error
from scaivault.domain.outcomes import Outcome
from scaivault.domain.pki import (
    CA_TYPES,
    FULL_CRL,
    PENDING_SIGNATURE,
    REVOKED,
    Certificate,
    CertificateAuthority,
    PkiRole,
    ca_stream_id,
    counter_shard,
    crl_partition,
    role_stream_id,
    serial_text,
    serial_value,
)
from scaivault.domain.pki_names import name_violations
from scaivault.domain.pki_roles import (
    check_role_name,
    key_allowed,
    leaf_lifetime,
    name_rules,
    normalize_role_settings,
)
from scaivault.ids import new_id
from scaivault.pki import certificates as x509_builder
from scaivault.pki.csr import InvalidCsr as CsrUnreadable
from scaivault.pki.csr import parse_csr
from scaivault.pki.keys import (
    KeySpec,
    PrivateKey,
    UnsupportedKey,
    check_key_spec,
    generate_private_key,
    key_spec_of,
    private_key_pem,
)
from scaivault.pki.revocation import REVOCATION_REASONS, RevokedEntry, build_crl, crl_der

Alongside = Callable[[UnitOfWork, str], Awaitable[None]]
DEFAULT_VALIDITY_DAYS = {"root": 3650, "intermediate": 1825}
MAX_VALIDITY_DAYS = 36500
MAX_NAMES = 100
CRL_LIFETIME = timedelta(days=3)
EXPIRY_WARNING = timedelta(days=7)
CHECK_CACHE_SECONDS = 1.0
CHECK_CACHE_SIZE = 4096
SCHEDULER_IDENTITY = "system:pki-scheduler"
# Clocks of relying parties run a little behind ours: certificates are valid from a minute before issuance.
BACKDATE = timedelta(seconds=60)


class RenewalNotDue(Exception):
    """Another scheduler renewed it first (or it was revoked meanwhile): nothing to do."""


@dataclass(frozen=True)
class NewCa:
    name: object
    common_name: object
    ca_type: object
    parent_ca_id: str | None = None
    key_type: object = "rsa"
    key_size: object = None
    validity_days: object = None
    signed_externally: bool = False


@dataclass(frozen=True)
class LeafRequest:
    """What a caller asks to have certified: names (checked against the role), lifetime, and for ``sign`` the CSR."""

    common_name: str | None = None
    alt_names: Sequence[str] = ()
    ip_sans: Sequence[str] = ()
    ttl: str | None = None
    csr_pem: str | None = None


@dataclass(frozen=True)
class SignPlan:
    """A CSR checked against a role (``PkiCommands.check_sign``): the key and names it would be certified with."""

    tenant_id: str
    role: Mapping[str, Any]
    ca: Mapping[str, Any]
    public_key: Any
    spec: KeySpec
    common_name: str | None
    dns_names: list[str]
    ip_sans: list[str]
    lifetime: timedelta


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_id: str
    certificate_pem: str
    issuing_ca_pem: str
    ca_chain: list[str]
    serial_number: str
    not_before: datetime
    not_after: datetime
    private_key_pem: str | None = field(default=None, repr=False)
    private_key_type: str | None = None


@dataclass(frozen=True)
class PreparedIssue:
    """A certificate built and signed, waiting to be recorded (the transaction's part of an issuance)."""

    tenant_id: str
    partner_id: str
    actor: Actor
    access: AccessRecord | None
    role_name: str
    role_updated_at: datetime
    store_private_key: bool
    ca: Mapping[str, Any]
    certificate_id: str
    certificate_pem: str
    serial_number: str
    fingerprint: str
    common_name: str | None
    dns_names: list[str]
    ips: list[str]
    not_before: datetime
    not_after: datetime
    spec: KeySpec
    source: str
    partition: str
    warn_at: datetime | None
    renew_at: datetime | None
    at: datetime
    key_pem: str | None = field(repr=False)
    renewal_of: str | None
    alongside: Alongside | None


@dataclass(frozen=True)
class PublishedCrl:
    ca_id: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes


@dataclass(frozen=True)
class PublicationUrls:
    """Where relying parties fetch CA certificates, CRLs and OCSP answers (the server's public URL)."""

    base_url: str

    def for_ca(self, ca_id: str, partition: str | None = None) -> x509_builder.Publication:
        base = f"{self.base_url.rstrip('/')}/v1/pki/ca/{ca_id}"
        crl = f"{base}/crl/{partition}" if partition else f"{base}/crl"
        return x509_builder.Publication(
            crl_urls=(crl,), ocsp_urls=(f"{base}/ocsp",), ca_issuer_urls=(f"{base}/certificate/der",)
        )

    def crl_url(self, ca_id: str, partition: str) -> str:
        return f"{self.base_url.rstrip('/')}/v1/pki/ca/{ca_id}/crl/{partition}"




def issuing_tenant(actor: Actor) -> str:
    if actor.caller is None:
        raise AccessDenied("Certificates are issued on behalf of a caller")
    return actor.caller.require_tenant()


def _check_validity_days(value: object, ca_type: str) -> int:
    if value is None:
        return DEFAULT_VALIDITY_DAYS[ca_type]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALIDITY_DAYS:
        raise field_error("validity_days", f"an integer from 1 to {MAX_VALIDITY_DAYS}")
    return value


# A CA's certificate, parsed once per process rather than on every issuance (certificates are immutable).
_ca_certificate = functools.lru_cache(maxsize=256)(x509_builder.load_certificate)


def _check_common_name(value: object, field_name: str = "common_name") -> str:
    cleaned = clean_name(value)
    if cleaned is None:
        raise field_error(field_name, f"1-{MAX_NAME_LENGTH} printable characters")
    return cleaned


def _sealed(row: Mapping[str, Any]) -> SealedKey:
    return SealedKey(bytes(row["key_ciphertext"]), row["key_data_key_id"])


async def _generate(spec: KeySpec) -> PrivateKey:
    # An RSA key takes tens to hundreds of milliseconds: not on the event loop. EC and Ed25519 take microseconds,
    # less than the hop to a thread.
    if spec.key_type == "rsa":
        return await asyncio.to_thread(generate_private_key, spec)
    return generate_private_key(spec)


def _requested_names(request: LeafRequest) -> tuple[str | None, list[str], list[str]]:
    names = list(dict.fromkeys(n.strip().lower() if isinstance(n, str) else n for n in request.alt_names))
    ips = list(dict.fromkeys(request.ip_sans))
    if len(names) + len(ips) > MAX_NAMES:
        raise field_error("alt_names", f"at most {MAX_NAMES} names and addresses in all")
    return request.common_name, names, ips


def _check_names(settings: Mapping[str, Any], common_name: str | None, dns_names: list[str], ips: list[str]) -> None:
    if settings["require_cn"] and not common_name:
        raise field_error("common_name", "the role requires a common name")
    if not common_name and not dns_names and not ips:
        raise field_error("alt_names", "a certificate must name something: a common name, alt_names or ip_sans")
    problems = name_violations(
        name_rules(settings), common_name=common_name, dns_names=dns_names, ip_addresses=ips
    )
    if problems:
        raise ValidationFailed("The role does not allow these names", fields=problems)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _leaf_names(common_name: str | None, dns_names: list[str]) -> list[str]:
    """The SANs of a leaf: the requested names, with a hostname CN among them (clients ignore the CN)."""
    names = list(dns_names)
    if common_name and "." in common_name and " " not in common_name and "@" not in common_name \
            and not _is_ip(common_name) and common_name.lower() not in names:
        names.insert(0, common_name.lower())
    return names


class PkiCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, lookup: PkiLookup, keyring: KeyRing, ca_keys: CaKeys,
        urls: PublicationUrls, *, clock: Callable[[], datetime] = utcnow, crl_lifetime: timedelta = CRL_LIFETIME,
        expiry_warning: timedelta = EXPIRY_WARNING,
    ) -> None:
        self._runner = runner
        self._lookup = lookup
        self._keyring = keyring
        self._ca_keys = ca_keys
        self._urls = urls
        self._clock = clock
        self._crl_lifetime = crl_lifetime
        self._expiry_warning = expiry_warning
        # Issuances arriving together are recorded in one transaction (commands/group_commit.py).
        # Its items update their CA's counter rows: in (CA, shard) order in every batch, so batches never deadlock.
        self._issuances: GroupCommit[PreparedIssue, IssuedCertificate] = GroupCommit(
            runner, self._record_issue, lock_order=lambda p: (p.ca["ca_id"], counter_shard(p.certificate_id))
        )
        # (tenant, role) -> (role row, CA row, when looked up): what issuing checks before signing, kept briefly;
        # the transaction checks both again, so a stale entry costs at most a refused request, never a wrong one.
        self._checked: dict[tuple[str, str], tuple[Mapping[str, Any], Mapping[str, Any], float]] = {}

    # ---- certificate authorities ----------------------------------------------------------------------------------

    async def create_ca(self, new: NewCa, actor: Actor, access: AccessRecord | None = None) -> CertificateAuthority:
        tenant_id = managed_tenant(actor, "the PKI")
        partner_id = actor.caller.partner_id if actor.caller is not None else None
        name = _check_common_name(new.name, "name")
        common_name = _check_common_name(new.common_name)
        if len(common_name) > x509_builder.MAX_COMMON_NAME_LENGTH:  # X.520's bound: the certificate could not hold it
            raise field_error("common_name", f"at most {x509_builder.MAX_COMMON_NAME_LENGTH} characters")
        if new.ca_type not in CA_TYPES:
            raise field_error("ca_type", "must be 'root' or 'intermediate'")
        ca_type = str(new.ca_type)
        if ca_type == "root" and (new.parent_ca_id is not None or new.signed_externally):
            raise field_error("parent_ca_id", "a root CA has no parent")
        if ca_type == "intermediate" and (new.parent_ca_id is None) != new.signed_externally:
            raise field_error("parent_ca_id", "an intermediate names its parent_ca_id, or is signed_externally")
        try:
            spec = check_key_spec(new.key_type, new.key_size)
        except ValidationFailed as exc:  # a CA's body says key_size (spec reference/pki); name the field it sent
            problem = exc.details["fields"][0]
            raise field_error(problem["field"].replace("key_bits", "key_size"),
                              problem["message"].replace("key_bits", "key_size")) from None
        validity = timedelta(days=_check_validity_days(new.validity_days, ca_type))
        key = await _generate(spec)
        key_pem = private_key_pem(key)
        ca_id = new_id("ca_")

        async def work(uow: UnitOfWork) -> CertificateAuthority:
            at = self._clock().replace(microsecond=0)
            await uow.lock(f"pki-ca-name:{tenant_id}:{name}")
            if await self._lookup.ca_name_taken(uow.conn, tenant_id, name):
                raise CaExists(name=name)
            certificate: Any = None
            chain: list[str] = []
            csr_pem: str | None = None
            if ca_type == "root":
                certificate = x509_builder.build_root_ca(
                    key, common_name=common_name, not_before=at, not_after=at + validity
                )
            elif new.parent_ca_id is not None:
                parent = await self._signing_ca(uow, tenant_id, new.parent_ca_id, at)
                assert parent.not_after is not None and parent.certificate_pem is not None  # an active CA has both
                if at + validity > parent.not_after:
                    raise field_error("validity_days", "an intermediate cannot outlive its parent "
                                                       f"(valid until {parent.not_after.isoformat()})")
                parent_key = await self._ca_key(uow.conn, parent)
                try:
                    certificate = x509_builder.sign_intermediate(
                        _ca_certificate(parent.certificate_pem), parent_key, key.public_key(),
                        common_name=common_name, not_before=at, not_after=at + validity,
                        publication=self._urls.for_ca(parent.ca_id),
                    )
                except x509_builder.InvalidProfile as exc:  # e.g. a parent whose path length allows no CA
                    raise ValidationFailed(str(exc)[:200]) from None
                chain = [parent.certificate_pem, *parent.chain_pems]
            else:
                csr_pem = x509_builder.build_ca_csr(key, common_name=common_name).public_bytes(
                    serialization.Encoding.PEM
                ).decode()
            sealed = await seal_private_key(
                self._keyring, uow.conn, key_pem, owner=tenant_id, kind=CA_KEY, object_id=ca_id
            )
            ca = CertificateAuthority(
                ca_id=ca_id, owner=tenant_id, tenant_id=tenant_id, partner_id=partner_id or "", name=name,
                common_name=common_name, ca_type=ca_type, parent_ca_id=new.parent_ca_id, key_type=spec.key_type,
                key_bits=spec.key_bits, status=PENDING_SIGNATURE if certificate is None else "active",
                certificate_pem=None if certificate is None else x509_builder.certificate_pem(certificate),
                chain_pems=chain, csr_pem=csr_pem,
                serial_number=None if certificate is None else serial_text(certificate.serial_number),
                not_before=None if certificate is None else at,
                not_after=None if certificate is None else at + validity,
                key_ciphertext=sealed.ciphertext, key_data_key_id=sealed.data_key_id, at=at,
                actor=actor.identity_id, request_id=actor.request_id,
            )
            if certificate is not None:
                self._publish(ca, key, FULL_CRL, [], at)
            uow.add(ca)
            record_outcome(access, Outcome.CREATED, ca_id=ca_id)
            return ca

        return await self._runner.run(work, access=access)

    async def import_signed_certificate(
        self, ca_id: str, certificate_pem: str, chain_pem: str | None, actor: Actor,
        access: AccessRecord | None = None,
    ) -> CertificateAuthority:
        """The certificate an external root signed for an intermediate created with ``signed_externally``."""
        tenant_id = managed_tenant(actor, "the PKI")
        try:
            certificate = x509_builder.load_certificate(certificate_pem)
            chain = x509_builder.load_certificate_chain(chain_pem) if chain_pem else []
        except x509_builder.InvalidCertificate as exc:
            raise InvalidCertificate(str(exc)) from None

        async def work(uow: UnitOfWork) -> CertificateAuthority:
            ca = await self._load_ca(uow, tenant_id, ca_id)
            key = await self._ca_key(uow.conn, ca)
            try:
                x509_builder.check_signed_ca_certificate(certificate, key, chain)
            except x509_builder.InvalidCertificate as exc:
                raise InvalidCertificate(str(exc)) from None
            at = self._clock()
            ca.import_signed_certificate(
                certificate_pem=x509_builder.certificate_pem(certificate),
                chain_pems=[x509_builder.certificate_pem(c) for c in chain],
                serial_number=serial_text(certificate.serial_number),
                not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc,
                at=at, actor=actor.identity_id, request_id=actor.request_id,
            )
            self._publish(ca, key, FULL_CRL, [], at)
            uow.add(ca)
            return ca

        return await self._runner.run(work, access=access)

    async def revoke_ca(
        self, ca_id: str, reason: str | None, actor: Actor, access: AccessRecord | None = None
    ) -> int:
        """Revoke the CA and, with it, every certificate and CA below it. Returns how many certificates that
        revoked. The parent's CRL lists the CA's own certificate."""
        tenant_id = managed_tenant(actor, "the PKI")
        note = (reason or "").strip()[:512] or "unspecified"

        async def work(uow: UnitOfWork) -> int:
            at = self._clock()
            ca = await self._load_ca(uow, tenant_id, ca_id)
            if ca.status == REVOKED:  # idempotent: the parent's CRL lists it already, nothing to re-sign
                record_outcome(access, Outcome.OK, ca_id=ca_id, certificates_revoked=0)
                return 0
            revoked = 0
            pending: list[tuple[CertificateAuthority, str | None]] = [(ca, None)]
            while pending:
                current, ancestor = pending.pop()
                await uow.lock(f"pki-ca:{current.ca_id}")
                if current.status == REVOKED:
                    continue
                revoked += await self._lookup.live_certificates(uow.conn, current.ca_id)
                current.revoke(reason=note, cascade_from=ancestor, at=at, actor=actor.identity_id,
                               request_id=actor.request_id)
                uow.add(current)
                self._ca_keys.forget(current.ca_id)
                for child_id in await self._lookup.child_cas(uow.conn, current.ca_id):
                    pending.append((await uow.get(ca_stream_id(child_id)), ca_id))
            await self._list_on_parent_crl(uow, ca, at)
            record_outcome(access, Outcome.OK, ca_id=ca_id, certificates_revoked=revoked)
            return revoked

        self._checked.clear()
        return await self._runner.run(work, access=access)

    async def _list_on_parent_crl(self, uow: UnitOfWork, ca: CertificateAuthority, at: datetime) -> None:
        """A revoked intermediate goes on its parent's CRL: the parent's certificates read model lists it only as
        a CA, so the entry is added here."""
        if ca.parent_ca_id is None or ca.serial_number is None:
            return
        parent = await uow.get(ca_stream_id(ca.parent_ca_id))
        if parent is None or parent.status != "active":
            return
        entries = await self._entries(uow.conn, parent.ca_id, None, at)
        entries.append(RevokedEntry(serial_value(ca.serial_number), at, "ca_compromise"))
        self._publish(parent, await self._ca_key(uow.conn, parent), FULL_CRL, entries, at)
        uow.add(parent)

    async def publish_crl(self, ca_id: str, actor: Actor, access: AccessRecord | None = None) -> PublishedCrl:
        """Sign the CA's complete CRL now, and every partition it has published, with fresh dates."""
        tenant_id = managed_tenant(actor, "the PKI")

        async def work(uow: UnitOfWork) -> PublishedCrl:
            ca = await self._load_ca(uow, tenant_id, ca_id)
            return await self._republish(uow, ca)

        return await self._runner.run(work, access=access)

    async def republish_crl(self, ca_stream: Any) -> None:
        """The scheduler's: re-sign a CA's CRLs before their ``next_update`` (no caller: the server itself)."""

        async def work(uow: UnitOfWork) -> None:
            ca = await uow.get(ca_stream)
            if ca is not None and ca.status == "active":
                await self._republish(uow, ca)

        await self._runner.run(work)

    async def _republish(self, uow: UnitOfWork, ca: CertificateAuthority) -> PublishedCrl:
        at = self._clock()
        ca.check_can_sign(at)
        key = await self._ca_key(uow.conn, ca)
        for partition in await self._lookup.published_partitions(uow.conn, ca.ca_id):
            self._publish(ca, key, partition, await self._entries(uow.conn, ca.ca_id, partition, at), at)
        full = self._publish(ca, key, FULL_CRL, await self._entries(uow.conn, ca.ca_id, None, at), at)
        uow.add(ca)
        return full

    # ---- roles ----------------------------------------------------------------------------------------------------

    async def create_role(
        self, name: object, ca_id: object, settings: Mapping[str, Any], actor: Actor,
        access: AccessRecord | None = None,
    ) -> PkiRole:
        tenant_id = managed_tenant(actor, "the PKI")
        partner_id = actor.caller.partner_id if actor.caller is not None else None
        role_name = check_role_name(name)
        if not isinstance(ca_id, str) or not ca_id:
            raise field_error("ca_id", "the id of the CA the role issues from")
        normalized = normalize_role_settings(settings)
        role_id = new_id("pkr_")

        async def work(uow: UnitOfWork) -> PkiRole:
            await uow.lock(f"pki-role:{tenant_id}:{role_name}")
            if await self._lookup.role(uow.conn, tenant_id, role_name) is not None:
                raise RoleExists(name=role_name)
            await self._require_ca(uow.conn, tenant_id, ca_id)
            role = PkiRole(
                role_id=role_id, owner=tenant_id, tenant_id=tenant_id, partner_id=partner_id or "",
                name=role_name, ca_id=ca_id, settings=normalized, at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id,
            )
            uow.add(role)
            record_outcome(access, Outcome.CREATED, role=role_name)
            return role

        return await self._runner.run(work, access=access)

    async def update_role(
        self, name: str, ca_id: str | None, settings: Mapping[str, Any], actor: Actor,
        access: AccessRecord | None = None,
    ) -> PkiRole:
        tenant_id = managed_tenant(actor, "the PKI")

        async def work(uow: UnitOfWork) -> PkiRole:
            role = await self._load_role(uow, tenant_id, name)
            new_ca = role.ca_id if ca_id is None else ca_id
            if new_ca != role.ca_id:
                await self._require_ca(uow.conn, tenant_id, new_ca)
            role.update(ca_id=new_ca, settings=normalize_role_settings(settings, base=role.settings),
                        at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(role)
            return role

        self._checked.pop((tenant_id, name), None)

        return await self._runner.run(work, access=access)

    async def delete_role(self, name: str, actor: Actor, access: AccessRecord | None = None) -> None:
        """Certificates issued under the role stay valid: revoke them if they should not."""
        tenant_id = managed_tenant(actor, "the PKI")

        async def work(uow: UnitOfWork) -> None:
            role = await self._load_role(uow, tenant_id, name)
            role.delete(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(role)
            record_outcome(access, Outcome.REMOVED, role=name)

        self._checked.pop((tenant_id, name), None)
        await self._runner.run(work, access=access)

    # ---- certificates ---------------------------------------------------------------------------------------------

    async def issue(
        self, role_name: str, request: LeafRequest, actor: Actor, access: AccessRecord | None = None, *,
        source: str = "issue", renewal_of: str | None = None,
    ) -> IssuedCertificate:
        """A certificate with a key generated here; the key is in the answer and, only under a role with
        ``store_private_keys``, kept (sealed)."""
        tenant_id = issuing_tenant(actor)
        role, ca = await self._role_and_ca(tenant_id, role_name)
        settings = role["settings"]
        common_name, dns_names, ips = _requested_names(request)
        _check_names(settings, common_name, dns_names, ips)
        lifetime = leaf_lifetime(settings, request.ttl)
        key_type = settings["key_type"]
        spec = KeySpec("ec", 256) if key_type == "any" else KeySpec(key_type, settings["key_bits"])
        key = await _generate(spec)
        return await self._certify(
            tenant_id, actor, access, role_name, role, ca, key.public_key(), spec, common_name, dns_names, ips,
            lifetime, source=source, private_key=key, renewal_of=renewal_of,
        )

    async def sign(
        self, role_name: str, request: LeafRequest, actor: Actor, access: AccessRecord | None = None, *,
        source: str = "sign", alongside: Alongside | None = None,
    ) -> IssuedCertificate:
        """A certificate for the key of a CSR. The CSR's names are checked against the role like any request (names
        given in the request replace them); nothing else of the CSR (extensions, usages) is taken.

        ``alongside``: more work for the same transaction, given the new certificate's id (approving a CSR request
        records the approval with the certificate it produced)."""
        plan = await self.check_sign(role_name, request, actor)
        return await self._certify(
            plan.tenant_id, actor, access, role_name, plan.role, plan.ca, plan.public_key, plan.spec,
            plan.common_name, plan.dns_names, plan.ip_sans, plan.lifetime, source=source, alongside=alongside,
        )

    async def check_sign(self, role_name: str, request: LeafRequest, actor: Actor) -> SignPlan:
        """Every check ``sign`` makes before signing, and what it would certify. A CSR request is checked by this
        when it is submitted, and again (by ``sign``) when it is approved, against the role as it is then."""
        tenant_id = issuing_tenant(actor)
        try:
            csr = parse_csr(request.csr_pem or "")
        except CsrUnreadable as exc:
            raise InvalidCsr(str(exc)) from None
        try:
            spec = key_spec_of(csr.public_key)
        except UnsupportedKey as exc:
            raise InvalidCsr(str(exc)) from None
        role, ca = await self._role_and_ca(tenant_id, role_name)
        settings = role["settings"]
        refused = key_allowed(settings, spec.key_type, spec.key_bits)
        if refused:
            raise ValidationFailed(
                "The role does not allow this key", fields=[{"field": "csr_pem", "message": refused}]
            )
        names_given = bool(request.common_name or request.alt_names or request.ip_sans)
        if names_given:
            common_name, dns_names, ips = _requested_names(request)
        else:
            common_name, dns_names, ips = _requested_names(LeafRequest(
                common_name=csr.common_name, alt_names=list(csr.dns_names),
                ip_sans=[str(ip) for ip in csr.ip_addresses],
            ))
            if csr.uris or csr.emails:
                raise ValidationFailed("The role does not allow these names", fields=[
                    {"field": "csr_pem", "message": "URI and e-mail names are not issued"}
                ])
        _check_names(settings, common_name, dns_names, ips)
        lifetime = leaf_lifetime(settings, request.ttl)
        return SignPlan(tenant_id, role, ca, csr.public_key, spec, common_name, dns_names, ips, lifetime)

    async def _certify(
        self, tenant_id: str, actor: Actor, access: AccessRecord | None, role_name: str, role: Mapping[str, Any],
        ca: Mapping[str, Any], public_key: Any, spec: KeySpec, common_name: str | None, dns_names: list[str],
        ips: list[str], lifetime: timedelta, *, source: str, private_key: PrivateKey | None = None,
        renewal_of: str | None = None, alongside: Alongside | None = None, partner_id: str | None = None,
    ) -> IssuedCertificate:
        settings = role["settings"]
        if partner_id is None:
            partner_id = (actor.caller.partner_id if actor.caller is not None else None) or ""
        at = self._clock()
        not_before = at - BACKDATE
        not_after = at + lifetime
        if not_after > ca["not_after"]:
            raise ValidationFailed("The certificate would outlive its CA", fields=[
                {"field": "ttl", "message": f"the CA is valid until {ca['not_after'].isoformat()}"}
            ])
        ca_key = await self._ca_key_of_row(tenant_id, ca)
        partition = crl_partition(not_after)
        profile = x509_builder.LeafProfile(
            common_name=common_name, dns_names=tuple(_leaf_names(common_name, dns_names)),
            ip_addresses=tuple(ipaddress.ip_address(ip) for ip in ips),
            key_usage=tuple(settings["key_usage"]), ext_key_usage=tuple(settings["ext_key_usage"]),
            not_before=not_before, not_after=not_after,
        )
        ca_certificate = _ca_certificate(ca["certificate_pem"])
        try:
            certificate = x509_builder.sign_leaf(
                ca_certificate, ca_key, public_key, profile, publication=self._urls.for_ca(ca["ca_id"], partition)
            )
        except x509_builder.InvalidProfile as exc:  # what the role checks let through but X.509 cannot hold
            raise ValidationFailed(str(exc)[:200]) from None
        warn_at, renew_at = self._schedule(settings, at, not_after)
        prepared = PreparedIssue(
            tenant_id=tenant_id, partner_id=partner_id, actor=actor, access=access, role_name=role_name,
            role_updated_at=role["updated_at"], store_private_key=settings["store_private_keys"], ca=ca,
            certificate_id=new_id("cert_"), certificate_pem=x509_builder.certificate_pem(certificate),
            serial_number=serial_text(certificate.serial_number),
            fingerprint=x509_builder.fingerprint_sha256(certificate), common_name=common_name,
            dns_names=list(profile.dns_names), ips=ips, not_before=not_before, not_after=not_after, spec=spec,
            source=source, partition=partition, warn_at=warn_at, renew_at=renew_at, at=at,
            key_pem=private_key_pem(private_key) if private_key is not None else None, renewal_of=renewal_of,
            alongside=alongside,
        )
        if renewal_of is None and alongside is None:
            return await self._issuances.submit(prepared, access)
        return await self._runner.run(lambda uow: self._record_issue(uow, prepared, BatchScope()), access=access)

    async def _record_issue(self, uow: UnitOfWork, p: PreparedIssue, scope: BatchScope) -> IssuedCertificate:
        """Record one prepared certificate in ``uow``: still the role it was built from, still an active CA (held
        shared until commit: a CA's revocation waits for it, and it for the revocation)."""
        ca_id = p.ca["ca_id"]
        if ("lock", ca_id) not in scope.memo:
            await uow.lock_shared(f"pki-ca:{ca_id}")
            scope.memo["lock", ca_id] = await self._lookup.ca(uow.conn, p.tenant_id, ca_id)
        role_key = ("role", p.tenant_id, p.role_name)
        if role_key not in scope.memo:
            scope.memo[role_key] = await self._lookup.role(uow.conn, p.tenant_id, p.role_name)
        current_role, current_ca = scope.memo[role_key], scope.memo["lock", ca_id]
        if current_role is None or current_role["updated_at"] != p.role_updated_at:
            self._checked.pop((p.tenant_id, p.role_name), None)
            raise VersionConflict("The role changed while the certificate was being issued; retry")
        if current_ca is None or current_ca["status"] != "active":
            self._checked.pop((p.tenant_id, p.role_name), None)
            raise CaNotActive("The certificate authority cannot sign certificates", ca_id=ca_id)
        if p.renewal_of is not None:  # under the predecessor's lock: two schedulers never both renew it
            previous = await uow.get(Certificate.create_id(p.renewal_of))
            if previous is None or not previous.renewal_due(p.at):
                raise RenewalNotDue(p.renewal_of)
            previous.mark_renewed(renewed_by=p.certificate_id, at=p.at, actor=p.actor.identity_id)
            uow.add(previous)
        sealed = None
        if p.key_pem is not None and p.store_private_key:
            sealed = await seal_private_key(
                self._keyring, uow.conn, p.key_pem, owner=p.tenant_id, kind=ISSUED_KEY, object_id=p.certificate_id
            )
        uow.add(Certificate(
            certificate_id=p.certificate_id, owner=p.tenant_id, tenant_id=p.tenant_id, partner_id=p.partner_id,
            ca_id=ca_id, role_name=p.role_name, serial_number=p.serial_number, common_name=p.common_name,
            dns_names=p.dns_names, ip_sans=p.ips, not_before=p.not_before, not_after=p.not_after,
            certificate_pem=p.certificate_pem, chain_pems=[], fingerprint_sha256=p.fingerprint,
            key_type=p.spec.key_type, key_bits=p.spec.key_bits, source=p.source, crl_partition=p.partition,
            key_ciphertext=sealed.ciphertext if sealed else None,
            key_data_key_id=sealed.data_key_id if sealed else None,
            renewal_of=p.renewal_of, warn_at=p.warn_at, renew_at=p.renew_at, at=p.at, actor=p.actor.identity_id,
            request_id=p.actor.request_id,
        ))
        if p.alongside is not None:
            await p.alongside(uow, p.certificate_id)
        record_outcome(p.access, Outcome.OK, certificate_id=p.certificate_id, serial_number=p.serial_number,
                       role=p.role_name, ca_id=ca_id)
        return IssuedCertificate(
            certificate_id=p.certificate_id, certificate_pem=p.certificate_pem, issuing_ca_pem=p.ca["certificate_pem"],
            ca_chain=[p.ca["certificate_pem"], *p.ca["chain_pems"]], serial_number=p.serial_number,
            not_before=p.not_before, not_after=p.not_after, private_key_pem=p.key_pem,
            private_key_type=p.spec.key_type if p.key_pem is not None else None,
        )

    async def revoke_certificate(
        self, certificate_id: str, reason: str | None, actor: Actor, access: AccessRecord | None = None
    ) -> bool:
        """Revoke one certificate and re-sign the CRLs that list it (its partition's and the CA's complete one).
        False when it was revoked already (nothing changes)."""
        tenant_id = managed_tenant(actor, "the PKI")
        code = reason or "unspecified"
        if code not in REVOCATION_REASONS:
            raise field_error("reason", f"one of {', '.join(REVOCATION_REASONS)}")

        async def work(uow: UnitOfWork) -> bool:
            stream = await self._lookup.certificate_stream(uow.conn, tenant_id, certificate_id)
            if stream is None:
                raise CertificateNotFound(certificate_id=certificate_id[:64])
            certificate = await uow.get(stream)
            at = self._clock()
            ca = None
            if certificate.ca_id is not None:
                ca = await uow.get(ca_stream_id(certificate.ca_id))  # revocations of one CA take turns
            if ca is not None and ca.status == REVOKED:
                return False  # revoked with its CA already (ca_compromise), which its own revocation must not blur
            if not certificate.revoke(reason=code, at=at, actor=actor.identity_id, request_id=actor.request_id):
                return False
            uow.add(certificate)
            if certificate.ca_id is not None and ca is not None and ca.status == "active" and ca.not_after > at:
                key = await self._ca_key(uow.conn, ca)
                mine = RevokedEntry(serial_value(certificate.serial_number), at, code)
                partition = crl_partition(certificate.not_after)
                if certificate.not_after > at:
                    self._publish(ca, key, partition,
                                  [*await self._entries(uow.conn, ca.ca_id, partition, at), mine], at)
                    self._publish(ca, key, FULL_CRL, [*await self._entries(uow.conn, ca.ca_id, None, at), mine], at)
                uow.add(ca)
            record_outcome(access, Outcome.OK, certificate_id=certificate_id, reason=code)
            return True

        return await self._runner.run(work, access=access)

    def _schedule(self, settings: Mapping[str, Any], at: datetime, not_after: datetime) -> tuple[
        datetime | None, datetime | None
    ]:
        """When to announce a certificate's expiry, and (``auto_renew`` roles) when to renew it: renewal at
        ``renew_before`` (a third of the lifetime by default, at most half of it) before expiry; the warning at
        ``expiry_warning`` before expiry (at most a third of the lifetime), or halfway from the renewal to expiry."""
        lifetime = not_after - at
        renew_at = None
        if settings["auto_renew"]:
            before = parse_duration(settings["renew_before"]) if settings["renew_before"] else lifetime / 3
            renew_at = not_after - min(before, lifetime / 2)
        warn_before = min(self._expiry_warning, lifetime / 3)
        if renew_at is not None:
            warn_before = min(warn_before, (not_after - renew_at) / 2)
        return not_after - warn_before, renew_at

    # ---- scheduled work -------------------------------------------------------------------------------------------

    async def run_due(self, *, limit: int) -> int:
        """Take the PKI steps due now (CRLs to re-sign, renewals, expiry warnings), each in its own transaction;
        returns how many were taken. Each step re-checks under its stream's lock, so several schedulers on one
        database take each once."""
        due = await self._lookup.due(self._runner.pool, self._clock(), limit)
        for kind, stream in due:
            if kind == "crl":
                await self.republish_crl(stream)
            elif kind == "renew":
                await self.renew(stream)
            else:
                await self.warn_expiry(stream)
        return len(due)

    async def warn_expiry(self, stream: UUID) -> None:
        async def work(uow: UnitOfWork) -> None:
            certificate = await uow.get(stream)
            if certificate is not None and certificate.warn_expiry(at=self._clock(), actor=SCHEDULER_IDENTITY):
                uow.add(certificate)

        await self._runner.run(work)

    async def renew(self, stream: UUID) -> str | None:
        """Issue the successor of a certificate under an ``auto_renew`` role: the same names and public key (its
        holder keeps its key and fetches the new certificate), a new serial and lifetime, under the role as it is
        now. Returns the new certificate's id, None when not needed or not possible (recorded as RenewalFailed)."""
        certificate: Any = await self._runner.repository.get(self._runner.pool, stream)
        at = self._clock()
        if certificate is None or not certificate.renewal_due(at) or certificate.role_name is None:
            return None
        actor = Actor(identity_id=SCHEDULER_IDENTITY, request_id=None)
        try:
            role, ca = await self._role_and_ca(certificate.owner, certificate.role_name)
            settings = role["settings"]
            lifetime = certificate.not_after - certificate.not_before - BACKDATE
            lifetime = min(lifetime, parse_duration(settings["max_ttl"]))
            _check_names(settings, certificate.common_name, list(certificate.dns_names), list(certificate.ip_sans))
            old = x509_builder.load_certificate(certificate.certificate_pem)
            spec = key_spec_of(old.public_key())
            refused = key_allowed(settings, spec.key_type, spec.key_bits)
            if refused:  # the role was tightened since: the old key is not certified again
                raise ValidationFailed(refused)
            issued = await self._certify(
                certificate.owner, actor, None, certificate.role_name, role, ca, old.public_key(), spec,
                certificate.common_name, list(certificate.dns_names), list(certificate.ip_sans), lifetime,
                source="renewal", renewal_of=certificate.certificate_id, partner_id=certificate.partner_id,
            )
        except RenewalNotDue:
            return None
        except ScaiVaultError as exc:
            await self._fail_renewal(stream, f"{exc.code}: {exc.message}"[:300])
            return None
        return issued.certificate_id

    async def _fail_renewal(self, stream: UUID, reason: str) -> None:
        async def work(uow: UnitOfWork) -> None:
            certificate = await uow.get(stream)
            if certificate is not None and certificate.renewal_due(self._clock()):
                certificate.fail_renewal(reason=reason, at=self._clock(), actor=SCHEDULER_IDENTITY)
                uow.add(certificate)

        await self._runner.run(work)

    # ---- helpers --------------------------------------------------------------------------------------------------

    def _publish(
        self, ca: CertificateAuthority, key: PrivateKey, partition: str, entries: list[RevokedEntry], at: datetime
    ) -> PublishedCrl:
        number = ca.next_crl_number()
        this_update = at.replace(microsecond=0)
        next_update = this_update + self._crl_lifetime
        assert ca.certificate_pem is not None
        crl = build_crl(
            _ca_certificate(ca.certificate_pem), key, entries, crl_number=number,
            this_update=this_update, next_update=next_update,
            distribution_point=self._urls.crl_url(ca.ca_id, partition) if partition else None,
        )
        der = crl_der(crl)
        ca.publish_crl(partition=partition, crl_number=number, this_update=this_update, next_update=next_update,
                       entries=len(entries), der=der, at=at)
        return PublishedCrl(ca.ca_id, number, this_update, next_update, len(entries), der)

    async def _entries(self, conn: Queryable, ca_id: str, partition: str | None, at: datetime) -> list[RevokedEntry]:
        return [
            RevokedEntry(serial_value(serial), revoked_at, reason)
            for serial, revoked_at, reason in await self._lookup.revoked_entries(conn, ca_id, partition, at)
        ]

    async def _role_and_ca(self, tenant_id: str, role_name: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        known = self._checked.get((tenant_id, role_name))
        if known is not None and time.monotonic() - known[2] < CHECK_CACHE_SECONDS:
            return known[0], known[1]
        pool = self._runner.pool
        role = await self._lookup.role(pool, tenant_id, role_name)
        if role is None:
            raise RoleNotFound(role=role_name[:128])
        ca = await self._lookup.ca(pool, tenant_id, role["ca_id"])
        if ca is None:
            raise CaNotFound(ca_id=role["ca_id"])
        if ca["status"] != "active":
            raise CaNotActive(f"The role's certificate authority is {ca['status'].replace('_', ' ')}",
                              ca_id=role["ca_id"])
        if ca["not_after"] <= self._clock():
            raise CaNotActive("The role's certificate authority has expired", ca_id=role["ca_id"])
        if len(self._checked) >= CHECK_CACHE_SIZE:
            self._checked.clear()
        self._checked[tenant_id, role_name] = (role, ca, time.monotonic())
        return role, ca

    async def _ca_key_of_row(self, tenant_id: str, ca: Mapping[str, Any]) -> PrivateKey:
        return await self._ca_keys.private_key(self._runner.pool, tenant_id, ca["ca_id"], _sealed(ca))

    async def _ca_key(self, conn: Queryable, ca: CertificateAuthority) -> PrivateKey:
        sealed = SealedKey(ca.key_ciphertext, ca.key_data_key_id)
        return await self._ca_keys.private_key(conn, ca.owner, ca.ca_id, sealed)

    async def _signing_ca(self, uow: UnitOfWork, tenant_id: str, ca_id: str, at: datetime) -> CertificateAuthority:
        ca = await self._load_ca(uow, tenant_id, ca_id)
        ca.check_can_sign(at)
        return ca

    async def _load_ca(
        self, uow: UnitOfWork, tenant_id: str, ca_id: str
    ) -> CertificateAuthority:
        ca = await uow.get(ca_stream_id(ca_id))
        if ca is None or ca.owner != tenant_id:  # another tenant's CA answers exactly like a missing one
            raise CaNotFound(ca_id=ca_id[:64])
        return ca

    async def _require_ca(self, conn: Queryable, tenant_id: str, ca_id: str) -> None:
        if await self._lookup.ca(conn, tenant_id, ca_id) is None:
            raise CaNotFound(ca_id=ca_id[:64])

    async def _load_role(self, uow: UnitOfWork, tenant_id: str, name: str) -> PkiRole:
        row = await self._lookup.role(uow.conn, tenant_id, name)
        if row is None:
            raise RoleNotFound(role=name[:128])
        role = await uow.get(role_stream_id(row["role_id"]))
        if role is None or role.deleted:
            raise RoleNotFound(role=name[:128])
        return role
