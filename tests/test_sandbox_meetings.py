"""CRM Meetings (``Events``) as the sandbox serves them for a Meetings <-> Bookings sync (issue 15).

* ``Booking_Status``: a custom pick list (``Scheduled``, ``Cancelled``, ``Completed``,
  ``No Show``) an organisation adds to Meetings to carry the booking's status. The
  sandbox assumes it: field metadata, ``fields=``, ``PUT`` (checked against the pick
  list), Bulk Read columns and criteria, and a seed that mirrors each booking's status.
* Zoho's Delete Records API, ``DELETE /crm/{version}/Events?ids=...`` (crm-oas v8.0
  ``record.json``): per-record results, ``LIMIT_EXCEEDED`` past 100 ids,
  ``REQUIRED_PARAM_MISSING`` without ids; the record is gone everywhere and channels
  watching ``Events.all``/``Events.delete`` get ``operation: "delete"``.
* The admin's "UI" edits of a meeting: a calendar drag (``PATCH /__sandbox/crm/Events/{id}``
  with new start and end) and a delete (``DELETE /__sandbox/crm/{module}/{id}``).
"""

from __future__ import annotations

import csv
import io
import ssl
import time
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

UTC = timezone.utc
EVENTS = "Events"
LIST_URL = "/crm/v7/Events"
WATCH = "/crm/v7/actions/watch"
CHANNEL_ID = "1000000068015"
STATUSES = ["Scheduled", "Cancelled", "Completed", "No Show"]
#: Booking status (as the Bookings API shows it) -> the meeting's ``Booking_Status`` at seed time.
MEETING_STATUS_OF = {
    "UPCOMING": "Scheduled", "ONGOING": "Scheduled", "PENDING": "Scheduled", "PENDING_PAYMENT": "Scheduled",
    "CANCEL": "Cancelled", "PAYMENT_FAILURE": "Cancelled", "COMPLETED": "Completed", "NO_SHOW": "No Show",
}  # fmt: skip
UI_USER_ID = "5545974000000393017"
TLS = ssl.create_default_context()


# ------------------------------------------------------------------ helpers
@pytest.fixture
def api(sandbox, receiver):
    """A CRM client for the test; the receiver starts empty (late deliveries drained first)."""
    sandbox.drain()
    receiver.received.clear()
    with httpx.Client(base_url=sandbox.url, headers=sandbox.headers(), timeout=30, verify=TLS) as client:
        yield client


def meetings(sandbox) -> list[dict[str, Any]]:
    """Every ``Events`` record as the admin dump shows it."""
    return sandbox.dump(module=EVENTS)[EVENTS]


def future_meetings(sandbox, n: int = 1) -> list[dict[str, Any]]:
    """``n`` scheduled meetings starting more than a day from now."""
    soon = datetime.now(UTC) + timedelta(days=1)
    found = [e for e in meetings(sandbox) if e["Booking_Status"] == "Scheduled" and instant(e["Start_DateTime"]) > soon]
    assert len(found) >= n
    return found[:n]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def get_meeting(api: httpx.Client, rid: str, fields: str = "Event_Title,Start_DateTime,End_DateTime,Booking_Status") -> httpx.Response:
    return api.get(f"{LIST_URL}/{rid}", params={"fields": fields})


def assert_error(r: httpx.Response, status_code: int, code: str) -> dict[str, Any]:
    assert r.status_code == status_code, r.text
    body = r.json()
    assert (body["status"], body["code"]) == ("error", code), body
    return body


def watch(api: httpx.Client, receiver, events: list[str]) -> None:
    expiry = (datetime.now(UTC) + timedelta(days=6)).replace(microsecond=0).isoformat()
    entry = {"channel_id": CHANNEL_ID, "events": events, "channel_expiry": expiry, "token": "tok-15", "notify_url": receiver.url + "/crm"}
    r = api.post(WATCH, json={"watch": [entry]})
    assert r.status_code == 200, r.text


def notifications(sandbox, receiver, operation: str) -> list[dict[str, Any]]:
    """Notification bodies of ``operation`` the receiver got, once the outbox is empty."""
    sandbox.drain()
    return [i["json"] for i in receiver.received if (i["json"] or {}).get("operation") == operation]


def delete(api: httpx.Client, ids: list[str], **params: str) -> httpx.Response:
    return api.delete(LIST_URL, params={"ids": ",".join(ids), **params})


