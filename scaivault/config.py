"""Configuration from environment variables (names from the spec's operations/deployment page).

``Settings.from_env()`` is the only place that reads the environment; everything else receives a ``Settings``.
An invalid value raises ``ConfigurationError`` whose message is one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigurationError(Exception):
    """Raised for invalid configuration; str() is a single line fit for a start-up failure."""


LogLevel = Literal["debug", "info", "warn", "error"]
KmsProvider = Literal["local", "env", "aws", "gcp", "azure"]

# Environment variable -> Settings field.
ENVIRONMENT = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "BIND_ADDRESS": "bind_address",
    "BASE_URL": "base_url",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "SCAIKEY_URL": "scaikey_url",
    "SCAIKEY_JWKS_URL": "scaikey_jwks_url",
    "SCAIKEY_ISSUER": "scaikey_issuer",
    "SCAIKEY_CLIENT_ID": "scaikey_client_id",
    "SCAIKEY_CLIENT_SECRET": "scaikey_client_secret",
    "SCAIKEY_WEBHOOK_SECRET": "scaikey_webhook_secret",
    "SCAIKEY_WEBHOOK_PREVIOUS_SECRET": "scaikey_webhook_previous_secret",
    "TOKEN_AUDIENCE": "token_audience",
    "KMS_PROVIDER": "kms_provider",
    "KMS_KEY_ID": "kms_key_id",
    "KMS_KEY_NAME": "kms_key_name",
    "KMS_KEY_URL": "kms_key_url",
    "SCAIVAULT_ROOT_KEY": "root_key",
    "SCAIVAULT_DATA_DIR": "data_dir",
    "SCAIVAULT_DB_POOL_SIZE": "db_pool_size",
    "SCAIVAULT_AUDIT_TIMEOUT": "audit_timeout_seconds",
    "SCAIVAULT_UNSAFE_SKIP_READ_AUDIT": "unsafe_skip_read_audit",
    "SCAIVAULT_RUN_PROJECTIONS": "run_projections",
    "SCAIVAULT_EVENT_LOCK_TIMEOUT": "event_lock_timeout_seconds",
    "SCAIVAULT_DELETE_RETENTION": "delete_retention",
    "SCAIVAULT_AUDIT_RETENTION": "audit_retention",
    "SCAIVAULT_EVENT_FEED_RETENTION": "event_feed_retention",
    "SCAIVAULT_DELIVERY_RETENTION": "delivery_retention",
    "SCAIVAULT_SCHEDULER_INTERVAL": "scheduler_interval",
    "SCAIVAULT_DEFAULT_MAX_VERSIONS": "default_max_versions",
    "SCAIVAULT_SNAPSHOT_INTERVAL": "snapshot_interval",
    "SCAIVAULT_SHUTDOWN_TIMEOUT": "shutdown_timeout_seconds",
    "SCAIVAULT_WORKERS": "workers",
    "SCAIVAULT_EVENT_LOOP": "event_loop",
    "SCAIVAULT_EXPORT_DIR": "export_dir",
    "SCAIVAULT_EGRESS_ALLOW": "egress_allow",
    "SCAIVAULT_ACME_TLS_ALPN_ADDRESS": "acme_tls_alpn_address",
    "SCAIVAULT_WEBHOOK_MAX_ATTEMPTS": "webhook_max_attempts",
    "SCAIVAULT_WEBHOOK_RETRY_BASE": "webhook_retry_base_seconds",
    "SCAIVAULT_WEBHOOK_RETRY_MAX": "webhook_retry_max_seconds",
    "SCAIVAULT_WEBHOOK_TIMEOUT": "webhook_timeout_seconds",
    "SCAIVAULT_WEBHOOK_LEASE": "webhook_lease_seconds",
    "SCAIVAULT_WEBHOOK_CONCURRENCY": "webhook_concurrency",
    "SCAIVAULT_WEBHOOK_CONCURRENCY_PER_TARGET": "webhook_concurrency_per_target",
    "SCAIVAULT_MAX_WEBHOOKS_PER_TENANT": "max_webhooks_per_tenant",
    "SCAIVAULT_MAX_LEASES_PER_TENANT": "max_leases_per_tenant",
    "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_IDENTITY": "max_subscriptions_per_identity",
    "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_TENANT": "max_subscriptions_per_tenant",
    "SCAIVAULT_TRUSTED_PROXIES": "trusted_proxies",
    "SCAIVAULT_RATE_LIMITS": "rate_limits",
    "SCAIVAULT_REDIS_PREFIX": "redis_key_prefix",
    "METRICS_BIND_ADDRESS": "metrics_bind_address",
    "TLS_CERT_FILE": "tls_cert_file",
    "TLS_KEY_FILE": "tls_key_file",
}


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:8443")
    return value


DEFAULT_POOL_CONNECTIONS = 20  # what a server's processes share when SCAIVAULT_DB_POOL_SIZE is unset
MIN_DEFAULT_POOL_PER_PROCESS = 5


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # URLs may carry a password: kept out of the repr, like every other credential here.
    database_url: str | None = Field(default=None, repr=False)
    redis_url: str | None = Field(default=None, repr=False)
    bind_address: str = "0.0.0.0:8443"
    base_url: str | None = None
    log_level: LogLevel = "info"
    log_format: Literal["json", "text"] = "json"
    scaikey_url: str | None = None
    scaikey_jwks_url: str | None = None
    scaikey_issuer: str | None = None
    # Identity sync (docs/identity.md): client credentials for ScaiKey's directory, and the shared secret that signs
    # its webhook deliveries (the previous one is accepted too while a rotation is under way). Never logged.
    scaikey_client_id: str | None = None
    scaikey_client_secret: str | None = Field(default=None, repr=False)
    scaikey_webhook_secret: str | None = Field(default=None, repr=False, min_length=16)
    scaikey_webhook_previous_secret: str | None = Field(default=None, repr=False, min_length=16)
    token_audience: str = "scaivault"
    kms_provider: KmsProvider = "local"
    kms_key_id: str | None = None
    kms_key_name: str | None = None
    kms_key_url: str | None = None
    root_key: str | None = Field(default=None, repr=False)
    data_dir: Path = Path(".scaivault")
    # Pooled connections per process; unset: DEFAULT_POOL_CONNECTIONS shared by the server's worker processes.
    db_pool_size: int | None = Field(default=None, ge=2, le=500)
    audit_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Benchmarking only: requests that change nothing leave no access record. Never in production.
    unsafe_skip_read_audit: bool = False
    # Whether `serve` also runs the catch-up projections (audit log, event index). Off when they run in their own
    # process (`scaivault projections run`), which keeps their CPU off the request path.
    run_projections: bool = True
    event_lock_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    delete_retention: str = "30d"
    audit_retention: str = "7y"
    # The public-event feed and finished webhook deliveries (docs/webhooks.md): kept this long, then trimmed.
    event_feed_retention: str = "7d"
    delivery_retention: str = "30d"
    # How often the rotation and expiry scheduler scans for due steps (docs/rotation.md); it also runs at start.
    scheduler_interval: str = "30s"
    default_max_versions: int = Field(default=10, ge=1, le=1000)
    snapshot_interval: int = Field(default=100, ge=2, le=100_000)
    shutdown_timeout_seconds: float = Field(default=10.0, ge=0, le=600)
    # Server processes `serve` runs behind BIND_ADDRESS (`--workers` overrides it); None: one per usable core.
    workers: int | None = Field(default=None, ge=1, le=256)
    # The serving processes' event loop: libuv's (uvloop) costs about 13% less CPU per read than asyncio's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Local audit exports go under this directory only (default <data_dir>/exports); the API never names a path.
    export_dir: Path | None = None
    # Comma-separated CIDRs that outbound connections aimed by API callers may reach although non-public.
    egress_allow: str = ""
    # Where the ACME tls-alpn-01 responder listens (HOST:PORT; port 443 of every name must reach it): off when unset
    # (docs/acme.md). Only the processes that run it take tls-alpn-01 orders.
    acme_tls_alpn_address: str | None = None
    # Webhook deliveries (docs/webhooks.md): tries before the dead letter, the retry backoff's base and cap (seconds,
    # full jitter), each send's time limit, and sends in flight per server and per receiver.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_retry_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0, le=86400)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # How long a claimed delivery is kept from other dispatchers (and a crashed server's claims wait before they
    # come due again); longer than a send may take. None: 60 s, or the timeout plus 10 s when that is longer.
    webhook_lease_seconds: float | None = Field(default=None, gt=0, le=3600)
    webhook_concurrency: int = Field(default=256, ge=1, le=10_000)
    webhook_concurrency_per_target: int = Field(default=32, ge=1, le=1000)
    # Quotas (docs/api-decisions.md, 409 quota_exceeded): each webhook and subscription adds fan-out work to every
    # event of its tenant. Subscriptions count per identity within a tenant, and per tenant.
    max_webhooks_per_tenant: int = Field(default=100, ge=1, le=10_000)
    # The lease explosion guard: open dynamic-secret leases per tenant (roles may set a lower max_leases each).
    max_leases_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000)
    max_subscriptions_per_identity: int = Field(default=100, ge=1, le=100_000)
    max_subscriptions_per_tenant: int = Field(default=1000, ge=1, le=100_000)
    # Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed (default: none; the TCP peer is the
    # client). Policy ip_ranges conditions and access records use the client address found this way.
    trusted_proxies: str = ""
    # Rate-limit overrides: "off", or "category=N/window,..." (scaivault/ratelimit/categories.py parse_limits).
    rate_limits: str = ""
    # Prefix of every key this server keeps in Redis (several deployments may share one Redis).
    redis_key_prefix: str = Field(default="scaivault:", min_length=1, max_length=100)
    # Unauthenticated metrics on an internal-only address ("off" disables); /v1/metrics on the API needs `admin`.
    metrics_bind_address: str = "127.0.0.1:9464"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("bind_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _check_host_port(value)

    @field_validator("metrics_bind_address")
    @classmethod
    def _host_port_or_off(cls, value: str) -> str:
        return value if value == "off" else _check_host_port(value)

    @field_validator("acme_tls_alpn_address")
    @classmethod
    def _optional_host_port(cls, value: str | None) -> str | None:
        return value if not value else _check_host_port(value)

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("expected a postgresql:// DSN")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        from scaivault.ratelimit.categories import parse_limits

        parse_limits(value)
        return value

    @field_validator("egress_allow", "trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        from scaivault.egress import parse_allow_list

        parse_allow_list(value)
        return value

    @field_validator(
        "delete_retention", "audit_retention", "event_feed_retention", "delivery_retention", "scheduler_interval"
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        from scaivault.domain.durations import parse_duration
        from scaivault.domain.errors import InvalidDuration

        try:
            parse_duration(value)
        except InvalidDuration:
            raise ValueError("expected a duration such as 30d") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
        if (self.scaikey_jwks_url or self.scaikey_issuer) and not (self.scaikey_url or self.scaikey_issuer):
            raise ValueError("SCAIKEY_JWKS_URL needs SCAIKEY_URL or SCAIKEY_ISSUER (the issuer its tokens carry)")
        if self.scaikey_issuer and not (self.scaikey_url or self.scaikey_jwks_url):
            raise ValueError("SCAIKEY_ISSUER needs SCAIKEY_URL or SCAIKEY_JWKS_URL (where its keys are)")
        if (self.scaikey_client_id is None) != (self.scaikey_client_secret is None):
            raise ValueError("SCAIKEY_CLIENT_ID and SCAIKEY_CLIENT_SECRET go together: set both or neither")
        if self.scaikey_webhook_previous_secret and not self.scaikey_webhook_secret:
            raise ValueError("SCAIKEY_WEBHOOK_PREVIOUS_SECRET needs SCAIKEY_WEBHOOK_SECRET")
        if self.webhook_lease_seconds is not None and self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("SCAIVAULT_WEBHOOK_LEASE must be longer than SCAIVAULT_WEBHOOK_TIMEOUT (a send still "
                             "under way would be claimed and sent again)")
        return self

    @property
    def webhook_lease(self) -> float:
        """Seconds a claimed webhook delivery is leased for (``SCAIVAULT_WEBHOOK_LEASE``)."""
        if self.webhook_lease_seconds is not None:
            return self.webhook_lease_seconds
        return max(60.0, self.webhook_timeout_seconds + 10.0)

    @property
    def host(self) -> str:
        return self.bind_address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.bind_address.rpartition(":")[2])

    @property
    def public_url(self) -> str:
        scheme = "https" if self.tls_cert_file else "http"
        return self.base_url or f"{scheme}://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    @property
    def exports_directory(self) -> Path:
        return self.export_dir if self.export_dir is not None else self.data_dir / "exports"

    def pool_size(self, processes: int) -> int:
        """Pooled connections of one of a server's ``processes``: SCAIVAULT_DB_POOL_SIZE if set, else an equal share
        of DEFAULT_POOL_CONNECTIONS (at least MIN_DEFAULT_POOL_PER_PROCESS), so that the default number of workers
        (one per core) does not exhaust PostgreSQL's default of 100 connections on a machine with many cores."""
        if self.db_pool_size is not None:
            return self.db_pool_size
        return max(MIN_DEFAULT_POOL_PER_PROCESS, DEFAULT_POOL_CONNECTIONS // max(1, processes))

    @property
    def builtin_issuer(self) -> str:
        """The `iss` of tokens minted by this server's own issuer."""
        return self.public_url.rstrip("/") + "/issuer"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {field: environ[var] for var, field in ENVIRONMENT.items() if environ.get(var)}
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            if not error["loc"]:  # a rule across several variables: its message names them
                message = error["msg"].removeprefix("Value error, ")
                raise ConfigurationError(f"invalid configuration: {message}") from None
            field = str(error["loc"][0])
            variable = next((var for var, name in ENVIRONMENT.items() if name == field), field)
            raise ConfigurationError(f"invalid configuration: {variable}: {error['msg']}") from None
        except ValueError as exc:  # raised by validators that call domain parsers
            raise ConfigurationError(f"invalid configuration: {exc}") from None
