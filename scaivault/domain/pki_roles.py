"""PKI roles: what a holder of ``pki:issue`` may get certified under a role (spec reference/pki, "PKI Roles").

A role's settings are stored with every default filled in, so what a role allows never changes under it when a
default does. Names requested are checked by ``scaivault.domain.pki_names``; lifetimes, key shapes and usages here.
A role never widens what its CA may sign: a leaf never outlives its issuer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.errors import InvalidDuration, ValidationFailed
from scaivault.domain.labels import field_error
from scaivault.domain.pki_names import PRIVATE_USE_TLDS, NameRules

ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ROLE_KEY_TYPES = ("ec", "rsa", "ed25519", "any")
KEY_BITS = {"rsa": (2048, 3072, 4096), "ec": (256, 384), "ed25519": (0,)}
DEFAULT_KEY_BITS = {"rsa": 2048, "ec": 256, "ed25519": 0}
KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
)
EXT_KEY_USAGES = ("server_auth", "client_auth", "code_signing", "email_protection", "time_stamping")
MAX_ALLOWED_DOMAINS = 256
MAX_LEAF_TTL = timedelta(days=3650)
DEFAULTS: dict[str, Any] = {
    "allowed_domains": [],
    "allow_subdomains": False,
    "allow_bare_domains": True,
    "allow_wildcard_certificates": False,
    "allow_localhost": False,
    "allow_ip_sans": False,
    "allowed_ip_ranges": [],
    "allow_any_name": False,
    "enforce_hostnames": True,
    "key_type": "ec",
    "key_bits": None,
    "ttl": "72h",
    "max_ttl": "720h",
    "key_usage": ["digital_signature", "key_encipherment"],
    "ext_key_usage": ["server_auth", "client_auth"],
    "require_cn": True,
    "store_private_keys": False,
    "auto_renew": False,
    "renew_before": None,
    "description": None,
}
SETTINGS = tuple(DEFAULTS)


def check_role_name(name: object) -> str:
    if not isinstance(name, str) or not ROLE_NAME.match(name):
        raise field_error(
            "name", "1-128 characters: letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def _bool(settings: Mapping[str, Any], key: str) -> bool:
    value = settings[key]
    if not isinstance(value, bool):
        raise field_error(key, "must be true or false")
    return value


def _strings(settings: Mapping[str, Any], key: str, *, allowed: tuple[str, ...] | None = None,
             limit: int = MAX_ALLOWED_DOMAINS) -> list[str]:
    value = settings[key]
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) and v for v in value):
        raise field_error(key, f"must be a list of at most {limit} non-empty strings")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise field_error(key, f"unknown value {unknown[0][:64]!r}; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(value))


def _duration(settings: Mapping[str, Any], key: str, *, optional: bool = False) -> timedelta | None:
    value = settings[key]
    if value is None and optional:
        return None
    try:
        duration = parse_duration(value)
    except InvalidDuration as exc:
        raise field_error(key, f"must be a duration such as '72h' ({exc.message})") from None
    if duration <= timedelta(0) or duration > MAX_LEAF_TTL:
        raise field_error(key, "must be positive and at most 3650d")
    return duration


def _domain_pattern(pattern: str) -> str:
    text = pattern.strip().lower()
    if not text or len(text) > 253 or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7e for c in text):
        raise field_error("allowed_domains", f"{pattern[:64]!r} is not a domain name or '*.' pattern")
    rest = text[2:] if text.startswith("*.") else text
    if "*" in rest or rest.endswith(".") or rest.startswith(".") or ".." in rest:
        raise field_error(
            "allowed_domains", f"{pattern[:64]!r}: '*' only as the whole leftmost label ('*.example.com')"
        )
    if text.startswith("*.") and "." not in rest and rest not in PRIVATE_USE_TLDS:
        # Name matching skips such an entry (it would cover a whole top-level domain): refuse it rather than store
        # a pattern that silently allows nothing.
        raise field_error("allowed_domains", f"{pattern[:64]!r}: a wildcard needs two labels after '*.'")
    return text


def normalize_role_settings(given: Mapping[str, Any], *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting, validated: ``given`` over ``base`` (the current settings for a PATCH) over the defaults."""
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise field_error(unknown[0], "is not a role setting")
    settings = {**DEFAULTS, **(base or {}), **given}
    out: dict[str, Any] = {}
    out["allowed_domains"] = [_domain_pattern(p) for p in _strings(settings, "allowed_domains")]
    for key in ("allow_subdomains", "allow_bare_domains", "allow_wildcard_certificates", "allow_localhost",
                "allow_ip_sans", "allow_any_name", "enforce_hostnames", "require_cn", "store_private_keys",
                "auto_renew"):
        out[key] = _bool(settings, key)
    ranges = _strings(settings, "allowed_ip_ranges")
    try:
        out["allowed_ip_ranges"] = [str(ipaddress.ip_network(r, strict=False)) for r in ranges]
    except ValueError:
        raise field_error("allowed_ip_ranges", "must be CIDR ranges such as '10.0.0.0/8'") from None
    key_type = settings["key_type"]
    if key_type not in ROLE_KEY_TYPES:
        raise field_error("key_type", f"must be one of {', '.join(ROLE_KEY_TYPES)}")
    out["key_type"] = key_type
    key_bits = settings["key_bits"]
    if key_type == "any":
        if key_bits not in (None, 0):
            raise field_error("key_bits", "must be omitted when key_type is 'any'")
        out["key_bits"] = None
    else:
        if key_bits is None or (key_type == "ed25519" and key_bits == 256):
            key_bits = DEFAULT_KEY_BITS[key_type]
        if isinstance(key_bits, bool) or key_bits not in KEY_BITS[key_type]:
            raise field_error("key_bits", f"for {key_type}: one of {', '.join(map(str, KEY_BITS[key_type]))}")
        out["key_bits"] = key_bits
    ttl = _duration(settings, "ttl")
    max_ttl = _duration(settings, "max_ttl")
    assert ttl is not None and max_ttl is not None
    if "ttl" not in given and ttl > max_ttl and "max_ttl" in given:
        ttl = max_ttl  # a role given only a short max_ttl gets it as its default too
    if ttl > max_ttl:
        raise field_error("ttl", "must not exceed max_ttl")
    out["ttl"] = format_duration(ttl)
    out["max_ttl"] = format_duration(max_ttl)
    out["key_usage"] = _strings(settings, "key_usage", allowed=KEY_USAGES)
    out["ext_key_usage"] = _strings(settings, "ext_key_usage", allowed=EXT_KEY_USAGES)
    renew_before = _duration(settings, "renew_before", optional=True)
    if renew_before is not None and renew_before >= max_ttl:
        raise field_error("renew_before", "must be shorter than max_ttl")
    out["renew_before"] = format_duration(renew_before) if renew_before is not None else None
    description = settings["description"]
    if description is not None and (not isinstance(description, str) or len(description) > 1024):
        raise field_error("description", "a string of at most 1024 characters")
    out["description"] = description
    if not out["allowed_domains"] and not out["allow_any_name"] and not out["allow_ip_sans"] \
            and not out["allow_localhost"]:
        raise field_error("allowed_domains", "a role must allow some names (allowed_domains, allow_ip_sans, "
                                             "allow_localhost or allow_any_name)")
    return out


