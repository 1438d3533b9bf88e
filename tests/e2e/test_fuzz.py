"""Fuzzing the live app: no request gets a 5xx.

Every route the app serves (enumerated from its router, so a new route is fuzzed without editing this file), with
generated path segments, query strings, headers, bearer tokens (garbage, and tokens signed with the server's own key
around mangled claims) and JSON bodies, under an operator, a partner admin, a partner-level token, a policy-governed
caller, a token without scopes and no token, through the ``/v1/...`` and ``/v1/t/{tenant_id}/...`` forms. For every
request: the status is below 500, every 4xx is the spec's error envelope carrying the response's request id, no
answer contains a traceback, the server logs no unhandled error, and a refused change appends no event (access
records aside).

Two kinds of test: hypothesis over whole requests (random shapes, few edges each), and deterministic sweeps that
bend one thing at a time through a catalogue of edge values: each query parameter each handler reads (found from the
query models its source names), each field of each route's body, each claim of a signed token, and header bytes
that are not UTF-8. The sweeps find what random requests rarely reach (one field of a valid cursor at 2^63).

The CI run is derandomized and bounded (about a minute on 2 cores). A longer, random run of the hypothesis tests:
``SCAIVAULT_FUZZ_EXAMPLES=5000 SCAIVAULT_TEST_HANG_SECONDS=3600 pytest tests/e2e/test_fuzz.py`` (examples per test).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, assume, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from yarl import URL

from scaivault.bootstrap import Container
from scaivault.config import Settings
from scaivault.domain.access import ACCESS_TOPIC
from scaivault.http.app import MAX_AUTHORIZATION_BYTES
from scaivault.http.query import QueryModel
from scaivault.http.responses import MAX_BODY_BYTES
from scaivault.identity.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.e2e.conftest import (
    ALL_SECRET_SCOPES,
    FOREIGN_TENANT,
    GENEROUS_RATE_LIMITS,
    OTHER_PARTNER,
    OTHER_TENANT,
    PARTNER,
    TENANT,
    bearer,
)

LONG_RUN = int(os.environ.get("SCAIVAULT_FUZZ_EXAMPLES", "0"))
WEBHOOK_SECRET = "fuzz-webhook-secret-0123456789abcdef"
EVERY_SCOPE = (
    *ALL_SECRET_SCOPES, "policies:read", "policies:write", "audit:read", "audit:export", "identity:read",
    "identity:admin", "admin", "subscriptions:read", "subscriptions:write", "secrets:rotate",
)
MAX_TARGET = 8000  # the HTTP parser's request-line limit is 8190 bytes
SERVER_LOGGERS = ("scaivault.http", "aiohttp.server")
ENVELOPE_FIELDS = frozenset({"code", "message", "details", "request_id"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Events background jobs append on their own after an earlier request was accepted (an export's run, a sync's end,
# the scheduler's expiry and rotation steps: its scan every SCAIVAULT_SCHEDULER_INTERVAL warns of a secret the sweep
# wrote with "expires_in": "1h", which failed a refused request whenever a sweep outlasted the interval).
BACKGROUND_TOPICS = (
    "scaivault.domain.audit_exports:AuditExport.Started",
    "scaivault.domain.audit_exports:AuditExport.Completed",
    "scaivault.domain.audit_exports:AuditExport.Failed",
    "scaivault.domain.identities:IdentitySync.Completed",
    "scaivault.domain.identities:IdentitySync.Failed",
    "scaivault.domain.secrets:Secret.ExpiryWarned",
    "scaivault.domain.secrets:Secret.Expired",
    "scaivault.domain.secrets:Secret.RotationDue",
    "scaivault.domain.secrets:Secret.RotationOverdue",
)


def fuzz_settings(ci_examples: int) -> hypothesis_settings:
    """A bounded, repeatable run in CI; ``SCAIVAULT_FUZZ_EXAMPLES`` random examples when asked for."""
    return hypothesis_settings(
        max_examples=LONG_RUN or ci_examples,
        deadline=None,
        derandomize=not LONG_RUN,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# ---- JSON as text: what json.dumps cannot write (repeated keys, 1e999, lone surrogates as raw bytes) ---------------


class Raw(str):
    """JSON text written as is: numbers no double holds, malformed tokens, deep or wide documents."""


@dataclass(frozen=True)
class Members:
    """An object written member by member, so a key may repeat."""

    pairs: tuple[tuple[str, Any], ...]


def to_json(value: Any, ascii_only: bool = True) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, ascii_only) for item in value) + "]"
    pairs = value.pairs if isinstance(value, Members) else tuple(value.items())
    return "{" + ",".join(f"{to_json(k, ascii_only)}:{to_json(v, ascii_only)}" for k, v in pairs) + "}"


def json_bytes(value: Any, ascii_only: bool = True) -> bytes:
    # Without ASCII escapes a lone surrogate goes out as its three raw bytes: invalid UTF-8 in the body.
    return to_json(value, ascii_only).encode("utf-8", "surrogatepass")


# ---- values ----------------------------------------------------------------------------------------------------------

SPECIAL_CHARACTERS = [
    "\x00", "\ud800", "\udfff", "\ud83d", "\u202e", "\ufeff", "\uffff", "\U0010ffff", "\x7f", "\n", "\\", '"', "/",
    "*", "%", ".", ":", "@", "\u0130", "\u212a",
]
SPECIAL_STRINGS = [
    "", " ", "a" * 1000, "app/db", "app/*", "**", "../../etc/passwd", TENANT, PARTNER, FOREIGN_TENANT, "usr_x",
    "grp_x", "pol_x", "rot_x", "30d", "0d", "1h", "90m", "P1D", "-1d", "99999999999999999999d", "1e999d",
    "2024-01-01T00:00:00Z", "2024-02-30T25:61:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+14:00",
    "0000-00-00T00:00:00Z", "2024-01-01", "1700000000", "10.0.0.0/8", "::/96", "::1.2.3.4/128", "999.1.1.1/33",
    "10.0.0.0/-1", "fe80::1%eth0", "UTC", "Europe/Paris", "../../../etc/localtime", "Mars/Olympus", "/etc/passwd",
    "mon", "funday", "09:00", "24:00", "25:99", "read", "write", "list", "delete", "admin", "user", "group",
    "service_account", "ACTIVE", "SUSPENDED", "super_admin", "tenant_admin", "partner_admin",
    "user:alice@acme.example", "sa:svc", "s3", "local", "gcs", "jsonl", "csv", "kv", "true", "null", "NaN", "1e999",
    "${jndi:ldap://x}", "' OR '1'='1", "\x00", "\ud800", "a\x00b", "_type_", "_data_",
]
RAW_NUMBERS = [
    "1e999", "-1e999", "1E400", "1e-999", "-0", "0e0", "NaN", "Infinity", "-Infinity", "9" * 5000, "01", "1.", ".5",
    "+1", "0x10", "-",
]
EDGE_INTEGERS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100)]

characters = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARACTERS))
texts = st.one_of(st.text(characters, max_size=24), st.sampled_from(SPECIAL_STRINGS))
integers = st.one_of(st.integers(-10, 10_000), st.sampled_from(EDGE_INTEGERS))
scalars = st.one_of(
    st.none(), st.booleans(), integers, st.floats(allow_nan=False, allow_infinity=False), texts,
    st.sampled_from(RAW_NUMBERS).map(Raw),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(texts, inner, max_size=4),
        st.lists(st.tuples(texts, inner), max_size=4).map(lambda pairs: Members(tuple(pairs))),
    ),
    max_leaves=10,
)


def _nested(depth: int, as_objects: bool) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth if as_objects else "[" * depth + "]" * depth)


def _wide(width: int) -> Raw:
    return Raw("{" + ",".join(f'"k{n}":{n}' for n in range(width)) + "}")


extreme_values = st.one_of(
    st.builds(_nested, st.sampled_from([30, 31, 32, 33, 40, 2000, 100_000]), st.booleans()),
    st.sampled_from([1000, 20_000]).map(_wide),
    st.just("a" * 70_000),
)
replacements = st.one_of(json_values, json_values, json_values, extreme_values)


@st.composite
def mutated(draw: st.DrawFn, template: Any, rate: int, values: st.SearchStrategy[Any] = replacements) -> Any:
    """``template`` with about ``rate`` percent of its fields dropped, replaced by ``values``, or added."""
    if isinstance(template, dict):
        document: dict[str, Any] = {}
        for key, value in template.items():
            roll = draw(st.integers(0, 99))
            if roll < rate // 3:
                continue
            document[key] = draw(values) if roll < rate else draw(mutated(value, rate, values))
        if draw(st.integers(0, 99)) < rate // 2:
            document[draw(texts)] = draw(json_values)
        return document
    if isinstance(template, list):
        items = [draw(mutated(item, rate, values)) for item in template]
        if items and draw(st.integers(0, 99)) < rate // 2:
            times = draw(st.sampled_from([2, 101, 1001]))
            if len(to_json(items)) * times < MAX_BODY_BYTES:  # repeated at every level, lists would outgrow memory
                items *= times
        return items
    if draw(st.integers(0, 99)) >= rate:
        return template
    # Half the time a value of the same type, which passes the schema and reaches the rules behind it.
    return draw(st.one_of(values, _same_type(template)))


def _same_type(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return integers
    if isinstance(value, str):
        return texts
    return json_values


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ---- what exists in the database when fuzzing starts -------------------------------------------------------------


@dataclass(repr=False)
class World:
    client: TestClient
    container: Container
    pool: asyncpg.Pool
    tokens: dict[str, str | None]  # name -> bearer token (None: no Authorization header)
    known: dict[str, list[str]]  # placeholder name -> values that name something that exists
    templates: dict[tuple[str, str], list[Any]]  # (method, route without tenant/partner prefix) -> valid bodies
    cursors: list[str]
    routes: list[tuple[str, str]] = field(default_factory=list)  # (method, canonical path)
    parameters: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # route -> {parameter: kind}

    def __repr__(self) -> str:
        return "World()"


def route_key(method: str, canonical: str) -> tuple[str, str]:
    return method, canonical.replace("/t/{tenant_id}", "").replace("/partner/", "/")


def webhook_delivery(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"evt_{event_type}", "event_type": event_type, "data": data}


def body_templates(tokens: dict[str, str | None]) -> dict[tuple[str, str], list[Any]]:
    """Valid bodies for each route that reads one (several where the body's shape depends on a field)."""
    policy = {
        "name": "fuzz-policy", "description": "a policy",
        "rules": [{
            "path_pattern": "app/*", "permissions": ["read", "list"],
            "conditions": {
                "ip_ranges": ["10.0.0.0/8"], "require_mfa": True, "mfa_max_age": "1h",
                "time_windows": [{"days": ["mon", "fri"], "start": "09:00", "end": "17:00", "timezone": "UTC"}],
            },
        }],
        "scope": "tenant", "is_active": True,
    }
    batch = {"paths": ["app/db", "app/*"], "options": {"include_metadata": True, "fail_fast": False, "version": 1,
                                                       "expand_wildcards": True}}
    export = {
        "from": "2024-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z", "format": "jsonl",
        "filters": {"action": ["read", "write"], "identity_id": "user:alice@acme.example", "identity_type": "user",
                    "path_prefix": "app/", "success": True, "source_ip": "127.0.0.1", "request_id": "req_x"},
        "destination": {"type": "local", "prefix": "fuzz/daily"},
    }
    user = {"tenant_id": TENANT, "id": "usr_hooked", "email": "hooked@acme.example", "display_name": "H",
            "status": "ACTIVE", "roles": ["tenant_admin"], "groups": ["grp_x"], "mfa_enabled": False}
    return {
        ("PUT", "/v1/secrets/{path}"): [{
            "data": {"username": "admin", "password": "s3cret", "port": 5432},
            "secret_type": "database",
            "metadata": {"description": "the db", "tags": ["prod"], "owner": "team", "custom": {"k": "v"}},
            "options": {"max_versions": 5, "expires_in": "30d", "cas": 1},
        }],
        ("PATCH", "/v1/secrets/{path}/metadata"): [{
            "metadata": {"description": "patched", "team": "x"}, "secret_type": "kv", "max_versions": 3,
            "expires_in": "1h", "expires_at": None, "rotation_policy_id": "rot_x", "secret_policy_id": "sp_x",
        }],
        ("POST", "/v1/secrets/batch"): [batch],
        ("POST", "/v1/secrets/batch/metadata"): [batch],
        ("POST", "/v1/policies"): [policy, {**policy, "name": "partner-wide", "scope": "partner"}],
        ("PUT", "/v1/policies/{policy_id}"): [policy],
        ("PATCH", "/v1/policies/{policy_id}"): [{"description": "patched", "is_active": False}],
        ("POST", "/v1/policies/test"): [{
            "identity_id": "sa:svc", "path": "app/db", "permission": "read",
            "context": {"source_ip": "10.1.2.3", "mfa_verified": True, "mfa_verified_at": "2024-01-01T00:00:00Z",
                        "timestamp": "2024-01-01T10:00:00Z"},
        }],
        ("POST", "/v1/policies/{policy_id}/bindings"): [{
            "identity_type": "service_account", "identity_id": "sa:fuzz", "expires_at": "2099-01-01T00:00:00Z",
        }],
        ("POST", "/v1/audit/export"): [export, {**export, "format": "csv", "destination": {
            "type": "s3", "bucket": "audit-archive", "prefix": "x", "credentials_path": "app/db"}}],
        ("POST", "/v1/identity/tenants/{tenant_id}/users"): [{
            "email": "fuzzed@acme.example", "display_name": "Fuzzed", "status": "ACTIVE", "mfa_enabled": True,
        }],
        ("POST", "/v1/identity/tenants/{tenant_id}/groups"): [{"name": "fuzzers", "description": "d",
                                                              "status": "ACTIVE"}],
        ("PUT", "/v1/identity/users/{user_id}/roles"): [{"roles": ["tenant_admin"]}],
        ("POST", "/v1/auth/introspect"): [{"token": tokens["operator"]}],
        ("POST", "/v1/webhooks"): [{"name": "fuzz-hook", "url": "https://hooks.example.com/in",
                                    "secret": "whsec_fuzz_0123456789abcdef0123456789", "events": ["secret.*"],
                                    "filters": {"path_prefix": "app/"}}],
        ("PATCH", "/v1/webhooks/{webhook_id}"): [{"enabled": False, "secret": "whsec_fuzz_new_0123456789abcdef0123",
                                                  "previous_secret_ttl": "1h"}],
        ("POST", "/v1/subscriptions"): [{"name": "fuzz-sub", "paths": ["app/**"], "events": ["secret.*"],
                                         "delivery": {"type": "polling", "buffer_size": 10}}],
        ("PATCH", "/v1/subscriptions/{subscription_id}"): [{"paths": ["other/**"], "delivery": {"buffer_size": 5}}],
        ("POST", "/v1/subscriptions/{subscription_id}/ack"): [{"event_ids": ["evt_x"]}],
        ("POST", "/v1/rotation/policies"): [{"name": "fuzz-rotation", "interval": "90d", "grace_period": "48h",
                                             "warn_before": "7d,1d", "auto_generate": False}],
        ("PATCH", "/v1/rotation/policies/{policy_id}"): [{"interval": "14d", "warn_before": "1d"}],
        ("POST", "/v1/rotation/policies/{policy_id}/secrets"): [{"secret_path": "app/db"}],
        ("POST", "/v1/rotation/policies/{policy_id}/rotate"): [{"secret_paths": ["app/db"]}],
        ("POST", "/v1/secret-policies"): [{"name": "fuzz-generator", "policy_type": "password", "fields": [
            {"name": "password", "generator": "random", "config": {"length": 24}}]}],
        ("PATCH", "/v1/secret-policies/{policy_id}"): [{"name": "renamed", "is_active": False}],
        ("POST", "/v1/identity/webhooks/scaikey"): [
            webhook_delivery("user.updated", user),
            webhook_delivery("user.deleted", {"tenant_id": TENANT, "id": "usr_hooked"}),
            webhook_delivery("group.created", {"tenant_id": TENANT, "id": "grp_hooked", "name": "hooked",
                                               "description": "d", "status": "ACTIVE"}),
            webhook_delivery("group.member_added", {"tenant_id": TENANT, "group_id": "grp_hooked",
                                                    "user_id": "usr_hooked"}),
            webhook_delivery("tenant.updated", {"id": OTHER_TENANT, "partner_id": PARTNER, "name": "Dev",
                                                "slug": "dev", "region": "eu-west-1", "status": "ACTIVE"}),
            webhook_delivery("partner.updated", {"id": PARTNER, "name": "Acme", "slug": "acme", "region": "eu",
                                                 "status": "ACTIVE"}),
        ],
    }


async def _created(response: ClientResponse) -> Any:
    body = await response.json()
    assert response.status in (200, 201, 202), body
    return body


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:  # the webhook receiver exists, so it is fuzzed too
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, scaikey_webhook_secret=WEBHOOK_SECRET,
    )


