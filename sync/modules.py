"""CRM modules the sync links to bookings: one adapter per module, chosen by API name.

Pure: no Prefect, no HTTP, no database (the adapters hand SQL *expressions* to
:mod:`sync.links`, which runs them). A :class:`CrmModule` says everything the flow and
the tasks need to know about one CRM module: its API name, state-store table and base
table, the fields to read, how a record becomes a row and its canonical status, what each
planned change is sent as (an update, or a delete), what is refused before sending, and
what our copy of a record becomes once a write succeeded. :class:`Appointments`
(``Appointments__s``, seeds 002/004) and :class:`Meetings` (``Events``, seed 000: a status
picklist or time only) are the two; :func:`crm_module` picks the adapter for a
configuration's ``crm_module`` / ``crm_modules``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, ClassVar, Mapping, Protocol

from sqlalchemy import case, func, literal

from .bulk_load import ModuleMapping, appointments_mapping, events_mapping, parse_datetime, parse_int
from .engine import CRM_TO_CANON, NO_SHOW_NOTE, Action, Canon, Conflict, Kind, Link, Side, SideState, appointments_to_crm, since_of, crm_canon
from .tables import CrmAppointment, CrmEvent, SyncBase, SyncBaseEvent, utc_now


class CrmModule(Protocol):
    """One CRM module as the sync sees it.

    Attributes: ``api_name`` (``Appointments__s``), ``booking_field`` (the API name of
    the field holding the Bookings ``booking_id``), ``table`` (its state-store table
    class: ``id``, ``booking_id``, ``start_time``, ``end_time``, ``status``,
    ``modified_time`` columns at least), ``base_table`` (its own base: ``sync_base``,
    ``sync_base_events``), ``statuses`` (its status words -> canonical status),
    ``batch_size`` (records per update call), ``scope`` (its part of the action keys:
    empty for ``Appointments__s``), ``label`` (what one record is called in reports).
    """

    api_name: str
    booking_field: str
    table: Any
    base_table: Any
    statuses: Mapping[str, Canon]
    batch_size: int
    scope: str
    label: str

    def status_sql(self, columns: Any) -> Any | None:
        """The canonical status of a stored record as a SQL expression over the table's ``columns``
        (:func:`sync.links.changed_links`), or None: its ``status`` words mapped by :attr:`statuses`."""
        ...

    def where_sql(self, columns: Any) -> Any | None:
        """Which stored records take part in the diff (a SQL condition), or None: all."""
        ...

    def deletes(self, action: Action) -> bool:
        """Whether ``action`` is sent as a delete of the record (``DELETE /crm/{v}/{module}?ids=``) rather than an update."""
        ...

    @property
    def fields(self) -> list[str]:
        """API names the records API is asked for (``id`` always comes)."""
        ...

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The state-store row of a records-API record (instants aware UTC); :class:`InvalidRecord`
        (a ``ValueError`` naming the record, the field and the value) for a value that cannot be read."""
        ...

    def shows(self, row: Mapping[str, Any], action: Action) -> bool:
        """Whether a record (its :meth:`row`) already says what ``action`` asks (a write made before)."""
        ...

    def bulk_mapping(self) -> ModuleMapping:
        """How a Bulk Read CSV of the module becomes rows (:mod:`sync.bulk_load`)."""
        ...

    def to_crm(self, link: Link, now: datetime) -> tuple[list[Action], Conflict | None]:
        """The plan's step towards this module: the actions that make the record say what Bookings
        says, or the module's rule that forbids or defers it (a ``rule`` / ``deferred`` conflict)."""
        ...

    def refusal(self, action: Action) -> tuple[str, str] | None:
        """``(code, message)`` when ``action`` must not be sent (a rule of the module), else None."""
        ...

    def payload(self, action: Action) -> dict[str, Any]:
        """The record of the update call for ``action``: API names -> values (instants aware; the caller
        writes them as CRM does); ``ValueError`` for an action :meth:`refusal` refuses."""
        ...

    def state_after(self, action: Action, before: SideState) -> SideState:
        """The record's side once ``action`` succeeded (``before``: its side when planned)."""
        ...

    def row_after(self, row: Mapping[str, Any], action: Action, after: SideState, modified: datetime | None) -> dict[str, Any]:
        """The columns of the stored ``row`` to set once ``action`` succeeded (``modified``: Zoho's new ``Modified_Time``)."""
        ...


