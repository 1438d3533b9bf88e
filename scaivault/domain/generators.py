"""Value generators: the recipes of secret policies, turned into fresh values and used to check written ones.

A recipe is a list of fields, each ``{"name", "generator", "config"}``. ``generate`` runs a recipe and returns the
secret's data; ``violations`` checks data a user writes against a recipe and names, per field, the rule it breaks.
``normalize_recipe`` validates a recipe and fills in every default, so a stored recipe shows its effective config and
keeps it when a default changes later.

Every random choice comes from ``secrets`` (or ``os.urandom`` beneath ``uuid.uuid4``, ``bcrypt`` and OpenSSL's key
generation): the ``random`` module is predictable and never used here. Nothing reads a clock: ``{{timestamp}}`` and
UUIDv7 take the time ``at`` from the caller.

Generators that produce a pair write two keys: the key pairs write the private key under the field's name and the
public key under ``config.public_key_field`` (default ``public_key``); ``bcrypt_hash`` writes the password under the
field's name and its hash under ``config.hash_field`` (default ``<name>_hash``).
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scaivault.domain.errors import ValidationFailed

# The symbols of `safe` need no quoting in a POSIX shell word, a URL (RFC 3986 unreserved) or a connection string
# (libpq key=value, JDBC, DSN URLs): `~` is left out because a shell expands it at the start of a word.
SAFE_SYMBOLS = "-_."
SYMBOLS = string.punctuation  # the 32 ASCII punctuation characters
CHARSETS: dict[str, str] = {
    "alphanumeric": string.ascii_letters + string.digits,
    "alpha": string.ascii_letters,
    "numeric": string.digits,
    "hex": "0123456789abcdef",
    "safe": string.ascii_letters + string.digits + SAFE_SYMBOLS,
    "symbols": SYMBOLS,
    "full": string.ascii_letters + string.digits + SYMBOLS,
}
# What each require_* flag asks for; a "symbol" is any character that is neither a letter nor a digit.
_CLASSES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "require_upper": ("an uppercase letter", lambda c: c in string.ascii_uppercase),
    "require_lower": ("a lowercase letter", lambda c: c in string.ascii_lowercase),
    "require_digit": ("a digit", lambda c: c in string.digits),
    "require_symbol": ("a symbol", lambda c: c not in string.ascii_letters + string.digits),
}

MAX_FIELDS = 32
# Key pairs and bcrypt hashes take up to a second of CPU each (RSA 4096, 14 rounds): a recipe holds a few at most.
MAX_COSTLY_FIELDS = 4
MAX_LENGTH = 4096
MIN_LENGTH = 4
DEFAULT_LENGTH = 32
MAX_TEMPLATE = 4096
MAX_PLACEHOLDER_LENGTH = 1024
# The most a recipe's value may hold (bytes of its keys and values): what a written value may hold
# (``scaivault/http/schemas.py``, MAX_DATA_BYTES). Without it 32 templates of 273 ``{{random:1024}}`` each make a
# 9 MB value, seconds of CPU per generation.
MAX_VALUE_BYTES = 64 * 1024
BCRYPT_MAX_PASSWORD_BYTES = 72  # bcrypt reads no further
BCRYPT_ROUNDS = (4, 14)  # beyond 14 one hash (and so one checked write) takes seconds
_FIELD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FIELD_NAME_RULE = "must be a field name: letters, digits, _ . - (at most 128)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _ConfigError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _unknown_keys(config: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in config:
        if key not in known:
            raise _ConfigError(key, f"unknown config key; expected {', '.join(known) or 'none'}")


def _integer(config: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ConfigError(key, "must be an integer")
    if not low <= value <= high:
        raise _ConfigError(key, f"must be between {low} and {high}")
    return value


def _choice(config: Mapping[str, Any], key: str, default: Any, options: Sequence[Any]) -> Any:
    value = config.get(key, default)
    if isinstance(value, bool) or value not in options:
        raise _ConfigError(key, f"must be one of {', '.join(str(option) for option in options)}")
    return value


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise _ConfigError(key, "must be true or false")
    return value


def _text(config: Mapping[str, Any], key: str, default: str | None, *, limit: int, one_line: bool = True) -> str:
    value = config.get(key, default)
    if value is None:
        raise _ConfigError(key, "is required")
    if not isinstance(value, str):
        raise _ConfigError(key, "must be a string")
    if len(value) > limit:
        raise _ConfigError(key, f"must be at most {limit} characters")
    if one_line and _CONTROL.search(value):
        raise _ConfigError(key, "must not contain control characters")
    return value


def _output_key(config: Mapping[str, Any], key: str, default: str) -> str:
    value = _text(config, key, default, limit=128)
    if not _FIELD_NAME.fullmatch(value):
        raise _ConfigError(key, _FIELD_NAME_RULE)
    return value


def _random_string(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _shuffled(items: list[str]) -> list[str]:
    """Fisher-Yates with ``secrets``: every permutation equally likely."""
    for index in range(len(items) - 1, 0, -1):
        other = secrets.randbelow(index + 1)
        items[index], items[other] = items[other], items[index]
    return items


def _uuid7(at: datetime) -> uuid.UUID:
    """RFC 9562 UUIDv7: 48 bits of Unix milliseconds, version, 12 random bits, variant, 62 random bits."""
    milliseconds = ((_in_utc(at) - _EPOCH) // timedelta(milliseconds=1)) & ((1 << 48) - 1)
    value = (milliseconds << 80) | (0x7 << 76) | (secrets.randbits(12) << 64) | (0b10 << 62) | secrets.randbits(62)
    return uuid.UUID(int=value)


def _in_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _is_uuid(value: str, version: int) -> bool:
    if len(value) != 36:
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return str(parsed) == value.lower() and parsed.version == version and parsed.variant == uuid.RFC_4122


class Generator:
    """One generator: its config (validated, defaults filled in), what it writes, and how a written value is
    checked. ``check`` returns field name -> the rule the value breaks."""

    name: str
    config_keys: tuple[str, ...] = ()
    costly = False

    def normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        _unknown_keys(config, self.config_keys)
        return self._normalize(field, config)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def outputs(self, field: str, config: Mapping[str, Any]) -> list[str]:
        return [field]

    def max_size(self, config: Mapping[str, Any]) -> int:
        """At most how many bytes the values this field generates hold (its keys not counted)."""
        raise NotImplementedError

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        raise NotImplementedError

    def check(self, field: str, config: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, str]:
        problems: dict[str, str] = {}
        values: dict[str, str] = {}
        for key in self.outputs(field, config):
            value = data.get(key)
            if key not in data:
                problems[key] = "missing"
            elif not isinstance(value, str):
                problems[key] = "must be a string"
            else:
                values[key] = value
        if problems:
            return problems
        return self._check(field, config, values)

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        raise NotImplementedError


class RandomGenerator(Generator):
    name = "random"
    config_keys = ("length", "charset", *_CLASSES)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        normalized: dict[str, Any] = {
            "length": _integer(config, "length", DEFAULT_LENGTH, MIN_LENGTH, MAX_LENGTH),
            "charset": _choice(config, "charset", "alphanumeric", list(CHARSETS)),
        }
        alphabet = CHARSETS[normalized["charset"]]
        for key, (label, belongs) in _CLASSES.items():
            normalized[key] = _flag(config, key)
            if normalized[key] and not any(belongs(c) for c in alphabet):
                raise _ConfigError(key, f"charset {normalized['charset']} has no {label[label.index(' ') + 1:]}")
        return normalized

    def max_size(self, config: Mapping[str, Any]) -> int:
        return int(config["length"])

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        alphabet = CHARSETS[config["charset"]]
        required = [
            secrets.choice([c for c in alphabet if belongs(c)])
            for key, (_, belongs) in _CLASSES.items()
            if config[key]
        ]
        rest = [secrets.choice(alphabet) for _ in range(config["length"] - len(required))]
        return {field: "".join(_shuffled(required + rest))}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        value = values[field]
        alphabet = CHARSETS[config["charset"]]
        if len(value) < config["length"]:
            return {field: f"length >= {config['length']}"}
        if any(c not in alphabet for c in value):
            return {field: f"only characters of charset {config['charset']}"}
        for key, (label, belongs) in _CLASSES.items():
            if config[key] and not any(belongs(c) for c in value):
                return {field: f"requires {label}"}
        return {}


class HexGenerator(Generator):
    name = "hex"
    config_keys = ("length",)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"length": _integer(config, "length", DEFAULT_LENGTH, MIN_LENGTH, MAX_LENGTH)}

    def max_size(self, config: Mapping[str, Any]) -> int:
        return int(config["length"])

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        return {field: _random_string(CHARSETS["hex"], config["length"])}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        value = values[field]
        if len(value) < config["length"]:
            return {field: f"length >= {config['length']}"}
        if any(c not in CHARSETS["hex"] for c in value):
            return {field: "only lowercase hex digits"}
        return {}


class UuidGenerator(Generator):
    name = "uuid"
    config_keys = ("version",)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"version": _choice(config, "version", 4, (4, 7))}

    def max_size(self, config: Mapping[str, Any]) -> int:
        return 36

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        value = uuid.uuid4() if config["version"] == 4 else _uuid7(at)
        return {field: str(value)}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        if not _is_uuid(values[field], config["version"]):
            return {field: f"must be a UUIDv{config['version']}"}
        return {}


# {{random:N}} (alphanumeric), {{hex:N}} (lowercase hex), {{uuid}} (v4), {{timestamp}} (Unix seconds).
_PLACEHOLDER = re.compile(r"\{\{([a-z]+)(?::([0-9]{1,6}))?\}\}")
_SIZED = {"random": CHARSETS["alphanumeric"], "hex": CHARSETS["hex"]}
_UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


@dataclass(frozen=True)
class _Placeholder:
    kind: str
    size: int = 0


def _parse_template(template: str) -> list[str | _Placeholder]:
    parts: list[str | _Placeholder] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(template[position : match.start()])
        kind, size = match.group(1), match.group(2)
        if kind in _SIZED:
            if size is None or not 1 <= int(size) <= MAX_PLACEHOLDER_LENGTH:
                raise _ConfigError("template", f"{{{{{kind}:N}}}} needs N between 1 and {MAX_PLACEHOLDER_LENGTH}")
            parts.append(_Placeholder(kind, int(size)))
        elif kind in ("uuid", "timestamp") and size is None:
            parts.append(_Placeholder(kind))
        else:
            raise _ConfigError("template", f"unknown placeholder {match.group(0)[:40]}")
        position = match.end()
    parts.append(template[position:])
    if any(isinstance(part, str) and ("{{" in part or "}}" in part) for part in parts):
        raise _ConfigError(
            "template", "unknown placeholder; use {{random:N}}, {{hex:N}}, {{uuid}} or {{timestamp}}"
        )
    return [part for part in parts if part != ""]


def _placeholder_pattern(part: _Placeholder) -> str:
    if part.kind == "random":
        return f"[A-Za-z0-9]{{{part.size}}}"
    if part.kind == "hex":
        return f"[0-9a-f]{{{part.size}}}"
    if part.kind == "uuid":
        return _UUID_PATTERN
    return _TIMESTAMP_PATTERN


# Every {{timestamp}} of a value is the same number (one ``at``): the first is matched with a bounded width (Unix
# seconds have at most 12 digits for 30,000 years), the others must repeat it. Several unbounded ``[0-9]+`` in a row
# would backtrack polynomially (exponentially in their number) over a long run of digits: a written value could hold
# a check, and the thread and transaction it runs in, for hours.
_TIMESTAMP_PATTERN = "(?P<timestamp>-?[0-9]{1,12})"
_SAME_TIMESTAMP = "(?P=timestamp)"


def _template_pattern(template: str) -> str:
    pieces = []
    timestamp_seen = False
    for part in _parse_template(template):
        if isinstance(part, str):
            pieces.append(re.escape(part))
        elif part.kind == "timestamp":
            pieces.append(_SAME_TIMESTAMP if timestamp_seen else _TIMESTAMP_PATTERN)
            timestamp_seen = True
        else:
            pieces.append(_placeholder_pattern(part))
    return "".join(pieces)


class TemplateGenerator(Generator):
    name = "template"
    config_keys = ("template",)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        template = _text(config, "template", None, limit=MAX_TEMPLATE, one_line=False)
        if not template:
            raise _ConfigError("template", "must not be empty")
        _parse_template(template)
        return {"template": template}

    def max_size(self, config: Mapping[str, Any]) -> int:
        sizes = {"uuid": 36, "timestamp": 13}
        return sum(
            len(part.encode()) if isinstance(part, str) else part.size or sizes[part.kind]
            for part in _parse_template(config["template"])
        )

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        pieces = []
        for part in _parse_template(config["template"]):
            if isinstance(part, str):
                pieces.append(part)
            elif part.kind in _SIZED:
                pieces.append(_random_string(_SIZED[part.kind], part.size))
            elif part.kind == "uuid":
                pieces.append(str(uuid.uuid4()))
            else:
                pieces.append(str((_in_utc(at) - _EPOCH) // timedelta(seconds=1)))
        return {field: "".join(pieces)}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        if re.fullmatch(_template_pattern(config["template"]), values[field]) is None:
            return {field: f"must match the template {config['template'][:200]}"}
        return {}


_PEM_PRIVATE = serialization.PrivateFormat.PKCS8
_PEM_PUBLIC = serialization.PublicFormat.SubjectPublicKeyInfo


def _pem_pair(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = private_key.private_bytes(serialization.Encoding.PEM, _PEM_PRIVATE, serialization.NoEncryption())
    public = private_key.public_key().public_bytes(serialization.Encoding.PEM, _PEM_PUBLIC)
    return private.decode("ascii"), public.decode("ascii")


def _same_public_key(private_key: Any, public_key: Any) -> bool:
    public_format = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    try:
        return bool(
            private_key.public_key().public_bytes(encoding, public_format)
            == public_key.public_bytes(encoding, public_format)
        )
    except (TypeError, ValueError):
        return False


_KEY_LOAD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)


class _KeyPairGenerator(Generator):
    """Private key under the field's name, public key under ``public_key_field``."""

    costly = True

    def outputs(self, field: str, config: Mapping[str, Any]) -> list[str]:
        return [field, config["public_key_field"]]

    def _public_key_field(self, config: Mapping[str, Any]) -> str:
        return _output_key(config, "public_key_field", "public_key")

    def _load(self, values: Mapping[str, str], field: str, public_field: str) -> tuple[Any, Any]:
        try:
            private_key = self._load_private(values[field].encode())
        except _KEY_LOAD_ERRORS:
            private_key = None
        try:
            public_key = self._load_public(values[public_field].encode())
        except _KEY_LOAD_ERRORS:
            public_key = None
        return private_key, public_key

    def _load_private(self, data: bytes) -> Any:
        return serialization.load_pem_private_key(data, password=None)

    def _load_public(self, data: bytes) -> Any:
        return serialization.load_pem_public_key(data)

    def _fits(self, config: Mapping[str, Any], private_key: Any) -> bool:
        raise NotImplementedError

    def _describe(self, config: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        public_field = config["public_key_field"]
        private_key, public_key = self._load(values, field, public_field)
        if private_key is None or not self._fits(config, private_key):
            return {field: f"must be an unencrypted {self._describe(config)} private key"}
        if public_key is None or not _same_public_key(private_key, public_key):
            return {public_field: f"must be the public key of {field}"}
        return {}


class RsaKeyPairGenerator(_KeyPairGenerator):
    name = "rsa_keypair"
    config_keys = ("bits", "public_key_field")

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"bits": _choice(config, "bits", 2048, (2048, 4096)), "public_key_field": self._public_key_field(config)}

    def max_size(self, config: Mapping[str, Any]) -> int:
        return int(config["bits"]) + 1024  # PEM: 3272 + 800 characters for 4096 bits

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        private, public = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=config["bits"]))
        return {field: private, config["public_key_field"]: public}

    def _fits(self, config: Mapping[str, Any], private_key: Any) -> bool:
        return isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == config["bits"]

    def _describe(self, config: Mapping[str, Any]) -> str:
        return f"PEM RSA {config['bits']}-bit"


