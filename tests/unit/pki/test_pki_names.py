"""The role's name rules: a table of attacks on a narrow role, the rules' switches one by one, and properties
that must hold for every input hypothesis can think of."""

from __future__ import annotations

import ipaddress
import string

import idna
import pytest
from cryptography import x509
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scaivault.domain.pki_names import (
    NameRules,
    allowed_domain_violations,
    allowed_ip_range_violations,
    name_violations,
)

MESH = NameRules(allowed_domains=("*.svc.cluster.local",))
EXAMPLE = NameRules(allowed_domains=("example.com",), allow_subdomains=True)


def ok(rules: NameRules, name: str) -> bool:
    """Whether ``name`` is allowed as a DNS SAN; the CN, checked like a DNS name, must get the same answer (except
    under allow_any_name, where a CN may also be a free-form label)."""
    as_san = not name_violations(rules, common_name=None, dns_names=[name], ip_addresses=[])
    as_cn = not name_violations(rules, common_name=name, dns_names=[], ip_addresses=[])
    assert as_san == as_cn or len(name) > 64 or rules.allow_any_name, name
    return as_san


@pytest.mark.parametrize(
    "name",
    [
        "evil.com",
        "svc.cluster.local",  # the base itself: "*.d" is one more label, not d
        "svc.cluster.local.evil.com",
        "billing.svc.cluster.local.evil.com",
        "billing.svc.cluster.local.",  # trailing dot
        "billing.svc.cluster.local\x00.evil.com",
        "x.svc.cluster.local\x00.evil.com",
        "evil.com\x00.svc.cluster.local",
        "a.b.svc.cluster.local",  # two more labels
        ".svc.cluster.local",
        "billing..svc.cluster.local",
        "*.cluster.local",
        "*.svc.cluster.local",  # a wildcard certificate, not allowed by this role
        "billing*.svc.cluster.local",
        "*billing.svc.cluster.local",
        "bil*ing.svc.cluster.local",
        "*.*.svc.cluster.local",
        "billing.*.cluster.local",
        "*",
        "billing.svc.cluster.locaI",  # capital I for l
        "billing.svc.cluster.lоcal",  # Cyrillic o
        "bіlling.svc.cluster.local",  # Cyrillic i
        "billing.svc.cluster.local\u200b",  # zero-width space
        "billing\u3002svc.cluster.local",  # ideographic full stop, a dot to IDNA 2003
        "billing.svc.cluster.local\u212a",  # Kelvin sign lower-cases to "k"
        "billing.svc.cluster.local ",
        " billing.svc.cluster.local",
        "billing svc.cluster.local",
        "billing.svc.cluster.local\n",
        "billing.svc.cluster.local/evil",
        "billing.svc.cluster.local:443",
        "user@billing.svc.cluster.local",
        "billing.svc.cluster.local%00",
        "billing_x.svc.cluster.local",  # underscore with enforce_hostnames
        "-billing.svc.cluster.local",
        "billing-.svc.cluster.local",
        "xn--.svc.cluster.local",
        "xn--zz.svc.cluster.local",  # not valid punycode
        "ab--c.svc.cluster.local",  # reserved R-LDH label that is not an A-label
        ("a" * 64) + ".svc.cluster.local",
        "localhost",
        "10.0.0.1",
        "",
        "svc.cluster.local.",
        "cluster.local",
        "local",
    ],
)
def test_attacks_on_a_mesh_role_are_refused(name: str) -> None:
    assert not ok(MESH, name)


@pytest.mark.parametrize(
    "name",
    [
        "billing.svc.cluster.local",
        "BILLING.SVC.CLUSTER.LOCAL",
        "reporting.Svc.Cluster.Local",
        "a.svc.cluster.local",
        "a-b.svc.cluster.local",
        "0.svc.cluster.local",
        "xn--bcher-kva.svc.cluster.local",
        ("a" * 63) + ".svc.cluster.local",
    ],
)
def test_the_mesh_role_allows_its_services(name: str) -> None:
    assert ok(MESH, name)


