"""Which route is charged to which rate-limit category, the default limits, and the override syntax."""

from __future__ import annotations

import pytest

from scaivault.config import ConfigurationError, Settings
from scaivault.ratelimit.categories import (
    DEFAULT_LIMITS,
    OWN_CATEGORIES,
    ROUTES,
    UNAUTHENTICATED,
    InvalidRateLimits,
    Limit,
    Unmapped,
    category_of,
    parse_limits,
    route_shape,
)

# The spec's table (advanced/rate-limiting), row by row: category -> requests per minute.
SPEC_DEFAULTS = {
    "secrets_read": 1000,  # Read secrets
    "secrets_write": 100,  # Write secrets
    "secrets_delete": 100,  # Delete secrets
    "secrets_list": 100,  # List operations
    "batch_read": 100,  # Batch read
    "batch_metadata": 100,  # Batch metadata
    "audit_query": 50,  # Audit queries
    "audit_export": 5,  # Audit export
    "policies": 50,  # Policy operations
    "policy_test": 200,  # Policy test
    "pki_issue": 50,  # PKI issue / sign
    "pki_admin": 20,  # PKI admin (CA, roles)
    "acme_order": 30,  # ACME order
    "webhooks": 20,  # Webhook operations
    "subscriptions": 20,  # Subscription operations
    "subscription_poll": 240,  # Subscription poll
    "federation": 20,  # Federation operations
    "dynamic_credentials": 100,  # Dynamic credential generation
    "dynamic_admin": 20,  # Dynamic engine/role admin
    "leases": 100,  # Lease operations (renew, revoke)
    "identity_read": 100,  # Identity read
    "identity_sync": 5,  # Identity sync
    "auth": 300,  # Auth whoami / introspect
}


def test_the_spec_categories_have_the_spec_defaults() -> None:
    assert len(SPEC_DEFAULTS) == 23
    assert {name: limit for name, limit in DEFAULT_LIMITS.items() if name not in OWN_CATEGORIES} == {
        name: Limit(requests, 60.0) for name, requests in SPEC_DEFAULTS.items()
    }
    assert DEFAULT_LIMITS[UNAUTHENTICATED] == Limit(60, 60.0)
    assert DEFAULT_LIMITS["secret_policy_preview"] == Limit(10, 60.0)


def test_a_bucket_holds_one_window_and_refills_at_the_nominal_rate() -> None:
    read = DEFAULT_LIMITS["secrets_read"]
    assert read.capacity == 1000
    assert read.rate == pytest.approx(1000 / 60)


def test_every_category_but_unauthenticated_is_reachable_from_some_route() -> None:
    routed = {category for _, _, category in ROUTES if category is not None}
    assert routed == set(DEFAULT_LIMITS) - {UNAUTHENTICATED}


EXISTING_ROUTES = [
    ("GET", "/v1/secrets/{path}", "secrets_read"),
    ("PUT", "/v1/secrets/{path}", "secrets_write"),
    ("DELETE", "/v1/secrets/{path}", "secrets_delete"),
    ("POST", "/v1/secrets/{path}/restore", "secrets_write"),
    ("PATCH", "/v1/secrets/{path}/metadata", "secrets_write"),
    ("GET", "/v1/secrets/{path}/metadata", "secrets_list"),
    ("GET", "/v1/secrets/{path}/versions", "secrets_list"),
    ("GET", "/v1/secrets", "secrets_list"),
    ("POST", "/v1/secrets/batch", "batch_read"),
    ("POST", "/v1/secrets/batch/metadata", "batch_metadata"),
    ("GET", "/v1/t/{tenant_id}/secrets/{path}", "secrets_read"),
    ("PUT", "/v1/t/{tenant_id}/secrets/{path}", "secrets_write"),
    ("POST", "/v1/t/{tenant_id}/secrets/batch", "batch_read"),
    ("GET", "/v1/partner/secrets/{path}", "secrets_read"),
    ("DELETE", "/v1/partner/secrets/{path}", "secrets_delete"),
    ("GET", "/v1/partner/secrets", "secrets_list"),
    ("POST", "/v1/partner/secrets/batch/metadata", "batch_metadata"),
    ("GET", "/v1/audit/logs", "audit_query"),
    ("GET", "/v1/audit/secrets/{path}", "audit_query"),
    ("GET", "/v1/audit/identities/{identity_id}", "audit_query"),
    ("GET", "/v1/audit/summary", "audit_query"),
    ("GET", "/v1/audit/verify", "audit_query"),
    ("HEAD", "/v1/t/{tenant_id}/audit/logs", "audit_query"),
    ("POST", "/v1/audit/export", "audit_export"),
    ("POST", "/v1/t/{tenant_id}/audit/export", "audit_export"),
    ("GET", "/v1/audit/exports", "audit_query"),
    ("GET", "/v1/audit/exports/{export_id}", "audit_query"),
    ("GET", "/v1/auth/whoami", "auth"),
    ("POST", "/v1/auth/introspect", "auth"),
    ("GET", "/v1/health", None),
    ("GET", "/v1/health/ready", None),
    ("GET", "/v1/health/detailed", None),
    ("GET", "/v1/version", None),
    ("GET", "/v1/metrics", None),
    ("GET", "/metrics", None),
]

