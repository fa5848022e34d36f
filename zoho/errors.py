"""Typed Zoho errors, mapped from Zoho's documented error bodies.

Three body shapes exist (``shared/zoho-api-notes.md``):

* CRM: ``{"code": "INVALID_TOKEN", "details": {...}, "message": "...", "status": "error"}``,
  top-level or per record in ``data[i]`` (seeds 002/004, "Possible Errors").
* Accounts: ``{"error": "invalid_client"}`` or the throttle answer
  ``{"error": "Access Denied", "error_description": "...", "status": "failure"}``,
  with HTTP 200 or 400 alike: the ``error`` key decides, not the status.
* Bookings: ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}``.

Every error carries ``code``, ``message``, ``details``, ``status_code``,
``endpoint`` (method and path, never the query string, so no secret can leak
into exception text) and ``retry_after``: the seconds the answer's
``Retry-After`` header asked for (RFC 9110 section 10.2.3, numeric form), set on
429 and 5xx answers (and Accounts' throttle) that carry one, else None. That is
the one place the wait is decided (a 429 without one, or with a long one, is Zoho's
daily limit: :class:`ApiLimitError`, see :func:`is_limit_answer`); ``tasks.retry`` schedules Prefect's task
retries no sooner than it (:func:`retry_wait`).
"""

from __future__ import annotations

from typing import Any

import httpx


class ZohoError(Exception):
    """Base of every Zoho error.

    Attributes: ``code`` (Zoho's code, e.g. ``NOT_ALLOWED``), ``message``,
    ``details`` (dict), ``status_code`` (HTTP status, or None for a per-record
    error inside a 2xx answer), ``endpoint`` (``"PUT /crm/v7/Appointments__s"``)
    and ``retry_after`` (seconds, from the answer's ``Retry-After``; None when the
    answer had none, or for errors made without an answer).
    """

    #: Whether retrying the same request later may succeed.
    transient: bool = False
    #: Seconds the answer's ``Retry-After`` asked for (class default for errors unpickled from older versions).
    retry_after: float | None = None

    def __init__(
        self,
        code: str,
        message: str = "",
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
        endpoint: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.retry_after = retry_after
        self.message = message
        self.details = details or {}
        self.status_code = status_code
        self.endpoint = endpoint
        where = f" [{endpoint}]" if endpoint else ""
        status = f" HTTP {status_code}" if status_code else ""
        super().__init__(f"{code}: {message}{status}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (Prefect persists task exceptions) without calling __init__ again with
        # the formatted text, which would garble the message.
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))


def _restore_error(cls: type[ZohoError], args: tuple[Any, ...], state: dict[str, Any]) -> ZohoError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class AuthError(ZohoError):
    """An OAuth failure at Zoho Accounts (not retried)."""


class InvalidClientError(AuthError):
    """``invalid_client``: wrong client id or client secret."""


class InvalidGrantError(AuthError):
    """``invalid_code``: unknown, used, expired or revoked grant code or refresh token."""


class TokenThrottledError(AuthError):
    """``Access Denied``: too many access tokens minted for this refresh token
    (Zoho allows 10 per 10 minutes). Transient, but wait minutes, not seconds.
    ``retry_after``: the answer's ``Retry-After`` in seconds, when it has one
    (Zoho's throttle answer has none; a proxy's 429 may)."""

    transient = True


class InvalidTokenError(ZohoError):
    """401 ``INVALID_TOKEN``: the access token expired or is not valid."""


class ScopeMismatchError(ZohoError):
    """401 ``OAUTH_SCOPE_MISMATCH``: the grant lacks a scope this call needs."""


class NoPermissionError(ZohoError):
    """403 ``NO_PERMISSION``: the Zoho user may not do this."""


class NotAllowedError(ZohoError):
    """403 ``NOT_ALLOWED``: the change breaks a Zoho rule (e.g. rescheduling a
    cancelled or completed appointment)."""