def name_rules(settings: Mapping[str, Any]) -> NameRules:
    return NameRules(
        allowed_domains=tuple(settings["allowed_domains"]),
        allow_subdomains=settings["allow_subdomains"],
        allow_bare_domains=settings["allow_bare_domains"],
        allow_wildcard_certificates=settings["allow_wildcard_certificates"],
        allow_localhost=settings["allow_localhost"],
        allow_ip_sans=settings["allow_ip_sans"],
        allowed_ip_ranges=tuple(settings["allowed_ip_ranges"]),
        allow_any_name=settings["allow_any_name"],
        enforce_hostnames=settings["enforce_hostnames"],
    )


def leaf_lifetime(settings: Mapping[str, Any], requested: object) -> timedelta:
    """The lifetime of a leaf: the requested ``ttl`` (at most the role's ``max_ttl``) or the role's ``ttl``."""
    max_ttl = parse_duration(settings["max_ttl"])
    if requested is None:
        return parse_duration(settings["ttl"])
    try:
        ttl = parse_duration(requested)
    except InvalidDuration as exc:
        raise field_error("ttl", f"must be a duration such as '72h' ({exc.message})") from None
    if ttl <= timedelta(0):
        raise field_error("ttl", "must be positive")
    if ttl > max_ttl:
        raise ValidationFailed(
            f"ttl exceeds the role's max_ttl ({settings['max_ttl']})",
            fields=[{"field": "ttl", "message": f"at most the role's max_ttl, {settings['max_ttl']}"}],
        )
    return ttl


def key_allowed(settings: Mapping[str, Any], key_type: str, key_bits: int) -> str | None:
    """Why a key of this shape is refused under the role, or None."""
    wanted = settings["key_type"]
    if wanted == "any":
        return None
    if key_type != wanted:
        return f"the role requires {wanted} keys"
    if key_type == "rsa" and key_bits < settings["key_bits"]:
        return f"the role requires RSA keys of at least {settings['key_bits']} bits"
    if key_type == "ec" and key_bits != settings["key_bits"]:
        return f"the role requires EC P-{settings['key_bits']} keys"
    return None
