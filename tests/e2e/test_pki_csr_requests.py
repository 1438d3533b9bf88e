"""The CSR workflow over HTTP (spec core-concepts/pki, "CSR workflow"; docs/pki.md, "CSR requests"): a vendor's CSR
submitted with ``pki:issue``, checked at once, reviewed and approved by another person (four-eyes) or rejected; the
approved certificate checked by ``openssl verify``; who sees which requests; and every refusal leaving the log as it
was."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509

from projections.maintenance.rebuild import Rebuilder
from scaivault.bootstrap import Container, read_models
from tests.e2e.conftest import OTHER_TENANT, TENANT
from tests.e2e.helpers import caller_token
from tests.e2e.pki_helpers import (
    PKI_SCOPES,
    create_ca,
    create_role,
    error_of,
    event_count,
    fields_of,
    get,
    make_csr,
    make_key,
    openssl,
    pki_admin,
    post,
    write,
)

CSRS = "/v1/pki/csrs"


def vendor(container: Container, name: str = "sa:vendor-portal", tenant: str = TENANT) -> dict[str, str]:
    """A requester that may submit but never decide: ``pki:issue`` only, no role."""
    return caller_token(container, "pki:issue", identity=name, tenant=tenant)


def second_admin(container: Container) -> dict[str, str]:
    return caller_token(container, *PKI_SCOPES, identity="user:bob@acme.example", roles=("tenant_admin",))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def submit(client: TestClient, headers: dict[str, str], csr_pem: str, role: str = "svc-mtls", *,
                 status: int = 201, **fields: Any) -> dict[str, Any]:
    return await post(client, CSRS, headers, {"csr_pem": csr_pem, "role": role, **fields}, status=status)


async def certificates_issued(container: Container) -> int:
    return int(await container.pool.fetchval("SELECT count(*) FROM scaivault_pki_certificates"))


@pytest.fixture
async def hierarchy(client: TestClient, container: Container) -> tuple[dict[str, Any], dict[str, Any]]:
    """A root, an intermediate under it, and the role ``svc-mtls`` issuing from the intermediate."""
    admin = pki_admin(container)
    root = await create_ca(client, admin, "acme-root", key_type="ec", key_size=256)
    intermediate = await create_ca(client, admin, "acme-mtls", ca_type="intermediate", parent_ca_id=root["id"],
                                   key_type="ec", key_size=256, validity_days=1825)
    await create_role(client, admin, "svc-mtls", intermediate["id"],
                      allowed_domains=["*.svc.cluster.local", "*.acme.internal"], max_ttl="720h")
    return root, intermediate


async def test_a_vendor_csr_is_submitted_reviewed_approved_and_verifies(
    client: TestClient, container: Container, tmp_path: Path, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    root, intermediate = hierarchy
    admin, requester = pki_admin(container), vendor(container)
    # The vendor makes its key and CSR with openssl; the key never leaves its machine.
    made = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", "vendor.key", "-out", "vendor.csr", "-subj", "/CN=billing.svc.cluster.local",
                   "-addext", "subjectAltName=DNS:billing.svc.cluster.local,DNS:api.acme.internal", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    csr_pem = (tmp_path / "vendor.csr").read_text()

    response = await client.post(CSRS, json={"csr_pem": csr_pem, "role": "svc-mtls", "ttl": "168h",
                                             "note": "billing vendor, ticket OPS-1234"}, headers=requester)
    submitted = await response.json()
    assert response.status == 201, submitted
    assert response.headers["Location"] == f"/v1/pki/csrs/{submitted['id']}"
    assert submitted["id"].startswith("csr_") and submitted["status"] == "pending"
    assert submitted["role"] == "svc-mtls" and submitted["common_name"] == "billing.svc.cluster.local"
    assert submitted["alt_names"] == ["billing.svc.cluster.local", "api.acme.internal"] and submitted["ip_sans"] == []
    assert (submitted["key_type"], submitted["key_bits"]) == ("ec", 256)
    assert submitted["ttl"] == "1w" and submitted["note"] == "billing vendor, ticket OPS-1234"
    assert submitted["requested_by"] == "sa:vendor-portal" and submitted["requested_at"]
    assert submitted["csr_pem"].strip() == csr_pem.strip()
    assert submitted["certificate_id"] is None and "certificate" not in submitted
    assert await certificates_issued(container) == 0  # nothing is signed before the review

    assert (await get(client, f"{CSRS}/{submitted['id']}", requester))["status"] == "pending"
    pending = await get(client, f"{CSRS}?status=pending", admin)
    assert [r["id"] for r in pending["csrs"]] == [submitted["id"]]

    # The requester cannot approve (no pki:admin), the reviewer can.
    refused = await client.post(f"{CSRS}/{submitted['id']}/approve", headers=requester)
    await error_of(refused, 403, "insufficient_scope")
    response = await client.post(f"{CSRS}/{submitted['id']}/approve", headers=admin)
    approved = await response.json()
    assert response.status == 200, approved
    assert approved["status"] == "approved" and approved["decided_by"] == "user:admin@acme.example"
    assert approved["certificate_id"].startswith("cert_") and approved["decided_at"]
    assert len(approved["ca_chain"]) == 2

    write(tmp_path, "root.pem", approved["ca_chain"][-1])
    write(tmp_path, "inter.pem", approved["ca_chain"][0])
    write(tmp_path, "leaf.pem", approved["certificate"])
    exported = await client.get(f"/v1/pki/ca/{root['id']}/certificate", headers={"Accept": "application/x-pem-file"})
    assert (await exported.text()).strip() == approved["ca_chain"][-1].strip()
    verified = openssl("verify", "-CAfile", "root.pem", "-untrusted", "inter.pem", "leaf.pem", cwd=tmp_path)
    assert verified.returncode == 0 and "leaf.pem: OK" in verified.stdout, verified.stdout + verified.stderr
    # The certificate is for the vendor's own key, and names what was reviewed.
    matches = openssl("x509", "-in", "leaf.pem", "-noout", "-pubkey", cwd=tmp_path).stdout
    assert matches == openssl("pkey", "-in", "vendor.key", "-pubout", cwd=tmp_path).stdout
    leaf = x509.load_pem_x509_certificate(approved["certificate"].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert names == ["billing.svc.cluster.local", "api.acme.internal"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=7) <= lifetime <= timedelta(days=7, minutes=2)

    certificate = await get(client, f"/v1/pki/certificates/{approved['certificate_id']}", admin)
    assert certificate["source"] == "csr" and certificate["ca_id"] == intermediate["id"]
    assert certificate["issued_by"] == "user:admin@acme.example"
    # The requester reads its approved request, certificate included.
    mine = await get(client, f"{CSRS}/{submitted['id']}", requester)
    assert mine["certificate"] == approved["certificate"] and mine["status"] == "approved"

    # Decided once: neither a second approval nor a rejection changes anything.
    before = await event_count(container)
    again = await client.post(f"{CSRS}/{submitted['id']}/approve", headers=second_admin(container))
    error = await error_of(again, 409, "csr_not_pending")
    assert "approved" in error["message"]
    rejected = await client.post(f"{CSRS}/{submitted['id']}/reject", json={"reason": "late"}, headers=admin)
    await error_of(rejected, 409, "csr_not_pending")
    assert await event_count(container) == before and await certificates_issued(container) == 1



async def test_the_requester_never_approves_its_own_request(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin = pki_admin(container)  # holds pki:issue too: it may submit
    submitted = await submit(client, admin, make_csr(make_key(), "reporting.svc.cluster.local"))
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{submitted['id']}/approve", headers=admin)
    error = await error_of(refused, 403, "forbidden")
    assert "four-eyes" in error["message"] and "other than its requester" in error["message"]
    assert await event_count(container) == before and await certificates_issued(container) == 0
    assert (await get(client, f"{CSRS}/{submitted['id']}", admin))["status"] == "pending"

    approved = await post(client, f"{CSRS}/{submitted['id']}/approve", second_admin(container), {}, status=200)
    assert approved["status"] == "approved" and approved["decided_by"] == "user:bob@acme.example"


async def test_a_rejected_request_says_why_and_stays_rejected(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin, requester = pki_admin(container), vendor(container)
    submitted = await submit(client, requester, make_csr(make_key(), "billing.svc.cluster.local"))
    for body, field in (({}, "reason"), ({"reason": "   "}, "reason"), ({"reason": "x" * 1025}, "reason"),
                        ({"reason": 7}, "reason"), ({"reason": "no", "extra": 1}, "extra")):
        refused = await client.post(f"{CSRS}/{submitted['id']}/reject", json=body, headers=admin)
        assert field in fields_of(await error_of(refused, 422, "validation_error"))
    refused = await client.post(f"{CSRS}/{submitted['id']}/reject", json={"reason": "no"}, headers=requester)
    await error_of(refused, 403, "insufficient_scope")

    rejected = await post(client, f"{CSRS}/{submitted['id']}/reject", admin,
                          {"reason": "  The vendor contract ended  "}, status=200)
    assert rejected["status"] == "rejected" and rejected["rejection_reason"] == "The vendor contract ended"
    assert rejected["decided_by"] == "user:admin@acme.example" and rejected["certificate_id"] is None
    mine = await get(client, f"{CSRS}/{submitted['id']}", requester)
    assert mine["rejection_reason"] == "The vendor contract ended" and "certificate" not in mine

    before = await event_count(container)
    for action, body in (("approve", {}), ("reject", {"reason": "again"})):
        refused = await client.post(f"{CSRS}/{submitted['id']}/{action}", json=body, headers=second_admin(container))
        await error_of(refused, 409, "csr_not_pending")
    assert await event_count(container) == before and await certificates_issued(container) == 0
    listed = await get(client, f"{CSRS}?status=rejected", admin)
    assert [r["id"] for r in listed["csrs"]] == [submitted["id"]]
    assert (await get(client, f"{CSRS}?status=pending", admin))["csrs"] == []


async def test_a_submission_is_checked_like_a_signing_and_a_refusal_appends_nothing(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    requester = vendor(container)
    good = make_csr(make_key(), "billing.svc.cluster.local")
    tampered = good.replace(good.splitlines()[3], good.splitlines()[3][:-4] + "AAAA")
    before = await event_count(container)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"csr_pem": "not a csr", "role": "svc-mtls"}, 400, "invalid_csr"),
        ({"csr_pem": tampered, "role": "svc-mtls"}, 400, "invalid_csr"),
        ({"csr_pem": good, "role": "no-such-role"}, 404, "role_not_found"),
        ({"csr_pem": good, "role": "bad name/../x"}, 404, "role_not_found"),
        ({"csr_pem": make_csr(make_key(), "evil.com"), "role": "svc-mtls"}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "alt_names": ["x.example.org"]}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "ip_sans": ["10.0.0.1"]}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "ttl": "9000h"}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "ttl": "soon"}, 422, "validation_error"),
        ({"csr_pem": make_csr(make_key("rsa2048"), "billing.svc.cluster.local"), "role": "svc-mtls"}, 422,
         "validation_error"),
        ({"csr_pem": make_csr(make_key(), "billing.svc.cluster.local", general_names=(
            x509.UniformResourceIdentifier("spiffe://acme/billing"),)), "role": "svc-mtls"}, 422,
         "validation_error"),
        ({"csr_pem": good}, 422, "validation_error"),
        ({"role": "svc-mtls"}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "note": "x" * 1025}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "alt_names": "billing.svc.cluster.local"}, 422, "validation_error"),
        ({"csr_pem": good, "role": "svc-mtls", "unknown": True}, 422, "validation_error"),
        ({"csr_pem": ["x"], "role": "svc-mtls"}, 422, "validation_error"),
        ({"csr_pem": "x" * 70_000, "role": "svc-mtls"}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await client.post(CSRS, json=body, headers=requester)
        await error_of(response, status, code)
    assert await event_count(container) == before
    assert (await get(client, CSRS, pki_admin(container)))["csrs"] == []
    # The role's own rules name the field at fault, as signing does.
    refused = await client.post(CSRS, json={"csr_pem": good, "role": "svc-mtls", "ttl": "9000h"}, headers=requester)
    assert "ttl" in fields_of(await error_of(refused, 422, "validation_error"))


async def test_names_given_with_the_request_replace_the_csrs(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    csr_pem = make_csr(make_key(), "ignored.example", dns_names=("ignored.example",))
    submitted = await submit(client, vendor(container), csr_pem, common_name="ledger.svc.cluster.local",
                             alt_names=["Ledger.svc.cluster.local", "ledger.acme.internal"], ttl="24h")
    assert submitted["common_name"] == "ledger.svc.cluster.local"
    assert submitted["alt_names"] == ["ledger.svc.cluster.local", "ledger.acme.internal"] and submitted["ttl"] == "1d"
    approved = await post(client, f"{CSRS}/{submitted['id']}/approve", pki_admin(container), {"ttl": "2h"}, status=200)
    assert approved["ttl"] == "2h"
    leaf = x509.load_pem_x509_certificate(approved["certificate"].encode())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(hours=2, minutes=2)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert "ignored.example" not in names and "ledger.acme.internal" in names


async def test_an_approval_the_role_no_longer_allows_changes_nothing(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin = pki_admin(container)
    submitted = await submit(client, vendor(container), make_csr(make_key(), "billing.svc.cluster.local"))
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{submitted['id']}/approve", json={"ttl": "9000h"}, headers=admin)
    assert "ttl" in fields_of(await error_of(refused, 422, "validation_error"))
    refused = await client.post(f"{CSRS}/{submitted['id']}/approve", json={"ttl": 5}, headers=admin)
    await error_of(refused, 422, "validation_error")
    # The role was narrowed after the submission: the approval checks the role as it is now.
    patched = await client.patch("/v1/pki/roles/svc-mtls", json={"allowed_domains": ["*.acme.internal"]}, headers=admin)
    assert patched.status == 200, await patched.json()
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{submitted['id']}/approve", headers=admin)
    await error_of(refused, 422, "validation_error")
    assert await event_count(container) == before and await certificates_issued(container) == 0
    assert (await get(client, f"{CSRS}/{submitted['id']}", admin))["status"] == "pending"


async def test_a_request_whose_role_was_deleted_or_whose_ca_was_revoked_is_not_signed(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin, requester = pki_admin(container), vendor(container)
    _, intermediate = hierarchy
    orphan = await submit(client, requester, make_csr(make_key(), "billing.svc.cluster.local"))
    deleted = await client.delete("/v1/pki/roles/svc-mtls", headers=admin)
    assert deleted.status == 204
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{orphan['id']}/approve", headers=admin)
    error = await error_of(refused, 404, "role_not_found")
    assert "svc-mtls" in error["message"] and "deleted" in error["message"]
    assert error["details"]["csr_id"] == orphan["id"]
    # A new role of the same name is another grant: the request was not reviewed against it.
    await create_role(client, admin, "svc-mtls", intermediate["id"], allowed_domains=["*.svc.cluster.local"],
                      allow_subdomains=True)
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{orphan['id']}/approve", headers=admin)
    await error_of(refused, 404, "role_not_found")
    assert await event_count(container) == before and await certificates_issued(container) == 0
    assert (await get(client, f"{CSRS}/{orphan['id']}", admin))["status"] == "pending"

    other_root = await create_ca(client, admin, "vendor-root", key_type="ec", key_size=256)
    await create_role(client, admin, "vendors", other_root["id"], allowed_domains=["*.vendor.example"])
    waiting = await submit(client, requester, make_csr(make_key(), "a.vendor.example"), "vendors")
    revoked = await client.post(f"/v1/pki/ca/{other_root['id']}/revoke", json={"reason": "compromised"},
                                headers=admin)
    assert revoked.status == 200, await revoked.json()
    before = await event_count(container)
    refused = await client.post(f"{CSRS}/{waiting['id']}/approve", headers=admin)
    error = await error_of(refused, 409, "ca_not_active")
    assert "revoked" in error["message"]
    assert await event_count(container) == before and await certificates_issued(container) == 0
    assert (await get(client, f"{CSRS}/{waiting['id']}", admin))["status"] == "pending"
    # Such a request is rejected, which is allowed whatever became of its role.
    await post(client, f"{CSRS}/{orphan['id']}/reject", admin, {"reason": "role retired"}, status=200)
    # A submission under a revoked CA's role is refused at once.
    refused = await client.post(CSRS, json={"csr_pem": make_csr(make_key(), "b.vendor.example"), "role": "vendors"},
                                headers=requester)
    await error_of(refused, 409, "ca_not_active")


async def test_who_sees_and_decides_which_requests(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin, alice, bob = pki_admin(container), vendor(container, "sa:alice"), vendor(container, "sa:bob")
    first = await submit(client, alice, make_csr(make_key(), "a.svc.cluster.local"))
    second = await submit(client, bob, make_csr(make_key(), "b.svc.cluster.local"))
    third = await submit(client, alice, make_csr(make_key(), "c.svc.cluster.local"))

    assert [r["id"] for r in (await get(client, CSRS, alice))["csrs"]] == [first["id"], third["id"]]
    assert [r["id"] for r in (await get(client, CSRS, bob))["csrs"]] == [second["id"]]
    await error_of(await client.get(f"{CSRS}/{second['id']}", headers=alice), 404, "csr_not_found")
    assert (await get(client, f"{CSRS}/{second['id']}", bob))["requested_by"] == "sa:bob"

    # The reviewer pages through everybody's; a cursor is bound to its status filter.
    page = await get(client, f"{CSRS}?limit=2", admin)
    assert [r["id"] for r in page["csrs"]] == [first["id"], second["id"]] and page["has_more"] is True
    rest = await get(client, f"{CSRS}?limit=2&cursor={page['cursor']}", admin)
    assert [r["id"] for r in rest["csrs"]] == [third["id"]] and rest["has_more"] is False
    await error_of(await client.get(f"{CSRS}?status=pending&cursor={page['cursor']}", headers=admin), 400,
                   "invalid_cursor")
    await error_of(await client.get(f"{CSRS}?status=maybe", headers=admin), 400, "invalid_request")
    await error_of(await client.get(f"{CSRS}?limit=0", headers=admin), 400, "invalid_request")

    # Scopes: none of pki's refuses everything; pki:admin without an admin role reads but cannot decide.
    nobody = caller_token(container, "secrets:read", identity="sa:nobody")
    for method, path in (("GET", CSRS), ("GET", f"{CSRS}/{first['id']}"), ("POST", CSRS),
                         ("POST", f"{CSRS}/{first['id']}/approve"), ("POST", f"{CSRS}/{first['id']}/reject")):
        await error_of(await client.request(method, path, json={}, headers=nobody), 403, "insufficient_scope")
    auditor = caller_token(container, "pki:admin", identity="user:auditor@acme.example")
    assert len((await get(client, CSRS, auditor))["csrs"]) == 3
    before = await event_count(container)
    await error_of(await client.post(f"{CSRS}/{first['id']}/approve", headers=auditor), 403, "access_denied")
    await error_of(await client.post(f"{CSRS}/{first['id']}/reject", json={"reason": "x"}, headers=auditor), 403,
                   "access_denied")
    assert await event_count(container) == before

    # Another tenant's administrator finds nothing, exactly like a missing id.
    stranger = caller_token(container, *PKI_SCOPES, identity="user:eve@acme.example", tenant=OTHER_TENANT,
                            roles=("tenant_admin",))
    assert (await get(client, CSRS, stranger))["csrs"] == []
    for method, suffix, body in (("GET", "", None), ("POST", "/approve", {}), ("POST", "/reject", {"reason": "x"})):
        response = await client.request(method, f"{CSRS}/{first['id']}{suffix}", json=body, headers=stranger)
        missing = await client.request(method, f"{CSRS}/csr_missing{suffix}", json=body, headers=stranger)
        theirs, unknown = await error_of(response, 404, "csr_not_found"), await error_of(missing, 404, "csr_not_found")
        assert theirs["message"] == unknown["message"] and theirs["details"] == {"csr_id": first["id"]}
    assert await event_count(container) == before

    # The tenant's path works as the token's tenant does.
    listed = await get(client, f"/v1/t/{TENANT}/pki/csrs", admin)
    assert len(listed["csrs"]) == 3


async def test_bad_input_never_gets_a_500(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin = pki_admin(container)
    decided = await submit(client, vendor(container), make_csr(make_key(), "billing.svc.cluster.local"))
    await post(client, f"{CSRS}/{decided['id']}/reject", admin, {"reason": "fuzzed"}, status=200)
    before = await event_count(container)
    odd_ids = ["x" * 65, "csr_%00", "%F0%9F%92%A9", "..%2F..", "csr_" + "0" * 26]
    bodies: list[Any] = [None, "", "[]", "null", "{", "{}", '{"ttl": null}', '{"ttl": "' + "9" * 40 + '"}',
                         '{"reason": "\\u0000"}', '{"ttl": "1h\\u0000"}', '{"csr_pem": "\\ud800", "role": "x"}',
                         '{"csr_pem": 1e999, "role": "x"}', '{"role": "svc-mtls", "csr_pem": "-----BEGIN"}',
                         '{"role": "svc-mtls\\u0000", "csr_pem": "x"}', '{"reason": ' + "[" * 40 + "]" * 40 + "}"]
    paths = [CSRS, f"{CSRS}/{decided['id']}/approve", f"{CSRS}/{decided['id']}/reject",
             *[f"{CSRS}/{odd}/approve" for odd in odd_ids], *[f"{CSRS}/{odd}/reject" for odd in odd_ids]]
    for path in paths:
        for body in bodies:
            response = await client.post(path, data=body, headers={**admin, "Content-Type": "application/json"})
            assert 400 <= response.status < 500, (path, body, response.status, await response.text())
    for odd in odd_ids:
        response = await client.get(f"{CSRS}/{odd}", headers=admin)
        assert response.status == 404, await response.text()
    for query in ("limit=-1", "limit=abc", "cursor=%00", "cursor=" + "A" * 5000, "status="):
        response = await client.get(f"{CSRS}?{query}", headers=admin)
        assert response.status == 400, (query, await response.text())
    assert await event_count(container) == before


async def test_the_read_models_rebuild_identically_from_the_events(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin, requester = pki_admin(container), vendor(container)
    approved = await submit(client, requester, make_csr(make_key(), "a.svc.cluster.local"), note="first")
    await post(client, f"{CSRS}/{approved['id']}/approve", admin, {"ttl": "1h"}, status=200)
    rejected = await submit(client, requester, make_csr(make_key(), "b.svc.cluster.local"))
    await post(client, f"{CSRS}/{rejected['id']}/reject", admin, {"reason": "duplicate"}, status=200)
    await submit(client, requester, make_csr(make_key(), "c.svc.cluster.local"))
    root = await get(client, "/v1/pki/ca", admin)
    root_pem = (await get(client, f"/v1/pki/ca/{root['certificate_authorities'][0]['id']}/certificate",
                          admin))["certificate_pem"]
    # An internal root given as an anchor of another name: any CA certificate will do here.
    kept = await post(client, "/v1/pki/trust-anchors", admin, {"name": "kept", "certificate_pem": root_pem})
    assert kept["status"] == "valid"
    _, intermediate = hierarchy
    inter_pem = (await get(client, f"/v1/pki/ca/{intermediate['id']}/certificate", admin))["certificate_pem"]
    gone = await post(client, "/v1/pki/trust-anchors", admin, {"name": "gone", "certificate_pem": inter_pem})
    assert (await client.delete(f"/v1/pki/trust-anchors/{gone['id']}", headers=admin)).status == 204
    (model,) = [m for m in read_models(container.keyring) if m.name == "pki_requests"]
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    report = await rebuilder.verify(model)
    assert report["identical"], report
    assert set(report["tables"]) == {"scaivault_pki_csr_requests", "scaivault_pki_trust_anchors"}


async def test_concurrent_decisions_sign_at_most_once(
    client: TestClient, container: Container, hierarchy: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    admin, bob, requester = pki_admin(container), second_admin(container), vendor(container)
    for attempt in range(3):
        submitted = await submit(client, requester, make_csr(make_key(), f"r{attempt}.svc.cluster.local"))
        path = f"{CSRS}/{submitted['id']}"
        decisions = [client.post(f"{path}/approve", headers=admin), client.post(f"{path}/approve", headers=bob)]
        if attempt == 2:
            decisions.append(client.post(f"{path}/reject", json={"reason": "race"}, headers=bob))
        responses = await asyncio.gather(*decisions)
        statuses = sorted(response.status for response in responses)
        assert statuses.count(200) == 1 and set(statuses) <= {200, 409}, statuses
        final = await get(client, path, admin)
        issued = await container.pool.fetchval(
            "SELECT count(*) FROM scaivault_pki_certificates WHERE certificate_id = $1", final["certificate_id"])
        assert final["status"] in ("approved", "rejected")
        assert issued == (1 if final["status"] == "approved" else 0)
    assert await certificates_issued(container) == len(
        [r for r in (await get(client, CSRS, admin))["csrs"] if r["status"] == "approved"])
