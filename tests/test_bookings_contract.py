"""Zoho Bookings contract points of issue 14 (A1, A2, A4, A8, B2), over HTTP against the sandbox.

* A1: a Bookings failure comes in two shapes (outer ``status: failure``, or a failure inside
  ``returnvalue`` under an outer ``success``); the sandbox answers either
  (``bookings_failure_shape``), the client raises :class:`~zoho.errors.BookingsError` for both,
  so the already-done check and targeted reads work.
* A2: ``PENDING_PAYMENT`` holds a link (reported, not a failure, nothing sent either way);
  ``PAYMENT_FAILURE`` is a cancellation.
* A4: the sandbox's staff availability (working hours, overlaps) refuses a reschedule; the
  sync reports Zoho's message and does not send the same change again.
* A8: ``customer_booking_start_time`` / ``booked_on`` as ``yyyy-MM-dd HH:mm:ss``; pages of 50
  by default; HTTP 204 is an empty last page.
* B2: one booking that cannot be read (unknown ``time_zone``, a start that is no time, a
  missing field) is reported and skipped, the rest of its page goes on, and a rerun takes it
  once it is fixed.

Checks are made on the sandbox (``/__sandbox/dump``, ``/__sandbox/stats``) and on the run's summary.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from deployments.demo import linked_pairs as pairs
from zoho.auth import StaticTokenProvider
from zoho.clients import ZohoClient
from zoho.datacentres import Endpoints
from zoho.errors import BookingsError, InvalidBookingError, InvalidTokenError
from zoho.models import BookingsPage

UTC = timezone.utc
BASE = "/bookings/v1/json"
#: The settings this file changes, at their defaults (each test starts and ends with them).
DEFAULTS: dict[str, Any] = {
    "bookings_failure_shape": "outer",
    "bookings_max_per_page": 100,
    "bookings_empty_page_204": False,
    "working_hours": "",
    "staff_working_hours": {},
    "working_hours_time_zone": "",
    "refuse_overlaps": False,
}
ISO_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


# ------------------------------------------------------------------ helpers
@pytest.fixture
def bk(sandbox):
    """The sandbox with this file's settings at their defaults, before and after the test."""
    sandbox.config(**DEFAULTS)
    yield sandbox
    sandbox.config(**DEFAULTS)


def wall(instant: datetime, tz: str) -> str:
    """``dd-MMM-yyyy HH:mm:ss`` of ``instant`` in ``tz``."""
    return instant.astimezone(ZoneInfo(tz)).strftime("%d-%b-%Y %H:%M:%S")


def instant(booking: dict[str, Any]) -> datetime:
    naive = datetime.strptime(booking["start_time"], "%d-%b-%Y %H:%M:%S")
    return naive.replace(tzinfo=ZoneInfo(booking["time_zone"])).astimezone(UTC)


