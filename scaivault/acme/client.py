"""An asynchronous facade over certbot's ``acme`` library (RFC 8555): accounts, orders, challenges, certificates.

Every call is one step the caller can record and repeat: it takes what the caller stored (the account, the
``OrderState``) and asks the CA for the current state before acting, so a step repeated after a restart does what is
still to do and nothing twice (an answered challenge is not answered again, a finalized order is not finalized
again). No step holds state between calls.

The library is synchronous (requests); each call runs in a worker thread with its own session
(``scaivault.acme.transport``: the egress guard checks each origin, connections go to the checked address). The
library logs whole JWS bodies and responses at DEBUG, so its logger is held at INFO: our own lines say what happened,
without bodies. The account key is never logged, and ``AcmeError`` carries the CA's problem, never a trace.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import josepy as jose
import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scaivault.acme.challenges import dns01_txt_value
from scaivault.acme.models import (
    AcmeAccountInfo,
    AcmeError,
    ChallengeTask,
    ExternalAccountBinding,
    OrderState,
    clip,
)
from scaivault.acme.transport import PinnedAdapter, PinnedSession, RedirectRefused
from scaivault.domain.errors import ValidationFailed
from scaivault.egress import EgressRefused, IPNetwork

log = logging.getLogger(__name__)
logging.getLogger("acme.client").setLevel(logging.INFO)

CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")
USER_AGENT = "ScaiVault-ACME"
DIRECTORY_TTL_SECONDS = 3600.0
MAX_NAMES = 100  # Let's Encrypt's limit of names per certificate
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")  # base64url, RFC 8555 section 8.1
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PEM_CHAIN = "application/pem-certificate-chain"

T = TypeVar("T")


class _Empty(jose.JSONDeSerializable):
    """The ``{}`` payload that tells the CA a challenge is ready (RFC 8555 section 7.5.1). Not falsy, unlike an
    empty josepy object, which the library would send as a POST-as-GET."""

    def to_partial_json(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_json(cls, jobj: Any) -> _Empty:
        return cls()


def generate_account_key() -> str:
    """A new EC P-256 account key, PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _account_jwk(key_pem: str) -> tuple[jose.JWK, jose.JWASignature]:
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeError):
        # The loader's message may quote the input; the key must not reach a log or a client.
        raise ValidationFailed(fields=[{"field": "account_key", "message": "is not a PEM private key"}]) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}
        alg = algs.get(key.curve.name)
        if alg is None:
            message = "EC keys must be P-256, P-384 or P-521"
            raise ValidationFailed(fields=[{"field": "account_key", "message": message}])
        return jose.JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValidationFailed(fields=[{"field": "account_key", "message": "RSA keys must be at least 2048 bits"}])
        return jose.JWKRSA(key=key), jose.RS256
    raise ValidationFailed(fields=[{"field": "account_key", "message": "must be an EC or RSA key"}])