def bulk_csv(api: httpx.Client, query: dict[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """Run a Bulk Read job for ``query`` and return its CSV ``(header, rows)``."""
    r = api.post("/crm/bulk/v7/read", json={"query": query})
    assert r.status_code == 201, r.text
    job_id = r.json()["data"][0]["details"]["id"]
    deadline = time.monotonic() + 10
    while True:
        job = api.get(f"/crm/bulk/v7/read/{job_id}").json()["data"][0]
        if job["state"] in ("COMPLETED", "FAILURE"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "COMPLETED", job
    r = api.get(job["result"]["download_url"])
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        text = zf.read(f"{job_id}.csv").decode("utf-8")
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    return header, [dict(zip(header, row, strict=True)) for row in rows]


# ------------------------------------------------------------ Booking_Status
def test_field_metadata_has_the_booking_status_pick_list(api):
    r = api.get("/crm/v7/settings/fields", params={"module": EVENTS})

    assert r.status_code == 200, r.text
    fields = {f["api_name"]: f for f in r.json()["fields"]}
    status = fields["Booking_Status"]
    assert (status["data_type"], status["field_label"], status["custom_field"], status["read_only"]) == (
        "picklist", "Booking Status", True, False,
    )
    assert [v["actual_value"] for v in status["pick_list_values"]] == STATUSES
    assert [v["display_value"] for v in status["pick_list_values"]] == STATUSES
    assert len({f["id"] for f in fields.values()}) == len(fields)


def test_seeded_meetings_mirror_their_bookings(sandbox):
    dump = sandbox.dump()
    bookings = {b["booking_id"]: b for b in dump["bookings"]}

    assert len(dump[EVENTS]) == len(bookings) == 300
    seen = set()
    for event in dump[EVENTS]:
        booking = bookings[event["Booking_Id"]]
        assert event["Booking_Status"] == MEETING_STATUS_OF[booking["status"]], (event["id"], booking["status"])
        zone = ZoneInfo(booking["time_zone"])
        start = datetime.strptime(booking["start_time"], "%d-%b-%Y %H:%M:%S").replace(tzinfo=zone)
        end = datetime.strptime(booking["end_time"], "%d-%b-%Y %H:%M:%S").replace(tzinfo=zone)
        assert (instant(event["Start_DateTime"]), instant(event["End_DateTime"])) == (start, end)
        seen.add(event["Booking_Status"])
    assert {"Scheduled", "Cancelled", "Completed"} <= seen


def test_the_seed_is_deterministic(sandbox):
    before = meetings(sandbox)
    sandbox.http.post("/__sandbox/reset", json={}).raise_for_status()
    after = meetings(sandbox)

    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("Created_Time", "Modified_Time")} for r in recs]  # noqa: E731
    assert strip(after) == strip(before)


def test_put_sets_booking_status_title_and_times(sandbox, api):
    event = future_meetings(sandbox)[0]
    start = instant(event["Start_DateTime"]) + timedelta(hours=3)
    end = start + timedelta(minutes=45)
    body = {"data": [{"id": event["id"], "Event_Title": "Moved", "Start_DateTime": start.astimezone(timezone(timedelta(hours=-5))).isoformat(),
                      "End_DateTime": end.astimezone(UTC).isoformat().replace("+00:00", "Z"), "Booking_Status": "No Show"}]}

    r = api.put(LIST_URL, json=body)

    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["code"] == "SUCCESS"
    shown = get_meeting(api, event["id"]).json()["data"][0]
    assert shown["Event_Title"] == "Moved" and shown["Booking_Status"] == "No Show"
    assert (instant(shown["Start_DateTime"]), instant(shown["End_DateTime"])) == (start, end)
    assert shown["Start_DateTime"].endswith("+05:30")  # stored in the org's time zone
    listed = api.get(LIST_URL, params={"fields": "Booking_Status", "ids": event["id"]}).json()["data"]
    assert listed == [{"id": event["id"], "Booking_Status": "No Show"}]


@pytest.mark.parametrize("value", ["Overdue", "cancelled", "", 3, ["Cancelled"]])
def test_a_booking_status_outside_the_pick_list_is_invalid_data(sandbox, api, value):
    event = meetings(sandbox)[0]

    r = api.put(LIST_URL, json={"data": [{"id": event["id"], "Booking_Status": value}]})

    assert r.status_code == 400, r.text
    entry = r.json()["data"][0]
    assert (entry["status"], entry["code"]) == ("error", "INVALID_DATA"), entry
    assert entry["details"]["api_name"] == "Booking_Status"
    assert entry["details"]["json_path"] == "$.data[0].Booking_Status"
    assert meetings(sandbox)[0] == event


def test_bulk_read_exports_and_filters_booking_status(sandbox, api):
    by_id = {e["id"]: e for e in meetings(sandbox)}

    header, rows = bulk_csv(api, {"module": {"api_name": EVENTS}, "fields": ["Booking_Id", "Booking_Status"]})

    assert header == ["Id", "Booking_Id", "Booking_Status"]
    assert {row["Id"]: row["Booking_Status"] for row in rows} == {i: e["Booking_Status"] for i, e in by_id.items()}
    criteria = {"field": {"api_name": "Booking_Status"}, "comparator": "in", "value": ["Cancelled", "No Show"]}
    _, picked = bulk_csv(api, {"module": {"api_name": EVENTS}, "fields": ["Booking_Status"], "criteria": criteria})
    assert picked and {row["Id"] for row in picked} == {i for i, e in by_id.items() if e["Booking_Status"] in ("Cancelled", "No Show")}
    bad = {"field": {"api_name": "Booking_Status"}, "comparator": "starts_with", "value": "Can"}
    r = api.post("/crm/bulk/v7/read", json={"query": {"module": {"api_name": EVENTS}, "criteria": bad}})
    assert_error(r, 400, "INVALID_CRITERIA")


# ------------------------------------------------------------ admin "UI" edits
def test_a_calendar_drag_moves_the_meeting_and_notifies(sandbox, api, receiver):
    watch(api, receiver, ["Events.edit"])
    event = future_meetings(sandbox)[0]
    clock = sandbox.http.put("/__sandbox/clock", json={"advance_seconds": 7200}).json()
    start = instant(event["Start_DateTime"]) + timedelta(days=1, minutes=30)
    end = start + timedelta(hours=1)
    body = {"Start_DateTime": start.astimezone(timezone(timedelta(hours=-7))).isoformat(), "End_DateTime": end.astimezone(timezone(timedelta(hours=10))).isoformat()}

    r = sandbox.http.patch(f"/__sandbox/crm/Events/{event['id']}", json=body)

    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["code"] == "SUCCESS"
    after = next(e for e in meetings(sandbox) if e["id"] == event["id"])
    assert (instant(after["Start_DateTime"]), instant(after["End_DateTime"])) == (start, end)
    assert after["Modified_By"]["id"] == UI_USER_ID
    moved_at = instant(after["Modified_Time"])
    assert abs((moved_at - instant(clock["now"])).total_seconds()) < 30  # the sandbox's clock, two hours ahead
    assert moved_at > datetime.now(UTC) + timedelta(hours=1)
    assert after["Booking_Status"] == event["Booking_Status"]
    sent = notifications(sandbox, receiver, "update")
    assert [(n["module"], n["ids"], n["affected_fields"]) for n in sent] == [
        (EVENTS, [event["id"]], [{event["id"]: ["End_DateTime", "Start_DateTime"]}])
    ]


def test_a_ui_edit_sets_booking_status(sandbox, api, receiver):
    watch(api, receiver, ["Events.all"])
    event = future_meetings(sandbox)[0]

    r = sandbox.http.patch(f"/__sandbox/crm/Events/{event['id']}", json={"Booking_Status": "Cancelled"})

    assert r.status_code == 200, r.text
    assert get_meeting(api, event["id"]).json()["data"][0]["Booking_Status"] == "Cancelled"
    sent = notifications(sandbox, receiver, "update")
    assert [n["affected_fields"] for n in sent] == [[{event["id"]: ["Booking_Status"]}]]
    bad = sandbox.http.patch(f"/__sandbox/crm/Events/{event['id']}", json={"Booking_Status": "Gone"})
    assert bad.status_code == 400 and bad.json()["data"][0]["code"] == "INVALID_DATA"


def test_a_ui_delete_removes_the_record_and_notifies(sandbox, api, receiver):
    watch(api, receiver, ["Events.delete"])
    event = meetings(sandbox)[0]

    r = sandbox.http.delete(f"/__sandbox/crm/Events/{event['id']}")

    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"code": "SUCCESS", "details": {"id": event["id"]}, "message": "record deleted", "status": "success"}]
    assert event["id"] not in {e["id"] for e in meetings(sandbox)}
    assert_error(get_meeting(api, event["id"]), 400, "INVALID_DATA")
    sent = notifications(sandbox, receiver, "delete")
    assert [(n["module"], n["ids"], n["channel_id"]) for n in sent] == [(EVENTS, [event["id"]], CHANNEL_ID)]
    again = sandbox.http.delete(f"/__sandbox/crm/Events/{event['id']}")
    assert again.status_code == 404, again.text
    assert event["id"] in again.json()["message"]
    assert sandbox.http.delete("/__sandbox/crm/Foo/1").status_code == 400


