"""Schema migrations, applied at start-up.

Each file in ``migrations/`` is applied once, in name order, inside one transaction that holds an advisory lock,
so two servers starting at once never race: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

# An arbitrary constant that names "the migration lock" for pg_advisory_xact_lock.
MIGRATION_LOCK_ID = 0x5CA1_7A01


def migration_scripts() -> list[tuple[str, str]]:
    folder = resources.files("scaivault.eventstore") / "migrations"
    scripts = sorted((entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return scripts


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not applied yet; return the names applied by this call."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS scaivault_schema_migrations (
                name text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM scaivault_schema_migrations")}
        for name, sql in migration_scripts():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO scaivault_schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    return applied_now