class InvalidDataError(ZohoError):
    """400 ``INVALID_DATA``, ``INVALID_MODULE``, ``MANDATORY_NOT_FOUND``,
    ``REQUIRED_PARAM_MISSING``, ``LIMIT_EXCEEDED``, ``INVALID_REQUEST_METHOD``...:
    the request itself is wrong."""


class DependentFieldError(InvalidDataError):
    """400 ``DEPENDENT_FIELD_MISSING`` / ``DEPENDENT_FIELD_UNCHANGED`` / ``DEPENDENT_MISMATCH``
    (seed 002; ``DEPENDENT_FIELD_MISMATCH`` is accepted as the same)."""


class NotFoundError(ZohoError):
    """404 ``INVALID_URL_PATTERN`` or an unknown resource."""


class RateLimitedError(ZohoError):
    """429 ``TOO_MANY_REQUESTS``; ``retry_after`` is the server's ``Retry-After`` in seconds (or None)."""

    transient = True


class ApiLimitError(ZohoError):
    """Zoho answered with its own API limit: the day's Bookings calls or CRM credits are spent
    (see :func:`is_limit_answer`). Not transient for this run: calling again only hits the wall
    until the day rolls over, so the run stops calling that API family (:mod:`zoho.usage`).
    ``retry_after``: the answer's ``Retry-After`` in seconds, when it had one."""


class BudgetReachedError(ZohoError):
    """Not sent: the call would pass the run's allowance of the organisation's daily API budget
    (:class:`zoho.usage.Meter`). ``details``: ``family`` (``bookings`` / ``crm``) and ``kind``
    (``read`` / ``write``). No request was made, so nothing was spent."""


class ServerError(ZohoError):
    """5xx (``INTERNAL_ERROR``...): Zoho's side failed; retry later (``retry_after``: a 503's
    ``Retry-After`` in seconds, when given)."""

    transient = True


class BookingsError(ZohoError):
    """Zoho Bookings answered ``status: failure`` (outside, or inside ``returnvalue`` under an
    outer ``success``); ``message`` is its ``returnvalue.message``."""


class InvalidBookingError(ZohoError):
    """A booking Zoho answered with cannot be read (a missing or non-string field, an unknown
    ``time_zone``, a time that does not parse): code ``INVALID_BOOKING``, ``details``:
    ``booking_id`` (None when it has none) and ``problems`` (one line, field by field). Not
    transient: asking again gives the same booking until someone fixes it in Bookings."""


class TransportError(ZohoError):
    """The request did not get an answer (timeout, dropped connection).

    Made by :func:`transport_error`, ``details`` has ``url`` (scheme, host and port
    of the server tried: no path, query or user info) and ``reason`` (``connection
    refused``, ``timed out``, ``unknown host``...).
    """

    transient = True


def origin_of(url: httpx.URL | str) -> str:
    """``scheme://host[:port]`` of ``url``: no user info, path or query (so no secret)."""
    u = httpx.URL(url)
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")


