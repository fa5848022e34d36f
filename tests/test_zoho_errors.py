"""Typed Zoho errors (``zoho/errors.py``), driven through the clients with pytest-httpx.

Bodies are Zoho's documented ones: the CRM "Possible Errors" table of seed 002
(Update Appointments), the Accounts answers and the Bookings failure envelope of
``shared/zoho-api-notes.md``.
"""

from __future__ import annotations

import pickle
import ssl
from typing import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from pytest_httpx import HTTPXMock

from zoho.auth import StaticTokenProvider
from zoho.clients import ZohoClient
from zoho.datacentres import Endpoints
from zoho.errors import (
    AuthError,
    BookingsError,
    DependentFieldError,
    InvalidClientError,
    InvalidDataError,
    InvalidGrantError,
    InvalidTokenError,
    NoPermissionError,
    NotAllowedError,
    NotFoundError,
    ApiLimitError,
    RateLimitedError,
    ScopeMismatchError,
    ServerError,
    TokenThrottledError,
    TransportError,
    ZohoError,
    crm_error,
    is_transient,
)
from zoho.models import AppointmentUpdate

ENDPOINTS = Endpoints.for_data_centre("US")
API = ENDPOINTS.crm
APPOINTMENTS = f"{API}/crm/v7/Appointments__s"
TOKEN_URL = f"{ENDPOINTS.accounts}/oauth/v2/token"
THROTTLE = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "status": "failure",
}


#: One TLS context for every test client: building one per client costs ~0.15 s.
TLS = ssl.create_default_context()


@pytest.fixture
async def zoho() -> AsyncIterator[ZohoClient]:
    async with httpx.AsyncClient(verify=TLS) as http:
        yield ZohoClient(ENDPOINTS, StaticTokenProvider("1000.static.token"), http=http)


def crm_body(code: str, message: str, details: dict | None = None) -> dict:
    """A CRM error body: ``{"code", "details", "message", "status": "error"}``."""
    return {"code": code, "details": details or {}, "message": message, "status": "error"}


async def failed_update(zoho: ZohoClient) -> ZohoError:
    """The error ``PUT /crm/v7/Appointments__s`` raises (with the mock already set up)."""
    with pytest.raises(ZohoError) as info:
        await zoho.crm.update_appointments([AppointmentUpdate.cancel("5545974000002254060")])
    return info.value


async def failed_refresh(zoho: ZohoClient) -> ZohoError:
    with pytest.raises(ZohoError) as info:
        await zoho.accounts.refresh("1000.CLIENTID", SecretStr("client-secret-xyz"), SecretStr("1000.refresh.secret"))
    return info.value


#: Seed 002 "Possible Errors": code, HTTP status, message, expected class.
SEED_002_ERRORS = [
    ("DEPENDENT_FIELD_MISSING", 400, "You are trying to reschedule the appointment without specifying value for Appointment_Start_Time.", DependentFieldError),
    ("DEPENDENT_FIELD_UNCHANGED", 400, "You are trying to reschedule the appointment to the existing Appointment_Start_Time.", DependentFieldError),
    ("DEPENDENT_MISMATCH", 400, "You are trying to cancel an appointment with an invalid status.", DependentFieldError),
    ("DEPENDENT_FIELD_MISMATCH", 400, "You have specified either 'Completed' or 'Overdue' status before the appointment time ends.", DependentFieldError),
    ("INVALID_DATA", 400, "You have specified an invalid appointment ID.", InvalidDataError),
    ("INVALID_MODULE", 400, "You have given an invalid module name in the request URL.", InvalidDataError),
    ("INVALID_REQUEST_METHOD", 400, "You have specified an invalid http request method type.", InvalidDataError),
    ("MANDATORY_NOT_FOUND", 400, "You have failed to provide the ID of the appointment which has to be updated.", InvalidDataError),
    ("INVALID_TOKEN", 401, "invalid oauth token", InvalidTokenError),
    ("OAUTH_SCOPE_MISMATCH", 401, "You created the grant token using wrong oauth scope.", ScopeMismatchError),
    ("NO_PERMISSION", 403, "You do not have permission to update any appointments.", NoPermissionError),
    ("NOT_ALLOWED", 403, "You have tried to reschedule either a completed or cancelled appointment.", NotAllowedError),
    ("INVALID_URL_PATTERN", 404, "Please check if the URL trying to access is a correct one", NotFoundError),
    ("INTERNAL_ERROR", 500, "Internal Server Error", ServerError),
]


