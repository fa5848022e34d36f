"""The ZohoOAuth block against the sandbox: one shared token, one refresh, no secrets leaked."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prefect import flow
import httpx
from pydantic import SecretStr

from blocks import ZohoOAuth
from deployments.onboarding import onboard, sandbox_grant
from flows.refresh_token import refresh_token
from zoho.errors import InvalidGrantError, NotAllowedError, TokenThrottledError
from zoho.models import AppointmentUpdate

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def oauth_block(sandbox, prefect_api) -> ZohoOAuth:
    """A saved ZohoOAuth block for the sandbox, with no access token yet."""
    block = ZohoOAuth(
        client_id=sandbox.creds["client_id"],
        client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]),
        data_centre="CUSTOM",
        base_url=sandbox.url,
    )
    await block.asave(f"sandbox-{uuid.uuid4().hex[:8]}")
    return block


def prefect_post(api: str, path: str, body: dict) -> list[dict]:
    """POST a filter to the Prefect REST API (the 3.8 client sends nulls this server rejects)."""
    return httpx.post(f"{api}{path}", json=body, timeout=30).raise_for_status().json()


def minted(sandbox) -> int:
    return sandbox.stats()["tokens_minted"]


def token_calls(sandbox) -> int:
    return sandbox.stats()["calls"].get("POST /oauth/v2/token", 0)


@flow(name="read-one-appointment")
async def read_one(block_name: str) -> int:
    block = await ZohoOAuth.aload(block_name)
    async with block.get_client() as zoho:
        page = await zoho.crm.get_records("Appointments__s", ["Status"], per_page=1)
    return len(page.data)


async def test_twenty_concurrent_flow_runs_refresh_once(sandbox, oauth_block):
    results = await asyncio.gather(*[read_one(oauth_block._block_document_name) for _ in range(20)])
    assert results == [1] * 20
    assert minted(sandbox) == 1


def test_processes_share_one_refresh(sandbox, oauth_block, prefect_api):
    script = (
        "import asyncio, sys\n"
        "from blocks import ZohoOAuth\n"
        "async def one(name):\n"
        "    b = await ZohoOAuth.aload(name)\n"
        "    async with b.get_client() as z:\n"
        "        return len((await z.crm.get_records('Appointments__s', ['Status'], per_page=1)).data)\n"
        "async def main(name):\n"
        "    print(sum(await asyncio.gather(*[one(name) for _ in range(5)])))\n"
        "asyncio.run(main(sys.argv[1]))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, oauth_block._block_document_name], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["5"] * 4
    assert minted(sandbox) == 1


async def test_invalid_token_mid_run_costs_one_refresh(sandbox, oauth_block):
    name = oauth_block._block_document_name
    assert await read_one(name) == 1
    sandbox.http.post("/__sandbox/tokens/expire").raise_for_status()  # Zoho forgets the token early
    assert await read_one(name) == 1
    assert minted(sandbox) == 2
    stored = await ZohoOAuth.aload(name)
    assert stored.expires_at > datetime.now(timezone.utc) + timedelta(minutes=50)


async def test_throttle_is_a_clear_error_and_stops_minting(sandbox, oauth_block):
    name = oauth_block._block_document_name
    assert await read_one(name) == 1
    sandbox.config(token_mint_limit=1)
    sandbox.http.post("/__sandbox/tokens/expire").raise_for_status()
    block = await ZohoOAuth.aload(name)
    with pytest.raises(TokenThrottledError, match="too many requests"):
        async with block.get_client() as zoho:
            await zoho.crm.get_records("Appointments__s", ["Status"], per_page=1)
    calls = token_calls(sandbox)
    with pytest.raises(TokenThrottledError, match="throttles token minting"):
        await (await ZohoOAuth.aload(name)).get_access_token(min_valid=timedelta(hours=2))
    assert token_calls(sandbox) == calls  # no further request to Accounts
    assert minted(sandbox) == 1


async def test_a_throttle_with_retry_after_pauses_only_that_long(sandbox, oauth_block):
    """Zoho's throttle has no Retry-After (2 minutes' pause); an answer that gives one is honoured."""
    name = oauth_block._block_document_name
    sandbox.faults(accounts={"error_429": 1.0, "retry_after": 3})
    before = datetime.now(timezone.utc)
    with pytest.raises(TokenThrottledError) as caught:
        await (await ZohoOAuth.aload(name)).get_access_token()
    assert caught.value.retry_after == 3
    stored = await ZohoOAuth.aload(name)
    assert before + timedelta(seconds=2) <= stored.throttled_until <= before + timedelta(seconds=60)  # not THROTTLE_BACKOFF


async def test_a_document_read_before_our_refresh_never_brings_the_old_token_back(sandbox, oauth_block):
    """Callers share one block instance: adopting a stale copy must not undo the refresh."""
    name = oauth_block._block_document_name
    block = await ZohoOAuth.aload(name)
    first = await block.get_access_token()
    stale = await ZohoOAuth.aload(name)  # holds ``first``
    sandbox.http.post("/__sandbox/tokens/expire").raise_for_status()
    second = await block.get_access_token(rejected=first)
    assert second.get_secret_value() != first.get_secret_value()
    block._adopt(stale)
    assert block.access_token.get_secret_value() == second.get_secret_value()
    assert (await block.get_access_token()).get_secret_value() == second.get_secret_value()
    assert minted(sandbox) == 2


async def test_refresh_token_flow_reports_expiry(sandbox, oauth_block, prefect_api):
    name = oauth_block._block_document_name
    first = await refresh_token(block_name=name)
    second = await refresh_token(block_name=name)
    assert first["refreshed"] is True and second["refreshed"] is False
    assert first["expires_at"] == second["expires_at"]
    assert 55 < second["minutes_left"] <= 60
    assert minted(sandbox) == 1
    key = f"token-{name}".lower()
    artifacts = prefect_post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "limit": 10})
    assert artifacts and first["expires_at"] in artifacts[0]["data"]


async def test_onboarding_exchanges_a_grant_code_once(sandbox, prefect_api):
    client_id, secret, code, scopes = sandbox_grant(sandbox.url)
    name = f"onboard-{uuid.uuid4().hex[:8]}"
    saved = await onboard(name, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox.url, scopes=scopes)
    loaded = await ZohoOAuth.aload(name)
    assert loaded.refresh_token.get_secret_value() == saved.refresh_token.get_secret_value()
    assert loaded.refresh_token.get_secret_value() != sandbox.creds["refresh_token"]
    assert loaded.api_domain == sandbox.url
    assert await read_one(name) == 1
    assert minted(sandbox) == 1  # the exchange's token is reused, not a second one
    with pytest.raises(InvalidGrantError):
        await onboard(name, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox.url)


async def test_no_secret_in_logs_artifacts_or_errors(sandbox, oauth_block, caplog, prefect_api):
    name = oauth_block._block_document_name
    caplog.set_level(logging.DEBUG)
    report = await refresh_token(block_name=name)
    block = await ZohoOAuth.aload(name)
    async with block.get_client() as zoho:
        page = await zoho.crm.get_records("Appointments__s", ["Status", "Appointment_Start_Time"], per_page=50)
        cancelled = next(r for r in page.data if r["Status"] == "Cancelled")
        results = await zoho.crm.update_appointments([AppointmentUpdate.reschedule(cancelled["id"], datetime.now(timezone.utc) + timedelta(days=3))])
        from zoho.errors import crm_error

        error = crm_error(results[0].model_dump(), 403, "PUT /crm/v7/Appointments__s")
    assert isinstance(error, NotAllowedError)
    secrets = [sandbox.creds["client_secret"], sandbox.creds["refresh_token"], block.access_token.get_secret_value()]
    texts = [caplog.text, str(error), repr(error), str(report), repr(block)]
    texts += [str(a["data"]) for a in prefect_post(prefect_api, "/artifacts/filter", {"limit": 200})]
    texts += [log["message"] for log in prefect_post(prefect_api, "/logs/filter", {"limit": 200, "sort": "TIMESTAMP_DESC"})]
    assert any("Refreshed the Zoho access token" in t or "refreshed" in t for t in texts)
    for secret in secrets:
        assert all(secret not in text for text in texts)


async def test_revoke_ends_the_grant(sandbox, oauth_block):
    name = oauth_block._block_document_name
    assert await read_one(name) == 1
    block = await ZohoOAuth.aload(name)
    await block.revoke()
    stored = await ZohoOAuth.aload(name)
    assert stored.access_token is None and stored.expires_at is None
    with pytest.raises(InvalidGrantError):
        await stored.get_access_token()
    assert minted(sandbox) == 1


def test_cli_auth_onboards_and_reports_bad_credentials(sandbox, prefect_api):
    from typer.testing import CliRunner

    from deployments.cli import app

    ok = CliRunner().invoke(app, ["auth", "--sandbox", sandbox.url, "--block", "cli-sandbox"])
    assert ok.exit_code == 0, ok.output
    assert "Saved ZohoOAuth block 'cli-sandbox'" in ok.output
    bad = CliRunner().invoke(
        app,
        ["auth", "--client-id", "1000.NOPE", "--data-centre", "CUSTOM", "--base-url", sandbox.url],
        input="not-the-secret\nnot-a-code\n",
    )
    assert bad.exit_code == 1
    assert "invalid_client" in bad.output
    assert "not-the-secret" not in bad.output and "Traceback" not in bad.output
