"""The AcmeOrder aggregate's rules: repeated steps are no-ops, an ended order takes no more steps, cancelling an ended
order is refused, and renewal is started once and backs off after a failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaivault.domain.acme import AcmeOrder, OrderCancelled
from scaivault.domain.errors import InvalidRequest

AT = datetime(2026, 12, 5, tzinfo=UTC)


def new_order(**fields: Any) -> AcmeOrder:
    settings: dict[str, Any] = {
        "order_id": "acmeo_1", "owner": "tnt_a", "partner_id": "ptn_a", "account_id": "acct_1",
        "names": ["*.acme.example", "acme.example"], "challenge_type": "dns-01", "dns_provider_id": "dnsp_1",
        "key_type": "ec", "key_bits": 256, "key_ciphertext": b"sealed", "key_data_key_id": "dk_1", "csr_pem": None,
        "secret_path": "certificates/_wildcard_acme_example", "auto_renew": True, "renew_before_seconds": 86400,
        "renewal_of": None, "renewal_of_order": None, "at": AT, "actor": "sa:x", "request_id": None, **fields,
    }
    return AcmeOrder(**settings)


def test_a_repeated_step_is_a_no_op_and_statuses_follow_the_steps() -> None:
    order = new_order()
    state = {"url": "https://ca/order/1", "status": "pending"}
    assert order.record_step("order_created", state, at=AT) is True
    assert order.record_step("order_created", state, at=AT) is False
    assert order.status == "pending"
    order.record_step("challenges_answered", {**state, "status": "processing"}, at=AT)
    assert order.status == "processing"
    order.complete(certificate_id="cert_1", state=state, renew_at=AT + timedelta(days=60), at=AT)
    assert (order.status, order.certificate_id) == ("valid", "cert_1")
    with pytest.raises(OrderCancelled):
        order.record_step("finalized", state, at=AT)
    with pytest.raises(InvalidRequest):
        order.cancel(at=AT, actor="sa:x", request_id=None)
    assert order.fail(error={"type": "x", "detail": "y"}, state=None, at=AT) is False


def test_a_cancelled_order_takes_no_steps_but_its_challenges_are_still_taken_down() -> None:
    order = new_order()
    order.cancel(at=AT, actor="sa:x", request_id=None)
    with pytest.raises(OrderCancelled):
        order.present_challenge({"type": "dns-01", "identifier": "acme.example"}, at=AT)
    order.clean_up_challenge({"type": "dns-01", "identifier": "acme.example"}, at=AT)
    assert order.status == "cancelled"


def test_renewal_starts_once_and_starts_again_after_a_failure() -> None:
    order = new_order()
    assert not order.renewal_due()
    order.complete(certificate_id="cert_1", state={}, renew_at=AT, at=AT)
    assert order.renewal_due()
    order.start_renewal(renewal_order_id="acmeo_2", at=AT)
    assert not order.renewal_due()
    order.renewal_failed(renewal_order_id="acmeo_2", error={"type": "t", "detail": "d"}, retry_at=AT, at=AT)
    assert order.renewal_due() and order.renewal_failures == 1
    assert not new_order(auto_renew=False).renewal_due()