@pytest.mark.parametrize("code,status,message,cls", SEED_002_ERRORS, ids=[row[0] for row in SEED_002_ERRORS])
async def test_seed_002_error_table(zoho: ZohoClient, httpx_mock: HTTPXMock, code: str, status: int, message: str, cls: type) -> None:
    details = {"api_name": "Appointment_Start_Time", "json_path": "$.data[0].Appointment_Start_Time"}
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=status, json=crm_body(code, message, details))
    error = await failed_update(zoho)
    assert type(error) is cls
    assert (error.code, error.message, error.details, error.status_code) == (code, message, details, status)
    assert error.endpoint == "PUT /crm/v7/Appointments__s"
    assert code in str(error) and "PUT /crm/v7/Appointments__s" in str(error)
    assert len(httpx_mock.get_requests()) == 1  # never retried here (INVALID_TOKEN: static token has no other)


def test_dependent_field_error_is_invalid_data() -> None:
    assert issubclass(DependentFieldError, InvalidDataError)
    assert issubclass(TokenThrottledError, AuthError) and issubclass(InvalidClientError, AuthError)


@pytest.mark.parametrize("code,status,message,cls", SEED_002_ERRORS, ids=[row[0] for row in SEED_002_ERRORS])
def test_per_record_error_of_a_2xx_answer(code: str, status: int, message: str, cls: type) -> None:
    error = crm_error(crm_body(code, message, {"id": "5545974000002254060"}))
    assert type(error) is cls
    assert (error.code, error.status_code, error.details) == (code, None, {"id": "5545974000002254060"})


async def test_endpoint_has_no_query_string(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET",
        url=httpx.URL(APPOINTMENTS, params={"fields": "Status", "per_page": "200", "page": "1"}),
        status_code=400,
        json=crm_body("REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "fields"}),
    )
    with pytest.raises(InvalidDataError) as info:
        await zoho.crm.get_records("Appointments__s", ["Status"])
    assert info.value.endpoint == "GET /crm/v7/Appointments__s"
    assert "?" not in str(info.value) and "per_page" not in str(info.value)


async def test_429_too_many_requests_with_retry_after(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="PUT", url=APPOINTMENTS, status_code=429, headers={"Retry-After": "42"},
        json=crm_body("TOO_MANY_REQUESTS", "too many requests", {"concurrency_limit": 10}),
    )
    error = await failed_update(zoho)
    assert type(error) is RateLimitedError
    assert (error.code, error.status_code, error.retry_after) == ("TOO_MANY_REQUESTS", 429, 42.0)
    assert is_transient(error)


@pytest.mark.parametrize(
    "headers,retry_after,expected",
    [
        ({}, None, ApiLimitError),  # no wait given: the day's limit, not a throttle
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, ApiLimitError),  # HTTP-date form is not read
        ({"Retry-After": "1.5"}, 1.5, RateLimitedError),
        ({"Retry-After": "90"}, 90.0, RateLimitedError),
        ({"Retry-After": "91"}, 91.0, ApiLimitError),  # longer than THROTTLE_MAX_SECONDS
    ],
)
async def test_429_without_json_body(zoho: ZohoClient, httpx_mock: HTTPXMock, headers: dict, retry_after: float | None, expected: type) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=429, headers=headers, text="Too Many Requests")
    error = await failed_update(zoho)
    assert type(error) is expected
    assert error.retry_after == retry_after
    assert is_transient(error) is (expected is RateLimitedError)


