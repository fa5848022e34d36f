"""A run history an operator reads without logs: the sync's artifacts, run names and states,
the webhook's sync requests as linked events, block field labels, and what counts as failed.

Flow runs go against the sandbox (fixtures of tests/test_sync_flow.py); artifacts and runs
are read back through the Prefect client, as the UI shows them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

import flows.sync_appointments as sync_flow
from sync.report import NOTHING_TO_DO, SyncSummary, one_line_error, show_time
from test_sync_flow import NO_SHOW_NOTE, bookings_text, crm_iso, edit_booking, edit_crm, org, pairs, pick  # noqa: F401 - org is a fixture

UTC = timezone.utc


async def artifacts(run_id: str) -> dict[str, Any]:
    """The flow run's artifacts by key (the latest of each key); tables as lists of rows."""
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)])))
    out = {}
    for a in sorted(found, key=lambda a: a.created):
        out[a.key] = json.loads(a.data) if a.type == "table" else a.data
    return out


async def flow_run(run_id: str):
    async with get_client() as client:
        return await client.read_flow_run(uuid.UUID(run_id))


def shown(instant: datetime, tz: str) -> tuple[str, str]:
    """What a row must show for ``instant``: the wall time in ``tz`` with the zone's name, and the UTC time."""
    local, utc = instant.astimezone(ZoneInfo(tz)), instant.astimezone(UTC)
    return f"{local:%Y-%m-%d %H:%M} {tz}", f"{utc:%H:%M} UTC"


def shows(text: str, instant: datetime, tz: str) -> bool:
    return all(part in text for part in shown(instant, tz))


# ------------------------------------------------------------------ artifacts of real runs
async def test_changes_and_conflicts_say_what_happened_in_local_time_and_utc(sandbox, org, prefect_api):
    seed_no_shows = {bid for bid, p in pairs(sandbox.dump()).items() if p.booking["status"] == "NO_SHOW" and p.crm["Status"] != "Cancelled"}
    first = await org.sync("full")

    rows = (await artifacts(first.run_id))["sync-changes"]
    assert {r["booking_id"] for r in rows} == seed_no_shows
    for r in rows:  # a Bookings no-show written to CRM as a cancellation with a note is reported as a no-show
        assert r["change"] == "no-show" and r["written_to"] == "CRM" and r["crm_id"] != "-"
        assert r["old"] == "status Scheduled" and "Cancelled" in r["new"] and NO_SHOW_NOTE in r["new"]

    moved, = pick(sandbox, "future", 1, tz="Europe/London")
    both, = pick(sandbox, "future", 1, tz="America/New_York", exclude={moved.id})
    moved_to = moved.start + timedelta(days=1, hours=1)
    edit_booking(sandbox, moved.id, start_time=bookings_text(moved_to, moved.tz))
    crm_to, bookings_to = both.start - timedelta(days=1), both.start + timedelta(days=2)
    edit_crm(sandbox, both.crm["id"], Appointment_Start_Time=crm_iso(crm_to))
    edit_booking(sandbox, both.id, start_time=bookings_text(bookings_to, both.tz))
    await org.set(conflict_policy="crm_wins")

    second = await org.sync()

    shown_now = await artifacts(second.run_id)
    changes = {(r["booking_id"], r["written_to"]): r for r in shown_now["sync-changes"]}
    row = changes[(moved.id, "CRM")]
    assert row["change"] == "reschedule" and row["crm_id"] == moved.crm["id"]
    assert row["old"].startswith("start ") and shows(row["old"], moved.start, moved.tz)
    assert row["new"].startswith("start ") and shows(row["new"], moved_to, moved.tz)
    assert shows(changes[(both.id, "Bookings")]["new"], crm_to, both.tz)  # the winner's time, sent to Bookings
    conflict, = shown_now["sync-conflicts"]
    assert conflict["booking_id"] == both.id and conflict["crm_id"] == both.crm["id"] and conflict["kind"] == "both_changed"
    assert shows(conflict["crm_wants"], crm_to, both.tz) and shows(conflict["bookings_wants"], bookings_to, both.tz)
    assert conflict["outcome"].startswith("CRM") and "crm_wins" in conflict["why"]
    assert "| applied | 2 |" in shown_now["sync-summary"] and "| conflicts | 1 |" in shown_now["sync-summary"]


