"""CRM notification channels as the sandbox serves them, driven over HTTP.

``/crm/v7/actions/watch`` subscribes, lists, updates and unsubscribes channels;
every change to a watched module, by the API or by an admin ("UI") edit, is
POSTed to the channel's ``notify_url`` with the documented keys
(``shared/zoho-api-notes.md``, section "CRM notifications"). Notifications go to
the loopback ``receiver`` only: other addresses are refused and logged in
``/__sandbox/outbox``, never sent.
"""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

UTC = timezone.utc
WATCH = "/crm/v7/actions/watch"
CHANNEL_ID = "1000000068001"
TOKEN = "tok-123"
#: The keys of a notification body (zoho-api-notes.md).
NOTIFICATION_KEYS = {
    "server_time", "query_params", "module", "resource_uri", "ids", "affected_fields", "operation", "channel_id", "token",
}
#: Documentation-only addresses (RFC 5737 / RFC 3849): never reachable, never to be called.
REMOTE_URLS = ["http://203.0.113.5/x", "https://[2001:db8::1]/hook"]
#: One TLS context for every client of this module (httpx builds one per client by default, ~0.1 s).
TLS = ssl.create_default_context()


# ------------------------------------------------------------------ helpers
def expiry(delta: timedelta = timedelta(days=6)) -> str:
    """A ``channel_expiry`` ``delta`` from now (ISO 8601 with offset)."""
    return (datetime.now(UTC) + delta).replace(microsecond=0).isoformat()


def channel(receiver, **overrides: Any) -> dict[str, Any]:
    """A ``watch`` entry for ``Appointments__s`` notifying ``receiver`` at ``/crm``."""
    return {
        "channel_id": CHANNEL_ID,
        "events": ["Appointments__s.all"],
        "channel_expiry": expiry(),
        "token": TOKEN,
        "notify_url": receiver.url + "/crm",
        **overrides,
    }


def subscribe(api: httpx.Client, *channels: dict[str, Any]) -> httpx.Response:
    """``POST /crm/v7/actions/watch``."""
    return api.post(WATCH, json={"watch": list(channels)})


def subscribed(api: httpx.Client, *channels: dict[str, Any]) -> None:
    """Subscribe, failing unless every channel answers ``SUCCESS``."""
    r = subscribe(api, *channels)
    assert r.status_code == 200, r.text
    assert [e["code"] for e in r.json()["watch"]] == ["SUCCESS"] * len(channels)


def refused(r: httpx.Response, code: str) -> None:
    """A one-channel subscription refused with ``code`` (HTTP 400)."""
    assert r.status_code == 400, r.text
    entry = r.json()["watch"][0]
    assert (entry["status"], entry["code"]) == ("error", code), entry


def future_appointments(sandbox, n: int = 1) -> list[dict]:
    """``n`` scheduled appointments starting more than a day from now."""
    soon = datetime.now(UTC) + timedelta(days=1)
    found = [
        r for r in sandbox.dump(module="Appointments__s")["Appointments__s"]
        if r["Status"] == "Scheduled" and datetime.fromisoformat(r["Appointment_Start_Time"]) > soon
    ]
    assert len(found) >= n
    return found[:n]


def cancelled_appointment(sandbox) -> dict:
    """An appointment that is already cancelled."""
    return next(r for r in sandbox.dump(module="Appointments__s")["Appointments__s"] if r["Status"] == "Cancelled")


def reschedule(api: httpx.Client, *recs: dict, hours: int = 2) -> httpx.Response:
    """Move each appointment ``hours`` later with the CRM API; fails unless all succeed."""
    items = [
        {"id": rec["id"], "Appointment_Start_Time": (datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=hours)).isoformat()}
        for rec in recs
    ]
    r = api.put("/crm/v7/Appointments__s", json={"data": items})
    assert r.status_code == 200, r.text
    return r


def delivered(sandbox, receiver) -> list[dict[str, Any]]:
    """Every notification body the receiver got, once the sandbox's outbox is empty."""
    sandbox.drain()
    return [item["json"] for item in receiver.received]


def about(rec_id: str):
    """A ``receiver.wait_for`` predicate: a notification naming ``rec_id``."""
    return lambda item: rec_id in ((item.get("json") or {}).get("ids") or [])


@pytest.fixture
def api(sandbox, receiver):
    """A CRM client for the test; the receiver starts empty (late deliveries drained first)."""
    sandbox.drain()
    receiver.received.clear()
    with httpx.Client(base_url=sandbox.url, headers=sandbox.headers(), timeout=30, verify=TLS) as client:
        yield client


