"""The httpx clients of ``zoho/clients.py`` and the token plumbing of ``zoho/auth.py``,
against pytest-httpx mocks of Zoho's documented requests and answers
(``shared/zoho-api-notes.md``; seed 002 for Update Appointments).

Every mock names the exact URL; tests assert method, URL, headers and body of what
was sent. No request leaves the process.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr
from pytest_httpx import HTTPXMock

from zoho.auth import RefreshingTokenProvider, StaticTokenProvider, ZohoAuth
from zoho.clients import AccountsClient, ZohoClient
from zoho.datacentres import Endpoints
from zoho.errors import (
    BookingsError,
    InvalidDataError,
    InvalidTokenError,
    NotAllowedError,
    NotFoundError,
    RateLimitedError,
    ScopeMismatchError,
    ServerError,
    TokenThrottledError,
    TransportError,
    ZohoError,
    crm_error,
    is_transient,
)
from zoho.models import (
    AppointmentUpdate,
    BulkReadQuery,
    BulkReadRequest,
    BulkState,
    Callback,
    Condition,
    ModuleRef,
    WatchChannel,
    all_of,
)

ENDPOINTS = Endpoints.for_data_centre("US")
ACCOUNTS = "https://accounts.zoho.com"
API = "https://www.zohoapis.com"
BOOKINGS = f"{API}/bookings/v1/json"
TOKEN_URL = f"{ACCOUNTS}/oauth/v2/token"
APPOINTMENTS = f"{API}/crm/v7/Appointments__s"
WATCH = f"{API}/crm/v7/actions/watch"
TOKEN = "1000.8cb99dxxxxxxxxxxxxx9be93.9b8xxxxxxxxxxxxxxxf"
CLIENT_ID = "1000.CLIENTIDXXXX"
CLIENT_SECRET = SecretStr("client-secret-5d2f")
REFRESH_TOKEN = SecretStr("1000.refresh.9a8b7c")
UTC = timezone.utc
IST = ZoneInfo("Asia/Kolkata")


# ------------------------------------------------------------------- helpers
#: One TLS context for every test client: building one per client costs ~0.15 s.
TLS = ssl.create_default_context()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=TLS) as client:
        yield client


@pytest.fixture
async def zoho(http: httpx.AsyncClient) -> ZohoClient:
    """A US client whose CRM and Bookings calls carry the static ``TOKEN``."""
    return ZohoClient(ENDPOINTS, StaticTokenProvider(TOKEN), http=http)


def only_request(httpx_mock: HTTPXMock) -> httpx.Request:
    [request] = httpx_mock.get_requests()
    return request


def form_of(request: httpx.Request) -> dict[str, str]:
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def json_of(request: httpx.Request) -> Any:
    assert request.headers["content-type"] == "application/json"
    return json.loads(request.content)


def assert_bearer(request: httpx.Request, token: str = TOKEN) -> None:
    assert request.headers["authorization"] == f"Zoho-oauthtoken {token}"


def token_answer(access_token: str = "1000.access.new", expires_in: int = 3600, **extra: Any) -> dict[str, Any]:
    return {"access_token": access_token, "expires_in": expires_in, "api_domain": API, "token_type": "Bearer", **extra}


def crm_body(code: str, message: str, status: str = "error", details: dict | None = None) -> dict[str, Any]:
    return {"code": code, "details": details or {}, "message": message, "status": status}


def bookings_ok(value: Any) -> dict[str, Any]:
    return {"response": {"returnvalue": value, "status": "success"}}


def booking(booking_id: str = "#AN-00014", **fields: Any) -> dict[str, Any]:
    """A Bookings appointment as the notes list its fields."""
    return {
        "booking_id": booking_id,
        "service_id": "4500000000217",
        "service_name": "Consultation",
        "staff_id": "4500000000201",
        "start_time": "28-May-2019 13:00:00",
        "end_time": "28-May-2019 13:30:00",
        "time_zone": "Asia/Calcutta",
        "customer_booking_start_time": "28-May-2019 13:00:00",
        "duration": "30 mins",
        "status": "upcoming",
        "customer_name": "Jane Roe",
        "customer_email": "jane.roe@example.test",
        "customer_more_info": {},
        "summary_url": "https://bookings.example.test/summary",
        **fields,
    }


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (TOKEN, CLIENT_SECRET.get_secret_value(), REFRESH_TOKEN.get_secret_value(), *secrets):
        assert secret not in text


# ------------------------------------------------------------------ Accounts
async def test_refresh(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json=token_answer(scope="ZohoCRM.bulk.read"))
    answer = await zoho.accounts.refresh(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
    assert (answer.access_token.get_secret_value(), answer.expires_in, answer.api_domain) == ("1000.access.new", 3600, API)
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", TOKEN_URL)
    assert "authorization" not in request.headers
    assert form_of(request) == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET.get_secret_value(),
        "refresh_token": REFRESH_TOKEN.get_secret_value(),
    }
    assert_no_secret(str(request.url))


async def test_exchange_code(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json=token_answer(refresh_token="1000.refresh.fresh"))
    answer = await zoho.accounts.exchange_code(CLIENT_ID, CLIENT_SECRET, SecretStr("1000.grant.code"), "https://app.example.test/oauth")
    assert answer.refresh_token is not None and answer.refresh_token.get_secret_value() == "1000.refresh.fresh"
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", TOKEN_URL)
    assert form_of(request) == {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET.get_secret_value(),
        "code": "1000.grant.code",
        "redirect_uri": "https://app.example.test/oauth",
    }
    assert_no_secret(str(request.url), "1000.grant.code")


async def test_exchange_code_without_redirect_uri(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json=token_answer(refresh_token="1000.refresh.fresh"))
    await zoho.accounts.exchange_code(CLIENT_ID, CLIENT_SECRET, SecretStr("1000.grant.code"))
    assert "redirect_uri" not in form_of(only_request(httpx_mock))


@pytest.mark.parametrize(
    "answer",
    [
        {"access_token": "1000.legacy", "expires_in_sec": 3600, "expires_in": 3_600_000, "api_domain": API, "token_type": "Bearer"},
        {"access_token": "1000.legacy", "expires_in": 3_600_000, "api_domain": API, "token_type": "Bearer"},
    ],
    ids=["expires_in_sec", "milliseconds"],
)
async def test_refresh_legacy_expiry(zoho: ZohoClient, httpx_mock: HTTPXMock, answer: dict) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json=answer)
    assert (await zoho.accounts.refresh(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)).expires_in == 3600


async def test_refresh_answer_without_token_is_an_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, html="<html>maintenance</html>")
    with pytest.raises(ZohoError) as info:
        await zoho.accounts.refresh(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
    assert (info.value.code, info.value.endpoint) == ("UNEXPECTED_ANSWER", "POST /oauth/v2/token")


async def test_revoke_sends_the_token_in_the_body(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{TOKEN_URL}/revoke", json={"status": "success"})
    await zoho.accounts.revoke(REFRESH_TOKEN)
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", f"{TOKEN_URL}/revoke")
    assert form_of(request) == {"token": REFRESH_TOKEN.get_secret_value()}
    assert "authorization" not in request.headers


async def test_revoke_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{TOKEN_URL}/revoke", status_code=400, json={"error": "invalid_client"})
    with pytest.raises(ZohoError) as info:
        await zoho.accounts.revoke(REFRESH_TOKEN)
    assert info.value.endpoint == "POST /oauth/v2/token/revoke"


# ----------------------------------------------------------------- Bulk Read
BULK = f"{API}/crm/bulk/v7/read"
JOB_ID = "554023000000568002"
CREATED = {
    "data": [
        {
            "status": "success",
            "code": "ADDED_SUCCESSFULLY",
            "message": "Added successfully.",
            "details": {
                "id": JOB_ID,
                "operation": "read",
                "state": "ADDED",
                "created_by": {"id": "5545974000000393001", "name": "Patricia Boyle"},
                "created_time": "2024-05-09T14:01:24+05:30",
            },
        }
    ],
    "info": {},
}


def job_status(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "data": [
            {
                "id": JOB_ID,
                "operation": "read",
                "state": state,
                "query": {"module": {"api_name": "Appointments__s"}, "page": 1},
                "created_by": {"id": "5545974000000393001", "name": "Patricia Boyle"},
                "created_time": "2024-05-09T14:01:24+05:30",
                "file_type": "csv",
                **extra,
            }
        ]
    }


async def test_create_bulk_read(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=BULK, status_code=201, json=CREATED)
    request = BulkReadRequest(
        query=BulkReadQuery(
            module=ModuleRef(api_name="Appointments__s"),
            fields=["id", "Appointment_Start_Time", "Status"],
            criteria=all_of(
                Condition.of("Modified_Time", "greater_equal", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=IST)),
                Condition.of("Status", "in", ["Scheduled", "Overdue"]),
            ),
            page=1,
        ),
        callback=Callback(url="https://hooks.example.test/bulk"),
    )
    job = await zoho.crm.create_bulk_read(request)
    assert (job.id, job.state, job.operation) == (JOB_ID, BulkState.ADDED, "read")
    assert job.created_time == datetime(2024, 5, 9, 8, 31, 24, tzinfo=UTC)
    sent = only_request(httpx_mock)
    assert (sent.method, str(sent.url)) == ("POST", BULK)
    assert_bearer(sent)
    assert json_of(sent) == {
        "query": {
            "module": {"api_name": "Appointments__s"},
            "fields": ["id", "Appointment_Start_Time", "Status"],
            "criteria": {
                "group_operator": "and",
                "group": [
                    {"field": {"api_name": "Modified_Time"}, "comparator": "greater_equal", "value": "2024-05-01T12:00:00+05:30"},
                    {"field": {"api_name": "Status"}, "comparator": "in", "value": ["Scheduled", "Overdue"]},
                ],
            },
            "page": 1,
        },
        "callback": {"url": "https://hooks.example.test/bulk", "method": "post"},
        "file_type": "csv",
    }


async def test_create_bulk_read_with_page_token(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=BULK, status_code=201, json=CREATED)
    await zoho.crm.create_bulk_read(BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name="Appointments__s"), page_token="c8582e7f")))
    assert json_of(only_request(httpx_mock)) == {
        "query": {"module": {"api_name": "Appointments__s"}, "fields": [], "page_token": "c8582e7f"},
        "file_type": "csv",
    }


async def test_create_bulk_read_entry_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=BULK, status_code=201, json={"data": [crm_body("INVALID_DATA", "invalid criteria", details={"api_name": "Status"})]})
    with pytest.raises(InvalidDataError) as info:
        await zoho.crm.create_bulk_read(BulkReadRequest(query=BulkReadQuery(module=ModuleRef(api_name="Appointments__s"))))
    assert (info.value.code, info.value.endpoint) == ("INVALID_DATA", "POST /crm/bulk/v7/read")


@pytest.mark.parametrize("state", ["ADDED", "QUEUED", "IN PROGRESS"])
async def test_get_bulk_read_running(zoho: ZohoClient, httpx_mock: HTTPXMock, state: str) -> None:
    httpx_mock.add_response(method="GET", url=f"{BULK}/{JOB_ID}", json=job_status(state))
    job = await zoho.crm.get_bulk_read(JOB_ID)
    assert job.state is BulkState(state) and not job.state.is_terminal
    assert job.result is None
    assert_bearer(only_request(httpx_mock))


async def test_get_bulk_read_completed(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    result = {
        "page": 1,
        "per_page": 200000,
        "count": 200000,
        "download_url": f"/crm/bulk/v7/read/{JOB_ID}/result",
        "more_records": True,
        "next_page_token": "c8582e7f0e4c",
    }
    httpx_mock.add_response(method="GET", url=f"{BULK}/{JOB_ID}", json=job_status("COMPLETED", result=result))
    job = await zoho.crm.get_bulk_read(JOB_ID)
    assert job.state is BulkState.COMPLETED and job.state.is_terminal
    assert job.result is not None
    assert (job.result.count, job.result.download_url, job.result.more_records, job.result.next_page_token) == (
        200000, f"/crm/bulk/v7/read/{JOB_ID}/result", True, "c8582e7f0e4c",
    )


async def test_get_bulk_read_failure(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    error = {"status": "error", "code": "INTERNAL_ERROR", "message": "Internal Server Error", "details": {}}
    httpx_mock.add_response(method="GET", url=f"{BULK}/{JOB_ID}", json=job_status("FAILURE", result={"error_message": error}))
    job = await zoho.crm.get_bulk_read(JOB_ID)
    assert job.state is BulkState.FAILURE and job.state.is_terminal
    assert job.result is not None and job.result.error_message is not None
    assert (job.result.error_message.code, job.result.error_message.message) == ("INTERNAL_ERROR", "Internal Server Error")


def zipped_csv(rows: int = 500) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        lines = ["Id,Status,Appointment_Start_Time"] + [f"55459740000022{i:05d},Scheduled,2024-05-01T10:00:00+05:30" for i in range(rows)]
        archive.writestr(f"{JOB_ID}.csv", "\n".join(lines))
    return buffer.getvalue()


@pytest.mark.parametrize("relative", [True, False])
async def test_download_bulk_result(zoho: ZohoClient, httpx_mock: HTTPXMock, relative: bool) -> None:
    payload = zipped_csv()
    url = f"{BULK}/{JOB_ID}/result"
    httpx_mock.add_response(method="GET", url=url, content=payload, headers={"Content-Type": "application/zip"})
    sink = io.BytesIO()
    written = await zoho.crm.download_bulk_result(f"/crm/bulk/v7/read/{JOB_ID}/result" if relative else url, sink, chunk_size=1024)
    assert written == len(payload) and sink.getvalue() == payload
    with zipfile.ZipFile(sink) as archive:
        assert archive.namelist() == [f"{JOB_ID}.csv"]
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("GET", url)
    assert_bearer(request)


async def test_download_bulk_result_rate_limited(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET", url=f"{BULK}/{JOB_ID}/result", status_code=429, headers={"Retry-After": "60"},
        json=crm_body("TOO_MANY_REQUESTS", "You have exceeded the download limit"),
    )
    sink = io.BytesIO()
    with pytest.raises(RateLimitedError) as info:
        await zoho.crm.download_bulk_result(f"/crm/bulk/v7/read/{JOB_ID}/result", sink)
    assert (info.value.retry_after, info.value.status_code, info.value.endpoint) == (60.0, 429, f"GET /crm/bulk/v7/read/{JOB_ID}/result")
    assert sink.getvalue() == b""


async def test_download_bulk_result_transport_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), method="GET", url=f"{BULK}/{JOB_ID}/result")
    with pytest.raises(TransportError) as info:
        await zoho.crm.download_bulk_result(f"/crm/bulk/v7/read/{JOB_ID}/result", io.BytesIO())
    assert info.value.endpoint == f"GET /crm/bulk/v7/read/{JOB_ID}/result"


# ------------------------------------------------------------------- records
RECORDS_PAGE = {
    "data": [
        {"id": "5545974000002254155", "Status": "Scheduled", "Appointment_Start_Time": "2023-04-05T10:00:00+05:30"},
        {"id": "5545974000002254060", "Status": "Cancelled", "Appointment_Start_Time": "2023-04-06T11:00:00+05:30"},
    ],
    "info": {"per_page": 2, "count": 2, "page": 1, "sort_by": "id", "sort_order": "desc", "more_records": True, "next_page_token": "c8582e7f", "page_token_expiry": "2024-05-10T10:00:00+05:30"},
}


def records_url(**params: str) -> httpx.URL:
    return httpx.URL(APPOINTMENTS, params=params)


async def test_get_records(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET", url=records_url(fields="Status,Appointment_Start_Time", per_page="2", page="3"), json=RECORDS_PAGE,
    )
    page = await zoho.crm.get_records("Appointments__s", ["Status", "Appointment_Start_Time"], page=3, per_page=2)
    assert [r["id"] for r in page.data] == ["5545974000002254155", "5545974000002254060"]
    assert (page.more_records, page.next_page_token) == (True, "c8582e7f")
    request = only_request(httpx_mock)
    assert request.method == "GET"
    assert_bearer(request)
    assert "if-modified-since" not in request.headers


async def test_get_records_page_token_and_modified_since(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET",
        url=records_url(fields="Status", per_page="200", page_token="c8582e7f", sort_by="Modified_Time", sort_order="asc"),
        json=RECORDS_PAGE,
    )
    since = datetime(2024, 3, 10, 15, 0, 0, 987654, tzinfo=IST)
    await zoho.crm.get_records("Appointments__s", ["Status"], page=11, page_token="c8582e7f", modified_since=since, sort_by="Modified_Time", sort_order="asc")
    request = only_request(httpx_mock)
    assert "page" not in request.url.params
    assert request.headers["if-modified-since"] == "2024-03-10T15:00:00+05:30"


async def test_get_records_by_ids(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=records_url(fields="Status", per_page="200", page="1", ids="1,2"), json=RECORDS_PAGE)
    await zoho.crm.get_records("Appointments__s", ["Status"], ids=["1", "2"])


async def test_get_records_naive_modified_since(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await zoho.crm.get_records("Appointments__s", ["Status"], modified_since=datetime(2024, 3, 10, 15, 0))
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("status", [204, 304])
async def test_get_records_empty(zoho: ZohoClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(method="GET", url=records_url(fields="Status", per_page="200", page="1"), status_code=status)
    page = await zoho.crm.get_records("Appointments__s", ["Status"])
    assert (page.data, page.more_records, page.next_page_token) == ([], False, None)


async def test_get_record(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    record = RECORDS_PAGE["data"][0]
    httpx_mock.add_response(method="GET", url=f"{APPOINTMENTS}/5545974000002254155", json={"data": [record]})
    assert await zoho.crm.get_record("Appointments__s", "5545974000002254155") == record
    assert_bearer(only_request(httpx_mock))


async def test_get_record_no_content(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{APPOINTMENTS}/5545974000002254155", status_code=204)
    with pytest.raises(NotFoundError) as info:
        await zoho.crm.get_record("Appointments__s", "5545974000002254155")
    assert info.value.endpoint == "GET /crm/v7/Appointments__s/5545974000002254155"


# --------------------------------------------------------- update (seed 002)
SEED_INPUT = {
    "data": [
        {
            "id": "5545974000002254155",
            "Appointment_Start_Time": "2023-04-05T10:00:00+05:30",
            "Reschedule_Reason": "By Team",
            "Reschedule_Note": "Member is unavailable due to unexpected reasons",
        },
        {"id": "5545974000002254060", "Status": "Cancelled", "Cancellation_Reason": "By Customer", "Cancellation_Note": "Customer Unavailable"},
        {"id": "5545974000002254135", "Status": "Completed", "Job_Sheet_Name": "Delivered", "Job_Sheet_Description__s": "Delivered on time"},
    ]
}


def updated(record_id: str, created: str) -> dict[str, Any]:
    """One ``data[i]`` of seed 002's sample response."""
    boyle = {"name": "Patricia Boyle", "id": "5545974000000393001"}
    return {
        "code": "SUCCESS",
        "details": {"Modified_Time": "2023-04-04T16:10:09+05:30", "Modified_By": boyle, "Created_Time": created, "id": record_id, "Created_By": boyle},
        "message": "record updated",
        "status": "success",
    }


