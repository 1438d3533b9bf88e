"""Operator quotas on what a tenant or an identity may hold (docs/configuration.md; the answer in
docs/api-decisions.md). Each webhook and subscription adds fan-out work to every event of its tenant, so their number
is bounded by the operator's settings. Pure: the creating command counts what exists, in its transaction and under a
lock that makes concurrent creators take turns (``UnitOfWork.lock``), and asks the quota here.

``QuotaExceeded`` (409 ``quota_exceeded``, details ``{resource, limit, current}``) is the one error of every quota;
``resource`` names the quota as its setting does, in lower case (``webhooks_per_tenant``).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaivault.domain.errors import QuotaExceeded

WEBHOOKS_PER_TENANT = "webhooks_per_tenant"
SUBSCRIPTIONS_PER_IDENTITY = "subscriptions_per_identity"
SUBSCRIPTIONS_PER_TENANT = "subscriptions_per_tenant"
# The lease explosion guard (docs/dynamic-secrets.md): open leases of a tenant, and of one role.
LEASES_PER_TENANT = "leases_per_tenant"
LEASES_PER_ROLE = "leases_per_role"


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` of ``resource``."""

    resource: str
    limit: int
    remedy: str = "delete one first"

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("a quota allows at least one")

    def check_room_for_one(self, current: int) -> None:
        """Raise ``QuotaExceeded`` unless one more fits beside the ``current`` ones (also when an operator lowered the
        limit below what already exists: nothing is removed, but nothing is added either)."""
        if current >= self.limit:
            raise QuotaExceeded(
                f"The quota of {self.limit} {self.resource.replace('_', ' ')} is reached; {self.remedy}",
                resource=self.resource, limit=self.limit, current=current,
            )