# ------------------------------------------------------------------ subscribing
def test_subscribing_answers_success_per_event(sandbox, api, receiver):
    r = subscribe(api, channel(receiver, events=["Appointments__s.all", "Events.edit"]))

    assert r.status_code == 200, r.text
    entry = r.json()["watch"][0]
    assert (entry["status"], entry["code"]) == ("success", "SUCCESS")
    events = entry["details"]["events"]
    assert [(e["channel_id"], e["resource_name"]) for e in events] == [(CHANNEL_ID, "Appointments__s"), (CHANNEL_ID, "Events")]
    assert all(e["resource_uri"] == f"{sandbox.url}/crm/v7/{e['resource_name']}" for e in events)


def test_get_lists_the_channels(sandbox, api, receiver):
    assert api.get(WATCH).status_code == 204
    subscribed(api, channel(receiver), channel(receiver, channel_id="1000000068002", events=["Events.all"], notify_url=receiver.url + "/ev"))

    r = api.get(WATCH)

    assert r.status_code == 200, r.text
    listed = {c["channel_id"]: c for c in r.json()["watch"]}
    assert set(listed) == {CHANNEL_ID, "1000000068002"}
    assert listed[CHANNEL_ID]["events"] == ["Appointments__s.all"]
    assert listed[CHANNEL_ID]["notify_url"] == receiver.url + "/crm"
    assert listed["1000000068002"]["notify_url"] == receiver.url + "/ev"
    assert datetime.fromisoformat(listed[CHANNEL_ID]["channel_expiry"]) == datetime.fromisoformat(channel(receiver)["channel_expiry"])


def test_a_channel_expiry_more_than_a_week_ahead_gives_one_hour(sandbox, api, receiver):
    """Notifications docs (v7/v8): "If channel_expiry is not specified or set for more than a
    week, the default expiry time is for one hour": silently, no error."""
    refused(subscribe(api, channel(receiver, channel_expiry=expiry(-timedelta(minutes=5)))), "INVALID_DATA")
    refused(subscribe(api, channel(receiver, channel_expiry="next week")), "INVALID_DATA")
    assert api.get(WATCH).status_code == 204

    for ahead in (timedelta(days=7, minutes=5), timedelta(days=30), None):
        entry = channel(receiver, channel_expiry=expiry(ahead)) if ahead else {k: v for k, v in channel(receiver).items() if k != "channel_expiry"}
        subscribed(api, entry)
        (listed,) = api.get(WATCH).json()["watch"]
        got = datetime.fromisoformat(listed["channel_expiry"])
        assert abs(got - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1), (ahead, got)

    subscribed(api, channel(receiver, channel_expiry=expiry(timedelta(days=6, hours=23))))
    (listed,) = api.get(WATCH).json()["watch"]
    assert datetime.fromisoformat(listed["channel_expiry"]) == datetime.fromisoformat(expiry(timedelta(days=6, hours=23)))


def test_a_token_longer_than_50_characters_is_refused(sandbox, api, receiver):
    refused(subscribe(api, channel(receiver, token="t" * 51)), "INVALID_DATA")

    assert api.get(WATCH).status_code == 204
    subscribed(api, channel(receiver, token="t" * 50))


@pytest.mark.parametrize("key", ["notify_url", "channel_id", "events"])
def test_a_channel_without_a_mandatory_key_is_mandatory_not_found(sandbox, api, receiver, key):
    entry = {k: v for k, v in channel(receiver).items() if k != key}

    r = subscribe(api, entry)

    refused(r, "MANDATORY_NOT_FOUND")
    assert r.json()["watch"][0]["details"]["api_name"] == key
    assert api.get(WATCH).status_code == 204


def test_a_body_without_watch_is_mandatory_not_found(sandbox, api):
    r = api.post(WATCH, json={"channels": []})

    assert r.status_code == 400, r.text
    assert r.json()["code"] == "MANDATORY_NOT_FOUND"


def test_an_unknown_module_in_events_is_refused(sandbox, api, receiver):
    refused(subscribe(api, channel(receiver, events=["Foo.all"])), "INVALID_MODULE")
    refused(subscribe(api, channel(receiver, events=["Appointments__s.touch"])), "INVALID_DATA")


def test_mixed_subscriptions_answer_207(sandbox, api, receiver):
    r = subscribe(api, channel(receiver), channel(receiver, channel_id="1000000068002", token="t" * 51))

    assert r.status_code == 207, r.text
    assert [e["code"] for e in r.json()["watch"]] == ["SUCCESS", "INVALID_DATA"]
    assert [c["channel_id"] for c in api.get(WATCH).json()["watch"]] == [CHANNEL_ID]


def test_subscribing_needs_the_notifications_scope(sandbox, receiver):
    creds = sandbox.http.post("/__sandbox/credentials", json={"scope": ["ZohoCRM.modules.ALL"]}).json()
    token = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"]).json()["access_token"]

    r = sandbox.http.post(WATCH, json={"watch": [channel(receiver)]}, headers=sandbox.headers(token))

    assert r.status_code == 401, r.text
    assert r.json()["code"] == "OAUTH_SCOPE_MISMATCH"


