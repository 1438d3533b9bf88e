"""The ACME core's pure parts: directories, names, the records it hands back, challenge values, and the tls-alpn-01
listener (a real TLS handshake on loopback)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl

import pytest
from cryptography import x509

from scaivault.acme import (
    AcmeAccountInfo,
    AcmeError,
    ChallengeTask,
    OrderState,
    TlsAlpn01Responder,
    dns01_record,
    generate_account_key,
    resolve_directory,
)
from scaivault.acme.challenges import ACME_IDENTIFIER_OID, ACME_TLS_ALPN, Http01Tokens
from scaivault.acme.client import check_names, key_authorization
from scaivault.domain.errors import ValidationFailed


@pytest.mark.parametrize(
    ("provider", "environment", "url", "eab"),
    [
        ("letsencrypt", "production", "https://acme-v02.api.letsencrypt.org/directory", False),
        ("letsencrypt", "staging", "https://acme-staging-v02.api.letsencrypt.org/directory", False),
        ("zerossl", "production", "https://acme.zerossl.com/v2/DV90", True),
        ("buypass", "production", "https://api.buypass.com/acme/directory", False),
        ("buypass", "staging", "https://api.test4.buypass.no/acme/directory", False),
        ("google", "production", "https://dv.acme-v02.api.pki.goog/directory", True),
        ("google", "staging", "https://dv.acme-v02.test-api.pki.goog/directory", True),
    ],
)
def test_each_provider_and_environment_names_its_directory(
    provider: str, environment: str, url: str, eab: bool
) -> None:
    choice = resolve_directory(provider, environment)
    assert choice.directory_url == url and choice.requires_external_account is eab


def fields_of(error: ValidationFailed) -> list[str]:
    return [f["field"] for f in error.details["fields"]]


def test_directory_choices_are_validated_field_by_field() -> None:
    with pytest.raises(ValidationFailed) as both:
        resolve_directory("letsencrpyt", "prod")
    assert fields_of(both.value) == ["provider", "environment"]
    with pytest.raises(ValidationFailed) as no_staging:
        resolve_directory("zerossl", "staging")
    assert fields_of(no_staging.value) == ["environment"]
    with pytest.raises(ValidationFailed) as missing:
        resolve_directory("custom", "production")
    assert fields_of(missing.value) == ["directory_url"]
    for bad in ("http://acme.internal/dir", "https://user:pw@acme.internal/dir", "https:///dir", 42,
                "https://acme.internal:99999/dir"):
        with pytest.raises(ValidationFailed):
            resolve_directory("custom", "production", bad)
    with pytest.raises(ValidationFailed) as not_custom:
        resolve_directory("letsencrypt", "production", "https://acme.internal/dir")
    assert fields_of(not_custom.value) == ["directory_url"]
    custom = resolve_directory("custom", "staging", "https://acme.internal:8443/directory")
    assert custom.directory_url == "https://acme.internal:8443/directory"


def test_names_are_normalized_and_checked() -> None:
    assert check_names(["WWW.Example.com.", "*.example.com", "www.example.com", "bücher.example"]) == (
        "www.example.com", "*.example.com", "xn--bcher-kva.example"
    )
    for bad in ([], ["localhost"], ["a..example.com"], ["*.*.example.com"], ["www.*.example.com"],
                ["-a.example.com"], ["a_b.example.com"], "example.com"):
        with pytest.raises(ValidationFailed):
            check_names(bad)


def test_challenge_values_follow_rfc_8555() -> None:
    key = generate_account_key()
    ka = key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", key)
    token, thumbprint = ka.split(".")
    assert token == "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA" and len(thumbprint) == 43
    fqdn, value = dns01_record("*.Example.com.", ka)
    assert fqdn == "_acme-challenge.example.com"
    assert value == base64.urlsafe_b64encode(hashlib.sha256(ka.encode()).digest()).rstrip(b"=").decode()
    assert dns01_record("www.example.com", ka)[0] == "_acme-challenge.www.example.com"


def test_records_round_trip_through_json_and_keep_the_key_out() -> None:
    state = OrderState(
        url="https://ca/order/1", status="invalid", identifiers=("a.example.com",), authorizations=("https://ca/a",),
        finalize="https://ca/f", error_type="urn:ietf:params:acme:error:unauthorized", error_detail="no",
        error_identifier="a.example.com",
    )
    assert OrderState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    error = state.error()
    assert error is not None and error.kind == "challenge_failed" and not error.retryable
    assert AcmeError("server_problem", "x", problem_type="urn:ietf:params:acme:error:rateLimited").retryable
    assert AcmeError("timeout", "x").retryable and not AcmeError("order_invalid", "x").retryable
    assert "Traceback" not in AcmeError("bad_response", "a\n  b" * 400).detail
    assert len(AcmeError("bad_response", "a" * 2000).detail) == 500

    key = generate_account_key()
    account = AcmeAccountInfo("https://ca/dir", "https://ca/acct/1", key)
    assert "PRIVATE" not in repr(account) and "PRIVATE" not in json.dumps(account.to_dict())
    task = ChallengeTask("a.example.com", "http-01", "tok", "tok.x", "tok.x", "https://ca/c", "https://ca/a")
    assert ChallengeTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task


def test_http01_tokens_refuse_what_is_not_a_token() -> None:
    tokens = Http01Tokens()
    for token, ka in (("../etc", "../etc.x"), ("tok", "other.x"), ("", ".x")):
        with pytest.raises(ValueError):
            tokens.add(token, ka)
    tokens.add("tok_en-1", "tok_en-1.thumb")
    assert tokens.get("tok_en-1") == "tok_en-1.thumb"


async def _handshake(port: int, server_name: str, alpn: list[str]) -> x509.Certificate:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the challenge certificate is self-signed by design
    context.set_alpn_protocols(alpn)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_name)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == ACME_TLS_ALPN
        return x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
    finally:
        writer.close()


async def test_the_tls_alpn01_listener_answers_presented_names_only() -> None:
    key = generate_account_key()
    ka = key_authorization("c29tZS10b2tlbi12YWx1ZS0xMjM0NTY", key)
    async with TlsAlpn01Responder("127.0.0.1", 0) as responder:
        responder.add("www.example.com", ka)
        certificate = await _handshake(responder.port, "www.example.com", [ACME_TLS_ALPN])
        extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        assert extension.critical and isinstance(extension.value, x509.UnrecognizedExtension)
        assert extension.value.value == b"\x04\x20" + hashlib.sha256(ka.encode()).digest()
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["www.example.com"]

        with pytest.raises((ssl.SSLError, ConnectionError)):  # an alert, or the connection dropped
            await _handshake(responder.port, "other.example.com", [ACME_TLS_ALPN])
        responder.remove("www.example.com")
        with pytest.raises((ssl.SSLError, ConnectionError)):  # an alert, or the connection dropped
            await _handshake(responder.port, "www.example.com", [ACME_TLS_ALPN])
