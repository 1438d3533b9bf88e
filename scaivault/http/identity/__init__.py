"""/v1/identity: the identity mirror (spec reference/identity; decisions in docs/identity.md). Reads in ``reads.py``,
changes in ``management.py``, sync runs in ``sync.py``, the ScaiKey webhook receiver in ``webhooks.py``.

Users and groups are always those of one tenant: the path's ``{tenant_id}``, else ``/v1/t/{tenant_id}/``,
``X-Tenant-ID`` or the token's tenant (scaivault/http/context.py). Another tenant's user or group answers exactly
like a missing one (404 ``identity_not_found``). Lists page with ``page``/``page_size`` and carry ``total``.
"""

from __future__ import annotations

from scaivault.http.identity.management import IdentityManagementApi
from scaivault.http.identity.reads import IdentityReadsApi
from scaivault.http.identity.sync import IdentitySyncApi
from scaivault.http.identity.webhooks import ScaiKeyWebhookApi

__all__ = ["IdentityManagementApi", "IdentityReadsApi", "IdentitySyncApi", "ScaiKeyWebhookApi"]