def test_ips_uris_and_emails_are_refused_by_the_mesh_role() -> None:
    violations = name_violations(
        MESH,
        common_name="10.0.0.1",
        dns_names=[],
        ip_addresses=["10.0.0.1", ipaddress.ip_address("::1")],
        uris=["spiffe://cluster.local/ns/default/sa/billing"],
        emails=["ops@svc.cluster.local"],
    )
    assert [v["field"] for v in violations] == [
        "common_name", "ip_sans[0]", "ip_sans[1]", "uri_sans[0]", "email_sans[0]"
    ]


def test_violations_name_each_field_and_never_repeat_the_name() -> None:
    violations = name_violations(
        MESH,
        common_name="evil\x00.com",
        dns_names=["ok.svc.cluster.local", "evil\x00.com", "also-ok.svc.cluster.local", "evil.com"],
        ip_addresses=[],
    )
    assert [v["field"] for v in violations] == ["common_name", "alt_names[1]", "alt_names[3]"]
    assert all("evil" not in v["message"] and "\x00" not in v["message"] for v in violations)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("www.example.com", True),
        ("a.b.c.example.com", True),
        ("example.com.evil.com", False),
        ("notexample.com", False),
        ("xexample.com", False),
        ("example.co", False),
        ("com", False),
        ("example.com.", False),
        ("*.example.com", False),  # wildcard certificates are off
    ],
)
def test_plain_domain_with_subdomains(name: str, expected: bool) -> None:
    assert ok(EXAMPLE, name) is expected


def test_bare_domains_and_subdomains_switches() -> None:
    bare_only = NameRules(allowed_domains=("example.com",))
    assert ok(bare_only, "example.com") and not ok(bare_only, "www.example.com")
    subs_only = NameRules(allowed_domains=("example.com",), allow_subdomains=True, allow_bare_domains=False)
    assert not ok(subs_only, "example.com") and ok(subs_only, "www.example.com")
    # "*.d" patterns stay one label deep, whatever allow_subdomains says, and never allow d.
    deep = NameRules(allowed_domains=("*.svc.cluster.local",), allow_subdomains=True)
    assert ok(deep, "a.svc.cluster.local")
    assert not ok(deep, "a.b.svc.cluster.local")
    assert not ok(deep, "svc.cluster.local")


def test_wildcard_certificates() -> None:
    mesh = NameRules(allowed_domains=("*.svc.cluster.local",), allow_wildcard_certificates=True)
    assert ok(mesh, "*.svc.cluster.local")
    assert ok(mesh, "*.SVC.cluster.local")
    assert not ok(mesh, "*.cluster.local")
    assert not ok(mesh, "*.a.svc.cluster.local")
    assert not ok(mesh, "*.local")
    assert not ok(mesh, "*")
    assert not ok(mesh, "a*.svc.cluster.local")
    example = NameRules(allowed_domains=("example.com",), allow_subdomains=True, allow_wildcard_certificates=True)
    assert ok(example, "*.example.com")
    assert ok(example, "*.a.example.com")
    assert not ok(example, "*.com")
    assert not ok(example, "*.example.com.evil.com")
    exact = NameRules(allowed_domains=("example.com",), allow_wildcard_certificates=True)
    assert not ok(exact, "*.example.com")  # it would cover www.example.com, which the role does not allow


