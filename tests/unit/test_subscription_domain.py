"""The Subscription aggregate and its rules: validation of what a subscription asks for, delivery (with a PATCH's
merge over the current delivery), which events it wants, who administers it, and that no event holds a plaintext
signing secret."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.errors import ValidationFailed
from scaivault.domain.globs import InvalidGlob, glob_matches
from scaivault.domain.notifications import type_matches
from scaivault.domain.subscriptions import (
    DEFAULT_BUFFER_SIZE,
    MAX_BUFFER_SIZE,
    MAX_PATHS,
    MAX_PATHS_LENGTH,
    DeliveryRequest,
    Interest,
    SealedSecret,
    Subscription,
    administers,
    check_delivery,
    check_paths,
    same_identity,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "a-signing-secret-of-32-characters"
ALLOW_LOCAL = (ipaddress.ip_network("127.0.0.0/8"),)
POLL = DeliveryRequest("polling", None, None, DEFAULT_BUFFER_SIZE)
SEALED = SealedSecret(b"ciphertext", "dk_1")


def new(delivery: DeliveryRequest = POLL, sealed: SealedSecret | None = None, **fields: Any) -> Subscription:
    values: dict[str, Any] = {"name": "db watcher", "paths": ["app/**"], "events": ["secret.*"], "filters": None}
    values.update(fields)
    return Subscription.create(
        subscription_id="sub_1", tenant_id="tnt_a", partner_id="ptn_a", identity_id="sa:svc", delivery=delivery,
        sealed=sealed, at=AT, actor="sa:svc", request_id="req_1", **values,
    )


def field_of(error: ValidationFailed) -> str:
    return str(error.details["fields"][0]["field"])


def test_a_new_subscription_is_active_and_owned_by_its_creator() -> None:
    subscription = new(paths=["app/**", "app/**", "db/*"], events=["secret.created", "*"])
    assert (subscription.identity_id, subscription.status) == ("sa:svc", "active")
    assert subscription.delivery_type == "polling"
    assert subscription.paths == ["app/**", "db/*"] and subscription.events == ["secret.created", "*"]
    assert subscription.buffer_size == DEFAULT_BUFFER_SIZE and subscription.sealed_secret is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": ""}, "name"), ({"name": "x" * 129}, "name"), ({"name": "a\nb"}, "name"),
    ({"paths": []}, "paths"), ({"paths": "app/**"}, "paths"), ({"paths": [3]}, "paths.0"),
    ({"paths": ["x"] * 101}, "paths"),
    ({"events": []}, "events"), ({"events": ["secret.nonsense"]}, "events.0"), ({"events": ["nope.*"]}, "events.0"),
    ({"filters": {"colour": ["red"]}}, "filters.colour"), ({"filters": {"tags": "prod"}}, "filters.tags"),
    ({"filters": []}, "filters"),
])
def test_invalid_fields_are_named(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        new(**fields)
    assert field_of(refused.value) == field


@pytest.mark.parametrize("pattern", ["/app", "app/", "App/*", "a//b", "app/x**", "", "a b"])
def test_paths_are_globs_as_policies_write_them(pattern: str) -> None:
    with pytest.raises(InvalidGlob) as refused:
        new(paths=["ok/*", pattern])
    assert refused.value.details["field"] == "paths.1"


def test_the_globs_together_hold_at_most_4096_characters_and_kept_ones_stay() -> None:
    at_most = [f"{n}{'a' * 510}" for n in range(MAX_PATHS_LENGTH // 511)] + ["b" * (MAX_PATHS_LENGTH % 511)]
    assert sum(map(len, at_most)) == MAX_PATHS_LENGTH
    assert new(paths=[*at_most, *at_most]).paths == at_most  # repeated globs count once, as they are kept once
    with pytest.raises(ValidationFailed) as refused:
        new(paths=[*at_most, "c"])
    assert field_of(refused.value) == "paths" and "4096" in refused.value.details["fields"][0]["message"]
    # A subscription whose globs predate the rule keeps them through a PATCH that leaves them alone; new ones are held
    # to it.
    kept = [f"{n}{'a' * 511}" for n in range(9)]
    old = Subscription(
        subscription_id="sub_1", tenant_id="tnt_a", partner_id="ptn_a", identity_id="sa:svc", name="old", paths=kept,
        events=["*"], filters={}, delivery_type="polling", url=None, secret_ciphertext=None, secret_key_id=None,
        buffer_size=DEFAULT_BUFFER_SIZE, at=AT, actor="sa:svc", request_id=None,
    )
    old.update(paths=old.paths, events=["secret.*"], delivery=POLL, sealed=None, at=AT, actor="sa:svc",
               request_id=None)
    assert old.paths == kept and old.events == ["secret.*"]
    with pytest.raises(ValidationFailed):
        old.update(paths=[*kept, "x"], events=["*"], delivery=POLL, sealed=None, at=AT, actor="sa:svc",
                   request_id=None)


def test_filters_are_kept_as_lists() -> None:
    subscription = new(filters={"secret_type": "database", "tags": ["prod", "pci"]})
    assert subscription.filters == {"secret_type": ["database"], "tags": ["prod", "pci"]}


def test_polling_delivery_defaults_and_bounds() -> None:
    assert check_delivery({"type": "polling"}, ()) == POLL
    assert check_delivery({"type": "polling", "buffer_size": MAX_BUFFER_SIZE}, ()).buffer_size == MAX_BUFFER_SIZE
    for bad in (0, MAX_BUFFER_SIZE + 1, True, "10", 1.5):
        with pytest.raises(ValidationFailed) as refused:
            check_delivery({"type": "polling", "buffer_size": bad}, ())
        assert field_of(refused.value) == "delivery.buffer_size"
    with pytest.raises(ValidationFailed) as refused:
        check_delivery({"type": "polling", "url": "https://example.com/"}, ())
    assert field_of(refused.value) == "delivery.url"


@pytest.mark.parametrize(("delivery", "field"), [
    ({"type": "webhook", "secret": SECRET}, "delivery.url"),
    ({"type": "webhook", "url": "https://example.com/hook"}, "delivery.secret"),
    ({"type": "webhook", "url": "https://example.com/hook", "secret": "short"}, "delivery.secret"),
    ({"type": "webhook", "url": "http://example.com/hook", "secret": SECRET}, "delivery.url"),
    ({"type": "webhook", "url": "http://10.0.0.1/hook", "secret": SECRET}, "delivery.url"),
    ({"type": "webhook", "url": "ftp://example.com/", "secret": SECRET}, "delivery.url"),
    ({"type": "webhook", "url": "https://u:p@example.com/", "secret": SECRET}, "delivery.url"),
    ({"type": "webhook", "url": "https://example.com/", "secret": SECRET, "buffer_size": 10}, "delivery.buffer_size"),
    ({"type": "carrier-pigeon"}, "delivery.type"),
    ({}, "delivery.type"),
])
def test_push_delivery_needs_an_https_url_and_a_secret(delivery: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_delivery(delivery, ALLOW_LOCAL)
    assert field_of(refused.value) == field
    assert SECRET not in str(refused.value.details)


def test_plain_http_only_to_an_address_the_operator_allows() -> None:
    request = check_delivery({"type": "webhook", "url": "http://127.0.0.1:8080/hook", "secret": SECRET}, ALLOW_LOCAL)
    assert (request.type, request.url, request.secret) == ("webhook", "http://127.0.0.1:8080/hook", SECRET)
    assert SECRET not in repr(request)


def test_a_patch_of_the_delivery_keeps_what_it_does_not_change() -> None:
    pushed = new(check_delivery({"type": "webhook", "url": "https://a.example/", "secret": SECRET}, ()), SEALED)
    only_url = check_delivery({"url": "https://b.example/"}, (), current=pushed)
    assert (only_url.type, only_url.url, only_url.secret) == ("webhook", "https://b.example/", None)
    assert pushed.update(paths=["app/**"], events=["*"], delivery=only_url, sealed=None, at=AT, actor="a",
                         request_id=None) is None
    assert pushed.sealed_secret == SEALED and pushed.url == "https://b.example/"
    polled = new(check_delivery({"type": "polling", "buffer_size": 5}, ()))
    assert check_delivery({}, (), current=polled).buffer_size == 5
    with pytest.raises(ValidationFailed):  # a new push delivery needs its secret
        check_delivery({"type": "webhook", "url": "https://a.example/"}, (), current=polled)


def test_replacing_or_dropping_a_secret_hands_back_its_data_key() -> None:
    pushed = new(check_delivery({"type": "webhook", "url": "https://a.example/", "secret": SECRET}, ()), SEALED)
    new_secret = check_delivery({"secret": SECRET + "2"}, (), current=pushed)
    replaced = pushed.update(paths=pushed.paths, events=pushed.events, delivery=new_secret,
                             sealed=SealedSecret(b"other", "dk_2"), at=AT, actor="a", request_id=None)
    assert replaced == "dk_1" and pushed.secret_key_id == "dk_2"
    to_polling = pushed.update(paths=pushed.paths, events=pushed.events, delivery=POLL, sealed=None, at=AT,
                               actor="a", request_id=None)
    assert to_polling == "dk_2" and pushed.sealed_secret is None and pushed.url is None
    assert new().delete(at=AT + timedelta(days=1), actor="a", request_id=None) is None


def test_events_hold_the_sealed_secret_only() -> None:
    pushed = new(check_delivery({"type": "webhook", "url": "https://a.example/", "secret": SECRET}, ()), SEALED)
    pushed.delete(at=AT, actor="a", request_id=None)
    events = pushed.collect_events()
    assert [type(e).__name__ for e in events] == ["Created", "Deleted"]
    assert all(SECRET not in repr(vars(e)) for e in events)
    assert isinstance(events[0], Subscription.Created) and events[0].secret_ciphertext == b"ciphertext"
    assert pushed.deleted


def test_a_delivery_and_its_sealed_secret_go_together() -> None:
    with pytest.raises(ValueError, match="sealed secret"):
        new(POLL, SEALED)
    with pytest.raises(ValueError, match="sealed secret"):
        new(DeliveryRequest("webhook", "https://a.example/", SECRET, DEFAULT_BUFFER_SIZE), None)


def test_events_without_a_path_go_only_to_subscriptions_of_everything() -> None:
    assert Interest(("**",), ("policy.*",), {}).wants("policy.created", None, None, ())
    assert not Interest(("app/**",), ("policy.*",), {}).wants("policy.created", None, None, ())


def test_the_largest_hostile_interest_costs_milliseconds_per_event() -> None:
    """Anyone holding ``subscriptions:write`` chose up to 100 globs of 512 characters (now at most 4096 characters
    together, but subscriptions made before that rule keep theirs), and the fan-out matches them against every event
    of the tenant, in the server's event loop: that took a second per event and subscription."""
    suffixes = ["".join("bcdefghijk"[int(d)] for d in f"{i:03d}") for i in range(MAX_PATHS)]
    globs = [("*a" * 250 + "*" + s)[:512] for s in suffixes]
    interest = Interest(tuple(check_paths(globs, bounded=False)), ("*",), {})
    started = time.perf_counter()
    for path in ("a" * 512, "/".join(["a" * 50] * 10)):
        assert not interest.wants("secret.updated", path, None, ())
    assert time.perf_counter() - started < 0.05


