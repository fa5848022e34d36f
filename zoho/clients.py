"""Async httpx clients for Zoho Accounts, CRM and Bookings, sharing one connection pool.

Every request is counted and may be refused before it is sent by the run's
:class:`zoho.usage.Meter` (httpx event hooks; none installed: nothing counted).
One method per endpoint; no retries here (``tasks/`` retries transient errors with
Prefect's task retries) apart from :class:`~zoho.auth.ZohoAuth` repeating a request
once after 401 ``INVALID_TOKEN``; every request has a timeout. Errors are typed
(:mod:`zoho.errors`). Secrets travel in form bodies and headers only, never in
URLs, so httpx's request log lines cannot show them.

Usage::

    async with ZohoClient(Endpoints.for_data_centre("US"), provider) as zoho:
        job = await zoho.crm.create_bulk_read(request)
        booking = await zoho.bookings.get_appointment("#AN-00014")
"""

from __future__ import annotations

from datetime import datetime
from typing import IO, Any, Iterable, Sequence

import httpx
from pydantic import SecretStr

from . import usage
from .auth import TokenProvider, ZohoAuth
from .datacentres import Endpoints
from .errors import (
    NotFoundError,
    ZohoError,
    accounts_error,
    bookings_error,
    crm_error,
    endpoint_of,
    error_from_response,
    retry_after_of,
    transport_error,
)
from .models import (
    AppointmentUpdate,
    Booking,
    BookingAction,
    BookingsPage,
    BulkReadJob,
    BulkReadRequest,
    RecordResult,
    RecordsPage,
    TokenResponse,
    WatchChannel,
)
from .timefmt import to_bookings, to_crm

#: Default timeouts, seconds: connect, and read/write/pool.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Records per ``PUT`` (Zoho's limit, seeds 002/004).
MAX_UPDATE_RECORDS = 100


async def _send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send one request; transport failures become :class:`TransportError` (no secrets in the text)."""
    try:
        return await http.request(method, url, **kwargs)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise transport_error(exc, method, url) from exc


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_from_response(response)


def _json_or_none(response: httpx.Response) -> Any:
    """The JSON body, or None when there is none or it is not JSON (an HTML error page)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _unexpected(response: httpx.Response, what: str) -> ZohoError:
    return ZohoError("UNEXPECTED_ANSWER", what, {}, response.status_code, endpoint_of(response.request))


