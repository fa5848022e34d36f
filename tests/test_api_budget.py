"""The daily Zoho API budget: the arithmetic, the store, the meter, and runs against the sandbox.

* :mod:`sync.budget`: Zoho's limits by plan and edition, the budget, the write reserve, the forecast.
* :mod:`sync.usage`: what runs spent, per family and day; reads that wait; one alert a day.
* :mod:`zoho.usage`: every call counted; a call past the allowance, or after a limit answer, not sent.
* The flow: webhook-first reads (an idle incremental run makes no Bookings call; the echo of our own
  CRM write costs no Bookings call), reads put off by the budget and caught up later, a Zoho limit
  answer stops the family for the run, a dry run counts the calls it would make, ``zoho.budget.low``.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pytest_httpx import HTTPXMock

from blocks.sync_config import AppointmentSyncConfig
from blocks.zoho_oauth import ZohoOAuth
from sync import usage as store_usage
from sync.budget import FamilyDay, bookings_daily_limit, bookings_day, budget_of, crm_daily_credits
from sync.store import open_store
from tasks.budget import start_budget
from zoho import usage
from zoho.clients import ZohoClient
from zoho.datacentres import Endpoints
from zoho.errors import ApiLimitError, BudgetReachedError

UTC = timezone.utc
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # 17:30 in Asia/Kolkata: 6.5 h to the workspace's midnight


# ------------------------------------------------------------------ arithmetic
@pytest.mark.parametrize(("plan", "override", "expected"), [("free", None, 250), ("Basic", None, 1000), ("PREMIUM", None, 3000), ("free", 400, 400)])
def test_bookings_limit_by_plan(plan, override, expected):
    assert bookings_daily_limit(plan, override) == expected


def test_an_unknown_plan_is_named():
    with pytest.raises(ValueError, match="unknown Bookings plan 'gold'"):
        bookings_daily_limit("gold")


@pytest.mark.parametrize(
    ("edition", "users", "override", "expected"),
    [
        ("free", 50, None, 5000),
        ("standard", 10, None, 52_500),
        ("standard", 400, None, 100_000),  # Standard's maximum
        ("professional", 10, None, 55_000),
        ("enterprise", 10, None, 60_000),
        ("ultimate", 10, None, 70_000),
        ("enterprise", 10, 123_456, 123_456),  # add-on credits: given outright
    ],
)
def test_crm_credits_by_edition(edition, users, override, expected):
    assert crm_daily_credits(edition, users, override) == expected


def test_budget_reserve_and_what_is_left():
    day = FamilyDay("bookings", limit=250, budget=budget_of(250, 80), reserve=20, used=170, day="2026-11-28", ends=NOON + timedelta(hours=6, minutes=30))
    assert day.budget == 200
    assert (day.read_left(), day.write_left()) == (10, 30)  # reads stop 20 calls before the budget
    spent = FamilyDay("bookings", 250, 200, 20, 230, "2026-11-28", NOON)
    assert (spent.read_left(), spent.write_left()) == (0, 0)  # never negative


def test_bookings_forecast_is_used_plus_the_days_rate_until_the_workspace_midnight():
    ends = bookings_day(NOON, "Asia/Kolkata")[2]
    assert ends == datetime(2026, 11, 28, 18, 30, tzinfo=UTC)
    day = FamilyDay("bookings", 250, 200, 20, used=60, day="2026-11-28", ends=ends, recent=96, recent_seconds=24 * 3600)
    assert day.rate_per_hour() == 4
    assert day.forecast(NOON) == 60 + 4 * 6.5  # 86
    assert day.forecast(NOON, spent=12) == math.ceil(60 + 12 + (96 + 12) / 24 * 6.5) == 102  # 72 + 4.5/h x 6.5 h, rounded up
    young = FamilyDay("bookings", 250, 200, 20, used=3, day="2026-11-28", ends=ends, recent=3, recent_seconds=60)
    assert young.rate_per_hour() == 0.5  # a minute of history counts as six hours, not 180 calls an hour


def test_crm_forecast_is_the_rolling_rate_over_24_hours():
    day = FamilyDay("crm", 5000, 4000, 400, used=300, day="2026-11-28", ends=NOON + timedelta(days=1), recent=300, recent_seconds=12 * 3600)
    assert day.forecast(NOON) == 600
    assert day.forecast(NOON, spent=12) == 624


def test_the_bookings_day_is_the_workspaces_calendar_day():
    assert bookings_day(datetime(2026, 11, 28, 18, 29, tzinfo=UTC), "Asia/Kolkata")[0] == "2026-11-28"
    assert bookings_day(datetime(2026, 11, 28, 18, 30, tzinfo=UTC), "Asia/Kolkata")[0] == "2026-11-29"
    with pytest.raises(ValueError, match="not an IANA time zone"):
        bookings_day(NOON, "Mars/Olympus")


# ------------------------------------------------------------------ the store
@pytest.fixture
def engine(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield engine
    engine.dispose()


def test_usage_counts_the_workspace_day_for_bookings_and_24_hours_for_crm(engine):
    yesterday_ist = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)  # 23:30 on the 28th in Kolkata
    today_ist = datetime(2026, 11, 28, 19, 0, tzinfo=UTC)  # 00:30 on the 29th
    store_usage.record_usage(engine, "r1", "full", {"bookings": {"units": 20, "reads": 20}, "crm": {"units": 52, "reads": 2}}, yesterday_ist, "Asia/Kolkata")
    store_usage.record_usage(engine, "r2", "scan", {"bookings": {"units": 2, "reads": 2}, "crm": {"units": 1, "reads": 1}}, today_ist, "Asia/Kolkata")
    store_usage.record_usage(engine, "r3", "records", {"crm": {"units": 0}}, today_ist, "Asia/Kolkata")  # nothing spent: no row
    now = today_ist + timedelta(minutes=5)
    bookings = store_usage.family_day(engine, "bookings", 250, 80, 10, now, "Asia/Kolkata")
    assert (bookings.day, bookings.used, bookings.recent, bookings.budget, bookings.reserve) == ("2026-11-29", 2, 22, 200, 20)
    crm = store_usage.family_day(engine, "crm", 5000, 80, 10, now, "Asia/Kolkata")
    assert (crm.used, crm.budget) == (53, 4000)  # rolling: yesterday evening's credits still count
    later = store_usage.family_day(engine, "crm", 5000, 80, 10, yesterday_ist + timedelta(days=1, seconds=1), "Asia/Kolkata")
    assert later.used == 1  # 24 hours on, the full run's credits are back


def test_pending_reads_keep_their_first_time_and_count_attempts(engine):
    store_usage.add_pending_reads(engine, ["#AN-2", "#AN-1"], "budget", NOON)
    store_usage.add_pending_reads(engine, ["#AN-1", "#AN-3"], "budget", NOON + timedelta(hours=1))
    assert store_usage.pending_reads(engine) == ["#AN-1", "#AN-2", "#AN-3"]
    assert store_usage.pending_reads(engine, limit=1) == ["#AN-1"]
    store_usage.drop_pending_reads(engine, ["#AN-1", "#AN-9"])
    assert store_usage.pending_reads(engine) == ["#AN-2", "#AN-3"] and store_usage.count_pending_reads(engine) == 2


def test_one_alert_per_family_and_day(engine):
    assert store_usage.alert_once(engine, "bookings", "2026-11-28", 100, 300, 200, NOON)
    assert not store_usage.alert_once(engine, "bookings", "2026-11-28", 120, 310, 200, NOON)
    assert store_usage.alert_once(engine, "crm", "2026-11-28", 1, 5000, 4000, NOON)
    assert store_usage.alert_once(engine, "bookings", "2026-11-29", 1, 300, 200, NOON)


def test_a_runs_allowance_is_what_is_left_of_the_budget(engine):
    cfg = AppointmentSyncConfig(bookings_plan="free", bookings_time_zone="Asia/Kolkata", crm_edition="free")
    store_usage.record_usage(engine, "r1", "scan", {"bookings": {"units": 150}}, NOON - timedelta(hours=1), "Asia/Kolkata")
    budget = start_budget(cfg, engine, NOON)
    assert budget.meter.left("bookings", "read") == 200 - 20 - 150
    assert budget.meter.left("bookings", "write") == 50
    assert budget.meter.left("crm", "read") == 4000 - 400


# ------------------------------------------------------------------ the meter
@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "https://www.zohoapis.eu/bookings/v1/json/getappointment?booking_id=%23AN-1", ("bookings", "read", 1)),
        ("POST", "https://www.zohoapis.eu/bookings/v1/json/fetchappointment", ("bookings", "read", 1)),
        ("POST", "https://www.zohoapis.eu/bookings/v1/json/rescheduleappointment", ("bookings", "write", 1)),
        ("POST", "https://www.zohoapis.eu/bookings/v1/json/updateappointment", ("bookings", "write", 1)),
        ("GET", "https://www.zohoapis.eu/crm/v7/Appointments__s", ("crm", "read", 1)),
        ("PUT", "https://www.zohoapis.eu/crm/v7/Appointments__s", ("crm", "write", 1)),
        ("POST", "https://www.zohoapis.eu/crm/bulk/v7/read", ("crm", "read", usage.BULK_READ_CREDITS)),
        ("GET", "https://www.zohoapis.eu/crm/bulk/v7/read/123/result", ("crm", "read", 1)),
        ("POST", "https://accounts.zoho.eu/oauth/v2/token", None),  # Accounts calls are not counted
    ],
)
def test_calls_are_classified_by_family_kind_and_cost(method, url, expected):
    assert usage.classify(method, url) == expected


def test_the_meter_refuses_past_the_allowance_and_after_a_limit_answer():
    meter = usage.Meter({"bookings": usage.Allowance(read_left=2, write_left=3)})
    get = "https://x/bookings/v1/json/getappointment"
    for _ in range(2):
        meter.admit("GET", get)
        meter.record("GET", get, 200)
    with pytest.raises(BudgetReachedError) as info:
        meter.admit("GET", get)
    assert info.value.details == {"family": "bookings", "kind": "read"} and not info.value.transient
    meter.admit("POST", "https://x/bookings/v1/json/updateappointment")  # the write reserve is still there
    meter.record("POST", "https://x/bookings/v1/json/updateappointment", 429, "API_LIMIT_EXCEEDED", None, "limit of 250 a day")
    assert meter.stopped == {"bookings": "limit of 250 a day"}
    with pytest.raises(ApiLimitError):
        meter.admit("POST", "https://x/bookings/v1/json/updateappointment")
    meter.admit("GET", "https://x/crm/v7/Appointments__s")  # another family goes on
    assert meter.by_family()["bookings"] == {"reads": 2, "writes": 1, "units": 3, "refused": 2}


def test_a_short_throttle_does_not_stop_the_family():
    meter = usage.Meter()
    meter.record("GET", "https://x/crm/bulk/v7/read/1/result", 429, "TOO_MANY_REQUESTS", 60.0)
    assert meter.stopped == {} and meter.allows("crm", "read")


@pytest.fixture
async def zoho():
    async with ZohoClient(Endpoints.for_data_centre("US")) as client:
        yield client


async def test_the_client_counts_and_does_not_send_past_the_allowance(zoho: ZohoClient, httpx_mock: HTTPXMock):
    body = {"response": {"returnvalue": {"booking_id": "#AN-1", "start_time": "28-Nov-2026 10:00:00", "end_time": "28-Nov-2026 10:30:00",
                                         "time_zone": "UTC", "status": "UPCOMING"}, "status": "success"}}
    httpx_mock.add_response(json=body)
    meter = usage.Meter({"bookings": usage.Allowance(read_left=1, write_left=1)})
    with usage.metering(meter):
        await zoho.bookings.get_appointment("#AN-1")
        with pytest.raises(BudgetReachedError):
            await zoho.bookings.get_appointment("#AN-2")
    assert len(httpx_mock.get_requests()) == 1  # the second was never sent
    assert meter.calls == {("bookings", "read"): 1} and meter.refused == {("bookings", "read"): 1}
    assert usage.current_meter() is None  # outside metering nothing is counted


async def test_a_bookings_limit_answer_stops_bookings_for_the_run(zoho: ZohoClient, httpx_mock: HTTPXMock):
    limit = {"response": {"returnvalue": {"message": "API call limit of 250 calls per day exceeded", "code": "API_LIMIT_EXCEEDED"}, "status": "failure"}}
    httpx_mock.add_response(status_code=429, json=limit, headers={"Retry-After": "20000"})
    meter = usage.Meter()
    with usage.metering(meter):
        with pytest.raises(ApiLimitError):
            await zoho.bookings.get_appointment("#AN-1")
        with pytest.raises(ApiLimitError, match="earlier in this run"):
            await zoho.bookings.get_appointment("#AN-2")
    assert len(httpx_mock.get_requests()) == 1
    assert "250 calls" in meter.stopped["bookings"]


# ------------------------------------------------------------------ runs against the sandbox
async def make_org(sandbox, tmp_path, **settings: Any) -> str:
    tag = uuid.uuid4().hex[:8]
    await ZohoOAuth(
        client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url,
    ).asave(f"budget-oauth-{tag}")  # fmt: skip
    await AppointmentSyncConfig(
        oauth_block=f"budget-oauth-{tag}", bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_plan="premium", crm_edition="enterprise", crm_users=10, **settings,
    ).asave(f"budget-{tag}")  # fmt: skip
    return f"budget-{tag}"


def bookings_calls(sandbox) -> dict[str, int]:
    return {k: v for k, v in sandbox.stats()["calls"].items() if "/bookings/" in k}


def future_pair(sandbox) -> tuple[dict, dict]:
    """A linked, upcoming appointment at least a day ahead: (CRM record, booking)."""
    dump = sandbox.dump()
    crm = {a["Booking_Id"]: a for a in dump["Appointments__s"] if a.get("Booking_Id")}
    now = datetime.now(UTC)
    from zoho.timefmt import from_bookings

    for bk in sorted(dump["bookings"], key=lambda b: b["booking_id"]):
        appt = crm.get(bk["booking_id"])
        if appt and bk["status"] == "UPCOMING" and appt["Status"] == "Scheduled" and from_bookings(bk["start_time"], bk["time_zone"]) > now + timedelta(days=2):
            return appt, bk
    raise AssertionError("no future appointment in the seed")


async def test_an_idle_incremental_run_makes_no_bookings_call_and_shows_the_day(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments

    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")
    before = bookings_calls(sandbox)
    summary = await sync_appointments(config_block=config, mode="incremental")
    assert bookings_calls(sandbox) == before  # webhook first: no Bookings window every 5 minutes
    assert summary.zoho_calls.get("bookings", {}).get("units", 0) == 0 and summary.zoho_calls["crm"]["reads"] >= 1
    day = summary.budget["bookings"]
    assert day["budget"] == 2400 and day["limit"] == 3000 and day["used"] >= 1  # the full run's pages count today
    assert "Zoho API today" in summary.markdown()


async def test_the_echo_of_our_crm_write_costs_no_bookings_call(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments

    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")
    appt, bk = future_pair(sandbox)
    moved = sandbox.http.patch(f"/__sandbox/bookings/{bk['booking_id'].replace('#', '%23')}", json={"action": "cancel"})
    assert moved.status_code == 200, moved.text
    first = await sync_appointments(config_block=config, booking_ids=[bk["booking_id"]])  # the webhook's run: 1 read, 1 CRM write
    assert first.applied == 1 and first.zoho_calls["bookings"] == {"reads": 1, "writes": 0, "units": 1, "refused": 0}
    before = bookings_calls(sandbox)
    echo = await sync_appointments(config_block=config, crm_ids=[appt["id"]])  # the CRM notification of our own write
    assert echo.nothing_to_do and bookings_calls(sandbox) == before
    assert "bookings" not in echo.zoho_calls and echo.zoho_calls["crm"]["reads"] == 1


async def test_reads_past_the_budget_wait_and_are_caught_up(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments

    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")  # ~4 fetchappointment pages of 100: today's usage
    cfg = await AppointmentSyncConfig.aload(config)
    engine = open_store(cfg.state_store_url)
    try:
        used = store_usage.family_day(engine, "bookings", 3000, 100, 0, datetime.now(UTC), "Asia/Kolkata").used
        # a budget with nothing left for reads (the write reserve is kept)
        await cfg.model_copy(update={"bookings_calls_per_day": used + 2, "budget_percent": 100, "write_reserve_percent": 50}).asave(config, overwrite=True)
        appt, bk = future_pair(sandbox)
        r = sandbox.http.patch(f"/__sandbox/bookings/{bk['booking_id'].replace('#', '%23')}", json={"action": "cancel"})
        assert r.status_code == 200, r.text
        before = bookings_calls(sandbox)
        waited = await sync_appointments(config_block=config, booking_ids=[bk["booking_id"]])
        assert bookings_calls(sandbox) == before  # not read: no call at all
        assert waited.failed == 0 and waited.waiting and "pending_reads" in waited.waiting[0]
        assert "put off by the API budget" in waited.headline() and not waited.nothing_to_do
        assert store_usage.pending_reads(engine) == [bk["booking_id"]]
        # the next day (here: a bigger budget) the next scheduled run reads it first and syncs the change
        await cfg.model_copy(update={"bookings_calls_per_day": None}).asave(config, overwrite=True)
        caught = await sync_appointments(config_block=config, mode="incremental")
        assert caught.applied == 1 and store_usage.pending_reads(engine) == []
        crm = next(a for a in sandbox.dump()["Appointments__s"] if a["id"] == appt["id"])
        assert crm["Status"] == "Cancelled"
    finally:
        engine.dispose()


async def test_a_zoho_limit_answer_stops_bookings_calls_for_the_run(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments

    # one Bookings call at a time, so "after the first answer" is exact (calls already in flight cannot be taken back)
    config = await make_org(sandbox, tmp_path, scan_max_calls=10, scan_past_hours=30 * 24, scan_future_hours=30 * 24, bookings_concurrency=1)
    await sync_appointments(config_block=config, mode="full")
    sandbox.http.put("/__sandbox/config", json={"limits_enforced": True, "bookings_plan": "Free"}).raise_for_status()
    try:
        spent = sandbox.stats()["limits"]["bookings"]["calls_today"]
        assert spent < 250
        # spend the rest of the Free plan's day with the sync's own token (a busy other integration)
        oauth = await ZohoOAuth.aload((await AppointmentSyncConfig.aload(config)).oauth_block)
        async with oauth.get_client() as zoho:
            for _ in range(250 - spent):
                await zoho.bookings.get_appointment("#AN-00001")
        ids = [b["booking_id"] for b in sandbox.dump()["bookings"][:3]]
        summary = await sync_appointments(config_block=config, mode="scan")
        assert sandbox.stats()["limits"]["refused"].get("bookings_daily") == 1  # one answer from Zoho, then no more calls
        assert summary.zoho_calls["bookings"]["units"] == 1
        assert any("window" in w for w in summary.waiting) and summary.error is None
        rec = await sync_appointments(config_block=config, booking_ids=ids)
        assert sandbox.stats()["limits"]["refused"]["bookings_daily"] == 2 and rec.error is None
        assert rec.zoho_calls["bookings"]["units"] == 1  # the first answer stopped the rest
        assert rec.waiting == [f"{len(ids)} bookings to read (getappointment): the day's Bookings budget is spent; kept in pending_reads for the next run with budget"]
        assert rec.failed == 0  # not a failure of those bookings: they wait
    finally:
        sandbox.http.put("/__sandbox/config", json={"limits_enforced": False, "bookings_plan": "Premium"}).raise_for_status()


async def test_a_dry_run_counts_the_calls_it_would_make(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments

    config = await make_org(sandbox, tmp_path)
    summary = await sync_appointments(config_block=config, mode="full", dry_run=True)
    crm = sum(v for k, v in summary.planned.items() if k.startswith("crm:"))
    bookings = sum(v for k, v in summary.planned.items() if k.startswith("bookings:"))
    assert crm > 0
    assert summary.would_call == {"bookings_calls": bookings, "crm_calls": math.ceil(crm / 100), "crm_credits": math.ceil(crm / 100)}
    assert f"would send {bookings} Bookings calls" in summary.markdown()


async def test_budget_low_is_sent_once_a_day(sandbox, prefect_api, tmp_path, monkeypatch):
    import prefect.events

    from flows.sync_appointments import sync_appointments
    from sync import tables

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    today_noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)  # 6.5 h before the workspace's midnight
    monkeypatch.setattr(tables, "_clock", lambda: today_noon)
    config = await make_org(sandbox, tmp_path, bookings_calls_per_day=5, bookings_page_size=100)  # a budget of 4 calls
    first = await sync_appointments(config_block=config, mode="full")  # 3 pages of 100: 3 calls, a first history read over 6 hours
    assert first.budget["bookings"] == {"day": today_noon.date().isoformat(), "used": 3, "budget": 4, "limit": 5, "forecast": 7, "left": 1}  # 3 + 0.5/h x 6.5 h
    low = [e for e in sent if e["event"] == "zoho.budget.low"]
    assert len(low) == 1 and low[0]["payload"]["family"] == "bookings" and low[0]["resource"]["prefect.resource.id"] == f"zoho.sync.{config}"
    await sync_appointments(config_block=config, mode="scan")
    assert len([e for e in sent if e["event"] == "zoho.budget.low"]) == 1  # once a day


async def test_a_crm_read_the_budget_stops_keeps_the_bookmark(sandbox, prefect_api, tmp_path):
    from flows.sync_appointments import sync_appointments
    from sync import bulk_runs

    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")  # a Bulk Read: about 52 CRM credits
    await sync_appointments(config_block=config, mode="incremental")  # sets the bookmark
    cfg = await AppointmentSyncConfig.aload(config)
    engine = open_store(cfg.state_store_url)
    try:
        mark = bulk_runs.get_bookmark(engine, "Appointments__s")
        assert mark is not None
        appt, bk = future_pair(sandbox)
        r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{appt['id']}", json={"Status": "Cancelled", "Cancellation_Reason": "By Team"})
        assert r.status_code == 200, r.text
        await cfg.model_copy(update={"crm_credits_per_day": 10}).asave(config, overwrite=True)  # spent already
        starved = await sync_appointments(config_block=config, mode="incremental")
        assert starved.applied == 0 and starved.zoho_calls.get("crm", {}).get("units", 0) == 0  # no CRM call at all
        assert any(w.startswith("CRM records changed since the bookmark") for w in starved.waiting)
        assert bulk_runs.get_bookmark(engine, "Appointments__s") == mark  # nothing read: the bookmark stays
        await cfg.model_copy(update={"crm_credits_per_day": None}).asave(config, overwrite=True)
        caught = await sync_appointments(config_block=config, mode="incremental")
        assert caught.applied == 1
        booking = next(b for b in sandbox.dump()["bookings"] if b["booking_id"] == bk["booking_id"])
        assert booking["status"] == "CANCEL"
    finally:
        engine.dispose()


async def test_a_webhook_run_does_not_read_a_booking_its_webhook_shows_as_stored(sandbox, prefect_api, tmp_path):
    """The echo of our own Bookings write can reach the receiver before the write's answer is
    stored; the run the receiver starts checks the webhook's state (``booking_states``) against
    the store again, after the writing run committed, and makes no read for it."""
    from flows.sync_appointments import sync_appointments

    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")
    appt, bk = future_pair(sandbox)
    r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{appt['id']}", json={"Status": "Cancelled", "Cancellation_Reason": "By Team"})
    assert r.status_code == 200, r.text
    wrote = await sync_appointments(config_block=config, crm_ids=[appt["id"]])  # our Bookings write: cancel
    assert wrote.applied == 1
    now = next(b for b in sandbox.dump()["bookings"] if b["booking_id"] == bk["booking_id"])
    echo_state = {bk["booking_id"]: {"status": now["status"], "start_time": now["start_time"], "time_zone": now["time_zone"]}}
    before = bookings_calls(sandbox)
    echo = await sync_appointments(config_block=config, booking_ids=[bk["booking_id"]], booking_states=echo_state)
    assert bookings_calls(sandbox) == before and echo.nothing_to_do and echo.api_calls.get("bookings_echoes_not_read") == 1
    stale = {bk["booking_id"]: {**echo_state[bk["booking_id"]], "status": "UPCOMING"}}  # a webhook that says something else: read
    read = await sync_appointments(config_block=config, booking_ids=[bk["booking_id"]], booking_states=stale)
    assert read.zoho_calls["bookings"]["reads"] == 1
    garbled = {bk["booking_id"]: {"status": "CANCEL", "start_time": "not a time", "time_zone": "Mars/Olympus_Mons"}}
    again = await sync_appointments(config_block=config, booking_ids=[bk["booking_id"]], booking_states=garbled)
    assert again.zoho_calls["bookings"]["reads"] == 1  # a state that cannot be read is no echo
