"""Pinned outbound clients against real servers on loopback: moto's S3 server, small aiohttp servers (plain and TLS).

DNS is the one fake (a third-party service): ``socket.getaddrinfo`` answers the test's host names from a script, so a
name can resolve to a listening address once and to a closed one afterwards (a rebinding resolver), and every lookup
is counted.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto.server import ThreadedMotoServer

from scaivault.egress import EgressRefused, PinnedTarget, parse_allow_list, pin_url
from scaivault.egress_botocore import pin_client

LOOPBACK = parse_allow_list("127.0.0.1/32")  # as an operator allows a store on the same machine
CLOSED_ADDRESS = "127.0.0.2"  # loopback too, but nothing listens there: a connection to it is refused at once


@dataclass
class ScriptedDns:
    """Answers scripted names (each lookup takes the next answer; the last one repeats) and counts their lookups;
    other names go to the real resolver."""

    real: Callable[..., Any]
    script: dict[str, list[str]] = field(default_factory=dict)
    lookups: Counter[str] = field(default_factory=Counter)

    def answer(self, name: str, *addresses: str) -> None:
        self.script[name] = list(addresses)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.script:
            return self.real(host, port, *args, **kwargs)
        self.lookups[name] += 1
        answers = self.script[name]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> ScriptedDns:
    scripted = ScriptedDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", scripted.getaddrinfo)  # asyncio and urllib3 both resolve through it
    return scripted


@pytest.fixture(scope="module")
def s3_port() -> Iterator[int]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()[1]
    server.stop()


def s3_client(endpoint: str, **config: Any) -> Any:
    return boto3.session.Session(
        aws_access_key_id="AKIAPINNEDTEST000001", aws_secret_access_key="pinned-test-secret", region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
            s3={"addressing_style": config.pop("addressing_style", "path")},
            **config,
        ),
    )


# ---- a small HTTP(S) server on loopback ---------------------------------------------------------------------------


@dataclass
class Site:
    port: int
    hits: Counter[str] = field(default_factory=Counter)
    server_names: list[str | None] = field(default_factory=list)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """Starts aiohttp sites on 127.0.0.1; each answers ``routes(request) -> Response`` and counts requests by path."""
    runners: list[web.AppRunner] = []

    async def start(
        routes: Callable[[web.Request], web.StreamResponse], tls: ssl.SSLContext | None = None
    ) -> Site:
        site_state = Site(port=0)

        async def handle(request: web.Request) -> web.StreamResponse:
            site_state.hits[request.path] += 1
            await request.read()
            return routes(request)

        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: site_state.server_names.append(name)  # type: ignore
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        site_state.port = runner.addresses[0][1]
        return site_state

    yield start
    for runner in runners:
        await runner.cleanup()


def ok(_: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


# ---- certificates -------------------------------------------------------------------------------------------------


def _certificate(
    subject: str, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """A certificate for one hour: a CA's own when ``issuer`` is None, else a server's for the DNS name ``subject``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    extension: x509.ExtensionType = x509.BasicConstraints(ca=True, path_length=None)
    if issuer is not None:
        extension = x509.SubjectAlternativeName([x509.DNSName(subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(extension, critical=issuer is None)
        .sign(signer, hashes.SHA256())
    )


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    bundle: Path

    def server_context(self, name: str, directory: Path) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key.public_key(), self.certificate.subject, self.key)
        chain, private = directory / f"{name}.pem", directory / f"{name}.key"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain, private)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.bundle))


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate("egress pinning test CA", key.public_key(), None, key)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(key, certificate, bundle)


# ---- S3 through botocore ------------------------------------------------------------------------------------------


async def test_an_s3_upload_goes_to_the_checked_address_without_a_second_lookup(
    dns: ScriptedDns, s3_port: int, tmp_path: Path
) -> None:
    dns.answer("s3pinned", "127.0.0.1", CLOSED_ADDRESS)  # a second lookup would be answered with a closed address
    endpoint = f"http://s3pinned:{s3_port}"
    target = await pin_url(endpoint, LOOPBACK)
    assert target.address == "127.0.0.1"
    client = s3_client(endpoint)
    sender = pin_client(client, target)
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(11 * 1024 * 1024))  # three parts of a multipart upload, sent from several threads
    transfer = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)

    def round_trip() -> tuple[bytes, bytes]:
        client.create_bucket(Bucket="pinned-exports")
        client.put_object(Bucket="pinned-exports", Key="small.txt", Body=b"checked address")
        client.upload_file(str(large), "pinned-exports", "large.bin", Config=transfer)
        small = client.get_object(Bucket="pinned-exports", Key="small.txt")["Body"].read()
        copy = tmp_path / "copy.bin"
        client.download_file("pinned-exports", "large.bin", str(copy))
        return small, copy.read_bytes()

    try:
        small, copy = await asyncio.to_thread(round_trip)
    finally:
        sender.close()
    assert small == b"checked address"
    assert hashlib.sha256(copy).digest() == hashlib.sha256(large.read_bytes()).digest()
    assert dns.lookups["s3pinned"] == 1


