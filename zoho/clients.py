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
from pydantic import SecretStr, ValidationError

from . import usage
from .auth import TokenProvider, ZohoAuth, check_own_host
from .datacentres import Endpoints
from .errors import (
    InvalidBookingError,
    InvalidDataError,
    NotFoundError,
    ZohoError,
    accounts_error,
    bookings_error,
    bulk_read_refused,
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
    booking_problems,
)
from .timefmt import to_bookings, to_crm

#: Default timeouts, seconds: connect, and read/write/pool.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Records per ``PUT`` (Zoho's limit, seeds 002/004).
MAX_UPDATE_RECORDS = 100
#: Most characters of one ``?ids=`` value, URL-encoded: 100 ids of 25 digits and their commas
#: (``%2C``) fit, and the whole URL stays far under the 8 KB request lines servers and proxies take.
MAX_IDS_QUERY_CHARS = 3_000


def chunk_ids(ids: Sequence[str], per_call: int = 100, max_chars: int = MAX_IDS_QUERY_CHARS) -> list[list[str]]:
    """``ids`` in order, cut into chunks for ``GET ...?ids=``: at most ``per_call`` ids and ``max_chars``
    URL-encoded characters (ids and ``%2C`` separators) each. Raises ``ValueError`` (naming the
    length, not the id) for an id that alone is longer than ``max_chars``: no request could carry it."""
    from urllib.parse import quote

    chunks: list[list[str]] = []
    size = 0
    for i in ids:
        length = len(quote(i, safe=""))
        if length > max_chars:
            raise ValueError(f"a record id of {len(i):,} characters cannot be read by id (ids are at most {max_chars:,} URL characters)")
        if not chunks or len(chunks[-1]) >= per_call or size + 3 + length > max_chars:
            chunks.append([])
            size = -3
        chunks[-1].append(i)
        size += 3 + length
    return chunks