def future_bookings(sandbox, n: int, *, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """``n`` upcoming bookings starting more than two days ahead, by id."""
    now = datetime.now(UTC)
    found = [
        b for b in sorted(sandbox.dump(module="bookings")["bookings"], key=lambda b: b["booking_id"])
        if b["status"] == "UPCOMING" and instant(b) > now + timedelta(days=2) and b["booking_id"] not in exclude
    ]
    assert len(found) >= n
    return found[:n]


def one(sandbox, booking_id: str) -> dict[str, Any]:
    (b,) = sandbox.dump(module="bookings", booking_id=booking_id)["bookings"]
    return b


def crm_of(sandbox, booking_id: str) -> dict[str, Any]:
    (a,) = sandbox.dump(module="Appointments__s", booking_id=booking_id)["Appointments__s"]
    return a


def admin_booking(sandbox, booking_id: str, **body: Any) -> httpx.Response:
    return sandbox.http.patch(f"/__sandbox/bookings/{quote(booking_id, safe='')}", json=body)


def edit_booking(sandbox, booking_id: str, **body: Any) -> None:
    r = admin_booking(sandbox, booking_id, **body)
    assert r.status_code == 200 and r.json()["response"]["status"] == "success", r.text


def corrupt(sandbox, booking_id: str, **body: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/bookings/{quote(booking_id, safe='')}/raw", json=body)
    assert r.status_code == 200, r.text


def repair(sandbox, booking_id: str) -> None:
    sandbox.http.delete(f"/__sandbox/bookings/{quote(booking_id, safe='')}/raw").raise_for_status()


def edit_crm(sandbox, crm_id: str, **fields: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{crm_id}", json=fields)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text


def crm_iso(t: datetime) -> str:
    return t.astimezone(ZoneInfo("Asia/Kolkata")).replace(microsecond=0).isoformat()


def zero_stats(sandbox) -> None:
    sandbox.http.delete("/__sandbox/stats").raise_for_status()


def writes(sandbox) -> dict[str, int]:
    return sandbox.stats()["writes"]


def calls(sandbox, name: str) -> int:
    return sandbox.stats()["calls"].get(f"{'GET' if name == 'getappointment' else 'POST'} {BASE}/{name}", 0)


def envelope(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"response"}, body
    return body["response"]


def client(sandbox) -> ZohoClient:
    """Our client on the sandbox, with a fresh access token."""
    return ZohoClient(Endpoints.for_data_centre("CUSTOM", sandbox.url), StaticTokenProvider(sandbox.token()))


# ============================================================ A1: failure shapes
@pytest.mark.parametrize("shape", ["outer", "returnvalue"])
def test_sandbox_answers_a_business_failure_in_the_configured_shape(bk, shape):
    bk.config(bookings_failure_shape=shape)
    target = future_bookings(bk, 1)[0]
    with bk.client() as c:
        unknown = envelope(c.get(f"{BASE}/getappointment", params={"booking_id": "#AN-99999"}))
        same = envelope(c.post(f"{BASE}/rescheduleappointment", data={"booking_id": target["booking_id"], "start_time": target["start_time"]}))
        fine = envelope(c.get(f"{BASE}/getappointment", params={"booking_id": target["booking_id"]}))
    for answer in (unknown, same):
        if shape == "outer":
            assert answer["status"] == "failure" and set(answer["returnvalue"]) == {"message"}
        else:
            assert answer["status"] == "success" and answer["returnvalue"]["status"] == "failure"
        assert answer["returnvalue"]["message"]
    assert "#AN-99999" in unknown["returnvalue"]["message"]
    assert fine["status"] == "success" and fine["returnvalue"]["booking_id"] == target["booking_id"]


def test_authentication_failures_keep_the_outer_shape(bk):
    bk.config(bookings_failure_shape="returnvalue")
    r = httpx.get(f"{bk.url}{BASE}/getappointment", params={"booking_id": "#AN-00001"}, headers={"Authorization": "Zoho-oauthtoken nope"})
    assert r.status_code == 401
    assert r.json()["response"]["status"] == "failure"


@pytest.mark.parametrize("value", ["inner", "", 3, None])
def test_failure_shape_setting_is_checked(bk, value):
    r = bk.http.put("/__sandbox/config", json={"bookings_failure_shape": value})
    assert r.status_code == 400, r.text
    assert bk.http.get("/__sandbox/config").json()["bookings_failure_shape"] == "outer"


@pytest.mark.parametrize("shape", ["outer", "returnvalue"])
async def test_client_raises_bookings_error_for_both_shapes(bk, shape):
    bk.config(bookings_failure_shape=shape)
    cancelled = next(b for b in bk.dump(module="bookings")["bookings"] if b["status"] == "CANCEL")
    upcoming = future_bookings(bk, 1)[0]
    async with client(bk) as zoho:
        with pytest.raises(BookingsError) as unknown:
            await zoho.bookings.get_appointment("#AN-99999")
        with pytest.raises(BookingsError) as finished:
            await zoho.bookings.reschedule_appointment(cancelled["booking_id"], start=instant(cancelled) + timedelta(days=1), time_zone=cancelled["time_zone"])
        with pytest.raises(BookingsError) as again:
            await zoho.bookings.update_appointment(cancelled["booking_id"], "cancel")
        ok = await zoho.bookings.get_appointment(upcoming["booking_id"])
    assert "#AN-99999" in unknown.value.message and "cancelled" in finished.value.message and "already" in again.value.message
    for err in (unknown.value, finished.value, again.value):
        assert (err.code, err.status_code, err.transient, err.details["shape"]) == ("BOOKINGS_FAILURE", 200, False, shape)
    assert ok.booking_id == upcoming["booking_id"] and ok.start == instant(upcoming)
    with pytest.raises(InvalidTokenError):  # a 401 is still a token error in either shape
        async with ZohoClient(Endpoints.for_data_centre("CUSTOM", bk.url), StaticTokenProvider("1000.bad")) as bad:
            await bad.bookings.get_appointment(upcoming["booking_id"])


# ============================================================ A8: formats and paging
def test_customer_booking_start_time_and_booked_on_are_iso_like(bk):
    b = future_bookings(bk, 1)[0]
    with bk.client() as c:
        got = envelope(c.get(f"{BASE}/getappointment", params={"booking_id": b["booking_id"]}))["returnvalue"]
        page = envelope(c.post(f"{BASE}/fetchappointment", data={"per_page": "5"}))["returnvalue"]["response"]
    assert ISO_LOCAL.match(got["customer_booking_start_time"]) and ISO_LOCAL.match(got["booked_on"])
    local = instant(got).astimezone(ZoneInfo(got["time_zone"]))
    assert got["customer_booking_start_time"] == local.strftime("%Y-%m-%d %H:%M:%S")
    booked = datetime.strptime(got["booked_on"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(got["time_zone"]))
    assert booked < instant(got)
    assert re.match(r"^\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}$", got["start_time"])  # start_time keeps dd-MMM-yyyy
    assert all(ISO_LOCAL.match(x["customer_booking_start_time"]) and ISO_LOCAL.match(x["booked_on"]) for x in page)


async def test_client_reads_every_booking_in_pages_of_50_and_a_204_ends_it(bk):
    bk.config(bookings_empty_page_204=True, bookings_max_per_page=50)
    lo, hi = datetime.now(UTC) - timedelta(days=400), datetime.now(UTC) + timedelta(days=400)
    with bk.client() as c:  # the sandbox: 204 for an empty page, and per_page above the workspace's cap refused
        empty = c.post(f"{BASE}/fetchappointment", data={"from_time": wall(lo, "Asia/Kolkata"), "to_time": wall(lo + timedelta(days=1), "Asia/Kolkata")})
        too_big = envelope(c.post(f"{BASE}/fetchappointment", data={"per_page": "100"}))
    assert empty.status_code == 204 and empty.content == b""
    assert too_big["status"] == "failure" and "50" in too_big["returnvalue"]["message"]
    from zoho.paging import BookingsPaging

    zero_stats(bk)
    seen: list[str] = []
    async with client(bk) as zoho:
        cursor = BookingsPaging()
        while cursor:
            page = await zoho.bookings.fetch_appointments(lo, hi, "Asia/Kolkata", **cursor.params)
            seen += [b.booking_id for b in page.response]
            cursor = cursor.after(page)
        nothing = await zoho.bookings.fetch_appointments(lo, lo + timedelta(days=1), "Asia/Kolkata")
    assert sorted(seen) == sorted(b["booking_id"] for b in bk.dump(module="bookings")["bookings"]) and len(seen) == 300
    assert cursor.page == 6 and calls(bk, "fetchappointment") == 7  # 300 bookings in pages of 50, and the empty window
    assert (nothing.response, nothing.rejected, nothing.more_records) == ([], [], False)


async def test_paging_past_the_last_page_meets_a_204(bk):
    bk.config(bookings_empty_page_204=True)
    lo, hi = datetime.now(UTC) - timedelta(days=400), datetime.now(UTC) + timedelta(days=400)
    async with client(bk) as zoho:
        beyond = await zoho.bookings.fetch_appointments(lo, hi, "Asia/Kolkata", page=7, per_page=50)
    assert beyond.response == [] and not beyond.more_records


def test_sync_config_reads_bookings_in_pages_of_50_by_default():
    from blocks.sync_config import AppointmentSyncConfig
    from tasks.sync import fetch_bookings
    from zoho.paging import BookingsPaging
    import inspect

    field = AppointmentSyncConfig.model_fields["bookings_page_size"]
    assert field.default == 50 and "100 halves" in field.description
    assert AppointmentSyncConfig(bookings_page_size=100).bookings_page_size == 100
    assert inspect.signature(fetch_bookings).parameters["per_page"].default == 50
    assert BookingsPaging().per_page == 50


# ============================================================ B2: bookings that cannot be read
@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"set": {"time_zone": "Mars/Olympus_Mons"}}, "unknown time_zone 'Mars/Olympus_Mons'"),
        ({"set": {"start_time": "not-a-date"}}, "start_time: not a Bookings time"),
        ({"set": {"start_time": 1764000000}}, "start_time: Input should be a valid string"),
        ({"set": {"end_time": "31-Feb-2030 10:00:00"}}, "end_time: not a Bookings time"),
        ({"remove": ["status"]}, "status: Field required"),
    ],
    ids=["mars", "not-a-date", "number", "end-feb-31", "no-status"],
)
async def test_one_bad_booking_never_fails_a_page(bk, raw, problem):
    bad, good = future_bookings(bk, 2)
    corrupt(bk, bad["booking_id"], **raw)
    lo, hi = instant(bad) - timedelta(minutes=1), instant(bad) + timedelta(days=3)
    async with client(bk) as zoho:
        page = await zoho.bookings.fetch_appointments(lo, hi, "Asia/Kolkata", per_page=100)
        with pytest.raises(InvalidBookingError) as single:
            await zoho.bookings.get_appointment(bad["booking_id"])
    (rejected,) = page.rejected
    assert rejected.booking_id == bad["booking_id"] and problem in rejected.reason
    ids = {b.booking_id for b in page.response}
    assert bad["booking_id"] not in ids and len(ids) >= 1
    assert single.value.code == "INVALID_BOOKING" and problem in single.value.message and bad["booking_id"] in single.value.message
    assert not single.value.transient
    repair(bk, bad["booking_id"])
    async with client(bk) as zoho:
        assert (await zoho.bookings.get_appointment(bad["booking_id"])).start == instant(bad)


