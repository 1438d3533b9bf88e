"""Dynamic secrets (spec core-concepts/dynamic-secrets, api-guides/dynamic-secrets): engines, their roles, and the
leases of the credentials they generate. Decisions where the spec is silent: docs/dynamic-secrets.md.

An engine is one aggregate (``dyn_`` id) holding its roles: a role is a recipe of the engine, and an engine's
changes, roles included, are one history. A lease is an aggregate of its own (``lease_`` id), because leases are
many, short-lived and changed concurrently (renewed by the holder, revoked by the expiry worker).

No secret enters an event: an engine's config names the secret that holds its root credentials
(``root_credentials_path``) and its ``connection_url`` keeps the ``{{username}}``/``{{password}}`` placeholders; a
lease records the generated user name (needed to revoke it) and never the password. The ssh engine's CA key is sealed
under the tenant's key hierarchy like a PKI CA key.

Values generated for the target (user names, passwords, expiration stamps) come from character sets that cannot end
a quoted SQL identifier or literal, so a role's statements stay what their author wrote whatever is substituted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.errors import (
    InvalidConfig,
    InvalidDuration,
    InvalidRole,
    LeaseNotRenewable,
    RoleExists,
    RoleNotFound,
)
from scaivault.domain.labels import CONTROL_CHARACTERS, check_description, field_error
from scaivault.domain.paths import parse_path

_ENGINE_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/dynamic-engine")
_LEASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/dynamic-lease")

# Engine types served, and those the spec lists that this server refuses (with the reason).
DATABASE_PLUGINS = ("postgresql", "mysql", "redis")
SUPPORTED_TYPES = ("database.postgresql", "database.mysql", "database.redis", "aws", "ssh")
NOT_YET_SUPPORTED = {
    "database.mongodb": "the database engine's mongodb plugin is not yet supported by this server",
    "azure": "the azure engine is not yet supported by this server",
    "gcp": "the gcp engine is not yet supported by this server",
    "custom": "the custom engine is not yet supported by this server",
}
URL_SCHEMES = {
    "database.postgresql": ("postgresql", "postgres"),
    "database.mysql": ("mysql", "mariadb"),
    "database.redis": ("redis", "rediss"),
}
# The longest user name each target accepts (PostgreSQL NAMEDATALEN-1, MariaDB 80 (MySQL 32), Redis: no limit of
# note, IAM 64).
USERNAME_LIMITS = {
    "database.postgresql": 63, "database.mysql": 32, "database.redis": 64, "aws": 64, "ssh": 64,
}
DEFAULT_USERNAME_TEMPLATE = "v_{{role}}_{{random}}"
USERNAME_PLACEHOLDERS = ("engine", "role", "display_name", "random", "unix_time")
STATEMENT_PLACEHOLDERS = ("name", "username", "password", "expiration")
RANDOM_LENGTH = 10
RANDOM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
PASSWORD_LENGTH = 32
PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

DEFAULT_TTL = timedelta(hours=1)
DEFAULT_MAX_TTL = timedelta(hours=24)
MIN_TTL = timedelta(seconds=1)
# Every engine's ceiling: nothing "short-lived" lasts a year.
MAX_TTL = timedelta(days=365)
MAX_STATEMENTS = 50
MAX_STATEMENT_LENGTH = 8192
MAX_ROLES = 500
MAX_CONFIG_VALUE = 2048

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_]+)\s*\}\}")
_USERNAME_CHARACTER = re.compile(r"[^a-z0-9_]")
_ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|aws)?:[\w+=,.@/:-]{1,1600}")
SSH_KEY_TYPES = ("ed25519", "ecdsa-p256", "rsa-3072")
SSH_CERT_TYPES = ("user", "host")
AWS_CREDENTIAL_TYPES = ("iam_user", "assumed_role")

# Revocation retries of a target that failed: 5 s doubling to at most 10 minutes.
RETRY_FIRST = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=10)


def engine_stream_id(engine_id: str) -> UUID:
    return uuid5(_ENGINE_NAMESPACE, engine_id)


def lease_stream_id(lease_id: str) -> UUID:
    return uuid5(_LEASE_NAMESPACE, lease_id)


# ---- names, types, durations ------------------------------------------------------------------------------------


def check_engine_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise field_error(field, "1-63 characters: a-z, 0-9, '-' and '_', starting with a letter or digit")
    return name


def check_role_name(name: object) -> str:
    """A role's name; it may appear in generated user names, so it keeps to a set that needs no quoting."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRole("A role name is 1-63 characters: a-z, 0-9, '-' and '_'", role=str(name)[:64])
    return name