# ------------------------------------------------------------ Delete Records API
def test_delete_records_answers_per_record_and_the_records_are_gone(sandbox, api, receiver):
    watch(api, receiver, ["Events.all"])
    first, second = (e["id"] for e in meetings(sandbox)[:2])
    unknown = "5545974000009999999"
    calls_before = sandbox.stats()["calls"].get("DELETE /crm/{version}/{module}", 0)

    r = delete(api, [first, unknown, second], wf_trigger="false")

    assert r.status_code == 200, r.text
    assert r.json()["data"] == [
        {"code": "SUCCESS", "details": {"id": first}, "message": "record deleted", "status": "success"},
        {"code": "INVALID_DATA", "details": {"id": unknown}, "message": "the related id given seems to be invalid", "status": "error"},
        {"code": "SUCCESS", "details": {"id": second}, "message": "record deleted", "status": "success"},
    ]
    for rid in (first, second):
        assert_error(get_meeting(api, rid), 400, "INVALID_DATA")
    assert api.get(LIST_URL, params={"fields": "Booking_Id", "ids": f"{first},{second}"}).status_code == 204
    assert len(meetings(sandbox)) == 298
    assert {first, second}.isdisjoint(e["id"] for e in meetings(sandbox))
    _, rows = bulk_csv(api, {"module": {"api_name": EVENTS}, "fields": ["Booking_Id"]})
    assert len(rows) == 298 and {first, second}.isdisjoint(row["Id"] for row in rows)
    sent = notifications(sandbox, receiver, "delete")
    assert [(n["module"], n["ids"], n["operation"], n["token"]) for n in sent] == [(EVENTS, [first, second], "delete", "tok-15")]
    stats = sandbox.stats()
    assert stats["calls"]["DELETE /crm/{version}/{module}"] == calls_before + 1
    assert stats["writes_by_record"][f"Events:{first}"] == 1
    again = delete(api, [first])
    assert again.status_code == 200 and again.json()["data"][0]["code"] == "INVALID_DATA"


