"""Fault injection, counters and the rest of the sandbox's admin API, driven over HTTP.

Also: unknown routes answer Zoho-shaped errors, and the sandbox refuses to send
anything to a non-loopback address (203.0.113.0/24 is TEST-NET-3: never reached).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

CRM_LIST = "/crm/v7/Appointments__s"
CRM_PARAMS = {"fields": "Status,Booking_Id", "per_page": 2}
GET_BOOKING = "/bookings/v1/json/getappointment"
REMOTE = "http://203.0.113.5/x"


# ------------------------------------------------------------------ helpers
def crm(c: httpx.Client) -> httpx.Response:
    return c.get(CRM_LIST, params=CRM_PARAMS)


def booking(c: httpx.Client, booking_id: str = "#AN-00001") -> httpx.Response:
    return c.get(GET_BOOKING, params={"booking_id": booking_id})


def put_faults(sandbox, body: Any) -> httpx.Response:
    return sandbox.http.put("/__sandbox/faults", json=body)


def get_faults(sandbox) -> dict[str, Any]:
    return sandbox.http.get("/__sandbox/faults").json()


def get_config(sandbox) -> dict[str, Any]:
    r = sandbox.http.get("/__sandbox/config")
    assert r.status_code == 200
    return r.json()


def assert_crm_error(r: httpx.Response, status: int, code: str) -> None:
    """A CRM error body (JSON, never HTML or a stack trace)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] == code
    assert body["status"] == "error"
    assert set(body) == {"code", "details", "message", "status"}