def test_raw_overrides_are_checked_and_undone(bk):
    b = future_bookings(bk, 1)[0]
    for body in ({}, {"set": []}, {"remove": "status"}, {"remove": [1]}):
        r = bk.http.patch(f"/__sandbox/bookings/{quote(b['booking_id'], safe='')}/raw", json=body)
        assert r.status_code == 400, (body, r.text)
    assert bk.http.patch("/__sandbox/bookings/%23AN-99999/raw", json={"remove": ["status"]}).status_code == 404
    corrupt(bk, b["booking_id"], set={"time_zone": "Mars/Olympus_Mons"}, remove=["customer_email"])
    shown = one(bk, b["booking_id"])
    assert shown["time_zone"] == "Mars/Olympus_Mons" and "customer_email" not in shown
    assert writes(bk) == {}  # a test aid, not a booking change
    repair(bk, b["booking_id"])
    assert one(bk, b["booking_id"]) == b


def test_a_page_of_bad_bookings_is_not_the_last_page():
    good = {"booking_id": "#AN-1", "start_time": "01-Jan-2030 10:00:00", "time_zone": "UTC", "status": "UPCOMING"}
    page = BookingsPage.model_validate({"response": [{**good, "time_zone": "Mars/Olympus_Mons"}, "junk", {**good, "booking_id": 7}], "next_page_available": True})
    assert page.response == [] and [r.booking_id for r in page.rejected] == ["#AN-1", None, None]
    assert [r.position for r in page.rejected] == [0, 1, 2]
    assert page.more_records  # the page was not empty: read on