def engine_type_of(engine_type: object, plugin: object) -> str:
    """The engine type as stored: ``database`` with ``config.plugin`` ``postgresql`` is ``database.postgresql``
    (``database.postgresql`` is accepted as ``type`` too). Types the spec lists that this server does not serve are
    refused with ``invalid_config`` saying so."""
    if not isinstance(engine_type, str) or not engine_type:
        raise field_error("type", f"one of database, aws, ssh (supported: {', '.join(SUPPORTED_TYPES)})")
    if engine_type == "database":
        if not isinstance(plugin, str) or not plugin:
            raise field_error("config.plugin", f"a database plugin: {', '.join(DATABASE_PLUGINS)}")
        engine_type = f"database.{plugin}"
    elif engine_type.startswith("database.") and plugin is not None and f"database.{plugin}" != engine_type:
        raise field_error("config.plugin", f"does not match the type {engine_type}")
    if engine_type in NOT_YET_SUPPORTED:
        raise InvalidConfig(NOT_YET_SUPPORTED[engine_type], type=engine_type)
    if engine_type not in SUPPORTED_TYPES:
        raise field_error("type", f"one of {', '.join(SUPPORTED_TYPES)}")
    return engine_type


def check_ttl(
    value: object, field: str, *, default: timedelta | None, ceiling: timedelta = MAX_TTL
) -> timedelta | None:
    """A lease duration: a duration string (``1h``) or a whole number of seconds; None keeps ``default``."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise field_error(field, "a duration such as 1h, or seconds")
    if isinstance(value, int):
        if not 1 <= value <= int(MAX_TTL.total_seconds()):
            raise field_error(field, f"between 1s and {format_duration(ceiling)}")
        duration = timedelta(seconds=value)
    elif isinstance(value, str):
        try:
            duration = parse_duration(value)
        except (InvalidDuration, OverflowError):
            raise InvalidDuration(value[:64], field=field) from None
    else:
        raise field_error(field, "a duration such as 1h, or seconds")
    if not MIN_TTL <= duration <= ceiling:
        raise field_error(field, f"between 1s and {format_duration(ceiling)}")
    return duration


def check_engine_ttls(default_ttl: object, max_ttl: object) -> tuple[timedelta, timedelta]:
    maximum = check_ttl(max_ttl, "max_ttl", default=DEFAULT_MAX_TTL)
    assert maximum is not None
    default = check_ttl(default_ttl, "default_ttl", default=min(DEFAULT_TTL, maximum))
    assert default is not None
    if default > maximum:
        raise field_error("default_ttl", "may not be longer than max_ttl")
    return default, maximum


def seconds(duration: timedelta | None) -> int | None:
    return None if duration is None else int(duration.total_seconds())


# ---- engine config ------------------------------------------------------------------------------------------------


def _text(value: object, field: str, *, limit: int = MAX_CONFIG_VALUE) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or CONTROL_CHARACTERS.search(value):
        raise field_error(field, f"a non-empty string of at most {limit} characters")
    return value


def _endpoint(value: object, field: str) -> str:
    text = _text(value, field)
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        raise field_error(field, "an http(s) URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        raise field_error(field, "an http(s) URL without credentials")
    return text.rstrip("/")


def _connection_url(engine_type: str, value: object) -> str:
    """The template: its scheme fits the plugin, its credentials are the ``{{username}}``/``{{password}}``
    placeholders (never literal credentials: those belong in the root secret, not in an event)."""
    text = _text(value, "config.connection_url")
    try:
        parts = urlsplit(text.replace("{{username}}", "u").replace("{{password}}", "p"))
        _ = parts.port
    except ValueError:
        raise field_error("config.connection_url", "not a valid URL (host or port)") from None
    schemes = URL_SCHEMES[engine_type]
    if parts.scheme not in schemes:
        raise field_error("config.connection_url", f"a {schemes[0]}:// URL")
    after_userinfo = text.split("://", 1)[-1].split("@", 1)[-1] if "@" in text else text.split("://", 1)[-1]
    if "{{" in after_userinfo:
        # A placeholder in the host would send the root password to whoever answers DNS for it.
        raise field_error("config.connection_url", "{{username}} and {{password}} belong before the @ only")
    if not parts.hostname:
        raise field_error("config.connection_url", "names no host")
    userinfo = text.split("://", 1)[1].split("@", 1)[0] if "@" in text.split("://", 1)[1].split("/", 1)[0] else ""
    if userinfo and userinfo not in ("{{username}}:{{password}}", "{{username}}"):
        raise field_error(
            "config.connection_url",
            "credentials go in the root secret: write them as {{username}}:{{password}}",
        )
    if "password=" in (parts.query or "").lower():
        raise field_error("config.connection_url", "credentials go in the root secret, not in the query")
    return text


_CONFIG_KEYS = {
    "database.postgresql": ("plugin", "connection_url", "root_credentials_path", "max_open_connections"),
    "database.mysql": ("plugin", "connection_url", "root_credentials_path", "max_open_connections"),
    "database.redis": ("plugin", "connection_url", "root_credentials_path", "max_open_connections"),
    "aws": ("root_credentials_path", "region", "iam_endpoint", "sts_endpoint"),
    "ssh": ("key_type",),
}


def check_engine_config(engine_type: str, config: object) -> dict[str, Any]:
    """The config as stored (``plugin`` dropped: it is part of the type)."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise field_error("config", "an object")
    known = _CONFIG_KEYS[engine_type]
    unknown = sorted(str(key) for key in config if key not in known)
    if unknown:
        raise field_error(f"config.{unknown[0][:64]}",
                          f"unknown for a {engine_type} engine (known: {', '.join(known)})")
    checked: dict[str, Any] = {}
    if engine_type.startswith("database."):
        checked["connection_url"] = _connection_url(engine_type, config.get("connection_url"))
        checked["root_credentials_path"] = _root_path(config.get("root_credentials_path"))
        connections = config.get("max_open_connections", 4)
        if not isinstance(connections, int) or isinstance(connections, bool) or not 1 <= connections <= 50:
            raise field_error("config.max_open_connections", "a whole number, 1-50")
        checked["max_open_connections"] = connections
    elif engine_type == "aws":
        checked["root_credentials_path"] = _root_path(config.get("root_credentials_path"))
        region = config.get("region", "us-east-1")
        if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", region):
            raise field_error("config.region", "an AWS region (e.g. us-east-1)")
        checked["region"] = region
        for key in ("iam_endpoint", "sts_endpoint"):
            if config.get(key) is not None:
                checked[key] = _endpoint(config[key], f"config.{key}")
    elif engine_type == "ssh":
        key_type = config.get("key_type", "ed25519")
        if key_type not in SSH_KEY_TYPES:
            raise field_error("config.key_type", f"one of {', '.join(SSH_KEY_TYPES)}")
        checked["key_type"] = key_type
    return checked


