"""Which names a PKI role lets its holders put into a certificate.

The point of a role is that holding ``pki:issue`` for ``*.svc.cluster.local`` never yields a certificate for
anything else: not ``evil.com``, not ``svc.cluster.local.evil.com``, not ``x.svc.cluster.local\\x00.evil.com``, not
``*.cluster.local``, not ``billing.svc.cluster.local.``, not an IP address. So the rules are strict and fail closed:

- Names are compared as lower-case ASCII. Anything that is not printable ASCII is refused before any other step
  (before lower-casing too: ``"\\u212a".lower()`` is ``"k"``). Internationalised names must come as A-labels
  (``xn--...``), which must decode and re-encode to themselves under IDNA 2008: a Unicode lookalike never compares
  equal to an allowed domain by accident.
- No empty labels, no trailing dot (the absolute form would be a second spelling of the same name), labels of at most
  63 and names of at most 253 characters, nothing that parses as an IP address (an IP belongs in an IP SAN).
- A wildcard is the whole leftmost label (``*.x``) and nothing else: no ``a*.x``, no ``*`` elsewhere, no bare ``*``.
  A role issues one only with ``allow_wildcard_certificates``, and only when every name it covers is allowed.
- An allowed domain ``*.d`` allows exactly one more label in front of ``d`` (neither ``d`` itself nor deeper names,
  whatever ``allow_subdomains`` says); a plain ``d`` allows ``d`` (``allow_bare_domains``) and, with
  ``allow_subdomains``, names under it at any depth. An allowed entry that is itself malformed allows nothing.
- The common name, when it is present, is checked like a DNS name (or an IP address when it is one): relying parties
  that still read the CN must not find a name there the SANs could not hold. A CN that is neither (a free-form
  label such as ``Billing Service``) needs ``allow_any_name``.
- URIs and e-mail addresses are refused unless ``allow_any_name``; ``allow_any_name`` lifts the domain list, never
  the syntax rules, and wildcards still need ``allow_wildcard_certificates``.

Violations name the field as the issue API does (``common_name``, ``alt_names[i]``, ``ip_sans[i]``,
``uri_sans[i]``, ``email_sans[i]``); messages never repeat the name (it may hold control characters).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import idna

MAX_NAME_LENGTH = 253
# Top-level names reserved for private use (ICANN's .internal; RFC 6762's .local; RFC 2606's .test/.example; names
# long used on private networks). A role may allow "*.internal" (the spec's mTLS tutorial does); "*.com" never.
PRIVATE_USE_TLDS = frozenset({"internal", "local", "lan", "corp", "home", "intranet", "private", "test", "example"})
MAX_LABEL_LENGTH = 63
MAX_COMMON_NAME_LENGTH = 64
MAX_URI_LENGTH = 2048
MAX_EMAIL_LENGTH = 254

# Characters a DNS name in a certificate may hold at all (underscores only when hostnames are not enforced).
_NAME_CHARACTERS = re.compile(r"[a-z0-9._*-]+")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LOOKING = re.compile(r"[0-9]+|0x[0-9a-f]*")
_LOOSE_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_URI = re.compile(r"[a-z][a-z0-9+.-]*:[\x21-\x7e]+", re.IGNORECASE)
_EMAIL_LOCAL = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}", re.IGNORECASE)


@dataclass(frozen=True)
class NameRules:
    allowed_domains: tuple[str, ...]
    allow_subdomains: bool = False
    allow_bare_domains: bool = True
    allow_wildcard_certificates: bool = False
    allow_localhost: bool = False
    allow_ip_sans: bool = False
    allowed_ip_ranges: tuple[str, ...] = ()
    allow_any_name: bool = False
    enforce_hostnames: bool = True


def name_violations(
    rules: NameRules,
    *,
    common_name: str | None,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
    uris: Sequence[str] = (),
    emails: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Every name the role does not allow, as ``{"field": ..., "message": ...}``; empty when all are allowed."""
    violations: list[dict[str, str]] = []

    def add(field: str, message: str | None) -> None:
        if message is not None:
            violations.append({"field": field, "message": message})

    if common_name is not None:
        add("common_name", _common_name_problem(rules, common_name))
    for index, name in enumerate(dns_names):
        add(f"alt_names[{index}]", _dns_name_problem(rules, name))
    for index, address in enumerate(ip_addresses):
        add(f"ip_sans[{index}]", _ip_problem(rules, address))
    for index, uri in enumerate(uris):
        add(f"uri_sans[{index}]", _uri_problem(rules, uri))
    for index, email in enumerate(emails):
        add(f"email_sans[{index}]", _email_problem(rules, email))
    return violations