SEED_RESPONSE = {
    "data": [
        updated("5545974000002254155", "2023-04-04T15:50:27+05:30"),
        updated("5545974000002254060", "2023-04-04T16:01:27+05:30"),
        updated("5545974000002254135", "2023-04-04T16:07:54+05:30"),
    ]
}


def seed_updates() -> list[AppointmentUpdate]:
    return [
        AppointmentUpdate.reschedule("5545974000002254155", datetime(2023, 4, 5, 10, 0, tzinfo=IST), "By Team", "Member is unavailable due to unexpected reasons"),
        AppointmentUpdate.cancel("5545974000002254060", "By Customer", "Customer Unavailable"),
        AppointmentUpdate.complete("5545974000002254135", "Delivered", "Delivered on time"),
    ]


async def test_update_appointments_seed_002(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, json=SEED_RESPONSE)
    results = await zoho.crm.update_appointments(seed_updates())
    assert [(r.ok, r.code, r.details["id"]) for r in results] == [
        (True, "SUCCESS", "5545974000002254155"),
        (True, "SUCCESS", "5545974000002254060"),
        (True, "SUCCESS", "5545974000002254135"),
    ]
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("PUT", APPOINTMENTS)
    assert_bearer(request)
    assert json_of(request) == SEED_INPUT


