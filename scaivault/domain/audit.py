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

