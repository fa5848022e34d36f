"""CRM records as the sandbox serves them, driven over HTTP.

Covers "Update Appointments" (seeds 002 and 004: every row of its error table, the
100-record limit, per-record results and 207), the effects of a reschedule and a
cancellation, reading ``Appointments__s`` (``fields``, paging, ``page_token``,
``If-Modified-Since``), ``Events`` updates, and field metadata
(``shared/zoho-api-notes.md``, section "CRM Appointments__s").

Each test gets a freshly re-seeded sandbox (300 appointments spread -30..+30 days
around today), so tests pick records by kind from ``/__sandbox/dump`` and check
the state afterwards there.
"""

from __future__ import annotations

import base64
import json
import ssl
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest

UTC = timezone.utc
APPOINTMENTS = "Appointments__s"
LIST_URL = "/crm/v7/Appointments__s"
VERSIONS = ["v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"]
MARGIN = timedelta(days=1)
#: One TLS context shared by the clients this module opens: httpx builds a new one
#: per client by default (about 0.1 s each, once per test). The sandbox is plain HTTP.
TLS = ssl.create_default_context()


# ------------------------------------------------------------------ helpers
def instant(value: str) -> datetime:
    """An ISO 8601 date-time with offset as an aware datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def iso(moment: datetime, offset_hours: float = 0) -> str:
    """``moment`` as ISO 8601 in a fixed offset (to write one instant several ways)."""
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def _is_future(rec: dict) -> bool:
    return rec["Status"] == "Scheduled" and instant(rec["Appointment_Start_Time"]) > datetime.now(UTC) + MARGIN


def _is_ended(rec: dict) -> bool:
    return rec["Status"] == "Overdue" and instant(rec["Appointment_End_Time"]) < datetime.now(UTC) - MARGIN


#: Kinds of appointment a test can ask for. ``future``: scheduled, starting more
#: than a day from now; ``ended``: overdue (never marked) and over for more than a day.
KINDS: dict[str, Callable[[dict], bool]] = {
    "future": _is_future,
    "ended": _is_ended,
    "completed": lambda r: r["Status"] == "Completed",
    "cancelled": lambda r: r["Status"] == "Cancelled",
}


def records(sandbox, module: str = APPOINTMENTS) -> list[dict]:
    """Every record of ``module`` as the admin dump shows it."""
    return sandbox.dump(module=module)[module]


def find(sandbox, kind: str, n: int = 1) -> list[dict]:
    """``n`` appointments of ``kind`` (see :data:`KINDS`)."""
    found = [r for r in records(sandbox) if KINDS[kind](r)]
    assert len(found) >= n, f"the seed holds only {len(found)} {kind} appointments"
    return found[:n]


def one(sandbox, kind: str) -> dict:
    """One appointment of ``kind``."""
    return find(sandbox, kind)[0]


def now_of(sandbox, rec: dict, module: str = APPOINTMENTS) -> dict:
    """``rec`` as it is now (looked up by its unique ``Booking_Id``)."""
    rows = sandbox.dump(module=module, booking_id=rec["Booking_Id"])[module]
    assert len(rows) == 1, rows
    return rows[0]


def put(client: httpx.Client, *items: dict, version: str = "v7", module: str = APPOINTMENTS) -> httpx.Response:
    """``PUT /crm/{version}/{module}`` with ``{"data": items}``."""
    return client.put(f"/crm/{version}/{module}", json={"data": list(items)})


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """A top-level CRM error ``{"code", "details", "message", "status": "error"}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert (body.get("status"), body.get("code")) == ("error", code), body
    return body


def assert_record_error(response: httpx.Response, status: int, code: str, index: int = 0) -> dict:
    """The per-record result ``data[index]`` is an error ``code``; the answer is HTTP ``status``."""
    assert response.status_code == status, response.text
    entry = response.json()["data"][index]
    assert (entry["status"], entry["code"]) == ("error", code), entry
    return entry


def assert_success(response: httpx.Response, *ids: str) -> None:
    """HTTP 200 with one ``SUCCESS`` per id, in order."""
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [(d["status"], d["code"], d["details"]["id"]) for d in data] == [("success", "SUCCESS", i) for i in ids]


def crm_client(sandbox, token: str | None = None) -> httpx.Client:
    """A client on the sandbox sending ``token`` (default: a fresh one)."""
    return httpx.Client(base_url=sandbox.url, headers=sandbox.headers(token), timeout=30, verify=TLS)


def new_client(sandbox, **body: Any) -> httpx.Client:
    """A client whose token comes from a new self client (``POST /__sandbox/credentials``)."""
    creds = sandbox.http.post("/__sandbox/credentials", json=body).json()
    minted = sandbox.mint(client_id=creds["client_id"], client_secret=creds["client_secret"], refresh_token=creds["refresh_token"])
    return crm_client(sandbox, minted.json()["access_token"])