async def test_update_records_with_dicts(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=f"{API}/crm/v7/Events", json={"data": [updated("1", "2023-04-04T15:50:27+05:30")]})
    results = await zoho.crm.update_records("Events", [{"id": "1", "Event_Title": "Consultation"}])
    assert [r.ok for r in results] == [True]
    assert json_of(only_request(httpx_mock)) == {"data": [{"id": "1", "Event_Title": "Consultation"}]}


async def test_update_207_mixed_results_in_order(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    mixed = {
        "data": [
            updated("5545974000002254155", "2023-04-04T15:50:27+05:30"),
            crm_body("NOT_ALLOWED", "You cannot change the Status of a cancelled appointment.", details={"id": "5545974000002254060"}),
            crm_body("DEPENDENT_MISMATCH", "You can mark an appointment as 'completed' only after the appointment time has ended.", details={"id": "5545974000002254135"}),
        ]
    }
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=207, json=mixed)
    results = await zoho.crm.update_appointments(seed_updates())
    assert [(r.ok, r.code) for r in results] == [(True, "SUCCESS"), (False, "NOT_ALLOWED"), (False, "DEPENDENT_MISMATCH")]
    error = crm_error(results[1].model_dump())
    assert isinstance(error, NotAllowedError) and error.details == {"id": "5545974000002254060"}