class AccountsClient:
    """Zoho Accounts: refresh, grant-code exchange, revoke (``{accounts}/oauth/v2/token``).

    Accounts may answer an error with HTTP 200 (``{"error": "invalid_client"}``);
    the ``error`` key decides. Raises :class:`~zoho.errors.AuthError` subclasses.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def _token_call(self, form: dict[str, str]) -> TokenResponse:
        response = await _send(self.http, "POST", f"{self.base_url}/oauth/v2/token", data=form)
        body = _json_or_none(response)
        if isinstance(body, dict) and "error" in body:
            raise accounts_error(body, response.status_code, endpoint_of(response.request), retry_after_of(response))
        _raise_for(response)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise _unexpected(response, "the token answer has no access_token")
        return TokenResponse.model_validate(body)

    async def refresh(self, client_id: str, client_secret: SecretStr, refresh_token: SecretStr) -> TokenResponse:
        """``grant_type=refresh_token``: a new access token (1 hour) and the ``api_domain``."""
        return await self._token_call(
            {
                "grant_type": "refresh_token",
                "client_id": client_id,
                "client_secret": client_secret.get_secret_value(),
                "refresh_token": refresh_token.get_secret_value(),
            }
        )

    async def exchange_code(
        self, client_id: str, client_secret: SecretStr, code: SecretStr, redirect_uri: str | None = None
    ) -> TokenResponse:
        """``grant_type=authorization_code``: the answer adds ``refresh_token``."""
        form = {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": client_secret.get_secret_value(),
            "code": code.get_secret_value(),
        }
        if redirect_uri:
            form["redirect_uri"] = redirect_uri
        return await self._token_call(form)

    async def revoke(self, token: SecretStr) -> None:
        """Revoke a refresh token (and the access tokens it minted).

        Zoho documents ``?token=`` in the query string; it is sent as a form field
        so the token never appears in a URL or a log line.
        """
        response = await _send(self.http, "POST", f"{self.base_url}/oauth/v2/token/revoke", data={"token": token.get_secret_value()})
        body = _json_or_none(response)
        if isinstance(body, dict) and "error" in body:
            raise accounts_error(body, response.status_code, endpoint_of(response.request), retry_after_of(response))
        _raise_for(response)


class CrmClient:
    """Zoho CRM: Bulk Read, records (``Appointments__s``, ``Events``), field metadata, notifications.

    ``base_url`` is the ``api_domain``; ``version`` the API version segment (``v7``).
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, auth: httpx.Auth | None, version: str = "v7") -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.version = version

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await _send(self.http, method, f"{self.base_url}{path}", auth=self.auth, **kwargs)
        _raise_for(response)
        return response

    # ---------------------------------------------------------- Bulk Read
    async def create_bulk_read(self, request: BulkReadRequest) -> BulkReadJob:
        """``POST /crm/bulk/{version}/read``: the new job (state ``ADDED``)."""
        response = await self._call("POST", f"/crm/bulk/{self.version}/read", json=request.to_json())
        entry = response.json()["data"][0]
        if entry.get("status") != "success":
            raise crm_error(entry, response.status_code, endpoint_of(response.request))
        return BulkReadJob.model_validate(entry["details"])

    async def get_bulk_read(self, job_id: str) -> BulkReadJob:
        """``GET /crm/bulk/{version}/read/{job_id}``: state, and the result once ended."""
        response = await self._call("GET", f"/crm/bulk/{self.version}/read/{job_id}")
        return BulkReadJob.model_validate(response.json()["data"][0])

    async def download_bulk_result(self, download_url: str, sink: IO[bytes], chunk_size: int = 1 << 20) -> int:
        """Stream the job's zip (``download_url``, relative to the API domain) into ``sink``; returns bytes written.

        Raises :class:`~zoho.errors.RateLimitedError` past 10 downloads a minute.
        """
        url = download_url if download_url.startswith("http") else f"{self.base_url}{download_url}"
        request = self.http.build_request("GET", url)
        try:
            response = await self.http.send(request, auth=self.auth, stream=True)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise transport_error(exc, "GET", request.url) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            written = 0
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    sink.write(chunk)
                    written += len(chunk)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise transport_error(exc, "GET", request.url, "download interrupted") from exc
            return written
        finally:
            await response.aclose()

    # ------------------------------------------------------------ records
    async def get_records(
        self,
        module: str,
        fields: Sequence[str],
        *,
        page: int = 1,
        per_page: int = 200,
        page_token: str | None = None,
        modified_since: datetime | None = None,
        ids: Iterable[str] | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
    ) -> RecordsPage:
        """``GET /crm/{version}/{module}``: one page (200 at most; ``page_token`` beyond 2,000).

        ``modified_since`` (aware) is sent as ``If-Modified-Since``; 204 and 304
        give an empty page.
        """
        params: dict[str, Any] = {"fields": ",".join(fields), "per_page": per_page}
        if page_token:
            params["page_token"] = page_token
        else:
            params["page"] = page
        if ids:
            params["ids"] = ",".join(ids)
        if sort_by:
            params["sort_by"] = sort_by
        if sort_order:
            params["sort_order"] = sort_order
        headers = {"If-Modified-Since": to_crm(modified_since)} if modified_since else None
        response = await self._call("GET", f"/crm/{self.version}/{module}", params=params, headers=headers)
        if response.status_code in (204, 304) or not response.content:
            return RecordsPage()
        payload = _json_or_none(response)
        if not isinstance(payload, dict):
            raise _unexpected(response, "the records answer is not a JSON object")
        return RecordsPage.model_validate(payload)

    async def get_record(self, module: str, record_id: str) -> dict[str, Any]:
        """``GET /crm/{version}/{module}/{id}``: the record.

        Raises :class:`~zoho.errors.NotFoundError` when Zoho answers 204 (no such record).
        """
        response = await self._call("GET", f"/crm/{self.version}/{module}/{record_id}")
        payload = _json_or_none(response)
        if response.status_code == 204 or not isinstance(payload, dict) or not payload.get("data"):
            raise NotFoundError("NO_CONTENT", f"no {module} record {record_id}", {}, response.status_code, endpoint_of(response.request))
        return payload["data"][0]

    async def update_records(self, module: str, records: Sequence[AppointmentUpdate | dict[str, Any]]) -> list[RecordResult]:
        """``PUT /crm/{version}/{module}`` with at most 100 records; per-record results in order.

        A per-record failure is a :class:`RecordResult` with ``status: error`` (use
        :func:`zoho.errors.crm_error` to type it); only a top-level failure raises.
        Raises ``ValueError`` for more than 100 records or none.
        """
        if not records or len(records) > MAX_UPDATE_RECORDS:
            raise ValueError(f"update_records takes 1 to {MAX_UPDATE_RECORDS} records, got {len(records)}")
        body = {"data": [r.to_json() if isinstance(r, AppointmentUpdate) else r for r in records]}
        response = await _send(self.http, "PUT", f"{self.base_url}/crm/{self.version}/{module}", auth=self.auth, json=body)
        payload = _json_or_none(response)
        if isinstance(payload, dict) and isinstance(payload.get("data"), list) and len(payload["data"]) == len(records):
            return [RecordResult.model_validate(entry) for entry in payload["data"]]
        _raise_for(response)
        raise _unexpected(response, "the update answer has no per-record results")

    async def update_appointments(self, updates: Sequence[AppointmentUpdate]) -> list[RecordResult]:
        """Reschedule / cancel / complete up to 100 ``Appointments__s`` records (seeds 002/004)."""
        return await self.update_records("Appointments__s", updates)

    async def get_fields(self, module: str) -> list[dict[str, Any]]:
        """``GET /crm/{version}/settings/fields?module=``: field metadata (``api_name``, ``data_type``...)."""
        response = await self._call("GET", f"/crm/{self.version}/settings/fields", params={"module": module})
        return response.json()["fields"]

    # ------------------------------------------------------ notifications
    async def watch(self, channels: Sequence[WatchChannel]) -> list[RecordResult]:
        """``POST /crm/{version}/actions/watch``: subscribe channels; per-channel results.

        A per-channel failure is a :class:`RecordResult` with ``status: error``; a
        top-level failure raises the typed error.
        """
        response = await _send(
            self.http, "POST", f"{self.base_url}/crm/{self.version}/actions/watch", auth=self.auth,
            json={"watch": [c.to_json() for c in channels]},
        )
        payload = _json_or_none(response)
        if isinstance(payload, dict) and isinstance(payload.get("watch"), list):
            return [RecordResult.model_validate(e) for e in payload["watch"]]
        _raise_for(response)
        raise _unexpected(response, "the watch answer has no per-channel results")

    async def get_watch(self) -> list[dict[str, Any]]:
        """``GET /crm/{version}/actions/watch``: active channels (empty when none)."""
        response = await self._call("GET", f"/crm/{self.version}/actions/watch")
        payload = _json_or_none(response)
        return payload.get("watch", []) if isinstance(payload, dict) else []

    async def unwatch(self, channel_ids: Sequence[str | int]) -> list[RecordResult]:
        """``DELETE /crm/{version}/actions/watch?channel_ids=``: unsubscribe."""
        response = await self._call(
            "DELETE", f"/crm/{self.version}/actions/watch", params={"channel_ids": ",".join(str(c) for c in channel_ids)}
        )
        payload = _json_or_none(response)
        return [RecordResult.model_validate(e) for e in (payload.get("watch", []) if isinstance(payload, dict) else [])]