def assert_bookings_failure(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["response"]["status"] == "failure"


def statuses(c: httpx.Client, n: int) -> list[int]:
    return [crm(c).status_code for _ in range(n)]


def faults_injected(sandbox) -> dict[str, int]:
    return sandbox.stats()["faults_injected"]


# ------------------------------------------------------------------- faults
def test_error_500_on_crm_leaves_bookings_working(sandbox):
    sandbox.faults(crm={"error_500": 1.0})
    with sandbox.client() as c:
        assert_crm_error(crm(c), 500, "INTERNAL_ERROR")
        assert_crm_error(c.get(f"{CRM_LIST}/1"), 500, "INTERNAL_ERROR")
        assert booking(c).json()["response"]["status"] == "success"
    assert faults_injected(sandbox) == {"crm:500": 2}


def test_error_429_carries_retry_after(sandbox):
    sandbox.faults(crm={"error_429": 1.0, "retry_after": 7})
    with sandbox.client() as c:
        r = crm(c)
    assert_crm_error(r, 429, "TOO_MANY_REQUESTS")
    assert r.headers["retry-after"] == "7"
    assert faults_injected(sandbox) == {"crm:429": 1}


def test_faults_on_bookings_use_the_envelope(sandbox):
    sandbox.faults(bookings={"error_500": 1.0})
    with sandbox.client() as c:
        assert_bookings_failure(booking(c), 500)
        assert crm(c).status_code == 200
    sandbox.faults(bookings={"error_429": 1.0, "retry_after": 3})
    with sandbox.client() as c:
        r = booking(c)
    assert_bookings_failure(r, 429)
    assert r.headers["retry-after"] == "3"


def test_faults_on_accounts(sandbox):
    sandbox.faults(accounts={"error_429": 1.0})
    r = sandbox.mint()
    assert r.status_code == 429
    assert r.json()["error"] == "Access Denied"
    assert sandbox.stats()["tokens_minted"] == 0


def test_faults_for_all_groups_spare_the_admin_api(sandbox):
    token = sandbox.token()
    sandbox.faults(all={"error_500": 1.0})
    with sandbox.client(token) as c:
        assert_crm_error(crm(c), 500, "INTERNAL_ERROR")
        assert_bookings_failure(booking(c), 500)
    r = sandbox.mint()
    assert r.status_code == 500
    assert r.json() == {"error": "server_error"}
    assert sandbox.http.get("/__sandbox/health").json() == {"status": "ok"}
    assert faults_injected(sandbox) == {"crm:500": 1, "bookings:500": 1, "accounts:500": 1}


def test_a_group_setting_overrides_all(sandbox):
    token = sandbox.token()
    sandbox.faults(all={"error_500": 1.0}, bookings={"error_500": 0.0})
    with sandbox.client(token) as c:
        assert booking(c).status_code == 200
        assert crm(c).status_code == 500


def test_drop_closes_the_connection_and_the_sandbox_keeps_serving(sandbox):
    token = sandbox.token()
    sandbox.faults(crm={"drop": 1.0})
    with sandbox.client(token) as c:
        with pytest.raises(httpx.TransportError):
            crm(c)
        assert booking(c).status_code == 200  # other groups are untouched
    assert faults_injected(sandbox) == {"crm:drop": 1}
    sandbox.http.delete("/__sandbox/faults").raise_for_status()
    with sandbox.client(token) as c:
        assert crm(c).status_code == 200


def test_delay_still_answers_and_is_counted(sandbox):
    sandbox.faults(bookings={"delay": 0.2})
    with sandbox.client() as c:
        assert booking(c).json()["response"]["status"] == "success"
        assert booking(c).status_code == 200
    assert faults_injected(sandbox) == {"bookings:delay": 2}


def test_probabilities_give_a_reproducible_mix(sandbox):
    token = sandbox.token()
    sandbox.faults(crm={"error_500": 0.5})
    with sandbox.client(token) as c:
        first = statuses(c, 40)
    assert set(first) == {200, 500}
    assert faults_injected(sandbox) == {"crm:500": first.count(500)}
    # same seed after a reset: the same sequence
    sandbox.http.post("/__sandbox/reset").raise_for_status()
    sandbox.faults(crm={"error_500": 0.5})
    with sandbox.client() as c:
        assert statuses(c, 40) == first


def test_mixed_kinds_of_faults(sandbox):
    sandbox.faults(crm={"error_500": 0.3, "error_429": 0.3})
    with sandbox.client() as c:
        got = statuses(c, 60)
    assert set(got) == {200, 429, 500}
    assert faults_injected(sandbox) == {"crm:500": got.count(500), "crm:429": got.count(429)}


@pytest.mark.parametrize(
    "body",
    [
        {"nope": {"error_500": 1.0}},
        {"crm": {"error_501": 1.0}},
        {"crm": {"error_500": "often"}},
        {"crm": {"error_500": 1.5}},
        {"crm": {"drop": -0.1}},
        {"crm": {"delay": -1}},
        {"crm": {"error_500": True}},
        {"crm": ["error_500"]},
        {"crm": {"error_500": 1.0}, "bogus": {}},
    ],
    ids=["group", "key", "text", "above-1", "negative-p", "negative-delay", "bool", "list", "partly-bad"],
)
def test_bad_faults_answer_400_and_change_nothing(sandbox, body):
    sandbox.faults(bookings={"error_500": 0.25})
    r = put_faults(sandbox, body)
    assert_crm_error(r, 400, "INVALID_DATA")
    assert get_faults(sandbox) == {"bookings": {"error_500": 0.25}}
    with sandbox.client() as c:
        assert crm(c).status_code == 200


def test_faults_are_readable_and_delete_clears_them(sandbox):
    sandbox.faults(crm={"error_500": 1.0}, bookings={"delay": 0.1})
    assert get_faults(sandbox) == {"crm": {"error_500": 1.0}, "bookings": {"delay": 0.1}}
    sandbox.faults(crm={"error_429": 0.5})
    assert get_faults(sandbox) == {"crm": {"error_429": 0.5}, "bookings": {"delay": 0.1}}
    assert sandbox.http.delete("/__sandbox/faults").status_code == 200
    assert get_faults(sandbox) == {}
    with sandbox.client() as c:
        assert statuses(c, 5) == [200] * 5
    assert faults_injected(sandbox) == {}


# -------------------------------------------------------------------- stats
def test_stats_count_calls_per_route_group_and_token(sandbox):
    first, second = sandbox.token(), sandbox.token()
    with sandbox.client(first) as c:
        crm(c)
        crm(c)
        c.get(f"{CRM_LIST}/5545974000002000001")
        booking(c)
    with sandbox.client(second) as c:
        crm(c)
        booking(c, "#AN-00002")
    sandbox.http.get("/__sandbox/dump")  # admin calls are not counted
    stats = sandbox.stats()
    assert stats["calls"] == {
        "POST /oauth/v2/token": 2,
        "GET /crm/{version}/{module}": 3,
        "GET /crm/{version}/{module}/{record_id}": 1,
        "GET /bookings/v1/json/getappointment": 2,
    }
    assert stats["calls_by_group"] == {"accounts": 2, "crm": 4, "bookings": 2}
    assert stats["total_calls"] == 8
    assert sorted(stats["calls_by_token"].values()) == [2, 4]
    assert stats["tokens_minted"] == 2
    assert list(stats["tokens_minted_by_refresh_token"].values()) == [2]


def test_stats_never_show_secrets(sandbox):
    token = sandbox.token()
    with sandbox.client(token) as c:
        crm(c)
    sandbox.mint(client_secret="wrong")
    text = json.dumps(sandbox.stats())
    for secret in (token, sandbox.creds["refresh_token"], sandbox.creds["client_secret"]):
        assert secret not in text
        assert all(part not in text for part in secret.split(".") if len(part) > 8)


def test_stats_count_unauthorised_and_faulted_calls(sandbox):
    sandbox.http.get(CRM_LIST, params=CRM_PARAMS)  # no token: 401, still a call
    sandbox.faults(crm={"error_500": 1.0})
    with sandbox.client() as c:
        crm(c)
    stats = sandbox.stats()
    assert stats["calls_by_group"]["crm"] == 2
    assert stats["faults_injected"] == {"crm:500": 1}


def test_faulted_calls_are_counted_under_their_route(sandbox):
    token = sandbox.token()
    with sandbox.client(token) as c:
        crm(c)
        sandbox.faults(crm={"error_500": 1.0})
        crm(c)
        c.get(f"{CRM_LIST}/5545974000002000001")
        sandbox.faults(crm={"drop": 1.0})
        with pytest.raises(httpx.TransportError):
            crm(c)
    assert sandbox.stats()["calls"] == {
        "POST /oauth/v2/token": 1,
        "GET /crm/{version}/{module}": 3,
        "GET /crm/{version}/{module}/{record_id}": 1,
    }


def test_stats_count_writes_and_delete_zeroes(sandbox):
    b = next(x for x in sandbox.dump(module="bookings")["bookings"] if x["status"] == "UPCOMING")
    with sandbox.client() as c:
        r = c.post("/bookings/v1/json/updateappointment", data={"booking_id": b["booking_id"], "action": "cancel"})
    assert r.json()["response"]["status"] == "success"
    assert sandbox.stats()["writes"] == {"bookings": 1}
    assert sandbox.http.delete("/__sandbox/stats").status_code == 200
    stats = sandbox.stats()
    assert stats["total_calls"] == 0
    assert stats["writes"] == {}
    assert stats["tokens_minted"] == 0


def test_throttled_mints_are_counted(sandbox):
    sandbox.config(token_mint_limit=2)
    for _ in range(3):
        sandbox.mint()
    stats = sandbox.stats()
    assert stats["tokens_minted"] == 2
    assert stats["token_requests_throttled"] == 1


# --------------------------------------------------------------------- dump
def test_dump_shows_both_sides(sandbox):
    d = sandbox.dump()
    assert set(d) == {"Appointments__s", "Events", "bookings"}
    assert len(d["Appointments__s"]) == len(d["Events"]) == len(d["bookings"]) == 300
    assert {a["Booking_Id"] for a in d["Appointments__s"]} == {b["booking_id"] for b in d["bookings"]}


def test_dump_filters_by_module_and_booking(sandbox):
    assert set(sandbox.dump(module="Events")) == {"Events"}
    d = sandbox.dump(booking_id="#AN-00007")
    assert [len(d[k]) for k in ("Appointments__s", "Events", "bookings")] == [1, 1, 1]
    assert d["bookings"][0]["booking_id"] == d["Appointments__s"][0]["Booking_Id"] == "#AN-00007"
    assert sandbox.dump(booking_id="#AN-99999") == {"Appointments__s": [], "Events": [], "bookings": []}


# ------------------------------------------------------------------- config
def test_config_reads_and_changes(sandbox):
    cfg = get_config(sandbox)
    assert cfg["token_ttl"] == 3600
    assert cfg["org_time_zone"] == "Asia/Kolkata"
    changed = sandbox.config(token_ttl=120, bulk_delay=0.5)
    assert (changed["token_ttl"], changed["bulk_delay"]) == (120, 0.5)
    assert sandbox.mint().json()["expires_in"] == 120


def test_config_masks_webhook_headers(sandbox):
    sandbox.config(bookings_webhook_headers={"X-Secret": "s3cr3t-value"})
    cfg = get_config(sandbox)
    assert "X-Secret" in cfg["bookings_webhook_headers"]
    assert "s3cr3t-value" not in json.dumps(cfg)


@pytest.mark.parametrize(
    "body",
    [
        {"no_such_setting": 1},
        {"token_ttl": 5, "no_such_setting": 1},
        {"token_ttl": 5, "bulk_delay": "slow"},
        {"token_ttl": "5"},
        {"token_ttl": -1},
        {"allow_remote_callbacks": "yes"},
        {"bookings_webhook_headers": "X-Secret: s3"},
        {"bookings_webhook_url": 5},
        {"org_time_zone": "Mars/Olympus_Mons"},
        {"anchor_date": "yesterday"},
    ],
)
def test_bad_config_answers_400_and_changes_nothing(sandbox, body):
    before = get_config(sandbox)
    r = sandbox.http.put("/__sandbox/config", json=body)
    assert_crm_error(r, 400, "INVALID_DATA")
    assert get_config(sandbox) == before


# -------------------------------------------------------------------- reset
def test_reset_with_a_new_appointment_count(sandbox):
    token = sandbox.token()
    sandbox.faults(crm={"error_500": 1.0})
    r = sandbox.http.post("/__sandbox/reset", json={"appointments": 20, "colour": "blue"})
    assert r.status_code == 200
    assert r.json() == {"status": "reset", "appointments": 20, "ignored": ["colour"]}
    d = sandbox.dump()
    assert [len(d[k]) for k in ("Appointments__s", "Events", "bookings")] == [20, 20, 20]
    assert get_config(sandbox)["appointments"] == 20
    assert get_faults(sandbox) == {}
    assert sandbox.stats()["total_calls"] == 0
    # tokens are forgotten; the credentials (derived from the seed) still work
    with sandbox.client(token) as c:
        assert_crm_error(crm(c), 401, "INVALID_TOKEN")
    assert sandbox.http.get("/__sandbox/credentials").json()["refresh_token"] == sandbox.creds["refresh_token"]
    with sandbox.client() as c:
        assert crm(c).json()["info"]["more_records"] is True


def test_reset_with_a_bad_value_resets_nothing(sandbox):
    b = next(x for x in sandbox.dump(module="bookings")["bookings"] if x["status"] == "UPCOMING")
    with sandbox.client() as c:
        c.post("/bookings/v1/json/updateappointment", data={"booking_id": b["booking_id"], "action": "cancel"})
    r = sandbox.http.post("/__sandbox/reset", json={"appointments": "many"})
    assert_crm_error(r, 400, "INVALID_DATA")
    assert sandbox.dump(booking_id=b["booking_id"])["bookings"][0]["status"] == "CANCEL"
    assert get_config(sandbox)["appointments"] == 300


# ---------------------------------------------------------- admin odds and ends
def test_credentials_with_a_scope(sandbox):
    creds = sandbox.http.post("/__sandbox/credentials", json={"scope": "ZohoCRM.modules.Appointments__s.READ"}).json()
    token = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"]).json()["access_token"]
    with sandbox.client(token) as c:
        assert crm(c).status_code == 200
        r = c.put(CRM_LIST, json={"data": [{"id": "5545974000002000001", "Reschedule_Note": "x"}]})
        assert_crm_error(r, 401, "OAUTH_SCOPE_MISMATCH")


def test_bad_admin_bodies_answer_400(sandbox):
    assert_crm_error(sandbox.http.post("/__sandbox/credentials", json={"permission": "god"}), 400, "INVALID_DATA")
    assert_crm_error(sandbox.http.post("/__sandbox/grant-code", json={"client_id": "1000.NOPE"}), 400, "INVALID_DATA")
    r = sandbox.http.put("/__sandbox/faults", content=b"{not json", headers={"content-type": "application/json"})
    assert_crm_error(r, 400, "INVALID_DATA")
    assert_crm_error(sandbox.http.put("/__sandbox/config", json=[1, 2]), 400, "INVALID_DATA")


def test_admin_booking_edit_of_an_unknown_booking(sandbox):
    r = sandbox.http.patch("/__sandbox/bookings/%23AN-99999", json={"action": "cancel"})
    assert_bookings_failure(r, 404)
    r = sandbox.http.patch("/__sandbox/bookings/%23AN-00001", json={})
    assert_bookings_failure(r, 400)


# ------------------------------------------------------------ unknown routes
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/crm/v7/Appointments__s/1/2/3"),
        ("GET", "/crm/v99/Appointments__s"),
        ("GET", "/crm/nothing"),
        ("GET", "/"),
        ("GET", "/favicon.ico"),
        ("POST", "/api/v1/whatever"),
        ("GET", "/__sandbox/nope"),
        ("GET", "/docs"),
    ],
)
def test_unknown_routes_answer_invalid_url_pattern(sandbox, method, path):
    assert_crm_error(sandbox.http.request(method, path, headers=sandbox.headers()), 404, "INVALID_URL_PATTERN")