def test_localhost_and_any_name() -> None:
    assert not ok(NameRules(allowed_domains=()), "localhost")
    assert ok(NameRules(allowed_domains=(), allow_localhost=True), "localhost")
    assert ok(NameRules(allowed_domains=(), allow_localhost=True), "LOCALHOST")
    assert not ok(NameRules(allowed_domains=(), allow_localhost=True), "localhost.evil.com")
    anything = NameRules(allowed_domains=(), allow_any_name=True)
    assert ok(anything, "evil.com")
    for still_refused in ["evil.com.", "evil\x00.com", "bücher.de", "*.evil.com", "a..b", "10.0.0.1"]:
        assert not ok(anything, still_refused), still_refused
    assert not name_violations(anything, common_name="Billing Service", dns_names=[], ip_addresses=[],
                               uris=["spiffe://cluster.local/ns/a/sa/b"], emails=["ops@example.com"])
    for bad_cn in ["Billing\x00Service", " Billing", "Billing\tService", "Bïlling"]:
        assert name_violations(anything, common_name=bad_cn, dns_names=[], ip_addresses=[]), bad_cn
    for bad_uri in ["not a uri", "http://a b", "javascript", "x" * 3000]:
        assert name_violations(anything, common_name=None, dns_names=[], ip_addresses=[], uris=[bad_uri])
    for bad_email in ["ops", "a@b@c.com", "ops@", "ops@evil.com.", "ops@*.evil.com", "öps@example.com"]:
        assert name_violations(anything, common_name=None, dns_names=[], ip_addresses=[], emails=[bad_email])


def test_a_free_form_cn_needs_allow_any_name() -> None:
    assert name_violations(MESH, common_name="Billing Service", dns_names=[], ip_addresses=[])
    assert not name_violations(MESH, common_name="billing.svc.cluster.local", dns_names=[], ip_addresses=[])
    assert name_violations(MESH, common_name="x" * 65, dns_names=[], ip_addresses=[])


def test_enforce_hostnames_off_allows_underscores_but_nothing_dangerous() -> None:
    loose = NameRules(allowed_domains=("example.com",), allow_subdomains=True, enforce_hostnames=False)
    assert ok(loose, "_acme-challenge.example.com")
    assert ok(loose, "my_host.example.com")
    for name in ["evil.com", "a.example.com.", "a\x00.example.com", "a b.example.com", "ä.example.com",
                 "a/b.example.com", "a..example.com", "example.com.evil.com"]:
        assert not ok(loose, name), name


@pytest.mark.parametrize(
    ("rules", "address", "allowed"),
    [
        (NameRules(allowed_domains=(), allow_ip_sans=True), "10.0.0.1", True),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "2001:db8::1", True),
        (NameRules(allowed_domains=(), allow_ip_sans=True), ipaddress.ip_address("192.0.2.1"), True),
        (NameRules(allowed_domains=(), allow_ip_sans=False), "10.0.0.1", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("10.0.0.0/8",)), "10.255.0.1", True),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("10.0.0.0/8",)), "11.0.0.1", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("10.0.0.0/8",)), "::ffff:10.0.0.1",
         False),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("fd00::/8",)), "fd12::1", True),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("fd00::/8",)), "10.0.0.1", False),
        # A malformed range allows nothing; it does not fall back to "any".
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("10.0.0.1/8",)), "10.0.0.1", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=("bogus",)), "10.0.0.1", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "010.0.0.1", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "fe80::1%eth0", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "10.0.0.1 ", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "example.com", False),
        (NameRules(allowed_domains=(), allow_ip_sans=True), "１0.0.0.1", False),
    ],
)
def test_ip_rules(rules: NameRules, address: str, allowed: bool) -> None:
    assert (not name_violations(rules, common_name=None, dns_names=[], ip_addresses=[address])) is allowed


def test_numeric_looking_names_are_not_hostnames() -> None:
    anything = NameRules(allowed_domains=(), allow_any_name=True, enforce_hostnames=False)
    for name in ["10.0.0.1", "2130706433", "0x7f.1", "127.1", "1.2.3.4.5", "::1"]:
        assert not ok(anything, name), name


def test_role_pattern_and_range_validation() -> None:
    assert not allowed_domain_violations(["example.com", "*.svc.cluster.local", "xn--bcher-kva.example"])
    bad = ["", ".", "*", "*.com", "example.com.", "a*.example.com", "bücher.example", "a..b", 7, "10.0.0.1"]
    assert [v["field"] for v in allowed_domain_violations(bad)] == [f"allowed_domains[{i}]" for i in range(len(bad))]
    assert not allowed_ip_range_violations(["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"])
    assert len(allowed_ip_range_violations(["10.0.0.1/8", "10.0.0.1", "x", None, "fe80::/10%eth0"])) == 5