def _root_path(value: object) -> str:
    if value is None:
        raise field_error("config.root_credentials_path", "required: the secret holding the root credentials")
    try:
        return parse_path(value)
    except Exception:  # noqa: BLE001 - any invalid path is one field error
        raise field_error("config.root_credentials_path", "a valid secret path") from None


def same_target(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether two configs of an engine reach the same server and database (or account): its open leases' users
    live there, and revoking them elsewhere would remove nothing."""
    def where(config: Mapping[str, Any]) -> tuple[Any, ...]:
        url = config.get("connection_url")
        if isinstance(url, str):
            parts = urlsplit(url.replace("{{username}}", "u").replace("{{password}}", "p"))
            return (parts.scheme, (parts.hostname or "").lower(), parts.port, parts.path)
        return (config.get("root_credentials_path"), config.get("iam_endpoint"), config.get("region"))

    return where(before) == where(after)


def root_credentials_path(config: Mapping[str, Any]) -> str | None:
    value = config.get("root_credentials_path")
    return value if isinstance(value, str) else None


# ---- roles ----------------------------------------------------------------------------------------------------------


def _statements(value: object, field: str, *, allowed: Sequence[str] = STATEMENT_PLACEHOLDERS) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_STATEMENTS:
        raise field_error(field, f"a list of at most {MAX_STATEMENTS} statements")
    checked = []
    for index, statement in enumerate(value):
        if not isinstance(statement, str) or not statement.strip() or len(statement) > MAX_STATEMENT_LENGTH:
            raise field_error(f"{field}.{index}", f"a statement of 1-{MAX_STATEMENT_LENGTH} characters")
        for placeholder in _PLACEHOLDER.findall(statement):
            if placeholder not in allowed:
                raise field_error(f"{field}.{index}", f"unknown placeholder {{{{{placeholder[:32]}}}}} "
                                                      f"(known: {', '.join(allowed)})")
        checked.append(statement)
    return checked


def check_username_template(value: object) -> str:
    if value is None:
        return DEFAULT_USERNAME_TEMPLATE
    text = _text(value, "username_template", limit=256)
    found = _PLACEHOLDER.findall(text)
    unknown = [name for name in found if name not in USERNAME_PLACEHOLDERS]
    if unknown:
        raise field_error("username_template", f"unknown placeholder {{{{{unknown[0][:32]}}}}} "
                                               f"(known: {', '.join(USERNAME_PLACEHOLDERS)})")
    if "random" not in found:
        raise field_error("username_template", "must contain {{random}}: every lease needs a user of its own")
    return text


_REDIS_FORBIDDEN = re.compile(r"^(nopass|resetpass|on|off|reset|[<>#!%].*)$", re.IGNORECASE)


def _string_list(value: object, field: str, *, pattern: re.Pattern[str] | None = None, limit: int = 100) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise field_error(field, f"a list of at most {limit} strings")
    checked = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > 2048 or CONTROL_CHARACTERS.search(item):
            raise field_error(f"{field}.{index}", "a non-empty string")
        if pattern is not None and not pattern.fullmatch(item):
            raise field_error(f"{field}.{index}", "not a valid value")
        checked.append(item)
    return checked


def _string_map(value: object, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 32:
        raise field_error(field, "an object of at most 32 string values")
    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(r"[a-zA-Z0-9@._-]{1,64}", key) or not isinstance(item, str) \
                or len(item) > 1024 or CONTROL_CHARACTERS.search(item):
            raise field_error(f"{field}.{str(key)[:64]}", "a name of letters, digits, @._- with a string value")
    return dict(value)


def _policy_document(value: object, field: str) -> str | None:
    import json

    if value is None:
        return None
    if isinstance(value, dict):
        value = json.dumps(value)
    text = _text(value, field, limit=10240)
    try:
        document = json.loads(text)
    except ValueError:
        raise field_error(field, "an IAM policy document (JSON)") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise field_error(field, "an IAM policy document with a Statement")
    return text


def check_role_settings(engine_type: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The engine-type-specific part of a role."""
    checked: dict[str, Any] = {}
    if engine_type == "aws":
        credential_type = settings.get("credential_type", "iam_user")
        if credential_type not in AWS_CREDENTIAL_TYPES:
            raise field_error("credential_type", f"one of {', '.join(AWS_CREDENTIAL_TYPES)}")
        checked["credential_type"] = credential_type
        if credential_type == "iam_user":
            checked["policy_arns"] = _string_list(settings.get("policy_arns"), "policy_arns", pattern=_ARN)
            checked["iam_groups"] = _string_list(settings.get("iam_groups"), "iam_groups",
                                                 pattern=re.compile(r"[\w+=,.@-]{1,128}"))
            if settings.get("permissions_boundary_arn") is not None:
                checked["permissions_boundary_arn"] = _string_list(
                    [settings["permissions_boundary_arn"]], "permissions_boundary_arn", pattern=_ARN)[0]
        else:
            role_arn = settings.get("role_arn")
            if not isinstance(role_arn, str) or not _ARN.fullmatch(role_arn):
                raise field_error("role_arn", "the ARN of the IAM role to assume")
            checked["role_arn"] = role_arn
        document = _policy_document(settings.get("policy_document"), "policy_document")
        if document is not None:
            checked["policy_document"] = document
        if credential_type == "iam_user" and not (checked["policy_arns"] or document or checked["iam_groups"]):
            raise field_error("policy_arns", "an iam_user role grants something: policy_arns, policy_document or "
                                             "iam_groups")
    elif engine_type == "ssh":
        cert_type = settings.get("cert_type", "user")
        if cert_type not in SSH_CERT_TYPES:
            raise field_error("cert_type", f"one of {', '.join(SSH_CERT_TYPES)}")
        checked["cert_type"] = cert_type
        principal = re.compile(r"[A-Za-z0-9._@*-]{1,255}")
        allowed = _string_list(settings.get("allowed_users"), "allowed_users", pattern=principal)
        if not allowed and cert_type == "user":
            raise field_error("allowed_users", "the principals certificates may name (\"*\" for any)")
        checked["allowed_users"] = allowed
        default_user = settings.get("default_user")
        if default_user is not None:
            checked["default_user"] = _string_list([default_user], "default_user", pattern=principal)[0]
        domains = _string_list(settings.get("allowed_domains"), "allowed_domains",
                               pattern=re.compile(r"\*|[A-Za-z0-9._-]{1,253}"))
        if domains:
            checked["allowed_domains"] = domains
        if cert_type == "host" and not domains:
            raise field_error("allowed_domains", "the host names host certificates may name (\"*\" for any)")
        for key in ("extensions", "critical_options"):
            mapping = _string_map(settings.get(key), key)
            if mapping is not None:
                checked[key] = mapping
    return checked


ROLE_SETTING_KEYS = {
    "aws": ("credential_type", "policy_arns", "policy_document", "iam_groups", "permissions_boundary_arn", "role_arn"),
    "ssh": ("cert_type", "allowed_users", "allowed_domains", "default_user", "extensions", "critical_options"),
}


def check_role(engine_type: str, body: Mapping[str, Any], engine_max_ttl: timedelta) -> dict[str, Any]:
    """A role as stored, from what a request gave (every field; a PATCH merges first)."""
    database = engine_type.startswith("database.")
    allowed = (("name", "description", "default_ttl", "max_ttl", "max_leases", "username_template")
               + (("creation_statements", "revocation_statements", "renew_statements") if database else ())
               + ROLE_SETTING_KEYS.get(engine_type, ()))
    unknown = sorted(str(key) for key in body if key not in allowed)
    if unknown:
        raise field_error(unknown[0][:64], f"unknown for a {engine_type} role (known: {', '.join(allowed)})")
    max_ttl = check_ttl(body.get("max_ttl"), "max_ttl", default=None, ceiling=engine_max_ttl)
    default_ttl = check_ttl(body.get("default_ttl"), "default_ttl", default=None, ceiling=max_ttl or engine_max_ttl)
    max_leases = body.get("max_leases")
    if max_leases is not None and (not isinstance(max_leases, int) or isinstance(max_leases, bool)
                                   or not 1 <= max_leases <= 10_000_000):
        raise field_error("max_leases", "a whole number, 1-10000000 (or null: only the tenant's limit)")
    role: dict[str, Any] = {
        "description": check_description(body.get("description")),
        "default_ttl": seconds(default_ttl),
        "max_ttl": seconds(max_ttl),
        "max_leases": max_leases,
        "username_template": check_username_template(body.get("username_template")),
        "creation_statements": [],
        "revocation_statements": [],
        "renew_statements": [],
        "settings": check_role_settings(engine_type, body),
    }
    if database:
        if engine_type == "database.redis":
            rules = _statements(body.get("creation_statements"), "creation_statements", allowed=())
            for index, item in enumerate(rules):
                for token in item.split():
                    if _REDIS_FORBIDDEN.match(token):
                        raise field_error(f"creation_statements.{index}",
                                          f"the ACL rule {token[:32]} is the server's to set (the user's password and "
                                          "its on/off state)")
            role["creation_statements"] = rules
        else:
            role["creation_statements"] = _statements(body.get("creation_statements"), "creation_statements")
            role["revocation_statements"] = _statements(body.get("revocation_statements"), "revocation_statements")
            role["renew_statements"] = _statements(body.get("renew_statements"), "renew_statements")
            if role["creation_statements"] and not any(
                re.search(r"\{\{\s*(name|username)\s*\}\}", s) for s in role["creation_statements"]
            ):
                raise field_error("creation_statements", "must create the user {{name}}")
    return role


# ---- generated values ---------------------------------------------------------------------------------------------


def render_username(
    template: str, *, engine_type: str, engine: str, role: str, display_name: str, random: str, at: datetime
) -> str:
    """The user name a lease gets: the template filled in, lower case, every character outside ``a-z0-9_`` made
    ``_``, starting with a letter, cut to the target's limit keeping the random part (which makes it unique)."""
    values = {"engine": engine, "role": role, "display_name": display_name, "random": random,
              "unix_time": str(int(at.timestamp()))}
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template).lower()
    text = _USERNAME_CHARACTER.sub("_", text)
    if not text[:1].isalpha():
        text = "v" + text
    limit = USERNAME_LIMITS[engine_type]
    if len(text) > limit:
        text = text[: limit - len(random) - 1] + "_" + random
    return text


