"""Quotas: one more fits while fewer than the limit exist; the error names the quota, its limit and the count."""

from __future__ import annotations

import pytest

from scaivault.domain.errors import QuotaExceeded
from scaivault.domain.quotas import WEBHOOKS_PER_TENANT, Quota
from scaivault.http.status import status_of


def test_one_more_fits_below_the_limit_only() -> None:
    quota = Quota(WEBHOOKS_PER_TENANT, 3)
    for current in (0, 2):
        quota.check_room_for_one(current)
    for current in (3, 7):  # 7: the operator lowered the limit below what exists
        with pytest.raises(QuotaExceeded) as refused:
            quota.check_room_for_one(current)
        assert refused.value.code == "quota_exceeded" and status_of(refused.value.code) == 409
        assert refused.value.details == {"resource": "webhooks_per_tenant", "limit": 3, "current": current}
        assert refused.value.message == "The quota of 3 webhooks per tenant is reached; delete one first"


def test_a_quota_allows_at_least_one() -> None:
    with pytest.raises(ValueError):
        Quota(WEBHOOKS_PER_TENANT, 0)
