"""Rate-limit categories, their default limits, and which routes belong to which (spec advanced/rate-limiting).

Every route that authenticates a principal is charged to one category; the ROUTES table below is the one place a
new endpoint is given its category. ``tests/unit/test_rate_limit_categories.py`` fails for any route of the app
that the table does not cover, so a new endpoint cannot silently go unlimited.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import InvalidDuration


@dataclass(frozen=True, slots=True)
class Limit:
    """``requests`` per ``window_seconds``: refills continuously at that rate (``rate``, tokens per second); the
    bucket holds ``capacity`` = ``requests`` tokens (a full window's worth: the burst a client may spend at once).
    Both are computed once: every request reads them.

    ``shared_by``: how many processes each keep a bucket of this limit for the same identity (the in-process buckets
    of ``serve --workers N``). Each bucket then holds and refills 1/N of the limit, so together they allow the limit,
    not N times it; a bucket still holds at least one request, or a small limit shared out would refuse everything."""

    requests: int
    window_seconds: float
    shared_by: int = 1
    capacity: float = field(init=False, compare=False, repr=False)
    rate: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        shared = self.shared_by
        object.__setattr__(self, "capacity", float(self.requests) if shared == 1 else max(1.0, self.requests / shared))
        object.__setattr__(self, "rate", self.requests / self.window_seconds / shared)

    @property
    def reported(self) -> int:
        """What ``X-RateLimit-Limit`` says: the requests this bucket allows per window."""
        return self.requests if self.shared_by == 1 else math.floor(self.capacity)

    def shared(self, processes: int) -> Limit:
        return Limit(self.requests, self.window_seconds, processes)


MINUTE = 60.0

# The spec's 23 categories with their managed-service defaults, plus three of ours: ``unauthenticated``, failed
# authentication, charged per client IP (there is no identity to charge); ``secret_policy_preview``, previews of
# secret policies, each of which may cost seconds of CPU (four RSA-4096 key pairs or bcrypt hashes of cost 14);
# ``pki_public``, what relying parties fetch without a token (CA certificates, CRLs, OCSP), per client IP.
DEFAULT_LIMITS: dict[str, Limit] = {
    "secrets_read": Limit(1000, MINUTE),
    "secrets_write": Limit(100, MINUTE),
    "secrets_delete": Limit(100, MINUTE),
    "secrets_list": Limit(100, MINUTE),
    "batch_read": Limit(100, MINUTE),
    "batch_metadata": Limit(100, MINUTE),
    "audit_query": Limit(50, MINUTE),
    "audit_export": Limit(5, MINUTE),
    "policies": Limit(50, MINUTE),
    "policy_test": Limit(200, MINUTE),
    "pki_issue": Limit(50, MINUTE),
    "pki_admin": Limit(20, MINUTE),
    "acme_order": Limit(30, MINUTE),
    "webhooks": Limit(20, MINUTE),
    "subscriptions": Limit(20, MINUTE),
    "subscription_poll": Limit(240, MINUTE),
    "federation": Limit(20, MINUTE),
    "dynamic_credentials": Limit(100, MINUTE),
    "dynamic_admin": Limit(20, MINUTE),
    "leases": Limit(100, MINUTE),
    "identity_read": Limit(100, MINUTE),
    "identity_sync": Limit(5, MINUTE),
    "auth": Limit(300, MINUTE),
    "unauthenticated": Limit(60, MINUTE),
    "secret_policy_preview": Limit(10, MINUTE),
    "pki_public": Limit(6000, MINUTE),
}

UNAUTHENTICATED = "unauthenticated"
SECRET_POLICY_PREVIEW = "secret_policy_preview"
PKI_PUBLIC = "pki_public"
OWN_CATEGORIES = frozenset({UNAUTHENTICATED, SECRET_POLICY_PREVIEW, PKI_PUBLIC})  # not in the spec's table

# A request of the key category also needs a non-empty bucket in each listed category, without taking from it: a
# batch read is charged its returned reads afterwards (spec api-guides/batch-operations), which may leave the read
# bucket in debt, and a caller in debt must not start further batches.
GATES: dict[str, tuple[str, ...]] = {"batch_read": ("secrets_read",)}

# (methods, route pattern, category). Patterns match a route's canonical form with ``/t/{tenant_id}`` and
# ``/partner`` removed, every ``{placeholder}`` segment written ``*``; ``*`` matches one segment, a trailing
# ``**`` any rest (also none). The first matching row wins, so specific rows go first. Category ``None``:
# deliberately not limited (documented in docs/rate-limiting.md).
ANY = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
READ = frozenset({"GET", "HEAD"})
POST, PUT, PATCH, DELETE = (frozenset({method}) for method in ("POST", "PUT", "PATCH", "DELETE"))

ROUTES: tuple[tuple[frozenset[str], str, str | None], ...] = (
    # Operators' probes and scrapes: cheap, and a load balancer must never be throttled out of its health checks.
    (READ, "/v1/health", None),
    (READ, "/v1/health/ready", None),
    (READ, "/v1/health/detailed", None),
    (READ, "/v1/version", None),
    (READ, "/v1/metrics", None),
    (READ, "/metrics", None),
    # Secrets (also under /v1/t/{tenant_id}/ and /v1/partner/).
    (POST, "/v1/secrets/batch", "batch_read"),
    (POST, "/v1/secrets/batch/metadata", "batch_metadata"),
    (READ, "/v1/secrets", "secrets_list"),
    (READ, "/v1/secrets/*/versions", "secrets_list"),
    (READ, "/v1/secrets/*/metadata", "secrets_list"),
    (PATCH, "/v1/secrets/*/metadata", "secrets_write"),
    (POST, "/v1/secrets/*/restore", "secrets_write"),
    (READ, "/v1/secrets/*", "secrets_read"),
    (PUT, "/v1/secrets/*", "secrets_write"),
    (DELETE, "/v1/secrets/*", "secrets_delete"),
    # Audit: creating an export is the expensive part; polling an export's status is a query.
    (POST, "/v1/audit/export", "audit_export"),
    (ANY, "/v1/audit/**", "audit_query"),
    (ANY, "/v1/policies/test", "policy_test"),
    (ANY, "/v1/policies/**", "policies"),
    (POST, "/v1/secret-policies/preview", SECRET_POLICY_PREVIEW),
    (POST, "/v1/secret-policies/*/preview", SECRET_POLICY_PREVIEW),
    (ANY, "/v1/secret-policies/**", "policies"),
    (ANY, "/v1/auth/**", "auth"),
    # Rotation (no category of its own in the spec): rotating writes secrets; the rest is policy administration.
    (POST, "/v1/rotation/policies/*/rotate", "secrets_write"),
    (ANY, "/v1/rotation/**", "policies"),
    # Identity: the ScaiKey webhook receiver is signature-verified, not a principal, so it is never charged.
    (POST, "/v1/identity/webhooks/**", None),
    (POST, "/v1/identity/sync", "identity_sync"),
    (ANY, "/v1/identity/**", "identity_read"),
    # Endpoints not served yet (federation): their rows are here so adding the route is all it takes.
    # What relying parties fetch without a token (CA certificates, CRLs, OCSP), charged per client IP: generous,
    # since a fleet behind one NAT address checks revocation often, but bounded (each OCSP answer is a signature).
    # ACME http-01 answers, fetched by CAs' validation servers without a token: the same per-address budget.
    (READ, "/.well-known/acme-challenge/*", PKI_PUBLIC),
    (READ, "/v1/pki/ca/*/certificate", PKI_PUBLIC),
    (READ, "/v1/pki/ca/*/certificate/der", PKI_PUBLIC),
    (READ, "/v1/pki/ca/*/crl", PKI_PUBLIC),
    (READ, "/v1/pki/ca/*/crl/*", PKI_PUBLIC),
    (ANY, "/v1/pki/ca/*/ocsp", PKI_PUBLIC),
    (ANY, "/v1/pki/ca/*/ocsp/**", PKI_PUBLIC),
    (POST, "/v1/pki/issue/**", "pki_issue"),
    (POST, "/v1/pki/sign/**", "pki_issue"),
    (ANY, "/v1/pki/acme/**", "acme_order"),
    (ANY, "/v1/pki/**", "pki_admin"),
    (ANY, "/v1/acme/**", "acme_order"),
    # DNS providers (ACME DNS-01) are PKI administration; a verify calls the provider, which is the cost to bound.
    (ANY, "/v1/dns/**", "pki_admin"),
    (ANY, "/v1/webhooks/**", "webhooks"),
    (READ, "/v1/subscriptions/*/poll", "subscription_poll"),
    (ANY, "/v1/subscriptions/**", "subscriptions"),
    (ANY, "/v1/federation/**", "federation"),
    (POST, "/v1/dynamic/engines/*/creds/*", "dynamic_credentials"),
    # Leases are served at /v1/dynamic/leases and, as the spec's rate-limit table names them, at /v1/leases.
    (ANY, "/v1/dynamic/leases", "leases"),
    (ANY, "/v1/dynamic/leases/**", "leases"),
    (ANY, "/v1/dynamic/**", "dynamic_admin"),
    (ANY, "/v1/leases", "leases"),
    (ANY, "/v1/leases/**", "leases"),
)

_PLACEHOLDER = re.compile(r"\{[^/]*\}")
_TENANT_PREFIX = "/v1/t/*/"
_PARTNER_PREFIX = "/v1/partner/"


class Unmapped(LookupError):
    """A route no row of ROUTES covers."""


def route_shape(canonical: str) -> str:
    """``/v1/t/{tenant_id}/secrets/{path}/versions`` -> ``/v1/secrets/*/versions``."""
    shape = _PLACEHOLDER.sub("*", canonical)
    for prefix in (_TENANT_PREFIX, _PARTNER_PREFIX):
        if shape.startswith(prefix):
            shape = "/v1/" + shape[len(prefix):]
    return shape


def _matches(pattern: str, shape: str) -> bool:
    wanted, actual = pattern.split("/"), shape.split("/")
    if wanted[-1] == "**":
        wanted = wanted[:-1]
        actual = actual[: len(wanted)]
    elif len(wanted) != len(actual):
        return False
    return len(actual) == len(wanted) and all(w == "*" or w == a for w, a in zip(wanted, actual, strict=True))


@lru_cache(maxsize=4096)
def category_of(method: str, canonical: str) -> str | None:
    """The category a request to this route is charged to; None for routes deliberately not limited. Raises
    ``Unmapped`` for a route the table does not cover. Cached: the set of (method, route) pairs is small."""
    shape = route_shape(canonical)
    for methods, pattern, category in ROUTES:
        if method in methods and _matches(pattern, shape):
            return category
    raise Unmapped(f"{method} {canonical}")


class InvalidRateLimits(ValueError):
    """Raised for an unusable SCAIVAULT_RATE_LIMITS value; the message names the offending entry."""


OFF = "off"
ALL = "*"
_ENTRY = re.compile(r"^(?P<requests>\d{1,12})/(?P<window>\d{0,10}[smhd])$")


def parse_limits(text: str) -> dict[str, Limit | None] | None:
    """Parse ``SCAIVAULT_RATE_LIMITS``: ``off`` (no limiting), or comma-separated ``category=N/window`` entries
    (window ``s``, ``m``, ``h``, ``d``, optionally with a count: ``10/30s``) or ``category=off``; category ``*``
    sets every category, entries after it override it. Returns every category's limit (None: not limited), or
    None when limiting is off."""
    text = text.strip()
    if text.lower() == OFF:
        return None
    limits: dict[str, Limit | None] = dict(DEFAULT_LIMITS)
    for raw in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (piece.strip() for piece in raw.partition("="))
        if not sep or (name != ALL and name not in DEFAULT_LIMITS):
            known = ", ".join(DEFAULT_LIMITS)
            raise InvalidRateLimits(f"{raw[:60]!r}: expected category=N/window with a category among {ALL}, {known}")
        limit = None if value.lower() == OFF else _parse_limit(raw, value)
        for category in DEFAULT_LIMITS if name == ALL else (name,):
            limits[category] = limit
    return limits


def _parse_limit(raw: str, value: str) -> Limit:
    match = _ENTRY.match(value)
    if match is None or int(match["requests"]) == 0:
        raise InvalidRateLimits(f"{raw[:60]!r}: expected N/window with N >= 1, e.g. 1000/m, 10/30s or off")
    window = match["window"]
    try:
        seconds = parse_duration(window if window[0].isdigit() else "1" + window).total_seconds()
    except InvalidDuration:
        raise InvalidRateLimits(f"{raw[:60]!r}: the window must be a duration such as m, 30s or 1h") from None
    return Limit(int(match["requests"]), seconds)