# ============================================================ A2 + A4 sandbox rules
def test_payment_statuses_are_produced_filtered_and_ruled(bk):
    pending, failed = future_bookings(bk, 2)
    edit_booking(bk, pending["booking_id"], status="PENDING_PAYMENT")
    edit_booking(bk, failed["booking_id"], status="PAYMENT_FAILURE")
    with bk.client() as c:
        got = {s: envelope(c.post(f"{BASE}/fetchappointment", data={"status": s, "per_page": "100"}))["returnvalue"]["response"] for s in ("PENDING_PAYMENT", "PAYMENT_FAILURE")}
        moved = envelope(c.post(f"{BASE}/rescheduleappointment", data={"booking_id": failed["booking_id"], "start_time": wall(instant(failed) + timedelta(hours=1), failed["time_zone"])}))
        cancel = envelope(c.post(f"{BASE}/updateappointment", data={"booking_id": failed["booking_id"], "action": "cancel"}))
    assert [b["booking_id"] for b in got["PENDING_PAYMENT"]] == [pending["booking_id"]]
    assert [b["booking_id"] for b in got["PAYMENT_FAILURE"]] == [failed["booking_id"]]
    assert moved["status"] == "failure" and "payment failed" in moved["returnvalue"]["message"]
    assert cancel["status"] == "failure"
    r = admin_booking(bk, failed["booking_id"], status="UPCOMING")  # a failed payment is final
    assert r.json()["response"]["status"] == "failure"
    r = admin_booking(bk, pending["booking_id"], status="COMPLETED")  # only what a payment provider does
    assert r.json()["response"]["status"] == "failure"
    edit_booking(bk, pending["booking_id"], status="UPCOMING")  # paid
    assert one(bk, pending["booking_id"])["status"] == "UPCOMING"