def display_name_of(identity_id: str) -> str:
    """The caller's identity as a user-name part: ``sa:reporting-service`` -> ``reporting_service`` (24 at most)."""
    return _USERNAME_CHARACTER.sub("_", identity_id.split(":", 1)[-1].lower())[:24]


# ---- the engine aggregate -----------------------------------------------------------------------------------------


class DynamicEngine(Aggregate):
    @staticmethod
    def create_id(engine_id: str) -> UUID:
        return engine_stream_id(engine_id)

    class Created(Aggregate.Created):
        engine_id: str
        tenant_id: str
        partner_id: str
        name: str
        engine_type: str
        description: str | None
        config: dict[str, Any]
        default_ttl: int
        max_ttl: int
        root_rotation_period: int | None
        ca_public_key: str | None
        ca_key_ciphertext: bytes | None
        ca_key_id: str | None
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, engine_id: str, tenant_id: str, partner_id: str, name: str, engine_type: str, description: str | None,
        config: dict[str, Any], default_ttl: int, max_ttl: int, root_rotation_period: int | None,
        ca_public_key: str | None, ca_key_ciphertext: bytes | None, ca_key_id: str | None, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.engine_id = engine_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.engine_type = engine_type
        self.description = description
        self.config = config
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.root_rotation_period = root_rotation_period
        self.ca_public_key = ca_public_key
        self.ca_key_ciphertext = ca_key_ciphertext
        self.ca_key_id = ca_key_id
        self.roles: dict[str, dict[str, Any]] = {}
        self.root_rotated_at: datetime | None = None
        self.deleted = False

    def update(
        self, *, description: str | None, config: dict[str, Any], default_ttl: int, max_ttl: int,
        root_rotation_period: int | None, at: datetime, actor: str, request_id: str | None,
    ) -> bool:
        if (description, config, default_ttl, max_ttl, root_rotation_period) == (
            self.description, self.config, self.default_ttl, self.max_ttl, self.root_rotation_period
        ):
            return False
        self._updated(description=description, config=config, default_ttl=default_ttl, max_ttl=max_ttl,
                      root_rotation_period=root_rotation_period, at=at, actor=actor, request_id=request_id)
        return True

    class Updated(Aggregate.Event):
        description: str | None
        config: dict[str, Any]
        default_ttl: int
        max_ttl: int
        root_rotation_period: int | None
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, description: str | None, config: dict[str, Any], default_ttl: int, max_ttl: int,
        root_rotation_period: int | None, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.description = description
        self.config = config
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.root_rotation_period = root_rotation_period

    def write_role(
        self, name: str, role: dict[str, Any], *, creating: bool, at: datetime, actor: str, request_id: str | None
    ) -> bool:
        """Create (``creating``: 409 ``role_exists`` if it does) or replace a role; False when nothing changed."""
        current = self.roles.get(name)
        if creating and current is not None:
            raise RoleExists(f"The engine already has a role named {name}", role=name)
        if not creating and current is None:
            raise RoleNotFound(f"The engine has no role named {name}", role=name)
        if creating and len(self.roles) >= MAX_ROLES:
            raise field_error("name", f"an engine has at most {MAX_ROLES} roles")
        if current == role:
            return False
        self._role_written(name=name, role=role, at=at, actor=actor, request_id=request_id)
        return True

    class RoleWritten(Aggregate.Event):
        name: str
        role: dict[str, Any]
        at: datetime
        actor: str
        request_id: str | None

    @event(RoleWritten)
    def _role_written(self, name: str, role: dict[str, Any], at: datetime, actor: str, request_id: str | None) -> None:
        self.roles[name] = role

    def role(self, name: str) -> dict[str, Any]:
        role = self.roles.get(name)
        if role is None:
            raise RoleNotFound(f"The engine {self.name} has no role named {name}", role=name[:64])
        return role

    def delete_role(self, name: str, *, at: datetime, actor: str, request_id: str | None) -> None:
        self.role(name)
        self._role_deleted(name=name, at=at, actor=actor, request_id=request_id)

    class RoleDeleted(Aggregate.Event):
        name: str
        at: datetime
        actor: str
        request_id: str | None

    @event(RoleDeleted)
    def _role_deleted(self, name: str, at: datetime, actor: str, request_id: str | None) -> None:
        del self.roles[name]

    def lease_terms(self, role_name: str, requested: timedelta | None, at: datetime) -> tuple[datetime, datetime]:
        """When a new lease of ``role_name`` ends, and the latest it may be renewed to: the requested ttl (else the
        role's default, else the engine's), never past the role's max_ttl (else the engine's)."""
        role = self.role(role_name)
        maximum = timedelta(seconds=role["max_ttl"] or self.max_ttl)
        maximum = min(maximum, timedelta(seconds=self.max_ttl))
        default = timedelta(seconds=role["default_ttl"] or self.default_ttl)
        ttl = min(requested or default, maximum)
        return at + ttl, at + maximum

    def root_rotated(self, *, root_version: int, at: datetime, actor: str, request_id: str | None) -> None:
        self._root_rotated(root_version=root_version, at=at, actor=actor, request_id=request_id)

    class RootRotated(Aggregate.Event):
        root_version: int
        at: datetime
        actor: str
        request_id: str | None

    @event(RootRotated)
    def _root_rotated(self, root_version: int, at: datetime, actor: str, request_id: str | None) -> None:
        self.root_rotated_at = at

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> str | None:
        """Delete; returns the data key of the ssh CA key, if any (the command destroys it)."""
        self._deleted(at=at, actor=actor, request_id=request_id)
        return self.ca_key_id

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True