class InvalidRecord(ValueError):
    """A CRM record the sync cannot read: ``crm_id`` and ``booking_id`` (None when unknown),
    ``field`` (its API name) and ``value`` (at most 80 characters of its text). The message names
    all of them and why: ``CRM record 554...: Appointment_Start_Time 'not-a-date' is not an ISO
    8601 date-time with an offset (...)``. The read that meets one records it and goes on
    (:func:`tasks.sync.read_crm_changes`); the record is read again once it is fixed."""

    def __init__(self, crm_id: str | None, booking_id: str | None, field: str, value: Any, why: str) -> None:
        self.crm_id, self.booking_id, self.field = crm_id, booking_id, field
        self.value = str(value)[:80]
        super().__init__(f"CRM record {crm_id or '(no id)'}: {field} {self.value!r} {why}")


def record_ids(record: Mapping[str, Any], booking_field: str) -> tuple[str, str | None]:
    """A records-API record's ``(id, booking id or None)`` as text; :class:`InvalidRecord` when it has no ``id``."""
    crm_id = record.get("id")
    booking = record.get(booking_field) or None
    booking = str(booking) if booking is not None else None
    if crm_id in (None, ""):
        raise InvalidRecord(None, booking, "id", crm_id, "is missing: the record has no id")
    return str(crm_id), booking


def record_instant(record: Mapping[str, Any], name: str, crm_id: str, booking: str | None) -> datetime | None:
    """The ISO 8601 date-time field ``name`` of a record as aware UTC (absent or empty: None);
    :class:`InvalidRecord` naming the record, the field and the value for anything else."""
    value = record.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRecord(crm_id, booking, name, value, f"is not text ({type(value).__name__}): not an ISO 8601 date-time")
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise InvalidRecord(crm_id, booking, name, value, f"is not an ISO 8601 date-time with an offset ({str(exc)[:120]})") from None


def end_after(start: datetime, old_start: datetime | None, old_end: datetime | None, duration: int | None) -> datetime | None:
    """The end after moving ``old_start`` -> ``start`` with the same length: ``duration``
    minutes when known, else ``old_end - old_start``; None when neither is known."""
    if duration:
        return start + timedelta(minutes=duration)
    if old_start and old_end:
        return start + (old_end - old_start)
    return None