_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}


class EcKeyPairGenerator(_KeyPairGenerator):
    name = "ec_keypair"
    config_keys = ("curve", "public_key_field")

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        curve = _choice(config, "curve", "P-256", list(_CURVES))
        return {"curve": curve, "public_key_field": self._public_key_field(config)}

    def max_size(self, config: Mapping[str, Any]) -> int:
        return 1024  # PEM: 306 + 215 characters on P-384

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        private, public = _pem_pair(ec.generate_private_key(_CURVES[config["curve"]]()))
        return {field: private, config["public_key_field"]: public}

    def _fits(self, config: Mapping[str, Any], private_key: Any) -> bool:
        expected = _CURVES[config["curve"]]().name
        return isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name == expected

    def _describe(self, config: Mapping[str, Any]) -> str:
        return f"PEM EC {config['curve']}"


class SshKeyPairGenerator(_KeyPairGenerator):
    name = "ssh_keypair"
    config_keys = ("key_type", "bits", "comment", "public_key_field")

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        key_type = _choice(config, "key_type", "ed25519", ("ed25519", "rsa"))
        normalized: dict[str, Any] = {"key_type": key_type}
        if key_type == "rsa":
            normalized["bits"] = _choice(config, "bits", 3072, (2048, 3072, 4096))
        elif "bits" in config:
            raise _ConfigError("bits", "applies only to key_type rsa")
        normalized["comment"] = _text(config, "comment", "", limit=256)
        normalized["public_key_field"] = self._public_key_field(config)
        return normalized

    def max_size(self, config: Mapping[str, Any]) -> int:
        # OpenSSH: 3381 + 725 characters for RSA 4096, 399 + 80 for ed25519; then the comment
        return int(config.get("bits", 0)) + 1024 + len(config["comment"].encode())

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if config["key_type"] == "ed25519":
            private_key = ed25519.Ed25519PrivateKey.generate()
        else:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=config["bits"])
        private = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode("ascii")
        public = private_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode("ascii")
        if config["comment"]:
            public = f"{public} {config['comment']}"
        return {field: private, config["public_key_field"]: public}

    def _load_private(self, data: bytes) -> Any:
        return serialization.load_ssh_private_key(data, password=None)

    def _load_public(self, data: bytes) -> Any:
        return serialization.load_ssh_public_key(data)

    def _fits(self, config: Mapping[str, Any], private_key: Any) -> bool:
        if config["key_type"] == "ed25519":
            return isinstance(private_key, ed25519.Ed25519PrivateKey)
        return isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == config["bits"]

    def _describe(self, config: Mapping[str, Any]) -> str:
        if config["key_type"] == "ed25519":
            return "OpenSSH ed25519"
        return f"OpenSSH RSA {config['bits']}-bit"