def test_working_hours_and_overlaps_refuse_a_reschedule(bk):
    # the seed and every ordinary slot keep working with hours set
    bk.config(working_hours="Mon-Sun 08:00-20:00")
    bk.http.post("/__sandbox/reset", json={}).raise_for_status()
    b = future_bookings(bk, 1)[0]
    tz, day = b["time_zone"], instant(b).astimezone(ZoneInfo(b["time_zone"]))
    at = lambda h, m=0, d=day: wall(d.replace(hour=h, minute=m, second=0), tz)  # noqa: E731
    with bk.client() as c:
        def move(start: str, booking: dict = b) -> dict:
            return envelope(c.post(f"{BASE}/rescheduleappointment", data={"booking_id": booking["booking_id"], "start_time": start}))

        early, late = move(at(7, 30)), move(at(19, 50))  # starts before 08:00; ends after 20:00 (every service is 15 min or more)
        fine = move(at(10, 0) if day.hour != 10 else at(11, 0))
        bk.config(staff_working_hours={b["staff_id"]: "Mon-Fri 12:00-13:00"}, working_hours_time_zone="Asia/Kolkata")
        weekend = next(d for d in (day + timedelta(days=i) for i in range(1, 8)) if d.weekday() == 5)
        staff_only = move(at(10, 0, weekend))
        bk.config(staff_working_hours={}, working_hours="", working_hours_time_zone="", refuse_overlaps=True)
        far = day + timedelta(days=100)  # the seed spreads bookings over 30 days around today: nobody is booked then
        alone = move(at(10, 0, far))
        itself = move(at(10, 15, far))  # overlaps only its own old slot
    assert early["status"] == late["status"] == "failure"
    assert "not available" in early["returnvalue"]["message"] and "working hours" in late["returnvalue"]["message"]
    assert fine["status"] == "success"
    assert staff_only["status"] == "failure" and "12:00-13:00" in staff_only["returnvalue"]["message"]
    assert alone["status"] == "success" and itself["status"] == "success"
    # another booking of the same staff member moved onto it: refused
    other = next(x for x in bk.dump(module="bookings")["bookings"] if x["staff_id"] == b["staff_id"] and x["booking_id"] != b["booking_id"] and x["status"] == "UPCOMING")
    with bk.client() as c:
        taken = envelope(c.post(f"{BASE}/rescheduleappointment", data={"booking_id": other["booking_id"], "start_time": wall(instant(one(bk, b["booking_id"])) + timedelta(minutes=5), other["time_zone"])}))
        bk.config(refuse_overlaps=False)
        allowed = envelope(c.post(f"{BASE}/rescheduleappointment", data={"booking_id": other["booking_id"], "start_time": wall(instant(one(bk, b["booking_id"])) + timedelta(minutes=5), other["time_zone"])}))
    assert taken["status"] == "failure" and "Slot not available" in taken["returnvalue"]["message"]
    assert allowed["status"] == "success"


