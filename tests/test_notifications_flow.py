"""The renew-notification-channel flow and ``appt-sync webhooks`` against the sandbox and the Prefect harness.

The channel is subscribed when Zoho has none, left alone (no write call) outside
its renew window, renewed with the same token inside it; notifications then reach
``notify_url`` with the block's token; a refusal carries Zoho's code; the token
never shows in the command's output or in the artifact.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from blocks import NotificationChannel, ZohoOAuth
from deployments.cli import app
from flows.notifications import ChannelRefusedError, renew_notification_channel, renewal_reason

UTC = timezone.utc
WATCH = "/crm/v7/actions/watch"
NOTIFY_PATH = "/zoho/crm/notifications"


# ------------------------------------------------------------------ helpers
def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def watch_writes(sandbox) -> int:
    """How many ``POST``/``PUT``/``PATCH`` calls reached ``actions/watch`` (sandbox counters)."""
    calls = sandbox.stats()["calls"]
    return sum(n for label, n in calls.items() if label.endswith("/actions/watch") and label.split()[0] in ("POST", "PUT", "PATCH"))


def zoho_channels(sandbox) -> dict[str, dict[str, Any]]:
    """The sandbox's active channels by id (``GET actions/watch``)."""
    with sandbox.client() as api:
        r = api.get(WATCH)
    assert r.status_code in (200, 204), r.text
    return {c["channel_id"]: c for c in (r.json()["watch"] if r.status_code == 200 else [])}


def expiry_of(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["channel_expiry"])


async def renew(block: NotificationChannel) -> dict[str, Any]:
    return await renew_notification_channel(channel_block=block._block_document_name)


async def reload(block: NotificationChannel) -> NotificationChannel:
    return await NotificationChannel.aload(block._block_document_name)


