"""The ACME client core against a real ACME server (pebble, with pebble-challtestsrv as its DNS): accounts, the three
challenge types, a failing challenge, resuming a half-done order from its stored state, and the egress guard.

Our responders listen where pebble's validation authority connects (127.0.0.1, on the ports the fixture gave pebble);
dns-01 records go to challtestsrv through its management API, behind the same ``Solver`` interface a DNS provider
has. Each issued chain is verified with cryptography and with ``openssl verify`` against pebble's root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import ssl
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scaivault.acme import (
    AcmeAccountInfo,
    AcmeClient,
    AcmeError,
    ChallengeTask,
    Dns01Solver,
    ExternalAccountBinding,
    Http01Tokens,
    OrderState,
    TlsAlpn01Responder,
    Waits,
    dns01_record,
    run_order,
)
from scaivault.egress import parse_allow_list
from tests.acme_server import Pebble, listener_certificate, pebble_missing, start_pebble

pytestmark = pytest.mark.skipif(pebble_missing() is not None, reason=pebble_missing() or "")

LOOPBACK = parse_allow_list("127.0.0.1/32")  # as an operator allows an ACME server on the same machine
FAST = Waits(validation_seconds=30, issuance_seconds=30, poll_first=0.1, poll_most=0.5)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = start_pebble(tmp_path_factory.mktemp("pebble"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client() -> AcmeClient:
    return AcmeClient(LOOPBACK, timeout_seconds=10)


@pytest.fixture
async def account(client: AcmeClient, pebble: Pebble) -> AcmeAccountInfo:
    return await client.register(pebble.directory_url, None, "certs@example.com", ca_bundle=pebble.ca_bundle)


@pytest.fixture
async def http01(pebble: Pebble) -> AsyncIterator[Http01Tokens]:
    """Our http-01 handler, served where pebble's validation authority looks for it."""
    tokens = Http01Tokens()
    app = web.Application()
    tokens.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pebble.http_port).start()
    try:
        yield tokens
    finally:
        await runner.cleanup()