@dataclass(frozen=True)
class Appointments:
    """``Appointments__s``: CRM's appointments (start, end, duration, ``Status``).

    ``Status`` ``Scheduled``/``Overdue``/``Cancelled``/``Completed``
    (:data:`sync.engine.CRM_TO_CANON`); no no-show: a Bookings no-show is written as
    ``Cancelled`` with :data:`sync.engine.NO_SHOW_NOTE`. Updates go 100 records per
    ``PUT``. A reschedule is sent with reason ``By Customer`` and no
    ``Rescheduled_From``.
    """

    booking_field: str = "Booking_Id"

    api_name: ClassVar[str] = "Appointments__s"
    table: ClassVar[Any] = CrmAppointment
    base_table: ClassVar[Any] = SyncBase
    statuses: ClassVar[Mapping[str, Canon]] = CRM_TO_CANON
    batch_size: ClassVar[int] = 100
    scope: ClassVar[str] = ""
    label: ClassVar[str] = "appointment"
    #: Fields read besides the booking field, in request order.
    READ_FIELDS: ClassVar[tuple[str, ...]] = ("Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time")
    #: The ``Status`` each kind of write leaves (a no-show is sent as a cancellation).
    STATUS_AFTER: ClassVar[Mapping[Kind, str]] = {Kind.RESCHEDULE: "Scheduled", Kind.CANCEL: "Cancelled", Kind.COMPLETE: "Completed"}

    @property
    def fields(self) -> list[str]:
        """:data:`READ_FIELDS` and the booking field."""
        return [*self.READ_FIELDS, self.booking_field]

    def status_sql(self, columns: Any) -> Any | None:
        """None: ``Status`` words mapped by :data:`sync.engine.CRM_TO_CANON`."""
        return None

    def where_sql(self, columns: Any) -> Any | None:
        """None: every stored appointment."""
        return None

    def deletes(self, action: Action) -> bool:
        """Never: appointments are only updated."""
        return False

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A ``crm_appointments`` row (``id``, ``booking_id``, ``start_time``, ``end_time``, ``duration``
        in minutes, ``status``, ``modified_time``, ``job_id`` None); ISO 8601 times with an offset
        become aware UTC, an absent or empty one None. Raises :class:`InvalidRecord` (a ``ValueError``
        naming the record, the field and the value) for no ``id``, a time that is not ISO 8601 with
        an offset (``not-a-date``, no offset, month 13, not a string) or a duration that is no integer."""
        crm_id, booking = record_ids(record, self.booking_field)

        def instant(name: str) -> datetime | None:
            return record_instant(record, name, crm_id, booking)

        duration = record.get("Duration")
        try:
            minutes = parse_int(str(duration)) if duration not in (None, "") else None
        except ValueError:
            raise InvalidRecord(str(crm_id), booking, "Duration", duration, "is not a whole number of minutes") from None
        return {
            "id": str(crm_id),
            "booking_id": booking,
            "start_time": instant("Appointment_Start_Time"),
            "end_time": instant("Appointment_End_Time"),
            "duration": minutes,
            "status": record.get("Status"),
            "modified_time": instant("Modified_Time"),
            "job_id": None,
        }

    def shows(self, row: Mapping[str, Any], action: Action) -> bool:
        """Whether the record (its :meth:`row`) already says what ``action`` asks: a reschedule's start
        (the same instant, whatever the offset), a cancellation's or completion's ``Status``."""
        if action.kind is Kind.RESCHEDULE:
            return row.get("start_time") is not None and action.start is not None and row["start_time"] == action.start
        if action.kind in self.STATUS_AFTER:
            return row.get("status") == self.STATUS_AFTER[action.kind]
        return False

    def bulk_mapping(self) -> ModuleMapping:
        """:func:`sync.bulk_load.appointments_mapping` for the booking field."""
        return appointments_mapping(self.booking_field)

    def to_crm(self, link: Link, now: datetime) -> tuple[list[Action], Conflict | None]:
        """:func:`sync.engine.appointments_to_crm`: a finished appointment takes no change; ``Completed`` after the end."""
        return appointments_to_crm(link, now)

    def refusal(self, action: Action) -> tuple[str, str] | None:
        """``NOT_SUPPORTED`` for a no-show (CRM has none: the plan sends a cancellation with the note instead)."""
        if action.kind not in self.STATUS_AFTER:
            return "NOT_SUPPORTED", f"CRM has no {action.kind.value}: a no-show is written as a cancel with the note {NO_SHOW_NOTE!r}"
        return None

    def payload(self, action: Action) -> dict[str, Any]:
        """The ``PUT Appointments__s`` record (seeds 002/004): a reschedule ``{id, Appointment_Start_Time
        (aware), Reschedule_Reason: "By Customer"}``, a cancellation ``{id, Status: "Cancelled",
        Cancellation_Reason: "By Customer"[, Cancellation_Note]}``, a completion ``{id, Status: "Completed"}``.
        ``ValueError`` for a no-show."""
        if action.kind is Kind.RESCHEDULE:
            return {"id": action.crm_id, "Appointment_Start_Time": action.start, "Reschedule_Reason": "By Customer"}
        if action.kind is Kind.CANCEL:
            record = {"id": action.crm_id, "Status": "Cancelled", "Cancellation_Reason": "By Customer"}
            return {**record, "Cancellation_Note": action.note} if action.note is not None else record
        if action.kind is Kind.COMPLETE:
            return {"id": action.crm_id, "Status": "Completed"}
        raise ValueError(self.refusal(action)[1])

    def state_after(self, action: Action, before: SideState) -> SideState:
        """The new start (a reschedule) or ``before.start``, and the canonical :data:`STATUS_AFTER`."""
        start = action.start if action.kind is Kind.RESCHEDULE else before.start
        return SideState(start, crm_canon(self.STATUS_AFTER[action.kind]))

    def row_after(self, row: Mapping[str, Any], action: Action, after: SideState, modified: datetime | None) -> dict[str, Any]:
        """Start and ``Status`` as written, the end moved with a reschedule (:func:`end_after`),
        ``modified_time`` Zoho's new one (kept when Zoho gave none)."""
        values: dict[str, Any] = {"start_time": after.start, "status": self.STATUS_AFTER[action.kind], "modified_time": modified or row["modified_time"]}
        if action.kind is Kind.RESCHEDULE:
            values["end_time"] = end_after(after.start, row["start_time"], row["end_time"], row["duration"])
        return values