@pytest.mark.parametrize("count", [0, 101])
async def test_update_record_count_checked_before_any_request(zoho: ZohoClient, httpx_mock: HTTPXMock, count: int) -> None:
    updates = [AppointmentUpdate.cancel(str(i)) for i in range(count)]
    with pytest.raises(ValueError, match="100"):
        await zoho.crm.update_appointments(updates)
    assert httpx_mock.get_requests() == []


async def test_update_100_records_is_allowed(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, json={"data": [updated(str(i), "2023-04-04T15:50:27+05:30") for i in range(100)]})
    assert len(await zoho.crm.update_appointments([AppointmentUpdate.cancel(str(i)) for i in range(100)])) == 100


async def test_update_top_level_invalid_token_raises(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=401, json=crm_body("INVALID_TOKEN", "invalid oauth token"))
    with pytest.raises(InvalidTokenError) as info:
        await zoho.crm.update_appointments(seed_updates())
    assert (info.value.status_code, info.value.endpoint) == (401, "PUT /crm/v7/Appointments__s")
    assert_no_secret(str(info.value))


async def test_update_answer_without_results(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, json={"data": [updated("5545974000002254155", "2023-04-04T15:50:27+05:30")]})
    with pytest.raises(ZohoError) as info:
        await zoho.crm.update_appointments(seed_updates())
    assert info.value.code == "UNEXPECTED_ANSWER"