class ChalltestsrvTxt:
    """A DNS provider stand-in: TXT records set through challtestsrv's management API (``DnsRecords``' shape)."""

    def __init__(self, pebble: Pebble) -> None:
        self._pebble = pebble
        self.records: defaultdict[str, set[str]] = defaultdict(set)
        self.calls: list[tuple[str, str]] = []

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        self.calls.append(("set", fqdn))
        self.records[fqdn].add(value)
        await asyncio.to_thread(self._pebble.set_txt, fqdn, value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        # challtestsrv clears a name's values all at once: the others are put back.
        self.calls.append(("remove", fqdn))
        self.records[fqdn].discard(value)
        await asyncio.to_thread(self._pebble.clear_txt, fqdn)
        for other in self.records[fqdn]:
            await asyncio.to_thread(self._pebble.set_txt, fqdn, other)
        if not self.records[fqdn]:
            del self.records[fqdn]


class WrongKeyAuthorization:
    """Serves http-01 tokens with a key authorization that is not the account's."""

    def __init__(self, tokens: Http01Tokens) -> None:
        self.tokens = tokens

    async def present(self, task: ChallengeTask) -> None:
        self.tokens.add(task.token, f"{task.token}.not-the-account-thumbprint")

    async def cleanup(self, task: ChallengeTask) -> None:
        self.tokens.remove(task.token)


class Steps:
    """Records ``on_step`` calls as the lead would store them: the state as JSON."""

    def __init__(self, interrupt_at: str | None = None, client: AcmeClient | None = None,
                 account: AcmeAccountInfo | None = None) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._interrupt_at = interrupt_at
        self._client = client
        self._account = account

    async def __call__(self, step: str, state: OrderState) -> None:
        self.seen.append((step, json.loads(json.dumps(state.to_dict()))))
        if step == self._interrupt_at:
            if step == "challenges_answered" and self._client is not None and self._account is not None:
                # The CA validates while the process is down: wait for it, so the resumed run has it done.
                for _ in range(100):
                    if (await self._client.poll(self._account, state)).status != "pending":
                        break
                    await asyncio.sleep(0.1)
            raise Interrupted(step)

    @property
    def names(self) -> list[str]:
        return [step for step, _ in self.seen]

    def last_state(self) -> OrderState:
        return OrderState.from_dict(self.seen[-1][1])


class Interrupted(Exception):
    """The process stopped here."""


def unique(base: str = "example.com") -> str:
    return f"t{uuid.uuid4().hex[:12]}.{base}"


def make_csr(names: list[str]) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0].lstrip("*."))]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def verify_chain(fullchain: str, root_pem: str, names: list[str], key: ec.EllipticCurvePrivateKey,
                 directory: Path) -> None:
    chain = x509.load_pem_x509_certificates(fullchain.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sorted(sans) == sorted(names)
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        child.verify_directly_issued_by(parent)
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to verify the chain"
    (directory / "root.pem").write_text(root_pem)
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "untrusted.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:])
    )
    result = subprocess.run(
        [openssl, "verify", "-CAfile", str(directory / "root.pem"), "-untrusted", str(directory / "untrusted.pem"),
         str(directory / "leaf.pem")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr


# -- accounts --------------------------------------------------------------------------------------------------


async def test_register_generates_a_p256_key_finds_the_same_account_again_and_never_logs_the_key(
    client: AcmeClient, pebble: Pebble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = await client.register(pebble.directory_url, None, "ops@example.com", ca_bundle=pebble.ca_bundle)

    assert account.status == "valid" and account.uri.startswith("https://127.0.0.1:")
    assert account.terms_of_service and account.contact == ("mailto:ops@example.com",)
    key = serialization.load_pem_private_key(account.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    key_body = "".join(account.key_pem.strip().splitlines()[1:-1])
    assert key_body[:40] not in caplog.text and key_body[:40] not in repr(account)
    assert "key_pem" not in account.to_dict()

    again = await client.register(pebble.directory_url, account.key_pem, "ops@example.com", ca_bundle=pebble.ca_bundle)
    assert again.uri == account.uri and again.status == "valid"
    assert AcmeAccountInfo.from_dict(json.loads(json.dumps(account.to_dict())), account.key_pem) == account


async def test_an_untrusted_server_certificate_is_refused(client: AcmeClient, pebble: Pebble) -> None:
    with pytest.raises(AcmeError) as refused:
        await client.register(pebble.directory_url, None, None)
    assert refused.value.kind == "unreachable" and "TLS" in refused.value.detail


async def test_loopback_is_refused_unless_the_operator_allows_it(pebble: Pebble) -> None:
    with pytest.raises(AcmeError) as refused:
        await AcmeClient().register(pebble.directory_url, None, None, ca_bundle=pebble.ca_bundle)
    assert refused.value.kind == "egress_refused"
    assert "127.0.0.1" not in refused.value.detail


async def test_requests_go_to_the_checked_address_with_the_host_name_kept(
    pebble: Pebble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is named by a host name: each operation resolves it once (through the guard), connects to the
    address it checked, and speaks TLS and HTTP to the name (pebble's listener certificate names acme.test; the
    URLs pebble hands back carry the Host header we sent)."""
    real = socket.getaddrinfo
    lookups: Counter[str] = Counter()

    def scripted(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("acme.test", "unnamed.test"):
            lookups[host] += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", scripted)
    client = AcmeClient(LOOPBACK, timeout_seconds=10)
    url = pebble.directory_url.replace("127.0.0.1", "acme.test")
    account = await client.register(url, None, None, ca_bundle=pebble.ca_bundle)
    assert account.uri.startswith("https://acme.test:")
    assert lookups["acme.test"] == 1

    order = await client.new_order(account, [unique()])
    assert order.url.startswith("https://acme.test:") and order.status == "pending"
    assert lookups["acme.test"] == 2

    # The certificate is checked against the name, not the address (it names 127.0.0.1 as well).
    with pytest.raises(AcmeError) as mismatch:
        await client.register(url.replace("acme.test", "unnamed.test"), None, None, ca_bundle=pebble.ca_bundle)
    assert mismatch.value.kind == "unreachable" and lookups["unnamed.test"] == 1


async def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    cert_path, key_path, ca_pem = listener_certificate(tmp_path)
    followed: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")  # followed, it would be answered

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/dir", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        with pytest.raises(AcmeError) as refused:
            await AcmeClient(LOOPBACK).register(f"https://127.0.0.1:{port}/dir", None, None, ca_bundle=ca_pem)
        assert refused.value.kind == "bad_response" and "redirect" in refused.value.detail
        assert followed == []
    finally:
        await runner.cleanup()


async def test_an_external_account_binding_is_required_and_used(
    tmp_path: Path, client: AcmeClient
) -> None:
    hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    server = start_pebble(tmp_path, eab_keys={"kid-1": hmac_key})
    try:
        with pytest.raises(AcmeError) as refused:
            await client.register(server.directory_url, None, None, ca_bundle=server.ca_bundle)
        assert refused.value.kind == "external_account_required"

        account = await client.register(
            server.directory_url, None, None, ca_bundle=server.ca_bundle,
            eab=ExternalAccountBinding("kid-1", hmac_key),
        )
        assert account.status == "valid"
        assert hmac_key not in repr(ExternalAccountBinding("kid-1", hmac_key))
    finally:
        server.stop()


# -- orders ----------------------------------------------------------------------------------------------------


async def test_http01_issues_a_certificate_for_one_name(
    client: AcmeClient, account: AcmeAccountInfo, pebble: Pebble, http01: Http01Tokens, tmp_path: Path
) -> None:
    names = [unique()]
    key, csr = make_csr(names)
    steps = Steps()

    issued = await run_order(client, account, names, csr, {"http-01": http01}, on_step=steps, waits=FAST)

    assert steps.names == [
        "order_created", "challenges_presented", "challenges_answered", "finalized", "certificate_issued"
    ]
    assert issued.order.status == "valid" and issued.order.certificate
    assert steps.last_state() == issued.order
    assert len(http01) == 0
    verify_chain(issued.fullchain_pem, pebble.root_pem(), names, key, tmp_path)


async def test_dns01_issues_a_wildcard_with_its_apex(
    client: AcmeClient, account: AcmeAccountInfo, pebble: Pebble, tmp_path: Path
) -> None:
    base = unique()
    names = [f"*.{base}", base]
    key, csr = make_csr(names)
    records = ChalltestsrvTxt(pebble)
    steps = Steps()

    issued = await run_order(client, account, names, csr, {"dns-01": Dns01Solver(records)}, on_step=steps, waits=FAST)

    assert issued.order.status == "valid"
    # Both authorizations publish at the apex's _acme-challenge name, as two values of one record set.
    assert records.calls.count(("set", f"_acme-challenge.{base}")) == 2
    assert records.calls.count(("remove", f"_acme-challenge.{base}")) == 2
    assert not records.records
    verify_chain(issued.fullchain_pem, pebble.root_pem(), names, key, tmp_path)


async def test_tls_alpn01_issues_a_certificate_for_one_name(
    client: AcmeClient, account: AcmeAccountInfo, pebble: Pebble, tmp_path: Path
) -> None:
    names = [unique()]
    key, csr = make_csr(names)
    async with TlsAlpn01Responder("127.0.0.1", pebble.tls_port) as responder:
        issued = await run_order(client, account, names, csr, {"tls-alpn-01": responder}, waits=FAST)
        assert responder._contexts == {}
    verify_chain(issued.fullchain_pem, pebble.root_pem(), names, key, tmp_path)


async def test_a_wrong_key_authorization_fails_the_order_with_the_cas_problem_and_cleans_up(
    client: AcmeClient, account: AcmeAccountInfo, http01: Http01Tokens
) -> None:
    names = [unique()]
    _, csr = make_csr(names)
    steps = Steps()

    with pytest.raises(AcmeError) as failed:
        await run_order(client, account, names, csr, {"http-01": WrongKeyAuthorization(http01)}, on_step=steps,
                        waits=FAST)

    error = failed.value
    assert error.kind == "challenge_failed" and error.identifier == names[0]
    assert error.problem_type == "urn:ietf:params:acme:error:unauthorized"
    assert error.detail and "Traceback" not in error.detail
    assert steps.names[-1] == "failed"
    final = steps.last_state()
    assert final.status == "invalid" and final.error_type == error.problem_type
    assert final.error_detail == error.detail and final.error_identifier == names[0]
    assert len(http01) == 0


async def test_a_challenge_no_solver_answers_fails_before_anything_is_presented(
    client: AcmeClient, account: AcmeAccountInfo, http01: Http01Tokens
) -> None:
    base = unique()
    _, csr = make_csr([f"*.{base}"])
    steps = Steps()
    with pytest.raises(AcmeError) as failed:
        await run_order(client, account, [f"*.{base}"], csr, {"http-01": http01}, on_step=steps, waits=FAST)
    assert failed.value.kind == "unsupported_challenge" and failed.value.identifier == f"*.{base}"
    assert steps.names == ["order_created", "failed"]


async def test_an_order_interrupted_after_its_challenges_were_answered_resumes_from_the_stored_state(
    client: AcmeClient, account: AcmeAccountInfo, pebble: Pebble, http01: Http01Tokens, tmp_path: Path
) -> None:
    names = [unique()]
    key, csr = make_csr(names)
    first = Steps(interrupt_at="challenges_answered", client=client, account=account)
    with pytest.raises(Interrupted):
        await run_order(client, account, names, csr, {"http-01": http01}, on_step=first, waits=FAST)
    assert first.names == ["order_created", "challenges_presented", "challenges_answered"]
    assert len(http01) == 0
    stored = first.last_state()

    # A new process: a new client, the account and the order as stored.
    restarted = AcmeClient(LOOPBACK, timeout_seconds=10)
    account_again = AcmeAccountInfo.from_dict(json.loads(json.dumps(account.to_dict())), account.key_pem)
    second = Steps()
    issued = await run_order(restarted, account_again, names, csr, {"http-01": Http01Tokens()}, on_step=second,
                             state=stored, waits=FAST)

    assert second.names == ["finalized", "certificate_issued"]
    assert issued.order.url == stored.url and issued.order.status == "valid"
    verify_chain(issued.fullchain_pem, pebble.root_pem(), names, key, tmp_path)


async def test_an_order_interrupted_after_it_was_created_resumes_with_its_challenges(
    client: AcmeClient, account: AcmeAccountInfo, http01: Http01Tokens
) -> None:
    names = [unique(), unique()]
    _, csr = make_csr(names)
    first = Steps(interrupt_at="order_created")
    with pytest.raises(Interrupted):
        await run_order(client, account, names, csr, {"http-01": http01}, on_step=first, waits=FAST)

    second = Steps()
    issued = await run_order(client, account, names, csr, {"http-01": http01}, on_step=second,
                             state=first.last_state(), waits=FAST)
    assert second.names == ["challenges_presented", "challenges_answered", "finalized", "certificate_issued"]
    assert issued.order.url == first.last_state().url

    # Every step repeated on a finished order does nothing twice.
    again = await run_order(client, account, names, csr, {"http-01": http01}, state=issued.order, waits=FAST)
    assert again.order == issued.order and again.fullchain_pem == issued.fullchain_pem


async def test_the_steps_of_the_client_are_idempotent(
    client: AcmeClient, account: AcmeAccountInfo, http01: Http01Tokens
) -> None:
    names = [unique()]
    _, csr = make_csr(names)
    order = await client.new_order(account, names)
    tasks = await client.authorizations(account, order, ["http-01"])
    assert [(t.identifier, t.type) for t in tasks] == [(names[0], "http-01")]
    assert tasks[0].key_authorization.startswith(tasks[0].token + ".")
    assert dns01_record(f"*.{names[0]}", tasks[0].key_authorization)[0] == f"_acme-challenge.{names[0]}"
    await http01.present(tasks[0])
    try:
        # pebble may still say pending in its answer (it validates afterwards); asking again must do no harm.
        assert await client.answer(account, tasks[0].url) in ("pending", "processing", "valid")
        assert await client.answer(account, tasks[0].url) in ("pending", "processing", "valid")
        for _ in range(100):
            order = await client.poll(account, order)
            if order.status != "pending":
                break
            await asyncio.sleep(0.1)
    finally:
        await http01.cleanup(tasks[0])
    assert order.status == "ready"
    assert await client.authorizations(account, order, ["http-01"]) == []

    finalized = await client.finalize(account, order, csr)
    assert (await client.finalize(account, finalized, csr)).url == order.url
    for _ in range(100):
        finalized = await client.poll(account, finalized)
        if finalized.status == "valid":
            break
        await asyncio.sleep(0.1)
    first = await client.fetch_certificate(account, finalized)
    assert await client.fetch_certificate(account, finalized) == first

    await client.revoke(account, first, reason=4)
    with pytest.raises(AcmeError) as twice:
        await client.revoke(account, first, reason=4)
    assert twice.value.problem_type == "urn:ietf:params:acme:error:alreadyRevoked"


async def test_a_deactivated_account_can_order_no_more(client: AcmeClient, pebble: Pebble) -> None:
    account = await client.register(pebble.directory_url, None, None, ca_bundle=pebble.ca_bundle)
    deactivated = await client.deactivate(account)
    assert deactivated.status == "deactivated"
    with pytest.raises(AcmeError) as refused:
        await client.new_order(deactivated, [unique()])
    assert refused.value.kind == "server_problem" and refused.value.problem_type


class RefusingProvider:
    """A DNS provider that refuses every change, as one with revoked credentials does."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        raise RuntimeError("the provider refused the change (HTTP 403)")

    async def remove_txt(self, fqdn: str, value: str) -> None:
        self.removed.append(fqdn)


async def test_a_solver_that_cannot_present_fails_the_order_and_is_still_cleaned_up(
    client: AcmeClient, account: AcmeAccountInfo
) -> None:
    name = unique()
    _, csr = make_csr([name])
    provider = RefusingProvider()
    steps = Steps()
    with pytest.raises(AcmeError) as failed:
        await run_order(client, account, [name], csr, {"dns-01": Dns01Solver(provider)}, on_step=steps, waits=FAST)
    assert failed.value.kind == "solver_failed" and "HTTP 403" in failed.value.detail
    assert steps.names == ["order_created", "failed"] and steps.last_state().error_detail == failed.value.detail
    assert provider.removed == [f"_acme-challenge.{name}"]