def prefect_post(api: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a filter to the Prefect REST API."""
    return httpx.post(f"{api}{path}", json=body, timeout=30).raise_for_status().json()


# ----------------------------------------------------------------- fixtures
@pytest.fixture
def oauth_name(sandbox, prefect_api) -> str:
    """A saved ZohoOAuth block for the sandbox; its name."""
    name = unique("sandbox")
    ZohoOAuth(
        client_id=sandbox.creds["client_id"],
        client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]),
        data_centre="CUSTOM",
        base_url=sandbox.url,
    ).save(name)
    return name


@pytest.fixture
def make_channel(oauth_name, receiver):
    """Save a NotificationChannel block pointing at the ``receiver``; overrides as keywords."""

    async def make(**overrides: Any) -> NotificationChannel:
        fields = {"oauth_block": oauth_name, "channel_id": uuid.uuid4().int % 10**12 + 10**12, "notify_url": receiver.url + NOTIFY_PATH, **overrides}
        block = NotificationChannel(**fields)
        await block.asave(unique("crm-channel"))
        return block

    return make


# -------------------------------------------------------------------- flow
def recent_logs(prefect_api: str, done, attempts: int = 40) -> list[str]:
    """The newest 200 log messages, polled until ``done(messages)`` (logs are shipped in batches)."""
    import time

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # ship what this process has logged so far
    lines: list[str] = []
    for _ in range(attempts):
        lines = [log["message"] for log in prefect_post(prefect_api, "/logs/filter", {"limit": 200, "sort": "TIMESTAMP_DESC"})]
        if done(lines):
            break
        time.sleep(0.25)
    return lines


async def test_subscribing_creates_the_channel(sandbox, make_channel, receiver, prefect_api, caplog):
    caplog.set_level(logging.DEBUG)
    block = await make_channel(events=["Appointments__s.all", "Events.all"])

    report = await renew(block)

    listed = zoho_channels(sandbox)[str(block.channel_id)]
    assert listed["events"] == ["Appointments__s.all", "Events.all"] and listed["notify_url"] == receiver.url + NOTIFY_PATH
    assert datetime.now(UTC) < expiry_of(listed) <= datetime.now(UTC) + timedelta(days=7)
    assert report["renewed"] and report["channel_id"] == block.channel_id
    assert (await reload(block)).channel_expiry == expiry_of(listed)
    # The artifact names the channel; neither it nor any log line shows the token.
    key = f"notification-channel-{block._block_document_name}"
    (artifact,) = prefect_post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "limit": 5})
    assert str(block.channel_id) in artifact["data"]
    logs = recent_logs(prefect_api, lambda lines: any(str(block.channel_id) in line for line in lines))
    assert any(str(block.channel_id) in line for line in logs)
    for text in [artifact["data"], caplog.text, str(report), *logs]:
        assert block.token.get_secret_value() not in text


async def test_a_run_outside_the_renew_window_writes_nothing(sandbox, make_channel):
    block = await make_channel()
    await renew(block)
    writes = watch_writes(sandbox)

    report = await renew(block)

    assert watch_writes(sandbox) == writes == 1
    assert not report["renewed"] and report["reason"] is None


async def test_a_run_inside_the_renew_window_renews_with_the_same_token(sandbox, make_channel):
    block = await make_channel(lifetime_hours=48)
    await renew(block)
    before = expiry_of(zoho_channels(sandbox)[str(block.channel_id)])
    saved = await reload(block)
    saved.renew_before_hours, saved.lifetime_hours = 100, 167  # 48 hours left: inside a 100-hour window
    await saved.asave(block._block_document_name, overwrite=True)

    report = await renew(block)

    after = expiry_of(zoho_channels(sandbox)[str(block.channel_id)])
    assert report["renewed"] and "expires within" in report["reason"]
    assert after > before and watch_writes(sandbox) == 2
    renewed = await reload(block)
    assert renewed.channel_expiry == after
    assert renewed.token.get_secret_value() == block.token.get_secret_value()


async def test_an_admin_edit_reaches_the_receiver_with_the_blocks_token(sandbox, make_channel, receiver):
    block = await make_channel()
    await renew(block)
    soon = datetime.now(UTC) + timedelta(days=1)
    rec = next(
        r for r in sandbox.dump(module="Appointments__s")["Appointments__s"]
        if r["Status"] == "Scheduled" and datetime.fromisoformat(r["Appointment_Start_Time"]) > soon
    )

    r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{rec['id']}", json={"Status": "Cancelled"})

    assert r.status_code == 200, r.text
    got = receiver.wait_for(lambda item: item["path"] == NOTIFY_PATH and rec["id"] in ((item["json"] or {}).get("ids") or []))
    assert got["json"]["token"] == block.token.get_secret_value()
    assert str(got["json"]["channel_id"]) == str(block.channel_id) and got["json"]["operation"] == "update"


async def test_zoho_refusing_the_channel_raises_its_code(sandbox, make_channel):
    block = await make_channel(notify_url="ftp://127.0.0.1/zoho/crm/notifications")

    with pytest.raises(ChannelRefusedError) as caught:
        await renew(block)

    assert caught.value.code == "INVALID_DATA" and "notify_url" in str(caught.value)
    assert block.token.get_secret_value() not in str(caught.value)
    assert watch_writes(sandbox) == 1  # a refusal is not retried
    assert (await reload(block)).channel_expiry is None


def test_a_block_without_a_token_gets_one_and_is_renewed():
    block = NotificationChannel.model_validate({"channel_id": 1, "notify_url": "https://example.test/x", "token": ""})
    zoho = {"channel_id": "1", "events": block.events, "notify_url": block.notify_url,
            "channel_expiry": (datetime.now(UTC) + timedelta(days=5)).isoformat()}

    assert block.token_generated and 0 < len(block.token.get_secret_value()) <= 50
    assert renewal_reason(block, zoho, datetime.now(UTC)) == "the block had no token; a new one was generated"
    block._token_generated = False
    assert renewal_reason(block, zoho, datetime.now(UTC)) is None


# --------------------------------------------------------------------- CLI
def test_webhooks_subscribe_and_status(sandbox, oauth_name, receiver, prefect_api):
    runner = CliRunner()
    name = unique("crm-channel")
    status = ["webhooks", "status", "--channel-block", name]

    subscribed = runner.invoke(app, ["webhooks", "subscribe", "--channel-block", name, "--notify-url", receiver.url + NOTIFY_PATH, "--oauth-block", oauth_name, "--channel-id", "1000000068001"])
    fine = runner.invoke(app, status)
    token = NotificationChannel.load(name).token.get_secret_value()
    with sandbox.client() as api:  # Zoho drops the channel: status must say so
        api.delete(WATCH, params={"channel_ids": "1000000068001"}).raise_for_status()
    missing = runner.invoke(app, status)

    assert subscribed.exit_code == 0, subscribed.output
    assert "APPT_SYNC_RECEIVER_CHANNEL_TOKEN" in subscribed.output and f"NotificationChannel.load('{name}')" in subscribed.output
    assert fine.exit_code == 0, fine.output
    assert "1000000068001" in fine.output and receiver.url + NOTIFY_PATH in fine.output and f"block '{name}'" in fine.output
    assert missing.exit_code == 1 and "no active channel" in missing.output
    for result in (subscribed, fine, missing):
        assert token not in result.output