@pytest.fixture
async def world(client: TestClient, container: Container, pool: asyncpg.Pool) -> AsyncIterator[World]:
    def issue(scopes: tuple[str, ...], roles: tuple[str, ...], tenant: str | None = TENANT,
              identity: str = "user:fuzz@acme.example") -> str:
        return container.issuer.issue(identity_id=identity, tenant_id=tenant, partner_id=PARTNER, scopes=scopes,
                                      roles=roles, ttl=timedelta(hours=2))

    tokens: dict[str, str | None] = {
        "operator": issue(EVERY_SCOPE, ("super_admin",), identity="user:op@acme.example"),
        "partner_admin": issue(EVERY_SCOPE, ("partner_admin",), identity="user:pa@acme.example"),
        "partner_level": issue(EVERY_SCOPE, ("partner_admin",), tenant=None, identity="user:pl@acme.example"),
        "governed": issue(ALL_SECRET_SCOPES + ("policies:read", "audit:read", "identity:read"), (),
                          identity="sa:svc"),
        "no_scope": issue(("nothing",), (), identity="sa:none"),
        "none": None,
    }
    operator = bearer(tokens["operator"] or "")
    partner_level = bearer(tokens["partner_level"] or "")
    for path in ("app/db", "app/api-key", "other/x"):
        await _created(await client.put(f"/v1/secrets/{path}", json={"data": {"v": path}}, headers=operator))
    await _created(await client.put("/v1/partner/secrets/shared/x", json={"data": {"v": 1}}, headers=partner_level))
    await _created(await client.delete("/v1/secrets/other/x", headers=operator))
    templates = body_templates(tokens)
    policy, _ = [await _created(await client.post("/v1/policies", json=body, headers=operator))
                 for body in templates[("POST", "/v1/policies")]]
    binding = await _created(await client.post(
        f"/v1/policies/{policy['id']}/bindings", json={"identity_type": "service_account", "identity_id": "sa:svc"},
        headers=operator,
    ))
    user = await _created(await client.post(f"/v1/identity/tenants/{TENANT}/users",
                                            json={"email": "bob@acme.example"}, headers=operator))
    group = await _created(await client.post(f"/v1/identity/tenants/{TENANT}/groups", json={"name": "sre"},
                                             headers=operator))
    await _created(await client.put(f"/v1/identity/groups/{group['id']}/members/{user['id']}", headers=operator))
    export = await _created(await client.post("/v1/audit/export", json=templates[("POST", "/v1/audit/export")][0],
                                              headers=operator))
    webhook = await _created(await client.post("/v1/webhooks", json=templates[("POST", "/v1/webhooks")][0],
                                               headers=operator))
    subscription = await _created(await client.post(
        "/v1/subscriptions", json=templates[("POST", "/v1/subscriptions")][0], headers=operator))
    rotation = await _created(await client.post(
        "/v1/rotation/policies", json=templates[("POST", "/v1/rotation/policies")][0], headers=operator))
    generator = await _created(await client.post(
        "/v1/secret-policies", json=templates[("POST", "/v1/secret-policies")][0], headers=operator))
    cursors = [(await _created(await client.get(f"{listing}?limit=1", headers=operator)))["cursor"]
               for listing in ("/v1/secrets", "/v1/policies")]
    known = {
        "path": ["app/db", "app/api-key", "other/x", "shared/x", "app", "app/missing"],
        "secret_path": ["app/db", "app/missing"],  # a secret attached to a rotation policy (URL-encoded or not)
        "tenant_id": [TENANT, OTHER_TENANT, FOREIGN_TENANT, "tnt_unknown"],
        "partner_id": [PARTNER, OTHER_PARTNER, "ptn_unknown"],
        "policy_id": [policy["id"], rotation["id"], generator["id"], "pol_missing"],
        "webhook_id": [webhook["id"], "wh_missing"],
        "delivery_id": ["dlv_missing"],
        "subscription_id": [subscription["id"], "sub_missing"],
        "binding_id": [binding["id"], "bnd_missing"],
        "user_id": [user["id"], "usr_missing"],
        "group_id": [group["id"], "grp_missing"],
        "export_id": [export["export_id"], "exp_missing"],
        "sync_id": ["syn_" + "0" * 26, "history"],
        "identity_id": ["user:alice@acme.example", "sa:svc", "bob@acme.example", "user:fuzz@acme.example"],
        "identity_type": ["user", "group", "service_account", "robot"],
    }
    routes = [(r.method, r.resource.canonical) for r in client.app.router.routes() if r.resource is not None]
    parameters = {
        (r.method, r.resource.canonical): query_parameters(r.handler)
        for r in client.app.router.routes() if r.resource is not None
    }
    yield World(client, container, pool, tokens, known, templates, cursors, routes, parameters)


