"""The Webhook aggregate's rules: what a webhook may be created or changed to, how filters match, and rotation."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.errors import ValidationFailed
from scaivault.domain.webhooks import Facets, Webhook, check_filters, check_secret, filters_match, wants

AT = datetime(2026, 5, 1, tzinfo=UTC)
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def create(**overrides: Any) -> Webhook:
    fields: dict[str, Any] = {
        "webhook_id": "wh_1", "tenant_id": "tnt_a", "partner_id": "ptn_a", "name": "alerts",
        "url": "https://hooks.example.com/scaivault", "events": ["secret.created", "secret.*"], "filters": None,
        "enabled": True, "secret_ciphertext": b"sealed", "secret_key_id": "dk_1", "at": AT, "actor": "user:a",
        "request_id": "req_1",
    }
    return Webhook.create(**{**fields, **overrides})


def refused_field(**overrides: Any) -> str:
    with pytest.raises(ValidationFailed) as caught:
        create(**overrides)
    return str(caught.value.details["fields"][0]["field"])


def test_a_valid_webhook_keeps_its_fields_and_drops_repeated_event_types() -> None:
    webhook = create(events=["secret.created", "secret.created", "*"])
    assert webhook.events == ["secret.created", "*"]
    assert (webhook.name, webhook.enabled, webhook.secret_key_id) == ("alerts", True, "dk_1")
    assert webhook.filters == {}


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x", "ftp://hooks.example.com/", "https://", "https://user:pw@hooks.example.com/",
    "https://hooks.example.com/#frag", "not a url", "https://hooks.example.com:99999/", "",
    "https://127.0.0.2/x", "https://169.254.169.254/latest", "https://10.0.0.1/", "http://127.0.0.2/",
])
def test_urls_that_are_refused(url: str) -> None:
    assert refused_field(url=url, http_allowed=LOOPBACK) == "url"


def test_http_and_private_literals_are_allowed_only_where_the_operator_allows_them() -> None:
    assert refused_field(url="http://127.0.0.1:8080/hook") == "url"
    assert create(url="http://127.0.0.1:8080/hook", http_allowed=LOOPBACK).url == "http://127.0.0.1:8080/hook"
    assert create(url="https://127.0.0.1/hook", http_allowed=LOOPBACK).url == "https://127.0.0.1/hook"
    # a host name is checked at every connection (it may resolve anywhere), not here
    assert refused_field(url="http://localhost:8080/hook", http_allowed=LOOPBACK) == "url"
    assert create(url="https://localhost/hook").url == "https://localhost/hook"


@pytest.mark.parametrize(("events", "field"), [
    ([], "events"), (None, "events"), (["nope.created"], "events.0"), (["secret.created", "secret.nope"], "events.1"),
    (["nope.*"], "events.0"), ([1], "events.0"),
])
def test_event_types_must_be_known(events: Any, field: str) -> None:
    assert refused_field(events=events) == field


@pytest.mark.parametrize("url", [
    "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # full-width digits: 127.0.0.1 once IDNA folds them
    "https://127\u30020\u30020\u30021/hook",  # ideographic full stops
    "https://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/latest",
    "https://\uff11\uff10.\uff10.\uff10.\uff11/",
    "https://[fe80::1%25eth0]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[0:0:0:0:0:0:0:1]/hook",
])
def test_addresses_spelt_in_other_forms_are_refused_as_the_client_would_read_them(url: str) -> None:
    """The address check reads the host as the HTTP client will connect to it, not as ``urlsplit`` spells it."""
    assert refused_field(url=url) == "url"


def test_names_and_enabled_are_checked() -> None:
    assert refused_field(name="") == "name"
    assert refused_field(name="x" * 129) == "name"
    assert refused_field(name="bad\nname") == "name"
    assert refused_field(enabled="yes") == "enabled"


@pytest.mark.parametrize(("filters", "field"), [
    ("prod/", "filters"), ({"color": "red"}, "filters.color"), ({"path_prefix": []}, "filters.path_prefix"),
    ({"path_prefix": [""]}, "filters.path_prefix"), ({"tags": "prod"}, "filters.tags"),
    ({"secret_type": 3}, "filters.secret_type"), ({"tags": ["x"] * 51}, "filters.tags"),
])
def test_filters_have_a_fixed_shape(filters: Any, field: str) -> None:
    assert refused_field(filters=filters) == field


def test_filters_are_stored_as_lists() -> None:
    assert check_filters({"path_prefix": "prod/", "secret_type": "json", "tags": ["a", "a", "b"]}) == {
        "path_prefix": ["prod/"], "secret_type": ["json"], "tags": ["a", "b"],
    }


def test_secrets_are_16_to_512_characters_and_never_echoed() -> None:
    assert check_secret("s" * 16) == "s" * 16
    for bad in ("short-secret", "s" * 513, 12345678901234567, "s" * 15 + "\x00"):
        with pytest.raises(ValidationFailed) as caught:
            check_secret(bad)
        assert str(bad) not in str(caught.value.details) and str(bad) not in caught.value.message


def test_filters_any_value_within_a_filter_all_filters_together() -> None:
    filters = check_filters({"path_prefix": ["prod/", "stage/"], "secret_type": "json", "tags": ["pci", "gdpr"]})
    assert filters_match(filters, Facets("prod/db", "json", ("gdpr",)))
    assert filters_match(filters, Facets("stage/db", "json", ("pci", "x")))
    assert not filters_match(filters, Facets("dev/db", "json", ("pci",)))
    assert not filters_match(filters, Facets("prod/db", "text", ("pci",)))
    assert not filters_match(filters, Facets("prod/db", "json", ()))
    assert not filters_match(filters, Facets(None, "json", ("pci",)))  # an event without a path: no path filter


@given(path=st.one_of(st.none(), st.text(max_size=20)), secret_type=st.one_of(st.none(), st.text(max_size=8)),
       tags=st.lists(st.text(max_size=5), max_size=4), event_type=st.sampled_from(["secret.created", "policy.created"]))
def test_no_filters_match_every_event_of_the_types_asked_for(
    path: str | None, secret_type: str | None, tags: list[str], event_type: str
) -> None:
    facets = Facets(path, secret_type, tuple(tags))
    assert filters_match({}, facets)
    assert wants(["secret.*"], {}, event_type, facets) == (event_type == "secret.created")
    assert wants(["*"], {}, event_type, facets)


def test_an_update_checks_like_a_creation_and_keeps_the_secret() -> None:
    webhook = create()
    webhook.update(name="renamed", url=webhook.url, events=["policy.*"], filters={"tags": ["a"]}, enabled=False,
                   at=AT, actor="user:b", request_id=None)
    assert (webhook.name, webhook.events, webhook.filters, webhook.enabled) == (
        "renamed", ["policy.*"], {"tags": ["a"]}, False)
    with pytest.raises(ValidationFailed):
        webhook.update(name="x", url="http://example.com/", events=["*"], filters=None, enabled=True, at=AT,
                       actor="user:b", request_id=None)
    assert webhook.secret_key_id == "dk_1"


def test_rotation_keeps_the_previous_secret_until_it_expires_and_names_the_keys_it_replaces() -> None:
    webhook = create()
    replaced = webhook.rotate_secret(
        secret_ciphertext=b"new", secret_key_id="dk_2", previous_secret_ciphertext=b"old",
        previous_secret_key_id="dk_3",
        previous_secret_expires_at=AT + timedelta(hours=24), at=AT, actor="user:a", request_id=None,
    )
    assert replaced == ["dk_1"]
    assert (webhook.secret_key_id, webhook.previous_secret_key_id) == ("dk_2", "dk_3")
    assert webhook.previous_secret_expires_at == AT + timedelta(hours=24)
    again = webhook.rotate_secret(
        secret_ciphertext=b"newer", secret_key_id="dk_4", previous_secret_ciphertext=b"new2",
        previous_secret_key_id="dk_5", previous_secret_expires_at=AT + timedelta(hours=1), at=AT, actor="user:a",
        request_id=None,
    )
    assert again == ["dk_2", "dk_3"]
    with pytest.raises(ValidationFailed):
        webhook.rotate_secret(
            secret_ciphertext=b"x", secret_key_id="dk_6", previous_secret_ciphertext=b"y",
            previous_secret_key_id="dk_7", previous_secret_expires_at=AT, at=AT, actor="user:a", request_id=None,
        )


def test_a_previous_secret_is_forgotten_only_once_its_overlap_ended() -> None:
    webhook = create()
    assert webhook.forget_expired_previous_secret(at=AT, actor="system:housekeeping") is None  # none to forget
    webhook.rotate_secret(
        secret_ciphertext=b"new", secret_key_id="dk_2", previous_secret_ciphertext=b"old",
        previous_secret_key_id="dk_3", previous_secret_expires_at=AT + timedelta(hours=24), at=AT, actor="user:a",
        request_id=None,
    )
    webhook.collect_events()
    assert webhook.forget_expired_previous_secret(at=AT + timedelta(hours=23), actor="system:housekeeping") is None
    assert webhook.collect_events() == []  # nothing happened while the overlap runs
    assert webhook.forget_expired_previous_secret(at=AT + timedelta(hours=24), actor="system:housekeeping") == "dk_3"
    (forgotten,) = webhook.collect_events()
    assert isinstance(forgotten, Webhook.PreviousSecretExpired)
    assert (forgotten.data_key_id, forgotten.expired_at, forgotten.actor) == (
        "dk_3", AT + timedelta(hours=24), "system:housekeeping")
    assert (webhook.secret_key_id, webhook.previous_secret_key_id, webhook.previous_secret_expires_at) == (
        "dk_2", None, None)
    assert webhook.forget_expired_previous_secret(at=AT + timedelta(days=9), actor="system:housekeeping") is None
    # Nothing is left to destroy later: a rotation replaces only the current secret, a deletion holds only it.
    assert webhook.delete(at=AT, actor="user:a", request_id=None) == ["dk_2"]


def test_the_events_carry_no_plaintext_secret() -> None:
    webhook = create()
    webhook.rotate_secret(
        secret_ciphertext=b"new", secret_key_id="dk_2", previous_secret_ciphertext=b"old",
        previous_secret_key_id="dk_3",
        previous_secret_expires_at=AT + timedelta(hours=1), at=AT, actor="user:a", request_id=None,
    )
    assert webhook.delete(at=AT, actor="user:a", request_id=None) == ["dk_2", "dk_3"]
    names = {name for e in webhook.collect_events() for name in vars(e)}
    assert not {"secret", "previous_secret"} & names
    assert webhook.deleted
