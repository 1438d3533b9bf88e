"""ACME use cases: accounts, orders and the steps the order worker records (docs/acme.md). One command = one
transaction; the CA is asked before (registration, deactivation) or by the worker between them, never inside one.

Who may do what: managing accounts needs an admin role for the tenant (the edge has checked ``pki:admin``);
ordering needs ``pki:issue`` and an account of the caller's tenant. The worker's steps act as the server itself
(``system:acme``), like the rotation scheduler's writes: the certificate secret is written without a policy check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from commands.actor import Actor
from commands.pki import issuing_tenant
from commands.policies import managed_tenant
from commands.secrets import SecretCommands, WriteSecret
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.acme.challenges import dns01_record
from scaivault.acme.client import AcmeClient, check_names
from scaivault.acme.directory import resolve_directory
from scaivault.acme.models import AcmeAccountInfo, AcmeError, ExternalAccountBinding
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.sealed_keys import ACME_ACCOUNT_KEY, ISSUED_KEY, SealedKey, open_private_key, seal_private_key
from scaivault.database import Queryable
from scaivault.domain.acme import (
    CHALLENGE_TYPES,
    AcmeAccount,
    AcmeOrder,
    account_stream_id,
    order_stream_id,
)
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import (
    AcmeAccountNotFound,
    AcmeOrderNotFound,
    InvalidConfig,
    ScaiVaultError,
    ValidationFailed,
)
from scaivault.domain.labels import clean_name, field_error
from scaivault.domain.outcomes import Outcome
from scaivault.domain.paths import parse_path
from scaivault.domain.pki import Certificate, serial_text
from scaivault.domain.secrets import SecretAddress
from scaivault.ids import new_id
from scaivault.pki import certificates as x509_builder
from scaivault.pki.csr import InvalidCsr as CsrUnreadable
from scaivault.pki.csr import parse_csr
from scaivault.pki.keys import (
    KeySpec,
    UnsupportedKey,
    generate_private_key,
    key_spec_of,
    load_private_key,
    private_key_pem,
)

SYSTEM_IDENTITY = "system:acme"
DEFAULT_RENEW_BEFORE = "30d"
EXPIRY_WARNING = timedelta(days=7)
KEY_TYPES = {"ec": KeySpec("ec", 256), "rsa": KeySpec("rsa", 2048)}
# Retryable failures (the CA unreachable, rate limits, waits that ran out) are tried again after
# RETRY_BASE * 2^(attempts-1), at most RETRY_MOST apart; a failed renewal after RENEWAL_RETRY_BASE * 2^(n-1), at most
# a day apart, so a certificate is still renewed well before it expires once the cause is fixed.
RETRY_BASE = timedelta(seconds=30)
RETRY_MOST = timedelta(hours=1)
RENEWAL_RETRY_BASE = timedelta(hours=1)
RENEWAL_RETRY_MOST = timedelta(days=1)


class AcmeLookup(Protocol):
    """What the commands ask the ACME read models (adapter: ``projections/acme/lookup.py``)."""

    async def renewals_due(self, conn: Queryable, at: datetime, limit: int) -> list[str]: ...


class DnsProviders(Protocol):
    async def provider_for(self, tenant_id: str, fqdn: str) -> str: ...


@dataclass(frozen=True)
class NewAccount:
    name: object
    provider: object
    environment: object = "production"
    email: str | None = None
    directory_url: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = field(default=None, repr=False)
    terms_of_service_agreed: bool | None = None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class NewOrder:
    account_id: str
    common_name: str
    alt_names: Sequence[str] = ()
    challenge_type: str = "dns-01"
    dns_provider_id: str | None = None
    key_type: str = "ec"
    csr_pem: str | None = None
    secret_path: str | None = None
    auto_renew: bool = True
    renew_before: str = DEFAULT_RENEW_BEFORE


@dataclass(frozen=True)
class DrivenOrder:
    """What the worker needs to drive an order: its aggregate's facts, the account (with its key) and the CSR."""

    order_id: str
    owner: str
    names: tuple[str, ...]
    challenge_type: str
    state: dict[str, Any] | None
    step: str
    account: AcmeAccountInfo
    csr_pem: str


def default_secret_path(common_name: str) -> str:
    """``certificates/<name>``: paths hold no dots, so they become underscores, and ``*`` becomes ``_wildcard``
    (``*.acme.example`` -> ``certificates/_wildcard_acme_example``)."""
    return "certificates/" + common_name.replace("*", "_wildcard").replace(".", "_")