def allowed_domain_violations(
    patterns: Sequence[object], *, enforce_hostnames: bool = True, field: str = "allowed_domains"
) -> list[dict[str, str]]:
    """For a role being written: each entry of ``allowed_domains`` that could never match (so allows nothing)."""
    violations = []
    for index, pattern in enumerate(patterns):
        problem = "must be a string" if not isinstance(pattern, str) else _pattern_problem(pattern, enforce_hostnames)
        if problem is not None:
            violations.append({"field": f"{field}[{index}]", "message": problem})
    return violations


def allowed_ip_range_violations(ranges: Sequence[object], *, field: str = "allowed_ip_ranges") -> list[dict[str, str]]:
    """For a role being written: each entry of ``allowed_ip_ranges`` that is not a CIDR with its host bits zero."""
    violations = []
    for index, cidr in enumerate(ranges):
        if not isinstance(cidr, str) or _network(cidr) is None:
            message = "must be a network in CIDR form with its host bits zero, e.g. 10.0.0.0/8"
            violations.append({"field": f"{field}[{index}]", "message": message})
    return violations


def _common_name_problem(rules: NameRules, common_name: str) -> str | None:
    if not isinstance(common_name, str) or not common_name:
        return "must be a non-empty string"
    if len(common_name) > MAX_COMMON_NAME_LENGTH:
        return f"must be at most {MAX_COMMON_NAME_LENGTH} characters"
    if _parse_ip(common_name) is not None:
        return _ip_problem(rules, common_name)
    if "@" in common_name:
        return _email_problem(rules, common_name)
    if _syntax_problem(common_name, rules.enforce_hostnames) is None:
        return _dns_name_problem(rules, common_name)
    if rules.allow_any_name and _PRINTABLE_ASCII.fullmatch(common_name.replace(" ", "x")):
        # A free-form label: printable ASCII and inner spaces only, so it cannot smuggle a second name after a NUL.
        return None if common_name == common_name.strip() else "must not start or end with a space"
    return "must be a hostname the role allows (or an IP address); free-form names need allow_any_name"


def _dns_name_problem(rules: NameRules, name: str) -> str | None:
    if not isinstance(name, str):
        return "must be a string"
    problem = _syntax_problem(name, rules.enforce_hostnames)
    if problem is not None:
        return problem
    name = name.lower()
    labels = name.split(".")
    if labels[0] == "*":
        if not rules.allow_wildcard_certificates:
            return "wildcard certificates are not allowed by the role"
        if rules.allow_any_name:
            return None
        return None if _wildcard_covered(rules, labels[1:]) else "this wildcard covers names the role does not allow"
    if rules.allow_any_name or (rules.allow_localhost and name == "localhost"):
        return None
    return None if _name_allowed(rules, labels) else "the role does not allow this name"


def _name_allowed(rules: NameRules, labels: list[str]) -> bool:
    for pattern in _usable_patterns(tuple(rules.allowed_domains), rules.enforce_hostnames):
        if pattern[0] == "*":
            # Exactly one more label, whatever allow_subdomains says: "*.d" names the children of d, no more.
            if len(labels) == len(pattern) and labels[1:] == list(pattern[1:]):
                return True
        elif len(labels) == len(pattern):
            if rules.allow_bare_domains and labels == list(pattern):
                return True
        elif rules.allow_subdomains and len(labels) > len(pattern) and labels[-len(pattern) :] == list(pattern):
            return True
    return False


def _wildcard_covered(rules: NameRules, base: list[str]) -> bool:
    """Whether every name ``<label>.<base>`` is allowed, i.e. the certificate ``*.<base>`` claims nothing more."""
    for pattern in _usable_patterns(tuple(rules.allowed_domains), rules.enforce_hostnames):
        if pattern[0] == "*":
            if base == list(pattern[1:]):
                return True
        elif rules.allow_subdomains and len(base) >= len(pattern) and base[-len(pattern) :] == list(pattern):
            return True
    return False


