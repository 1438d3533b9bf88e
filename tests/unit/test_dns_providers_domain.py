"""The rules of DNS providers (scaivault.domain.dns_providers): names, zones and the zone a name is in, each type's
credentials and config, and the aggregate's events carrying no credential."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scaivault.dns.port import quoted, unquoted, zone_containing
from scaivault.domain.dns_providers import (
    DnsProvider,
    canonical_name,
    check_config,
    check_credentials,
    check_managed_zones,
    check_name,
    check_provider_type,
    zone_for,
    zones_of,
)
from scaivault.domain.errors import ValidationFailed

AT = datetime(2026, 12, 5, tzinfo=UTC)
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def field_of(error: pytest.ExceptionInfo[ValidationFailed]) -> str:
    return str(error.value.details["fields"][0]["field"])


def test_zone_names_are_canonical_and_wildcards_fold_into_their_zone() -> None:
    assert check_managed_zones(["Acme.Example.", "*.acme.example", "acme.example"]) == [
        "acme.example", "*.acme.example"]
    assert zones_of(["acme.example", "*.acme.example", "*.dev.acme.example"]) == ["acme.example", "dev.acme.example"]
    assert canonical_name("bücher.example") == "xn--bcher-kva.example"
    for bad in ([], "acme.example", ["com"], ["a..b"], ["-a.example"], ["a b.example"], ["x" * 64 + ".example"],
                [None], ["*.*.a.example"]):
        with pytest.raises(ValidationFailed):
            check_managed_zones(bad)


def test_the_most_specific_managed_zone_takes_a_name() -> None:
    managed = ["acme.example", "*.dev.acme.example"]
    assert zone_for(managed, "_acme-challenge.acme.example") == "acme.example"
    assert zone_for(managed, "_acme-challenge.api.dev.acme.example.") == "dev.acme.example"
    assert zone_for(managed, "acme.example") == "acme.example"
    assert zone_for(managed, "notacme.example") is None
    assert zone_for(managed, "not a name") is None
    assert zone_containing(["acme.example.", "dev.acme.example"], "X.Dev.Acme.Example") == "dev.acme.example"


def test_names_and_types() -> None:
    assert check_name("  route53-acme ") == "route53-acme"
    for bad in ("", " ", "x" * 129, "a\nb", 7):
        with pytest.raises(ValidationFailed):
            check_name(bad)
    assert check_provider_type("powerdns") == "powerdns"
    with pytest.raises(ValidationFailed):
        check_provider_type("bind9")


@pytest.mark.parametrize(("provider_type", "credentials", "expected"), [
    ("route53", {"access_key_id": "AKIA", "secret_access_key": "s"},
     {"access_key_id": "AKIA", "secret_access_key": "s", "region": "us-east-1"}),
    ("route53", {}, {"region": "us-east-1"}),
    ("powerdns", {"api_url": "http://127.0.0.1:8081/", "api_key": "k"},
     {"api_url": "http://127.0.0.1:8081", "api_key": "k", "server_id": "localhost"}),
    ("scaidns", {"base_url": "https://scaidns.scailabs.ai", "api_key": "sdk_1"},
     {"base_url": "https://scaidns.scailabs.ai", "api_key": "sdk_1"}),
])
def test_credentials_get_their_defaults(provider_type: str, credentials: dict[str, Any],
                                        expected: dict[str, Any]) -> None:
    assert check_credentials(provider_type, credentials, LOOPBACK) == expected


@pytest.mark.parametrize(("provider_type", "credentials", "field"), [
    ("route53", {"access_key_id": "AKIA"}, "credentials.secret_access_key"),
    ("route53", {"secret_access_key": "s"}, "credentials.access_key_id"),
    ("route53", {"session_token": "t"}, "credentials.session_token"),
    ("route53", {"region": "US-EAST-1"}, "credentials.region"),
    ("cloudflare", {}, "credentials.api_token"),
    ("cloudflare", {"api_token": ""}, "credentials.api_token"),
    ("cloudflare", {"api_token": 12}, "credentials.api_token"),
    ("cloudflare", {"api_token": "t\x00"}, "credentials.api_token"),
    ("cloudflare", {"api_token": "t", "extra": 1}, "credentials.extra"),
    ("scaidns", {"base_url": "https://s.example", "api_key": "nope-123456"}, "credentials.api_key"),
    ("scaidns", {"base_url": "http://s.example", "api_key": "sdk_k"}, "credentials.base_url"),
    ("powerdns", {"api_url": "https://user:pw@pdns.example", "api_key": "k"}, "credentials.api_url"),
    ("google", {"project_id": "p", "service_account_json": "not json"}, "credentials.service_account_json"),
    ("google", {"project_id": "p", "service_account_json": {"client_email": "a"}}, "credentials.service_account_json"),
    ("azure", {"subscription_id": "s"}, "credentials.resource_group"),
])
def test_bad_credentials_name_the_field_never_the_value(provider_type: str, credentials: dict[str, Any],
                                                         field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_credentials(provider_type, credentials)
    assert field_of(raised) == field
    shown = json.dumps(raised.value.details) + raised.value.message
    assert all(not isinstance(v, str) or len(v) < 3 or v not in shown for v in credentials.values())


def test_a_service_account_may_be_given_as_an_object() -> None:
    account = {"client_email": "a@p.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----"}
    checked = check_credentials("google", {"project_id": "p", "service_account_json": account})
    assert json.loads(checked["service_account_json"]) == account


def test_config_per_type() -> None:
    assert check_config("cloudflare", None) == {}
    assert check_config("cloudflare", {"api_base_url": "https://cf.example/client/v4/", "ttl": 120}) == {
        "api_base_url": "https://cf.example/client/v4", "ttl": 120}
    assert check_config("route53", {"endpoint_url": "http://127.0.0.1:5000"}, LOOPBACK) == {
        "endpoint_url": "http://127.0.0.1:5000"}
    for provider_type, config, field in (
        ("route53", {"endpoint_url": "http://127.0.0.1:5000"}, "config.endpoint_url"),  # not allowed by the operator
        ("route53", {"endpoint_url": "https://169.254.169.254"}, "config.endpoint_url"),
        ("powerdns", {"api_base_url": "https://x.example"}, "config.api_base_url"),
        ("cloudflare", {"ttl": 0}, "config.ttl"),
        ("cloudflare", {"ttl": True}, "config.ttl"),
        ("cloudflare", [], "config"),
    ):
        with pytest.raises(ValidationFailed) as raised:
            check_config(provider_type, config)
        assert field_of(raised) == field


def _provider(**overrides: Any) -> DnsProvider:
    fields: dict[str, Any] = {
        "provider_id": "dnsp_1", "tenant_id": "tnt_a", "partner_id": "ptn_a", "name": "p", "provider_type": "route53",
        "description": None, "config": {}, "managed_zones": ["acme.example"], "is_active": True,
        "credential_fields": ["access_key_id", "secret_access_key"], "credentials_ciphertext": b"sealed",
        "credentials_key_id": "dk_1", "at": AT, "actor": "user:a", "request_id": None, **overrides,
    }
    return DnsProvider.create(**fields)


def test_the_aggregate_records_changes_and_hands_back_keys_to_destroy() -> None:
    provider = _provider()
    assert provider.update(name="p", description=None, config={}, managed_zones=["acme.example"], is_active=True,
                           at=AT, actor="user:a", request_id=None) is False
    assert provider.update(name="q", description="d", config={"ttl": 60}, managed_zones=["*.acme.example"],
                           is_active=False, at=AT, actor="user:a", request_id=None) is True
    assert (provider.name, provider.managed_zones, provider.is_active) == ("q", ["*.acme.example"], False)
    assert provider.replace_credentials(credential_fields=["api_token"], credentials_ciphertext=b"new",
                                        credentials_key_id="dk_2", at=AT, actor="user:a", request_id=None) == "dk_1"
    assert provider.delete(at=AT, actor="user:a", request_id=None) == "dk_2" and provider.deleted
    kinds = [type(e).__name__ for e in provider.collect_events()]
    assert kinds == ["Created", "Updated", "CredentialsReplaced", "Deleted"]
    with pytest.raises(ValidationFailed):
        _provider(is_active="yes")


def test_txt_presentation_form_round_trips() -> None:
    for value in ("abc-DEF_123", 'quote " and \\ backslash', ""):
        assert unquoted(quoted(value)) == value
    assert unquoted('"part one" "part two"') == "part onepart two"
    assert unquoted("bare") == "bare"