# -------------------------------------------------------------------- fields
async def test_get_fields(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    fields = [{"api_name": "Appointment_Start_Time", "data_type": "datetime"}, {"api_name": "Booking_Id", "data_type": "text", "custom_field": True}]
    httpx_mock.add_response(method="GET", url=f"{API}/crm/v7/settings/fields?module=Appointments__s", json={"fields": fields})
    assert await zoho.crm.get_fields("Appointments__s") == fields
    assert_bearer(only_request(httpx_mock))


# ------------------------------------------------------------- notifications
def watch_result(channel_id: str) -> dict[str, Any]:
    return {
        "code": "SUCCESS",
        "details": {"events": [{"channel_expiry": "2024-06-18T10:00:00+00:00", "resource_uri": APPOINTMENTS, "resource_id": "5545974000000002179", "resource_name": "Appointments__s", "channel_id": channel_id}]},
        "message": "Successfully subscribed for actions-watch of the given module",
        "status": "success",
    }


async def test_watch(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=WATCH, json={"watch": [watch_result("1000000068001")]})
    channel = WatchChannel(
        channel_id=1000000068001,
        events=["Appointments__s.all"],
        channel_expiry=datetime(2024, 6, 18, 15, 30, tzinfo=IST),
        token="chan-token-7f3a",
        notify_url="https://hooks.example.test/zoho",
        return_affected_field_values=True,
    )
    results = await zoho.crm.watch([channel])
    assert [(r.ok, r.code) for r in results] == [(True, "SUCCESS")]
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", WATCH)
    assert_bearer(request)
    assert json_of(request) == {
        "watch": [
            {
                "channel_id": 1000000068001,
                "events": ["Appointments__s.all"],
                "channel_expiry": "2024-06-18T15:30:00+05:30",
                "token": "chan-token-7f3a",
                "notify_url": "https://hooks.example.test/zoho",
                "return_affected_field_values": True,
            }
        ]
    }
    assert "chan-token-7f3a" not in str(request.url)


async def test_watch_top_level_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=WATCH, status_code=401, json=crm_body("OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL"))
    channel = WatchChannel(channel_id=1, events=["Appointments__s.all"], notify_url="https://hooks.example.test/zoho")
    with pytest.raises(ScopeMismatchError):
        await zoho.crm.watch([channel])


async def test_watch_non_json_5xx(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=WATCH, status_code=502, html="<html>Bad Gateway</html>")
    channel = WatchChannel(channel_id=1, events=["Appointments__s.all"], notify_url="https://hooks.example.test/zoho")
    with pytest.raises(ServerError):
        await zoho.crm.watch([channel])


