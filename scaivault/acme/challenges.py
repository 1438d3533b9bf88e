"""Challenge responders: what the CA's validation server meets when it checks an identifier.

- http-01: ``Http01Tokens`` answers ``GET /.well-known/acme-challenge/{token}`` on the app (port 80 must reach it).
- dns-01: ``Dns01Solver`` writes ``_acme-challenge.<name>`` TXT records through a DNS provider (``dns01_record``).
- tls-alpn-01: ``TlsAlpn01Responder`` is a TLS listener that answers the ``acme-tls/1`` protocol (RFC 8737) with a
  self-signed certificate for the name carrying the key authorization's digest (port 443 must reach it).

Each is a ``Solver`` (``present``, ``cleanup``), so the driver treats them alike. Key authorizations are public by
design (the CA fetches them over plain HTTP); the only key here is each tls-alpn-01 certificate's throwaway key.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import re
import shutil
import ssl
import tempfile
from typing import Protocol

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from scaivault.acme.models import ChallengeTask

log = logging.getLogger(__name__)

HTTP01_PATH = "/.well-known/acme-challenge/{token}"
ACME_TLS_ALPN = "acme-tls/1"
# id-pe-acmeIdentifier (RFC 8737 section 6.1)
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
HANDSHAKE_TIMEOUT_SECONDS = 10.0


class Solver(Protocol):
    """Makes a challenge answerable (``present``) and takes it down again (``cleanup``; safe to repeat, and called
    for every task presented, whatever happened after)."""

    async def present(self, task: ChallengeTask) -> None: ...

    async def cleanup(self, task: ChallengeTask) -> None: ...


# -- http-01 ---------------------------------------------------------------------------------------------------


class Http01Tokens:
    """Token -> key authorization, served by ``handler`` at ``GET /.well-known/acme-challenge/{token}``.

    In memory, so only the process that presented a token answers for it: behind several server processes, route
    the path to one of them or back this map with a shared table."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def add(self, token: str, key_authorization: str) -> None:
        if not _TOKEN.match(token) or not key_authorization.startswith(token + "."):
            raise ValueError("not an http-01 token and its key authorization")
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    def get(self, token: str) -> str | None:
        return self._tokens.get(token)

    def __len__(self) -> int:
        return len(self._tokens)

    async def present(self, task: ChallengeTask) -> None:
        self.add(task.token, task.key_authorization)

    async def cleanup(self, task: ChallengeTask) -> None:
        self.remove(task.token)

    async def handler(self, request: web.Request) -> web.Response:
        key_authorization = self._tokens.get(request.match_info.get("token", ""))
        if key_authorization is None:
            return web.Response(status=404, text="unknown challenge token\n")
        # RFC 8555 section 8.3: the body is the key authorization, as application/octet-stream or text.
        return web.Response(body=key_authorization.encode("ascii"), content_type="application/octet-stream")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(HTTP01_PATH, self.handler)


# -- dns-01 ----------------------------------------------------------------------------------------------------


def dns01_txt_value(key_authorization: str) -> str:
    """The TXT value of a dns-01 challenge: base64url SHA-256 of the key authorization (RFC 8555 section 8.4)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def dns01_record(identifier: str, key_authorization: str) -> tuple[str, str]:
    """``(fqdn, txt_value)`` of a dns-01 challenge: ``_acme-challenge.<name>``, a wildcard's without its ``*.``."""
    base = identifier.strip().rstrip(".").lower()
    if base.startswith("*."):
        base = base[2:]
    return f"_acme-challenge.{base}", dns01_txt_value(key_authorization)


class TxtRecords(Protocol):
    """What dns-01 needs of a DNS provider (``scaivault.dns.port.DnsRecords`` fits)."""

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None: ...

    async def remove_txt(self, fqdn: str, value: str) -> None: ...


class Dns01Solver:
    """Publishes dns-01 records through ``records``. ``settle_seconds``: how long to wait after the records are set
    before the CA is told to look, for providers whose changes reach their name servers with a delay."""

    def __init__(self, records: TxtRecords, *, ttl: int = 60, settle_seconds: float = 0.0) -> None:
        self._records = records
        self._ttl = ttl
        self._settle = settle_seconds

    async def present(self, task: ChallengeTask) -> None:
        fqdn, value = dns01_record(task.identifier, task.key_authorization)
        await self._records.set_txt(fqdn, value, ttl=self._ttl)
        if self._settle > 0:
            await asyncio.sleep(self._settle)

    async def cleanup(self, task: ChallengeTask) -> None:
        fqdn, value = dns01_record(task.identifier, task.key_authorization)
        await self._records.remove_txt(fqdn, value)


# -- tls-alpn-01 -----------------------------------------------------------------------------------------------


def tls_alpn01_certificate(identifier: str, key_authorization: str) -> tuple[bytes, bytes]:
    """``(certificate_pem, key_pem)``: self-signed for ``identifier`` alone, with the critical acmeIdentifier
    extension holding SHA-256 of the key authorization as a DER OCTET STRING (RFC 8737 section 3)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME tls-alpn-01 challenge")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identifier)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


class TlsAlpn01Responder:
    """A TLS listener on ``host:port`` (port 0: any free one) that completes the handshake of a TLS client naming a
    presented identifier as its server name with that identifier's challenge certificate, negotiating
    ``acme-tls/1``, and closes. Any other server name is refused during the handshake, and nothing is ever served
    after it. (Python's ``ssl`` picks the certificate before the ALPN offer is known, so a client that does not
    offer ``acme-tls/1`` sees the challenge certificate too: it holds only a digest of a public value.)"""

    def __init__(self, host: str = "0.0.0.0", port: int = 443) -> None:
        self._host = host
        self._port = port
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._server: asyncio.Server | None = None
        self._base = self._context()
        self._base.sni_callback = self._select

    @staticmethod
    def _context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ACME_TLS_ALPN])
        return context

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        context = self._contexts.get((server_name or "").rstrip(".").lower())
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = context
        return None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, ssl=self._base,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TlsAlpn01Responder:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def add(self, identifier: str, key_authorization: str) -> None:
        certificate_pem, key_pem = tls_alpn01_certificate(identifier, key_authorization)
        context = self._context()
        # ``load_cert_chain`` reads files only: a private directory holds them for the instant it takes.
        directory = tempfile.mkdtemp(prefix="scaivault-alpn-")
        try:
            cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
            for path, data in ((cert_path, certificate_pem), (key_path, key_pem)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
            context.load_cert_chain(cert_path, key_path)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        self._contexts[identifier.rstrip(".").lower()] = context

    def remove(self, identifier: str) -> None:
        self._contexts.pop(identifier.rstrip(".").lower(), None)

    async def present(self, task: ChallengeTask) -> None:
        await asyncio.to_thread(self.add, task.identifier, task.key_authorization)

    async def cleanup(self, task: ChallengeTask) -> None:
        self.remove(task.identifier)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handshake was the whole answer; a client that did not negotiate acme-tls/1 got nothing else either.
        selected = writer.get_extra_info("ssl_object")
        if selected is not None and selected.selected_alpn_protocol() != ACME_TLS_ALPN:
            log.info("tls-alpn-01 listener: a client connected without acme-tls/1")
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
