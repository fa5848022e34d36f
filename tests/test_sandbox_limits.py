"""Zoho's API limits in the sandbox (``limits_enforced``), over HTTP.

Bookings: calls per day by plan, in the org's time zone, auth calls not counted.
CRM: credits over a rolling 24 hours, concurrent calls by edition.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from tests.conftest import TLS

GET = "/bookings/v1/json/getappointment"
CRM = "/crm/v7/Appointments__s"
LIST = {"fields": "Status", "per_page": 1}


def limits(sandbox) -> dict:
    return sandbox.stats()["limits"]


def set_clock(sandbox, **body) -> None:
    r = sandbox.http.put("/__sandbox/clock", json=body)
    assert r.status_code == 200, r.text


def test_limits_are_counted_but_not_enforced_by_default(sandbox):
    assert sandbox.http.get("/__sandbox/config").json()["limits_enforced"] is False
    booking_id = sandbox.dump(module="bookings")["bookings"][0]["booking_id"]
    with sandbox.client() as c:
        assert c.get(GET, params={"booking_id": booking_id}).status_code == 200
        assert c.get(CRM, params=LIST).status_code == 200
    usage = limits(sandbox)
    assert usage["enforced"] is False
    assert usage["bookings"]["calls_today"] == 1 and usage["bookings"]["daily_limit"] == 3000
    assert usage["crm"]["credits_used_24h"] == 1 and usage["crm"]["credit_limit_24h"] == 60_000
    assert usage["crm"]["concurrency_limit"] == 20


def test_bad_plan_or_edition_answers_400(sandbox):
    for body in ({"bookings_plan": "Gold"}, {"crm_edition": "Basic"}, {"bookings_limit_status": 200}):
        assert sandbox.http.put("/__sandbox/config", json=body).status_code == 400, body


def test_bookings_free_plan_allows_250_calls_a_day_in_the_org_time_zone(sandbox):
    sandbox.config(limits_enforced=True, bookings_plan="Free", token_ttl=3 * 86_400)
    booking_id = sandbox.dump(module="bookings")["bookings"][0]["booking_id"]
    token = sandbox.token()
    with sandbox.client(token) as c:
        for i in range(250):
            r = c.get(GET, params={"booking_id": booking_id})
            assert r.status_code == 200, (i, r.text)
        for _ in range(3):  # auth calls are not counted
            assert "access_token" in sandbox.mint().json()
        r = c.get(GET, params={"booking_id": booking_id})
        assert r.status_code == 429, r.text
        body = r.json()["response"]
        assert body["status"] == "failure" and "250" in body["returnvalue"]["message"]
        assert int(r.headers["Retry-After"]) >= 1
        usage = limits(sandbox)
        assert usage["bookings"]["calls_today"] == 250 and usage["refused"] == {"bookings_daily": 1}

        # one second before the org's next local midnight: still refused; at it: allowed
        tz = ZoneInfo("Asia/Kolkata")
        local = datetime.now(tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
        set_clock(sandbox, now=(midnight - timedelta(seconds=5)).isoformat())
        assert c.get(GET, params={"booking_id": booking_id}).status_code == 429
        set_clock(sandbox, now=(midnight + timedelta(seconds=1)).isoformat())
        assert c.get(GET, params={"booking_id": booking_id}).status_code == 200
        assert limits(sandbox)["bookings"]["calls_today"] == 1


def test_bookings_limit_status_is_configurable(sandbox):
    sandbox.config(limits_enforced=True, bookings_plan="Free", bookings_limit_status=400)
    booking_id = sandbox.dump(module="bookings")["bookings"][0]["booking_id"]
    with sandbox.client() as c:
        for _ in range(250):
            c.get(GET, params={"booking_id": booking_id})
        r = c.get(GET, params={"booking_id": booking_id})
        assert r.status_code == 400 and r.json()["response"]["status"] == "failure"


def test_crm_credits_over_a_rolling_24_hours(sandbox):
    sandbox.config(limits_enforced=True, crm_credit_limit=60, token_ttl=3 * 86_400)
    with sandbox.client() as c:
        for i in range(5):
            assert c.get(CRM, params=LIST).status_code == 200, i
        # a Bulk Read create costs 50 credits: 55 spent
        r = c.post("/crm/bulk/v7/read", json={"query": {"module": {"api_name": "Appointments__s"}}})
        assert r.status_code == 201, r.text
        assert limits(sandbox)["crm"]["credits_used_24h"] == 55
        r = c.post("/crm/bulk/v7/read", json={"query": {"module": {"api_name": "Appointments__s"}}})
        assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_REQUESTS"
        for i in range(5):
            assert c.get(CRM, params=LIST).status_code == 200, i
        r = c.get(CRM, params=LIST)
        assert r.status_code == 429, r.text
        assert r.json() == {
            "code": "TOO_MANY_REQUESTS",
            "details": {"credit_limit": 60},
            "message": "Too many requests. Please try again after some time.",
            "status": "error",
        }
        assert limits(sandbox)["refused"] == {"crm_credits": 2}
        set_clock(sandbox, advance_seconds=86_400 + 60)  # the credits spent a day ago are free again
        assert c.get(CRM, params=LIST).status_code == 200
        assert limits(sandbox)["crm"]["credits_used_24h"] == 1


def test_crm_credit_limit_follows_edition_and_users(sandbox):
    expected = {("Free", 10): 5000, ("Standard", 10): 52_500, ("Standard", 1000): 100_000,
                ("Professional", 10): 55_000, ("Enterprise", 100): 150_000, ("Ultimate", 10): 70_000}
    for (edition, users), credits in expected.items():
        sandbox.config(crm_edition=edition, crm_users=users)
        assert limits(sandbox)["crm"]["credit_limit_24h"] == credits, (edition, users)


def test_crm_concurrent_calls_past_the_edition_limit_answer_429(sandbox):
    sandbox.config(limits_enforced=True, crm_edition="Free")
    sandbox.faults(crm={"delay": 1.5})  # each call holds its slot for 1.5 s
    headers = sandbox.headers()
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(base_url=sandbox.url, headers=headers, timeout=30, verify=TLS) as c:
            statuses.append(c.get(CRM, params=LIST).status_code)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = datetime.now() + timedelta(seconds=5)
    while limits(sandbox)["crm"]["in_flight"] < 5 and datetime.now() < deadline:
        time.sleep(0.05)
    assert limits(sandbox)["crm"]["in_flight"] == 5
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=30, verify=TLS) as c:
        r = c.get(CRM, params=LIST)
    assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_REQUESTS"
    for t in threads:
        t.join()
    assert statuses == [200] * 5
    assert limits(sandbox)["crm"]["in_flight"] == 0
    assert limits(sandbox)["refused"] == {"crm_concurrency": 1}