@lru_cache(maxsize=1024)
def _usable_patterns(patterns: tuple[str, ...], enforce_hostnames: bool) -> tuple[tuple[str, ...], ...]:
    # A malformed entry is skipped, never loosened: "" or "." must not turn into "every name".
    return tuple(
        tuple(pattern.lower().split("."))
        for pattern in patterns
        if isinstance(pattern, str) and _pattern_problem(pattern, enforce_hostnames) is None
    )


def _pattern_problem(pattern: str, enforce_hostnames: bool) -> str | None:
    problem = _syntax_problem(pattern, enforce_hostnames, pattern=True)
    if problem is not None:
        return problem
    if pattern.startswith("*.") and pattern.count(".") < 2 and pattern[2:].lower() not in PRIVATE_USE_TLDS:
        return "a wildcard pattern needs at least two labels after '*.' (not a whole top-level domain)"
    return None


def _syntax_problem(name: str, enforce_hostnames: bool, *, pattern: bool = False) -> str | None:
    """Why ``name`` is not a DNS name a certificate may hold (``*`` allowed as the whole leftmost label)."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    if not name.isascii():
        return "must be ASCII: write internationalised names as A-labels (xn--...)"
    name = name.lower()
    if not _NAME_CHARACTERS.fullmatch(name):
        return "may hold only letters, digits, '-', '.' and a leading '*.'"
    if name.endswith("."):
        return "must not end with a dot"
    labels = name.split(".")
    if "" in labels:
        return "must not have empty labels"
    if "*" in name:
        if labels[0] != "*" or "*" in "".join(labels[1:]):
            return "a wildcard must be the whole leftmost label ('*.example.com')"
        if len(labels) < 3 and not (pattern and len(labels) == 2 and labels[1] in PRIVATE_USE_TLDS):
            return "a wildcard needs at least two labels after it"
    if _parse_ip(name) is not None or all(label.isdigit() for label in labels):
        return "an IP address is not a DNS name: put it in ip_sans"
    concrete = labels[1:] if labels[0] == "*" else labels
    for label in concrete:
        if enforce_hostnames:
            if not _LDH_LABEL.fullmatch(label):
                return "labels must be 1-63 letters, digits or inner hyphens"
            if label[2:4] == "--" and not _is_a_label(label):
                return "labels with '--' in the third and fourth places must be valid IDNA A-labels"
        elif not _LOOSE_LABEL.fullmatch(label):
            return "labels must be 1-63 letters, digits, '-' or '_'"
    if _NUMERIC_LOOKING.fullmatch(labels[-1]):
        # inet_aton() reads "0x7f.1" or "2130706433" as an address: such a name could mean an IP to some client.
        return "the top-level label must not be numeric"
    return None


@lru_cache(maxsize=4096)
def _is_a_label(label: str) -> bool:
    if not label.startswith("xn--"):
        return False
    try:
        return idna.encode(idna.decode(label)).decode("ascii") == label
    except (idna.IDNAError, UnicodeError, ValueError):
        return False


def _ip_problem(rules: NameRules, value: object) -> str | None:
    address = value if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address) else None
    if address is None:
        address = _parse_ip(value) if isinstance(value, str) else None
    if address is None:
        return "must be an IPv4 or IPv6 address"
    if not rules.allow_ip_sans:
        return "the role does not allow IP addresses"
    if not rules.allowed_ip_ranges:
        return None
    networks = [network for network in map(_network, rules.allowed_ip_ranges) if network is not None]
    if any(address.version == network.version and address in network for network in networks):
        return None
    return "the address is outside the role's allowed ranges"


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Zone ids ("fe80::1%eth0") name an interface of the requester's host: they cannot go into a certificate.
    if "%" in value or not value.isascii():
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "%" in cidr or not cidr.isascii() or "/" not in cidr:
        return None
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        return None


def _uri_problem(rules: NameRules, uri: object) -> str | None:
    if not isinstance(uri, str) or len(uri) > MAX_URI_LENGTH or not _URI.fullmatch(uri):
        return "must be an absolute URI of printable ASCII"
    if not rules.allow_any_name:
        return "the role does not allow URI names"
    return None


def _email_problem(rules: NameRules, email: object) -> str | None:
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH or email.count("@") != 1:
        return "must be an e-mail address"
    local, domain = email.split("@")
    if not _EMAIL_LOCAL.fullmatch(local) or "*" in domain or _syntax_problem(domain, True) is not None:
        return "must be an e-mail address with an ASCII local part and a valid domain"
    if not rules.allow_any_name:
        return "the role does not allow e-mail addresses"
    return None