async def test_without_pinning_the_same_client_resolves_again_and_misses(dns: ScriptedDns, s3_port: int) -> None:
    """The control for the test above: the scripted resolver does send a second lookup elsewhere."""
    dns.answer("s3pinned", "127.0.0.1", CLOSED_ADDRESS)
    endpoint = f"http://s3pinned:{s3_port}"
    await pin_url(endpoint, LOOPBACK)
    with pytest.raises(EndpointConnectionError):
        await asyncio.to_thread(s3_client(endpoint).list_buckets)
    assert dns.lookups["s3pinned"] >= 2


async def test_a_pinned_s3_client_sends_nothing_to_another_host(dns: ScriptedDns, s3_port: int) -> None:
    dns.answer("s3pinned", "127.0.0.1")
    dns.answer("bucket.s3pinned", "127.0.0.1")  # would reach the store, as a virtual-hosted bucket
    endpoint = f"http://s3pinned:{s3_port}"
    client = s3_client(endpoint, addressing_style="virtual")
    sender = pin_client(client, await pin_url(endpoint, LOOPBACK))
    try:
        with pytest.raises(EgressRefused, match="not the checked destination") as refused:
            await asyncio.to_thread(client.put_object, Bucket="bucket", Key="k", Body=b"x")
    finally:
        sender.close()
    assert "bucket.s3pinned" not in refused.value.public_message
    assert dns.lookups["bucket.s3pinned"] == 0
    with pytest.raises(ValueError, match="not the pinned destination"):
        pin_client(s3_client(f"http://s3pinned:{s3_port + 1}"), await pin_url(endpoint, LOOPBACK))


async def test_a_pinned_s3_client_follows_no_redirect(dns: ScriptedDns, serve: Callable[..., Any]) -> None:
    elsewhere = await serve(ok)

    def redirect(request: web.Request) -> web.StreamResponse:
        location = f"http://elsewhere:{elsewhere.port}{request.path_qs}"
        return web.Response(status=307, headers={"Location": location, "x-amz-bucket-region": "eu-west-1"})

    store = await serve(redirect)
    dns.answer("s3redirect", "127.0.0.1")
    dns.answer("elsewhere", "127.0.0.1")
    endpoint = f"http://s3redirect:{store.port}"
    client = s3_client(endpoint)
    sender = pin_client(client, await pin_url(endpoint, LOOPBACK))
    try:
        with pytest.raises(ClientError):
            await asyncio.to_thread(client.put_object, Bucket="redirected", Key="k", Body=b"x")
    finally:
        sender.close()
    assert sum(elsewhere.hits.values()) == 0 and dns.lookups["elsewhere"] == 0
    assert 1 <= store.hits["/redirected/k"] <= 2  # botocore's region redirector retries the same host at most once


async def test_a_pinned_s3_client_verifies_tls_against_the_endpoint_name(
    dns: ScriptedDns, serve: Callable[..., Any], authority: Authority, tmp_path: Path
) -> None:
    genuine = await serve(ok, tls=authority.server_context("s3tls.test", tmp_path))
    impostor = await serve(ok, tls=authority.server_context("someone-else.test", tmp_path))
    for site, succeeds in ((genuine, True), (impostor, False)):
        dns.answer("s3tls.test", "127.0.0.1", CLOSED_ADDRESS)
        endpoint = f"https://s3tls.test:{site.port}"
        client = s3_client(endpoint)
        sender = pin_client(client, await pin_url(endpoint, LOOPBACK), ca_bundle=str(authority.bundle))
        try:
            if succeeds:
                await asyncio.to_thread(client.head_bucket, Bucket="tls")
            else:
                with pytest.raises(SSLError):
                    await asyncio.to_thread(client.head_bucket, Bucket="tls")
        finally:
            sender.close()
        assert site.server_names[-1] == "s3tls.test"  # the name went out as SNI although the address was dialled
    assert genuine.hits["/tls"] == 1 and sum(impostor.hits.values()) == 0


# ---- aiohttp ------------------------------------------------------------------------------------------------------


def test_a_target_for_botocore_must_speak_http() -> None:
    from scaivault.egress_botocore import PinnedSender

    with pytest.raises(ValueError, match="http or https"):
        PinnedSender(PinnedTarget("wss", "h.test", 443, "8.8.8.8", ("8.8.8.8",)), connect_timeout=1, read_timeout=1)