def walk(client: httpx.Client, per_page: int) -> list[str]:
    """Every id of ``Appointments__s``, following ``next_page_token`` to the end."""
    ids: list[str] = []
    params: dict[str, Any] = {"fields": "Status", "per_page": per_page}
    while True:
        r = client.get(LIST_URL, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [rec["id"] for rec in body["data"]]
        if not body["info"]["more_records"]:
            return ids
        params["page_token"] = body["info"]["next_page_token"]


def each(cases: list, check: Callable[[Any], None]) -> None:
    """Run ``check`` on every case and report every failing case, not just the first.

    For cases that leave the sandbox as it was: one re-seed serves them all.
    """
    failures = []
    for case in cases:
        try:
            check(case)
        except AssertionError as exc:
            failures.append(f"{case!r}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def api(sandbox):
    """One authorised client for the test (tokens are rate-limited per refresh token)."""
    with crm_client(sandbox) as client:
        yield client


# ======================================================= Update Appointments: errors
def test_reschedule_keys_without_a_start_time_are_dependent_field_missing(sandbox, api):
    rec = one(sandbox, "future")
    assert rec["Reschedule_Count"] == 0

    def check(changes: dict) -> None:
        assert_record_error(put(api, {"id": rec["id"], **changes}), 400, "DEPENDENT_FIELD_MISSING")

    each([{"Reschedule_Reason": "By Team"}, {"Reschedule_Note": "Member is unavailable"}], check)
    assert now_of(sandbox, rec) == rec


def test_reschedule_keys_alone_are_accepted_once_rescheduled(sandbox, api):
    rec = one(sandbox, "future")
    new_start = instant(rec["Appointment_Start_Time"]) + timedelta(hours=2)
    assert_success(put(api, {"id": rec["id"], "Appointment_Start_Time": iso(new_start)}), rec["id"])

    r = put(api, {"id": rec["id"], "Reschedule_Reason": "By Team", "Reschedule_Note": "Member is unavailable"})

    assert_success(r, rec["id"])
    after = now_of(sandbox, rec)
    assert (after["Reschedule_Reason"], after["Reschedule_Note"]) == ("By Team", "Member is unavailable")
    assert after["Reschedule_Count"] == 1
    assert instant(after["Appointment_Start_Time"]) == new_start


def test_cancellation_keys_without_a_status_are_dependent_field_missing(sandbox, api):
    rec = one(sandbox, "future")

    def check(changes: dict) -> None:
        assert_record_error(put(api, {"id": rec["id"], **changes}), 400, "DEPENDENT_FIELD_MISSING")

    each([{"Cancellation_Reason": "By Team"}, {"Cancellation_Note": "Customer unavailable"}], check)
    assert now_of(sandbox, rec) == rec


def test_reschedule_to_the_same_instant_is_dependent_field_unchanged(sandbox, api):
    rec = one(sandbox, "future")
    start = rec["Appointment_Start_Time"]
    same_instant = [start] + [iso(instant(start), hours) for hours in (0, -5, 9.5)] + [iso(instant(start)).replace("+00:00", "Z")]

    def check(value: str) -> None:
        assert_record_error(put(api, {"id": rec["id"], "Appointment_Start_Time": value}), 400, "DEPENDENT_FIELD_UNCHANGED")

    each(same_instant, check)
    assert now_of(sandbox, rec) == rec


def test_cancellation_keys_with_another_status_are_dependent_mismatch(sandbox, api):
    rec = one(sandbox, "ended")  # Completed/Overdue would be allowed here without the cancellation keys

    def check(status: str) -> None:
        r = put(api, {"id": rec["id"], "Status": status, "Cancellation_Reason": "By Customer", "Cancellation_Note": "x"})
        assert_record_error(r, 400, "DEPENDENT_MISMATCH")

    each(["Scheduled", "Completed", "Overdue"], check)
    assert now_of(sandbox, rec) == rec


def test_completed_or_overdue_before_the_end_is_dependent_mismatch(sandbox, api):
    rec = one(sandbox, "future")

    def check(status: str) -> None:
        assert_record_error(put(api, {"id": rec["id"], "Status": status}), 400, "DEPENDENT_MISMATCH")

    each(["Completed", "Overdue"], check)
    assert now_of(sandbox, rec) == rec


def test_completed_after_the_end_is_accepted(sandbox, api):
    rec = one(sandbox, "ended")

    r = put(api, {"id": rec["id"], "Status": "Completed", "Job_Sheet_Name": "Delivered", "Job_Sheet_Description__s": "On time"})

    assert_success(r, rec["id"])
    after = now_of(sandbox, rec)
    assert (after["Status"], after["Job_Sheet_Name"], after["Job_Sheet_Description__s"]) == ("Completed", "Delivered", "On time")


#: ``(changes, api_name in the error details)`` that "Update Appointments" answers with INVALID_DATA.
INVALID_VALUES = [
    ({"id": "5545974000009999999"}, "id"),
    ({"id": "not-a-number"}, "id"),
    ({"Status": "Done"}, "Status"),
    ({"Status": "scheduled"}, "Status"),
    ({"Appointment_Start_Time": "2030-01-05T10:00:00"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "05-Jan-2030 10:00:00"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "2030-01-05"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "2030-13-05T10:00:00+05:30"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": 1893830400}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "9999-12-31T23:59:59+00:00"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "0001-01-01T00:00:00+05:00"}, "Appointment_Start_Time"),
    ({"Appointment_Start_Time": "2031-01-05T10:00:00+00:00", "Reschedule_Reason": "By Nobody"}, "Reschedule_Reason"),
    ({"Status": "Cancelled", "Cancellation_Reason": "By Nobody"}, "Cancellation_Reason"),
    ({"Service_Name": {"id": "4500000000100", "name": "Initial consultation"}}, "Service_Name"),
    ({"Location": "The Moon"}, "Location"),
    ({"Appointment_Name": {"name": "not text"}}, "Appointment_Name"),
    ({"Duration": 0}, "Duration"),
    ({"Duration": "30"}, "Duration"),
    ({"Duration": 10**12}, "Duration"),
]


def test_invalid_values_are_invalid_data(sandbox, api):
    rec = one(sandbox, "future")

    def check(case: tuple[dict, str]) -> None:
        changes, api_name = case
        entry = assert_record_error(put(api, {"id": rec["id"], **changes}), 400, "INVALID_DATA")
        assert entry["details"]["api_name"] == api_name

    each(INVALID_VALUES, check)
    assert now_of(sandbox, rec) == rec


def test_an_unknown_module_is_invalid_module(sandbox, api):
    rec = one(sandbox, "future")

    def check(module: str) -> None:
        assert_error(put(api, {"id": rec["id"], "Status": "Cancelled"}, module=module), 400, "INVALID_MODULE")

    each(["Foo", "appointments__s", "Appointments"], check)
    assert now_of(sandbox, rec) == rec


def test_other_methods_are_invalid_request_method(sandbox, api):
    rec = one(sandbox, "future")
    body = {"data": [{"id": rec["id"], "Status": "Cancelled"}]}

    def check(case: tuple[str, str]) -> None:
        method, url = case
        assert_error(api.request(method, url, json=body), 400, "INVALID_REQUEST_METHOD")

    each([(m, u) for m in ("DELETE", "PATCH", "POST") for u in (LIST_URL, f"{LIST_URL}/{rec['id']}")], check)
    assert now_of(sandbox, rec) == rec


def test_a_record_without_id_is_mandatory_not_found(sandbox, api):
    rec = one(sandbox, "future")

    r = put(api, {"Status": "Cancelled"})

    entry = assert_record_error(r, 400, "MANDATORY_NOT_FOUND")
    assert entry["details"]["api_name"] == "id"
    assert now_of(sandbox, rec) == rec


def test_a_body_without_data_is_mandatory_not_found(sandbox, api):
    def check(body: dict) -> None:
        assert assert_error(api.put(LIST_URL, json=body), 400, "MANDATORY_NOT_FOUND")["details"]["api_name"] == "data"

    each([{}, {"records": [{"id": "5545974000002000001"}]}], check)


def test_a_missing_or_dead_token_is_invalid_token(sandbox):
    rec = one(sandbox, "future")
    token = sandbox.token()
    body = {"data": [{"id": rec["id"], "Status": "Cancelled"}]}

    def check(headers: dict) -> None:
        assert_error(sandbox.http.put(LIST_URL, json=body, headers=headers), 401, "INVALID_TOKEN")

    each(
        [{}, {"Authorization": "Zoho-oauthtoken 1000.deadbeef.deadbeef"}, {"Authorization": f"Basic {token}"}, {"Authorization": "Zoho-oauthtoken"}],
        check,
    )
    sandbox.http.post("/__sandbox/tokens/expire").raise_for_status()
    check({"Authorization": f"Zoho-oauthtoken {token}"})
    assert now_of(sandbox, rec) == rec


def test_a_read_only_scope_is_oauth_scope_mismatch(sandbox):
    rec = one(sandbox, "future")
    with new_client(sandbox, scope=["ZohoCRM.modules.appointments.READ"]) as reader:
        assert reader.get(f"{LIST_URL}/{rec['id']}").status_code == 200  # the token itself works

        r = put(reader, {"id": rec["id"], "Status": "Cancelled"})

    assert_error(r, 401, "OAUTH_SCOPE_MISMATCH")
    assert now_of(sandbox, rec) == rec


@pytest.mark.parametrize("scope", ["ZohoCRM.modules.appointments.UPDATE", "ZohoCRM.modules.appointments.ALL"])
def test_the_documented_update_scopes_are_enough(sandbox, scope):
    rec = one(sandbox, "future")
    with new_client(sandbox, scope=[scope]) as writer:
        r = put(writer, {"id": rec["id"], "Status": "Cancelled"})

    assert_success(r, rec["id"])
    assert now_of(sandbox, rec)["Status"] == "Cancelled"


def test_a_read_only_user_gets_no_permission(sandbox):
    rec = one(sandbox, "future")
    with new_client(sandbox, permission="read_only") as reader:
        assert reader.get(f"{LIST_URL}/{rec['id']}").status_code == 200

        r = put(reader, {"id": rec["id"], "Status": "Cancelled"})

    assert_error(r, 403, "NO_PERMISSION")
    assert now_of(sandbox, rec) == rec


def test_finished_appointments_are_not_allowed_to_change(sandbox, api):
    completed, cancelled = one(sandbox, "completed"), one(sandbox, "cancelled")
    reschedule = {"Appointment_Start_Time": "2031-02-03T10:00:00+05:30"}
    cases = [
        (completed, reschedule),
        (cancelled, reschedule),
        *((cancelled, {"Status": s}) for s in ("Scheduled", "Completed", "Overdue")),
        *((completed, {"Status": s}) for s in ("Scheduled", "Cancelled", "Overdue")),
    ]

    def check(case: tuple[dict, dict]) -> None:
        rec, changes = case
        assert_record_error(put(api, {"id": rec["id"], **changes}), 403, "NOT_ALLOWED")

    each(cases, check)
    assert (now_of(sandbox, completed), now_of(sandbox, cancelled)) == (completed, cancelled)


def test_completed_is_not_allowed_when_the_org_does_not_ask_to_mark_completion(sandbox, api):
    rec = one(sandbox, "future")  # with the preference on, this answers DEPENDENT_MISMATCH
    sandbox.config(ask_to_mark_completed=False)

    r = put(api, {"id": rec["id"], "Status": "Completed"})

    assert_record_error(r, 403, "NOT_ALLOWED")
    assert now_of(sandbox, rec) == rec


def test_ended_appointments_are_completed_automatically_when_the_org_does_not_ask(sandbox, api):
    rec = one(sandbox, "ended")
    sandbox.config(ask_to_mark_completed=False)

    shown = api.get(f"{LIST_URL}/{rec['id']}").json()["data"][0]
    r = put(api, {"id": rec["id"], "Appointment_Start_Time": "2031-02-03T10:00:00+05:30"})

    assert shown["Status"] == "Completed"
    assert_record_error(r, 403, "NOT_ALLOWED")
    sandbox.config(ask_to_mark_completed=True)
    assert api.get(f"{LIST_URL}/{rec['id']}").json()["data"][0]["Status"] == "Overdue"


def test_unknown_paths_are_invalid_url_pattern(sandbox, api):
    rec = one(sandbox, "future")
    body = {"data": [{"id": rec["id"], "Status": "Cancelled"}]}
    cases = [
        ("PUT", f"{LIST_URL}/{rec['id']}/extra/x"),
        ("GET", f"{LIST_URL}/{rec['id']}/extra/x"),
        ("PUT", "/crm/v9/Appointments__s"),
        ("GET", "/crm/v9/Appointments__s"),
        ("PUT", "/crm/v1/Appointments__s"),
        ("PUT", "/crm/v7.1/Appointments__s"),
        ("PUT", "/crm/Appointments__s"),
    ]

    def check(case: tuple[str, str]) -> None:
        assert_error(api.request(*case, json=body), 404, "INVALID_URL_PATTERN")

    each(cases, check)
    assert now_of(sandbox, rec) == rec


def test_an_injected_server_fault_is_internal_error(sandbox, api):
    rec = one(sandbox, "future")
    sandbox.faults(crm={"error_500": 1.0})

    r = put(api, {"id": rec["id"], "Status": "Cancelled"})

    assert_error(r, 500, "INTERNAL_ERROR")
    assert now_of(sandbox, rec) == rec
    sandbox.http.delete("/__sandbox/faults").raise_for_status()
    assert_success(put(api, {"id": rec["id"], "Status": "Cancelled"}), rec["id"])


def locations(sandbox) -> dict[str, str]:
    """``Location`` of every appointment, by id."""
    return {rec["id"]: rec["Location"] for rec in records(sandbox)}


def test_more_than_100_records_are_limit_exceeded(sandbox, api):
    before = locations(sandbox)
    ids = [i for i, where in before.items() if where == "Business Address"][:101]

    r = put(api, *({"id": i, "Location": "Customer Address"} for i in ids))

    assert_error(r, 400, "LIMIT_EXCEEDED")
    assert locations(sandbox) == before


def test_100_records_are_accepted(sandbox, api):
    before = locations(sandbox)
    ids = [i for i, where in before.items() if where == "Business Address"][:100]

    r = put(api, *({"id": i, "Location": "Customer Address"} for i in ids))

    assert_success(r, *ids)
    after = locations(sandbox)
    assert {i for i in after if after[i] != before[i]} == set(ids)


def test_a_malformed_body_is_invalid_data_in_json(sandbox, api):
    def check(raw: bytes) -> None:
        r = api.put(LIST_URL, content=raw, headers={"Content-Type": "application/json"})
        body = assert_error(r, 400, "INVALID_DATA")
        assert "Traceback" not in r.text and "<html" not in r.text.lower()
        assert set(body) == {"code", "details", "message", "status"}

    each([b"{not json", b'{"data": [', b"", b"\xff\xfe\x00", b"data=1"], check)


def test_data_that_is_not_a_list_of_records_is_invalid_data(sandbox, api):
    def check(data: Any) -> None:
        assert_error(api.put(LIST_URL, json={"data": data}), 400, "INVALID_DATA")

    each([[], "x", {"id": "5545974000002000001"}], check)


# ======================================================= Update Appointments: results
def test_mixed_outcomes_answer_207_with_results_in_order(sandbox, api):
    cancel, reschedule = find(sandbox, "future", 2)
    completed = one(sandbox, "completed")
    new_start = instant(reschedule["Appointment_Start_Time"]) + timedelta(days=1)

    r = put(
        api,
        {"id": cancel["id"], "Status": "Cancelled"},
        {"id": "5545974000009999999", "Status": "Cancelled"},
        {"id": completed["id"], "Appointment_Start_Time": iso(new_start)},
        {"Status": "Cancelled"},
        {"id": reschedule["id"], "Appointment_Start_Time": iso(new_start)},
    )

    assert r.status_code == 207, r.text
    data = r.json()["data"]
    assert [d["code"] for d in data] == ["SUCCESS", "INVALID_DATA", "NOT_ALLOWED", "MANDATORY_NOT_FOUND", "SUCCESS"]
    assert [d["status"] for d in data] == ["success", "error", "error", "error", "success"]
    assert (data[0]["details"]["id"], data[4]["details"]["id"]) == (cancel["id"], reschedule["id"])
    assert now_of(sandbox, cancel)["Status"] == "Cancelled"
    assert now_of(sandbox, completed) == completed
    assert instant(now_of(sandbox, reschedule)["Appointment_Start_Time"]) == new_start


def test_all_failures_of_one_kind_answer_that_kinds_status(sandbox, api):
    r = put(api, *({"id": rec["id"], "Status": "Scheduled"} for rec in find(sandbox, "cancelled", 2)))

    assert r.status_code == 403, r.text
    assert [d["code"] for d in r.json()["data"]] == ["NOT_ALLOWED", "NOT_ALLOWED"]


def test_all_successes_answer_200_with_the_sample_response_shape(sandbox, api):
    a, b, c = find(sandbox, "future", 3)

    r = put(
        api,
        {"id": a["id"], "Appointment_Start_Time": iso(instant(a["Appointment_Start_Time"]) + timedelta(days=2), 5.5),
         "Reschedule_Reason": "By Team", "Reschedule_Note": "Member is unavailable"},
        {"id": b["id"], "Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Customer unavailable"},
        {"id": c["id"], "Job_Sheet_Name": "Prepared"},
    )

    assert_success(r, a["id"], b["id"], c["id"])
    for entry in r.json()["data"]:
        assert entry["message"] == "record updated"
        assert set(entry["details"]) >= {"Modified_Time", "Modified_By", "Created_Time", "Created_By", "id"}


def test_a_write_moves_modified_time_and_modified_by(sandbox, api):
    rec = one(sandbox, "future")
    ui = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{rec['id']}", json={"Location": "Customer Address"})
    assert ui.status_code == 200, ui.text
    by_ui = now_of(sandbox, rec)

    r = put(api, {"id": rec["id"], "Location": "Business Address"})

    assert_success(r, rec["id"])
    by_api = now_of(sandbox, rec)
    details = r.json()["data"][0]["details"]
    assert instant(by_ui["Modified_Time"]) > instant(rec["Modified_Time"])
    assert instant(by_api["Modified_Time"]) >= instant(by_ui["Modified_Time"])
    assert (details["Modified_Time"], details["Modified_By"]) == (by_api["Modified_Time"], by_api["Modified_By"])
    assert by_ui["Modified_By"] != by_api["Modified_By"]  # the UI user, then the API user
    assert (by_api["Created_Time"], by_api["Created_By"]) == (rec["Created_Time"], rec["Created_By"])


def test_a_reschedule_moves_the_end_and_records_where_it_came_from(sandbox, api):
    rec = one(sandbox, "future")
    old_start = instant(rec["Appointment_Start_Time"])
    new_start = old_start + timedelta(days=3, minutes=45)

    r = put(api, {"id": rec["id"], "Appointment_Start_Time": iso(new_start, -4)})

    assert_success(r, rec["id"])
    after = now_of(sandbox, rec)
    assert instant(after["Appointment_Start_Time"]) == new_start
    assert instant(after["Appointment_End_Time"]) == new_start + timedelta(minutes=rec["Duration"])
    assert after["Reschedule_Count"] == rec["Reschedule_Count"] + 1
    assert instant(after["Rescheduled_From"]) == old_start
    assert after["Reschedule_Reason"] == "By Customer"  # the documented default
    assert after["Status"] == "Scheduled"
    assert after["Appointment_Start_Time"][-6:] == rec["Appointment_Start_Time"][-6:]  # shown in the org's zone


def test_rescheduling_twice_counts_twice(sandbox, api):
    rec = one(sandbox, "future")
    first = instant(rec["Appointment_Start_Time"]) + timedelta(days=1)
    second = first + timedelta(days=1)

    assert_success(put(api, {"id": rec["id"], "Appointment_Start_Time": iso(first)}), rec["id"])
    assert_success(put(api, {"id": rec["id"], "Appointment_Start_Time": iso(second), "Reschedule_Reason": "By Team"}), rec["id"])

    after = now_of(sandbox, rec)
    assert after["Reschedule_Count"] == 2
    assert instant(after["Rescheduled_From"]) == first
    assert after["Reschedule_Reason"] == "By Team"


def test_an_overdue_appointment_rescheduled_to_the_future_is_scheduled_again(sandbox, api):
    rec = one(sandbox, "ended")
    new_start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)

    assert_success(put(api, {"id": rec["id"], "Appointment_Start_Time": iso(new_start)}), rec["id"])

    assert now_of(sandbox, rec)["Status"] == "Scheduled"


def test_a_given_rescheduled_from_is_kept_and_must_be_earlier(sandbox, api):
    a, b = find(sandbox, "future", 2)
    new_start = instant(a["Appointment_Start_Time"]) + timedelta(days=1)
    given_from = new_start - timedelta(hours=5)

    ok = put(api, {"id": a["id"], "Appointment_Start_Time": iso(new_start), "Rescheduled_From": iso(given_from)})
    late = put(api, {"id": b["id"], "Appointment_Start_Time": iso(new_start), "Rescheduled_From": iso(new_start)})
    alone = put(api, {"id": b["id"], "Rescheduled_From": iso(given_from)})

    assert_success(ok, a["id"])
    assert instant(now_of(sandbox, a)["Rescheduled_From"]) == given_from
    assert_record_error(late, 400, "INVALID_DATA")
    assert_record_error(alone, 400, "DEPENDENT_FIELD_MISSING")
    assert now_of(sandbox, b) == b


def test_a_new_duration_moves_the_end(sandbox, api):
    rec = one(sandbox, "future")

    assert_success(put(api, {"id": rec["id"], "Duration": rec["Duration"] + 15}), rec["id"])

    after = now_of(sandbox, rec)
    assert instant(after["Appointment_End_Time"]) == instant(rec["Appointment_Start_Time"]) + timedelta(minutes=rec["Duration"] + 15)
    assert after["Reschedule_Count"] == 0


def test_a_cancellation_sets_the_time_and_the_default_reason(sandbox, api):
    rec = one(sandbox, "future")
    before = datetime.now(UTC).replace(microsecond=0)

    assert_success(put(api, {"id": rec["id"], "Status": "Cancelled"}), rec["id"])

    after = now_of(sandbox, rec)
    assert after["Status"] == "Cancelled"
    assert after["Cancellation_Reason"] == "By Customer"
    assert instant(after["Cancelled_Time"]) >= before
    assert after["Appointment_Start_Time"] == rec["Appointment_Start_Time"]


def test_a_cancellation_keeps_the_given_reason_and_note(sandbox, api):
    rec = one(sandbox, "ended")

    r = put(api, {"id": rec["id"], "Status": "Cancelled", "Cancellation_Reason": "By Team", "Cancellation_Note": "Staff ill"})

    assert_success(r, rec["id"])
    after = now_of(sandbox, rec)
    assert (after["Status"], after["Cancellation_Reason"], after["Cancellation_Note"]) == ("Cancelled", "By Team", "Staff ill")


def test_the_record_id_may_be_given_in_the_url(sandbox, api):
    rec = one(sandbox, "future")

    r = api.put(f"{LIST_URL}/{rec['id']}", json={"data": [{"Status": "Cancelled"}]})
    unknown = api.put(f"{LIST_URL}/5545974000009999999", json={"data": [{"Status": "Cancelled"}]})

    assert_success(r, rec["id"])
    assert now_of(sandbox, rec)["Status"] == "Cancelled"
    assert_record_error(unknown, 400, "INVALID_DATA")


def test_every_documented_version_updates(sandbox, api):
    recs = find(sandbox, "future", len(VERSIONS))

    def check(case: tuple[str, dict]) -> None:
        version, rec = case
        new_start = instant(rec["Appointment_Start_Time"]) + timedelta(hours=1)
        assert_success(put(api, {"id": rec["id"], "Appointment_Start_Time": iso(new_start)}, version=version), rec["id"])
        shown = api.get(f"/crm/{version}/Appointments__s/{rec['id']}").json()["data"][0]
        assert instant(shown["Appointment_Start_Time"]) == new_start

    each(list(zip(VERSIONS, recs)), check)


def test_the_last_of_two_writes_to_one_record_wins(sandbox, api):
    rec = one(sandbox, "future")

    r = put(api, {"id": rec["id"], "Location": "Customer Address"}, {"id": rec["id"], "Status": "Cancelled"})

    assert_success(r, rec["id"], rec["id"])
    after = now_of(sandbox, rec)
    assert (after["Location"], after["Status"]) == ("Customer Address", "Cancelled")


# ============================================================ reading appointments
def test_fields_is_required_from_v3_on(sandbox, api):
    def check(version: str) -> None:
        r = api.get(f"/crm/{version}/Appointments__s", params={"per_page": 3})
        if version in ("v2", "v2.1"):
            assert r.status_code == 200, r.text
            assert {"Appointment_Start_Time", "Status", "Booking_Id"} <= set(r.json()["data"][0])
        else:
            assert assert_error(r, 400, "REQUIRED_PARAM_MISSING")["details"] == {"param_name": "fields"}

    each(VERSIONS, check)


def test_fields_selects_the_fields(sandbox, api):
    r = api.get(LIST_URL, params={"fields": "Status,Booking_Id", "per_page": 10})

    assert r.status_code == 200, r.text
    assert all(set(rec) == {"id", "Status", "Booking_Id"} for rec in r.json()["data"])


def test_an_unknown_field_is_invalid_data(sandbox, api):
    def check(url: str) -> None:
        body = assert_error(api.get(url, params={"fields": "Status,No_Such_Field"}), 400, "INVALID_DATA")
        assert body["details"]["api_name"] == "No_Such_Field"

    each([LIST_URL, f"{LIST_URL}/5545974000002000001"], check)


def test_per_page_is_at_most_200(sandbox, api):
    full = api.get(LIST_URL, params={"fields": "Status", "per_page": 200})
    too_many = api.get(LIST_URL, params={"fields": "Status", "per_page": 201})
    default = api.get(LIST_URL, params={"fields": "Status"})

    assert full.status_code == 200 and len(full.json()["data"]) == 200
    assert full.json()["info"]["more_records"] is True
    assert_error(too_many, 400, "INVALID_DATA")
    assert len(default.json()["data"]) == 200


def test_page_and_per_page_reach_2000_records_only(sandbox, api):
    def check(case: tuple[int, int]) -> None:
        page, per_page = case
        last_allowed = api.get(LIST_URL, params={"fields": "Status", "page": page - 1, "per_page": per_page})
        beyond = api.get(LIST_URL, params={"fields": "Status", "page": page, "per_page": per_page})
        assert last_allowed.status_code == 204  # 300 records: nothing there, but allowed
        assert_error(beyond, 400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED")

    each([(11, 200), (21, 100), (2001, 1)], check)


def test_pages_split_the_records_without_overlap(sandbox, api):
    pages = [api.get(LIST_URL, params={"fields": "Status", "page": p, "per_page": 120}) for p in (1, 2, 3, 4)]

    assert [p.status_code for p in pages] == [200, 200, 200, 204]
    ids = [rec["id"] for p in pages[:3] for rec in p.json()["data"]]
    assert sorted(ids) == sorted(rec["id"] for rec in records(sandbox))
    assert [p.json()["info"]["more_records"] for p in pages[:3]] == [True, True, False]


def test_walking_page_tokens_returns_every_record_once(sandbox, api):
    ids = walk(api, per_page=70)

    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == {rec["id"] for rec in records(sandbox)}


def test_page_tokens_reach_beyond_2000_records(sandbox):
    sandbox.http.post("/__sandbox/reset", json={"appointments": 2100}).raise_for_status()
    with crm_client(sandbox) as api:
        beyond = api.get(LIST_URL, params={"fields": "Status", "page": 11, "per_page": 200})
        ids = walk(api, per_page=200)

    assert_error(beyond, 400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED")
    assert len(ids) == len(set(ids)) == 2100


def test_a_forged_page_token_is_invalid_data(sandbox, api):
    forged = base64.urlsafe_b64encode(json.dumps({"o": "x", "s": "id", "d": "desc", "e": 9e12}).encode()).decode()

    def check(token: str) -> None:
        assert_error(api.get(LIST_URL, params={"fields": "Status", "page_token": token}), 400, "INVALID_DATA")

    each(["garbage", forged], check)


def test_if_modified_since_returns_only_later_changes(sandbox, api):
    a, b = find(sandbox, "future", 2)
    seeded = max(instant(rec["Modified_Time"]) for rec in records(sandbox))
    since = {"If-Modified-Since": seeded.isoformat()}  # the seed's last write
    assert api.get(LIST_URL, params={"fields": "Status"}, headers=since).status_code == 304
    assert_success(put(api, {"id": a["id"], "Status": "Cancelled"}, {"id": b["id"], "Location": "Customer Address"}), a["id"], b["id"])

    r = api.get(LIST_URL, params={"fields": "Status,Modified_Time"}, headers=since)
    latest = {"If-Modified-Since": now_of(sandbox, a)["Modified_Time"]}

    assert r.status_code == 200, r.text
    assert {rec["id"] for rec in r.json()["data"]} == {a["id"], b["id"]}
    assert api.get(LIST_URL, params={"fields": "Status"}, headers=latest).status_code == 304


def test_a_bad_if_modified_since_is_invalid_data(sandbox, api):
    r = api.get(LIST_URL, params={"fields": "Status"}, headers={"If-Modified-Since": "yesterday"})
    assert_error(r, 400, "INVALID_DATA")


def test_an_empty_answer_is_204(sandbox, api):
    r = api.get(LIST_URL, params={"fields": "Status", "ids": "5545974000009999999"})

    assert r.status_code == 204
    assert r.content == b""


def test_ids_selects_records(sandbox, api):
    a, b = find(sandbox, "completed", 2)

    r = api.get(LIST_URL, params={"fields": "Status", "ids": f"{a['id']},{b['id']}"})

    assert r.status_code == 200, r.text
    assert sorted((rec["id"], rec["Status"]) for rec in r.json()["data"]) == sorted([(a["id"], "Completed"), (b["id"], "Completed")])


def test_get_by_id_answers_the_record(sandbox, api):
    rec = one(sandbox, "ended")

    full = api.get(f"{LIST_URL}/{rec['id']}")
    some = api.get(f"{LIST_URL}/{rec['id']}", params={"fields": "Status,Booking_Id"})
    unknown = api.get(f"{LIST_URL}/5545974000009999999")

    assert full.status_code == 200, full.text
    assert full.json()["data"] == [rec]
    assert some.json()["data"] == [{"id": rec["id"], "Status": "Overdue", "Booking_Id": rec["Booking_Id"]}]
    assert_error(unknown, 400, "INVALID_DATA")


def test_the_list_shows_the_same_statuses_as_the_dump(sandbox, api):
    r = api.get(LIST_URL, params={"fields": "Status", "per_page": 200})

    dumped = {rec["id"]: rec["Status"] for rec in records(sandbox)}
    assert all(dumped[rec["id"]] == rec["Status"] for rec in r.json()["data"])
    assert {rec["Status"] for rec in r.json()["data"]} == {"Scheduled", "Overdue", "Completed", "Cancelled"}


def test_reading_needs_a_live_token(sandbox):
    r = sandbox.http.get(LIST_URL, params={"fields": "Status"})
    assert_error(r, 401, "INVALID_TOKEN")


# ========================================================================= Events
def one_event(sandbox, appointment_kind: str = "future") -> dict:
    """The ``Events`` record of an appointment of ``appointment_kind``."""
    return now_of(sandbox, one(sandbox, appointment_kind), module="Events")


def test_an_event_update_moves_its_times(sandbox, api):
    event = one_event(sandbox)
    start = instant(event["Start_DateTime"]) + timedelta(days=1)
    end = start + timedelta(minutes=50)

    r = put(api, {"id": event["id"], "Start_DateTime": iso(start, 1), "End_DateTime": iso(end, -7)}, module="Events")

    assert_success(r, event["id"])
    after = now_of(sandbox, event, module="Events")
    assert (instant(after["Start_DateTime"]), instant(after["End_DateTime"])) == (start, end)
    assert instant(after["Modified_Time"]) > instant(event["Modified_Time"])
    assert after["Booking_Id"] == event["Booking_Id"]


def test_an_event_ending_before_it_starts_is_invalid_data(sandbox, api):
    event = one_event(sandbox)
    start, end = instant(event["Start_DateTime"]), instant(event["End_DateTime"])

    def check(changes: dict) -> None:
        assert_record_error(put(api, {"id": event["id"], **changes}, module="Events"), 400, "INVALID_DATA")

    each([{"End_DateTime": iso(start - timedelta(minutes=1))}, {"Start_DateTime": iso(end + timedelta(minutes=1))}], check)
    assert now_of(sandbox, event, module="Events") == event


def test_bad_event_values_are_refused(sandbox, api):
    event = one_event(sandbox)
    cases = [({"Start_DateTime": "tomorrow"}, "INVALID_DATA"), ({"All_day": "yes"}, "INVALID_DATA"), ({"Event_Title": ""}, "MANDATORY_NOT_FOUND")]

    def check(case: tuple[dict, str]) -> None:
        changes, code = case
        assert_record_error(put(api, {"id": event["id"], **changes}, module="Events"), 400, code)

    each(cases, check)
    assert now_of(sandbox, event, module="Events") == event


def test_booking_id_links_event_appointment_and_booking(sandbox, api):
    dump = sandbox.dump()
    appointments = {rec["Booking_Id"]: rec for rec in dump["Appointments__s"]}
    bookings = {b["booking_id"] for b in dump["bookings"]}

    assert len(dump["Events"]) == len(appointments) == len(bookings) == 300
    for event in dump["Events"]:
        assert event["Booking_Id"] in bookings
        appointment = appointments[event["Booking_Id"]]
        assert instant(event["Start_DateTime"]) == instant(appointment["Appointment_Start_Time"])
        assert instant(event["End_DateTime"]) == instant(appointment["Appointment_End_Time"])
    listed = api.get("/crm/v7/Events", params={"fields": "Booking_Id", "per_page": 5}).json()["data"]
    assert all(rec["Booking_Id"] in bookings for rec in listed)


# ================================================================ field metadata
@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (
            "Appointments__s",
            {"Appointment_Start_Time": "datetime", "Appointment_End_Time": "datetime", "Duration": "integer",
             "Status": "picklist", "Reschedule_Count": "integer", "Modified_Time": "datetime", "Booking_Id": "text"},
        ),
        ("Events", {"Start_DateTime": "datetime", "End_DateTime": "datetime", "All_day": "boolean", "Booking_Id": "text", "Booking_Status": "picklist"}),
    ],
)
def test_field_metadata_describes_the_fields(sandbox, api, module, expected):
    r = api.get("/crm/v7/settings/fields", params={"module": module})

    assert r.status_code == 200, r.text
    fields = {f["api_name"]: f for f in r.json()["fields"]}
    assert {name: fields[name]["data_type"] for name in expected} == expected
    assert [name for name, f in fields.items() if f["custom_field"]] == (["Booking_Id", "Booking_Status"] if module == "Events" else ["Booking_Id"])
    assert len({f["id"] for f in fields.values()}) == len(fields)


def test_appointment_status_metadata_lists_the_documented_values(sandbox, api):
    fields = {f["api_name"]: f for f in api.get("/crm/v7/settings/fields", params={"module": "Appointments__s"}).json()["fields"]}

    values = [v["actual_value"] for v in fields["Status"]["pick_list_values"]]
    assert sorted(values) == ["Cancelled", "Completed", "Overdue", "Scheduled"]


def test_field_metadata_needs_a_known_module(sandbox, api):
    assert_error(api.get("/crm/v7/settings/fields"), 400, "REQUIRED_PARAM_MISSING")
    assert_error(api.get("/crm/v7/settings/fields", params={"module": "Foo"}), 400, "INVALID_MODULE")
