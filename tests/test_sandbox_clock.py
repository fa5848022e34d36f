"""The sandbox's settable clock (``GET``/``PUT /__sandbox/clock``), over HTTP.

Appointments pass, tokens expire and the mint window frees up when the clock moves.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CRM = "/crm/v7/Appointments__s"
BOOKINGS = "/bookings/v1/json"
LIST = {"fields": "Status", "per_page": 1}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_clock(sandbox, **body) -> dict:
    r = sandbox.http.put("/__sandbox/clock", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_clock_is_real_then_set_then_advanced_then_real_again(sandbox):
    real = datetime.now(timezone.utc)
    body = sandbox.http.get("/__sandbox/clock").json()
    assert body["real"] is True and body["offset_seconds"] == 0
    assert abs((at(body["now"]) - real).total_seconds()) < 5
    assert body["now"].endswith("Z")

    body = set_clock(sandbox, now="2031-03-09T06:59:30+05:30")
    assert abs((at(body["now"]) - at("2031-03-09T01:29:30Z")).total_seconds()) < 5
    assert body["real"] is False and body["offset_seconds"] > 0

    before = at(body["now"])
    body = set_clock(sandbox, advance_seconds=86_400)
    assert abs((at(body["now"]) - before - timedelta(days=1)).total_seconds()) < 5

    body = set_clock(sandbox, real=True)
    assert body["real"] is True and abs((at(body["now"]) - datetime.now(timezone.utc)).total_seconds()) < 5


def test_bad_clock_bodies_answer_400_and_change_nothing(sandbox):
    for body in ({}, {"now": "tomorrow"}, {"now": "2031-01-01T00:00:00"}, {"advance_seconds": "x"},
                 {"real": False}, {"now": "2031-01-01T00:00:00Z", "advance_seconds": 1}, {"later": 1}):
        r = sandbox.http.put("/__sandbox/clock", json=body)
        assert r.status_code == 400, (body, r.text)
    assert sandbox.http.get("/__sandbox/clock").json()["real"] is True


def test_a_reset_puts_the_clock_back_to_real_time(sandbox):
    set_clock(sandbox, advance_seconds=10 * 86_400)
    sandbox.http.post("/__sandbox/reset", json={}).raise_for_status()
    assert sandbox.http.get("/__sandbox/clock").json()["real"] is True


def _future_scheduled(sandbox) -> dict:
    now = datetime.now(timezone.utc)
    bookings = {b["booking_id"]: b for b in sandbox.dump(module="bookings")["bookings"]}
    for rec in sandbox.dump(module="Appointments__s")["Appointments__s"]:
        if (rec["Status"] == "Scheduled" and at(rec["Appointment_Start_Time"]) > now + timedelta(days=2)
                and bookings.get(rec.get("Booking_Id"), {}).get("status") == "UPCOMING"):
            return rec
    raise AssertionError("no future scheduled appointment in the seed")


def test_an_appointment_passes_when_the_clock_moves_past_it(sandbox):
    sandbox.config(token_ttl=400 * 86_400)  # the token must outlive the clock's jumps
    rec = _future_scheduled(sandbox)
    start, end = at(rec["Appointment_Start_Time"]), at(rec["Appointment_End_Time"])
    with sandbox.client() as c:
        def crm_status() -> str:
            r = c.get(f"{CRM}/{rec['id']}")
            assert r.status_code == 200, r.text
            return r.json()["data"][0]["Status"]

        def booking_status() -> str:
            r = c.get(f"{BOOKINGS}/getappointment", params={"booking_id": rec["Booking_Id"]})
            assert r.status_code == 200, r.text
            return r.json()["response"]["returnvalue"]["status"]

        assert crm_status() == "Scheduled" and booking_status() == "UPCOMING"
        set_clock(sandbox, now=(start + timedelta(minutes=1)).isoformat())
        assert crm_status() == "Overdue" and booking_status() == "ONGOING"
        set_clock(sandbox, now=(end + timedelta(minutes=1)).isoformat())
        assert crm_status() == "Overdue" and booking_status() == "UPCOMING"
        sandbox.config(ask_to_mark_completed=False)
        assert crm_status() == "Completed"
        set_clock(sandbox, real=True)
        assert crm_status() == "Scheduled"


def test_completing_a_booking_waits_for_its_start_on_the_sandbox_clock(sandbox):
    sandbox.config(token_ttl=400 * 86_400)
    rec = _future_scheduled(sandbox)
    with sandbox.client() as c:
        def complete():
            return c.post(f"{BOOKINGS}/updateappointment", data={"booking_id": rec["Booking_Id"], "action": "completed"})

        assert complete().json()["response"]["status"] == "failure"
        set_clock(sandbox, now=(at(rec["Appointment_End_Time"]) + timedelta(minutes=5)).isoformat())
        r = complete()
        assert r.json()["response"]["status"] == "success", r.text


def test_a_token_expires_when_the_clock_moves_past_its_expiry(sandbox):
    token = sandbox.token()
    with sandbox.client(token) as c:
        assert c.get(CRM, params=LIST).status_code == 200
        set_clock(sandbox, advance_seconds=3_599)
        assert c.get(CRM, params=LIST).status_code == 200
        set_clock(sandbox, advance_seconds=2)
        r = c.get(CRM, params=LIST)
        assert r.status_code == 401 and r.json()["code"] == "INVALID_TOKEN"
        set_clock(sandbox, real=True)
        assert c.get(CRM, params=LIST).status_code == 200


def test_the_mint_window_frees_up_when_the_clock_moves(sandbox):
    for _ in range(10):
        assert "access_token" in sandbox.mint().json()
    assert "access_token" not in sandbox.mint().json()
    set_clock(sandbox, advance_seconds=601)
    assert "access_token" in sandbox.mint().json()


def test_a_page_token_expires_with_the_sandbox_clock(sandbox):
    with sandbox.client() as c:
        first = c.get(CRM, params={**LIST, "per_page": 10}).json()
        page_token = first["info"].get("next_page_token")
        assert page_token, first["info"]
        set_clock(sandbox, advance_seconds=2 * 86_400)
        # the client's own token has expired too: use one minted at the new time
        r = c.get(CRM, params={**LIST, "per_page": 10, "page_token": page_token}, headers=sandbox.headers())
        assert r.status_code == 400, r.text
        assert "expired" in r.json()["message"]

