"""Zoho Bookings v1 as the sandbox serves it, driven over HTTP.

``getappointment``, ``fetchappointment``, ``rescheduleappointment`` (in the
booking's own time zone, seed 000), ``updateappointment``, token checks and the
Bookings webhook (``shared/zoho-api-notes.md``, section Zoho Bookings).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

BASE = "/bookings/v1/json"
ORG_TZ = "Asia/Kolkata"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TIME_RE = re.compile(r"^\d{2}-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{4} \d{2}:\d{2}:\d{2}$")
UTC = timezone.utc


# ------------------------------------------------------------------ helpers
def fmt(local: datetime) -> str:
    """``dd-MMM-yyyy HH:mm:ss`` of a wall time."""
    return f"{local.day:02d}-{MONTHS[local.month - 1]}-{local.year:04d} {local:%H:%M:%S}"


def parse(value: str, tz: str) -> datetime:
    """The instant of a ``dd-MMM-yyyy HH:mm:ss`` wall time in ``tz`` (UTC)."""
    naive = datetime.strptime(value, "%d-%b-%Y %H:%M:%S")
    return naive.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def instant(booking: dict[str, Any]) -> datetime:
    """A booking's start instant, read from its own ``time_zone``."""
    return parse(booking["start_time"], booking["time_zone"])


def envelope(r: httpx.Response, status: str = "success", http: int = 200) -> Any:
    """Check the Bookings envelope; returns ``returnvalue``."""
    assert r.status_code == http, r.text
    body = r.json()
    assert set(body) == {"response"}, body
    assert body["response"]["status"] == status, body
    return body["response"]["returnvalue"]


def failure(r: httpx.Response, http: int = 200) -> str:
    """A failure envelope; returns its message."""
    value = envelope(r, "failure", http)
    assert isinstance(value["message"], str) and value["message"]
    return value["message"]


def bookings(sandbox) -> list[dict[str, Any]]:
    """Every booking as the dump shows it."""
    return sandbox.dump(module="bookings")["bookings"]


def one(sandbox, booking_id: str) -> dict[str, Any]:
    """One booking from the dump."""
    (b,) = sandbox.dump(module="bookings", booking_id=booking_id)["bookings"]
    return b


def crm_side(sandbox, booking_id: str) -> dict[str, Any]:
    """The CRM records linked to ``booking_id``."""
    d = sandbox.dump(booking_id=booking_id)
    return {"Appointments__s": d["Appointments__s"], "Events": d["Events"]}


def pick(sandbox, predicate: Callable[[dict[str, Any]], bool], what: str = "booking") -> dict[str, Any]:
    """The first booking matching ``predicate`` (fails the test when there is none)."""
    for b in bookings(sandbox):
        if predicate(b):
            return b
    raise AssertionError(f"the seed holds no {what}")


def now() -> datetime:
    return datetime.now(UTC)