_BCRYPT_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")


class BcryptHashGenerator(Generator):
    """A random alphanumeric password under the field's name, its bcrypt hash under ``hash_field``."""

    name = "bcrypt_hash"
    config_keys = ("length", "rounds", "hash_field")
    costly = True

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "length": _integer(config, "length", DEFAULT_LENGTH, MIN_LENGTH, BCRYPT_MAX_PASSWORD_BYTES),
            "rounds": _integer(config, "rounds", 12, *BCRYPT_ROUNDS),
            "hash_field": _output_key(config, "hash_field", f"{field}_hash"[:128]),
        }

    def outputs(self, field: str, config: Mapping[str, Any]) -> list[str]:
        return [field, config["hash_field"]]

    def max_size(self, config: Mapping[str, Any]) -> int:
        return int(config["length"]) + 60

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        password = _random_string(CHARSETS["alphanumeric"], config["length"])
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=config["rounds"]))
        return {field: password, config["hash_field"]: hashed.decode("ascii")}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        password, hashed, hash_field = values[field], values[config["hash_field"]], config["hash_field"]
        if len(password) < config["length"]:
            return {field: f"length >= {config['length']}"}
        if len(password.encode()) > BCRYPT_MAX_PASSWORD_BYTES:
            return {field: f"at most {BCRYPT_MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)"}
        match = _BCRYPT_HASH.fullmatch(hashed)
        # The cost is bounded before checking: a written hash of cost 31 would otherwise hold the write for days.
        if match is None or not config["rounds"] <= int(match.group(1)) <= BCRYPT_ROUNDS[1]:
            return {hash_field: f"must be a bcrypt hash with rounds between {config['rounds']} and {BCRYPT_ROUNDS[1]}"}
        try:
            matches = bcrypt.checkpw(password.encode(), hashed.encode("ascii"))
        except ValueError:
            matches = False
        return {} if matches else {hash_field: f"must be the bcrypt hash of {field}"}


