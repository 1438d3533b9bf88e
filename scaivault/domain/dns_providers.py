"""DNS providers (spec reference/dns-providers): where a tenant's zones are hosted, so ACME DNS-01 challenges can write
and remove their ``_acme-challenge`` TXT records. Decisions where the spec is silent: docs/dns-providers.md.

A provider is an aggregate with its own stream (``dnsp_`` id). Its credentials never enter an event in plaintext:
the command checks them (``check_credentials``), seals them as one JSON document under a data key of the tenant
(``scaivault/crypto/dns_credentials.py``) and the events carry the ciphertext, the data key's id and the *names* of
the fields stored (``credential_fields``), which is all an answer ever shows of them.

``managed_zones`` are zone names; ``*.acme.example`` stands for the zone ``acme.example`` too (a wildcard
certificate's name is validated in the apex zone's ``_acme-challenge``). Names are stored in their canonical form:
lower case, no trailing dot, IDNA (``xn--``) labels for non-ASCII names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import ValidationFailed
from scaivault.domain.labels import (
    CONTROL_CHARACTERS,
    check_description,
    check_is_active,
    check_name,
    field_error,
)
from scaivault.domain.webhooks import check_url
from scaivault.egress import IPNetwork

_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/dns-provider")
PROVIDER_TYPES = ("scaidns", "cloudflare", "route53", "azure", "google", "digitalocean", "powerdns")
MAX_ZONES = 100
MAX_CREDENTIAL_LENGTH = 16384  # a Google service-account JSON key is about 2.3 KB; nothing else comes close
MAX_CONFIG_VALUE_LENGTH = 2048
MIN_TTL, MAX_TTL = 1, 86400
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def dns_provider_stream_id(provider_id: str) -> UUID:
    return uuid5(_NAMESPACE, provider_id)


_invalid = field_error


@dataclass(frozen=True)
class FieldRule:
    """One credential or config field: ``required``; ``default`` filled in when absent; ``kind`` what it holds
    (``text``, ``url``, ``api_key`` (ScaiDNS ``sdk_`` keys), ``json`` (an object given as JSON text or object),
    ``ttl``, ``region``)."""

    required: bool = False
    default: str | int | None = None
    kind: str = "text"


CREDENTIALS: dict[str, dict[str, FieldRule]] = {
    "scaidns": {"base_url": FieldRule(True, kind="url"), "api_key": FieldRule(True, kind="api_key")},
    "cloudflare": {"api_token": FieldRule(True)},
    "route53": {
        # Both keys or neither: without them the server's own role (instance profile, IRSA) is used.
        "access_key_id": FieldRule(), "secret_access_key": FieldRule(), "session_token": FieldRule(),
        "region": FieldRule(default="us-east-1", kind="region"),
    },
    "azure": {
        "subscription_id": FieldRule(True), "resource_group": FieldRule(True), "tenant_id": FieldRule(True),
        "client_id": FieldRule(True), "client_secret": FieldRule(True),
    },
    "google": {"project_id": FieldRule(True), "service_account_json": FieldRule(True, kind="json")},
    "digitalocean": {"api_token": FieldRule(True)},
    "powerdns": {
        "api_url": FieldRule(True, kind="url"), "api_key": FieldRule(True), "server_id": FieldRule(default="localhost"),
    },
}

_COMMON_CONFIG = {"ttl": FieldRule(kind="ttl")}
CONFIG: dict[str, dict[str, FieldRule]] = {
    "scaidns": {**_COMMON_CONFIG},
    "cloudflare": {**_COMMON_CONFIG, "api_base_url": FieldRule(kind="url")},
    "route53": {**_COMMON_CONFIG, "endpoint_url": FieldRule(kind="url")},
    "azure": {**_COMMON_CONFIG, "api_base_url": FieldRule(kind="url"), "login_base_url": FieldRule(kind="url")},
    "google": {**_COMMON_CONFIG, "api_base_url": FieldRule(kind="url"), "token_url": FieldRule(kind="url")},
    "digitalocean": {**_COMMON_CONFIG, "api_base_url": FieldRule(kind="url")},
    "powerdns": {**_COMMON_CONFIG},
}


def check_provider_type(provider_type: object) -> str:
    if not isinstance(provider_type, str) or provider_type not in PROVIDER_TYPES:
        raise _invalid("provider_type", f"must be one of {', '.join(PROVIDER_TYPES)}")
    return provider_type


def canonical_name(name: str) -> str:
    """A DNS name as stored and compared: lower case, no trailing dot, IDNA labels. ``ValueError`` when it is not a
    host name (labels of letters, digits, ``-`` and ``_``, 1-63 each, 253 in all)."""
    text = name.strip().rstrip(".")
    if not text or CONTROL_CHARACTERS.search(text) or " " in text:
        raise ValueError("not a DNS name")
    try:
        ascii_name = text.encode("idna").decode("ascii").lower() if not text.isascii() else text.lower()
    except UnicodeError:
        raise ValueError("not a DNS name") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or any(not _LABEL.match(label) for label in labels):
        raise ValueError("not a DNS name")
    return ascii_name


def check_managed_zones(zones: object) -> list[str]:
    """Canonical zone names (``*.`` kept where given), without duplicates, at least one."""
    if not isinstance(zones, list) or not zones:
        raise _invalid("managed_zones", "a non-empty list of zone names (e.g. acme.example, *.acme.example)")
    if len(zones) > MAX_ZONES:
        raise _invalid("managed_zones", f"at most {MAX_ZONES} zones")
    checked: list[str] = []
    for index, zone in enumerate(zones):
        if not isinstance(zone, str):
            raise _invalid(f"managed_zones.{index}", "a zone name")
        wildcard = zone.startswith("*.")
        try:
            name = canonical_name(zone[2:] if wildcard else zone)
        except ValueError:
            raise _invalid(f"managed_zones.{index}", "not a valid zone name") from None
        if "." not in name:
            raise _invalid(f"managed_zones.{index}", "a zone below a top-level domain (e.g. acme.example)")
        checked.append(f"*.{name}" if wildcard else name)
    return list(dict.fromkeys(checked))


def zones_of(managed_zones: Iterable[str]) -> list[str]:
    """The zones themselves: ``*.acme.example`` is the zone ``acme.example``."""
    return list(dict.fromkeys(z[2:] if z.startswith("*.") else z for z in managed_zones))


def zone_for(managed_zones: Iterable[str], fqdn: str) -> str | None:
    """The managed zone ``fqdn`` is in (the longest that matches: a delegated child zone wins), or None."""
    try:
        name = canonical_name(fqdn)
    except ValueError:
        return None
    matches = [zone for zone in zones_of(managed_zones) if name == zone or name.endswith("." + zone)]
    return max(matches, key=len) if matches else None


def _text(value: object, field: str, *, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _invalid(field, f"a non-empty string of at most {limit} characters")
    if CONTROL_CHARACTERS.search(value):
        raise _invalid(field, "may not contain control characters")
    return value


def _url(value: object, field: str, http_allowed: Sequence[IPNetwork]) -> str:
    """An https URL; http only to an IP literal the operator allows (as webhook URLs, ``check_url``)."""
    try:
        return check_url(value, http_allowed).rstrip("/")
    except ValidationFailed as invalid:
        messages = [entry.get("message", "") for entry in invalid.details.get("fields", [])]
        raise _invalid(field, messages[0] if messages else "not a valid URL") from None


def _check_fields(
    values: object, rules: Mapping[str, FieldRule], prefix: str, http_allowed: Sequence[IPNetwork], *,
    allow_json: bool,
) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise _invalid(prefix, "an object")
    unknown = sorted(set(values) - set(rules))
    if unknown:
        raise _invalid(f"{prefix}.{str(unknown[0])[:64]}", f"unknown field (known: {', '.join(rules)})")
    checked: dict[str, Any] = {}
    for key, rule in rules.items():
        value = values.get(key)
        field = f"{prefix}.{key}"
        if value is None:
            if rule.required:
                raise _invalid(field, "required")
            if rule.default is not None:
                checked[key] = rule.default
            continue
        if rule.kind == "ttl":
            if not isinstance(value, int) or isinstance(value, bool) or not MIN_TTL <= value <= MAX_TTL:
                raise _invalid(field, f"a whole number of seconds, {MIN_TTL}-{MAX_TTL}")
            checked[key] = value
        elif rule.kind == "json" and allow_json and isinstance(value, dict):
            checked[key] = _text(json.dumps(value), field, limit=MAX_CREDENTIAL_LENGTH)
        elif rule.kind == "url":
            checked[key] = _url(value, field, http_allowed)
        else:
            limit = MAX_CREDENTIAL_LENGTH if prefix == "credentials" else MAX_CONFIG_VALUE_LENGTH
            checked[key] = _text(value, field, limit=limit)
        if rule.kind == "api_key" and not checked[key].startswith("sdk_"):
            raise _invalid(field, "a ScaiDNS API key (prefix sdk_)")
        if rule.kind == "region" and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", checked[key]):
            raise _invalid(field, "an AWS region (e.g. us-east-1)")
        if rule.kind == "json":
            _check_service_account(checked[key], field)
    return checked


def _check_service_account(text: str, field: str) -> None:
    try:
        document = json.loads(text)
    except ValueError:
        raise _invalid(field, "a service-account key in JSON") from None
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) and document.get(k) for k in ("client_email", "private_key")
    ):
        raise _invalid(field, "a service-account key (JSON with client_email and private_key)")


def check_credentials(
    provider_type: str, credentials: object, http_allowed: Sequence[IPNetwork] = ()
) -> dict[str, Any]:
    """The credentials as stored (defaults filled in). Errors name the field, never its value."""
    checked = _check_fields(credentials, CREDENTIALS[provider_type], "credentials", http_allowed, allow_json=True)
    if provider_type == "route53" and ("access_key_id" in checked) != ("secret_access_key" in checked):
        missing = "secret_access_key" if "access_key_id" in checked else "access_key_id"
        raise _invalid(f"credentials.{missing}", "access_key_id and secret_access_key go together")
    if provider_type == "route53" and "session_token" in checked and "access_key_id" not in checked:
        raise _invalid("credentials.session_token", "only with access_key_id and secret_access_key")
    return checked


def check_config(provider_type: str, config: object, http_allowed: Sequence[IPNetwork] = ()) -> dict[str, Any]:
    if config is None:
        return {}
    return _check_fields(config, CONFIG[provider_type], "config", http_allowed, allow_json=False)


def credential_fields(credentials: Mapping[str, Any]) -> list[str]:
    """What an answer may show of stored credentials: the names of the fields, sorted."""
    return sorted(credentials)


class DnsProvider(Aggregate):
    @staticmethod
    def create_id(provider_id: str) -> UUID:
        return dns_provider_stream_id(provider_id)

    @classmethod
    def create(
        cls, *, provider_id: str, tenant_id: str, partner_id: str, name: object, provider_type: str,
        description: object, config: dict[str, Any], managed_zones: object, is_active: object,
        credential_fields: list[str], credentials_ciphertext: bytes, credentials_key_id: str, at: datetime,
        actor: str, request_id: str | None,
    ) -> DnsProvider:
        """``provider_type`` and ``config`` checked, credentials checked and sealed, by the command."""
        return cls(
            provider_id=provider_id, tenant_id=tenant_id, partner_id=partner_id, name=check_name(name),
            provider_type=check_provider_type(provider_type), description=check_description(description),
            config=config, managed_zones=check_managed_zones(managed_zones), is_active=check_is_active(is_active),
            credential_fields=credential_fields, credentials_ciphertext=credentials_ciphertext,
            credentials_key_id=credentials_key_id, at=at, actor=actor, request_id=request_id,
        )

    class Created(Aggregate.Created):
        provider_id: str
        tenant_id: str
        partner_id: str
        name: str
        provider_type: str
        description: str | None
        config: dict[str, Any]
        managed_zones: list[str]
        is_active: bool
        credential_fields: list[str]
        credentials_ciphertext: bytes
        credentials_key_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, provider_id: str, tenant_id: str, partner_id: str, name: str, provider_type: str,
        description: str | None, config: dict[str, Any], managed_zones: list[str], is_active: bool,
        credential_fields: list[str], credentials_ciphertext: bytes, credentials_key_id: str, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.provider_id = provider_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.provider_type = provider_type
        self.description = description
        self.config = config
        self.managed_zones = managed_zones
        self.is_active = is_active
        self.credential_fields = credential_fields
        self.credentials_ciphertext = credentials_ciphertext
        self.credentials_key_id = credentials_key_id
        self.deleted = False

    def update(
        self, *, name: object, description: object, config: dict[str, Any], managed_zones: object, is_active: object,
        at: datetime, actor: str, request_id: str | None,
    ) -> bool:
        """Set every field to the given value (a PATCH passes the current value of what it leaves alone); returns
        whether anything changed (no event when nothing did)."""
        new_name, new_description = check_name(name), check_description(description)
        zones, active = check_managed_zones(managed_zones), check_is_active(is_active)
        if (new_name, new_description, config, zones, active) == (
            self.name, self.description, self.config, self.managed_zones, self.is_active
        ):
            return False
        self._updated(
            name=new_name, description=new_description, config=config, managed_zones=zones, is_active=active, at=at,
            actor=actor, request_id=request_id,
        )
        return True

    class Updated(Aggregate.Event):
        name: str
        description: str | None
        config: dict[str, Any]
        managed_zones: list[str]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, name: str, description: str | None, config: dict[str, Any], managed_zones: list[str], is_active: bool,
        at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.name = name
        self.description = description
        self.config = config
        self.managed_zones = managed_zones
        self.is_active = is_active

    def replace_credentials(
        self, *, credential_fields: list[str], credentials_ciphertext: bytes, credentials_key_id: str, at: datetime,
        actor: str, request_id: str | None,
    ) -> str:
        """Use the new credentials from now on; returns the data key of the replaced ones (the command destroys
        it)."""
        replaced = self.credentials_key_id
        self._credentials_replaced(
            credential_fields=credential_fields, credentials_ciphertext=credentials_ciphertext,
            credentials_key_id=credentials_key_id, at=at, actor=actor, request_id=request_id,
        )
        return replaced

    class CredentialsReplaced(Aggregate.Event):
        credential_fields: list[str]
        credentials_ciphertext: bytes
        credentials_key_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(CredentialsReplaced)
    def _credentials_replaced(
        self, credential_fields: list[str], credentials_ciphertext: bytes, credentials_key_id: str, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.credential_fields = credential_fields
        self.credentials_ciphertext = credentials_ciphertext
        self.credentials_key_id = credentials_key_id

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> str:
        """Delete; returns the data key of its credentials (the command destroys it)."""
        self._deleted(at=at, actor=actor, request_id=request_id)
        return self.credentials_key_id

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True