class BookingsClient:
    """Zoho Bookings v1 (``{api}/bookings/v1/json``); answers use ``{"response": {...}}``.

    A ``status: failure`` answer (HTTP 200) raises :class:`~zoho.errors.BookingsError`.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, auth: httpx.Auth | None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.auth = auth

    async def _call(self, method: str, name: str, *, allow_empty: bool = False, **kwargs: Any) -> Any:
        """The ``returnvalue`` of a success envelope; None for an empty 204 when ``allow_empty``."""
        response = await _send(self.http, method, f"{self.base_url}/{name}", auth=self.auth, **kwargs)
        body = _json_or_none(response)
        if isinstance(body, dict) and isinstance(body.get("response"), dict):
            if body["response"].get("status") != "success" or response.status_code >= 400:
                raise bookings_error(body, response.status_code, endpoint_of(response.request), retry_after_of(response))
            return body["response"].get("returnvalue")
        _raise_for(response)
        if allow_empty and response.status_code == 204:
            return None
        raise _unexpected(response, "the answer has no response envelope")

    async def get_appointment(self, booking_id: str) -> Booking:
        """``GET getappointment?booking_id=`` (the ``#`` of ``#AN-00014`` is URL-encoded)."""
        return Booking.model_validate(await self._call("GET", "getappointment", params={"booking_id": booking_id}))

    async def fetch_appointments(
        self,
        from_time: datetime,
        to_time: datetime,
        time_zone: str,
        *,
        status: str | None = None,
        service_id: str | None = None,
        staff_id: str | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> BookingsPage:
        """``POST fetchappointment``: bookings starting in [``from_time``, ``to_time``]
        (aware; sent as ``dd-MMM-yyyy HH:mm:ss`` in the workspace's ``time_zone``).

        An empty answer (HTTP 204) is an empty page.
        """
        form: dict[str, Any] = {
            "from_time": to_bookings(from_time, time_zone),
            "to_time": to_bookings(to_time, time_zone),
            "page": page,
            "per_page": per_page,
        }
        for key, value in (("status", status), ("service_id", service_id), ("staff_id", staff_id)):
            if value:
                form[key] = value
        value = await self._call("POST", "fetchappointment", allow_empty=True, data=form)
        return BookingsPage.model_validate(value or {})

    async def reschedule_appointment(
        self,
        booking_id: str,
        *,
        start: datetime | None = None,
        time_zone: str | None = None,
        staff_id: str | None = None,
        group_id: str | None = None,
    ) -> Booking:
        """``POST rescheduleappointment``: move to ``start`` (aware; written as wall time in the
        booking's ``time_zone``, as seed 000 does) and/or to another staff or group.

        Raises ``ValueError`` when nothing is asked or ``start`` comes without ``time_zone``.
        """
        form: dict[str, str] = {"booking_id": booking_id}
        if start is not None:
            if not time_zone:
                raise ValueError("reschedule_appointment needs the booking's time_zone to format start")
            form["start_time"] = to_bookings(start, time_zone)
        if staff_id:
            form["staff_id"] = staff_id
        if group_id:
            form["group_id"] = group_id
        if len(form) == 1:
            raise ValueError("reschedule_appointment needs start, staff_id or group_id")
        return Booking.model_validate(await self._call("POST", "rescheduleappointment", data=form))

    async def update_appointment(self, booking_id: str, action: BookingAction) -> Booking:
        """``POST updateappointment``: ``completed``, ``cancel`` or ``noshow``."""
        return Booking.model_validate(await self._call("POST", "updateappointment", data={"booking_id": booking_id, "action": action}))


class ZohoClient:
    """The three product clients over one ``httpx.AsyncClient`` (one connection pool).

    ``provider`` supplies access tokens for CRM and Bookings; Accounts calls carry
    none. Use as an async context manager, or call :meth:`aclose`. A caller-supplied
    ``http`` client is left open (its owner closes it).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        provider: TokenProvider | None = None,
        *,
        crm_version: str = "v7",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoints = endpoints
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=20))
        hooks = self.http.event_hooks
        if usage.admit not in hooks["request"]:  # count and limit every call (zoho.usage); once per pool
            self.http.event_hooks = {"request": [*hooks["request"], usage.admit], "response": [*hooks["response"], usage.record]}
        auth = ZohoAuth(provider) if provider is not None else None
        self.accounts = AccountsClient(self.http, endpoints.accounts)
        self.crm = CrmClient(self.http, endpoints.crm, auth, crm_version)
        self.bookings = BookingsClient(self.http, endpoints.bookings, auth)

    async def aclose(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> "ZohoClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