async def test_get_watch(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    channels = [{"channel_id": "1000000068001", "events": ["Appointments__s.all"], "channel_expiry": "2024-06-18T10:00:00+00:00"}]
    httpx_mock.add_response(method="GET", url=WATCH, json={"watch": channels})
    assert await zoho.crm.get_watch() == channels
    assert_bearer(only_request(httpx_mock))


async def test_get_watch_none(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=WATCH, status_code=204)
    assert await zoho.crm.get_watch() == []


async def test_unwatch(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="DELETE", url=httpx.URL(WATCH, params={"channel_ids": "1000000068001,1000000068002"}),
        json={"watch": [watch_result("1000000068001"), watch_result("1000000068002")]},
    )
    results = await zoho.crm.unwatch([1000000068001, "1000000068002"])
    assert [r.ok for r in results] == [True, True]
    assert_bearer(only_request(httpx_mock))


# ------------------------------------------------------------------ Bookings
async def test_get_appointment_encodes_the_hash(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BOOKINGS}/getappointment?booking_id=%23AN-00014", json=bookings_ok(booking()))
    result = await zoho.bookings.get_appointment("#AN-00014")
    assert (result.booking_id, result.status, result.time_zone) == ("#AN-00014", "upcoming", "Asia/Calcutta")
    assert result.start == datetime(2019, 5, 28, 7, 30, tzinfo=UTC)
    request = only_request(httpx_mock)
    assert request.method == "GET"
    assert str(request.url) == f"{BOOKINGS}/getappointment?booking_id=%23AN-00014"
    assert request.url.fragment == ""
    assert_bearer(request)


async def test_fetch_appointments(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    value = {"response": [booking("#AN-00014"), booking("#AN-00015")], "next_page_available": True, "page": 2}
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/fetchappointment", json=bookings_ok(value))
    page = await zoho.bookings.fetch_appointments(
        # New York moves to EDT on 2024-03-10: the two ends have different offsets
        datetime(2024, 3, 9, 5, 0, tzinfo=UTC),
        datetime(2024, 3, 11, 3, 59, 59, tzinfo=UTC),
        "America/New_York",
        status="UPCOMING",
        service_id="4500000000217",
        staff_id="4500000000201",
        page=2,
        per_page=50,
    )
    assert [b.booking_id for b in page.response] == ["#AN-00014", "#AN-00015"]
    assert (page.next_page_available, page.page) == (True, 2)
    request = only_request(httpx_mock)
    assert request.method == "POST"
    assert_bearer(request)
    assert form_of(request) == {
        "from_time": "09-Mar-2024 00:00:00",
        "to_time": "10-Mar-2024 23:59:59",
        "page": "2",
        "per_page": "50",
        "status": "UPCOMING",
        "service_id": "4500000000217",
        "staff_id": "4500000000201",
    }


async def test_fetch_appointments_minimal_form_and_empty_answer(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/fetchappointment", status_code=204)
    page = await zoho.bookings.fetch_appointments(datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC), "Asia/Kolkata")
    assert (page.response, page.next_page_available) == ([], False)
    assert form_of(only_request(httpx_mock)) == {"from_time": "01-May-2024 05:30:00", "to_time": "02-May-2024 05:30:00", "page": "1", "per_page": "50"}


@pytest.mark.parametrize(
    "start,wall",
    [
        (datetime(2024, 3, 8, 14, 0, tzinfo=UTC), "08-Mar-2024 09:00:00"),  # EST, UTC-5
        (datetime(2024, 3, 12, 14, 0, tzinfo=UTC), "12-Mar-2024 10:00:00"),  # EDT, UTC-4
        (datetime(2024, 11, 4, 15, 0, tzinfo=UTC), "04-Nov-2024 10:00:00"),  # EST again
        (datetime(2024, 3, 12, 19, 30, tzinfo=IST), "12-Mar-2024 10:00:00"),  # any aware zone in
    ],
)
async def test_reschedule_appointment_in_the_booking_time_zone(zoho: ZohoClient, httpx_mock: HTTPXMock, start: datetime, wall: str) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{BOOKINGS}/rescheduleappointment",
        json=bookings_ok(booking(start_time=wall, time_zone="America/New_York")),
    )
    result = await zoho.bookings.reschedule_appointment("#AN-00014", start=start, time_zone="America/New_York")
    assert result.start == start
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", f"{BOOKINGS}/rescheduleappointment")
    assert_bearer(request)
    assert form_of(request) == {"booking_id": "#AN-00014", "start_time": wall}


async def test_reschedule_to_staff(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/rescheduleappointment", json=bookings_ok(booking(staff_id="4500000000202")))
    await zoho.bookings.reschedule_appointment("#AN-00014", staff_id="4500000000202", group_id="g1")
    assert form_of(only_request(httpx_mock)) == {"booking_id": "#AN-00014", "staff_id": "4500000000202", "group_id": "g1"}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"start": datetime(2024, 3, 12, 14, 0, tzinfo=UTC)}, {"start": datetime(2024, 3, 12, 14, 0), "time_zone": "America/New_York"}],
    ids=["nothing", "no-time-zone", "naive"],
)
async def test_reschedule_checks_before_any_request(zoho: ZohoClient, httpx_mock: HTTPXMock, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        await zoho.bookings.reschedule_appointment("#AN-00014", **kwargs)
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("action", ["completed", "cancel", "noshow"])
async def test_update_appointment(zoho: ZohoClient, httpx_mock: HTTPXMock, action: str) -> None:
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/updateappointment", json=bookings_ok(booking(status=action)))
    result = await zoho.bookings.update_appointment("#AN-00014", action)
    assert result.status == action
    request = only_request(httpx_mock)
    assert (request.method, str(request.url)) == ("POST", f"{BOOKINGS}/updateappointment")
    assert form_of(request) == {"booking_id": "#AN-00014", "action": action}


async def test_bookings_failure_with_http_200(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    failure = {"response": {"returnvalue": {"message": "Appointment cannot be cancelled"}, "status": "failure"}}
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/updateappointment", json=failure)
    with pytest.raises(BookingsError) as info:
        await zoho.bookings.update_appointment("#AN-00014", "cancel")
    assert (info.value.message, info.value.status_code, info.value.endpoint) == (
        "Appointment cannot be cancelled", 200, "POST /bookings/v1/json/updateappointment",
    )


async def test_bookings_answer_without_envelope(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BOOKINGS}/updateappointment", json={"unexpected": True})
    with pytest.raises(ZohoError) as info:
        await zoho.bookings.update_appointment("#AN-00014", "cancel")
    assert info.value.code == "UNEXPECTED_ANSWER"


# ----------------------------------------------------------- transport errors
@pytest.mark.parametrize("exc", [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ReadTimeout("The read operation timed out")], ids=["connect", "timeout"])
async def test_transport_error_on_bookings(zoho: ZohoClient, httpx_mock: HTTPXMock, exc: Exception) -> None:
    httpx_mock.add_exception(exc, method="GET", url=f"{BOOKINGS}/getappointment?booking_id=%23AN-00014")
    with pytest.raises(TransportError) as info:
        await zoho.bookings.get_appointment("#AN-00014")
    error = info.value
    assert (error.code, error.endpoint, error.status_code) == (type(exc).__name__.upper(), "GET /bookings/v1/json/getappointment", None)
    assert "?" not in str(error) and "AN-00014" not in str(error)
    assert is_transient(error)


async def test_transport_error_on_refresh_hides_secrets(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("Connection refused"), method="POST", url=TOKEN_URL)
    with pytest.raises(TransportError) as info:
        await zoho.accounts.refresh(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
    assert info.value.endpoint == "POST /oauth/v2/token"
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


async def test_transport_error_on_records(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), method="GET", url=records_url(fields="Status", per_page="200", page="1"))
    with pytest.raises(TransportError) as info:
        await zoho.crm.get_records("Appointments__s", ["Status"])
    assert str(info.value) == "READTIMEOUT: no answer from Zoho [GET /crm/v7/Appointments__s]"


# ------------------------------------------------------------------ ZohoAuth
class CountingProvider:
    """Hands out ``tok-1``, ``tok-2``... and records what it was told was rejected."""

    def __init__(self) -> None:
        self.issued = 0
        self.rejected: list[str | None] = []

    async def get_access_token(self, *, rejected: SecretStr | None = None) -> SecretStr:
        self.rejected.append(rejected.get_secret_value() if rejected else None)
        self.issued += 1
        return SecretStr(f"tok-{self.issued}")


INVALID_TOKEN = crm_body("INVALID_TOKEN", "invalid oauth token")


def add_recorded(httpx_mock: HTTPXMock, sent: list[str], status_code: int = 200, json: Any = None, content: bytes | None = None, **matchers: Any) -> None:
    """A mocked answer that records the ``Authorization`` header as it was sent (the
    auth flow re-sends the same request object, so ``get_requests()`` shows the last one)."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(status_code, json=json, content=content)

    httpx_mock.add_callback(answer, **matchers)


async def test_invalid_token_is_retried_once_with_a_new_token(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    sent: list[str] = []
    add_recorded(httpx_mock, sent, 401, INVALID_TOKEN, method="PUT", url=APPOINTMENTS, match_json=SEED_INPUT)
    add_recorded(httpx_mock, sent, 200, SEED_RESPONSE, method="PUT", url=APPOINTMENTS, match_json=SEED_INPUT)
    provider = CountingProvider()
    zoho = ZohoClient(ENDPOINTS, provider, http=http)
    results = await zoho.crm.update_appointments(seed_updates())
    assert [r.ok for r in results] == [True, True, True]
    assert sent == ["Zoho-oauthtoken tok-1", "Zoho-oauthtoken tok-2"]
    assert provider.rejected == [None, "tok-1"]


async def test_second_invalid_token_is_not_retried(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    sent: list[str] = []
    for _ in range(2):
        add_recorded(httpx_mock, sent, 401, INVALID_TOKEN, method="GET", url=f"{APPOINTMENTS}/1")
    provider = CountingProvider()
    with pytest.raises(InvalidTokenError) as info:
        await ZohoClient(ENDPOINTS, provider, http=http).crm.get_record("Appointments__s", "1")
    assert (info.value.status_code, info.value.endpoint) == (401, "GET /crm/v7/Appointments__s/1")
    assert sent == ["Zoho-oauthtoken tok-1", "Zoho-oauthtoken tok-2"]
    assert provider.rejected == [None, "tok-1"]


async def test_scope_mismatch_is_not_retried(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{APPOINTMENTS}/1", status_code=401, json=crm_body("OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL"))
    provider = CountingProvider()
    with pytest.raises(ScopeMismatchError):
        await ZohoClient(ENDPOINTS, provider, http=http).crm.get_record("Appointments__s", "1")
    assert provider.rejected == [None]


async def test_invalid_token_on_a_streamed_download_is_retried(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    url = f"{BULK}/{JOB_ID}/result"
    sent: list[str] = []
    add_recorded(httpx_mock, sent, 401, INVALID_TOKEN, method="GET", url=url)
    add_recorded(httpx_mock, sent, 200, content=zipped_csv(3), method="GET", url=url)
    sink = io.BytesIO()
    assert await ZohoClient(ENDPOINTS, CountingProvider(), http=http).crm.download_bulk_result(url, sink) == len(zipped_csv(3))
    assert sent == ["Zoho-oauthtoken tok-1", "Zoho-oauthtoken tok-2"]


async def test_invalid_token_in_a_bookings_envelope_is_retried(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    url = f"{BOOKINGS}/getappointment?booking_id=%23AN-00014"
    sent: list[str] = []
    failure = {"response": {"returnvalue": {"code": "INVALID_TOKEN", "message": "Invalid OAuth token"}, "status": "failure"}}
    add_recorded(httpx_mock, sent, 401, failure, method="GET", url=url)
    add_recorded(httpx_mock, sent, 200, bookings_ok(booking()), method="GET", url=url)
    assert (await ZohoClient(ENDPOINTS, CountingProvider(), http=http).bookings.get_appointment("#AN-00014")).booking_id == "#AN-00014"
    assert sent == ["Zoho-oauthtoken tok-1", "Zoho-oauthtoken tok-2"]


async def test_static_provider_does_not_retry(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{APPOINTMENTS}/1", status_code=401, json=INVALID_TOKEN)
    with pytest.raises(InvalidTokenError) as info:
        await zoho.crm.get_record("Appointments__s", "1")
    assert (info.value.message, info.value.status_code) == ("invalid oauth token", 401)
    assert len(httpx_mock.get_requests()) == 1


async def test_caller_supplied_http_client_stays_open(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{APPOINTMENTS}/1", json={"data": [{"id": "1"}]})
    async with ZohoClient(ENDPOINTS, StaticTokenProvider(TOKEN), http=http):
        pass
    assert not http.is_closed
    async with ZohoClient(ENDPOINTS, StaticTokenProvider(TOKEN), http=http) as zoho:
        assert (await zoho.crm.get_record("Appointments__s", "1"))["id"] == "1"


async def test_own_http_client_is_closed() -> None:
    zoho = ZohoClient(ENDPOINTS)
    async with zoho:
        assert not zoho.http.is_closed
    assert zoho.http.is_closed


# ------------------------------------------------------ RefreshingTokenProvider
@pytest.fixture
def accounts(http: httpx.AsyncClient) -> AccountsClient:
    return AccountsClient(http, ACCOUNTS)


def refreshing(accounts: AccountsClient, **kwargs: Any) -> RefreshingTokenProvider:
    return RefreshingTokenProvider(accounts, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, **kwargs)


def add_tokens(httpx_mock: HTTPXMock, *tokens: str, expires_in: int = 3600) -> None:
    """Token answers that take a moment (the event loop runs other callers meanwhile)."""
    for token in tokens:

        async def answer(request: httpx.Request, token: str = token) -> httpx.Response:
            await asyncio.sleep(0.01)
            return httpx.Response(200, json=token_answer(token, expires_in))

        httpx_mock.add_callback(answer, method="POST", url=TOKEN_URL)


async def test_refreshing_provider_refreshes_once_for_concurrent_callers(accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1")
    provider = refreshing(accounts)
    tokens = await asyncio.gather(*(provider.get_access_token() for _ in range(20)))
    assert {t.get_secret_value() for t in tokens} == {"tok-1"}
    request = only_request(httpx_mock)
    assert form_of(request) == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET.get_secret_value(),
        "refresh_token": REFRESH_TOKEN.get_secret_value(),
    }
    assert provider.api_domain == API


async def test_refreshing_provider_reuses_a_valid_token(accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1")
    provider = refreshing(accounts)
    first = await provider.get_access_token()
    second = await provider.get_access_token()
    assert first.get_secret_value() == second.get_secret_value() == "tok-1"
    assert len(httpx_mock.get_requests()) == 1


async def test_refreshing_provider_refreshes_within_the_margin(accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1", "tok-2")
    provider = refreshing(accounts, margin=timedelta(minutes=5))
    assert (await provider.get_access_token()).get_secret_value() == "tok-1"
    provider.expires_at = datetime.now(UTC) + timedelta(minutes=5, seconds=5)  # just outside the margin
    assert (await provider.get_access_token()).get_secret_value() == "tok-1"
    provider.expires_at = datetime.now(UTC) + timedelta(minutes=4)  # inside it
    assert (await provider.get_access_token()).get_secret_value() == "tok-2"
    assert len(httpx_mock.get_requests()) == 2


async def test_refreshing_provider_short_lived_token_is_not_refreshed_on_every_call(accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1", "tok-2", expires_in=60)  # shorter-lived than the 5-minute margin
    provider = refreshing(accounts)
    tokens = await asyncio.gather(*(provider.get_access_token() for _ in range(20)))
    tokens.append(await provider.get_access_token())
    assert {t.get_secret_value() for t in tokens} == {"tok-1"}
    assert len(httpx_mock.get_requests()) == 1
    provider.expires_at = datetime.now(UTC) + timedelta(seconds=20)  # under half its life left
    assert (await provider.get_access_token()).get_secret_value() == "tok-2"


async def test_refreshing_provider_replaces_a_rejected_token(accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1", "tok-2")
    provider = refreshing(accounts)
    first = await provider.get_access_token()
    assert (await provider.get_access_token(rejected=first)).get_secret_value() == "tok-2"
    # the old token rejected again after it was already replaced: no new refresh
    assert (await provider.get_access_token(rejected=first)).get_secret_value() == "tok-2"
    assert len(httpx_mock.get_requests()) == 2


async def test_refreshing_provider_behind_zoho_auth(http: httpx.AsyncClient, accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    add_tokens(httpx_mock, "tok-1", "tok-2")
    sent: list[str] = []
    add_recorded(httpx_mock, sent, 401, INVALID_TOKEN, method="GET", url=f"{APPOINTMENTS}/1")
    add_recorded(httpx_mock, sent, 200, {"data": [{"id": "1"}]}, method="GET", url=f"{APPOINTMENTS}/1")
    zoho = ZohoClient(ENDPOINTS, refreshing(accounts), http=http)
    assert (await zoho.crm.get_record("Appointments__s", "1"))["id"] == "1"
    assert sent == ["Zoho-oauthtoken tok-1", "Zoho-oauthtoken tok-2"]
    assert len(httpx_mock.get_requests(url=TOKEN_URL)) == 2


async def test_token_throttle_propagates_through_zoho_auth(http: httpx.AsyncClient, accounts: AccountsClient, httpx_mock: HTTPXMock) -> None:
    throttle = {"error": "Access Denied", "error_description": "You have made too many requests continuously. Please try again after some time.", "status": "failure"}
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=400, json=throttle)
    with pytest.raises(TokenThrottledError):
        await ZohoClient(ENDPOINTS, refreshing(accounts), http=http).crm.get_record("Appointments__s", "1")
    assert httpx_mock.get_requests(url=f"{APPOINTMENTS}/1") == []


def test_zoho_auth_is_async_only() -> None:
    with pytest.raises(RuntimeError):
        next(ZohoAuth(StaticTokenProvider(TOKEN)).sync_auth_flow(httpx.Request("GET", API)))