class StaticGenerator(Generator):
    name = "static"
    config_keys = ("value",)

    def _normalize(self, field: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"value": _text(config, "value", None, limit=MAX_TEMPLATE, one_line=False)}

    def max_size(self, config: Mapping[str, Any]) -> int:
        return len(config["value"].encode())

    def generate(self, field: str, config: Mapping[str, Any], at: datetime) -> dict[str, str]:
        return {field: config["value"]}

    def _check(self, field: str, config: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
        return {} if values[field] == config["value"] else {field: "must equal the policy's static value"}


GENERATORS: dict[str, Generator] = {
    generator.name: generator
    for generator in (
        RandomGenerator(),
        HexGenerator(),
        UuidGenerator(),
        TemplateGenerator(),
        RsaKeyPairGenerator(),
        EcKeyPairGenerator(),
        SshKeyPairGenerator(),
        BcryptHashGenerator(),
        StaticGenerator(),
    )
}


def _normalize_field(raw: Any, where: str, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        problems.append({"field": where, "message": "must be an object with name, generator and config"})
        return None
    for key in raw:
        if key not in ("name", "generator", "config"):
            problems.append({"field": f"{where}.{key}", "message": "unknown key; expected name, generator, config"})
            return None
    name, generator_name, config = raw.get("name"), raw.get("generator"), raw.get("config", {})
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
        problems.append({"field": f"{where}.name", "message": _FIELD_NAME_RULE})
        return None
    generator = GENERATORS.get(generator_name) if isinstance(generator_name, str) else None
    if generator is None:
        problems.append({"field": f"{where}.generator", "message": f"must be one of {', '.join(GENERATORS)}"})
        return None
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        problems.append({"field": f"{where}.config", "message": "must be an object"})
        return None
    try:
        normalized = generator.normalize(name, config)
    except _ConfigError as error:
        problems.append({"field": f"{where}.config.{error.key}", "message": error.message})
        return None
    return {"name": name, "generator": generator.name, "config": normalized}


def normalize_recipe(fields: Any) -> list[dict[str, Any]]:
    """The recipe validated, every config with its defaults filled in; ``ValidationFailed`` listing each problem
    (``fields[i].config.length``...) otherwise. Field names, and the extra keys pair generators write, are unique."""
    if not isinstance(fields, Sequence) or isinstance(fields, (str, bytes)) or not fields:
        raise ValidationFailed(fields=[{"field": "fields", "message": "must be a non-empty list of fields"}])
    if len(fields) > MAX_FIELDS:
        raise ValidationFailed(fields=[{"field": "fields", "message": f"at most {MAX_FIELDS} fields"}])
    problems: list[dict[str, str]] = []
    recipe: list[dict[str, Any]] = []
    written: set[str] = set()
    for index, raw in enumerate(fields):
        field = _normalize_field(raw, f"fields[{index}]", problems)
        if field is None:
            continue
        for key in GENERATORS[field["generator"]].outputs(field["name"], field["config"]):
            if key in written:
                problems.append({"field": f"fields[{index}]", "message": f"the key {key} is written twice"})
            written.add(key)
        recipe.append(field)
    if sum(GENERATORS[field["generator"]].costly for field in recipe) > MAX_COSTLY_FIELDS:
        problems.append({"field": "fields", "message": f"at most {MAX_COSTLY_FIELDS} key-pair and bcrypt fields"})
    size = sum(len(key.encode()) for key in written) + sum(
        GENERATORS[field["generator"]].max_size(field["config"]) for field in recipe
    )
    if size > MAX_VALUE_BYTES:
        problems.append({"field": "fields", "message": f"the values may reach {size} bytes; at most "
                                                       f"{MAX_VALUE_BYTES} (what a written value may hold)"})
    if problems:
        raise ValidationFailed(fields=problems)
    return recipe


def output_keys(fields: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys the recipe's value has, in order."""
    return [
        key
        for field in normalize_recipe(fields)
        for key in GENERATORS[field["generator"]].outputs(field["name"], field["config"])
    ]


def generate(fields: Sequence[Mapping[str, Any]], *, at: datetime) -> dict[str, Any]:
    """A fresh value for the recipe (validated first: ``ValidationFailed`` when it is not a valid recipe)."""
    value: dict[str, Any] = {}
    for field in normalize_recipe(fields):
        value.update(GENERATORS[field["generator"]].generate(field["name"], field["config"], at))
    return value


def violations(fields: Sequence[Mapping[str, Any]], data: Mapping[str, Any]) -> dict[str, str]:
    """Key of ``data`` -> the rule of the recipe it breaks (``missing``, ``length >= 32``, ``requires a digit``...);
    empty when ``data`` satisfies the recipe. Keys the recipe does not name are not checked."""
    problems: dict[str, str] = {}
    for field in normalize_recipe(fields):
        problems.update(GENERATORS[field["generator"]].check(field["name"], field["config"], data))
    return problems
