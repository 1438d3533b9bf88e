"""The operator commands as operators run them: real processes, the same configuration as the server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiohttp

from scaivault.bootstrap import build_container
from scaivault.config import Settings
from tests.e2e.helpers import SCAIVAULT, free_port, run_cli
from tests.helpers import eventually


async def test_tenants_create_is_idempotent_and_token_issue_prints_only_a_token(cli_env: dict[str, str]) -> None:
    first = run_cli(cli_env, "tenants", "create", "--partner", "ptn_x", "--tenant", "tnt_x")
    second = run_cli(cli_env, "tenants", "create", "--partner", "ptn_x", "--tenant", "tnt_x")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout.startswith("created") and second.stdout.startswith("exists")

    issued = run_cli(
        cli_env, "token", "issue", "--partner", "ptn_x", "--tenant", "tnt_x", "--identity", "user:alice@x.example",
        "--scopes", "secrets:read secrets:write", "--roles", "tenant_admin", "--ttl", "1h",
    )
    assert issued.returncode == 0, issued.stderr
    jwt_token = issued.stdout.strip()
    assert issued.stdout.count("\n") == 1 and jwt_token.count(".") == 2
    pat = run_cli(
        cli_env, "token", "issue", "--partner", "ptn_x", "--tenant", "tnt_x", "--identity", "sa:ci",
        "--scopes", "secrets:read", "--pat",
    ).stdout.strip()
    assert pat.startswith("skt_")

    # The server, built from the same configuration, accepts both.
    settings = Settings.from_env(cli_env)
    container = await build_container(settings)
    try:
        for token, identity in ((jwt_token, "user:alice@x.example"), (pat, "sa:ci")):
            principal = await container.authenticator.authenticate(f"Bearer {token}")
            assert principal.identity_id == identity and principal.tenant_id == "tnt_x"
    finally:
        await container.close()

    unknown = run_cli(cli_env, "token", "issue", "--partner", "ptn_x", "--tenant", "tnt_nope", "--identity", "sa:a",
                      "--scopes", "secrets:read")
    assert unknown.returncode == 4 and unknown.stdout == ""
    revoked = run_cli(cli_env, "token", "revoke", pat)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout


def test_invalid_configuration_stops_with_one_clear_line(cli_env: dict[str, str]) -> None:
    result = run_cli({**cli_env, "BIND_ADDRESS": "nonsense"}, "serve")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "BIND_ADDRESS" in result.stderr
    result = run_cli({**cli_env, "KMS_PROVIDER": "aws"}, "tenants", "create", "--partner", "ptn_x", "--tenant", "tnt_x")
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0 and "KMS" in result.stderr


async def test_serve_answers_and_shuts_down_gracefully(cli_env: dict[str, str]) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**cli_env, "BIND_ADDRESS": f"127.0.0.1:{port}", "METRICS_BIND_ADDRESS": f"127.0.0.1:{metrics_port}",
           "LOG_LEVEL": "error"}
    server = subprocess.Popen([*SCAIVAULT, "serve", "--demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:

            async def answers() -> bool:
                try:
                    async with session.get(f"{base}/v1/health") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(answers, timeout=30, message="the server did not start")
            async with session.get(f"{base}/v1/health/ready") as response:
                assert response.status == 200 and (await response.json())["status"] == "ready"
            async with session.get(f"{base}/v1/version") as response:
                assert (await response.json())["version"]

            async def metrics_served() -> bool:  # by worker 0, which may start listening after another worker
                try:
                    async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                        return response.status == 200 and "scaivault_requests_total" in await response.text()
                except aiohttp.ClientError:
                    return False

            await eventually(metrics_served, timeout=30, message="worker 0 did not serve its metrics")
            async with session.get(f"{base}/v1/metrics") as response:
                assert response.status == 401
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        assert server.returncode == 0
        token = next(line.split("=", 1)[1] for line in out.splitlines() if "SCAIVAULT_TOKEN=" in line)
        assert token.count(".") == 2
    finally:
        if server.poll() is None:
            server.kill()


async def test_projections_run_keeps_the_read_models_of_servers_that_do_not(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", run_projections=False)
    container = await build_container(settings)
    try:
        async with container.running_background():
            await container.tenancy_commands.register_tenant("ptn_worker", "tnt_worker")
            # An absence is proved by letting time pass: longer than a runner's poll (1 s; the commit's NOTIFY would
            # wake one at once), with the event loop free to run one had this server started it.
            await asyncio.sleep(1.5)
            assert all(entry["lag"] > 0 for entry in (await container.projections.status(container.pool)).values())
            worker = subprocess.Popen([*SCAIVAULT, "projections", "run"], env={**cli_env, "LOG_LEVEL": "error"},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:

                async def worker_caught_up() -> bool:
                    assert worker.poll() is None, "the worker stopped"
                    status = await container.projections.status(container.pool)
                    return not any(entry["lag"] for entry in status.values())

                await eventually(worker_caught_up, timeout=30, message="the worker did not catch up")
                worker.send_signal(signal.SIGTERM)
                _, err = worker.communicate(timeout=30)
                assert worker.returncode == 0, err
                assert "running projections: audit_log, event_index" in err
            finally:
                if worker.poll() is None:
                    worker.kill()
    finally:
        await container.close()