async def test_bookings_daily_limit_is_an_api_limit_whatever_the_status(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    body = {"response": {"returnvalue": {"message": "API call limit of 250 calls per day exceeded", "code": "API_LIMIT_EXCEEDED"}, "status": "failure"}}
    for status in (200, 429):
        httpx_mock.add_response(status_code=status, json=body, headers={"Retry-After": "30"})
        with pytest.raises(ApiLimitError) as info:
            await zoho.bookings.get_appointment("#AN-1")
        assert not is_transient(info.value) and "250 calls" in info.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_non_json_5xx_is_server_error(zoho: ZohoClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=status, html="<html><body>Bad Gateway</body></html>")
    error = await failed_update(zoho)
    assert type(error) is ServerError
    assert (error.status_code, error.endpoint) == (status, "PUT /crm/v7/Appointments__s")
    assert is_transient(error)


async def test_unknown_code_with_5xx_is_server_error(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=503, json=crm_body("SERVICE_UNAVAILABLE", "try later"))
    assert type(await failed_update(zoho)) is ServerError


async def test_unknown_code_with_4xx_is_invalid_data(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=400, json=crm_body("LIMIT_EXCEEDED", "more than 100 records"))
    error = await failed_update(zoho)
    assert type(error) is InvalidDataError and error.code == "LIMIT_EXCEEDED"


async def test_non_json_404_is_not_found(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PUT", url=APPOINTMENTS, status_code=404, text="Not Found")
    assert type(await failed_update(zoho)) is NotFoundError


# ------------------------------------------------------------------ Accounts
@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize(
    "body,cls,code",
    [
        ({"error": "invalid_client"}, InvalidClientError, "invalid_client"),
        ({"error": "invalid_code"}, InvalidGrantError, "invalid_code"),
        (THROTTLE, TokenThrottledError, "ACCESS_DENIED"),
        ({"error": "unsupported_grant_type"}, AuthError, "unsupported_grant_type"),
    ],
)
async def test_accounts_errors_by_error_key_not_status(zoho: ZohoClient, httpx_mock: HTTPXMock, status: int, body: dict, cls: type, code: str) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=status, json=body)
    error = await failed_refresh(zoho)
    assert type(error) is cls
    assert (error.code, error.status_code, error.endpoint) == (code, status, "POST /oauth/v2/token")
    for secret in ("client-secret-xyz", "1000.refresh.secret"):
        assert secret not in str(error) and secret not in repr(error)


async def test_accounts_throttle_message_and_transience(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json=THROTTLE)
    error = await failed_refresh(zoho)
    assert error.message == THROTTLE["error_description"]
    assert is_transient(error)


# ------------------------------------------------------------------ Bookings
BOOKINGS_URL = f"{ENDPOINTS.bookings}/getappointment?booking_id=%23AN-00014"


def bookings_failure(message: str, **extra: object) -> dict:
    return {"response": {"returnvalue": {"message": message, **extra}, "status": "failure"}}


async def failed_booking(zoho: ZohoClient) -> ZohoError:
    with pytest.raises(ZohoError) as info:
        await zoho.bookings.get_appointment("#AN-00014")
    return info.value


async def test_bookings_failure_envelope_with_http_200(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=BOOKINGS_URL, json=bookings_failure("Invalid booking id"))
    error = await failed_booking(zoho)
    assert type(error) is BookingsError
    assert (error.message, error.status_code, error.endpoint) == ("Invalid booking id", 200, "GET /bookings/v1/json/getappointment")
    assert "AN-00014" not in str(error)
    assert not is_transient(error)


async def test_bookings_errormessage_form(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=BOOKINGS_URL, json={"response": {"errormessage": "Booking not found", "status": "failure"}})
    error = await failed_booking(zoho)
    assert type(error) is BookingsError and error.message == "Booking not found"


@pytest.mark.parametrize(
    "status,headers,cls,retry_after",
    [(401, {}, InvalidTokenError, None), (429, {"Retry-After": "7"}, RateLimitedError, 7.0), (500, {}, ServerError, None)],
)
async def test_bookings_failure_by_status(zoho: ZohoClient, httpx_mock: HTTPXMock, status: int, headers: dict, cls: type, retry_after: float | None) -> None:
    httpx_mock.add_response(method="GET", url=BOOKINGS_URL, status_code=status, headers=headers, json=bookings_failure("failed"))
    error = await failed_booking(zoho)
    assert type(error) is cls and error.status_code == status
    assert getattr(error, "retry_after", None) == retry_after


async def test_bookings_scope_mismatch(zoho: ZohoClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=BOOKINGS_URL, status_code=401, json=bookings_failure("scope", code="OAUTH_SCOPE_MISMATCH"))
    assert type(await failed_booking(zoho)) is ScopeMismatchError


# ---------------------------------------------------------------- transience
@pytest.mark.parametrize(
    "exc,transient",
    [
        (RateLimitedError("TOO_MANY_REQUESTS", retry_after=3), True),
        (ServerError("INTERNAL_ERROR"), True),
        (TokenThrottledError("ACCESS_DENIED"), True),
        (TransportError("CONNECTERROR"), True),
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.ConnectTimeout("connect timed out"), True),
        (httpx.PoolTimeout("pool"), True),
        (httpx.ConnectError("refused"), True),
        (InvalidTokenError("INVALID_TOKEN"), False),
        (ScopeMismatchError("OAUTH_SCOPE_MISMATCH"), False),
        (NoPermissionError("NO_PERMISSION"), False),
        (NotAllowedError("NOT_ALLOWED"), False),
        (DependentFieldError("DEPENDENT_FIELD_UNCHANGED"), False),
        (InvalidDataError("INVALID_DATA"), False),
        (NotFoundError("INVALID_URL_PATTERN"), False),
        (InvalidClientError("invalid_client"), False),
        (InvalidGrantError("invalid_code"), False),
        (BookingsError("BOOKINGS_FAILURE"), False),
        (ZohoError("UNEXPECTED_ANSWER"), False),
        (ValueError("not Zoho"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_errors_survive_pickling() -> None:
    """Prefect stores task exceptions by pickling them; the attributes must come back."""
    error = RateLimitedError("TOO_MANY_REQUESTS", "slow down", {"limit": 10}, 429, "PUT /crm/v7/Appointments__s", retry_after=30.0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitedError
    assert (copy.code, copy.message, copy.details, copy.status_code, copy.endpoint, copy.retry_after) == (
        "TOO_MANY_REQUESTS", "slow down", {"limit": 10}, 429, "PUT /crm/v7/Appointments__s", 30.0,
    )
    assert str(copy) == str(error)