def test_a_wildcard_over_a_private_use_top_level_name_is_a_pattern_not_a_certificate_name() -> None:
    assert not allowed_domain_violations(["*.internal", "*.local"])
    rules = NameRules(allowed_domains=("*.internal",), allow_wildcard_certificates=True)
    assert ok(rules, "billing.internal")
    assert not ok(rules, "a.b.internal") and not ok(rules, "internal") and not ok(rules, "*.internal")
    assert allowed_domain_violations(["*.com", "*.net"])


def test_malformed_role_patterns_allow_nothing() -> None:
    for pattern in ["", ".", "*", "com.", "*.com", "a*.example.com"]:
        rules = NameRules(allowed_domains=(pattern,), allow_subdomains=True, allow_wildcard_certificates=True)
        for name in ["evil.com", "example.com", "a.example.com", "*.example.com", "com"]:
            assert not ok(rules, name), (pattern, name)


# Properties ---------------------------------------------------------------------------------------------------

LABEL = st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=12)
NOISY_LABEL = st.text(alphabet=string.ascii_letters + string.digits + "-_*.\x00 é", min_size=0, max_size=8)
BASES = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), min_size=2, max_size=3).map(
    ".".join
)
CANDIDATES = st.one_of(
    st.lists(st.one_of(LABEL, NOISY_LABEL), min_size=1, max_size=6).map(".".join),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(base=BASES, prefix=st.lists(st.one_of(LABEL, NOISY_LABEL), min_size=0, max_size=3), tail=CANDIDATES,
       wildcard=st.booleans(), subdomains=st.booleans())
def test_every_name_accepted_under_a_wildcard_pattern_is_exactly_one_label_below_it(
    base: str, prefix: list[str], tail: str, wildcard: bool, subdomains: bool
) -> None:
    rules = NameRules(allowed_domains=(f"*.{base}",), allow_wildcard_certificates=wildcard,
                      allow_subdomains=subdomains)
    for name in [".".join([*prefix, base]), ".".join([*prefix, base, tail]), tail, f"{tail}.{base}"]:
        if not name_violations(rules, common_name=None, dns_names=[name], ip_addresses=[]):
            lowered = name.lower()
            assert lowered.endswith("." + base)
            assert lowered.count(".") == base.count(".") + 1
            first = lowered.split(".")[0]
            assert first == "*" if "*" in lowered else first.isascii() and first.replace("-", "").isalnum()
            assert not wildcard or first != "*" or lowered == f"*.{base}"


@settings(max_examples=400, deadline=None)
@given(base=BASES, name=st.one_of(CANDIDATES, st.lists(LABEL, min_size=1, max_size=4).map(".".join)),
       bare=st.booleans(), wildcard=st.booleans())
def test_every_name_accepted_under_a_domain_is_that_domain_or_below_it(
    base: str, name: str, bare: bool, wildcard: bool
) -> None:
    rules = NameRules(allowed_domains=(base,), allow_subdomains=True, allow_bare_domains=bare,
                      allow_wildcard_certificates=wildcard)
    for candidate in [name, f"{name}.{base}"]:
        if not name_violations(rules, common_name=None, dns_names=[candidate], ip_addresses=[]):
            lowered = candidate.lower()
            assert lowered == base and bare or lowered.endswith("." + base)


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=80), subdomains=st.booleans(), any_name=st.booleans(), hostnames=st.booleans())
def test_every_accepted_name_is_plain_ascii_dns_a_certificate_can_hold(
    name: str, subdomains: bool, any_name: bool, hostnames: bool
) -> None:
    rules = NameRules(allowed_domains=("example.com", "*.svc.cluster.local"), allow_subdomains=subdomains,
                      allow_any_name=any_name, enforce_hostnames=hostnames, allow_wildcard_certificates=True)
    for candidate in [name, f"{name}.example.com", f"{name}.svc.cluster.local"]:
        if name_violations(rules, common_name=None, dns_names=[candidate], ip_addresses=[]):
            continue
        assert candidate.isascii() and candidate.isprintable() and " " not in candidate
        assert not candidate.endswith(".") and ".." not in candidate and len(candidate) <= 253
        assert all(0 < len(label) <= 63 for label in candidate.split("."))
        assert "*" not in candidate[1:]
        x509.DNSName(candidate)  # cryptography takes it as an A-label string
        if hostnames:
            for label in candidate.lower().split("."):
                if label.startswith("xn--"):
                    assert idna.encode(idna.decode(label)).decode() == label


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=string.ascii_letters + string.digits + ".-*", max_size=40))
def test_rules_are_case_insensitive(name: str) -> None:
    rules = NameRules(allowed_domains=("Example.COM", "*.svc.cluster.local"), allow_subdomains=True,
                      allow_wildcard_certificates=True)
    results = {
        bool(name_violations(rules, common_name=None, dns_names=[variant], ip_addresses=[]))
        for variant in (name, name.lower(), name.upper(), name.swapcase())
    }
    assert len(results) == 1


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=60), address=st.one_of(st.ip_addresses(), st.text(max_size=20)))
def test_a_role_allowing_nothing_allows_nothing(name: str, address: object) -> None:
    nothing = NameRules(allowed_domains=())
    assert name_violations(nothing, common_name=name or "x", dns_names=[name], ip_addresses=[address],
                           uris=[name], emails=[name])
    assert len(name_violations(nothing, common_name=None, dns_names=[name], ip_addresses=[address])) == 2


