"""/v1/secrets and /v1/partner/secrets: the Secrets API (spec api-guides/secrets, core-concepts/secrets,
api-guides/batch-operations, and the spec README's decisions). Reads in ``reads.py``, changes in ``writes.py``."""

from __future__ import annotations

from scaivault.http.routing import RouteTable
from scaivault.http.secrets.addressing import PARTNER_BASE
from scaivault.http.secrets.reads import SecretReadsApi
from scaivault.http.secrets.writes import SecretWritesApi

BASES = ("/v1/secrets", "/v1/t/{tenant_id}/secrets", PARTNER_BASE)

__all__ = ["SecretReadsApi", "SecretWritesApi", "add_routes"]


def add_routes(table: RouteTable, reads: SecretReadsApi, writes: SecretWritesApi) -> None:
    """The Secrets API for the token's tenant, under /v1/t/{tenant_id}/ for partner admins, and for partner
    secrets under /v1/partner/secrets. Sub-resources come before the catch-all secret path. Actions: the spec's
    (reference/audit)."""
    for base in BASES:
        table.add("POST", base + "/batch", reads.batch_read, action="read")
        table.add("POST", base + "/batch/metadata", reads.batch_metadata, action="list")
        table.add("GET", base, reads.list_secrets, action="list")
        table.add("GET", base + "/{path:.+}/versions", reads.list_versions, action="list")
        table.add("GET", base + "/{path:.+}/metadata", reads.read_metadata, action="list")
        table.add("PATCH", base + "/{path:.+}/metadata", writes.update_metadata, action="write")
        table.add("POST", base + "/{path:.+}/restore", writes.restore_secret, action="write")
        table.add("GET", base + "/{path:.+}", reads.read_secret, action="read")
        table.add("PUT", base + "/{path:.+}", writes.write_secret, action="write")
        table.add("DELETE", base + "/{path:.+}", writes.delete_secret, action="delete")
