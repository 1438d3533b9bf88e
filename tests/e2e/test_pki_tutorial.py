"""The mTLS service-mesh tutorial (spec tutorials/mtls-service-mesh) played through over HTTP, with the chain checked
by ``openssl verify`` as a relying party would, and revocation seen by openssl through the CRL and OCSP."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.pki_helpers import build_hierarchy, openssl, pki_admin, post


async def test_the_mtls_tutorial(client: TestClient, container: Container, tmp_path: Path) -> None:
    headers = pki_admin(container)
    root, intermediate = await build_hierarchy(client, headers)
    assert root["id"].startswith("ca_") and root["valid_until"].startswith("2036") or root["valid_until"] > "2035"
    assert root["is_active"] is True and root["certificates_issued"] == 0
    exported = await client.get(f"/v1/pki/ca/{root['id']}/certificate", headers=headers)
    (tmp_path / "acme-root.pem").write_text((await exported.json())["certificate_pem"])

    issued = await post(client, "/v1/pki/issue/svc-mtls", headers, {
        "common_name": "billing.svc.cluster.local", "ttl": "168h",
    }, status=200)
    assert {"certificate", "private_key", "ca_chain", "serial_number", "not_after"} <= set(issued)
    (tmp_path / "leaf.pem").write_text(issued["certificate"])
    (tmp_path / "inter.pem").write_text(issued["ca_chain"][0])
    verified = openssl("verify", "-CAfile", "acme-root.pem", "-untrusted", "inter.pem", "leaf.pem", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr

    refused = await client.post("/v1/pki/issue/svc-mtls", headers=headers, json={"common_name": "evil.com"})
    assert refused.status == 422

    fetched = await client.get(f"/v1/pki/certificates/{issued['id']}", headers=headers)
    assert (await fetched.json())["status"] == "valid"
    counted = await client.get(f"/v1/pki/ca/{intermediate['id']}", headers=headers)
    assert (await counted.json())["certificates_issued"] == 1

    revoked = await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", headers,
                         {"reason": "key_compromise"}, status=200)
    assert revoked["status"] == "revoked" and revoked["revocation_reason"] == "key_compromise"

    crl = await client.get(f"/v1/pki/ca/{intermediate['id']}/crl", headers={"Accept": "application/x-pem-file"})
    assert crl.status == 200
    (tmp_path / "crl.pem").write_text(await crl.text())
    (tmp_path / "chain.pem").write_text((tmp_path / "acme-root.pem").read_text() + issued["ca_chain"][0])
    checked = openssl("verify", "-crl_check", "-CAfile", "chain.pem", "-CRLfile", "crl.pem", "leaf.pem", cwd=tmp_path)
    assert checked.returncode != 0 and "revoked" in (checked.stdout + checked.stderr)

    request = openssl("ocsp", "-issuer", "inter.pem", "-cert", "leaf.pem", "-reqout", "req.der", "-no_nonce",
                      cwd=tmp_path)
    assert request.returncode == 0, request.stderr
    answer = await client.post(f"/v1/pki/ca/{intermediate['id']}/ocsp", data=(tmp_path / "req.der").read_bytes(),
                               headers={"Content-Type": "application/ocsp-request"})
    (tmp_path / "resp.der").write_bytes(await answer.read())
    status = openssl("ocsp", "-issuer", "inter.pem", "-cert", "leaf.pem", "-respin", "resp.der",
                     "-CAfile", "chain.pem", "-resp_text", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "leaf.pem: revoked" in status.stdout and "keyCompromise" in status.stdout