# ---- requests --------------------------------------------------------------------------------------------------------

URL_GARBAGE = [
    "", ".", "..", "...", "%2e%2e", "%2E", "%00", "a%00b", "%2f", "%2F..%2F", "%", "%z", "%zz", "%c3%28", "%ed%a0%80",
    "%f4%90%80%80", "%ff%fe", "%c0%af", "%25", "%20", "+", "~", "*", "**", "a*", ";", ";a=b", "a" * 600, "a/" * 40,
    "//", "///a", "a//b", "%0d%0a", "%09", "%7f", "%e2%80%ae", "%5c", "@", ":", "!$&'()*,=",
]
# Characters a request target may carry unescaped.
URL_SAFE = "-._~!$&'()*+,;=:@"


def percent_encoded(text: str, keep: str = "") -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe=keep)


url_garbage = st.one_of(
    st.sampled_from(URL_GARBAGE),
    texts.map(percent_encoded),
    st.text(st.sampled_from("abz09_-./%*" + URL_SAFE), max_size=40),
)


@st.composite
def segments(draw: st.DrawFn, world: World, name: str, garbage_percent: int) -> str:
    known = st.sampled_from([percent_encoded(value, keep="/") for value in world.known.get(name, ["x"])])
    if draw(st.integers(0, 99)) >= garbage_percent:
        return draw(known)
    return draw(st.one_of(url_garbage, st.tuples(known, url_garbage).map("".join)))