def test_delete_one_record_by_url(sandbox, api):
    event = meetings(sandbox)[0]

    r = api.delete(f"{LIST_URL}/{event['id']}")

    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["details"] == {"id": event["id"]}
    assert_error(get_meeting(api, event["id"]), 400, "INVALID_DATA")


def test_delete_limits_and_missing_ids(sandbox, api):
    ids = [e["id"] for e in meetings(sandbox)[:101]]

    assert_error(delete(api, ids), 400, "LIMIT_EXCEEDED")
    assert_error(api.delete(LIST_URL), 400, "REQUIRED_PARAM_MISSING")
    assert_error(delete(api, []), 400, "REQUIRED_PARAM_MISSING")
    assert len(meetings(sandbox)) == 300
    r = delete(api, ids[:100])
    assert r.status_code == 200 and [e["code"] for e in r.json()["data"]] == ["SUCCESS"] * 100


def test_delete_needs_a_delete_scope(sandbox):
    event = meetings(sandbox)[0]

    def token(scope: list[str], permission: str = "full") -> str:
        creds = sandbox.http.post("/__sandbox/credentials", json={"scope": scope, "permission": permission}).json()
        body = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"]).json()
        return body["access_token"]

    read_update = token(["ZohoCRM.modules.Events.READ", "ZohoCRM.modules.Events.UPDATE"])
    r = httpx.delete(f"{sandbox.url}{LIST_URL}", params={"ids": event["id"]}, headers=sandbox.headers(read_update), verify=TLS)
    assert assert_error(r, 401, "OAUTH_SCOPE_MISMATCH")["details"]["required_scope"] == "ZohoCRM.modules.Events.DELETE"
    read_only = token(["ZohoCRM.modules.ALL"], "read_only")
    assert_error(httpx.delete(f"{sandbox.url}{LIST_URL}", params={"ids": event["id"]}, headers=sandbox.headers(read_only), verify=TLS), 403, "NO_PERMISSION")
    assert len(meetings(sandbox)) == 300
    for scope in (["ZohoCRM.modules.Events.DELETE"], ["ZohoCRM.modules.Events.ALL"]):
        r = httpx.delete(f"{sandbox.url}{LIST_URL}/{event['id']}", headers=sandbox.headers(token(scope)), verify=TLS)
        assert r.status_code == 200, r.text
    assert len(meetings(sandbox)) == 299


def test_other_methods_still_answer_invalid_request_method(sandbox, api):
    event = meetings(sandbox)[0]
    appointment = sandbox.dump(module="Appointments__s")["Appointments__s"][0]

    for method, url in [("POST", LIST_URL), ("PATCH", LIST_URL), ("PATCH", f"{LIST_URL}/{event['id']}"),
                        ("DELETE", "/crm/v7/Appointments__s"), ("DELETE", f"/crm/v7/Appointments__s/{appointment['id']}")]:
        assert_error(api.request(method, url, params={"ids": appointment["id"]}), 400, "INVALID_REQUEST_METHOD")
    assert_error(api.delete("/crm/v7/Foo", params={"ids": "1"}), 400, "INVALID_MODULE")
    assert len(sandbox.dump()["Appointments__s"]) == 300 and len(meetings(sandbox)) == 300