# Routes the table places, whether or not the app serves them yet.
PLACED_ROUTES = [
    ("GET", "/v1/policies", "policies"),
    ("POST", "/v1/policies", "policies"),
    ("GET", "/v1/policies/{id}", "policies"),
    ("PUT", "/v1/policies/{id}", "policies"),
    ("PATCH", "/v1/policies/{id}", "policies"),
    ("DELETE", "/v1/policies/{id}", "policies"),
    ("GET", "/v1/policies/{id}/bindings", "policies"),
    ("POST", "/v1/policies/{policy_id}/bindings", "policies"),
    ("DELETE", "/v1/policies/{id}/bindings/{binding_id}", "policies"),
    ("POST", "/v1/policies/test", "policy_test"),
    ("GET", "/v1/secret-policies/{policy_id}", "policies"),
    ("POST", "/v1/secret-policies", "policies"),
    ("POST", "/v1/secret-policies/preview", "secret_policy_preview"),
    ("POST", "/v1/secret-policies/{policy_id}/preview", "secret_policy_preview"),
    ("POST", "/v1/t/{tenant_id}/secret-policies/preview", "secret_policy_preview"),
    ("POST", "/v1/t/{tenant_id}/secret-policies/{policy_id}/preview", "secret_policy_preview"),
    ("POST", "/v1/t/{tenant_id}/policies/test", "policy_test"),
    ("GET", "/v1/identity/partners", "identity_read"),
    ("GET", "/v1/identity/tenants/{tenant_id}/users", "identity_read"),
    ("GET", "/v1/identity/resolve/{identity_type}/{identity_id}", "identity_read"),
    ("GET", "/v1/identity/sync/history", "identity_read"),
    ("PUT", "/v1/identity/users/{user_id}/roles", "identity_read"),
    ("POST", "/v1/identity/sync", "identity_sync"),
    ("POST", "/v1/identity/webhooks/scaikey", None),
    ("POST", "/v1/pki/issue/{role}", "pki_issue"),
    ("POST", "/v1/pki/sign/{role}", "pki_issue"),
    ("POST", "/v1/pki/ca", "pki_admin"),
    ("GET", "/v1/pki/ca/{id}/crl", "pki_public"),
    ("GET", "/v1/pki/ca/{id}/ocsp/MEIwQDA%2BMDwwOjAJ", "pki_public"),
    ("GET", "/v1/pki/ca/{id}", "pki_admin"),
    ("DELETE", "/v1/pki/roles/{name}", "pki_admin"),
    ("GET", "/v1/pki/certificates/{id}/pem", "pki_admin"),
    ("POST", "/v1/pki/acme/accounts", "acme_order"),
    ("POST", "/v1/webhooks", "webhooks"),
    ("POST", "/v1/webhooks/{id}/test", "webhooks"),
    ("GET", "/v1/subscriptions/{id}/poll", "subscription_poll"),
    ("POST", "/v1/subscriptions/{id}/ack", "subscriptions"),
    ("PATCH", "/v1/subscriptions/{id}", "subscriptions"),
    ("POST", "/v1/federation/backends/{id}/sync", "federation"),
    ("GET", "/v1/federation/backends/{id}/conflicts", "federation"),
    ("POST", "/v1/dynamic/engines/{engine}/creds/{role}", "dynamic_credentials"),
    ("POST", "/v1/dynamic/engines", "dynamic_admin"),
    ("POST", "/v1/leases/{lease_id}/renew", "leases"),
    ("POST", "/v1/dynamic/leases/{lease_id}/revoke", "leases"),
    ("GET", "/v1/dynamic/leases", "leases"),
    ("GET", "/v1/t/{tenant_id}/dynamic/engines/{engine}/roles/{role}", "dynamic_admin"),
    ("DELETE", "/v1/leases/{lease_id}", "leases"),
]