# Parameter names of the API, for routes whose handler reads none (or not those).
QUERY_NAMES = [
    "limit", "cursor", "prefix", "version", "as_of", "from", "to", "action", "page", "page_size", "status", "q",
    "permanent", "include_deleted", "include_inactive", "scope", "force", "partner_id", "tenant_id", "identity_type",
    "identity_id", "path_prefix", "success", "source_ip", "request_id",
]
# Query values by the kind of parameter (percent-encoded as sent).
QUERY_EDGES = {
    "number": [
        "", "0", "1", "-1", "+1", "%201", "1.0", "1e3", "1_0", "1000", "1001", "2147483647", "2147483648",
        "9223372036854775807", "9223372036854775808", "99999999999999999999", "0x10", "%D9%A1", "%EF%BC%91",
    ],
    "flag": ["", "true", "false", "TRUE", "1", "0", "yes", "2", "t", "%00"],
    "timestamp": [
        "", "2024-01-01T00:00:00Z", "0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0000-00-00T00:00:00Z", "2024-02-30T00:00:00Z",
        "2024-01-01", "2024-01-01T00:00:00", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00.9999999999Z",
        "1700000000", "-1", "99999999999999", "infinity", "now", "2024-01-01T00:00:00%2B99:00",
    ],
    "text": [
        "", "tenant", "partner", "user", "group", "service_account", "ACTIVE", "active", "read", "read,write",
        "read,,bogus", "app/", "app", "App/DB", "app/*", "..", "*", "user:alice@acme.example", "sa:svc", "127.0.0.1",
        "::1", "req_x", PARTNER, TENANT, FOREIGN_TENANT, "tnt_unknown", "a" * 1000, "%00", "a%00b", "%ed%a0%80",
        "%ff", "%", "%25", "%20",
    ],
}
KIND_MARKERS = (("datetime", "timestamp"), ("bool", "flag"), ("int", "number"))


