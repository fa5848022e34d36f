"""pydantic v2 models of the Zoho requests and answers the pipeline uses.

Field names are Zoho's API names. Date-times are aware ``datetime`` objects;
serialising to Zoho turns them into ISO 8601 with offset (CRM) — Bookings strings
are built with :mod:`zoho.timefmt` in the booking's own ``time_zone``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SecretStr, ValidationError, field_validator, model_validator

from .timefmt import from_bookings, require_aware, to_crm

#: An aware datetime written as ISO 8601 with offset and no fractions.
CrmDateTime = Annotated[datetime, PlainSerializer(lambda v: to_crm(v), return_type=str, when_used="json")]


# --------------------------------------------------------------------- OAuth
class TokenResponse(BaseModel):
    """Answer of ``POST {accounts}/oauth/v2/token``.

    ``expires_in`` is seconds; the legacy ``expires_in_sec`` (seconds) wins when
    present, and an ``expires_in`` above one day is taken as milliseconds (some
    products send that). ``refresh_token`` only comes with the grant-code exchange.

    Validation errors never show the input (``hide_input_in_errors``): the answer holds
    the access token (and maybe a refresh token), so a bad ``expires_in`` must not
    print them. :meth:`zoho.clients.AccountsClient._token_call` turns them into a
    ``ZohoError`` ``INVALID_TOKEN_ANSWER`` naming the fields only.
    """

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    access_token: SecretStr
    expires_in: int = 3600
    api_domain: str | None = None
    token_type: str = "Bearer"
    scope: str | None = None
    refresh_token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_expiry(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("expires_in_sec") is not None:
                try:
                    data["expires_in"] = int(data["expires_in_sec"])
                except (TypeError, ValueError):  # our words only: int()'s text would quote the value
                    raise ValueError("expires_in_sec is not a number of seconds") from None
            elif isinstance(data.get("expires_in"), (int, float)) and data["expires_in"] > 86_400:
                data["expires_in"] = int(data["expires_in"] // 1000)
        return data


# ------------------------------------------------------------------ criteria
Comparator = Literal[
    "equal", "not_equal", "in", "not_in", "greater_than", "greater_equal", "less_than", "less_equal",
    "between", "not_between", "starts_with", "ends_with", "contains", "not_contains",
]

#: Comparators valid per CRM field data type (Zoho's Bulk Read criteria table).
COMPARATORS_BY_TYPE: dict[str, frozenset[str]] = {
    "text": frozenset({"equal", "not_equal", "in", "not_in", "starts_with", "ends_with", "contains", "not_contains"}),
    "email": frozenset({"equal", "not_equal", "in", "not_in", "starts_with", "ends_with", "contains", "not_contains"}),
    "textarea": frozenset({"equal", "not_equal", "starts_with", "ends_with", "contains", "not_contains"}),
    "picklist": frozenset({"equal", "not_equal", "in", "not_in"}),
    "lookup": frozenset({"equal", "not_equal", "in", "not_in"}),
    "ownerlookup": frozenset({"equal", "not_equal", "in", "not_in"}),
    "boolean": frozenset({"equal"}),
    **{
        t: frozenset({"equal", "not_equal", "in", "not_in", "greater_than", "greater_equal", "less_than", "less_equal", "between", "not_between"})
        for t in ("integer", "bigint", "double", "currency", "date", "datetime")
    },
}

#: Data types of the fields the pipeline filters on.
FIELD_TYPES: dict[str, dict[str, str]] = {
    "Appointments__s": {
        "id": "bigint", "Appointment_Start_Time": "datetime", "Appointment_End_Time": "datetime",
        "Modified_Time": "datetime", "Created_Time": "datetime", "Status": "picklist", "Duration": "integer",
        "Owner": "ownerlookup", "Service_Name": "lookup", "Appointment_For": "lookup", "Appointment_Name": "text",
    },
    "Events": {
        "id": "bigint", "Start_DateTime": "datetime", "End_DateTime": "datetime", "Modified_Time": "datetime",
        "Created_Time": "datetime", "Event_Title": "text", "Owner": "ownerlookup", "All_day": "boolean",
        "Booking_Status": "picklist",  # the default status picklist of Meetings (a custom field; configurable)
    },
}


class FieldRef(BaseModel):
    """``{"api_name": "Appointment_Start_Time"}``."""

    api_name: str


def _criteria_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_crm(require_aware(value, "criteria value"))
    if isinstance(value, (list, tuple)):
        return [_criteria_value(v) for v in value]
    return value


class Condition(BaseModel):
    """One criterion: ``{"field": {"api_name": ...}, "comparator": ..., "value": ...}`` (seed 001).

    ``between`` / ``not_between`` take ``[low, high]``; ``in`` / ``not_in`` a
    non-empty list. Aware datetimes become ISO 8601 without milliseconds; a naive
    datetime raises ``ValueError``.
    """

    field: FieldRef
    comparator: Comparator
    value: Any

    @model_validator(mode="after")
    def _check_value(self) -> "Condition":
        if self.comparator in ("between", "not_between"):
            if not isinstance(self.value, (list, tuple)) or len(self.value) != 2:
                raise ValueError(f"{self.comparator} on {self.field.api_name} needs [low, high], got {self.value!r}")
        if self.comparator in ("in", "not_in") and (not isinstance(self.value, (list, tuple)) or not self.value):
            raise ValueError(f"{self.comparator} on {self.field.api_name} needs a non-empty list, got {self.value!r}")
        self.value = _criteria_value(self.value)
        return self

    @classmethod
    def of(cls, api_name: str, comparator: str, value: Any) -> "Condition":
        """Shorthand: ``Condition.of("Status", "in", ["Scheduled", "Overdue"])``."""
        return cls(field=FieldRef(api_name=api_name), comparator=comparator, value=value)


class Group(BaseModel):
    """``{"group_operator": "and"|"or", "group": [criteria, ...]}``, nestable (seed 001)."""

    group_operator: Literal["and", "or"]
    group: list["Criteria"] = Field(min_length=1)


Criteria = Union[Group, Condition]
Group.model_rebuild()


def all_of(*parts: Criteria) -> Criteria:
    """``and`` of ``parts`` (a single part is returned as is)."""
    return parts[0] if len(parts) == 1 else Group(group_operator="and", group=list(parts))


def any_of(*parts: Criteria) -> Criteria:
    """``or`` of ``parts`` (a single part is returned as is)."""
    return parts[0] if len(parts) == 1 else Group(group_operator="or", group=list(parts))


def check_criteria(criteria: Criteria, field_types: dict[str, str]) -> None:
    """Check every condition's comparator against its field's data type.

    ``field_types``: API name -> Zoho data type (e.g. :data:`FIELD_TYPES` of a
    module, or ``GET settings/fields``). Raises ``ValueError`` naming the field and
    comparator; a field not in ``field_types`` raises too.
    """
    if isinstance(criteria, Group):
        for part in criteria.group:
            check_criteria(part, field_types)
        return
    name = criteria.field.api_name
    if name not in field_types:
        raise ValueError(f"criteria field {name!r} is not a known field ({', '.join(sorted(field_types))})")
    allowed = COMPARATORS_BY_TYPE.get(field_types[name], frozenset())
    if criteria.comparator not in allowed:
        raise ValueError(f"comparator {criteria.comparator!r} is not valid for {name} ({field_types[name]}); use one of {sorted(allowed)}")


# ----------------------------------------------------------------- bulk read
class ModuleRef(BaseModel):
    """``{"api_name": "Appointments__s"}``."""

    api_name: str


class BulkReadQuery(BaseModel):
    """``query`` of a Bulk Read job: module, fields (empty: all), criteria, page or page_token."""

    module: ModuleRef
    fields: list[str] = Field(default_factory=list)
    criteria: Criteria | None = None
    cvid: str | None = None
    page: int | None = Field(default=None, ge=1)
    page_token: str | None = None


class Callback(BaseModel):
    """``{"url": ..., "method": "post"}``: where Zoho POSTs the job when it ends."""

    url: str
    method: Literal["post"] = "post"


class BulkReadRequest(BaseModel):
    """Body of ``POST /crm/bulk/{version}/read``. ``ics`` is only for ``Events``, with no ``fields``."""

    query: BulkReadQuery
    callback: Callback | None = None
    file_type: Literal["csv", "ics"] = "csv"

    @model_validator(mode="after")
    def _ics_rules(self) -> "BulkReadRequest":
        if self.file_type == "ics" and (self.query.module.api_name != "Events" or self.query.fields):
            raise ValueError("file_type ics is only for the Events module, without fields")
        return self

    def to_json(self) -> dict[str, Any]:
        """The JSON body Zoho expects (``None`` values left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class BulkState(str, Enum):
    """Bulk Read job states; note the space in ``IN PROGRESS``."""

    ADDED = "ADDED"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    FAILURE = "FAILURE"

    @property
    def is_terminal(self) -> bool:
        """``COMPLETED`` or ``FAILURE``."""
        return self in (BulkState.COMPLETED, BulkState.FAILURE)


class ErrorBody(BaseModel):
    """``{status, code, message, details}`` (``result.error_message`` of a failed job)."""

    model_config = ConfigDict(extra="allow")

    status: str | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class BulkReadResult(BaseModel):
    """``result`` of a finished job; ``download_url`` is relative to the API domain."""

    model_config = ConfigDict(extra="allow")

    page: int | None = None
    per_page: int | None = None
    count: int | None = None
    download_url: str | None = None
    more_records: bool = False
    next_page_token: str | None = None
    error_message: ErrorBody | None = None


class BulkReadJob(BaseModel):
    """``data[0]`` of the job status answer (and of the callback body)."""

    model_config = ConfigDict(extra="allow")

    id: str
    operation: str = "read"
    state: BulkState
    created_time: datetime | None = None
    file_type: str | None = None
    result: BulkReadResult | None = None


# ------------------------------------------------------- CRM Appointments__s
AppointmentStatus = Literal["Scheduled", "Overdue", "Completed", "Cancelled"]


class Appointment(BaseModel):
    """A CRM ``Appointments__s`` record (the fields the sync reads; others are kept as extras)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    Appointment_Start_Time: datetime | None = None
    Appointment_End_Time: datetime | None = None
    Duration: int | None = None
    Status: str | None = None
    Modified_Time: datetime | None = None

    @field_validator("Appointment_Start_Time", "Appointment_End_Time", "Modified_Time")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return None if v is None else require_aware(v, "CRM date-time")


class AppointmentUpdate(BaseModel):
    """One record of ``PUT /crm/{version}/Appointments__s`` (seeds 002/004).

    Build with :meth:`reschedule`, :meth:`cancel`, :meth:`complete` or :meth:`status`.
    Unset keys are not sent.
    """

    id: str
    Appointment_Start_Time: CrmDateTime | None = None
    Rescheduled_From: CrmDateTime | None = None
    Reschedule_Reason: Literal["By Customer", "By Team"] | None = None
    Reschedule_Note: str | None = None
    Status: AppointmentStatus | None = None
    Cancellation_Reason: Literal["By Customer", "By Team"] | None = None
    Cancellation_Note: str | None = None
    Job_Sheet_Name: str | None = None
    Job_Sheet_Description__s: str | None = None

    @field_validator("Appointment_Start_Time", "Rescheduled_From")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return None if v is None else require_aware(v, "appointment time")

    @classmethod
    def reschedule(cls, id: str, start: datetime, reason: str | None = None, note: str | None = None) -> "AppointmentUpdate":
        """Move appointment ``id`` to ``start`` (aware)."""
        return cls(id=id, Appointment_Start_Time=start, Reschedule_Reason=reason, Reschedule_Note=note)

    @classmethod
    def cancel(cls, id: str, reason: str = "By Customer", note: str | None = None) -> "AppointmentUpdate":
        """Cancel appointment ``id``."""
        return cls(id=id, Status="Cancelled", Cancellation_Reason=reason, Cancellation_Note=note)

    @classmethod
    def complete(cls, id: str, job_sheet_name: str | None = None, job_sheet_description: str | None = None) -> "AppointmentUpdate":
        """Mark appointment ``id`` completed (only after it has ended)."""
        return cls(id=id, Status="Completed", Job_Sheet_Name=job_sheet_name, Job_Sheet_Description__s=job_sheet_description)

    def to_json(self) -> dict[str, Any]:
        """The record as Zoho expects it (unset keys left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class RecordResult(BaseModel):
    """One per-record result of a CRM write: ``{code, details, message, status}``."""

    model_config = ConfigDict(extra="allow")

    code: str
    details: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    status: str

    @property
    def ok(self) -> bool:
        """Whether this record was written."""
        return self.status == "success"


class RecordsPage(BaseModel):
    """``GET /crm/{version}/{module}`` answer: ``data`` records and ``info`` paging."""

    data: list[dict[str, Any]] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    @property
    def more_records(self) -> bool:
        """Whether another page exists."""
        return bool(self.info.get("more_records"))

    @property
    def next_page_token(self) -> str | None:
        """Token for the next page (beyond 2,000 records)."""
        return self.info.get("next_page_token")


# ---------------------------------------------------------------- Bookings
class Booking(BaseModel):
    """A Zoho Bookings appointment (get-appointment / fetch-appointment docs).

    ``start_time`` / ``end_time`` are ``dd-MMM-yyyy HH:mm:ss`` wall time in ``time_zone``
    (an IANA name); other answer fields (``customer_booking_start_time`` and ``booked_on``,
    ``yyyy-MM-dd HH:mm:ss`` in the doc's sample, ``customer_more_info``...) are kept as extras,
    unread. Validation makes a booking the sync can use: ``booking_id``, ``start_time``,
    ``time_zone`` and ``status`` are required strings, ``time_zone`` must be a known zone and
    the times must parse in it; anything else raises pydantic's ``ValidationError`` (a
    ``ValueError``). :class:`BookingsPage` validates its bookings one by one.
    """

    model_config = ConfigDict(extra="allow")

    booking_id: str = Field(min_length=1)
    service_id: str | None = None
    service_name: str | None = None
    staff_id: str | None = None
    start_time: str
    end_time: str | None = None
    time_zone: str
    duration: str | None = None
    status: str = Field(min_length=1)
    customer_name: str | None = None
    customer_email: str | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time_zone {v[:60]!r}") from None
        return v

    @model_validator(mode="after")
    def _readable_times(self) -> "Booking":
        for name, read in (("start_time", lambda: self.start), ("end_time", lambda: self.end)):
            try:
                read()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    @property
    def start(self) -> datetime:
        """The start instant (aware), read in the booking's own ``time_zone``."""
        return from_bookings(self.start_time, self.time_zone)

    @property
    def end(self) -> datetime | None:
        """The end instant (aware), or None."""
        return from_bookings(self.end_time, self.time_zone) if self.end_time else None


class RejectedBooking(BaseModel):
    """A booking of a ``fetchappointment`` page that does not validate as a :class:`Booking`:
    its ``booking_id`` (None when it has no usable one), its ``position`` on the page (0-based)
    and ``reason``: what was wrong, one line per field (``time_zone: unknown time_zone
    'Mars/Olympus_Mons'``), without the rest of the booking."""

    booking_id: str | None = None
    position: int = 0
    reason: str


def booking_problems(error: ValidationError) -> str:
    """A ``ValidationError`` of a :class:`Booking` in one line: ``field: what`` per error,
    ``; ``-separated (pydantic's ``Value error, `` prefix dropped; input values left out)."""
    parts = []
    for e in error.errors(include_url=False, include_input=False):
        where = ".".join(str(x) for x in e.get("loc", ()))
        what = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts) or "not a booking"


class BookingsPage(BaseModel):
    """``fetchappointment`` answer: ``response`` bookings and ``next_page_available``.

    Bookings are validated one by one (B2: one bad booking never fails a page): those that
    validate are ``response``; the others (not an object, a missing or non-string field, an
    unknown ``time_zone``, a time that does not parse) are ``rejected``
    (:class:`RejectedBooking`), for the caller to report and skip.
    """

    model_config = ConfigDict(extra="allow")

    response: list[Booking] = Field(default_factory=list)
    rejected: list[RejectedBooking] = Field(default_factory=list)
    next_page_available: bool = False
    page: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_by_one(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("response"), list):
            return data
        good: list[Any] = []
        bad: list[Any] = list(data.get("rejected") or [])
        for position, item in enumerate(data["response"]):
            if isinstance(item, Booking):
                good.append(item)
                continue
            try:
                good.append(Booking.model_validate(item))
            except ValidationError as exc:
                raw_id = item.get("booking_id") if isinstance(item, dict) else None
                booking_id = raw_id if isinstance(raw_id, str) and raw_id else None
                bad.append(RejectedBooking(booking_id=booking_id, position=position, reason=booking_problems(exc)))
        return {**data, "response": good, "rejected": bad}

    @property
    def more_records(self) -> bool:
        """Whether another page is worth asking for: ``next_page_available`` and this page was not
        empty (rejected bookings count: a page of only bad bookings is not the end)."""
        return bool(self.next_page_available and (self.response or self.rejected))

    @property
    def next_page_token(self) -> None:
        """Bookings pages by number only: always None (for :class:`zoho.paging.PageAnswer`)."""
        return None


BookingAction = Literal["completed", "cancel", "noshow"]


# ------------------------------------------------------------- notifications
class WatchChannel(BaseModel):
    """One entry of ``POST /crm/{version}/actions/watch``.

    ``channel_expiry`` (aware) is at most one week ahead (v4+); ``token`` at most 50
    characters and comes back in every notification.
    """

    channel_id: int | str
    events: list[str]
    channel_expiry: CrmDateTime | None = None
    token: SecretStr | None = Field(default=None)
    notify_url: str
    return_affected_field_values: bool = False

    @field_validator("channel_expiry")
    @classmethod
    def _aware_expiry(cls, v: datetime | None) -> datetime | None:
        return None if v is None else require_aware(v, "channel_expiry")

    @field_validator("token")
    @classmethod
    def _token_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) > 50:
            raise ValueError("channel token has at most 50 characters")
        return v

    def to_json(self) -> dict[str, Any]:
        """The entry as Zoho expects it (the token revealed only here, for the request body)."""
        body = self.model_dump(mode="json", exclude_none=True)
        if self.token is not None:
            body["token"] = self.token.get_secret_value()
        return body


class Notification(BaseModel):
    """What Zoho POSTs to ``notify_url``; ``operation`` may be any string (insert, update, delete...)."""

    model_config = ConfigDict(extra="allow")

    server_time: int | None = None
    module: str
    resource_uri: str | None = None
    ids: list[str]
    affected_fields: list[Any] = Field(default_factory=list)
    operation: str
    channel_id: str | int
    token: SecretStr | None = None
    query_params: dict[str, Any] = Field(default_factory=dict)
