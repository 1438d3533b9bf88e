"""Policies read model (inline: written in the transaction that appends the Policy events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.policies import Policy

POLICY_EVENTS = (Policy.Created, Policy.Updated, Policy.BindingCreated, Policy.BindingDeleted, Policy.Deleted)


async def project_policy_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, Policy.Created):
        await conn.execute(
            """INSERT INTO scaivault_policies (policy_id, stream_id, scope, owner, partner_id, tenant_id, name,
                   description, rules, rule_count, is_active, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12, $13)""",
            e.policy_id, e.originator_id, e.scope, e.owner, e.partner_id, e.tenant_id, e.name, e.description,
            e.rules, len(e.rules), e.is_active, e.at, e.actor,
        )
    elif isinstance(e, Policy.Updated):
        await conn.execute(
            """UPDATE scaivault_policies SET name = $2, description = $3, rules = $4, rule_count = $5, is_active = $6,
                   updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.name, e.description, e.rules, len(e.rules), e.is_active, e.at, e.actor,
        )
    elif isinstance(e, Policy.BindingCreated):
        await conn.execute(
            """INSERT INTO scaivault_policy_bindings (binding_id, policy_id, owner, identity_type, identity_id,
                   expires_at, created_at, created_by)
               SELECT $2, policy_id, owner, $3, $4, $5, $6, $7 FROM scaivault_policies WHERE stream_id = $1""",
            e.originator_id, e.binding_id, e.identity_type, e.identity_id, e.expires_at, e.at, e.actor,
        )
    elif isinstance(e, Policy.BindingDeleted):
        await conn.execute("DELETE FROM scaivault_policy_bindings WHERE binding_id = $1", e.binding_id)
    elif isinstance(e, Policy.Deleted):
        await conn.execute("DELETE FROM scaivault_policies WHERE stream_id = $1", e.originator_id)
