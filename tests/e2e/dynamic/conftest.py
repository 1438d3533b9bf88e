"""Fixtures of the dynamic-secrets e2e tests: settings that let the server reach loopback targets, and a reporting
database on the scram PostgreSQL cluster (the tutorial's step 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scaivault.config import Settings
from tests.dynamic_targets import DatabaseAdmin, scram_postgres, unique_token  # noqa: F401
from tests.e2e.conftest import GENEROUS_RATE_LIMITS
from tests.e2e.dynamic.helpers import BOOTSTRAP_PASSWORD


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The target runs on loopback: the operator allows it."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.0/8",
    )


@pytest.fixture
async def reporting(scram_postgres: DatabaseAdmin) -> AsyncIterator[dict[str, Any]]:  # noqa: F811
    """Step 1, as the DBA: a database, a table, and ``scaivault_admin`` (CREATEROLE, bootstrap password)."""
    token = unique_token()
    database, admin_user = f"reporting_{token}", f"scaivault_admin_{token}"
    dba = await asyncpg.connect(host=scram_postgres.host, port=scram_postgres.port, user=scram_postgres.admin_user,
                                password=scram_postgres.admin_password, database="postgres")
    try:
        await dba.execute(f'CREATE DATABASE "{database}"')
        await dba.execute(f"""CREATE ROLE "{admin_user}" WITH LOGIN PASSWORD '{BOOTSTRAP_PASSWORD}' CREATEROLE
                              NOSUPERUSER""")
        await dba.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{admin_user}" WITH GRANT OPTION')
        db = await asyncpg.connect(host=scram_postgres.host, port=scram_postgres.port,
                                   user=scram_postgres.admin_user, password=scram_postgres.admin_password,
                                   database=database)
        try:
            await db.execute("CREATE TABLE reports (id int, title text)")
            await db.execute("INSERT INTO reports VALUES (1, 'q3')")
            await db.execute(f'GRANT USAGE ON SCHEMA public TO "{admin_user}" WITH GRANT OPTION')
            await db.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{admin_user}" WITH GRANT OPTION')
            # The readers' group the tests' roles grant (the cluster is the suite's own: one group serves all).
            await db.execute("""DO $$ BEGIN CREATE ROLE reporting_reader NOLOGIN;
                                EXCEPTION WHEN duplicate_object THEN NULL; END $$""")
            await db.execute("GRANT USAGE ON SCHEMA public TO reporting_reader")
            await db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting_reader")
        finally:
            await db.close()
        yield {"host": scram_postgres.host, "port": scram_postgres.port, "database": database, "admin": admin_user,
               "superuser": scram_postgres}
    finally:
        leftovers = await dba.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v_readonly_%'")
        await dba.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for row in leftovers:
            await dba.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
        await dba.execute(f'DROP ROLE IF EXISTS "{admin_user}"')
        await dba.close()