@settings(max_examples=300, deadline=None)
@given(address=st.ip_addresses(), cidr=st.sampled_from(["10.0.0.0/8", "192.168.0.0/16", "fd00::/8", "2001:db8::/32"]))
def test_every_accepted_ip_is_inside_an_allowed_range(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str
) -> None:
    rules = NameRules(allowed_domains=(), allow_ip_sans=True, allowed_ip_ranges=(cidr,))
    accepted = not name_violations(rules, common_name=None, dns_names=[], ip_addresses=[str(address)])
    network = ipaddress.ip_network(cidr)
    assert accepted is (address.version == network.version and address in network)


@settings(max_examples=200, deadline=None)
@given(inner=st.text(min_size=1, max_size=10))
def test_anything_smuggled_inside_an_allowed_name_is_refused(inner: str) -> None:
    assume(not all(c.isascii() and (c.isalnum() or c == "-") for c in inner))
    assume("." not in inner or any(not c.isascii() for c in inner))
    for name in [f"billing{inner}.svc.cluster.local", f"billing.svc.cluster.local{inner}"]:
        assert not ok(MESH, name), name


def test_unicode_that_lower_cases_to_ascii_is_refused() -> None:
    kube = NameRules(allowed_domains=("*.svc.kube.local",))
    assert ok(kube, "billing.svc.kube.local")
    assert "\u212a".lower() == "k"  # KELVIN SIGN
    assert not ok(kube, "billing.svc.\u212aube.local")
    assert not ok(kube, "b\u0130lling.svc.kube.local")  # LATIN CAPITAL I WITH DOT ABOVE


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("billing.svc.cluster.local.", "end with a dot"),
        ("billing..svc.cluster.local", "empty labels"),
        ("a*.svc.cluster.local", "whole leftmost label"),
        ("bïlling.svc.cluster.local", "A-labels"),
        ("evil.com", "does not allow"),
        ("*.svc.cluster.local", "wildcard certificates are not allowed"),
    ],
)
def test_each_refusal_says_why(name: str, words: str) -> None:
    [violation] = name_violations(MESH, common_name=None, dns_names=[name], ip_addresses=[])
    assert words in violation["message"]