def parameter_kind(name: str, annotation: object) -> str:
    if name == "cursor":
        return "cursor"
    described = str(annotation)
    return next((kind for marker, kind in KIND_MARKERS if marker in described), "text")


def query_parameters(handler: Callable[..., Any]) -> dict[str, str]:
    """The query parameters a handler reads, with their kinds: the fields of the query models (``QueryModel``) its
    source names, so a new parameter is fuzzed without editing this file."""
    function = getattr(handler, "__func__", handler)
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return {}
    parameters: dict[str, str] = {}
    for name in re.findall(r"\b[A-Z]\w*", source):
        model = function.__globals__.get(name)
        if isinstance(model, type) and issubclass(model, QueryModel):
            for field_name, info in model.model_fields.items():
                parameters[info.alias or field_name] = parameter_kind(field_name, info.annotation)
    return parameters


# The state each listing's cursor carries (scaivault/pagination.py: plain cursors are base64url JSON).
CURSOR_STATES: list[dict[str, Any]] = [
    {"seq": 5},
    {"v": 3, "prefix": "", "after": "app/db"},
    {"before": "exp_01m90wy5hqvmv7t019td62yzh4"},
    {"v": 1, "scope": None, "include_inactive": False, "after": "pol_x"},
    {"v": 1, "policy_id": "pol_x", "after": "bnd_x"},
]
CURSOR_FIELD_EDGES = [0, -1, 2**63 - 1, 2**63, 2**64, "", "\x00", "\ud800", "a" * 300, None, []]


def bent_cursor_states() -> list[Any]:
    """Each listing's cursor state with one field at a time set to an edge value (for the sweep)."""
    bent: list[Any] = [
        {**state, key: edge} for state in CURSOR_STATES for key in state for edge in CURSOR_FIELD_EDGES
    ]
    return bent + [{}, [], None, "x", {**CURSOR_STATES[0], "extra": 1}]


def cursor_text(state: Any, ascii_only: bool = True) -> str:
    return b64url(json_bytes(state, ascii_only))


@st.composite
def cursors(draw: st.DrawFn, world: World) -> str:
    """Real cursors bent out of shape, and well-formed ones around generated state."""
    kind = draw(st.integers(0, 4))
    if kind == 0 and world.cursors:
        real = draw(st.sampled_from(world.cursors))
        at = draw(st.integers(0, len(real) - 1))
        return real[:at] + draw(st.sampled_from(["", "A", "_", "-", "=", "%"])) + real[at + 1:]
    if kind == 1:
        state = draw(mutated(draw(st.sampled_from(CURSOR_STATES)), draw(st.sampled_from([0, 30, 60]))))
        return cursor_text(state, draw(st.booleans()))
    if kind == 2:
        return cursor_text(draw(st.sampled_from(bent_cursor_states())))
    return b64url(draw(st.binary(max_size=64))) if kind == 3 else draw(texts)


def query_values(world: World, kind: str) -> st.SearchStrategy[str]:
    typed = cursors(world).map(percent_encoded) if kind == "cursor" else st.sampled_from(QUERY_EDGES[kind])
    return st.one_of(
        typed, typed, typed, texts.map(percent_encoded), url_garbage,
        st.sampled_from(["x" * 1200, "%00", "%ed%a0%80", "%ff", "a%00b"]),
    )


@st.composite
def query_strings(draw: st.DrawFn, world: World, method: str, canonical: str) -> str:
    """Mostly the route's own parameters, with values of their kind bent; some other names of the API, garbage
    names, parameters given twice, and names without '='."""
    own = world.parameters.get((method, canonical), {})
    names = st.one_of(
        *[st.sampled_from(sorted(own))] * (3 if own else 0), st.sampled_from(QUERY_NAMES), url_garbage,
    )
    pairs = []
    for _ in range(draw(st.integers(1, 5))):
        name = draw(names)
        kind = own.get(name) or ("cursor" if name == "cursor" else "text")
        pairs.append((name, draw(query_values(world, kind))))
    if draw(st.integers(0, 3)) == 0:
        pairs.append(pairs[0])  # a parameter given twice
    return "&".join(f"{name}={value}" if draw(st.integers(0, 9)) else name for name, value in pairs)


def signed(world: World, header: Any, claims: Any, ascii_only: bool = True) -> str:
    """A token over any header and claims, signed with the server's own key."""
    signing_input = f"{b64url(json_bytes(header, ascii_only))}.{b64url(json_bytes(claims, ascii_only))}"
    return signing_input + "." + b64url(world.container.issuer._private_key.sign(signing_input.encode()))  # noqa: SLF001


