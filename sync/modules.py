"""CRM modules the sync links to bookings: one adapter per module, chosen by API name.

Pure: no Prefect, no HTTP, no database. A :class:`CrmModule` says everything the
flow and the tasks need to know about one CRM module: its API name and state-store
table, the fields to read, how a record becomes a row, what each planned change is
sent as, what is refused before sending, and what our copy of a record becomes once
a write succeeded. :class:`Appointments` (``Appointments__s``) is the first one;
:func:`crm_module` picks the adapter for a configuration's ``crm_module``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, ClassVar, Mapping, Protocol

from .bulk_load import ModuleMapping, appointments_mapping, parse_datetime, parse_int
from .engine import CRM_TO_CANON, NO_SHOW_NOTE, Action, Canon, Conflict, Kind, Link, SideState, appointments_to_crm, crm_canon
from .tables import CrmAppointment


class CrmModule(Protocol):
    """One CRM module as the sync sees it.

    Attributes: ``api_name`` (``Appointments__s``), ``booking_field`` (the API name of
    the field holding the Bookings ``booking_id``), ``table`` (its state-store table
    class: ``id``, ``booking_id``, ``start_time``, ``end_time``, ``status``,
    ``modified_time`` columns at least), ``statuses`` (its ``Status`` words ->
    canonical status), ``batch_size`` (records per update call).
    """

    api_name: str
    booking_field: str
    table: Any
    statuses: Mapping[str, Canon]
    batch_size: int

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
    statuses: ClassVar[Mapping[str, Canon]] = CRM_TO_CANON
    batch_size: ClassVar[int] = 100
    #: Fields read besides the booking field, in request order.
    READ_FIELDS: ClassVar[tuple[str, ...]] = ("Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time")
    #: The ``Status`` each kind of write leaves (a no-show is sent as a cancellation).
    STATUS_AFTER: ClassVar[Mapping[Kind, str]] = {Kind.RESCHEDULE: "Scheduled", Kind.CANCEL: "Cancelled", Kind.COMPLETE: "Completed"}

    @property
    def fields(self) -> list[str]:
        """:data:`READ_FIELDS` and the booking field."""
        return [*self.READ_FIELDS, self.booking_field]

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A ``crm_appointments`` row (``id``, ``booking_id``, ``start_time``, ``end_time``, ``duration``
        in minutes, ``status``, ``modified_time``, ``job_id`` None); ISO 8601 times with an offset
        become aware UTC, an absent or empty one None. Raises :class:`InvalidRecord` (a ``ValueError``
        naming the record, the field and the value) for no ``id``, a time that is not ISO 8601 with
        an offset (``not-a-date``, no offset, month 13, not a string) or a duration that is no integer."""
        crm_id = record.get("id")
        booking = record.get(self.booking_field) or None
        booking = str(booking) if booking is not None else None
        if crm_id in (None, ""):
            raise InvalidRecord(None, booking, "id", crm_id, "is missing: the record has no id")

        def instant(name: str) -> datetime | None:
            value = record.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise InvalidRecord(str(crm_id), booking, name, value, f"is not text ({type(value).__name__}): not an ISO 8601 date-time")
            try:
                return parse_datetime(value)
            except ValueError as exc:
                raise InvalidRecord(str(crm_id), booking, name, value, f"is not an ISO 8601 date-time with an offset ({str(exc)[:120]})") from None

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


#: The adapters by API name (what ``AppointmentSyncConfig.crm_module`` names).
MODULES: dict[str, Callable[[str], CrmModule]] = {Appointments.api_name: Appointments}


def crm_module(api_name: str, booking_field: str = "Booking_Id") -> CrmModule:
    """The adapter of CRM module ``api_name`` with ``booking_field`` as the booking-id field.

    Raises ``NotImplementedError`` for a module the sync does not handle yet (``Events``).
    """
    try:
        factory = MODULES[api_name]
    except KeyError:
        raise NotImplementedError(f"syncing {api_name} is not built yet; use crm_module={' or '.join(MODULES)}") from None
    return factory(booking_field)