async def test_a_run_that_fails_part_way_publishes_what_it_applied_and_the_error(sandbox, org, prefect_api, monkeypatch):
    from zoho.errors import ServerError

    await org.sync("full")
    cancelled, moved = pick(sandbox, "future", 2)
    edit_booking(sandbox, cancelled.id, action="cancel")  # -> a CRM write, applied first
    edit_crm(sandbox, moved.crm["id"], Appointment_Start_Time=crm_iso(moved.start + timedelta(hours=2)))  # -> a Bookings write
    runs: list[str] = []

    async def zoho_is_down(*args: Any, **kwargs: Any):
        from prefect.runtime import flow_run as current

        runs.append(current.get_id())
        raise ServerError("INTERNAL_ERROR", "Bookings is down; Authorization: Zoho-oauthtoken 1000.secret-token\nsecond line", status_code=500)

    monkeypatch.setattr(sync_flow, "apply_bookings", zoho_is_down)
    with pytest.raises(ServerError):
        await org.sync()

    run_id, = runs
    assert (await flow_run(run_id)).state.is_failed()  # still a failed run
    shown_now = await artifacts(run_id)
    summary = shown_now["sync-summary"]
    assert "Failed while applying changes" in summary and "INTERNAL_ERROR" in summary and "nothing applied is sent twice" in summary
    assert "| applied | 1 |" in summary
    assert "secret-token" not in json.dumps(shown_now) and "second line" not in summary
    assert [(r["booking_id"], r["written_to"], r["change"]) for r in shown_now["sync-changes"]] == [(cancelled.id, "CRM", "cancel")]
    assert pairs(sandbox.dump())[cancelled.id].crm["Status"] == "Cancelled"

    monkeypatch.undo()
    rerun = await org.sync()  # re-planned from the base: only the Bookings change is left
    assert rerun.applied == 1 and rerun.changes[0]["booking_id"] == moved.id


async def test_records_runs_are_named_after_their_ids_and_an_echo_says_nothing_to_do(sandbox, org, prefect_api):
    await org.sync("full")
    cancelled, other, third = pick(sandbox, "future", 3)
    edit_booking(sandbox, cancelled.id, action="cancel")

    applied = await org.sync(booking_ids=[cancelled.id])

    run = await flow_run(applied.run_id)
    assert run.name.startswith(f"sync-records-{cancelled.id}-20") and "nothing-to-do" not in run.name
    assert run.state.is_completed() and run.state.message.startswith("1 applied")

    echo = await org.sync(booking_ids=[cancelled.id, other.id, third.id])  # the echo of our write: both sides agree

    assert isinstance(echo, SyncSummary) and echo.applied == 0 and echo.failed == 0 and echo.nothing_to_do
    run = await flow_run(echo.run_id)
    assert run.name.startswith(f"sync-records-{cancelled.id}-+2-nothing-to-do-20")
    assert run.state.is_completed() and run.state.message == NOTHING_TO_DO
    assert "Nothing to do" in (await artifacts(echo.run_id))["sync-summary"]


async def test_a_read_failure_and_an_invalid_record_count_as_failed(sandbox, org, tmp_path):
    await org.sync("full")
    missing = await org.sync(booking_ids=["#AN-99999"])
    assert missing.failed == 1 and [(f["booking_id"], f["kind"], f["code"]) for f in missing.failures] == [("#AN-99999", "read", "NOT_FOUND")]

    # a CRM status the sync does not know (say a picklist value added in CRM), as a Bulk Read would store it
    odd, = pick(sandbox, "future", 1)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE crm_appointments SET status = 'Tentative' WHERE id = ?", (odd.crm["id"],))
    invalid = await org.sync()
    assert invalid.failed == 1 and invalid.invalid == 1
    entry, = invalid.failures
    assert (entry["booking_id"], entry["crm_id"], entry["code"]) == (odd.id, odd.crm["id"], "INVALID_RECORD") and "Tentative" in entry["message"]
    row, = (await artifacts(invalid.run_id))["sync-failures"]
    assert (row["booking_id"], row["crm_id"], row["change"]) == (odd.id, odd.crm["id"], "invalid record")