def test_filters_narrow_what_paths_and_events_select() -> None:
    interest = Interest(("app/**",), ("secret.*",), {"secret_type": ["database"], "tags": ["prod", "pci"]})
    assert interest.wants("secret.updated", "app/db", "database", ("pci",))
    assert not interest.wants("secret.updated", "app/db", "database", ("dev",))
    assert not interest.wants("secret.updated", "app/db", "kv", ("prod",))
    assert not interest.wants("secret.updated", "app/db", None, ("prod",))
    assert not interest.wants("policy.created", "app/db", "database", ("prod",))


SEGMENT = st.sampled_from(["app", "db", "prod", "x-1", "a_b"])
PATHS = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
GLOBS = st.lists(st.one_of(SEGMENT, st.just("*"), st.just("**")), min_size=1, max_size=4).map("/".join).filter(
    lambda g: "**/**" not in g
)
TYPES = st.sampled_from(["secret.created", "secret.updated", "secret.deleted", "policy.created"])


@given(st.lists(GLOBS, min_size=1, max_size=3), st.lists(TYPES, min_size=1, max_size=2), PATHS, TYPES)
def test_an_interest_is_its_globs_and_types(globs: list[str], types: list[str], path: str, event_type: str) -> None:
    interest = Interest(tuple(globs), tuple(types), {})
    expected = type_matches(types, event_type) and any(glob_matches(g, path) for g in globs)
    assert interest.wants(event_type, path, None, ()) is expected


@pytest.mark.parametrize(("roles", "own", "tenant", "expected"), [
    ({"tenant_admin"}, "tnt_a", "tnt_a", True), ({"tenant_admin"}, "tnt_b", "tnt_a", False),
    ({"partner_admin"}, None, "tnt_a", True), ({"super_admin"}, "tnt_x", "tnt_a", True),
    (set(), "tnt_a", "tnt_a", False), ({"partner_admin"}, None, None, False),
])
def test_who_administers_a_tenant(roles: set[str], own: str | None, tenant: str | None, expected: bool) -> None:
    assert administers(frozenset(roles), own, tenant) is expected


def test_owners_compare_without_case() -> None:
    assert same_identity("user:Alice@X.example", "user:alice@x.example")
    assert not same_identity("user:alice@x.example", "user:alicia@x.example")