def valid_claims(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of the operator's token, with the optional claims too."""
    claims = json.loads(base64.urlsafe_b64decode((world.tokens["operator"] or "").split(".")[1] + "=="))
    header = {"alg": "EdDSA", "kid": world.container.issuer.kid, "typ": "JWT"}
    return header, {**claims, "display_name": "Operator", "mfa_verified_at": claims["iat"]}


@st.composite
def signed_tokens(draw: st.DrawFn, world: World) -> str:
    """The server's own signature over mangled claims: everything after the signature check is reached."""
    header, claims = valid_claims(world)
    # Within the server's header size limit: no extreme values.
    return signed(world, draw(mutated(header, 10, json_values)), draw(mutated(claims, 20, json_values)),
                  draw(st.booleans()))


header_texts = st.text(st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"]), max_size=60)


@st.composite
def authorizations(draw: st.DrawFn, world: World) -> str | None:
    named = [f"Bearer {t}" if t else None for t in world.tokens.values()]
    operator = world.tokens["operator"] or ""
    garbage = [
        "", "Bearer", "Bearer ", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", f"bearer {operator}", f"Bearer {operator}x",
        f"Bearer  {operator}", f"Bearer {operator[:-4]}AAAA", "Bearer a.b.c", "Bearer ....", "Bearer " + "a" * 12_000,
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer svp_" + "x" * 40, "Bearer svp_",
    ]
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(st.sampled_from(named))
    if kind < 8:
        return draw(st.one_of(st.sampled_from(garbage), header_texts.map("Bearer ".__add__), header_texts))
    return "Bearer " + draw(signed_tokens(world))


@st.composite
def bodies(draw: st.DrawFn, world: World, method: str, canonical: str, deep: bool) -> bytes | None:
    """A body for the route: its template bent a little or a lot (``deep``: mostly a little), any JSON, or bytes."""
    template = draw(st.sampled_from(world.templates.get(route_key(method, canonical), [{}])))
    kind = draw(st.integers(0, 19))
    if kind < 11 or (deep and kind < 17):
        document = draw(mutated(template, draw(st.sampled_from([0, 3, 5, 10, 20] if deep else [0, 5, 20, 60]))))
    elif kind < 14:
        document = draw(json_values)
    elif kind < 15:
        document = Members(tuple(draw(st.lists(st.tuples(st.sampled_from([*template, "a"]), json_values),
                                               min_size=2, max_size=4))))
    elif kind < 16:
        document = draw(extreme_values)
    elif kind < 18:
        return draw(st.one_of(st.binary(max_size=200), st.sampled_from([
            b"", b"{", b"}", b"{}}", b"null", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'{"a":1}garbage',
            b'{"a" 1}', b"{'a': 1}", b'{"data": {"k": "' + b"a" * 600_000 + b'"}}',
        ])))
    else:
        return None
    return json_bytes(document, ascii_only=draw(st.booleans()))


CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-16", "text/plain", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded", "application/json; charset=\u00e9", ";;;",
]


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the request target as sent: path and query, percent-encoded
    headers: dict[str, str]
    body: bytes | None

    def fits_http_framing(self) -> bool:
        """Within the request-line and header-field limits of the HTTP parser, which answers beyond them itself,
        before any of our code runs."""
        return len(self.target) < MAX_TARGET and all(
            len(value.encode()) < MAX_AUTHORIZATION_BYTES for value in self.headers.values()
        )

    def describe(self) -> str:
        shown = {k: (v[:80] + "..." if len(v) > 80 else v) for k, v in self.headers.items()}
        body = None if self.body is None else self.body[:300]
        return f"{self.method} {self.target[:300]} headers={shown} body={body!r}"


# Requests outside the route table, so unknown paths and methods are fuzzed too.
UNROUTED = [
    ("GET", "/{anything}"), ("POST", "/v1/{anything}"), ("PATCH", "/v1/health"), ("OPTIONS", "/v1/secrets/{path}"),
    ("DELETE", "/v1/secrets"), ("PUT", "/v1/t/{tenant_id}/{anything}"), ("TRACE", "/v1/version"),
    ("HEAD", "/v1/secrets/{path}"),
]
PLACEHOLDER = re.compile(r"\{(\w+)\}")


@st.composite
def requests(draw: st.DrawFn, world: World, *, deep: bool = False) -> Request:
    """Any request to any route (and some to none). ``deep``: requests with bodies, mostly to paths and with tokens
    that reach the body's validation and the command behind it."""
    routes = [r for r in world.routes if r[0] in BODY_METHODS] if deep else world.routes + UNROUTED
    method, canonical = draw(st.sampled_from(routes))
    path = PLACEHOLDER.sub(lambda m: draw(segments(world, m.group(1), 10 if deep else 50)), canonical)
    query = draw(query_strings(world, method, canonical)) if draw(st.integers(0, 2)) else ""
    headers: dict[str, str] = {}
    authorization = draw(authorizations(world))
    if deep and draw(st.integers(0, 9)) < 7:
        authorization = f"Bearer {world.tokens[draw(st.sampled_from(['operator', 'operator', 'partner_admin']))]}"
    if authorization is not None:
        headers["Authorization"] = authorization
    if draw(st.integers(0, 9)) < (1 if deep else 2):
        headers["X-Tenant-ID"] = draw(st.one_of(st.sampled_from(world.known["tenant_id"]), header_texts))
    wants_body = method in BODY_METHODS or draw(st.integers(0, 9)) == 0
    body = draw(bodies(world, method, canonical, deep)) if wants_body else None
    if body is not None:
        headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES[:1] * 6 + CONTENT_TYPES))
    if canonical.endswith("/webhooks/scaikey") and draw(st.integers(0, 3)):
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[SIGNATURE_HEADER] = signature(WEBHOOK_SECRET, stamp, body or b"")
    return Request(method, path + ("?" + query if query else ""), headers, body)


# ---- checks ----------------------------------------------------------------------------------------------------------