@pytest.mark.parametrize(("method", "route", "category"), EXISTING_ROUTES + PLACED_ROUTES)
def test_route_category(method: str, route: str, category: str | None) -> None:
    assert category_of(method, route) == category


def test_a_route_nobody_mapped_is_reported() -> None:
    with pytest.raises(Unmapped):
        category_of("GET", "/v1/unmapped/resources")
    with pytest.raises(Unmapped):
        category_of("POST", "/v1/health")


def test_route_shapes_drop_tenant_and_partner_prefixes_and_name_no_placeholder() -> None:
    assert route_shape("/v1/t/{tenant_id}/secrets/{path}/versions") == "/v1/secrets/*/versions"
    assert route_shape("/v1/partner/secrets/{path}") == "/v1/secrets/*"
    assert route_shape("/v1/secretsx") == "/v1/secretsx"
    with pytest.raises(Unmapped):  # a prefix is a whole segment: /v1/auditing is not under /v1/audit/**
        category_of("GET", "/v1/auditing")


# ---- SCAIVAULT_RATE_LIMITS ---------------------------------------------------------------------------------------


def test_no_overrides_means_the_defaults() -> None:
    assert parse_limits("") == DEFAULT_LIMITS
    assert parse_limits("  ") == DEFAULT_LIMITS


def test_overrides_replace_only_the_named_categories() -> None:
    limits = parse_limits("secrets_read=5000/m, audit_export=10/1h,policy_test=7/30s,leases=3/d")
    assert limits is not None
    assert limits["secrets_read"] == Limit(5000, 60)
    assert limits["audit_export"] == Limit(10, 3600)
    assert limits["policy_test"] == Limit(7, 30)
    assert limits["leases"] == Limit(3, 86400)
    assert limits["secrets_write"] == DEFAULT_LIMITS["secrets_write"]


def test_a_category_can_be_unlimited_and_star_sets_every_category_before_later_entries() -> None:
    limits = parse_limits("*=1000/s,secrets_write=off,auth=9/m")
    assert limits is not None
    assert limits["secrets_write"] is None
    assert limits["auth"] == Limit(9, 60)
    assert {name for name, limit in limits.items() if limit == Limit(1000, 1)} == set(DEFAULT_LIMITS) - {
        "secrets_write", "auth"
    }


def test_off_disables_limiting() -> None:
    assert parse_limits("off") is None
    assert parse_limits("OFF") is None


@pytest.mark.parametrize(
    "text",
    ["secrets=10/m", "secrets_read", "secrets_read=0/m", "secrets_read=-1/m", "secrets_read=10/fortnight",
     "secrets_read=10", "secrets_read=ten/m", "secrets_read=10/0m", "secrets_read=10/m/s", "=10/m"],
)
def test_bad_overrides_are_refused(text: str) -> None:
    with pytest.raises(InvalidRateLimits):
        parse_limits(text)


def test_settings_read_the_overrides_and_refuse_bad_ones_naming_the_variable() -> None:
    settings = Settings.from_env({"SCAIVAULT_RATE_LIMITS": "secrets_read=5/m", "SCAIVAULT_REDIS_PREFIX": "x:"})
    assert settings.rate_limits == "secrets_read=5/m"
    assert settings.redis_key_prefix == "x:"
    with pytest.raises(ConfigurationError, match="SCAIVAULT_RATE_LIMITS"):
        Settings.from_env({"SCAIVAULT_RATE_LIMITS": "secrets_reed=5/m"})
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "http://127.0.0.1:6379"})
    assert Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0"}).redis_url == "redis://127.0.0.1:6379/0"