def future(status: str = "UPCOMING", tz: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Predicate: a booking of ``status`` that starts more than a day from now (in ``tz``)."""
    return lambda b: b["status"] == status and instant(b) > now() + timedelta(days=1) and tz in (None, b["time_zone"])


def past(status: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: a booking of ``status`` that ended more than a day ago."""
    return lambda b: b["status"] == status and instant(b) < now() - timedelta(days=1)


def get(c: httpx.Client, booking_id: str) -> httpx.Response:
    return c.get(f"{BASE}/getappointment", params={"booking_id": booking_id})


def reschedule(c: httpx.Client, booking_id: str, **fields: str) -> httpx.Response:
    return c.post(f"{BASE}/rescheduleappointment", data={"booking_id": booking_id, **fields})


def act(c: httpx.Client, booking_id: str, action: str) -> httpx.Response:
    return c.post(f"{BASE}/updateappointment", data={"booking_id": booking_id, "action": action})


def fetch(c: httpx.Client, **fields: Any) -> dict[str, Any]:
    """One ``fetchappointment`` page (form fields); returns ``returnvalue``."""
    return envelope(c.post(f"{BASE}/fetchappointment", data={k: str(v) for k, v in fields.items()}))


def fetch_all(c: httpx.Client, per_page: int = 50, **fields: Any) -> list[dict[str, Any]]:
    """Walk every page of ``fetchappointment``; returns the bookings in order."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        value = fetch(c, page=page, per_page=per_page, **fields)
        assert len(value["response"]) <= per_page
        out.extend(value["response"])
        if not value["next_page_available"]:
            return out
        assert len(value["response"]) == per_page
        page += 1
        assert page < 1000


def org_time(t: datetime) -> str:
    """``t`` as ``dd-MMM-yyyy HH:mm:ss`` in the org time zone."""
    return fmt(t.astimezone(ZoneInfo(ORG_TZ)))


def other_offset_day(tz: str, start: datetime) -> date:
    """A day after ``start`` whose UTC offset at 10:00 in ``tz`` differs from ``start``'s (a DST change in between)."""
    zone = ZoneInfo(tz)
    offset = start.astimezone(zone).utcoffset()
    day = start.astimezone(zone).date()
    for k in range(1, 370):
        d = day + timedelta(days=k)
        if datetime(d.year, d.month, d.day, 10, tzinfo=zone).utcoffset() != offset:
            return d
    raise AssertionError(f"{tz} has no DST change")


def dst_change(tz: str, forward: bool) -> datetime:
    """The next spring-forward (``forward``) or fall-back instant in ``tz`` (UTC)."""
    zone = ZoneInfo(tz)
    t = now().replace(minute=0, second=0, microsecond=0)
    for _ in range(24 * 400):
        before, after = t.astimezone(zone).utcoffset(), (t + timedelta(hours=1)).astimezone(zone).utcoffset()
        if before != after and (after > before) == forward:
            return t + timedelta(hours=1)
        t += timedelta(hours=1)
    raise AssertionError(f"no DST change in {tz}")


# -------------------------------------------------------------- getappointment
def test_getappointment_answers_the_booking_in_its_time_zone(sandbox):
    with sandbox.client() as c:
        for tz in ("America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"):
            b = pick(sandbox, lambda b: b["time_zone"] == tz, tz)
            value = envelope(get(c, b["booking_id"]))
            assert value["booking_id"] == b["booking_id"]
            assert value["time_zone"] == tz
            assert TIME_RE.match(value["start_time"]) and TIME_RE.match(value["end_time"])
            assert value["duration"].endswith(" mins")
            minutes = int(value["duration"].split()[0])
            assert instant(value) + timedelta(minutes=minutes) == parse(value["end_time"], tz)
            # both sides agree at seed time: CRM shows the same instant in ISO 8601
            (crm,) = crm_side(sandbox, b["booking_id"])["Appointments__s"]
            assert datetime.fromisoformat(crm["Appointment_Start_Time"]) == instant(value)
            for key in ("service_id", "service_name", "staff_id", "status", "customer_name", "customer_email", "summary_url"):
                assert key in value


def test_getappointment_needs_the_hash_url_encoded(sandbox):
    with sandbox.client() as c:
        # httpx encodes '#' in params as %23
        assert "%23AN-00001" in str(get(c, "#AN-00001").request.url)
        assert envelope(get(c, "#AN-00001"))["booking_id"] == "#AN-00001"
        # a raw '#' starts the URL fragment: the server sees no booking id
        r = c.get(f"{BASE}/getappointment?booking_id=#AN-00001")
        failure(r)


@pytest.mark.parametrize("booking_id", ["#AN-99999", "AN-00001", "", "%23AN-00001"])
def test_getappointment_unknown_booking_fails_with_http_200(sandbox, booking_id):
    with sandbox.client() as c:
        failure(get(c, booking_id))


# ------------------------------------------------------------ fetchappointment
def expected_in_window(sandbox, lo: datetime, hi: datetime, **match: str) -> list[str]:
    """Booking ids the dump says start within ``[lo, hi]`` and match ``match``."""
    return sorted(
        b["booking_id"]
        for b in bookings(sandbox)
        if lo <= instant(b) <= hi and all(b[k] == v for k, v in match.items())
    )


def test_fetchappointment_window_is_read_in_the_org_time_zone(sandbox):
    lo = now() + timedelta(days=2)
    hi = lo + timedelta(days=5)
    with sandbox.client() as c:
        got = fetch_all(c, from_time=org_time(lo), to_time=org_time(hi))
    ids = [b["booking_id"] for b in got]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_in_window(sandbox, lo, hi)
    assert ids  # the seed spreads 300 bookings over +-30 days
    assert all(lo <= instant(b) <= hi for b in got)


def test_fetchappointment_bounds_are_not_utc(sandbox):
    b = pick(sandbox, future())
    t = instant(b)
    with sandbox.client() as c:
        exact = fetch(c, from_time=org_time(t), to_time=org_time(t), per_page=100)["response"]
        assert b["booking_id"] in [x["booking_id"] for x in exact]
        # the same wall time read as UTC would be 5:30 later than the booking
        as_utc = fmt(t.astimezone(UTC))
        shifted = fetch(c, from_time=as_utc, to_time=as_utc, per_page=100)["response"]
        assert b["booking_id"] not in [x["booking_id"] for x in shifted]


def test_fetchappointment_paging_yields_each_booking_once(sandbox):
    with sandbox.client() as c:
        first = fetch(c, per_page=7)
        assert len(first["response"]) == 7
        assert first["next_page_available"] is True
        got = fetch_all(c, per_page=7)
        beyond = fetch(c, per_page=7, page=len(got) // 7 + 2)
    ids = [b["booking_id"] for b in got]
    assert len(ids) == 300 == len(set(ids))
    assert set(ids) == {b["booking_id"] for b in bookings(sandbox)}
    assert beyond["response"] == []
    assert beyond["next_page_available"] is False


def test_fetchappointment_default_page_is_50(sandbox):
    with sandbox.client() as c:
        value = fetch(c)
    assert len(value["response"]) == 50
    assert value["next_page_available"] is True


@pytest.mark.parametrize("status", ["CANCEL", "COMPLETED", "NO_SHOW"])
def test_fetchappointment_filters_by_status(sandbox, status):
    with sandbox.client() as c:
        got = fetch_all(c, per_page=100, status=status)
    assert got
    assert all(b["status"] == status for b in got)
    assert sorted(b["booking_id"] for b in got) == sorted(b["booking_id"] for b in bookings(sandbox) if b["status"] == status)


@pytest.mark.parametrize("key", ["staff_id", "service_id"])
def test_fetchappointment_filters_by_staff_and_service(sandbox, key):
    value = bookings(sandbox)[0][key]
    lo, hi = now() - timedelta(days=40), now() + timedelta(days=40)
    with sandbox.client() as c:
        got = fetch_all(c, per_page=20, **{key: value}, from_time=org_time(lo), to_time=org_time(hi))
    assert got and all(b[key] == value for b in got)
    assert sorted(b["booking_id"] for b in got) == expected_in_window(sandbox, lo, hi, **{key: value})


def test_fetchappointment_takes_one_json_data_field(sandbox):
    lo = now() + timedelta(days=1)
    hi = lo + timedelta(days=10)
    fields = {"from_time": org_time(lo), "to_time": org_time(hi), "status": "UPCOMING", "per_page": 100}
    with sandbox.client() as c:
        as_form = fetch(c, **fields)
        r = c.post(f"{BASE}/fetchappointment", data={"data": json.dumps(fields)})
    as_json = envelope(r)
    assert as_json["response"] == as_form["response"]
    assert as_json["response"]
    assert all(b["status"] == "UPCOMING" and lo <= instant(b) <= hi for b in as_json["response"])


def test_fetchappointment_empty_window(sandbox):
    lo = now() - timedelta(days=400)
    with sandbox.client() as c:
        value = fetch(c, from_time=org_time(lo), to_time=org_time(lo + timedelta(days=1)))
    assert value["response"] == []
    assert value["next_page_available"] is False


@pytest.mark.parametrize(
    "fields",
    [
        {"from_time": "2026-11-01T10:00:00"},
        {"to_time": "31-Foo-2026 10:00:00"},
        {"status": "SOMETIMES"},
        {"per_page": 0},
        {"per_page": 101},
        {"page": 0},
        {"page": "two"},
    ],
    ids=["iso-from", "bad-month", "status", "per-page-0", "per-page-101", "page-0", "page-text"],
)
def test_fetchappointment_rejects_bad_fields(sandbox, fields):
    with sandbox.client() as c:
        failure(c.post(f"{BASE}/fetchappointment", data={k: str(v) for k, v in fields.items()}))


def test_fetchappointment_bad_data_json_fails(sandbox):
    with sandbox.client() as c:
        failure(c.post(f"{BASE}/fetchappointment", data={"data": "{not json"}))


# ------------------------------------------------------- rescheduleappointment
@pytest.mark.parametrize("tz", ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"])
def test_reschedule_in_the_bookings_own_time_zone(sandbox, tz):
    b = pick(sandbox, future(tz=tz), f"future booking in {tz}")
    crm_before = crm_side(sandbox, b["booking_id"])
    zone = ZoneInfo(tz)
    day = other_offset_day(tz, instant(b)) if tz != "Asia/Kolkata" else instant(b).astimezone(zone).date() + timedelta(days=3)
    wall = datetime(day.year, day.month, day.day, 10, 45, tzinfo=zone)
    expected = wall.astimezone(UTC)
    if tz != "Asia/Kolkata":
        # the new wall time is on the other side of a DST change
        assert wall.utcoffset() != instant(b).astimezone(zone).utcoffset()
    with sandbox.client() as c:
        value = envelope(reschedule(c, b["booking_id"], start_time=fmt(wall)))
        assert value["start_time"] == fmt(wall)
        assert value["time_zone"] == tz
        assert envelope(get(c, b["booking_id"]))["start_time"] == fmt(wall)
        # the instant, read back through the org time zone, is the one zoneinfo gives
        near = fetch(c, from_time=org_time(expected), to_time=org_time(expected), per_page=100)["response"]
        assert b["booking_id"] in [x["booking_id"] for x in near]
    after = one(sandbox, b["booking_id"])
    assert instant(after) == expected
    assert parse(after["end_time"], tz) - instant(after) == parse(b["end_time"], tz) - instant(b)
    assert after["status"] == b["status"]
    # the two systems are independent: CRM does not move
    assert crm_side(sandbox, b["booking_id"]) == crm_before


def test_reschedule_at_an_ambiguous_wall_time_means_the_first(sandbox):
    tz = "America/New_York"
    b = pick(sandbox, future(tz=tz))
    back = dst_change(tz, forward=False)  # e.g. 02:00 EDT -> 01:00 EST
    wall = (back - timedelta(minutes=30)).astimezone(ZoneInfo(tz))  # 01:30 EDT, which happens twice
    assert wall.fold == 0
    with sandbox.client() as c:
        envelope(reschedule(c, b["booking_id"], start_time=fmt(wall)))
    assert instant(one(sandbox, b["booking_id"])) == back - timedelta(minutes=30)


def test_reschedule_into_a_dst_gap_fails(sandbox):
    tz = "Europe/London"
    b = pick(sandbox, future(tz=tz))
    forward = dst_change(tz, forward=True).astimezone(ZoneInfo(tz))  # 02:00 BST; 01:00-01:59 never happen
    missing = forward.replace(tzinfo=None) - timedelta(minutes=30)
    with sandbox.client() as c:
        message = failure(reschedule(c, b["booking_id"], start_time=fmt(missing)))
    assert "exist" in message
    assert one(sandbox, b["booking_id"]) == b


def test_reschedule_to_another_staff_member(sandbox):
    b = pick(sandbox, future())
    other = pick(sandbox, lambda x: x["staff_id"] != b["staff_id"])
    with sandbox.client() as c:
        value = envelope(reschedule(c, b["booking_id"], staff_id=other["staff_id"]))
    assert value["staff_id"] == other["staff_id"]
    assert value["start_time"] == b["start_time"]
    after = one(sandbox, b["booking_id"])
    assert (after["staff_id"], after["staff_name"]) == (other["staff_id"], other["staff_name"])


def _reschedule_refused(sandbox, receiver, booking: dict[str, Any], **fields: str) -> str:
    """Reschedule ``booking`` with ``fields``; assert a failure that changed and sent nothing."""
    sandbox.config(bookings_webhook_url=receiver.url + "/bk")
    crm_before = crm_side(sandbox, booking["booking_id"])
    with sandbox.client() as c:
        message = failure(reschedule(c, booking["booking_id"], **fields))
    assert one(sandbox, booking["booking_id"]) == booking
    assert crm_side(sandbox, booking["booking_id"]) == crm_before
    sandbox.drain()
    assert receiver.received == []
    assert sandbox.stats()["writes"].get("bookings", 0) == 0
    return message


def test_reschedule_to_the_same_time_fails(sandbox, receiver):
    b = pick(sandbox, future())
    _reschedule_refused(sandbox, receiver, b, start_time=b["start_time"])


@pytest.mark.parametrize("status", ["CANCEL", "COMPLETED", "NO_SHOW"])
def test_reschedule_of_a_finished_booking_fails(sandbox, receiver, status):
    b = pick(sandbox, lambda x: x["status"] == status, status)
    new = fmt((instant(b) + timedelta(days=2)).astimezone(ZoneInfo(b["time_zone"])))
    _reschedule_refused(sandbox, receiver, b, start_time=new)


@pytest.mark.parametrize(
    "start_time",
    [
        "2026-12-01 10:00:00",
        "2026-12-01T10:00:00+05:30",
        "01-Foo-2026 10:00:00",
        "32-Dec-2026 10:00:00",
        "01-Dec-2026 24:00:00",
        "01-Dec-2026 10:00",
        "01-Dec-2026 10:00:00 AM",
        "tomorrow",
    ],
)
def test_reschedule_with_a_malformed_start_time_fails(sandbox, receiver, start_time):
    b = pick(sandbox, future())
    _reschedule_refused(sandbox, receiver, b, start_time=start_time)


def test_reschedule_needs_start_time_staff_or_group(sandbox, receiver):
    b = pick(sandbox, future())
    _reschedule_refused(sandbox, receiver, b)


def test_reschedule_to_an_unknown_staff_or_group_fails(sandbox, receiver):
    b = pick(sandbox, future())
    _reschedule_refused(sandbox, receiver, b, staff_id="999")
    _reschedule_refused(sandbox, receiver, b, group_id="4500000000900")


def test_reschedule_to_the_same_staff_fails(sandbox, receiver):
    b = pick(sandbox, future())
    _reschedule_refused(sandbox, receiver, b, staff_id=b["staff_id"])


def test_reschedule_of_an_unknown_booking_fails(sandbox):
    with sandbox.client() as c:
        failure(reschedule(c, "#AN-99999", start_time="01-Dec-2026 10:00:00"))
        failure(c.post(f"{BASE}/rescheduleappointment", data={"start_time": "01-Dec-2026 10:00:00"}))


# ---------------------------------------------------------- updateappointment
def test_cancel_an_upcoming_booking(sandbox):
    b = pick(sandbox, future())
    crm_before = crm_side(sandbox, b["booking_id"])
    with sandbox.client() as c:
        assert envelope(act(c, b["booking_id"], "cancel"))["status"] == "CANCEL"
        assert envelope(get(c, b["booking_id"]))["status"] == "CANCEL"
        # a finished booking takes no further action
        for action in ("cancel", "completed", "noshow"):
            failure(act(c, b["booking_id"], action))
    assert one(sandbox, b["booking_id"]) == {**b, "status": "CANCEL"}
    assert crm_side(sandbox, b["booking_id"]) == crm_before


@pytest.mark.parametrize("action,status", [("completed", "COMPLETED"), ("noshow", "NO_SHOW")])
def test_complete_or_noshow_after_the_start(sandbox, action, status):
    b = pick(sandbox, past("UPCOMING"), "past UPCOMING booking")
    with sandbox.client() as c:
        assert envelope(act(c, b["booking_id"], action))["status"] == status
        failure(act(c, b["booking_id"], "cancel"))
    assert one(sandbox, b["booking_id"])["status"] == status


@pytest.mark.parametrize("action", ["completed", "noshow"])
def test_no_complete_or_noshow_before_the_start(sandbox, action):
    b = pick(sandbox, future())
    with sandbox.client() as c:
        failure(act(c, b["booking_id"], action))
    assert one(sandbox, b["booking_id"]) == b


@pytest.mark.parametrize("status", ["CANCEL", "COMPLETED", "NO_SHOW"])
@pytest.mark.parametrize("action", ["completed", "cancel", "noshow"])
def test_a_finished_booking_takes_no_action(sandbox, status, action):
    b = pick(sandbox, lambda x: x["status"] == status, status)
    with sandbox.client() as c:
        failure(act(c, b["booking_id"], action))
    assert one(sandbox, b["booking_id"]) == b


@pytest.mark.parametrize("action", ["complete", "CANCEL", "delete", ""])
def test_unknown_action_fails(sandbox, action):
    b = pick(sandbox, future())
    with sandbox.client() as c:
        failure(act(c, b["booking_id"], action))
    assert one(sandbox, b["booking_id"]) == b


def test_update_of_an_unknown_booking_fails(sandbox):
    with sandbox.client() as c:
        failure(act(c, "#AN-99999", "cancel"))


# ------------------------------------------------------------------- tokens
ROUTES = [
    ("GET", "getappointment", {"params": {"booking_id": "#AN-00001"}}),
    ("POST", "fetchappointment", {"data": {"per_page": "5"}}),
    ("POST", "rescheduleappointment", {"data": {"booking_id": "#AN-00001", "start_time": "01-Dec-2026 10:00:00"}}),
    ("POST", "updateappointment", {"data": {"booking_id": "#AN-00001", "action": "cancel"}}),
]


@pytest.mark.parametrize("method,route,kwargs", ROUTES, ids=[r[1] for r in ROUTES])
def test_missing_token_answers_401_with_the_envelope(sandbox, method, route, kwargs):
    before = one(sandbox, "#AN-00001")
    r = sandbox.http.request(method, f"{BASE}/{route}", **kwargs)
    assert failure(r, http=401)
    assert r.json()["response"]["returnvalue"]["code"] == "INVALID_TOKEN"
    assert one(sandbox, "#AN-00001") == before


def test_expired_token_answers_401(sandbox):
    token = sandbox.token()
    sandbox.http.post("/__sandbox/tokens/expire").raise_for_status()
    with sandbox.client(token) as c:
        failure(get(c, "#AN-00001"), http=401)


@pytest.mark.parametrize("method,route,kwargs", ROUTES, ids=[r[1] for r in ROUTES])
def test_token_without_the_bookings_scope_answers_401(sandbox, method, route, kwargs):
    creds = sandbox.http.post("/__sandbox/credentials", json={"scope": ["ZohoCRM.modules.ALL"]}).json()
    r = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"])
    token = r.json()["access_token"]
    before = one(sandbox, "#AN-00001")
    resp = sandbox.http.request(method, f"{BASE}/{route}", headers=sandbox.headers(token), **kwargs)
    failure(resp, http=401)
    assert resp.json()["response"]["returnvalue"]["code"] == "OAUTH_SCOPE_MISMATCH"
    assert one(sandbox, "#AN-00001") == before
    # the same token still reads CRM
    assert sandbox.http.get("/crm/v7/Appointments__s", params={"fields": "Status"}, headers=sandbox.headers(token)).status_code == 200


def test_unknown_bookings_route_answers_the_envelope(sandbox):
    with sandbox.client() as c:
        failure(c.get(f"{BASE}/nosuchapi"), http=404)
        r = c.delete(f"{BASE}/getappointment")
        assert r.status_code == 405
        failure(r, http=405)


# ----------------------------------------------------------------- webhooks
def webhook_config(sandbox, receiver) -> None:
    sandbox.config(bookings_webhook_url=receiver.url + "/bk", bookings_webhook_headers={"X-Secret": "s3"})


def delivered(sandbox, receiver) -> list[dict[str, Any]]:
    """Everything the receiver got once the sandbox's outbox is empty."""
    sandbox.drain()
    return list(receiver.received)


def assert_webhook(item: dict[str, Any], booking: dict[str, Any], event: str, changed_by: str) -> None:
    assert item["path"] == "/bk"
    assert item["headers"]["x-secret"] == "s3"
    payload = item["json"]
    assert payload["booking_id"] == booking["booking_id"]
    assert payload["event"] == event
    assert payload["status"] == booking["status"]
    assert payload["start_time"] == booking["start_time"]
    assert payload["time_zone"] == booking["time_zone"]
    assert payload["changed_by"] == changed_by


def test_webhook_on_every_api_change(sandbox, receiver):
    webhook_config(sandbox, receiver)
    a, b = [x for x in bookings(sandbox) if future()(x)][:2]
    done = pick(sandbox, past("UPCOMING"), "past UPCOMING booking")
    new = fmt((instant(a) + timedelta(hours=2)).astimezone(ZoneInfo(a["time_zone"])))
    with sandbox.client() as c:
        envelope(reschedule(c, a["booking_id"], start_time=new))
        envelope(act(c, b["booking_id"], "cancel"))
        envelope(act(c, done["booking_id"], "completed"))
    got = delivered(sandbox, receiver)
    assert len(got) == 3
    assert_webhook(got[0], one(sandbox, a["booking_id"]), "appointment_rescheduled", "api")
    assert got[0]["json"]["start_time"] == new
    assert_webhook(got[1], one(sandbox, b["booking_id"]), "appointment_cancelled", "api")
    assert_webhook(got[2], one(sandbox, done["booking_id"]), "appointment_completed", "api")


def test_webhook_on_an_admin_edit(sandbox, receiver):
    webhook_config(sandbox, receiver)
    b = pick(sandbox, future())
    r = sandbox.http.patch(f"/__sandbox/bookings/{quote(b['booking_id'], safe='')}", json={"action": "cancel"})
    assert envelope(r)["status"] == "CANCEL"
    (item,) = delivered(sandbox, receiver)
    assert_webhook(item, one(sandbox, b["booking_id"]), "appointment_cancelled", "ui")


def test_admin_edit_of_booking_one(sandbox, receiver):
    # seeded around a future date, every booking is still to come (#AN-00001 is UPCOMING)
    sandbox.http.post("/__sandbox/reset", json={"anchor_date": "2030-06-01"}).raise_for_status()
    webhook_config(sandbox, receiver)
    b = one(sandbox, "#AN-00001")
    assert b["status"] == "UPCOMING"
    new = fmt((instant(b) + timedelta(days=1)).astimezone(ZoneInfo(b["time_zone"])))
    r = sandbox.http.patch("/__sandbox/bookings/%23AN-00001", json={"start_time": new})
    assert envelope(r)["start_time"] == new
    r = sandbox.http.patch("/__sandbox/bookings/%23AN-00001", json={"action": "cancel"})
    assert envelope(r)["status"] == "CANCEL"
    r = sandbox.http.patch("/__sandbox/bookings/%23AN-00001", json={"start_time": b["start_time"]})
    failure(r)
    rescheduled, cancelled = delivered(sandbox, receiver)
    after = one(sandbox, "#AN-00001")
    assert_webhook(rescheduled, {**after, "status": "UPCOMING"}, "appointment_rescheduled", "ui")
    assert_webhook(cancelled, after, "appointment_cancelled", "ui")
    assert after["start_time"] == new


def test_failed_actions_send_no_webhook(sandbox, receiver):
    webhook_config(sandbox, receiver)
    up = pick(sandbox, future())
    done = pick(sandbox, lambda x: x["status"] == "COMPLETED", "COMPLETED")
    with sandbox.client() as c:
        failure(act(c, up["booking_id"], "completed"))
        failure(act(c, done["booking_id"], "cancel"))
        failure(reschedule(c, up["booking_id"], start_time=up["start_time"]))
        failure(reschedule(c, up["booking_id"], start_time="garbage"))
        failure(act(c, up["booking_id"], "explode"))
    failure(sandbox.http.patch(f"/__sandbox/bookings/{quote(done['booking_id'], safe='')}", json={"action": "cancel"}))
    assert delivered(sandbox, receiver) == []


def test_no_webhook_without_a_url(sandbox, receiver):
    b = pick(sandbox, future())
    with sandbox.client() as c:
        envelope(act(c, b["booking_id"], "cancel"))
    assert delivered(sandbox, receiver) == []
    assert sandbox.http.get("/__sandbox/outbox").json()["sent"] == []