def test_unknown_module_and_method(sandbox):
    with sandbox.client() as c:
        assert_crm_error(c.get("/crm/v7/Leadz", params=CRM_PARAMS), 400, "INVALID_MODULE")
        assert_crm_error(c.post(CRM_LIST, json={"data": []}), 400, "INVALID_REQUEST_METHOD")


@pytest.mark.parametrize("path", ["/bookings/v1/json/nosuchapi", "/bookings/v2/json/getappointment", "/bookings/"])
def test_unknown_bookings_routes_answer_the_envelope(sandbox, path):
    with sandbox.client() as c:
        r = c.get(path)
    assert_bookings_failure(r, 404)
    assert "<html" not in r.text.lower()


def test_unknown_accounts_route_answers_an_accounts_error(sandbox):
    r = sandbox.http.post("/oauth/v2/nothing")
    assert r.status_code == 404
    assert r.json() == {"error": "invalid_request"}


@pytest.mark.parametrize(
    "data",
    [
        {"data": json.dumps({"booking_id": ["#AN-00001"], "action": ["cancel"]})},
        {"data": json.dumps({"booking_id": "#AN-00001", "action": {"x": 1}})},
        {"data": json.dumps(["not", "an", "object"])},
    ],
)
def test_odd_bookings_input_fails_cleanly(sandbox, data):
    with sandbox.client() as c:
        r = c.post("/bookings/v1/json/updateappointment", data=data)
    assert_bookings_failure(r, 200)
    assert "Traceback" not in r.text


