"""The rotation read models (inline: written in the transaction that appends the events): rotation policies, each
secret's rotation and expiry schedule (when a scheduler step may next be needed), and the rotation history.

A schedule row mirrors the parts of the Secret aggregate's state its schedules depend on, applying each event as
the aggregate's mutators do, and computes the next step with the domain's own functions
(``scaivault/domain/rotation.py``). A policy change moves the next steps of every secret attached to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from scaivault.domain.durations import parse_duration
from scaivault.domain.rotation import (
    RotationPolicy,
    RotationTerms,
    history_id,
    next_expiry_step_at,
    next_rotation_step_at,
    notify_thresholds,
    terms_of,
)
from scaivault.domain.secrets import Secret

POLICY_EVENTS = (RotationPolicy.Created, RotationPolicy.Updated, RotationPolicy.Deleted)
SCHEDULE_EVENTS = (
    Secret.Created, Secret.VersionWritten, Secret.MetadataUpdated, Secret.Deleted, Secret.Restored, Secret.Purged,
    Secret.RotationDue, Secret.Rotated, Secret.RotationFailed, Secret.RotationOverdue, Secret.ExpiryWarned,
    Secret.Expired,
)
ROTATION_EVENTS = POLICY_EVENTS + SCHEDULE_EVENTS
_STATE = (
    "live", "deleted", "metadata", "current_version", "rotation_policy_id", "rotation_cycle_start", "rotation_warned",
    "rotation_pending_due_at", "rotation_overdue", "last_rotated_at", "expires_at", "expiry_warned",
    "expired_notified",
)


async def project_rotation_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, POLICY_EVENTS):
        await _project_policy(conn, e)
    elif isinstance(e, Secret.Created):
        await conn.execute(
            """INSERT INTO scaivault_secret_schedules (stream_id, owner, tenant_id, path) VALUES ($1, $2, $3, $4)
               ON CONFLICT (stream_id) DO NOTHING""",
            e.originator_id, e.owner, e.tenant_id, e.path,
        )
    elif isinstance(e, SCHEDULE_EVENTS):
        row = await conn.fetchrow("SELECT * FROM scaivault_secret_schedules WHERE stream_id = $1", e.originator_id)
        if row is None:
            return
        state = {key: row[key] for key in _STATE}
        _apply(state, e)
        await _save(conn, row["stream_id"], row["owner"], state)
        await _record_history(conn, row, e)


# ---- policies ------------------------------------------------------------------------------------------------------


async def _project_policy(conn: asyncpg.Connection, e: Any) -> None:
    if isinstance(e, RotationPolicy.Created):
        await conn.execute(
            """INSERT INTO scaivault_rotation_policies (policy_id, owner, stream_id, tenant_id, partner_id, name,
                   description, interval, interval_seconds, grace_period, warn_before, auto_generate,
                   secret_policy_id, webhook_ids, is_active, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $16, $17)""",
            e.policy_id, e.owner, e.originator_id, e.tenant_id, e.partner_id, e.name, e.description, e.interval,
            int(parse_duration(e.interval).total_seconds()), e.grace_period, e.warn_before, e.auto_generate,
            e.secret_policy_id, e.webhook_ids, e.is_active, e.at, e.actor,
        )
        # Secrets may name the id already (written before the policy existed): they follow it from now on.
        await _reschedule_policy(conn, e.owner, e.policy_id)
        return
    if isinstance(e, RotationPolicy.Updated):
        row = await conn.fetchrow(
            """UPDATE scaivault_rotation_policies SET name = $2, description = $3, interval = $4,
                   interval_seconds = $5, grace_period = $6, warn_before = $7, auto_generate = $8,
                   secret_policy_id = $9, webhook_ids = $10, is_active = $11, updated_at = $12, updated_by = $13
               WHERE stream_id = $1 RETURNING owner, policy_id""",
            e.originator_id, e.name, e.description, e.interval, int(parse_duration(e.interval).total_seconds()),
            e.grace_period, e.warn_before, e.auto_generate, e.secret_policy_id, e.webhook_ids, e.is_active, e.at,
            e.actor,
        )
    else:
        row = await conn.fetchrow(
            "DELETE FROM scaivault_rotation_policies WHERE stream_id = $1 RETURNING owner, policy_id",
            e.originator_id,
        )
    if row is not None:
        await _reschedule_policy(conn, row["owner"], row["policy_id"])


async def _reschedule_policy(conn: asyncpg.Connection, owner: str, policy_id: str) -> None:
    """The policy's terms changed (or it is gone): every attached secret's next step moves."""
    rows = await conn.fetch(
        "SELECT * FROM scaivault_secret_schedules WHERE owner = $1 AND rotation_policy_id = $2", owner, policy_id
    )
    for row in rows:
        await _save(conn, row["stream_id"], owner, {key: row[key] for key in _STATE})


async def policy_terms(conn: asyncpg.Connection, owner: str, policy_id: str | None) -> RotationTerms | None:
    if policy_id is None:
        return None
    row = await conn.fetchrow(
        """SELECT policy_id, name, interval, grace_period, warn_before, auto_generate, secret_policy_id, is_active
           FROM scaivault_rotation_policies WHERE owner = $1 AND policy_id = $2""",
        owner, policy_id,
    )
    return None if row is None else terms_of(row["policy_id"], dict(row))


# ---- schedules -----------------------------------------------------------------------------------------------------


def _restart_rotation(state: dict[str, Any], at: datetime | None) -> None:
    state.update(rotation_cycle_start=at, rotation_warned=[], rotation_pending_due_at=None, rotation_overdue=False)


def _track(state: dict[str, Any], at: datetime, rotation_policy_id: str | None, expires_at: datetime | None,
           restart: bool) -> None:
    """As ``Secret._track_schedules``."""
    if restart or rotation_policy_id != state["rotation_policy_id"]:
        _restart_rotation(state, at if rotation_policy_id is not None else None)
    if restart or expires_at != state["expires_at"]:
        state.update(expiry_warned=[], expired_notified=False)


def _added(labels: list[str], covers: list[str]) -> list[str]:
    return [*labels, *(label for label in covers if label not in labels)]


def _apply(state: dict[str, Any], e: Any) -> None:  # noqa: C901 - one branch per event, as the mutators
    if isinstance(e, Secret.VersionWritten):
        _track(state, e.at, e.rotation_policy_id, e.expires_at, e.created)
        state.update(live=True, deleted=False if e.created else state["deleted"], metadata=e.metadata,
                     current_version=e.version, rotation_policy_id=e.rotation_policy_id, expires_at=e.expires_at)
    elif isinstance(e, Secret.MetadataUpdated):
        _track(state, e.at, e.rotation_policy_id, e.expires_at, False)
        state.update(metadata=e.metadata, rotation_policy_id=e.rotation_policy_id, expires_at=e.expires_at)
    elif isinstance(e, Secret.Deleted):
        state["deleted"] = True
    elif isinstance(e, Secret.Restored):
        state["deleted"] = False
    elif isinstance(e, Secret.Purged):
        state.update(live=False, deleted=False, expires_at=None)
    elif isinstance(e, Secret.RotationDue):
        state["rotation_warned"] = _added(list(state["rotation_warned"]), e.covers)
        if e.due_now:
            state["rotation_pending_due_at"] = e.due_at
    elif isinstance(e, Secret.Rotated):
        _restart_rotation(state, e.at)
        state["last_rotated_at"] = e.at
    elif isinstance(e, Secret.RotationFailed):
        state["rotation_pending_due_at"] = e.due_at
    elif isinstance(e, Secret.RotationOverdue):
        state["rotation_overdue"] = True
    elif isinstance(e, Secret.ExpiryWarned):
        state["expiry_warned"] = _added(list(state["expiry_warned"]), e.covers)
    elif isinstance(e, Secret.Expired):
        state["expired_notified"] = True


async def _save(conn: asyncpg.Connection, stream_id: UUID, owner: str, state: Mapping[str, Any]) -> None:
    schedulable = state["live"] and not state["deleted"]
    terms = await policy_terms(conn, owner, state["rotation_policy_id"]) if schedulable else None
    cycle_start = state["rotation_cycle_start"]
    next_rotation = next_rotation_step_at(
        terms, cycle_start=cycle_start, warned=state["rotation_warned"],
        pending_due_at=state["rotation_pending_due_at"], overdue=state["rotation_overdue"],
    )
    next_expiry = next_expiry_step_at(
        state["expires_at"], notify_thresholds(state["metadata"] or {}), warned=state["expiry_warned"],
        expired_notified=state["expired_notified"],
    ) if schedulable else None
    await conn.execute(
        """UPDATE scaivault_secret_schedules SET live = $2, deleted = $3, metadata = $4, current_version = $5,
               rotation_policy_id = $6, rotation_cycle_start = $7, rotation_warned = $8,
               rotation_pending_due_at = $9, rotation_overdue = $10, last_rotated_at = $11, expires_at = $12,
               expiry_warned = $13, expired_notified = $14, rotation_due_at = $15, next_rotation_step_at = $16,
               next_expiry_step_at = $17
           WHERE stream_id = $1""",
        stream_id, state["live"], state["deleted"], state["metadata"] or {}, state["current_version"],
        state["rotation_policy_id"], cycle_start, list(state["rotation_warned"]), state["rotation_pending_due_at"],
        state["rotation_overdue"], state["last_rotated_at"], state["expires_at"], list(state["expiry_warned"]),
        state["expired_notified"],
        terms.due_at(cycle_start) if terms is not None and cycle_start is not None else None, next_rotation,
        next_expiry,
    )


# ---- history -------------------------------------------------------------------------------------------------------


async def _record_history(conn: asyncpg.Connection, row: Mapping[str, Any], e: Any) -> None:
    if isinstance(e, Secret.RotationDue) and e.due_now:
        await _insert_history(conn, row, e, status="pending", due_at=e.due_at)
    elif isinstance(e, Secret.RotationFailed):
        await _insert_history(conn, row, e, status="failed", due_at=e.due_at,
                              error={"code": e.error_code, "message": e.error_message})
    elif isinstance(e, Secret.Rotated):
        completed = await conn.execute(
            """UPDATE scaivault_rotation_history SET status = 'success', old_version = $2, new_version = $3,
                   auto_generated = $4, grace_period_ends = $5, completed_at = $6
               WHERE id = (SELECT id FROM scaivault_rotation_history WHERE stream_id = $1
                           AND status IN ('pending', 'failed') AND policy_id = $7 ORDER BY id DESC LIMIT 1)""",
            e.originator_id, e.old_version, e.new_version, e.auto_generated, e.grace_period_ends, e.at,
            e.rotation_policy_id,
        )
        if completed == "UPDATE 0":
            await _insert_history(conn, row, e, status="success", old_version=e.old_version,
                                  new_version=e.new_version, auto_generated=e.auto_generated,
                                  grace_period_ends=e.grace_period_ends, completed_at=e.at)


async def _insert_history(conn: asyncpg.Connection, row: Mapping[str, Any], e: Any, *, status: str,
                          **fields: Any) -> None:
    columns = {"old_version": None, "new_version": None, "auto_generated": None, "error": None, "due_at": None,
               "grace_period_ends": None, "completed_at": None, **fields}
    await conn.execute(
        """INSERT INTO scaivault_rotation_history (id, owner, policy_id, stream_id, path, status, old_version,
               new_version, auto_generated, error, due_at, grace_period_ends, started_at, completed_at, triggered_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
        history_id(e.originator_id, e.originator_version, e.at), row["owner"], e.rotation_policy_id,
        e.originator_id, row["path"], status, columns["old_version"], columns["new_version"],
        columns["auto_generated"], columns["error"], columns["due_at"], columns["grace_period_ends"], e.at,
        columns["completed_at"], e.actor,
    )
