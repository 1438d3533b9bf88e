"""The audit log's vocabulary (spec reference/audit): the actions an entry may record and the kinds of identity,
shared by the log's queries and by audit exports' filters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

ACTIONS = frozenset(
    {
        "read", "write", "delete", "list", "rotate", "policy_create", "policy_update", "policy_delete", "policy_bind",
        "policy_unbind", "pki_issue", "pki_sign", "pki_revoke", "pki_ca_create", "dynamic_generate", "dynamic_renew",
        "dynamic_revoke", "webhook_delivery", "subscription_event", "federation_sync", "identity_sync",
        "identity_read", "identity_write",
        "policy_read",
        "rotation_policy_read", "rotation_policy_create", "rotation_policy_update", "rotation_policy_delete",
        "rotation_assign", "rotation_unassign", "rotation_read",
        "export_created", "auth_whoami", "auth_introspect", "health_detailed", "metrics_read", "audit_read",
        "audit_verify",
        "webhook_create", "webhook_read", "webhook_update", "webhook_delete", "webhook_test", "webhook_redeliver",
        "subscription_create", "subscription_read", "subscription_update", "subscription_delete",
        "subscription_poll", "subscription_ack",
        "dns_provider_create", "dns_provider_read", "dns_provider_update", "dns_provider_delete",
        "dns_provider_verify",
        "pki_read", "pki_csr_submit", "pki_csr_approve", "pki_csr_reject", "pki_trust_anchor_create",
        "pki_trust_anchor_delete",
        "pki_ca_read", "pki_ca_import", "pki_crl_publish", "pki_role_create", "pki_role_read", "pki_role_update",
        "pki_role_delete",
        "secret_policy_create", "secret_policy_read", "secret_policy_update", "secret_policy_delete",
        "secret_policy_preview",
        "acme_account_create", "acme_account_read", "acme_account_delete", "acme_order_create", "acme_order_read",
        "acme_order_cancel",
        "dynamic_engine_create", "dynamic_engine_read", "dynamic_engine_update", "dynamic_engine_delete",
        "dynamic_engine_health", "dynamic_rotate_root", "dynamic_role_create", "dynamic_role_read",
        "dynamic_role_write", "dynamic_role_update", "dynamic_role_delete", "dynamic_lease_read",
    }
)
IdentityType = Literal["user", "service_account", "group"]
IDENTITY_TYPES = frozenset(get_args(IdentityType))


def parse_actions(raw: str | Iterable[str]) -> list[str]:
    """Actions to filter on, as a comma-separated list or a list; ValueError unless at least one is given and each
    is a known action."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    actions = [action.strip() for action in parts if action.strip()]
    if not actions or any(action not in ACTIONS for action in actions):
        raise ValueError(f"must be one or more (comma-separated) of {', '.join(sorted(ACTIONS))}")
    return actions

