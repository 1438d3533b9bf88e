"""The ACME read models (inline: written in the transaction that appends the events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.acme import AcmeAccount, AcmeOrder

ACME_EVENTS = (
    AcmeAccount.Registered, AcmeAccount.Deactivated, AcmeOrder.Requested, AcmeOrder.Stepped,
    AcmeOrder.ChallengePresented, AcmeOrder.ChallengeCleanedUp, AcmeOrder.RetryScheduled, AcmeOrder.Completed,
    AcmeOrder.Failed, AcmeOrder.Cancelled, AcmeOrder.RenewalStarted, AcmeOrder.RenewalFailed,
)


def _shown_challenge(challenge: dict[str, str], status: str) -> dict[str, str]:
    """What an order shows of a challenge: never the key authorization (public, but of no use to a reader)."""
    shown = {key: challenge[key] for key in ("type", "identifier", "record_name") if challenge.get(key)}
    return {**shown, "status": status}


async def _set_challenge(conn: asyncpg.Connection, stream_id: Any, challenge: dict[str, str], status: str,
                         at: Any) -> None:
    shown = _shown_challenge(challenge, status)
    # One entry per (type, identifier): a resumed run presents the same challenge again.
    await conn.execute(
        """UPDATE scaivault_acme_orders SET challenges = (
               SELECT coalesce(jsonb_agg(c), '[]'::jsonb) FROM jsonb_array_elements(challenges) AS c
               WHERE NOT (c->>'type' = $2 AND c->>'identifier' = $3)) || jsonb_build_array($4::jsonb),
               updated_at = $5
           WHERE stream_id = $1""",
        stream_id, shown["type"], shown["identifier"], shown, at,
    )


async def project_acme_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, AcmeAccount.Registered):
        await conn.execute(
            """INSERT INTO scaivault_acme_accounts (account_id, stream_id, tenant_id, partner_id, name, provider,
                   environment, directory_url, email, account_uri, ca_bundle, status, key_ciphertext,
                   key_data_key_id, created_at, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'valid', $12, $13, $14, $15)""",
            e.account_id, e.originator_id, e.owner, e.partner_id, e.name, e.provider, e.environment,
            e.directory_url, e.email, e.account_uri, e.ca_bundle, e.key_ciphertext, e.key_data_key_id, e.at,
            e.actor,
        )
    elif isinstance(e, AcmeAccount.Deactivated):
        await conn.execute(
            """UPDATE scaivault_acme_accounts SET status = 'deactivated', deactivated_at = $2,
                   key_ciphertext = NULL, key_data_key_id = NULL WHERE stream_id = $1""",
            e.originator_id, e.at,
        )
    elif isinstance(e, AcmeOrder.Requested):
        await conn.execute(
            """INSERT INTO scaivault_acme_orders (order_id, stream_id, tenant_id, account_id, names, challenge_type,
                   dns_provider_id, key_type, secret_path, auto_renew, renew_before_seconds, renewal_of, status,
                   step, next_attempt_at, created_at, created_by, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', 'requested', $13, $13, $14,
                   $13)""",
            e.order_id, e.originator_id, e.owner, e.account_id, e.names, e.challenge_type, e.dns_provider_id,
            e.key_type, e.secret_path, e.auto_renew, e.renew_before_seconds, e.renewal_of, e.at, e.actor,
        )
    elif isinstance(e, AcmeOrder.Stepped):
        await conn.execute(
            """UPDATE scaivault_acme_orders SET status = $2, step = $3, state = $4, updated_at = $5
               WHERE stream_id = $1""",
            e.originator_id, e.status, e.step, e.state, e.at,
        )
    elif isinstance(e, AcmeOrder.ChallengePresented):
        await _set_challenge(conn, e.originator_id, e.challenge, "presented", e.at)
        if e.challenge.get("type") == "http-01":
            await conn.execute(
                """INSERT INTO scaivault_acme_http01_tokens (token, order_id, key_authorization, created_at)
                   SELECT $2, order_id, $3, $4 FROM scaivault_acme_orders WHERE stream_id = $1
                   ON CONFLICT (token) DO UPDATE SET key_authorization = EXCLUDED.key_authorization""",
                e.originator_id, e.challenge["token"], e.challenge["key_authorization"], e.at,
            )
    elif isinstance(e, AcmeOrder.ChallengeCleanedUp):
        await _set_challenge(conn, e.originator_id, e.challenge, "removed", e.at)
        if e.challenge.get("type") == "http-01":
            await conn.execute("DELETE FROM scaivault_acme_http01_tokens WHERE token = $1", e.challenge["token"])
    elif isinstance(e, AcmeOrder.RetryScheduled):
        await conn.execute(
            """UPDATE scaivault_acme_orders SET attempts = $2, next_attempt_at = $3, error = $4, updated_at = $5
               WHERE stream_id = $1""",
            e.originator_id, e.attempts, e.retry_at, e.error, e.at,
        )
    elif isinstance(e, AcmeOrder.Completed):
        await conn.execute(
            """UPDATE scaivault_acme_orders SET status = 'valid', step = 'completed', state = $2,
                   certificate_id = $3, renew_at = $4, next_attempt_at = NULL, error = NULL, updated_at = $5
               WHERE stream_id = $1""",
            e.originator_id, e.state, e.certificate_id, e.renew_at, e.at,
        )
    elif isinstance(e, AcmeOrder.Failed):
        await conn.execute(
            """UPDATE scaivault_acme_orders SET status = 'invalid', step = 'failed', error = $2,
                   state = coalesce($3::jsonb, state), next_attempt_at = NULL, updated_at = $4
               WHERE stream_id = $1""",
            e.originator_id, e.error, e.state, e.at,
        )
    elif isinstance(e, AcmeOrder.Cancelled):
        await conn.execute(
            """UPDATE scaivault_acme_orders SET status = 'cancelled', step = 'cancelled', next_attempt_at = NULL,
                   updated_at = $2 WHERE stream_id = $1""",
            e.originator_id, e.at,
        )
    elif isinstance(e, AcmeOrder.RenewalStarted):
        await conn.execute(
            "UPDATE scaivault_acme_orders SET renew_at = NULL, updated_at = $2 WHERE stream_id = $1",
            e.originator_id, e.at,
        )
    elif isinstance(e, AcmeOrder.RenewalFailed):
        await conn.execute(
            "UPDATE scaivault_acme_orders SET renew_at = $2, updated_at = $3 WHERE stream_id = $1",
            e.originator_id, e.retry_at, e.at,
        )