# ---- the lease aggregate ------------------------------------------------------------------------------------------

ACTIVE, REVOKING, REVOKED = "active", "revoking", "revoked"
# Why a lease ended (``Lease.Revoked.reason``).
REVOKE_REASONS = ("requested", "prefix", "expired", "creation_failed", "engine_deleted")


def renewable_of(engine_type: str, role: Mapping[str, Any]) -> bool:
    """Whether leases of the role can be renewed: not ssh certificates or assumed-role STS credentials, whose
    lifetime is written into the credential itself."""
    if engine_type == "ssh":
        return False
    return not (engine_type == "aws" and role.get("settings", {}).get("credential_type") == "assumed_role")


def retry_delay(attempts: int) -> timedelta:
    """The wait before revocation attempt ``attempts + 1`` of a target that failed ``attempts`` times."""
    return min(RETRY_CAP, RETRY_FIRST * (2 ** min(max(attempts - 1, 0), 20)))


class Lease(Aggregate):
    @staticmethod
    def create_id(lease_id: str) -> UUID:
        return lease_stream_id(lease_id)

    class Granted(Aggregate.Created):
        lease_id: str
        tenant_id: str
        partner_id: str
        engine_id: str
        engine_name: str
        engine_type: str
        role_name: str
        username: str
        issued_at: datetime
        expires_at: datetime
        max_expires_at: datetime
        renewable: bool
        requested_by: str
        request_id: str | None

    @event(Granted)
    def __init__(
        self, lease_id: str, tenant_id: str, partner_id: str, engine_id: str, engine_name: str, engine_type: str,
        role_name: str, username: str, issued_at: datetime, expires_at: datetime, max_expires_at: datetime,
        renewable: bool, requested_by: str, request_id: str | None,
    ) -> None:
        self.lease_id = lease_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.engine_id = engine_id
        self.engine_name = engine_name
        self.engine_type = engine_type
        self.role_name = role_name
        self.username = username
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.max_expires_at = max_expires_at
        self.renewable = renewable
        self.requested_by = requested_by
        self.state = ACTIVE
        self.attempts = 0
        self.revoke_reason: str | None = None

    def renew(self, increment: timedelta | None, *, at: datetime, actor: str, request_id: str | None) -> datetime:
        """Extend to ``at + increment`` (the lease's original ttl when None), never past ``max_expires_at``."""
        if self.state != ACTIVE:
            raise LeaseNotRenewable("The lease is revoked", lease_id=self.lease_id, state=self.state)
        if at >= self.expires_at:
            raise LeaseNotRenewable("The lease has expired", lease_id=self.lease_id)
        if not self.renewable:
            raise LeaseNotRenewable("This kind of credential cannot be renewed; request a new one",
                                    lease_id=self.lease_id)
        ttl = increment if increment is not None else self.expires_at - self.issued_at
        new_expiry = min(at + ttl, self.max_expires_at)
        if new_expiry > self.expires_at:
            self._renewed(expires_at=new_expiry, at=at, actor=actor, request_id=request_id)
        return self.expires_at

    class Renewed(Aggregate.Event):
        expires_at: datetime
        at: datetime
        actor: str
        request_id: str | None

    @event(Renewed)
    def _renewed(self, expires_at: datetime, at: datetime, actor: str, request_id: str | None) -> None:
        self.expires_at = expires_at

    def revoke(self, reason: str, *, at: datetime, actor: str, request_id: str | None) -> bool:
        """Record that the credential is gone from the target; False (nothing recorded) when it already was."""
        if self.state == REVOKED:
            return False
        self._revoked(reason=self.revoke_reason or reason, at=at, actor=actor, request_id=request_id)
        return True

    class Revoked(Aggregate.Event):
        reason: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Revoked)
    def _revoked(self, reason: str, at: datetime, actor: str, request_id: str | None) -> None:
        self.state = REVOKED
        self.revoke_reason = reason

    def revocation_failed(self, reason: str, error: str, *, at: datetime, actor: str) -> datetime:
        """A revocation the target refused or did not answer: the lease stays until a retry succeeds (``revoking``);
        returns when to try again."""
        if self.state == REVOKED:
            raise ValueError("a revoked lease cannot fail to be revoked")
        next_attempt = at + retry_delay(self.attempts + 1)
        self._revocation_failed(reason=self.revoke_reason or reason, error=error[:500], attempts=self.attempts + 1,
                                next_attempt_at=next_attempt, at=at, actor=actor)
        return next_attempt

    class RevocationFailed(Aggregate.Event):
        reason: str
        error: str
        attempts: int
        next_attempt_at: datetime
        at: datetime
        actor: str

    @event(RevocationFailed)
    def _revocation_failed(
        self, reason: str, error: str, attempts: int, next_attempt_at: datetime, at: datetime, actor: str
    ) -> None:
        self.state = REVOKING
        self.attempts = attempts
        self.revoke_reason = reason