#: The canonical state of each kind of write (what the record says once it succeeded).
CANON_AFTER: Mapping[Kind, Canon] = {Kind.RESCHEDULE: Canon.SCHEDULED, Kind.CANCEL: Canon.CANCELLED, Kind.COMPLETE: Canon.COMPLETED, Kind.NO_SHOW: Canon.NO_SHOW}
#: The default words of a Meetings status picklist (``Booking_Status``), by canonical status.
MEETING_STATUSES: Mapping[str, str] = {"scheduled": "Scheduled", "cancelled": "Cancelled", "completed": "Completed", "no_show": "No Show"}


@dataclass(frozen=True)
class Meetings:
    """CRM Meetings (``Events``): ``Start_DateTime`` / ``End_DateTime``, and a status only where the
    organisation keeps one (seed 000; ``shared/zoho-api-notes.md``: Meetings have no status field).

    * ``status_field`` (default ``Booking_Status``): the picklist carrying the booking's status,
      its values ``statuses`` (canonical value -> word; default :data:`MEETING_STATUSES`). Cancel,
      complete and no-show then flow both ways; an empty or missing value reads as scheduled.
      ``None``: *time only*: a Bookings cancellation is written as ``cancel_policy`` says:
      ``keep`` (nothing written; reported once as ``kept``), ``prefix`` (the title gets
      ``cancel_prefix``; a title starting with it reads as cancelled, so a CRM user can cancel
      that way too) or ``delete`` (the Meeting is deleted); a completion or no-show is kept.
    * A reschedule writes the start and the end (the new start plus the booking's duration, else
      the Meeting's own length); with a status field it also writes the scheduled word.
    * Deleted Meetings (``deleted_at`` set by a ``delete`` notification): with ``delete_cancels``
      one reads as cancelled (the booking is cancelled); without, it takes no part in the diff
      (the run that saw the notification reported it).
    * Meetings have none of ``Appointments__s``'s update rules (no ``DEPENDENT_*`` codes, no
      "finished takes no change"): every change Bookings makes is written; Bookings' own rules
      still apply the other way (:func:`sync.engine.plan_link`).

    Updates go 100 records per ``PUT /crm/{v}/Events``, deletes 100 ids per ``DELETE``.
    """

    booking_field: str = "Booking_Id"
    status_field: str | None = "Booking_Status"
    status_words: tuple[tuple[str, str], ...] = tuple(MEETING_STATUSES.items())
    cancel_policy: str = "keep"
    cancel_prefix: str = "Cancelled: "
    delete_cancels: bool = False

    api_name: ClassVar[str] = "Events"
    table: ClassVar[Any] = CrmEvent
    base_table: ClassVar[Any] = SyncBaseEvent
    batch_size: ClassVar[int] = 100
    scope: ClassVar[str] = "Events"
    label: ClassVar[str] = "meeting"
    READ_FIELDS: ClassVar[tuple[str, ...]] = ("Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time")

    def __post_init__(self) -> None:
        if self.cancel_policy not in ("keep", "prefix", "delete"):
            raise ValueError(f"meeting cancel policy {self.cancel_policy!r}: expected keep, prefix or delete")
        words = dict(self.status_words)
        unknown = set(words) - {c.value for c in Canon}
        if unknown or len(set(words.values())) != len(words) or set(words) != {c.value for c in Canon}:
            raise ValueError(f"meeting statuses {words!r}: give one distinct word for each of {', '.join(c.value for c in Canon)}")

    def word(self, canon: Canon) -> str:
        """The status picklist's value for ``canon``."""
        return dict(self.status_words)[canon.value]

    @property
    def statuses(self) -> Mapping[str, Canon]:  # type: ignore[override]
        """Status words -> canonical status (empty in time-only mode)."""
        return {w: Canon(c) for c, w in self.status_words} if self.status_field else {}

    @property
    def fields(self) -> list[str]:
        """:data:`READ_FIELDS`, the status field (when kept) and the booking field."""
        return [*self.READ_FIELDS, *([self.status_field] if self.status_field else []), self.booking_field]

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A ``crm_events`` row (``id``, ``booking_id``, ``title``, ``start_time``, ``end_time``, ``status``
        (the status field's word; None in time-only mode), ``modified_time``, ``job_id`` None,
        ``deleted_at`` None: a record read is not deleted). Raises :class:`InvalidRecord` as
        :meth:`Appointments.row` does, and for a status word not among :attr:`statuses`."""
        crm_id, booking = record_ids(record, self.booking_field)

        def instant(name: str) -> datetime | None:
            return record_instant(record, name, crm_id, booking)

        status = None
        if self.status_field:
            status = record.get(self.status_field) or None
            if status is not None and not isinstance(status, str):
                raise InvalidRecord(str(crm_id), booking, self.status_field, status, f"is not text ({type(status).__name__}): not one word of the status pick list")
            if status is not None and status not in self.statuses:
                raise InvalidRecord(str(crm_id), booking, self.status_field, status, f"is not one of the configured meeting statuses ({', '.join(self.statuses)})")
        title = record.get("Event_Title")
        return {
            "id": str(crm_id),
            "booking_id": booking,
            "title": str(title) if title not in (None, "") else None,
            "start_time": instant("Start_DateTime"),
            "end_time": instant("End_DateTime"),
            "status": status,
            "modified_time": instant("Modified_Time"),
            "job_id": None,
            "deleted_at": None,
        }

    def canon(self, row: Mapping[str, Any]) -> Canon:
        """The canonical status of a stored row (what :meth:`status_sql` computes in SQL)."""
        if row.get("deleted_at") is not None:
            return Canon.CANCELLED
        if self.status_field:
            return self.statuses.get(row.get("status") or "", Canon.SCHEDULED)
        if self.cancel_policy == "prefix" and (row.get("title") or "").startswith(self.cancel_prefix):
            return Canon.CANCELLED
        return Canon.SCHEDULED

    def status_sql(self, columns: Any) -> Any:
        """The canonical status in SQL: deleted -> ``cancelled``; the status word mapped (empty:
        ``scheduled``; an unknown word passes through and the link is reported); time only:
        ``cancelled`` for a title with the prefix (``prefix`` policy), else ``scheduled``."""
        deleted = (columns.deleted_at.isnot(None), Canon.CANCELLED.value)
        if self.status_field:
            words = case({w: c.value for w, c in self.statuses.items()}, value=columns.status, else_=columns.status)
            return case(deleted, (columns.status.is_(None), Canon.SCHEDULED.value), (columns.status == "", Canon.SCHEDULED.value), else_=words)
        if self.cancel_policy == "prefix":  # substr, not LIKE: case-sensitive on SQLite too, as canon() is
            prefixed = func.substr(columns.title, 1, len(self.cancel_prefix)) == self.cancel_prefix
            return case(deleted, (prefixed, Canon.CANCELLED.value), else_=literal(Canon.SCHEDULED.value))
        return case(deleted, else_=literal(Canon.SCHEDULED.value))

    def where_sql(self, columns: Any) -> Any | None:
        """Deleted Meetings take part only when a delete cancels the booking (``delete_cancels``)."""
        return None if self.delete_cancels else columns.deleted_at.is_(None)

    def shows(self, row: Mapping[str, Any], action: Action) -> bool:
        """Whether the Meeting (its :meth:`row`) already says what ``action`` asks: a reschedule's start,
        else the canonical status the write leaves."""
        if action.kind is Kind.RESCHEDULE:  # a reschedule also makes a finished Meeting scheduled again
            same_start = row.get("start_time") is not None and action.start is not None and row["start_time"] == action.start
            return same_start and self.canon(row) is Canon.SCHEDULED
        return self.canon(row) is CANON_AFTER[action.kind]

    def bulk_mapping(self) -> ModuleMapping:
        """:func:`sync.bulk_load.events_mapping` plus the status field (CSV: Zoho's ICS export takes no field list)."""
        return events_mapping(self.booking_field, self.status_field)

    def _end(self, link: Link, start: datetime) -> datetime | None:
        """The Meeting's new end: ``start`` plus the booking's duration, else the Meeting's own length."""
        if link.bookings_end is not None and link.bookings_end > link.bookings.start:
            return start + (link.bookings_end - link.bookings.start)
        if link.end is not None and link.end > link.crm.start:
            return start + (link.end - link.crm.start)
        return None

    def to_crm(self, link: Link, now: datetime) -> tuple[list[Action], Conflict | None]:
        """The Meeting made to say what Bookings says (no CRM rules: a finished Meeting is written too).
        Time only: a cancellation follows ``cancel_policy``; a completion or no-show is ``kept``."""
        src, dst = link.bookings, link.crm
        ids = dict(booking_id=link.booking_id, crm_id=link.crm_id)
        base = dict(ids, time_zone=link.time_zone, since=since_of(link))
        if link.crm_gone:
            return [], Conflict(**ids, kind="rule", reason=f"the Meeting was deleted in CRM; the booking is {src.status.value} and nothing can be written to the Meeting")
        if src.status is Canon.SCHEDULED:
            if src.start != dst.start or dst.status is not Canon.SCHEDULED:
                title = link.title[len(self.cancel_prefix):] if self.cancel_policy == "prefix" and not self.status_field and (link.title or "").startswith(self.cancel_prefix) else None
                return [Action(**base, target=Side.CRM, kind=Kind.RESCHEDULE, start=src.start, end=self._end(link, src.start), note=title)], None
            return [], None
        if dst.status is src.status:
            return [], None
        kind = {Canon.CANCELLED: Kind.CANCEL, Canon.COMPLETED: Kind.COMPLETE, Canon.NO_SHOW: Kind.NO_SHOW}[src.status]
        if self.status_field:
            return [Action(**base, target=Side.CRM, kind=kind)], None
        if kind is Kind.CANCEL and self.cancel_policy != "keep":
            title = f"{self.cancel_prefix}{link.title or ''}" if self.cancel_policy == "prefix" else None
            return [Action(**base, target=Side.CRM, kind=kind, note=title)], None
        why = (f"the booking is {src.status.value}; Meetings have no status field here (meeting_status_field empty)"
               + (", and meeting_cancel_policy is keep" if kind is Kind.CANCEL else "") + ": the Meeting is kept as it is")
        return [], Conflict(**ids, kind="kept", reason=why)

    def refusal(self, action: Action) -> tuple[str, str] | None:
        """Time only: ``NOT_SUPPORTED`` for a completion or no-show (there is no field to write them to)."""
        if not self.status_field and action.kind in (Kind.COMPLETE, Kind.NO_SHOW):
            return "NOT_SUPPORTED", f"Meetings have no status field here (meeting_status_field empty): a {action.kind.value} cannot be written"
        return None

    def deletes(self, action: Action) -> bool:
        """A cancellation in time-only mode with ``cancel_policy`` ``delete``."""
        return action.kind is Kind.CANCEL and not self.status_field and self.cancel_policy == "delete"

    def payload(self, action: Action) -> dict[str, Any]:
        """The ``PUT Events`` record: a reschedule ``{id, Start_DateTime, End_DateTime (when known)[, status
        field: scheduled word][, Event_Title]}``, a status change ``{id, status field: word}``, a
        time-only cancellation ``{id, Event_Title: prefix + title}``. ``ValueError`` for a delete
        (:meth:`deletes`) or an action :meth:`refusal` refuses."""
        if self.deletes(action):
            raise ValueError("a delete has no update payload: sent as DELETE /crm/{v}/Events?ids=")
        reason = self.refusal(action)
        if reason is not None:
            raise ValueError(reason[1])
        record: dict[str, Any] = {"id": action.crm_id}
        if action.kind is Kind.RESCHEDULE:
            record["Start_DateTime"] = action.start
            if action.end is not None:
                record["End_DateTime"] = action.end
        if self.status_field:
            record[self.status_field] = self.word(CANON_AFTER[action.kind])
        if action.note is not None:
            record["Event_Title"] = action.note
        return record

    def state_after(self, action: Action, before: SideState) -> SideState:
        """The new start (a reschedule) or ``before.start``, and the status the write leaves."""
        start = action.start if action.kind is Kind.RESCHEDULE else before.start
        return SideState(start, CANON_AFTER[action.kind])

    def row_after(self, row: Mapping[str, Any], action: Action, after: SideState, modified: datetime | None) -> dict[str, Any]:
        """Start and end as written (the end moved by the old length when none was sent), the status
        word, the title, ``deleted_at`` for a delete, ``modified_time`` Zoho's new one (else kept)."""
        values: dict[str, Any] = {"modified_time": modified or row["modified_time"]}
        if action.kind is Kind.RESCHEDULE:
            values["start_time"] = after.start
            values["end_time"] = action.end or end_after(after.start, row["start_time"], row["end_time"], None)
        if self.status_field:
            values["status"] = self.word(after.status)
        if action.note is not None:
            values["title"] = action.note
        if self.deletes(action):
            values["deleted_at"] = modified or utc_now()
        return values


#: The adapters by API name (what ``AppointmentSyncConfig.crm_module`` names).
MODULES: dict[str, Callable[..., CrmModule]] = {Appointments.api_name: Appointments, Meetings.api_name: Meetings}


def crm_module(api_name: str, booking_field: str = "Booking_Id", **options: Any) -> CrmModule:
    """The adapter of CRM module ``api_name`` with ``booking_field`` as the booking-id field; ``options``
    go to :class:`Meetings` (``status_field``, ``status_words``, ``cancel_policy``, ``cancel_prefix``,
    ``delete_cancels``) and are ignored for ``Appointments__s``.

    Raises ``NotImplementedError`` naming the modules the sync handles for any other module, and
    ``ValueError`` for Meetings options that do not fit (an unknown policy, statuses missing one).
    """
    try:
        factory = MODULES[api_name]
    except KeyError:
        raise NotImplementedError(f"syncing {api_name} is not built; use crm_module={' or '.join(MODULES)}") from None
    if factory is Appointments:
        return Appointments(booking_field)
    return factory(booking_field, **options)