def is_loopback(url: httpx.URL | str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_reason(exc: BaseException) -> str:
    """Why a request got no answer, in a few words, from ``exc`` and the errors it was raised from."""
    import socket

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "unknown host"
        if isinstance(seen, (httpx.TimeoutException, TimeoutError)):
            return "timed out"
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def transport_error(exc: BaseException, method: str, url: httpx.URL | str, message: str = "no answer from Zoho") -> TransportError:
    """The :class:`TransportError` for ``exc`` raised while sending ``method url``.

    ``code`` is the httpx exception's name (``CONNECTERROR``), ``endpoint`` the method
    and path, ``details`` the server tried and why (see :class:`TransportError`).
    """
    details = {"url": origin_of(url), "reason": transport_reason(exc)}
    return TransportError(type(exc).__name__.upper(), message, details, None, f"{method} {httpx.URL(url).path}")


_BY_CODE: dict[str, type[ZohoError]] = {
    "INVALID_TOKEN": InvalidTokenError,
    "AUTHENTICATION_FAILURE": InvalidTokenError,
    "OAUTH_SCOPE_MISMATCH": ScopeMismatchError,
    "NO_PERMISSION": NoPermissionError,
    "NOT_ALLOWED": NotAllowedError,
    "DEPENDENT_FIELD_MISSING": DependentFieldError,
    "DEPENDENT_FIELD_UNCHANGED": DependentFieldError,
    "DEPENDENT_MISMATCH": DependentFieldError,
    "DEPENDENT_FIELD_MISMATCH": DependentFieldError,
    "INVALID_URL_PATTERN": NotFoundError,
    "RESOURCE_NOT_FOUND": NotFoundError,
    "TOO_MANY_REQUESTS": RateLimitedError,
    "INTERNAL_ERROR": ServerError,
}


#: A 429 whose ``Retry-After`` is at most this many seconds is a throttle (retried); longer, or
#: none, is an API limit (:func:`is_limit_answer`). Zoho's Bulk Read download limit (10 a minute)
#: answers within it.
THROTTLE_MAX_SECONDS = 90.0
#: Codes that name an API limit in a failure body (Bookings documents none; the sandbox answers
#: ``API_LIMIT_EXCEEDED``).
LIMIT_CODES = frozenset({"API_LIMIT_EXCEEDED", "LIMIT_REACHED", "API_LIMIT_REACHED"})


def is_limit_answer(status_code: int | None, code: str | None, retry_after: float | None) -> bool:
    """Whether an answer says the day's API allowance is spent, rather than "slow down".

    Zoho documents the limits (Bookings: calls per user per day by plan; CRM: credits over
    a rolling 24 hours, answered with 429 ``TOO_MANY_REQUESTS``) but not a distinct answer
    for "spent" versus "too fast". Taken here: a failure whose ``code`` is one of
    :data:`LIMIT_CODES` (any status), or a 429 with no ``Retry-After`` or one longer than
    :data:`THROTTLE_MAX_SECONDS`. A 429 asking for a short wait (CRM's concurrency limit
    through a proxy, Bulk Read's download limit) stays a :class:`RateLimitedError`, retried.
    """
    if code in LIMIT_CODES:
        return True
    return status_code == 429 and (retry_after is None or retry_after > THROTTLE_MAX_SECONDS)


def endpoint_of(request: httpx.Request) -> str:
    """``"METHOD /path"`` of a request, without host or query string."""
    return f"{request.method} {request.url.path}"


def retry_after_of(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (numeric form only), or None."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def crm_error(body: dict[str, Any], status_code: int | None = None, endpoint: str = "", retry_after: float | None = None) -> ZohoError:
    """The typed error for one CRM error body (top-level or a ``data[i]`` entry)."""
    code = str(body.get("code") or "UNKNOWN_ERROR")
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    message = str(body.get("message") or "")
    cls = _BY_CODE.get(code)
    if cls is None:
        if status_code is not None and status_code >= 500:
            cls = ServerError
        elif status_code == 429:
            cls = RateLimitedError
        elif status_code == 404:
            cls = NotFoundError
        else:
            cls = InvalidDataError
    if status_code is not None and is_limit_answer(status_code, code, retry_after):
        return ApiLimitError(code, message, details, status_code, endpoint, retry_after=retry_after)
    if cls in (RateLimitedError, ServerError):
        return cls(code, message, details, status_code, endpoint, retry_after=retry_after)
    return cls(code, message, details, status_code, endpoint)


def accounts_error(body: dict[str, Any], status_code: int, endpoint: str, retry_after: float | None = None) -> ZohoError:
    """The typed error for an Accounts ``{"error": ...}`` body.

    The ``error`` key decides (Accounts answers errors with HTTP 200 or 400), except
    that an unknown error with HTTP 5xx (``{"error": "server_error"}``) is Accounts
    failing, not our credentials: :class:`ServerError`, retried like any 5xx.
    """
    error = str(body.get("error"))
    description = str(body.get("error_description") or error)
    if error == "Access Denied":
        return TokenThrottledError("ACCESS_DENIED", description, {}, status_code, endpoint, retry_after=retry_after)
    if error == "invalid_client":
        return InvalidClientError("invalid_client", "wrong client id or client secret", {}, status_code, endpoint)
    if error in ("invalid_code", "invalid_grant"):
        return InvalidGrantError(error, "grant code or refresh token is invalid, used, expired or revoked", {}, status_code, endpoint)
    if status_code is not None and status_code >= 500:
        return ServerError(error, description, {}, status_code, endpoint, retry_after=retry_after)
    return AuthError(error, description, {}, status_code, endpoint)


def error_from_response(response: httpx.Response) -> ZohoError:
    """Map a failed HTTP answer (any product) to a typed error.

    Reads the body as JSON when it can; anything else becomes ``ServerError`` (5xx),
    ``RateLimitedError`` (429) or ``InvalidDataError`` with the HTTP reason.
    """
    endpoint = endpoint_of(response.request)
    status = response.status_code
    retry_after = retry_after_of(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if "error" in body and "code" not in body:
            return accounts_error(body, status, endpoint, retry_after)
        if isinstance(body.get("response"), dict):
            return bookings_error(body, status, endpoint, retry_after)
        if "code" in body:
            return crm_error(body, status, endpoint, retry_after)
        if isinstance(body.get("data"), list) and body["data"] and isinstance(body["data"][0], dict):
            return crm_error(body["data"][0], status, endpoint, retry_after)
    reason = response.reason_phrase or "error"
    if is_limit_answer(status, None, retry_after):
        return ApiLimitError("TOO_MANY_REQUESTS", reason, {}, status, endpoint, retry_after=retry_after)
    if status == 429:
        return RateLimitedError("TOO_MANY_REQUESTS", reason, {}, status, endpoint, retry_after=retry_after)
    if status >= 500:
        return ServerError("INTERNAL_ERROR", reason, {}, status, endpoint, retry_after=retry_after)
    if status == 404:
        return NotFoundError("NOT_FOUND", reason, {}, status, endpoint)
    return InvalidDataError("HTTP_ERROR", reason, {}, status, endpoint)


def bookings_error(body: dict[str, Any], status_code: int, endpoint: str, retry_after: float | None = None) -> ZohoError:
    """The typed error for a Bookings failure body, in either shape Zoho shows (zoho-api-notes,
    "More contract points"; Pipedream's ``zoho_bookings`` and the Activepieces piece check both):
    ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}`` or a failure inside
    a success, ``{"response": {"returnvalue": {"status": "failure", "message": ...}, "status": "success"}}``.

    ``message``: ``returnvalue.message`` (else ``response.errormessage``, else the returnvalue
    itself; at most 500 characters); ``code``: ``returnvalue.code`` when given (Zoho documents
    none; the sandbox sends one for 401s and the daily limit); ``details["shape"]``: ``outer``
    or ``returnvalue``. 401 (or an ``INVALID_TOKEN`` / ``OAUTH_SCOPE_MISMATCH`` code) -> token
    errors, the day's limit (:func:`is_limit_answer`) -> :class:`ApiLimitError`, another 429 ->
    :class:`RateLimitedError` with ``retry_after``, 5xx -> :class:`ServerError`, anything
    else (including HTTP 200) -> :class:`BookingsError` (code ``BOOKINGS_FAILURE`` when none).
    """
    envelope = body["response"]
    value = envelope.get("returnvalue")
    message = value.get("message") if isinstance(value, dict) else None
    message = str(message or envelope.get("errormessage") or value or "Bookings request failed")[:500]
    raw_code = value.get("code") if isinstance(value, dict) else None
    code = str(raw_code) if raw_code not in (None, "") else None
    shape = "returnvalue" if envelope.get("status") == "success" else "outer"
    if status_code == 401 or code in ("INVALID_TOKEN", "OAUTH_SCOPE_MISMATCH"):
        cls = ScopeMismatchError if code == "OAUTH_SCOPE_MISMATCH" else InvalidTokenError
        return cls(code or "INVALID_TOKEN", message, {}, status_code, endpoint)
    if is_limit_answer(status_code, code, retry_after):
        return ApiLimitError(code or "API_LIMIT_EXCEEDED", message, {}, status_code, endpoint, retry_after=retry_after)
    if status_code == 429:
        return RateLimitedError("TOO_MANY_REQUESTS", message, {}, status_code, endpoint, retry_after=retry_after)
    if status_code >= 500:
        return ServerError("INTERNAL_ERROR", message, {}, status_code, endpoint, retry_after=retry_after)
    return BookingsError(code or "BOOKINGS_FAILURE", message, {"shape": shape}, status_code, endpoint)


def retry_wait(exc: BaseException) -> float | None:
    """How long Zoho asked us to wait before repeating the request ``exc`` came from, in
    seconds: the ``retry_after`` of a transient :class:`ZohoError` (429, 5xx, Accounts'
    throttle) whose answer had a numeric ``Retry-After``; None otherwise (no answer,
    no header, or an error not worth retrying)."""
    if isinstance(exc, ZohoError) and exc.transient:
        return exc.retry_after
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: 429, 5xx, token throttling, timeouts, dropped connections."""
    if isinstance(exc, ZohoError):
        return exc.transient
    return isinstance(exc, (httpx.TimeoutException, httpx.TransportError))


class BulkReadFailedError(ZohoError):
    """A Bulk Read job ended in ``FAILURE``; ``code``/``message``/``details`` are its ``result.error_message``."""


class BulkReadRefusedError(InvalidDataError):
    """Zoho refused to create a Bulk Read job (crm-oas v8.0 ``bulk_read.json``: 400 ``INVALID_CRITERIA``,
    ``FIELD_NOT_SUPPORTED``, ``MODULE_NOT_SUPPORTED``, ``GROUP_OPERATOR_NOT_SUPPORTED``...; 415
    ``MEDIA_TYPE_NOT_SUPPORTED``). ``code``, ``details`` and ``status_code`` are Zoho's; ``message``
    is Zoho's with what it names (:func:`refusal_subject`: the field, module or criterion). Not
    transient: the same request is refused again (made by :func:`bulk_read_refused`)."""


def refusal_subject(details: dict[str, Any]) -> str:
    """What a CRM error's ``details`` name, in words: ``field Booking_Idx of Appointments__s``,
    ``criteria on Status: comparator between (supported: equal, in, not_equal, not_in)``,
    ``group_operator 'xor'``, ``module Leadz``; empty when they name nothing."""
    parts = []
    api_name, module = details.get("api_name"), details.get("module")
    if isinstance(api_name, str) and api_name != "module":
        parts.append(f"field {api_name}" + (f" of {module}" if isinstance(module, str) else ""))
    elif isinstance(module, str):
        parts.append(f"module {module}")
    if "comparator" in details:
        parts.append(f"comparator {details['comparator']!r}")
    if "group_operator" in details:
        parts.append(f"group_operator {details['group_operator']!r}")
    if "value" in details:
        parts.append(f"value {str(details['value'])[:80]!r}")
    if isinstance(details.get("supported"), list):
        parts.append("supported: " + ", ".join(map(str, details["supported"])))
    return "; ".join(parts)


def bulk_read_refused(error: ZohoError) -> BulkReadRefusedError:
    """The :class:`BulkReadRefusedError` for ``error`` (Zoho's refusal of a Bulk Read create):
    ``Zoho refused the Bulk Read job: <message> (<what the details name>)``."""
    subject = refusal_subject(error.details)
    message = f"Zoho refused the Bulk Read job: {error.message or error.code}" + (f" ({subject})" if subject else "")
    return BulkReadRefusedError(error.code, message, error.details, error.status_code, error.endpoint)


class ForeignHostError(ZohoError):
    """A request that would carry the access token was aimed at another host than the organisation's own
    API domain (e.g. a forged callback's absolute ``download_url``); nothing was sent. Code
    ``FOREIGN_HOST``; ``details``: ``url`` (scheme, host and port of the refused URL) and ``allowed``
    (the API domain's). Not transient: retrying sends nothing either."""