async def _last_event(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM scaivault_events"))


async def _changes_since(pool: asyncpg.Pool, position: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT topic FROM scaivault_events WHERE notification_id > $1 AND topic <> ALL($2::text[])",
        position, [ACCESS_TOPIC, *BACKGROUND_TOPICS],
    )
    return [row["topic"] for row in rows]


def unhandled_errors(records: list[logging.LogRecord]) -> list[str]:
    """What the front door logged as unhandled, and what escaped it to aiohttp."""
    return [r.getMessage() for r in records if r.name in SERVER_LOGGERS and r.levelno >= logging.ERROR]


async def send(world: World, request: Request, caplog: pytest.LogCaptureFixture) -> str:
    """Send ``request`` and check its answer; return its status and error code."""
    url = URL(str(world.client.make_url("")).rstrip("/") + request.target, encoded=True)

    async def exchange() -> tuple[int, str | None, bytes]:
        async with world.client.session.request(
            request.method, url, headers=request.headers, data=request.body, skip_auto_headers=["Content-Type"]
        ) as response:
            return response.status, response.headers.get("X-Request-ID"), await response.read()

    return await checked(world, request.method, request.describe(), exchange, caplog)


async def send_raw(world: World, head: bytes, caplog: pytest.LogCaptureFixture) -> str:
    """Send a request's bytes as they are (what no client library would write) and check the answer."""
    url = world.client.make_url("/")

    async def exchange() -> tuple[int, str | None, bytes]:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            writer.write(head)
            answer = await reader.read()
        finally:
            writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        headers, _, body = rest.partition(b"\r\n\r\n")
        request_id = re.search(rb"X-Request-ID: (\S+)", headers)
        return int(status_line.split()[1]), request_id and request_id.group(1).decode(), body

    return await checked(world, head.split(b" ", 1)[0].decode(), repr(head[:300]), exchange, caplog)


async def checked(
    world: World, method: str, described: str, exchange: Callable[[], Awaitable[tuple[int, str | None, bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> str:
    position = await _last_event(world.pool) if method in WRITE_METHODS else 0
    logged = len(caplog.records)
    status, request_id, raw = await exchange()
    described += f"\n-> {status} {raw[:500]!r}"
    assert status < 500, described
    assert b"Traceback" not in raw, described
    assert unhandled_errors(caplog.records[logged:]) == [], described
    if status >= 400 and method != "HEAD":
        envelope = orjson.loads(raw)
        assert set(envelope) == {"error"}, described
        error = envelope["error"]
        assert {"code", "message", "request_id"} <= set(error) <= ENVELOPE_FIELDS, described
        assert isinstance(error["code"], str) and isinstance(error["message"], str), described
        assert request_id is not None and request_id.startswith("req_"), described
        assert error["request_id"] == request_id, described
        if method in WRITE_METHODS:
            assert await _changes_since(world.pool, position) == [], described
        return f"{status} {error['code']}"
    return str(status)


# ---- the tests -------------------------------------------------------------------------------------------------------


@pytest.fixture
def log_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    for name in SERVER_LOGGERS:
        caplog.set_level(logging.ERROR, logger=name)
    return lambda: unhandled_errors(caplog.records)


@fuzz_settings(ci_examples=1000)
@given(data=st.data())
async def test_no_route_answers_5xx_to_any_path_query_or_token(
    world: World, data: st.DataObject, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    request = data.draw(requests(world))
    assume(request.fits_http_framing())
    event(await send(world, request, caplog))  # what was reached: --hypothesis-show-statistics
    assert log_errors() == []


@fuzz_settings(ci_examples=800)
@given(data=st.data())
async def test_no_route_answers_5xx_to_any_body(
    world: World, data: st.DataObject, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    request = data.draw(requests(world, deep=True))
    assume(request.fits_http_framing())
    event(await send(world, request, caplog))  # what was reached: --hypothesis-show-statistics
    assert log_errors() == []


# What a change-making route names in the query sweep: nothing that exists, so the sweep changes nothing.
MISSING = {"path": "app/missing", "policy_id": "pol_missing", "binding_id": "bnd_missing", "user_id": "usr_missing",
           "group_id": "grp_missing", "export_id": "exp_missing", "secret_path": "app/missing",
           "webhook_id": "wh_missing", "delivery_id": "dlv_missing", "subscription_id": "sub_missing"}


def concrete_path(world: World, canonical: str, *, missing: bool = False) -> str:
    """``canonical`` with each placeholder naming what exists (``missing``: a resource that does not)."""

    def segment(match: re.Match[str]) -> str:
        name = match.group(1)
        return percent_encoded((MISSING.get(name) if missing else None) or world.known[name][0], keep="/")

    return PLACEHOLDER.sub(segment, canonical)


async def test_every_query_parameter_of_every_route_through_its_edge_values(
    world: World, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    """A deterministic sweep beside the random fuzz: every parameter every handler reads, alone, through the values
    of its kind (cursors: each listing's state with one field at a time at an edge), as an operator on a path that
    exists (reads) or that does not (changes)."""
    operator = {"Authorization": f"Bearer {world.tokens['operator']}"}
    swept: set[tuple[str, str]] = set()
    failures: list[str] = []
    for (method, canonical), parameters in world.parameters.items():
        if not parameters or route_key(method, canonical) in swept:
            continue
        swept.add(route_key(method, canonical))

        path = concrete_path(world, canonical, missing=method in WRITE_METHODS)
        for name, kind in parameters.items():
            values = (
                [percent_encoded(cursor_text(state)) for state in bent_cursor_states()] + world.cursors
                if kind == "cursor" else QUERY_EDGES[kind]
            )
            for value in values:
                try:
                    await send(world, Request(method, f"{path}?{name}={value}", operator, None), caplog)
                except AssertionError as failure:
                    failures.append(str(failure).split("\nassert")[0][:1500])
    assert failures == [], "\n\n".join(failures)
    assert log_errors() == []


# Body values by the type of the field they replace; every field also gets those of every other type.
BODY_EDGES: dict[type, list[Any]] = {
    str: [
        "", " ", "\x00", "a\x00b", "\ud800", "\udfff\ud800", "a" * 5000, "../x", "App/DB", "*", "1e999", "0d",
        "99999999999999999999d", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-02-30T00:00:00Z",
        "::/96", "::ffff:10.0.0.1/128", "999.1.1.1/33", "10.0.0.0/-1", "../../../etc/localtime", "UTC\x00",
        "Europe/../UTC", "24:00", "25:99", "funday", "user:", ":", "usr_" + "x" * 70, "\u212a",
    ],
    int: [0, -1, 2**31, 2**63 - 1, -(2**63), Raw("1e999"), Raw("-0"), 1.5, Raw("1E400")],
    bool: [0, 1, "true"],
    type(None): [Raw("1e999")],
    list: [[], [None], ["\x00"], _nested(40, False), [{"_type_": 1, "_data_": 2}]],
    dict: [{}, {"\x00": 1}, {"\ud800": 1}, {"_type_": 1, "_data_": 2}, _nested(40, True), _wide(2000)],
}


def bent_documents(template: Any) -> list[Any]:
    """``template`` with one field at a time removed, or set to each edge value of its type or the first of every
    other type's (a whole object or list too)."""
    whole = BODY_EDGES.get(type(template), []) + [
        edges[0] for kind, edges in BODY_EDGES.items() if kind is not type(template)
    ]
    if isinstance(template, dict):
        inner = []
        for key, value in template.items():
            inner.append({k: v for k, v in template.items() if k != key})
            inner += [{**template, key: other} for other in bent_documents(value)]
        return whole + inner
    if isinstance(template, list) and template:
        return whole + [[other, *template[1:]] for other in bent_documents(template[0])]
    return whole


async def test_every_body_field_of_every_route_through_its_edge_values(
    world: World, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    """A deterministic sweep beside the random fuzz: each field of each route's body, one at a time, through the
    edge values of its type and a value of every other type, as an operator on a path that exists."""
    operator = {"Authorization": f"Bearer {world.tokens['operator']}", "Content-Type": "application/json"}
    failures: list[str] = []
    for (method, route), templates in world.templates.items():
        path = concrete_path(world, route)
        for document in [bent for template in templates for bent in bent_documents(template)]:
            headers = dict(operator)
            body = json_bytes(document)
            if route.endswith("/webhooks/scaikey"):
                stamp = str(int(time.time()))
                headers |= {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(WEBHOOK_SECRET, stamp, body)}
            try:
                await send(world, Request(method, path, headers, body), caplog)
            except AssertionError as failure:
                failures.append(str(failure).split("\nassert")[0][:1500])
    assert failures == [], "\n\n".join(failures)
    assert log_errors() == []


async def test_every_claim_of_a_signed_token_through_its_edge_values(
    world: World, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    """Tokens signed with the server's own key, one claim (or header field) at a time bent as body fields are: each
    is used to call, and introspected."""
    header, claims = valid_claims(world)
    tokens = [signed(world, header, bent) for bent in bent_documents(claims)]
    tokens += [signed(world, bent, claims) for bent in bent_documents(header)]
    operator = {"Authorization": f"Bearer {world.tokens['operator']}", "Content-Type": "application/json"}
    failures: list[str] = []
    for token in tokens:
        calls = [Request("GET", target, {"Authorization": f"Bearer {token}"}, None)
                 for target in ("/v1/auth/whoami", "/v1/secrets/app/db", f"/v1/t/{OTHER_TENANT}/secrets")]
        calls.append(Request("POST", "/v1/auth/introspect", operator, orjson.dumps({"token": token})))
        for request in calls:
            if not request.fits_http_framing():
                continue
            try:
                await send(world, request, caplog)
            except AssertionError as failure:
                failures.append(str(failure).split("\nassert")[0][:1500])
    assert failures == [], "\n\n".join(failures)
    assert log_errors() == []


# Header bytes no client library writes: not UTF-8 (they reach handlers as lone surrogates). Control characters
# other than tab are refused by the HTTP parser, before any of our code runs.
RAW_HEADER_VALUES = [b"\xff", b"tnt_\xff\xfe", b"a\xed\xa0\x80b", b"\xc0\xaf", b"a\tb", b"\x80" * 100]
RAW_HEADERS = [b"Authorization", b"X-Tenant-ID", b"User-Agent", b"X-Forwarded-For", b"Content-Type",
               TIMESTAMP_HEADER.encode(), SIGNATURE_HEADER.encode()]


async def test_header_bytes_that_are_not_text_get_the_envelope(
    world: World, caplog: pytest.LogCaptureFixture, log_errors: Callable[[], list[str]]
) -> None:
    operator = f"Bearer {world.tokens['operator']}".encode()
    targets = [b"GET /v1/secrets/app/db", b"GET /v1/t/" + TENANT.encode() + b"/secrets", b"GET /v1/auth/whoami",
               b"POST /v1/identity/webhooks/scaikey", b"PUT /v1/secrets/app/raw"]
    failures: list[str] = []
    for target in targets:
        for name in RAW_HEADERS:
            for value in RAW_HEADER_VALUES:
                headers = {b"Host": b"x", b"Connection": b"close", b"Authorization": operator, name: value}
                head = target + b" HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers.items())
                body = b'{"data": {"k": "v"}}' if target.startswith((b"PUT", b"POST")) else b""
                try:
                    await send_raw(world, head + b"Content-Length: %d\r\n\r\n" % len(body) + body, caplog)
                except AssertionError as failure:
                    failures.append(str(failure).split("\nassert")[0][:1500])
    assert failures == [], "\n\n".join(failures)
    assert log_errors() == []


async def test_the_fuzz_covers_every_route_and_sees_what_it_checks(world: World) -> None:
    """The fuzz covers what the router serves (not a list kept by hand), finds the query parameters handlers read,
    and its check for changes sees an accepted write."""
    assert len(world.routes) == len(list(world.client.app.router.routes())) > 50
    assert ("PUT", "/v1/t/{tenant_id}/secrets/{path}") in world.routes
    assert world.parameters[("GET", "/v1/audit/logs")]["cursor"] == "cursor"
    assert world.parameters[("GET", "/v1/secrets/{path}")] == {"as_of": "timestamp", "version": "number"}
    assert len(world.cursors) == 2 and all(world.cursors)
    position = await _last_event(world.pool)
    written = await world.client.put("/v1/secrets/app/seen", json={"data": {"k": "v"}},
                                     headers=bearer(world.tokens["operator"] or ""))
    assert written.status == 201
    assert await _changes_since(world.pool, position) != []