# ------------------------------------------------------------------ notifications
def test_an_api_write_notifies_with_the_documented_keys(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    rec, = future_appointments(sandbox)

    reschedule(api, rec)
    got = receiver.wait_for(about(rec["id"]))

    body = got["json"]
    assert got["path"] == "/crm"
    assert set(body) == NOTIFICATION_KEYS
    assert (body["module"], body["operation"], body["channel_id"], body["token"]) == ("Appointments__s", "update", CHANNEL_ID, TOKEN)
    assert body["ids"] == [rec["id"]]
    assert body["resource_uri"] == f"{sandbox.url}/crm/v7/Appointments__s"
    assert body["query_params"] == {}
    assert isinstance(body["server_time"], int) and body["server_time"] > 1_600_000_000_000  # epoch milliseconds
    [fields] = body["affected_fields"]
    assert {"Appointment_Start_Time", "Appointment_End_Time"} <= set(fields[rec["id"]])
    assert "Status" not in fields[rec["id"]]
    assert len(delivered(sandbox, receiver)) == 1


def test_an_admin_edit_notifies_too(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    rec, = future_appointments(sandbox)

    r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{rec['id']}", json={"Status": "Cancelled"})
    got = receiver.wait_for(about(rec["id"]))["json"]

    assert r.status_code == 200, r.text
    assert (got["operation"], got["module"], got["token"]) == ("update", "Appointments__s", TOKEN)
    assert "Status" in got["affected_fields"][0][rec["id"]]
    after = sandbox.dump(module="Appointments__s", booking_id=rec["Booking_Id"])["Appointments__s"][0]
    assert after["Status"] == "Cancelled"


def test_one_write_of_several_records_notifies_all_their_ids(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    a, b = future_appointments(sandbox, 2)

    reschedule(api, a, b)

    [body] = delivered(sandbox, receiver)
    assert body["ids"] == [a["id"], b["id"]]
    assert [set(entry) for entry in body["affected_fields"]] == [{a["id"]}, {b["id"]}]


def test_only_watched_modules_notify(sandbox, api, receiver):
    subscribed(api, channel(receiver))  # Appointments__s only
    rec, = future_appointments(sandbox)
    event = sandbox.dump(module="Events", booking_id=rec["Booking_Id"])["Events"][0]

    r = api.put("/crm/v7/Events", json={"data": [{"id": event["id"], "Venue": "Customer Address"}]})
    reschedule(api, rec)  # delivered after the event edit would have been

    assert r.status_code == 200, r.text
    assert [(n["module"], n["ids"]) for n in delivered(sandbox, receiver)] == [("Appointments__s", [rec["id"]])]


def test_an_events_channel_hears_event_edits(sandbox, api, receiver):
    subscribed(api, channel(receiver, events=["Events.all"], notify_url=receiver.url + "/events"))
    event = sandbox.dump(module="Events")["Events"][0]

    r = api.put("/crm/v7/Events", json={"data": [{"id": event["id"], "Venue": "Customer Address"}]})

    assert r.status_code == 200, r.text
    got = receiver.wait_for(about(event["id"]))
    assert got["path"] == "/events"
    assert (got["json"]["module"], got["json"]["affected_fields"]) == ("Events", [{event["id"]: ["Venue"]}])
    assert got["json"]["resource_uri"] == f"{sandbox.url}/crm/v7/Events"


def test_a_channel_hears_only_the_operations_it_watches(sandbox, api, receiver):
    subscribed(
        api,
        channel(receiver, channel_id="1000000068001", events=["Appointments__s.create"], notify_url=receiver.url + "/create"),
        channel(receiver, channel_id="1000000068002", events=["Appointments__s.edit"], notify_url=receiver.url + "/edit"),
    )
    rec, = future_appointments(sandbox)

    reschedule(api, rec)

    sandbox.drain()
    assert [(item["path"], item["json"]["channel_id"]) for item in receiver.received] == [("/edit", "1000000068002")]


def test_a_failed_write_sends_no_notification(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    cancelled = cancelled_appointment(sandbox)
    rec, = future_appointments(sandbox)

    failed = api.put("/crm/v7/Appointments__s", json={"data": [{"id": cancelled["id"], "Status": "Scheduled"}]})
    bad_admin_edit = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{rec['id']}", json={"Status": "Done"})
    assert delivered(sandbox, receiver) == []
    reschedule(api, rec)  # the channel itself works

    assert (failed.status_code, bad_admin_edit.status_code) == (403, 400)
    assert [n["ids"] for n in delivered(sandbox, receiver)] == [[rec["id"]]]


def test_a_partly_failed_write_notifies_only_the_records_it_changed(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    cancelled = cancelled_appointment(sandbox)
    rec, = future_appointments(sandbox)
    new_start = (datetime.fromisoformat(rec["Appointment_Start_Time"]) + timedelta(hours=1)).isoformat()

    r = api.put(
        "/crm/v7/Appointments__s",
        json={"data": [{"id": cancelled["id"], "Status": "Scheduled"}, {"id": rec["id"], "Appointment_Start_Time": new_start}]},
    )

    assert r.status_code == 207, r.text
    assert [n["ids"] for n in delivered(sandbox, receiver)] == [[rec["id"]]]


def test_return_affected_field_values_adds_the_new_values(sandbox, api, receiver):
    subscribed(api, channel(receiver, return_affected_field_values=True))
    rec, = future_appointments(sandbox)

    reschedule(api, rec)
    body = receiver.wait_for(about(rec["id"]))["json"]

    after = sandbox.dump(module="Appointments__s", booking_id=rec["Booking_Id"])["Appointments__s"][0]
    [values] = body["affected_values"]
    assert values["record_id"] == rec["id"]
    assert set(values["values"]) == set(body["affected_fields"][0][rec["id"]])
    assert all(values["values"][name] == after[name] for name in values["values"])
    assert values["values"]["Appointment_Start_Time"] != rec["Appointment_Start_Time"]


def test_updating_a_channel_changes_its_token(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    rec, = future_appointments(sandbox)

    r = api.patch(WATCH, json={"watch": [{"channel_id": CHANNEL_ID, "token": "tok-456"}]})
    reschedule(api, rec)

    assert r.status_code == 200, r.text
    assert [n["token"] for n in delivered(sandbox, receiver)] == ["tok-456"]


def test_updating_an_unknown_channel_is_invalid_data(sandbox, api, receiver):
    r = api.patch(WATCH, json={"watch": [{"channel_id": "1000000060000", "token": "tok-456"}]})

    refused(r, "INVALID_DATA")
    assert api.get(WATCH).status_code == 204


def test_unsubscribing_stops_the_notifications(sandbox, api, receiver):
    subscribed(api, channel(receiver), channel(receiver, channel_id="1000000068002", notify_url=receiver.url + "/other"))
    rec, = future_appointments(sandbox)

    r = api.delete(WATCH, params={"channel_ids": CHANNEL_ID})
    reschedule(api, rec)

    assert r.status_code == 200, r.text
    assert [(e["code"], e["details"]["channel_id"]) for e in r.json()["watch"]] == [("SUCCESS", CHANNEL_ID)]
    assert [c["channel_id"] for c in api.get(WATCH).json()["watch"]] == ["1000000068002"]
    sandbox.drain()
    assert [item["path"] for item in receiver.received] == ["/other"]


def test_unsubscribing_everything_leaves_nothing_to_notify(sandbox, api, receiver):
    subscribed(api, channel(receiver))
    rec, = future_appointments(sandbox)

    r = api.delete(WATCH, params={"channel_ids": CHANNEL_ID})
    reschedule(api, rec)

    assert r.status_code == 200, r.text
    assert api.get(WATCH).status_code == 204
    assert delivered(sandbox, receiver) == []


def test_unsubscribing_needs_channel_ids(sandbox, api, receiver):
    subscribed(api, channel(receiver))

    missing = api.delete(WATCH)
    unknown = api.delete(WATCH, params={"channel_ids": "1000000060000"})

    assert (missing.status_code, missing.json()["code"]) == (400, "REQUIRED_PARAM_MISSING")
    assert unknown.json()["watch"][0]["code"] == "INVALID_DATA"
    assert [c["channel_id"] for c in api.get(WATCH).json()["watch"]] == [CHANNEL_ID]


def test_notifications_to_other_hosts_are_refused_not_sent(sandbox, api, receiver):
    channels = [channel(receiver, channel_id=str(1000000068001 + i), notify_url=url) for i, url in enumerate(REMOTE_URLS)]
    subscribed(api, *channels)  # Zoho accepts any https URL; the sandbox refuses at send time
    rec, = future_appointments(sandbox)

    reschedule(api, rec)
    sandbox.drain()

    log = sandbox.http.get("/__sandbox/outbox").json()
    outbound = sandbox.stats()["outbound"]
    assert log["pending"] == 0
    assert sorted(entry["url"] for entry in log["sent"]) == sorted(REMOTE_URLS)
    assert all(str(entry["status"]).startswith("refused") and "payload" not in entry for entry in log["sent"])
    assert outbound == {"notification_refused": len(REMOTE_URLS)}
    assert receiver.received == []
