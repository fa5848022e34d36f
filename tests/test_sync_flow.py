"""The sync-appointments flow against the sandbox.

Every check is made on the sandbox itself (``/__sandbox/dump`` of both sides,
``/__sandbox/stats`` write and call counters), never on the flow's own store.
Edits are made through the sandbox admin API, as a user in either product would.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

import flows.sync_appointments as sync_flow
from blocks import ZohoOAuth
from blocks.sync_config import AppointmentSyncConfig
from deployments.demo import Pair, linked_pairs as pairs
from flows.sync_appointments import sync_appointments
from sync.report import SyncSummary

UTC = timezone.utc
#: CRM ``Status`` -> the Bookings statuses that say the same (the table in sync/engine.py).
SAME_STATUS = {
    "Scheduled": {"UPCOMING", "ONGOING", "PENDING"},
    "Overdue": {"UPCOMING", "ONGOING", "PENDING"},
    "Cancelled": {"CANCEL", "NO_SHOW"},
    "Completed": {"COMPLETED"},
}
NO_SHOW_NOTE = "No-show (Zoho Bookings)"


# ------------------------------------------------------------------ helpers
def crm_instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def bookings_text(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%d-%b-%Y %H:%M:%S")


def disagreements(dump: dict[str, Any]) -> list[tuple]:
    """Linked appointments whose two sides differ: in status, or in start instant unless both
    are finished (cancelled or completed: the start no longer matters, as sync/engine.py's ``agree``)."""
    out = []
    for p in pairs(dump).values():
        same_start = crm_instant(p.crm["Appointment_Start_Time"]) == p.start or p.crm["Status"] in ("Cancelled", "Completed")
        if not same_start or p.booking["status"] not in SAME_STATUS[p.crm["Status"]]:
            out.append((p.id, p.crm["Appointment_Start_Time"], p.crm["Status"], p.booking["start_time"], p.tz, p.booking["status"]))
    return out


def pick(sandbox, kind: str, n: int, *, exclude: set[str] = frozenset(), tz: str | None = None) -> list[Pair]:
    """``n`` agreeing pairs of a kind: ``future`` (upcoming, starts > 1 day ahead) or ``ended`` (upcoming, ended > 1 h ago)."""
    now = datetime.now(UTC)
    found = []
    for p in sorted(pairs(sandbox.dump()).values(), key=lambda p: p.id):
        if p.id in exclude or p.booking["status"] != "UPCOMING" or (tz and p.tz != tz):
            continue
        if (kind == "future" and p.start > now + timedelta(days=1)) or (kind == "ended" and p.end < now - timedelta(hours=1)):
            found.append(p)
    assert len(found) >= n, f"the seed has only {len(found)} {kind} appointments"
    return found[:n]


def edit_crm(sandbox, crm_id: str, **fields: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{crm_id}", json=fields)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text


def edit_booking(sandbox, booking_id: str, **body: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/bookings/{quote(booking_id, safe='')}", json=body)
    assert r.status_code == 200 and r.json()["response"]["status"] == "success", r.text


def crm_iso(instant: datetime, tz: str = "Asia/Kolkata") -> str:
    return instant.astimezone(ZoneInfo(tz)).replace(microsecond=0).isoformat()


def zero_stats(sandbox) -> None:
    sandbox.http.delete("/__sandbox/stats").raise_for_status()


def writes(sandbox) -> dict[str, int]:
    return sandbox.stats()["writes"]


def next_offset_change(tz: str, after: datetime) -> datetime:
    """Local midnight of the first day after ``after`` whose noon has another UTC offset than ``after``."""
    zone = ZoneInfo(tz)
    local = after.astimezone(zone)
    for d in range(1, 400):
        day = (local + timedelta(days=d)).date()
        if datetime(day.year, day.month, day.day, 12, tzinfo=zone).utcoffset() != local.utcoffset():
            return datetime(day.year, day.month, day.day, tzinfo=zone)
    raise AssertionError(f"no daylight-saving change in {tz} within 400 days")


def next_fall_back(tz: str, after: datetime) -> datetime:
    """Local midnight of the next day after ``after`` on which clocks in ``tz`` go back (a fold)."""
    day = next_offset_change(tz, after)
    while (day + timedelta(hours=12)).utcoffset() > (day - timedelta(hours=12)).utcoffset():
        day = next_offset_change(tz, day + timedelta(hours=12))
    return day


def wall_time(day: datetime, like: datetime, tz: str) -> datetime:
    """``like``'s wall-clock time in ``tz`` on ``day``'s date, as a UTC instant."""
    zone = ZoneInfo(tz)
    t = like.astimezone(zone)
    return datetime(day.year, day.month, day.day, t.hour, t.minute, tzinfo=zone).astimezone(UTC)


def artifacts(prefect_api: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    """The flow run's artifacts by key, read through the REST API."""
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50}
    found = httpx.post(f"{prefect_api}/artifacts/filter", json=body, timeout=30).raise_for_status().json()
    return {a["key"]: a for a in found}


# ----------------------------------------------------------------- fixtures
@dataclass
class Org:
    """One organisation's blocks for a test."""

    name: str

    async def set(self, **changes: Any) -> None:
        """Change settings of the ``AppointmentSyncConfig`` block."""
        cfg = await AppointmentSyncConfig.aload(self.name)
        await cfg.model_validate({**cfg.model_dump(), **changes}).asave(self.name, overwrite=True)

    async def sync(self, mode: str = "scan", **kwargs: Any) -> SyncSummary:
        return await sync_appointments(config_block=self.name, mode=mode, **kwargs)


@pytest.fixture
async def org(sandbox, prefect_api, tmp_path) -> Org:
    """A ``ZohoOAuth`` block for the sandbox and an ``AppointmentSyncConfig`` with a fresh state store.

    Windows reach 400 days ahead (for daylight-saving changes) and the scan's
    window equals the full one, so a scan run (an incremental run plus the Bookings
    window) sees every edit, as webhooks and the safety net would together.
    """
    tag = uuid.uuid4().hex[:8]
    oauth = ZohoOAuth(
        client_id=sandbox.creds["client_id"],
        client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]),
        data_centre="CUSTOM",
        base_url=sandbox.url,
    )
    await oauth.asave(f"sync-oauth-{tag}")
    cfg = AppointmentSyncConfig(
        oauth_block=f"sync-oauth-{tag}",
        bookings_time_zone="Asia/Kolkata",
        state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_past_days=35,
        bookings_future_days=400,
        scan_past_hours=35 * 24,
        scan_future_hours=400 * 24,
        scan_max_calls=100,
    )
    await cfg.asave(f"sync-{tag}")
    return Org(f"sync-{tag}")


# -------------------------------------------------------------------- tests
async def test_full_sync_agrees_and_a_second_sync_writes_nothing(sandbox, org):
    before = pairs(sandbox.dump())
    no_shows = {bid for bid, p in before.items() if p.booking["status"] == "NO_SHOW" and p.crm["Status"] != "Cancelled"}
    assert no_shows  # the seed leaves Bookings no-shows as Scheduled/Overdue in CRM

    summary = await org.sync("full")

    dump = sandbox.dump()
    assert disagreements(dump) == []
    after = pairs(dump)
    for bid in no_shows:  # no-show -> CRM Cancelled with the note
        assert after[bid].crm["Status"] == "Cancelled" and after[bid].crm["Cancellation_Note"] == NO_SHOW_NOTE
    assert writes(sandbox) == {"Appointments__s": len(no_shows)}
    assert summary.applied == len(no_shows) and summary.failed == 0 and summary.links == len(before)
    assert sandbox.stats()["tokens_minted"] == 1

    for mode in ("full", "incremental", "scan"):
        zero_stats(sandbox)
        again = await org.sync(mode)
        assert writes(sandbox) == {}, mode
        assert again.applied == 0 and again.planned == {} and again.candidates == 0, mode
        assert sandbox.stats()["tokens_minted"] == 0  # the stored token is reused


async def test_edits_on_both_sides_propagate_once(sandbox, org):
    await org.sync("full")
    ny = pick(sandbox, "future", 2, tz="America/New_York")
    crm_moved, bk_fold = ny
    bk_moved, = pick(sandbox, "future", 1, tz="Europe/London")
    crm_cancel, bk_cancel = pick(sandbox, "future", 2, exclude={crm_moved.id, bk_fold.id, bk_moved.id})
    bk_no_show, crm_done = pick(sandbox, "ended", 2)

    # CRM reschedule across the booking's next daylight-saving change, written in another zone (Kolkata)
    crm_to = wall_time(next_offset_change(crm_moved.tz, crm_moved.start), crm_moved.start, crm_moved.tz) + timedelta(hours=1)
    edit_crm(sandbox, crm_moved.crm["id"], Appointment_Start_Time=crm_iso(crm_to))
    # Bookings reschedule to the same wall time after its zone's next daylight-saving change
    bk_to = wall_time(next_offset_change(bk_moved.tz, bk_moved.start), bk_moved.start, bk_moved.tz)
    edit_booking(sandbox, bk_moved.id, start_time=bookings_text(bk_to, bk_moved.tz))
    # Bookings reschedule to 01:30 on the next fall-back day: that wall time happens twice, the first one counts
    fall_back = next_fall_back(bk_fold.tz, bk_fold.start)
    fold_text = f"{fall_back:%d-%b-%Y} 01:30:00"
    fold_to = fall_back.replace(hour=1, minute=30, fold=0).astimezone(UTC)
    assert fall_back.replace(hour=1, minute=30, fold=1).astimezone(UTC) == fold_to + timedelta(hours=1)
    edit_booking(sandbox, bk_fold.id, start_time=fold_text)
    edit_booking(sandbox, bk_cancel.id, action="cancel")
    edit_booking(sandbox, bk_no_show.id, action="noshow")
    edit_crm(sandbox, crm_done.crm["id"], Status="Completed")
    edit_crm(sandbox, crm_cancel.crm["id"], Status="Cancelled", Cancellation_Note="Customer called")
    zero_stats(sandbox)

    summary = await org.sync("scan")

    dump = sandbox.dump()
    assert disagreements(dump) == []
    now = pairs(dump)
    assert now[crm_moved.id].start == crm_to
    assert now[crm_moved.id].booking["start_time"] == bookings_text(crm_to, crm_moved.tz)
    assert crm_instant(now[bk_moved.id].crm["Appointment_Start_Time"]) == bk_to
    assert crm_instant(now[bk_fold.id].crm["Appointment_Start_Time"]) == fold_to
    assert now[bk_cancel.id].crm["Status"] == "Cancelled"
    assert now[bk_no_show.id].crm["Status"] == "Cancelled" and now[bk_no_show.id].crm["Cancellation_Note"] == NO_SHOW_NOTE
    assert now[crm_done.id].booking["status"] == "COMPLETED"
    assert now[crm_cancel.id].booking["status"] == "CANCEL"
    assert writes(sandbox) == {"Appointments__s": 4, "bookings": 3}
    calls = sandbox.stats()["calls"]
    assert calls["PUT /crm/{version}/{module}"] == 1  # the four CRM changes in one batch
    assert calls["POST /bookings/v1/json/rescheduleappointment"] + calls["POST /bookings/v1/json/updateappointment"] == 3
    assert summary.api_calls["crm_write"] == 1 and summary.api_calls["bookings_write"] == 3
    assert summary.applied == 7 and summary.failed == 0 and summary.conflict_list == []
    assert summary.planned == {"crm:reschedule": 2, "crm:cancel": 2, "bookings:reschedule": 1, "bookings:complete": 1, "bookings:cancel": 1}

    zero_stats(sandbox)  # the echoes of our own writes come back and die
    for mode in ("incremental", "scan", "full"):
        echo = await org.sync(mode)
        assert writes(sandbox) == {} and echo.applied == 0 and echo.planned == {}, mode
    assert disagreements(sandbox.dump()) == []

    # moved on and back again (A -> B -> A): each move is a new change, sent once
    for to in (bk_to + timedelta(hours=1), bk_to):
        edit_booking(sandbox, bk_moved.id, start_time=bookings_text(to, bk_moved.tz))
        zero_stats(sandbox)
        await org.sync()
        assert writes(sandbox) == {"Appointments__s": 1}
        assert crm_instant(pairs(sandbox.dump())[bk_moved.id].crm["Appointment_Start_Time"]) == to


def conflicts(summary: SyncSummary) -> dict[str, tuple[str, str | None]]:
    """Booking id -> (conflict kind, winner) from the summary."""
    return {c["booking_id"]: (c["kind"], c["winner"]) for c in summary.conflict_list}


async def test_conflicting_edits_follow_the_policy_and_are_reported(sandbox, org):
    await org.sync("full")
    crm_later, bookings_later, crm_wins = pick(sandbox, "future", 3)
    day = timedelta(days=1)
    for p in (crm_later, bookings_later):
        edit_crm(sandbox, p.crm["id"], Appointment_Start_Time=crm_iso(p.start + day))
        edit_booking(sandbox, p.id, start_time=bookings_text(p.start + 2 * day, p.tz))
    await org.set(conflict_policy="report_only")
    zero_stats(sandbox)

    reported = await org.sync()

    assert writes(sandbox) == {}
    assert conflicts(reported) == {crm_later.id: ("both_changed", None), bookings_later.id: ("both_changed", None)}
    assert reported.conflicts == 2 and reported.applied == 0
    assert {d[0] for d in disagreements(sandbox.dump())} == {crm_later.id, bookings_later.id}

    # latest_wins: one CRM side moves again after the run that saw the Bookings changes
    time.sleep(1.1)  # CRM's Modified_Time has whole seconds
    edit_crm(sandbox, crm_later.crm["id"], Appointment_Start_Time=crm_iso(crm_later.start + 3 * day))
    await org.set(conflict_policy="latest_wins")
    zero_stats(sandbox)

    latest = await org.sync()

    assert conflicts(latest) == {crm_later.id: ("both_changed", "crm"), bookings_later.id: ("both_changed", "bookings")}
    now = pairs(sandbox.dump())
    assert now[crm_later.id].start == crm_later.start + 3 * day
    assert crm_instant(now[bookings_later.id].crm["Appointment_Start_Time"]) == bookings_later.start + 2 * day
    assert writes(sandbox) == {"Appointments__s": 1, "bookings": 1}

    # crm_wins, whatever the times
    edit_booking(sandbox, crm_wins.id, start_time=bookings_text(crm_wins.start + day, crm_wins.tz))
    edit_crm(sandbox, crm_wins.crm["id"], Appointment_Start_Time=crm_iso(crm_wins.start - day))
    await org.set(conflict_policy="crm_wins")
    zero_stats(sandbox)

    crm_first = await org.sync()

    assert conflicts(crm_first) == {crm_wins.id: ("both_changed", "crm")}
    assert pairs(sandbox.dump())[crm_wins.id].start == crm_wins.start - day
    assert writes(sandbox) == {"bookings": 1}
    assert disagreements(sandbox.dump()) == []


async def test_refused_records_are_recorded_and_the_rest_applied(sandbox, org, prefect_api):
    await org.sync("full")
    ended, = pick(sandbox, "ended", 1)
    cancelled, moved = pick(sandbox, "future", 2)
    folded, = pick(sandbox, "future", 1, tz="America/New_York", exclude={cancelled.id, moved.id})
    # Without "ask the user to mark completed", CRM shows an ended appointment as Completed (Modified_Time
    # unchanged, so an incremental read does not see it) and refuses to reschedule it: NOT_ALLOWED.
    sandbox.config(ask_to_mark_completed=False)
    edit_booking(sandbox, ended.id, start_time=bookings_text(ended.start + timedelta(hours=1), ended.tz))
    edit_booking(sandbox, cancelled.id, action="cancel")
    edit_crm(sandbox, moved.crm["id"], Appointment_Start_Time=crm_iso(moved.start + timedelta(hours=2)))
    # the second 01:30 of a fall-back night cannot be written in Bookings' wall-time format
    second = next_fall_back(folded.tz, folded.start).replace(hour=1, minute=30, fold=1).astimezone(UTC)
    edit_crm(sandbox, folded.crm["id"], Appointment_Start_Time=crm_iso(second))
    zero_stats(sandbox)

    summary = await org.sync()

    failures = {f["booking_id"]: f for f in summary.failures}
    assert set(failures) == {ended.id, folded.id} and summary.failed == 2
    assert failures[ended.id]["code"] == "NOT_ALLOWED" and "reschedule" in failures[ended.id]["message"]
    assert failures[folded.id]["code"] == "AMBIGUOUS_TIME"
    now = pairs(sandbox.dump())
    assert now[cancelled.id].crm["Status"] == "Cancelled"  # in the same PUT as the refused record
    assert now[moved.id].start == moved.start + timedelta(hours=2)
    assert now[folded.id].start == folded.start  # nothing sent
    assert writes(sandbox) == {"Appointments__s": 1, "bookings": 1}
    calls = sandbox.stats()["calls"]
    assert calls["PUT /crm/{version}/{module}"] == 1 and calls["POST /bookings/v1/json/rescheduleappointment"] == 1
    assert summary.api_calls["crm_write"] == 1 and summary.api_calls["bookings_write"] == 1
    failed_table = json.loads(artifacts(prefect_api, summary.run_id)["sync-failures"]["data"])
    assert {(row["booking_id"], row["code"]) for row in failed_table} == {(ended.id, "NOT_ALLOWED"), (folded.id, "AMBIGUOUS_TIME")}
    assert {d[0] for d in disagreements(sandbox.dump())} >= {ended.id, folded.id}

    # The next (full) run plans both again from fresh reads: CRM now shows the ended appointment
    # Completed, so the reschedule becomes a conflict with the reason and is not sent.
    zero_stats(sandbox)
    again = await org.sync("full")
    assert (ended.id, "rule") in {(c["booking_id"], c["kind"]) for c in again.conflict_list}
    assert {f["booking_id"] for f in again.failures} == {folded.id}
    assert "Appointments__s" not in writes(sandbox)


class Crash(BaseException):
    """The worker dies (not an error the flow could handle)."""


async def test_crash_after_first_batch_then_rerun_converges_without_repeats(sandbox, org, monkeypatch):
    sandbox.http.post("/__sandbox/reset", json={"appointments": 800}).raise_for_status()
    await org.sync("full")
    upcoming = [p for p in pairs(sandbox.dump()).values() if p.booking["status"] == "UPCOMING"]
    assert len(upcoming) >= 250
    changed = sorted(upcoming, key=lambda p: p.id)[:250]
    for i, p in enumerate(changed):
        if i % 2:
            edit_booking(sandbox, p.id, action="cancel")
        else:
            edit_booking(sandbox, p.id, start_time=bookings_text(p.start + timedelta(days=1), p.tz))
    zero_stats(sandbox)

    real, sent = sync_flow.apply_crm_batch, []

    async def dies_after_one_batch(*args: Any, **kwargs: Any):
        if sent:
            raise Crash()
        sent.append(len(args[2]))
        return await real(*args, **kwargs)

    monkeypatch.setattr(sync_flow, "apply_crm_batch", dies_after_one_batch)
    with pytest.raises(Crash):
        await org.sync()
    assert sent == [100] and writes(sandbox) == {"Appointments__s": 100}
    monkeypatch.setattr(sync_flow, "apply_crm_batch", real)

    rerun = await org.sync()

    assert rerun.applied == 150 and rerun.failed == 0
    stats = sandbox.stats()
    assert stats["writes"] == {"Appointments__s": 250}  # each changed record written once, none twice
    assert stats["calls"]["PUT /crm/{version}/{module}"] == 3
    assert disagreements(sandbox.dump()) == []


async def test_dry_run_writes_nothing_and_booking_ids_sync_only_those(sandbox, org, prefect_api):
    await org.sync("full")
    cancelled, moved_in_crm, moved_in_bookings = pick(sandbox, "future", 3)
    edit_booking(sandbox, cancelled.id, action="cancel")
    edit_crm(sandbox, moved_in_crm.crm["id"], Appointment_Start_Time=crm_iso(moved_in_crm.start + timedelta(hours=3)))
    edit_booking(sandbox, moved_in_bookings.id, start_time=bookings_text(moved_in_bookings.start - timedelta(hours=3), moved_in_bookings.tz))
    zero_stats(sandbox)

    dry = await org.sync(dry_run=True)

    assert writes(sandbox) == {}
    assert not any(k.startswith(("PUT ", "POST /bookings/v1/json/re", "POST /bookings/v1/json/up")) for k in sandbox.stats()["calls"])
    assert dry.planned == {"crm:cancel": 1, "bookings:reschedule": 1, "crm:reschedule": 1} and dry.applied == 0
    assert isinstance(dry, SyncSummary) and dry.dry_run
    shown = artifacts(prefect_api, dry.run_id)
    assert "dry run" in shown["sync-summary"]["data"] and "crm:cancel 1" in shown["sync-summary"]["data"]
    assert len(disagreements(sandbox.dump())) == 3

    only = await org.sync(booking_ids=[cancelled.id])

    assert writes(sandbox) == {"Appointments__s": 1}
    assert pairs(sandbox.dump())[cancelled.id].crm["Status"] == "Cancelled"
    assert {d[0] for d in disagreements(sandbox.dump())} == {moved_in_crm.id, moved_in_bookings.id}
    assert only.mode == "records" and only.applied == 1
    changes = json.loads(artifacts(prefect_api, only.run_id)["sync-changes"]["data"])  # tables are stored as JSON text
    assert [(row["booking_id"], row["written_to"], row["change"]) for row in changes] == [(cancelled.id, "CRM", "cancel")]
    assert "| applied | 1 |" in artifacts(prefect_api, only.run_id)["sync-summary"]["data"]

    rest = await org.sync()
    assert rest.applied == 2 and disagreements(sandbox.dump()) == []


async def test_runs_are_named_tagged_and_each_applied_change_is_an_event(sandbox, org, prefect_api, monkeypatch):
    import httpx
    import prefect.events

    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: emitted.append(kw))
    summary = await org.sync("full")
    assert summary.applied > 0
    run = httpx.get(f"{prefect_api}/flow_runs/{summary.run_id}", timeout=30).raise_for_status().json()
    assert run["name"].startswith("sync-full-20") and run["name"].endswith("Z")
    tasks = httpx.post(f"{prefect_api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [summary.run_id]}}, "limit": 200}, timeout=30).json()
    assert any(t["name"].startswith("put-Appointments__s-") for t in tasks)
    assert {f"org:{org.name}", "direction:both"} <= set(run["tags"])  # the run is tagged, even ad hoc
    assert all(t["tags"] == [] for t in tasks)  # task runs are not: a tagged task run costs a concurrency-slot request
    applied = [e for e in emitted if e["event"].startswith("zoho.appointment.")]
    assert sorted(e["resource"]["prefect.resource.name"] for e in applied) == sorted(c["booking_id"] for c in summary.changes)
    assert {e["event"] for e in applied} == {"zoho.appointment.cancelled"}  # the seed's no-shows, written as CRM cancellations
    assert all(e["payload"]["sync_run"] == summary.run_id and e["resource"]["prefect.resource.id"].startswith("zoho.appointment.#AN-") for e in applied)
