"""Value generators (scaivault/domain/generators.py): what each generates passes its own check, charsets and
requirements hold, templates are filled, a written value breaking a rule is named with that rule, recipes are
validated with defaults filled in, and no randomness comes from the `random` module."""

from __future__ import annotations

import ast
import inspect
import random
import re
import string
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaivault.domain import generators
from scaivault.domain.errors import ValidationFailed
from scaivault.domain.generators import CHARSETS, generate, normalize_recipe, output_keys, violations

AT = datetime(2026, 12, 5, 3, 4, 5, 678000, tzinfo=UTC)
REQUIRES = ("require_upper", "require_lower", "require_digit", "require_symbol")
CLASSES = {
    "require_upper": set(string.ascii_uppercase),
    "require_lower": set(string.ascii_lowercase),
    "require_digit": set(string.digits),
    "require_symbol": set(string.punctuation),
}


def one(generator: str, name: str = "value", **config: Any) -> list[dict[str, Any]]:
    return [{"name": name, "generator": generator, "config": config}]


def problems_of(fields: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as raised:
        normalize_recipe(fields)
    return list(raised.value.details["fields"])


@st.composite
def random_configs(draw: st.DrawFn) -> dict[str, Any]:
    charset = draw(st.sampled_from(sorted(CHARSETS)))
    alphabet = set(CHARSETS[charset])
    possible = [key for key in REQUIRES if alphabet & CLASSES[key]]
    required = draw(st.lists(st.sampled_from(possible), unique=True)) if possible else []
    length = draw(st.integers(min_value=generators.MIN_LENGTH, max_value=80))
    return {"length": length, "charset": charset, **{key: True for key in required}}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(random_configs())
def test_random_values_have_the_length_the_charset_and_every_requirement(config: dict[str, Any]) -> None:
    recipe = one("random", "password", **config)
    value = generate(recipe, at=AT)["password"]
    assert len(value) == config["length"]
    assert set(value) <= set(CHARSETS[config["charset"]])
    for key in REQUIRES:
        if config.get(key):
            assert set(value) & CLASSES[key], key
    assert violations(recipe, {"password": value}) == {}


def test_required_characters_land_anywhere_not_only_where_they_were_drawn() -> None:
    """Length 4 with all four requirements: each value is exactly one character of each class, so without the
    shuffle the uppercase letter (drawn first) would always come first."""
    recipe = [{"name": "value", "generator": "random",
               "config": {"length": 4, "charset": "safe", **{key: True for key in REQUIRES}}}]
    positions = set()
    for _ in range(200):
        value = generate(recipe, at=AT)["value"]
        positions |= {index for index, c in enumerate(value) if c in string.ascii_uppercase}
    assert positions == {0, 1, 2, 3}


@settings(max_examples=100)
@given(st.integers(min_value=generators.MIN_LENGTH, max_value=200))
def test_hex_values_are_lowercase_hex_of_the_length(length: int) -> None:
    value = generate(one("hex", length=length), at=AT)["value"]
    assert re.fullmatch(f"[0-9a-f]{{{length}}}", value)
    assert violations(one("hex", length=length), {"value": value}) == {}


@settings(max_examples=100)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)))
def test_uuid7_carries_the_time_it_was_made_at(at: datetime) -> None:
    value = generate(one("uuid", version=7), at=at)["value"]
    parsed = uuid.UUID(value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert violations(one("uuid", version=7), {"value": value}) == {}
    assert violations(one("uuid", version=4), {"value": value}) == {"value": "must be a UUIDv4"}


def test_uuid4_by_default_and_other_versions_are_refused() -> None:
    value = generate(one("uuid"), at=AT)["value"]
    assert uuid.UUID(value).version == 4 and violations(one("uuid"), {"value": value}) == {}
    assert violations(one("uuid"), {"value": "not-a-uuid"}) == {"value": "must be a UUIDv4"}
    assert violations(one("uuid"), {"value": str(uuid.uuid1())}) == {"value": "must be a UUIDv4"}
    assert problems_of(one("uuid", version=5))[0]["field"] == "fields[0].config.version"


_LITERAL = st.text(alphabet=string.ascii_letters + string.digits + "-_.:/ $^()[]+*?|\\", max_size=8)
_PLACEHOLDERS = st.sampled_from(["{{uuid}}", "{{timestamp}}"]) | st.builds(
    lambda kind, n: f"{{{{{kind}:{n}}}}}", st.sampled_from(["random", "hex"]), st.integers(1, 40)
)


@settings(max_examples=200)
@given(st.lists(st.tuples(_LITERAL, _PLACEHOLDERS), min_size=1, max_size=5), _LITERAL)
def test_templates_are_filled_and_their_values_match_them(parts: list[tuple[str, str]], tail: str) -> None:
    template = "".join(literal + placeholder for literal, placeholder in parts) + tail
    recipe = one("template", template=template)
    value = generate(recipe, at=AT)["value"]
    assert "{{" not in value and value.endswith(tail)
    assert violations(recipe, {"value": value}) == {}


def test_template_placeholders_have_their_documented_forms() -> None:
    value = generate(one("template", template="k_{{timestamp}}_{{random:6}}_{{hex:4}}_{{uuid}}"), at=AT)["value"]
    match = re.fullmatch(r"k_(\d+)_([A-Za-z0-9]{6})_([0-9a-f]{4})_(.{36})", value)
    assert match is not None
    assert int(match.group(1)) == int(AT.timestamp())
    assert uuid.UUID(match.group(4)).version == 4
    assert violations(one("template", template="k_{{hex:4}}"), {"value": "k_ABCD"}) == {
        "value": "must match the template k_{{hex:4}}"
    }


@pytest.mark.parametrize("template", [
    "{{timestamp}}" * 12 + "x", "{{timestamp}}{{timestamp}}x", "{{timestamp}}1{{timestamp}}1{{timestamp}}x",
    "-{{timestamp}}-{{timestamp}}-{{timestamp}}-{{timestamp}}-{{timestamp}}x",
])
def test_checking_a_long_run_of_digits_against_timestamps_takes_no_time(template: str) -> None:
    """Adjacent unbounded digit runs backtrack polynomially (exponentially in their number): a value written by
    anyone allowed to write the secret would hold the check (its thread and its transaction) for hours."""
    recipe = one("template", template=template)
    started = time.monotonic()
    for digits in (30, 1000, 60_000):
        assert violations(recipe, {"value": "1" * digits + "y"}) == {"value": f"must match the template {template}"}
    assert time.monotonic() - started < 1.0
    assert violations(recipe, generate(recipe, at=AT)) == {}


def test_every_timestamp_of_a_template_is_the_same_number() -> None:
    recipe = one("template", template="{{timestamp}}.{{timestamp}}")
    assert violations(recipe, {"value": "1714478400.1714478400"}) == {}
    assert violations(recipe, {"value": "1714478400.1714478401"}) != {}


@pytest.mark.parametrize("template", ["{{nope}}", "{{random}}", "{{hex:0}}", "{{random:5000}}", "{{uuid:4}}",
                                      "a {{ uuid }}", "half {{", ""])
def test_bad_templates_are_refused(template: str) -> None:
    assert problems_of(one("template", template=template))[0]["field"] == "fields[0].config.template"


def test_rsa_key_pairs_are_pem_of_the_configured_size() -> None:
    recipe = [{"name": "private_key", "generator": "rsa_keypair", "config": {"bits": 2048}}]
    value = generate(recipe, at=AT)
    private = serialization.load_pem_private_key(value["private_key"].encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert value["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert violations(recipe, value) == {}
    other = generate(recipe, at=AT)
    assert violations(recipe, {**value, "public_key": other["public_key"]}) == {
        "public_key": "must be the public key of private_key"
    }
    ec_pair = generate(one("ec_keypair", name="private_key"), at=AT)
    assert violations(recipe, ec_pair) == {"private_key": "must be an unencrypted PEM RSA 2048-bit private key"}


@pytest.mark.parametrize(("curve", "expected"), [("P-256", ec.SECP256R1), ("P-384", ec.SECP384R1)])
def test_ec_key_pairs_use_the_configured_curve(curve: str, expected: type[ec.EllipticCurve]) -> None:
    recipe = one("ec_keypair", name="key", curve=curve, public_key_field="key_public")
    value = generate(recipe, at=AT)
    private = serialization.load_pem_private_key(value["key"].encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, expected)
    assert set(value) == {"key", "key_public"} and violations(recipe, value) == {}
    wrong_curve = one("ec_keypair", name="key", curve="P-384" if curve == "P-256" else "P-256",
                      public_key_field="key_public")
    assert set(violations(wrong_curve, value)) == {"key"}


def test_ssh_key_pairs_are_openssh_with_the_comment() -> None:
    recipe = [{"name": "private_key", "generator": "ssh_keypair", "config": {"comment": "deploy@ci"}}]
    value = generate(recipe, at=AT)
    assert value["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert value["public_key"].startswith("ssh-ed25519 ") and value["public_key"].endswith(" deploy@ci")
    key = serialization.load_ssh_private_key(value["private_key"].encode(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert violations(recipe, value) == {}
    rsa_recipe = [{"name": "private_key", "generator": "ssh_keypair", "config": {"key_type": "rsa", "bits": 2048}}]
    rsa_value = generate(rsa_recipe, at=AT)
    assert rsa_value["public_key"].startswith("ssh-rsa ") and violations(rsa_recipe, rsa_value) == {}
    assert set(violations(recipe, rsa_value)) == {"private_key"}


def test_bcrypt_hash_writes_a_password_and_its_hash() -> None:
    recipe = one("bcrypt_hash", name="password", length=20, rounds=4)
    value = generate(recipe, at=AT)
    assert set(value) == {"password", "password_hash"} and len(value["password"]) == 20
    assert bcrypt.checkpw(value["password"].encode(), value["password_hash"].encode())
    assert value["password_hash"].startswith("$2b$04$")
    assert violations(recipe, value) == {}
    assert violations(recipe, {**value, "password": value["password"] + "x"}) == {
        "password_hash": "must be the bcrypt hash of password"
    }
    # A hash costlier than any the policy allows is refused before it is checked (it would hold the write).
    costly = value["password_hash"].replace("$04$", "$31$")
    assert violations(recipe, {**value, "password_hash": costly}) == {
        "password_hash": "must be a bcrypt hash with rounds between 4 and 14"
    }


def test_static_writes_its_value_and_accepts_only_it() -> None:
    recipe = one("static", name="username", value="app")
    assert generate(recipe, at=AT) == {"username": "app"}
    assert violations(recipe, {"username": "app"}) == {}
    assert violations(recipe, {"username": "root"}) == {"username": "must equal the policy's static value"}


@pytest.mark.parametrize(
    ("config", "value", "rule"),
    [
        ({"length": 32}, "a" * 31, "length >= 32"),
        ({"length": 8, "charset": "alpha"}, "abcdefg1", "only characters of charset alpha"),
        ({"length": 8, "require_digit": True}, "abcdefgh", "requires a digit"),
        ({"length": 8, "require_upper": True}, "abcdefg1", "requires an uppercase letter"),
        ({"length": 8, "require_lower": True}, "ABCDEFG1", "requires a lowercase letter"),
        ({"length": 8, "charset": "full", "require_symbol": True}, "abcdefg1", "requires a symbol"),
    ],
)
def test_a_written_value_is_told_the_rule_it_breaks(config: dict[str, Any], value: str, rule: str) -> None:
    assert violations(one("random", name="password", **config), {"password": value}) == {"password": rule}


def test_missing_and_non_string_values_are_named() -> None:
    recipe = [*one("random", name="user"), *one("hex", name="token")]
    assert violations(recipe, {"token": 5}) == {"user": "missing", "token": "must be a string"}
    assert violations(recipe, {"user": "u" * 32, "token": "a" * 32, "extra": "not checked"}) == {}


def test_recipes_get_their_defaults_and_refuse_what_is_wrong() -> None:
    assert normalize_recipe(one("random")) == [{"name": "value", "generator": "random", "config": {
        "length": 32, "charset": "alphanumeric", "require_upper": False, "require_lower": False,
        "require_digit": False, "require_symbol": False,
    }}]
    assert normalize_recipe(one("bcrypt_hash", name="pw"))[0]["config"] == {
        "length": 32, "rounds": 12, "hash_field": "pw_hash"
    }
    assert problems_of([]) == [{"field": "fields", "message": "must be a non-empty list of fields"}]
    assert problems_of(one("random", length=3))[0] == {
        "field": "fields[0].config.length", "message": "must be between 4 and 4096"
    }
    assert problems_of(one("random", length=True))[0]["field"] == "fields[0].config.length"
    assert problems_of(one("random", lenght=10))[0]["field"] == "fields[0].config.lenght"
    assert problems_of(one("random", charset="emoji"))[0]["field"] == "fields[0].config.charset"
    assert problems_of(one("random", charset="alpha", require_digit=True))[0]["field"] == (
        "fields[0].config.require_digit"
    )
    assert problems_of(one("rsa_keypair", bits=1024))[0]["field"] == "fields[0].config.bits"
    assert problems_of(one("ssh_keypair", bits=2048))[0]["field"] == "fields[0].config.bits"
    assert problems_of(one("bcrypt_hash", rounds=20))[0]["field"] == "fields[0].config.rounds"
    assert problems_of(one("bcrypt_hash", length=73))[0]["field"] == "fields[0].config.length"
    assert problems_of(one("static"))[0] == {"field": "fields[0].config.value", "message": "is required"}
    assert problems_of(one("magic"))[0]["field"] == "fields[0].generator"
    assert problems_of([{"name": "bad name", "generator": "hex"}])[0]["field"] == "fields[0].name"
    assert problems_of(["password"])[0]["field"] == "fields[0]"
    assert problems_of([*one("hex", name="a"), *one("uuid", name="a")])[0]["message"] == "the key a is written twice"
    two_pairs = [*one("ec_keypair", name="a"), *one("ec_keypair", name="b")]  # both write public_key
    assert problems_of(two_pairs)[0]["message"] == "the key public_key is written twice"
    too_many = [one("hex", name=f"f{i}")[0] for i in range(generators.MAX_FIELDS + 1)]
    assert problems_of(too_many)[0]["field"] == "fields"
    costly = [one("ec_keypair", name=f"k{i}", public_key_field=f"p{i}")[0] for i in range(5)]
    assert problems_of(costly)[0]["message"] == "at most 4 key-pair and bcrypt fields"


def test_a_recipe_makes_no_value_larger_than_a_written_one_may_be() -> None:
    """32 templates of 273 ``{{random:1024}}`` would make a 9 MB value in seconds of CPU, per rotation or preview."""
    huge = [one("template", name=f"f{i}", template="{{random:1024}}" * 273)[0] for i in range(generators.MAX_FIELDS)]
    [problem] = problems_of(huge)
    assert problem["field"] == "fields" and str(generators.MAX_VALUE_BYTES) in problem["message"]
    wide = [one("random", name=f"f{i}", length=4096)[0] for i in range(16)]
    assert problems_of(wide)[0]["field"] == "fields"
    fitting = wide[:15]
    assert len(orjson.dumps(generate(fitting, at=AT))) <= generators.MAX_VALUE_BYTES
    pairs = [one("rsa_keypair", name=f"k{i}", bits=4096, public_key_field=f"p{i}")[0] for i in range(4)]
    value = generate([*pairs, *one("static", name="s", value="x" * 4096)], at=AT)
    assert len(orjson.dumps(value)) <= generators.MAX_VALUE_BYTES


def test_output_keys_list_what_a_value_will_hold() -> None:
    recipe = [*one("rsa_keypair", name="private_key"), *one("bcrypt_hash", name="pw"), *one("uuid", name="id")]
    assert output_keys(recipe) == ["private_key", "public_key", "pw", "pw_hash", "id"]


def test_the_documented_charsets() -> None:
    assert CHARSETS["safe"] == string.ascii_letters + string.digits + "-_."
    assert CHARSETS["alphanumeric"] == string.ascii_letters + string.digits
    assert CHARSETS["hex"] == "0123456789abcdef" and CHARSETS["symbols"] == string.punctuation


def test_the_generators_never_use_the_random_module(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(inspect.getsource(generators))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name == "random" or name.startswith("random.")}

    def predictable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the random module was used")

    for name in ("random", "choice", "choices", "randint", "randrange", "shuffle", "sample", "getrandbits"):
        monkeypatch.setattr(random, name, predictable)
        monkeypatch.setattr(random.Random, name, predictable)
    recipe = [
        *one("random", name="a", length=16, charset="full", require_symbol=True, require_digit=True),
        *one("hex", name="b"), *one("uuid", name="c", version=7), *one("uuid", name="d"),
        *one("template", name="e", template="{{random:4}}{{hex:4}}{{uuid}}{{timestamp}}"),
        *one("ec_keypair", name="f"), *one("bcrypt_hash", name="g", rounds=4), *one("static", name="h", value="x"),
    ]
    assert violations(recipe, generate(recipe, at=AT)) == {}


_CHEAP_FIELDS = st.one_of(
    random_configs().map(lambda config: ("random", config)),
    st.integers(generators.MIN_LENGTH, 64).map(lambda length: ("hex", {"length": length})),
    st.sampled_from([4, 7]).map(lambda version: ("uuid", {"version": version})),
    st.lists(st.tuples(_LITERAL, _PLACEHOLDERS), min_size=1, max_size=3).map(
        lambda parts: ("template", {"template": "".join(a + b for a, b in parts)})
    ),
    st.text(min_size=0, max_size=20).map(lambda value: ("static", {"value": value})),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CHEAP_FIELDS, min_size=1, max_size=6), st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_any_recipe_generates_values_that_pass_it(drawn: list[tuple[str, dict[str, Any]]], at: datetime) -> None:
    recipe = [{"name": f"f{index}", "generator": generator, "config": config}
              for index, (generator, config) in enumerate(drawn)]
    value = generate(recipe, at=at)
    assert list(value) == output_keys(recipe)
    assert violations(recipe, value) == {}
    assert violations(recipe, {}) == {key: "missing" for key in value}


@settings(max_examples=100)
@given(random_configs())
def test_a_value_one_character_short_breaks_the_length_rule(config: dict[str, Any]) -> None:
    recipe = one("random", **config)
    value = generate(recipe, at=AT)["value"]
    assert violations(recipe, {"value": value[:-1]}) == {"value": f"length >= {config['length']}"}
