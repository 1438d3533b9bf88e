"""End-to-end fixtures: the real app over real HTTP (aiohttp's test server on loopback) on the real database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.http.app import create_app

PARTNER = "ptn_acme"
TENANT = "tnt_acme_prod"
OTHER_TENANT = "tnt_acme_dev"
OTHER_PARTNER = "ptn_globex"
FOREIGN_TENANT = "tnt_globex_prod"
GENEROUS_RATE_LIMITS = "*=1000000/s"
ALL_SECRET_SCOPES = ("secrets:read", "secrets:write", "secrets:delete", "secrets:list")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Limits far above what any test sends, so the limiter runs (and its headers show) on every request without
    # refusing any; the rate-limit tests set their own.
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS,
    )


@pytest.fixture
async def container(pool: object, settings: Settings) -> AsyncIterator[Container]:
    container = await build_container(settings)
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, OTHER_TENANT)
    await container.tenancy_commands.register_tenant(OTHER_PARTNER, FOREIGN_TENANT)
    try:
        yield container
    finally:
        await container.close()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(container=container))) as client:
        yield client


TokenFactory = Callable[..., str]


@pytest.fixture
def token(container: Container) -> TokenFactory:
    def issue(
        *scopes: str,
        tenant: str | None = TENANT,
        partner: str = PARTNER,
        identity: str = "user:alice@acme.example",
        roles: tuple[str, ...] = ("tenant_admin",),  # an admin needs no policy; pass roles=() to test policies
        ttl: timedelta = timedelta(hours=1),
    ) -> str:
        return container.issuer.issue(
            identity_id=identity,
            tenant_id=tenant,
            partner_id=partner,
            scopes=scopes or ALL_SECRET_SCOPES,
            roles=roles,
            ttl=ttl,
        )

    return issue


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cli_env(database_url: str, settings: Settings, pool: object) -> dict[str, str]:
    """The test server's own configuration, so the CLI opens the same (emptied) database with the same root key."""
    return {**os.environ, "DATABASE_URL": database_url, "SCAIVAULT_DATA_DIR": str(settings.data_dir)}


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the suite's PostgreSQL, for servers a test starts itself; dropped afterwards
    (whatever is still connected to it)."""
    name = f"scaivault_own_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