def _csr_for(key_pem: str, names: Sequence[str]) -> str:
    key = load_private_key(key_pem)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0][:64])])
    ).add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
    algorithm = None if key.__class__.__name__.startswith("Ed25519") else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return csr.public_bytes(Encoding.PEM).decode("ascii")


def _split_chain(fullchain_pem: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in fullchain_pem.split(marker) if part.strip()]


def _backoff(base: timedelta, most: timedelta, attempts: int) -> timedelta:
    return min(base * (2 ** max(attempts - 1, 0)), most)


def error_of(failure: AcmeError | ScaiVaultError) -> dict[str, str]:
    if isinstance(failure, AcmeError):
        error = {"type": failure.problem_type or failure.kind, "detail": failure.detail}
        if failure.identifier:
            error["identifier"] = failure.identifier
        return error
    return {"type": failure.code, "detail": failure.message[:500]}


class AcmeCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, client: AcmeClient, secrets: SecretCommands,
        lookup: AcmeLookup, dns: DnsProviders, *, clock: Callable[[], datetime] = utcnow,
        on_order: Callable[[], None] | None = None, own_hosts: frozenset[str] = frozenset(),
    ) -> None:
        """``on_order``: called after an order is committed (wakes this process's worker). ``own_hosts``: this
        server's own host names, for which no http-01 or tls-alpn-01 order is taken (this server answers those
        challenges itself, so any tenant could otherwise obtain a certificate for the server's own name)."""
        self._own_hosts = frozenset(host.lower() for host in own_hosts)
        self._runner = runner
        self._keyring = keyring
        self._client = client
        self._secrets = secrets
        self._lookup = lookup
        self._dns = dns
        self._clock = clock
        self._on_order = on_order

    def wake_with(self, on_order: Callable[[], None]) -> None:
        self._on_order = on_order

    # ---- accounts -------------------------------------------------------------------------------------------------

    async def register_account(
        self, new: NewAccount, actor: Actor, access: AccessRecord | None = None
    ) -> AcmeAccount:
        """Register with the CA now (nothing is stored when it refuses: 400 ``invalid_config`` with its reason),
        then keep the account with its key sealed."""
        tenant_id = managed_tenant(actor, "the PKI")
        partner_id = (actor.caller.partner_id if actor.caller is not None else None) or ""
        name = clean_name(new.name)
        problems: list[dict[str, str]] = []
        if name is None:
            problems.append({"field": "name", "message": "1-128 printable characters"})
        if new.terms_of_service_agreed is False:
            problems.append({"field": "terms_of_service_agreed", "message": "the CA's terms must be agreed to"})
        if problems:
            raise ValidationFailed(fields=problems)
        assert name is not None
        choice = resolve_directory(new.provider, new.environment, new.directory_url)
        eab = None
        if new.eab_kid or new.eab_hmac_key:
            if not (new.eab_kid and new.eab_hmac_key):
                raise field_error("eab", "needs both kid and hmac_key")
            eab = ExternalAccountBinding(new.eab_kid, new.eab_hmac_key)
        if choice.requires_external_account and eab is None:
            raise field_error("eab", f"{choice.provider} registers accounts only with an external account binding")
        try:
            info = await self._client.register(
                choice.directory_url, None, new.email, ca_bundle=new.ca_bundle, eab=eab
            )
        except AcmeError as failure:
            raise InvalidConfig(f"The ACME server refused the registration: {failure.detail}",
                                reason=failure.kind, problem_type=failure.problem_type) from None
        account_id = new_id("acct_")

        async def work(uow: UnitOfWork) -> AcmeAccount:
            sealed = await seal_private_key(self._keyring, uow.conn, info.key_pem, owner=tenant_id,
                                            kind=ACME_ACCOUNT_KEY, object_id=account_id)
            account = AcmeAccount(
                account_id=account_id, owner=tenant_id, partner_id=partner_id, name=name,
                provider=choice.provider, environment=choice.environment, directory_url=choice.directory_url,
                email=new.email, account_uri=info.uri, ca_bundle=new.ca_bundle, key_ciphertext=sealed.ciphertext,
                key_data_key_id=sealed.data_key_id, at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id,
            )
            uow.add(account)
            record_outcome(access, Outcome.CREATED, account_id=account_id)
            return account

        return await self._runner.run(work, access=access)

    async def deactivate_account(self, account_id: str, actor: Actor, access: AccessRecord | None = None) -> None:
        """Deactivate at the CA, then forget the key (its data key is destroyed in the same transaction as the
        event). A CA that cannot be reached leaves the account as it was (400 ``invalid_config``)."""
        tenant_id = managed_tenant(actor, "the PKI")
        account = await self._account(self._runner.pool, tenant_id, account_id)
        info = await self.account_info(account)
        try:
            await self._client.deactivate(info)
        except AcmeError as failure:
            if failure.problem_type is None or not failure.problem_type.endswith("unauthorized"):
                raise InvalidConfig(f"The ACME server did not deactivate the account: {failure.detail}",
                                    reason=failure.kind) from None

        async def work(uow: UnitOfWork) -> None:
            current = await uow.get(account_stream_id(account_id))
            if current is None or current.owner != tenant_id or current.status != "valid":
                raise AcmeAccountNotFound(account_id=account_id[:64])
            current.deactivate(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            await self._keyring.destroy_data_keys(uow.conn, [current.key_data_key_id])
            uow.add(current)
            record_outcome(access, Outcome.OK, account_id=account_id)

        await self._runner.run(work, access=access)

    async def _account(self, conn: Queryable, tenant_id: str, account_id: str) -> AcmeAccount:
        account: Any = await self._runner.repository.get(conn, account_stream_id(account_id))
        # Another tenant's account answers exactly like a missing one.
        if account is None or account.owner != tenant_id or account.status != "valid":
            raise AcmeAccountNotFound(account_id=account_id[:64])
        return account

    async def account_info(self, account: AcmeAccount) -> AcmeAccountInfo:
        async with self._runner.pool.acquire() as conn:
            key_pem = await open_private_key(
                self._keyring, conn, SealedKey(account.key_ciphertext, account.key_data_key_id),
                owner=account.owner, kind=ACME_ACCOUNT_KEY, object_id=account.account_id,
            )
        return AcmeAccountInfo(
            directory_url=account.directory_url, uri=account.account_uri, key_pem=key_pem,
            ca_bundle=account.ca_bundle, contact=(f"mailto:{account.email}",) if account.email else (),
        )

    # ---- orders ---------------------------------------------------------------------------------------------------

    async def request_order(self, new: NewOrder, actor: Actor, access: AccessRecord | None = None) -> AcmeOrder:
        """A publicly trusted certificate for names the tenant controls: ordering one is a tenant administrator's
        (no PKI role bounds ACME names: the CA's validation does), and writing its result to ``secret_path`` needs
        the caller's ``write`` permission there, as any secret write does."""
        tenant_id = managed_tenant(actor, "ACME orders")
        partner_id = (actor.caller.partner_id if actor.caller is not None else None) or ""
        names = list(check_names([new.common_name, *new.alt_names]))
        if new.challenge_type not in CHALLENGE_TYPES:
            raise field_error("challenge_type", f"one of {', '.join(CHALLENGE_TYPES)}")
        if new.challenge_type != "dns-01" and any(name.startswith("*.") for name in names):
            raise field_error("challenge_type", "wildcard names are validated by dns-01 only")
        try:
            renew_before = parse_duration(new.renew_before)
        except ValueError:
            raise field_error("renew_before", "a duration such as 30d or 12h") from None
        if renew_before <= timedelta(0):
            raise field_error("renew_before", "a positive duration")
        if new.challenge_type != "dns-01" and self._own_hosts.intersection(names):
            raise field_error("common_name", "this server's own host name is not ordered through http-01 or "
                                             "tls-alpn-01 (it answers those challenges itself)")
        path = parse_path(new.secret_path if new.secret_path is not None else default_secret_path(names[0]))
        await self._secrets.authorize(actor, SecretAddress(
            owner=tenant_id, partner_id=partner_id, tenant_id=tenant_id, path=path), "write")
        await self._account(self._runner.pool, tenant_id, new.account_id)
        dns_provider_id = await self._dns_provider(tenant_id, names, new) if new.challenge_type == "dns-01" else None
        key_pem: str | None = None
        spec = KEY_TYPES.get(new.key_type)
        if new.csr_pem is not None:
            spec = self._check_csr(new.csr_pem, names)
        elif spec is None:
            raise field_error("key_type", f"one of {', '.join(KEY_TYPES)}")
        else:
            key = await asyncio.to_thread(generate_private_key, spec)
            key_pem = private_key_pem(key)
        order_id = new_id("acmeo_")

        async def work(uow: UnitOfWork) -> AcmeOrder:
            sealed = None
            if key_pem is not None:
                sealed = await seal_private_key(self._keyring, uow.conn, key_pem, owner=tenant_id, kind=ISSUED_KEY,
                                                object_id=order_id)
            order = AcmeOrder(
                order_id=order_id, owner=tenant_id, partner_id=partner_id, account_id=new.account_id, names=names,
                challenge_type=new.challenge_type, dns_provider_id=dns_provider_id, key_type=spec.key_type,
                key_bits=spec.key_bits, key_ciphertext=sealed.ciphertext if sealed else None,
                key_data_key_id=sealed.data_key_id if sealed else None, csr_pem=new.csr_pem, secret_path=path,
                auto_renew=new.auto_renew, renew_before_seconds=int(renew_before.total_seconds()), renewal_of=None,
                renewal_of_order=None, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(order)
            record_outcome(access, Outcome.ACCEPTED, order_id=order_id)
            return order

        order = await self._runner.run(work, access=access)
        if self._on_order is not None:
            self._on_order()
        return order

    async def _dns_provider(self, tenant_id: str, names: list[str], new: NewOrder) -> str:
        """The provider that manages every name's ``_acme-challenge`` record (the same one for all: an order's
        records are written through one provider). ``dns_provider_id``, when given, must be it."""
        found: set[str] = set()
        for name in names:
            base = name[2:] if name.startswith("*.") else name
            found.add(await self._dns.provider_for(tenant_id, f"_acme-challenge.{base}"))
        if len(found) > 1:
            raise field_error("alt_names", "the names are managed by different DNS providers: order them apart")
        provider_id = found.pop()
        if new.dns_provider_id is not None and new.dns_provider_id != provider_id:
            raise field_error("dns_provider_id", "is not the tenant's active provider managing these names")
        return provider_id

    @staticmethod
    def _check_csr(csr_pem: str, names: list[str]) -> KeySpec:
        try:
            csr = parse_csr(csr_pem)
            spec = key_spec_of(csr.public_key)
        except (CsrUnreadable, UnsupportedKey) as exc:
            raise field_error("csr_pem", str(exc)[:200]) from None
        requested = {name.lower() for name in csr.dns_names} | ({csr.common_name.lower()} if csr.common_name else set())
        if not set(names) <= requested:
            raise field_error("csr_pem", "must request every name of the order (common_name and alt_names)")
        return spec

    async def cancel_order(self, order_id: str, actor: Actor, access: AccessRecord | None = None) -> None:
        tenant_id = issuing_tenant(actor)

        async def work(uow: UnitOfWork) -> None:
            order = await self._order(uow, tenant_id, order_id)
            order.cancel(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(order)
            record_outcome(access, Outcome.OK, order_id=order_id)

        await self._runner.run(work, access=access)

    @staticmethod
    async def _order(uow: UnitOfWork, tenant_id: str, order_id: str) -> AcmeOrder:
        order = await uow.get(order_stream_id(order_id))
        if order is None or order.owner != tenant_id:
            raise AcmeOrderNotFound(order_id=order_id[:64])
        return order

    # ---- the worker's steps ---------------------------------------------------------------------------------------

    async def driven_order(self, order_id: str) -> DrivenOrder | None:
        """The order as the worker drives it, or None when it needs no driving (ended). Raises ``ScaiVaultError``
        when it cannot be driven (its account was deleted)."""
        order: Any = await self._runner.repository.get(self._runner.pool, order_stream_id(order_id))
        if order is None or order.terminal:
            return None
        account = await self._account(self._runner.pool, order.owner, order.account_id)
        info = await self.account_info(account)
        csr_pem = order.csr_pem
        if csr_pem is None:
            key_pem = await self._order_key(order)
            csr_pem = _csr_for(key_pem, order.names)
        return DrivenOrder(order_id, order.owner, tuple(order.names), order.challenge_type, order.state, order.step,
                           info, csr_pem)

    async def _order_key(self, order: AcmeOrder) -> str:
        assert order.key_ciphertext is not None and order.key_data_key_id is not None
        async with self._runner.pool.acquire() as conn:
            return await open_private_key(
                self._keyring, conn, SealedKey(order.key_ciphertext, order.key_data_key_id),
                owner=order.owner, kind=ISSUED_KEY, object_id=order.order_id,
            )

    async def record_step(self, order_id: str, step: str, state: dict[str, Any]) -> None:
        """Raises ``OrderCancelled`` when the order ended meanwhile (the worker stops driving it)."""
        async def work(uow: UnitOfWork) -> None:
            order = await uow.get(order_stream_id(order_id))
            if order.record_step(step, state, at=self._clock()):
                uow.add(order)

        await self._runner.run(work)

    async def challenge_presented(self, order_id: str, challenge: dict[str, str]) -> None:
        async def work(uow: UnitOfWork) -> None:
            order = await uow.get(order_stream_id(order_id))
            order.present_challenge(challenge, at=self._clock())
            uow.add(order)

        await self._runner.run(work)

    async def challenge_cleaned_up(self, order_id: str, challenge: dict[str, str]) -> None:
        async def work(uow: UnitOfWork) -> None:
            order = await uow.get(order_stream_id(order_id))
            order.clean_up_challenge(challenge, at=self._clock())
            uow.add(order)

        await self._runner.run(work)

    async def schedule_retry(self, order_id: str, failure: AcmeError) -> None:
        async def work(uow: UnitOfWork) -> None:
            order = await uow.get(order_stream_id(order_id))
            if order.terminal:
                return
            at = self._clock()
            delay = _backoff(RETRY_BASE, RETRY_MOST, order.attempts + 1)
            order.schedule_retry(error=error_of(failure), retry_at=at + delay, at=at)
            uow.add(order)

        await self._runner.run(work)

    async def fail(self, order_id: str, failure: AcmeError | ScaiVaultError, state: dict[str, Any] | None) -> None:
        """The order can no longer succeed. A failed renewal order sets its predecessor's renewal to be tried
        again later (backing off), in the same transaction."""
        async def work(uow: UnitOfWork) -> None:
            order = await uow.get(order_stream_id(order_id))
            at = self._clock()
            error = error_of(failure)
            if not order.fail(error=error, state=state, at=at):
                return
            uow.add(order)
            if order.renewal_of_order is not None:
                previous = await uow.get(order_stream_id(order.renewal_of_order))
                if previous is not None and previous.renewal_order_id == order_id:
                    delay = _backoff(RENEWAL_RETRY_BASE, RENEWAL_RETRY_MOST, previous.renewal_failures + 1)
                    previous.renewal_failed(renewal_order_id=order_id, error=error, retry_at=at + delay, at=at)
                    uow.add(previous)

        await self._runner.run(work)

    async def complete(self, order_id: str, state: dict[str, Any], fullchain_pem: str) -> str | None:
        """In one transaction: the certificate (``Certificate.Issued``, source ``acme``), its secret's new version
        and the order's ``Completed``; a renewal also marks its predecessor renewed. Returns the certificate id
        (None when the order had ended meanwhile)."""
        pems = _split_chain(fullchain_pem)
        leaf = x509_builder.load_certificate(pems[0])
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        spec = key_spec_of(leaf.public_key())
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = [str(name) for name in sans.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            dns_names = []
        order_for_key: Any = await self._runner.repository.get(self._runner.pool, order_stream_id(order_id))
        key_pem = await self._order_key(order_for_key) if order_for_key.key_ciphertext is not None else None
        certificate_id = new_id("cert_")
        actor = Actor(identity_id=SYSTEM_IDENTITY, request_id=None)

        async def work(uow: UnitOfWork) -> str | None:
            order = await uow.get(order_stream_id(order_id))
            if order.terminal:
                return None
            at = self._clock()
            lifetime = not_after - not_before
            renew_at = None
            if order.auto_renew:
                # Never sooner than a third of the way: a renew_before longer than the lifetime must not renew
                # each new certificate at once, for ever.
                renew_at = max(not_after - timedelta(seconds=order.renew_before_seconds), not_before + lifetime / 3)
            certificate = Certificate(
                certificate_id=certificate_id, owner=order.owner, tenant_id=order.owner,
                partner_id=order.partner_id, ca_id=None, role_name=None, serial_number=serial_text(leaf.serial_number),
                common_name=order.names[0], dns_names=dns_names, ip_sans=[], not_before=not_before,
                not_after=not_after, certificate_pem=pems[0], chain_pems=pems[1:],
                fingerprint_sha256=x509_builder.fingerprint_sha256(leaf), key_type=spec.key_type,
                key_bits=spec.key_bits, source="acme", crl_partition=None, key_ciphertext=None,
                key_data_key_id=None, renewal_of=order.renewal_of,
                warn_at=not_after - min(EXPIRY_WARNING, lifetime / 3), renew_at=None, at=at,
                actor=SYSTEM_IDENTITY, request_id=None,
            )
            if order.renewal_of is not None:
                previous = await uow.get(Certificate.create_id(order.renewal_of))
                if previous is not None and previous.renewal_due(at):
                    previous.mark_renewed(renewed_by=certificate_id, at=at, actor=SYSTEM_IDENTITY)
                    uow.add(previous)
            data = {"cert_pem": pems[0], "chain_pem": "".join(pems[1:])}
            if key_pem is not None:
                data["key_pem"] = key_pem
            address = SecretAddress(owner=order.owner, partner_id=order.partner_id, tenant_id=order.owner,
                                    path=order.secret_path)
            await self._secrets.write_in(uow, WriteSecret(
                address=address, data=data, secret_type="certificate",
                metadata={"certificate_id": certificate_id, "acme_order_id": order_id},
            ), actor)
            order.complete(certificate_id=certificate_id, state=state, renew_at=renew_at, at=at)
            uow.add(certificate, order)
            return certificate_id

        return await self._runner.run(work)

    # ---- renewals -------------------------------------------------------------------------------------------------

    async def run_due(self, *, limit: int, at: datetime | None = None) -> int:
        """Start a renewal order for each certificate whose order has ``auto_renew`` and whose renewal time has
        come (``at``: now by default). Each start re-checks under the order's lock, so several schedulers start
        each renewal once."""
        moment = at or self._clock()
        due = await self._lookup.renewals_due(self._runner.pool, moment, limit)
        started = 0
        for order_id in due:
            if await self.start_renewal(order_id, at=moment):
                started += 1
        if started and self._on_order is not None:
            self._on_order()
        return len(due)

    async def start_renewal(self, order_id: str, *, at: datetime | None = None) -> str | None:
        previous_state: Any = await self._runner.repository.get(self._runner.pool, order_stream_id(order_id))
        if previous_state is None or not previous_state.renewal_due():
            return None
        key_pem = None
        if previous_state.csr_pem is None:
            key = await asyncio.to_thread(generate_private_key, KeySpec(previous_state.key_type,
                                                                         previous_state.key_bits))
            key_pem = private_key_pem(key)
        renewal_id = new_id("acmeo_")

        async def work(uow: UnitOfWork) -> str | None:
            previous = await uow.get(order_stream_id(order_id))
            if previous is None or not previous.renewal_due():
                return None
            moment = self._clock()
            sealed = None
            if key_pem is not None:
                sealed = await seal_private_key(self._keyring, uow.conn, key_pem, owner=previous.owner,
                                                kind=ISSUED_KEY, object_id=renewal_id)
            renewal = AcmeOrder(
                order_id=renewal_id, owner=previous.owner, partner_id=previous.partner_id,
                account_id=previous.account_id, names=list(previous.names), challenge_type=previous.challenge_type,
                dns_provider_id=previous.dns_provider_id, key_type=previous.key_type, key_bits=previous.key_bits,
                key_ciphertext=sealed.ciphertext if sealed else None,
                key_data_key_id=sealed.data_key_id if sealed else None, csr_pem=previous.csr_pem,
                secret_path=previous.secret_path, auto_renew=previous.auto_renew,
                renew_before_seconds=previous.renew_before_seconds, renewal_of=previous.certificate_id,
                renewal_of_order=previous.order_id, at=moment, actor=SYSTEM_IDENTITY, request_id=None,
            )
            previous.start_renewal(renewal_order_id=renewal_id, at=moment)
            uow.add(previous, renewal)
            return renewal_id

        return await self._runner.run(work)


def challenge_record(task: Mapping[str, str]) -> dict[str, str]:
    """What the events keep of a challenge: never a key; the key authorization only for http-01, whose token
    table every server process answers from (it is public by design: the CA fetches it unauthenticated)."""
    record = {"type": task["type"], "identifier": task["identifier"], "token": task["token"], "url": task["url"]}
    if task["type"] == "http-01":
        record["key_authorization"] = task["key_authorization"]
    if task["type"] == "dns-01":
        record["record_name"] = dns01_record(task["identifier"], task["key_authorization"])[0]
    return record