def test_odd_fetch_input_fails_cleanly(sandbox):
    with sandbox.client() as c:
        r = c.post("/bookings/v1/json/fetchappointment", data={"data": json.dumps({"per_page": [5], "status": ["CANCEL"]})})
    assert_bookings_failure(r, 200)


# ---------------------------------------------------------------- outbound
def outbox(sandbox) -> dict[str, Any]:
    sandbox.drain()
    return sandbox.http.get("/__sandbox/outbox").json()


def cancel_one(sandbox) -> None:
    b = next(x for x in sandbox.dump(module="bookings")["bookings"] if x["status"] == "UPCOMING")
    with sandbox.client() as c:
        r = c.post("/bookings/v1/json/updateappointment", data={"booking_id": b["booking_id"], "action": "cancel"})
    assert r.json()["response"]["status"] == "success"


@pytest.mark.parametrize("url", [REMOTE, "http://203.0.113.5:8080/hook", "http://example.invalid/x", "ftp://127.0.0.1/x", "http://0.0.0.0:1/x"])
def test_outbound_calls_to_non_loopback_addresses_are_refused(sandbox, url):
    sandbox.config(bookings_webhook_url=url)
    cancel_one(sandbox)
    box = outbox(sandbox)
    assert box["pending"] == 0
    (entry,) = box["sent"]
    assert entry["url"] == url
    assert entry["status"].startswith("refused")
    assert sandbox.stats()["outbound"] == {"bookings_webhook_refused": 1}


def test_outbound_calls_to_loopback_are_sent(sandbox, receiver):
    sandbox.config(bookings_webhook_url=receiver.url.replace("127.0.0.1", "localhost") + "/ok")
    cancel_one(sandbox)
    (entry,) = outbox(sandbox)["sent"]
    assert entry["status"] == 200
    assert receiver.received and receiver.received[0]["path"] == "/ok"
    assert sandbox.stats()["outbound"] == {"bookings_webhook_sent": 1}


def test_a_failing_receiver_is_logged(sandbox, receiver):
    receiver.status_code = 500
    sandbox.config(bookings_webhook_url=receiver.url + "/down")
    cancel_one(sandbox)
    (entry,) = outbox(sandbox)["sent"]
    assert entry["status"] == 500
    assert sandbox.stats()["outbound"] == {"bookings_webhook_failed": 1}