def key_authorization(token: str, account_key_pem: str) -> str:
    """``token.thumbprint`` (RFC 8555 section 8.1)."""
    jwk, _ = _account_jwk(account_key_pem)
    return f"{token}.{jose.b64encode(jwk.public_key().thumbprint()).decode('ascii')}"


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Lower-cased DNS names, each once, in order; a wildcard only as the whole leftmost label."""
    if isinstance(names, str) or not names:
        raise ValidationFailed(fields=[{"field": "names", "message": "must be a non-empty list of DNS names"}])
    if len(names) > MAX_NAMES:
        raise ValidationFailed(fields=[{"field": "names", "message": f"at most {MAX_NAMES} names per order"}])
    result: list[str] = []
    for index, raw in enumerate(names):
        name = raw.strip().rstrip(".").lower() if isinstance(raw, str) else ""
        base = name[2:] if name.startswith("*.") else name
        try:
            ascii_base = base.encode("idna").decode("ascii") if base else ""
        except UnicodeError:
            ascii_base = ""
        labels = ascii_base.split(".")
        if not ascii_base or len(ascii_base) > 253 or len(labels) < 2 or not all(map(_LABEL.match, labels)):
            raise ValidationFailed(
                fields=[{"field": f"names[{index}]", "message": "is not a DNS name (a wildcard only as '*.')"}]
            )
        name = ("*." if name.startswith("*.") else "") + ascii_base
        if name not in result:
            result.append(name)
    return tuple(result)


def _problem(error: messages.Error) -> AcmeError:
    code = error.code or str(error.typ).rsplit(":", 1)[-1]
    parts = [error.detail or error.title or error.description or "the ACME server refused the request"]
    for sub in error.subproblems or ():
        named = f"{sub.identifier.value}: " if sub.identifier is not None else ""
        parts.append(named + (sub.detail or sub.typ))
    identifier = error.identifier.value if error.identifier is not None else None
    if code == "rateLimited":
        kind = "rate_limited"
    elif code == "externalAccountRequired":
        kind = "external_account_required"
    else:
        kind = "server_problem"
    return AcmeError(kind, "; ".join(parts), problem_type=str(error.typ), identifier=identifier)


def _problem_from_json(document: Mapping[str, Any]) -> AcmeError:
    try:
        return _problem(messages.Error.from_json(dict(document)))
    except jose.DeserializationError:
        return AcmeError("bad_response", "the ACME server sent a malformed problem document")


def translate(exc: BaseException) -> AcmeError:
    """Any failure inside the library, as what a client may be told (the operator's log gets the rest)."""
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, messages.Error):
        return _problem(exc)
    if isinstance(exc, EgressRefused):
        log.warning("ACME request refused by the egress guard: %s", exc)
        return AcmeError("egress_refused", exc.public_message)
    if isinstance(exc, RedirectRefused):
        return AcmeError("bad_response", str(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        log.warning("ACME server TLS failure: %s", clip(exc))
        return AcmeError("unreachable", "the TLS handshake with the ACME server failed (is its certificate trusted?)")
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return AcmeError("unreachable", "the ACME server did not answer in time")
    if isinstance(exc, requests.exceptions.RequestException):
        log.warning("ACME server unreachable: %s", clip(exc))
        return AcmeError("unreachable", "could not connect to the ACME server")
    if isinstance(exc, acme_errors.Error | jose.DeserializationError | ValueError | KeyError | TypeError):
        log.warning("unexpected answer from the ACME server: %s: %s", type(exc).__name__, clip(exc))
        return AcmeError("bad_response", "the ACME server's answer was not understood")
    raise exc


class _Connection:
    """One worker thread's view of one ACME server: the library's client and network, a pinned session."""

    def __init__(
        self,
        net: acme_client.ClientNetwork,
        client: acme_client.ClientV2,
        adapter: PinnedAdapter,
    ) -> None:
        self.net = net
        self.client = client
        self._adapter = adapter

    @property
    def directory(self) -> messages.Directory:
        return self.client.directory

    def post(self, url: str, payload: jose.JSONDeSerializable | None, **kwargs: Any) -> requests.Response:
        """A signed POST (``payload`` None: POST-as-GET)."""
        response: requests.Response = self.net.post(url, payload, new_nonce_url=self.directory["newNonce"], **kwargs)
        return response

    def get_json(self, url: str) -> dict[str, Any]:
        document = self.post(url, None).json()
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        return document

    def close(self) -> None:
        self.net.session.close()
        self._adapter.close()


class AcmeClient:
    """The ACME client of a process. ``egress_allow``: the operator's allow list (``SCAIVAULT_EGRESS_ALLOW``);
    ``timeout_seconds`` bounds each HTTP request."""

    def __init__(self, egress_allow: Sequence[IPNetwork] = (), *, timeout_seconds: float = 30.0) -> None:
        self._allow = tuple(egress_allow)
        self._timeout = timeout_seconds
        self._directories: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def _run(self, step: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()

        def in_thread() -> T:
            try:
                return step(loop, *args)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an AcmeError or is re-raised
                raise translate(exc) from None

        return await asyncio.to_thread(in_thread)

    def _directory(self, directory_url: str, net: acme_client.ClientNetwork) -> messages.Directory:
        now = time.monotonic()
        with self._lock:
            cached = self._directories.get(directory_url)
        if cached is None or now - cached[0] > DIRECTORY_TTL_SECONDS:
            document = net.get(directory_url).json()
            if not isinstance(document, dict) or "newNonce" not in document or "newOrder" not in document:
                raise AcmeError("bad_response", "the URL does not serve an ACME directory")
            cached = (now, document)
            with self._lock:
                self._directories[directory_url] = cached
        # ``Directory.from_json`` changes the document it is given.
        return messages.Directory.from_json(copy.deepcopy(cached[1]))

    @contextmanager
    def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        directory_url: str,
        key_pem: str,
        *,
        ca_bundle: str | None,
        account_uri: str | None,
    ) -> Iterator[_Connection]:
        jwk, alg = _account_jwk(key_pem)
        adapter = PinnedAdapter(loop, self._allow, ca_bundle_pem=ca_bundle)
        net = acme_client.ClientNetwork(key=jwk, alg=alg, user_agent=USER_AGENT, timeout=int(self._timeout))
        net.session.close()
        net.session = PinnedSession(adapter)
        connection = _Connection(net, acme_client.ClientV2(messages.Directory({}), net), adapter)
        try:
            connection.client.directory = self._directory(directory_url, net)
            if account_uri is not None:
                net.account = messages.RegistrationResource(uri=account_uri, body=messages.Registration())
            yield connection
        finally:
            connection.close()

    def _account(self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo) -> Any:
        return self._connect(
            loop, account.directory_url, account.key_pem, ca_bundle=account.ca_bundle, account_uri=account.uri
        )

    # -- accounts ---------------------------------------------------------------------------------------------

    async def register(
        self,
        directory_url: str,
        account_key_pem: str | None,
        email: str | None,
        *,
        ca_bundle: str | None = None,
        eab: ExternalAccountBinding | None = None,
    ) -> AcmeAccountInfo:
        """Create the account (agreeing to the CA's terms), or find the one ``account_key_pem`` already has: the same
        call after a restart returns the same account. Without a key, an EC P-256 key is made; the result carries it
        (``key_pem``) for the caller to seal."""
        if email is not None and (not re.fullmatch(r"[^@\s,]+@[^@\s,]+\.[^@\s,]+", email) or len(email) > 254):
            raise ValidationFailed(fields=[{"field": "email", "message": "is not an e-mail address"}])
        key_pem = account_key_pem or generate_account_key()
        _account_jwk(key_pem)  # refuse a bad key before any request
        return await self._run(self._register, directory_url, key_pem, email, ca_bundle, eab)

    def _register(
        self,
        loop: asyncio.AbstractEventLoop,
        directory_url: str,
        key_pem: str,
        email: str | None,
        ca_bundle: str | None,
        eab: ExternalAccountBinding | None,
    ) -> AcmeAccountInfo:
        jwk, _ = _account_jwk(key_pem)
        with self._connect(loop, directory_url, key_pem, ca_bundle=ca_bundle, account_uri=None) as conn:
            binding = None
            if eab is not None:
                try:
                    binding = messages.ExternalAccountBinding.from_data(
                        jwk.public_key(), eab.kid, eab.hmac_key, conn.directory, hmac_alg=eab.alg
                    )
                except (ValueError, TypeError):
                    raise ValidationFailed(
                        fields=[{"field": "eab", "message": "needs a key id, a base64url HMAC key and HS256/384/512"}]
                    ) from None
            elif conn.client.external_account_required():
                raise AcmeError(
                    "external_account_required",
                    "this CA registers accounts only with an external account binding (key id and HMAC key)",
                )
            registration = messages.NewRegistration.from_data(
                email=email, terms_of_service_agreed=True, external_account_binding=binding
            )
            terms = getattr(conn.directory.meta, "terms_of_service", None)
            try:
                created = conn.client.new_account(registration)
                uri, body = created.uri, created.body
                terms = created.terms_of_service or terms
                status = str(body.status or "valid")
                contact = tuple(body.contact or ())
            except acme_errors.ConflictError as exists:
                # The key already has an account (RFC 8555 section 7.3.1): carry on with it.
                uri = exists.location
                conn.net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
                document = conn.get_json(uri)
                status = str(document.get("status") or "valid")
                contact = tuple(document.get("contact") or ())
            log.info("ACME account %s at %s: %s", uri, directory_url, status)
            return AcmeAccountInfo(
                directory_url=directory_url,
                uri=uri,
                key_pem=key_pem,
                status=status,
                terms_of_service=terms,
                ca_bundle=ca_bundle,
                contact=contact,
            )

    async def deactivate(self, account: AcmeAccountInfo) -> AcmeAccountInfo:
        """Deactivate the account at the CA (RFC 8555 section 7.3.6); it can never be used again."""
        return await self._run(self._deactivate, account)

    def _deactivate(self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo) -> AcmeAccountInfo:
        with self._account(loop, account) as conn:
            document = conn.post(account.uri, messages.UpdateRegistration(status=messages.STATUS_DEACTIVATED)).json()
            status = str(document.get("status") or "deactivated")
        return replace(account, status=status)

    # -- orders -----------------------------------------------------------------------------------------------

    async def new_order(self, account: AcmeAccountInfo, names: Sequence[str]) -> OrderState:
        """A new order for ``names`` (not idempotent: store the result before the next step)."""
        identifiers = check_names(names)
        return await self._run(self._new_order, account, identifiers)

    def _new_order(
        self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo, names: tuple[str, ...]
    ) -> OrderState:
        with self._account(loop, account) as conn:
            order = messages.NewOrder(
                identifiers=tuple(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names)
            )
            response = conn.post(conn.directory["newOrder"], order)
            url = response.headers.get("Location")
            if not url:
                raise AcmeError("bad_response", "the ACME server created an order without a Location")
            state = _order_state(url, response.json())
        log.info("ACME order %s created for %d names: %s", state.url, len(names), state.status)
        return state

    async def poll(self, account: AcmeAccountInfo, order: OrderState) -> OrderState:
        """The order as the CA sees it now; an invalid order carries the failing challenge's problem."""
        return await self._run(self._poll, account, order)

    def _poll(self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo, order: OrderState) -> OrderState:
        with self._account(loop, account) as conn:
            return self._fetch_order(conn, order.url)

    def _fetch_order(self, conn: _Connection, url: str) -> OrderState:
        state = _order_state(url, conn.get_json(url))
        if state.status != "invalid":
            return state
        for authz_url in state.authorizations:
            authz = conn.get_json(authz_url)
            if authz.get("status") != "invalid":
                continue
            for challenge in authz.get("challenges") or ():
                if isinstance(challenge, dict) and isinstance(challenge.get("error"), dict):
                    problem = _problem_from_json(challenge["error"])
                    return replace(
                        state,
                        error_type=problem.problem_type or problem.kind,
                        error_detail=problem.detail,
                        error_identifier=_ordered_name(authz),
                    )
        return state

    async def authorizations(
        self, account: AcmeAccountInfo, order: OrderState, preferred: Sequence[str] = CHALLENGE_TYPES
    ) -> list[ChallengeTask]:
        """One challenge per authorization still pending: the first type of ``preferred`` the CA offers for it."""
        unknown = [t for t in preferred if t not in CHALLENGE_TYPES]
        if unknown or not preferred:
            raise ValidationFailed(
                fields=[{"field": "challenge_types", "message": f"must be some of {', '.join(CHALLENGE_TYPES)}"}]
            )
        return await self._run(self._authorizations, account, order, tuple(preferred))

    def _authorizations(
        self,
        loop: asyncio.AbstractEventLoop,
        account: AcmeAccountInfo,
        order: OrderState,
        preferred: tuple[str, ...],
    ) -> list[ChallengeTask]:
        thumbprint = jose.b64encode(_account_jwk(account.key_pem)[0].public_key().thumbprint()).decode("ascii")
        tasks = []
        with self._account(loop, account) as conn:
            for authz_url in order.authorizations:
                authz = conn.get_json(authz_url)
                if authz.get("status") != "pending":
                    continue
                name = _ordered_name(authz)
                offered = {
                    c.get("type"): c for c in authz.get("challenges") or () if isinstance(c, dict)
                }
                chosen = next((t for t in preferred if t in offered), None)
                if chosen is None:
                    raise AcmeError(
                        "unsupported_challenge",
                        f"the CA offers {', '.join(sorted(map(str, offered)))[:100]} for {name}; "
                        f"no configured solver answers those",
                        identifier=name,
                    )
                challenge = offered[chosen]
                token, url = challenge.get("token"), challenge.get("url")
                if not isinstance(token, str) or not _TOKEN.match(token) or not isinstance(url, str):
                    raise AcmeError("bad_response", f"the CA sent a malformed {chosen} challenge for {name}")
                key_auth = f"{token}.{thumbprint}"
                validation = {
                    "http-01": key_auth,
                    "dns-01": dns01_txt_value(key_auth),
                    "tls-alpn-01": dns01_txt_value(key_auth),
                }[chosen]
                tasks.append(
                    ChallengeTask(
                        identifier=name,
                        type=chosen,
                        token=token,
                        key_authorization=key_auth,
                        validation=validation,
                        url=url,
                        authorization_url=authz_url,
                        status=str(challenge.get("status") or "pending"),
                    )
                )
        return tasks

    async def answer(self, account: AcmeAccountInfo, challenge_url: str) -> str:
        """Tell the CA the challenge is ready to be validated, unless it already was told; returns its status."""
        return await self._run(self._answer, account, challenge_url)

    def _answer(self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo, challenge_url: str) -> str:
        with self._account(loop, account) as conn:
            status = str(conn.get_json(challenge_url).get("status"))
            if status != "pending":
                return status
            document = conn.post(challenge_url, _Empty()).json()
            return str(document.get("status") or "processing")

    async def finalize(self, account: AcmeAccountInfo, order: OrderState, csr_pem: str) -> OrderState:
        """Send the CSR once the order is ready; an order already finalized is returned as it is."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeError):
            raise ValidationFailed(fields=[{"field": "csr", "message": "is not a PEM certificate request"}]) from None
        return await self._run(self._finalize, account, order, csr)

    def _finalize(
        self,
        loop: asyncio.AbstractEventLoop,
        account: AcmeAccountInfo,
        order: OrderState,
        csr: x509.CertificateSigningRequest,
    ) -> OrderState:
        with self._account(loop, account) as conn:
            current = self._fetch_order(conn, order.url)
            if current.status in ("processing", "valid"):
                return current
            if current.status == "invalid":
                raise current.error() or AcmeError("order_invalid", "the order is invalid")
            if current.status != "ready":
                raise AcmeError("order_invalid", f"the order cannot be finalized while {current.status}")
            document = conn.post(current.finalize, messages.CertificateRequest(csr=csr)).json()
            state = _order_state(order.url, document)
        log.info("ACME order %s finalized: %s", state.url, state.status)
        return state

    async def fetch_certificate(self, account: AcmeAccountInfo, order: OrderState) -> str:
        """The issued chain (PEM, leaf first) of a valid order."""
        return await self._run(self._fetch_certificate, account, order)

    def _fetch_certificate(self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo, order: OrderState) -> str:
        with self._account(loop, account) as conn:
            url = order.certificate
            if not url:
                current = self._fetch_order(conn, order.url)
                if current.status != "valid" or not current.certificate:
                    raise AcmeError("order_invalid", f"the order has no certificate yet ({current.status})")
                url = current.certificate
            response = conn.post(
                url, None, headers={"Content-Type": conn.net.JOSE_CONTENT_TYPE, "Accept": _PEM_CHAIN}
            )
            chain = response.content.decode("ascii")
        certificates = x509.load_pem_x509_certificates(chain.encode("ascii"))
        if not certificates:
            raise AcmeError("bad_response", "the certificate download held no certificate")
        return chain

    async def revoke(self, account: AcmeAccountInfo, certificate_pem: str, reason: int = 0) -> None:
        """Revoke a certificate this account obtained (RFC 8555 section 7.6; ``reason``: RFC 5280 CRLReason)."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
        except (ValueError, UnicodeError):
            raise ValidationFailed(fields=[{"field": "certificate", "message": "is not a PEM certificate"}]) from None
        if reason not in (0, 1, 3, 4, 5, 9):
            raise ValidationFailed(fields=[{"field": "reason", "message": "must be 0, 1, 3, 4, 5 or 9"}])
        await self._run(self._revoke, account, certificate, reason)

    def _revoke(
        self, loop: asyncio.AbstractEventLoop, account: AcmeAccountInfo, certificate: x509.Certificate, reason: int
    ) -> None:
        with self._account(loop, account) as conn:
            conn.client.revoke(certificate, reason)


def _ordered_name(authz: Mapping[str, Any]) -> str:
    identifier = authz.get("identifier") or {}
    value = str(identifier.get("value", "")) if isinstance(identifier, dict) else ""
    return f"*.{value}" if authz.get("wildcard") else value


def _order_state(url: str, document: Mapping[str, Any]) -> OrderState:
    if not isinstance(document, dict) or not isinstance(document.get("status"), str):
        raise AcmeError("bad_response", "the ACME server sent an order without a status")
    error = document.get("error")
    problem = _problem_from_json(error) if isinstance(error, dict) else None
    # Sorted: the CA may list them in any order, and two polls of an unchanged order must give equal states.
    identifiers = tuple(
        sorted(str(i.get("value")) for i in document.get("identifiers") or () if isinstance(i, dict))
    )
    return OrderState(
        url=url,
        status=document["status"],
        identifiers=identifiers,
        authorizations=tuple(sorted(str(a) for a in document.get("authorizations") or ())),
        finalize=str(document.get("finalize") or ""),
        certificate=document.get("certificate") or None,
        expires=document.get("expires") or None,
        error_type=(problem.problem_type or problem.kind) if problem else None,
        error_detail=problem.detail if problem else None,
        error_identifier=problem.identifier if problem else None,
    )