# ------------------------------------------------------------------ the webhook's sync requests
async def test_sync_requests_name_the_organisation_bookings_and_crm_records_they_concern(tmp_path):
    from prefect.events import Event
    from prefect.events.schemas.events import Resource

    from deployments.serve import build
    from deployments.webhook import ReceiverSettings, create_receiver

    emitted: list[dict[str, Any]] = []
    settings = ReceiverSettings(channel_token="tok", bookings_secret="sec", coalesce_seconds=3600, leading_edge=False, config_block="sync-test",
                                state_store_url=f"sqlite:///{tmp_path / 's.db'}")
    app = create_receiver(settings, emit=lambda event, resource, payload, related=None: emitted.append(dict(event=event, resource=resource, payload=payload, related=related)))
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            await client.post("/zoho/bookings/webhook", json={"booking_id": "#AN-00007"}, params={"secret": "sec"})
            await client.post("/zoho/crm/notifications", json={"module": "Appointments__s", "operation": "update", "ids": ["111", "222"], "token": "tok"})
            app.state.coalescer.add("crm_ids", [str(i) for i in range(5000, 5400)])  # a burst: more ids than an event may relate
            app.state.coalescer.flush()

    requests = [e for e in emitted if e["event"] == "zoho.sync.requested"]
    by_kind = {("booking" if e["payload"]["booking_ids"] else "crm"): e for e in requests}
    booking = by_kind["booking"]
    assert booking["payload"] == {"config_block": "sync-test", "crm_module": None, "crm_ids": [], "deleted_crm_ids": [], "booking_ids": ["#AN-00007"], "booking_states": {}}  # the contract the trigger templates
    assert booking["resource"] == {"prefect.resource.id": "zoho.sync.sync-test"}
    assert {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in booking["related"]} == {
        ("organisation", "zoho.sync.sync-test"), ("booking", "zoho.appointment.#AN-00007")}
    crm = by_kind["crm"]
    assert len(crm["payload"]["crm_ids"]) == 402  # the payload has every id
    roles = [r["prefect.resource.role"] for r in crm["related"]]
    assert roles[0] == "organisation" and set(roles[1:]) == {"crm-record"}
    assert {"zoho.crm.record.111", "zoho.crm.record.222"} <= {r["prefect.resource.id"] for r in crm["related"]}
    for e in requests:  # valid Prefect events (at most 100 related resources), still matched by the sync-on-webhook trigger
        Event(event=e["event"], resource=e["resource"], related=e["related"], payload=e["payload"])
    deployments = await asyncio.to_thread(build, "sync-test", "zoho-test")  # to_deployment is async-dispatched
    (trigger,) = next(d for d in deployments if d.name == "sync-on-webhook").triggers
    assert all(trigger.match.matches(Resource.model_validate(e["resource"])) for e in requests)


def test_applied_change_events_relate_the_crm_record_as_the_requests_do(monkeypatch):
    import prefect.events

    from sync.engine import Action, Kind, Side

    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: emitted.append(kw))
    sync_flow._emit_applied(Action("#AN-1", "600", Side.CRM, Kind.CANCEL, "UTC", scope="Events"), "run-1", "sync-test", "Events")
    assert {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in emitted[0]["related"]} == {
        ("organisation", "zoho.sync.sync-test"), ("crm-record", "zoho.crm.record.600")}
    record = next(r for r in emitted[0]["related"] if r["prefect.resource.role"] == "crm-record")
    assert record["zoho.crm.module"] == "Events" and emitted[0]["payload"]["crm_module"] == "Events"  # as the receiver labels its requests
    assert emitted[0]["resource"]["prefect.resource.id"] == "zoho.appointment.#AN-1"


# ------------------------------------------------------------------ block field labels
@pytest.mark.parametrize("block", ["AppointmentSyncConfig", "ZohoOAuth", "NotificationChannel"])
def test_block_fields_have_labels_and_descriptions(block):
    import blocks

    cls = getattr(blocks, block)
    schema = cls.model_json_schema()
    for name, field in schema["properties"].items():
        assert field.get("title") and len(field.get("description", "")) >= 20, (block, name)
        # a $ref would make the UI show the referenced enum's title ("Policy") instead of the field's
        assert "$ref" not in str(field) and "allOf" not in field, (block, name)
    if block == "AppointmentSyncConfig":
        assert schema["properties"]["conflict_policy"]["title"] == "Conflict policy (both sides changed)"
        assert all(p in schema["properties"]["conflict_policy"]["description"] for p in ("latest_wins", "crm_wins", "bookings_wins", "report_only"))
        assert schema["properties"]["initial_source"]["title"] == "Source of truth for new links"
    secrets = {"ZohoOAuth": {"client_secret", "refresh_token", "access_token"}, "NotificationChannel": {"token"}, "AppointmentSyncConfig": set()}[block]
    assert set(schema.get("secret_fields", [])) == secrets


# ------------------------------------------------------------------ the report's words
def test_times_are_shown_in_the_booking_zone_and_in_utc():
    instant = datetime(2026, 11, 30, 19, 30, tzinfo=UTC)
    assert show_time(instant, "Asia/Kolkata") == "2026-12-01 01:00 Asia/Kolkata (2026-11-30 19:30 UTC)"
    assert show_time(datetime(2026, 12, 1, 10, tzinfo=UTC), "Europe/London") == "2026-12-01 10:00 Europe/London (10:00 UTC)"
    assert show_time(datetime(2026, 7, 1, 10, tzinfo=UTC), "Europe/London") == "2026-07-01 11:00 Europe/London (10:00 UTC)"
    assert show_time(instant, "UTC") == show_time(instant, "Not/AZone") == "2026-11-30 19:30 UTC"


def test_errors_are_one_line_without_secrets():
    exc = RuntimeError("refused: access_token=1000.abc&x=1 client_secret: s3cr3t Zoho-oauthtoken 1000.xyz\nTraceback line")
    line = one_line_error(exc)
    assert line.startswith("RuntimeError: refused") and "\n" not in line
    assert not any(s in line for s in ("1000.abc", "s3cr3t", "1000.xyz", "Traceback"))
    assert len(one_line_error(ValueError("x" * 1000))) <= 300