@pytest.mark.parametrize("settings", [{"working_hours": "9-5"}, {"working_hours": "Fun 09:00-17:00"}, {"working_hours": "17:00-09:00"},
                                      {"staff_working_hours": {"1": "09:00-25:00"}}, {"working_hours_time_zone": "Mars/Olympus_Mons"},
                                      {"bookings_max_per_page": 0}])
def test_availability_and_paging_settings_are_checked(bk, settings):
    r = bk.http.put("/__sandbox/config", json=settings)
    assert r.status_code == 400, r.text


# ============================================================ the sync (Prefect flow)
class Org:
    def __init__(self, name: str) -> None:
        self.name = name

    async def sync(self, mode: str = "scan", **kwargs: Any):
        from flows.sync_appointments import sync_appointments

        return await sync_appointments(config_block=self.name, mode=mode, **kwargs)


@pytest.fixture
async def org(bk, prefect_api, tmp_path) -> Org:
    """Blocks for the sandbox with a fresh state store; the scan window is the full one."""
    from blocks.sync_config import AppointmentSyncConfig
    from blocks.zoho_oauth import ZohoOAuth

    tag = uuid.uuid4().hex[:8]
    await ZohoOAuth(
        client_id=bk.creds["client_id"], client_secret=SecretStr(bk.creds["client_secret"]),
        refresh_token=SecretStr(bk.creds["refresh_token"]), data_centre="CUSTOM", base_url=bk.url,
    ).asave(f"contract-oauth-{tag}")  # fmt: skip
    await AppointmentSyncConfig(
        oauth_block=f"contract-oauth-{tag}", bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_past_days=35, bookings_future_days=60, scan_past_hours=35 * 24, scan_future_hours=60 * 24, scan_max_calls=100,
    ).asave(f"contract-{tag}")  # fmt: skip
    return Org(f"contract-{tag}")


def failures(summary) -> dict[str, dict[str, Any]]:
    return {f["booking_id"]: f for f in summary.failures}


def conflicts(summary) -> dict[str, dict[str, Any]]:
    return {c["booking_id"]: c for c in summary.conflict_list}


async def test_already_done_check_works_with_a_failure_inside_returnvalue(bk, org):
    """A1: Bookings refuses a reschedule it already shows (the store never heard of the move) with
    the nested failure; the check reads the booking and records the change as done."""
    await org.sync("full")
    bk.config(bookings_failure_shape="returnvalue")
    b = future_bookings(bk, 1)[0]
    to = instant(b) + timedelta(days=1)
    edit_booking(bk, b["booking_id"], start_time=wall(to, b["time_zone"]))  # no webhook: the store still has the old start
    edit_crm(bk, crm_of(bk, b["booking_id"])["id"], Appointment_Start_Time=crm_iso(to))
    zero_stats(bk)

    summary = await org.sync("incremental")  # reads CRM only: plans the move to Bookings

    assert calls(bk, "rescheduleappointment") == 1 and calls(bk, "getappointment") == 1
    assert summary.failed == 0 and summary.applied == 1, summary.failures
    assert writes(bk) == {}
    again = await org.sync("scan")
    assert again.applied == 0 and again.failed == 0 and again.planned == {}