async def _send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send one request; transport failures become :class:`TransportError` (no secrets in the text)."""
    try:
        return await http.request(method, url, **kwargs)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise transport_error(exc, method, url) from exc


def own_url(base_url: str, url: str) -> httpx.URL:
    """``url`` resolved against ``base_url`` (a path is appended to it, as Zoho's relative
    ``download_url`` is meant), checked to be on ``base_url``'s origin (scheme, host, port).

    Raises :class:`~zoho.errors.ForeignHostError` for another origin (a scheme-relative
    ``//host/...`` included) and ``ZohoError`` ``INVALID_DOWNLOAD_URL`` for text that is no URL;
    neither error quotes more than the URL's origin.
    """
    base = base_url.rstrip("/")
    try:
        if url.startswith("/") and not url.startswith("//"):
            resolved = httpx.URL(f"{base}{url}")
        else:
            resolved = httpx.URL(f"{base}/").join(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ZohoError("INVALID_DOWNLOAD_URL", f"the Bulk Read download_url ({len(url):,} characters) is not a URL") from None
    check_own_host(resolved, [base])
    return resolved


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
        """``POST {accounts}/oauth/v2/token`` with ``form``: the validated answer.

        Raises the typed Accounts error for an ``error`` answer, ``ZohoError``
        ``UNEXPECTED_ANSWER`` without an ``access_token``, and ``ZohoError``
        ``INVALID_TOKEN_ANSWER`` when the answer does not validate: its text names
        each bad field and pydantic's error type only, never a value (the answer
        holds the token), and it is raised ``from None``, so no traceback shows
        pydantic's error either.
        """
        response = await _send(self.http, "POST", f"{self.base_url}/oauth/v2/token", data=form)
        body = _json_or_none(response)
        if isinstance(body, dict) and "error" in body:
            raise accounts_error(body, response.status_code, endpoint_of(response.request), retry_after_of(response))
        _raise_for(response)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise _unexpected(response, "the token answer has no access_token")
        try:
            return TokenResponse.model_validate(body)
        except ValidationError as exc:
            # Field and error type only; a value_error's text is TokenResponse's own words (it quotes nothing).
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg'] if e['type'] == 'value_error' else e['type']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ZohoError(
                "INVALID_TOKEN_ANSWER", f"the token answer does not validate ({fields})", {}, response.status_code, endpoint_of(response.request)
            ) from None

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
        """``POST /crm/bulk/{version}/read``: the new job (state ``ADDED``).

        Zoho refuses a job it could not run when it is created (crm-oas v8.0 ``bulk_read.json``:
        400 ``INVALID_CRITERIA``, ``FIELD_NOT_SUPPORTED``, ``MODULE_NOT_SUPPORTED``...; 415
        ``MEDIA_TYPE_NOT_SUPPORTED``), top-level or in ``data[0]``: raised as
        :class:`~zoho.errors.BulkReadRefusedError`, its message naming the field, module or
        criterion (not transient: never retried). Token, scope, limit and server errors keep
        their own types.
        """
        try:
            response = await self._call("POST", f"/crm/bulk/{self.version}/read", json=request.to_json())
        except (InvalidDataError, NotFoundError) as exc:
            raise bulk_read_refused(exc) from exc
        entry = response.json()["data"][0]
        if entry.get("status") != "success":
            error = crm_error(entry, response.status_code, endpoint_of(response.request))
            raise bulk_read_refused(error) if isinstance(error, InvalidDataError) else error
        return BulkReadJob.model_validate(entry["details"])

    async def get_bulk_read(self, job_id: str) -> BulkReadJob:
        """``GET /crm/bulk/{version}/read/{job_id}``: state, and the result once ended."""
        response = await self._call("GET", f"/crm/bulk/{self.version}/read/{job_id}")
        return BulkReadJob.model_validate(response.json()["data"][0])

    async def download_bulk_result(self, download_url: str, sink: IO[bytes], chunk_size: int = 1 << 20) -> int:
        """Stream the job's zip (``download_url``) into ``sink``; returns bytes written.

        ``download_url`` is relative to the API domain (``/crm/bulk/v7/read/{id}/result``, as
        Zoho sends it) or absolute on the API domain itself; the access token goes to the
        API domain only. Raises :class:`~zoho.errors.ForeignHostError` (nothing sent) when the
        URL's scheme, host or port is not the API domain's (a forged callback's), ``ZohoError``
        ``INVALID_DOWNLOAD_URL`` when it is no URL, :class:`~zoho.errors.RateLimitedError`
        past 10 downloads a minute.
        """
        url = own_url(self.base_url, download_url)
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

    async def get_record(self, module: str, record_id: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """``GET /crm/{version}/{module}/{id}``: the record (only ``fields``, and ``id``, when given).

        Raises :class:`~zoho.errors.NotFoundError` when Zoho answers 204 (no such record).
        """
        params = {"fields": ",".join(fields)} if fields else None
        response = await self._call("GET", f"/crm/{self.version}/{module}/{record_id}", params=params)
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

    async def delete_records(self, module: str, ids: Sequence[str]) -> list[RecordResult]:
        """``DELETE /crm/{version}/{module}?ids=1,2`` (Zoho's Delete Records API) with 1 to 100 ids;
        per-record results in the order Zoho gives them (each names its ``details.id``).

        A per-record failure is a :class:`RecordResult` with ``status: error``; only a top-level
        failure raises. Raises ``ValueError`` for more than 100 ids or none.
        """
        if not ids or len(ids) > MAX_UPDATE_RECORDS:
            raise ValueError(f"delete_records takes 1 to {MAX_UPDATE_RECORDS} ids, got {len(ids)}")
        response = await _send(self.http, "DELETE", f"{self.base_url}/crm/{self.version}/{module}", auth=self.auth, params={"ids": ",".join(ids)})
        payload = _json_or_none(response)
        if isinstance(payload, dict) and isinstance(payload.get("data"), list) and payload["data"]:
            return [RecordResult.model_validate(entry) for entry in payload["data"]]
        _raise_for(response)
        raise _unexpected(response, "the delete answer has no per-record results")

    async def update_appointments(self, updates: Sequence[AppointmentUpdate]) -> list[RecordResult]:
        """Reschedule / cancel / complete up to 100 ``Appointments__s`` records (seeds 002/004)."""
        return await self.update_records("Appointments__s", updates)

    async def get_fields(self, module: str) -> list[dict[str, Any]]:
        """``GET /crm/{version}/settings/fields?module=``: field metadata (``api_name``, ``data_type``...)."""
        response = await self._call("GET", f"/crm/{self.version}/settings/fields", params={"module": module})
        return response.json()["fields"]

    # ------------------------------------------------------ notifications
    # Zoho CRM Notification APIs (v7/v8 docs, crm-oas v8.0 ``notifications.json``): POST
    # subscribes, PUT updates a channel and replaces its details, PATCH changes only what is
    # given (``"_delete_events": true`` removes the listed events), GET lists, DELETE
    # unsubscribes. A ``channel_expiry`` left out or more than a week ahead gives one hour,
    # silently: read the expiry back (:meth:`get_channel`) after writing one.
    async def _watch_write(self, method: str, entries: list[dict[str, Any]]) -> list[RecordResult]:
        """``{method} /crm/{version}/actions/watch`` with ``{"watch": entries}``; per-channel results in order.

        A per-channel failure is a :class:`RecordResult` with ``status: error``; a
        top-level failure raises the typed error.
        """
        response = await _send(self.http, method, f"{self.base_url}/crm/{self.version}/actions/watch", auth=self.auth, json={"watch": entries})
        payload = _json_or_none(response)
        if isinstance(payload, dict) and isinstance(payload.get("watch"), list):
            return [RecordResult.model_validate(e) for e in payload["watch"]]
        _raise_for(response)
        raise _unexpected(response, "the watch answer has no per-channel results")

    async def watch(self, channels: Sequence[WatchChannel]) -> list[RecordResult]:
        """``POST /crm/{version}/actions/watch``: subscribe channels; per-channel results (see :meth:`_watch_write`)."""
        return await self._watch_write("POST", [c.to_json() for c in channels])

    async def update_watch(self, channels: Sequence[WatchChannel]) -> list[RecordResult]:
        """``PUT /crm/{version}/actions/watch``: update subscribed channels, replacing their details
        (events, ``notify_url``, token, ``channel_expiry``: what a channel leaves out takes Zoho's
        default, e.g. no token, one hour). The verb to renew a channel that is still active."""
        return await self._watch_write("PUT", [c.to_json() for c in channels])

    async def patch_watch(self, changes: Sequence[dict[str, Any]]) -> list[RecordResult]:
        """``PATCH /crm/{version}/actions/watch``: change only the given keys of each channel
        (``{"channel_id": ..., "channel_expiry": ...}``); ``events`` given are added."""
        return await self._watch_write("PATCH", [dict(c) for c in changes])

    async def unwatch_events(self, channel_id: int | str, events: Sequence[str]) -> list[RecordResult]:
        """``PATCH`` with ``"_delete_events": true``: stop notifying ``events`` on the channel (the rest stay)."""
        return await self._watch_write("PATCH", [{"channel_id": channel_id, "events": list(events), "_delete_events": True}])

    async def get_watch(self) -> list[dict[str, Any]]:
        """``GET /crm/{version}/actions/watch``: active channels (empty when none)."""
        response = await self._call("GET", f"/crm/{self.version}/actions/watch")
        payload = _json_or_none(response)
        return payload.get("watch", []) if isinstance(payload, dict) else []

    async def get_channel(self, channel_id: int | str) -> dict[str, Any] | None:
        """The active channel ``channel_id`` as ``GET /crm/{version}/actions/watch?channel_id=`` lists it
        (``channel_expiry`` is the expiry Zoho set, not the one asked for), or None."""
        response = await self._call("GET", f"/crm/{self.version}/actions/watch", params={"channel_id": str(channel_id)})
        payload = _json_or_none(response)
        listed = payload.get("watch", []) if isinstance(payload, dict) else []
        return next((c for c in listed if isinstance(c, dict) and str(c.get("channel_id")) == str(channel_id)), None)

    async def unwatch(self, channel_ids: Sequence[str | int]) -> list[RecordResult]:
        """``DELETE /crm/{version}/actions/watch?channel_ids=``: unsubscribe."""
        response = await self._call(
            "DELETE", f"/crm/{self.version}/actions/watch", params={"channel_ids": ",".join(str(c) for c in channel_ids)}
        )
        payload = _json_or_none(response)
        return [RecordResult.model_validate(e) for e in (payload.get("watch", []) if isinstance(payload, dict) else [])]


class BookingsClient:
    """Zoho Bookings v1 (``{api}/bookings/v1/json``); answers use ``{"response": {...}}``.

    A failure raises :class:`~zoho.errors.BookingsError` (HTTP 200; typed by
    :func:`~zoho.errors.bookings_error` otherwise: 401, the daily limit, 429, 5xx) in
    both shapes Zoho shows (zoho-api-notes "More contract points"; public clients check
    both: Pipedream's ``zoho_bookings`` reschedule action, the Activepieces piece):
    ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}`` and a failure
    inside a success, ``{"response": {"returnvalue": {"status": "failure", "message": ...},
    "status": "success"}}``. A booking in an answer that cannot be read (a missing or
    non-string field, an unknown ``time_zone``, a time that does not parse) raises
    :class:`~zoho.errors.InvalidBookingError` for one booking; a ``fetchappointment``
    page keeps its readable bookings and lists the others in ``rejected``.
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
            envelope = body["response"]
            value = envelope.get("returnvalue")
            nested_failure = isinstance(value, dict) and str(value.get("status", "")).lower() == "failure"
            if envelope.get("status") != "success" or nested_failure or response.status_code >= 400:
                raise bookings_error(body, response.status_code, endpoint_of(response.request), retry_after_of(response))
            return value
        _raise_for(response)
        if allow_empty and response.status_code == 204:
            return None
        raise _unexpected(response, "the answer has no response envelope")

    @staticmethod
    def _booking(value: Any, endpoint: str, asked: str | None = None) -> Booking:
        """``value`` (a ``returnvalue``) as a :class:`Booking`, or :class:`InvalidBookingError`
        naming the booking (the one in the answer, else the one ``asked`` for) and what was wrong."""
        try:
            return Booking.model_validate(value)
        except ValidationError as exc:
            raw_id = value.get("booking_id") if isinstance(value, dict) else None
            booking_id = raw_id if isinstance(raw_id, str) and raw_id else asked
            problems = booking_problems(exc)
            raise InvalidBookingError(
                "INVALID_BOOKING", f"booking {booking_id or '?'} cannot be read: {problems}", {"booking_id": booking_id, "problems": problems}, 200, endpoint
            ) from None

    async def get_appointment(self, booking_id: str) -> Booking:
        """``GET getappointment?booking_id=`` (the ``#`` of ``#AN-00014`` is URL-encoded).

        Raises :class:`~zoho.errors.BookingsError` when Bookings refuses (either failure
        shape), :class:`~zoho.errors.InvalidBookingError` when the booking cannot be read.
        """
        value = await self._call("GET", "getappointment", params={"booking_id": booking_id})
        return self._booking(value, "GET /bookings/v1/json/getappointment", booking_id)

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

        Zoho documents no time zone for ``from_time``/``to_time``; this assumes the
        workspace's own (the sandbox reads them in its ``org_time_zone``), so
        ``time_zone`` must be the workspace's IANA zone (the config block's
        ``bookings_time_zone``, set at onboarding). A wrong zone shifts the window by
        the zones' difference: bookings near its ends are missed or read twice.

        ``per_page`` defaults to 50 (paging is not documented; a public client caps it at 50;
        100 halves the calls where the workspace accepts it). An empty answer (HTTP 204, what a
        public client expects of an empty page) is an empty page. Bookings that cannot be read
        are the page's ``rejected`` (:class:`~zoho.models.BookingsPage`), the rest are read; an
        answer that is no page at all raises :class:`~zoho.errors.ZohoError` ``UNEXPECTED_ANSWER``.
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
        try:
            return BookingsPage.model_validate(value or {})
        except ValidationError as exc:
            raise ZohoError("UNEXPECTED_ANSWER", f"the fetchappointment answer is not a page: {booking_problems(exc)}", {}, 200, "POST /bookings/v1/json/fetchappointment") from None

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
        value = await self._call("POST", "rescheduleappointment", data=form)
        return self._booking(value, "POST /bookings/v1/json/rescheduleappointment", booking_id)

    async def update_appointment(self, booking_id: str, action: BookingAction) -> Booking:
        """``POST updateappointment``: ``completed``, ``cancel`` or ``noshow``."""
        value = await self._call("POST", "updateappointment", data={"booking_id": booking_id, "action": action})
        return self._booking(value, "POST /bookings/v1/json/updateappointment", booking_id)


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
        # The token goes to the organisation's API domain only (CRM and Bookings share it).
        auth = ZohoAuth(provider, origins=(endpoints.crm, endpoints.bookings)) if provider is not None else None
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