async def test_a_targeted_read_of_a_refused_booking_is_a_reported_failure(bk, org):
    """A1: ``getappointment`` of an unknown booking in the nested shape is a read failure, not a crash."""
    bk.config(bookings_failure_shape="returnvalue")
    summary = await org.sync(booking_ids=["#AN-99999"])
    assert summary.error is None
    assert failures(summary)["#AN-99999"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("shape", ["outer", "returnvalue"])
async def test_a_reschedule_into_unavailable_time_is_refused_reported_and_not_resent(bk, org, shape):
    """A4: CRM moves an appointment outside its staff member's hours; Bookings refuses; the run reports
    Zoho's message (not transient, no task retry); the next runs send nothing until a side changes."""
    bk.config(working_hours="Mon-Sun 08:00-20:00", bookings_failure_shape=shape)
    await org.sync("full")
    b = future_bookings(bk, 1)[0]
    crm_id = crm_of(bk, b["booking_id"])["id"]
    local = instant(b).astimezone(ZoneInfo(b["time_zone"]))
    night = local.replace(hour=21, minute=0, second=0)
    edit_crm(bk, crm_id, Appointment_Start_Time=crm_iso(night))
    zero_stats(bk)

    refused = await org.sync()

    f = failures(refused)[b["booking_id"]]
    assert f["code"] == "BOOKINGS_FAILURE" and "not available" in f["message"] and "working hours" in f["message"]
    assert refused.failed == 1 and refused.applied == 0
    assert calls(bk, "rescheduleappointment") == 1 and calls(bk, "getappointment") == 1  # sent once, checked once
    assert instant(one(bk, b["booking_id"])) == instant(b) and writes(bk) == {}

    zero_stats(bk)
    again = await org.sync()
    assert calls(bk, "rescheduleappointment") == 0 and again.failed == 0
    c = conflicts(again)[b["booking_id"]]
    assert c["kind"] == "rule" and "Bookings refused" in c["why"] and "not available" in c["why"]

    # the CRM user picks a time the staff member works: a new change, sent
    fine = (local + timedelta(days=1)).replace(hour=10, minute=0, second=0)
    edit_crm(bk, crm_id, Appointment_Start_Time=crm_iso(fine))
    zero_stats(bk)
    moved = await org.sync()
    assert moved.applied == 1 and moved.failed == 0 and b["booking_id"] not in conflicts(moved)
    assert instant(one(bk, b["booking_id"])) == fine.astimezone(UTC)


async def test_pending_payment_holds_a_link_and_payment_failure_cancels(bk, org):
    """A2, both ways: a pending payment holds its link (nothing sent from either side; reported, not a
    failure) until paid; a failed payment is carried to CRM as a cancellation, and a CRM cancellation
    agrees with it."""
    await org.sync("full")
    crm_moved, bk_moved, failed, both_cancelled = future_bookings(bk, 4)
    ids = {x["booking_id"]: crm_of(bk, x["booking_id"])["id"] for x in (crm_moved, bk_moved, failed, both_cancelled)}
    crm_to = instant(crm_moved) + timedelta(days=1)
    bk_to = instant(bk_moved) + timedelta(hours=1)
    edit_booking(bk, crm_moved["booking_id"], status="PENDING_PAYMENT")
    edit_crm(bk, ids[crm_moved["booking_id"]], Appointment_Start_Time=crm_iso(crm_to))
    edit_booking(bk, bk_moved["booking_id"], status="PENDING_PAYMENT")
    edit_booking(bk, bk_moved["booking_id"], start_time=wall(bk_to, bk_moved["time_zone"]))
    edit_booking(bk, failed["booking_id"], status="PAYMENT_FAILURE")
    edit_booking(bk, both_cancelled["booking_id"], status="PAYMENT_FAILURE")
    edit_crm(bk, ids[both_cancelled["booking_id"]], Status="Cancelled", Cancellation_Reason="By Customer")
    zero_stats(bk)

    held = await org.sync()

    assert held.failed == 0, held.failures
    for p in (crm_moved, bk_moved):
        c = conflicts(held)[p["booking_id"]]
        assert c["kind"] == "deferred" and "PENDING_PAYMENT" in c["reason"]
    assert held.deferred == 2
    assert crm_of(bk, failed["booking_id"])["Status"] == "Cancelled"
    assert writes(bk) == {"Appointments__s": 1}  # only the failed payment's cancellation
    assert instant(one(bk, crm_moved["booking_id"])) == instant(crm_moved)
    assert datetime.fromisoformat(crm_of(bk, bk_moved["booking_id"])["Appointment_Start_Time"]) == instant(bk_moved)

    # paid: both links are synced by the next run, each way
    edit_booking(bk, crm_moved["booking_id"], status="UPCOMING")
    edit_booking(bk, bk_moved["booking_id"], status="UPCOMING")
    zero_stats(bk)
    paid = await org.sync()
    assert paid.failed == 0 and paid.deferred == 0 and paid.applied == 2
    assert instant(one(bk, crm_moved["booking_id"])) == crm_to
    assert datetime.fromisoformat(crm_of(bk, bk_moved["booking_id"])["Appointment_Start_Time"]) == bk_to
    assert writes(bk) == {"Appointments__s": 1, "bookings": 1}
    quiet = await org.sync()
    assert quiet.applied == 0 and quiet.failed == 0 and quiet.conflict_list == []


async def test_bad_bookings_are_reported_skipped_and_taken_once_fixed(bk, org):
    """B2: three bookings the client cannot read fail nothing but themselves; a good change on the same
    page is applied; fixed, the next run takes the change held back."""
    await org.sync("full")
    mars, words, no_status, good = future_bookings(bk, 4)
    corrupt(bk, mars["booking_id"], set={"time_zone": "Mars/Olympus_Mons"})
    corrupt(bk, words["booking_id"], set={"start_time": "next tuesday"})
    corrupt(bk, no_status["booking_id"], remove=["status"])
    edit_booking(bk, mars["booking_id"], action="cancel")  # a change the run cannot see yet
    edit_booking(bk, good["booking_id"], action="cancel")
    zero_stats(bk)

    summary = await org.sync()

    assert summary.error is None
    got = failures(summary)
    assert set(got) == {mars["booking_id"], words["booking_id"], no_status["booking_id"]}
    assert all(f["code"] == "INVALID_BOOKING" for f in got.values())
    assert "Mars/Olympus_Mons" in got[mars["booking_id"]]["message"]
    assert "next tuesday" in got[words["booking_id"]]["message"]
    assert "status" in got[no_status["booking_id"]]["message"]
    assert crm_of(bk, good["booking_id"])["Status"] == "Cancelled"
    assert crm_of(bk, mars["booking_id"])["Status"] == "Scheduled"

    # a webhook naming a bad booking: a reported read failure, the run completes
    named = await org.sync(booking_ids=[mars["booking_id"]])
    assert named.error is None and failures(named)[mars["booking_id"]]["code"] == "INVALID_BOOKING"

    for b in (mars, words, no_status):
        repair(bk, b["booking_id"])
    fixed = await org.sync()
    assert fixed.failed == 0
    assert crm_of(bk, mars["booking_id"])["Status"] == "Cancelled"
    assert pairs(bk.dump())  # every booking reads again
