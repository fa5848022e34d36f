"""The Zoho Bookings side of a link: its state-store row, its writes, the rules checked before one.

Pure: no Prefect, no HTTP, no database, nothing of :mod:`zoho` (the caller hands in
bookings already read: anything with the attributes of :class:`BookingLike`).
Bookings speaks wall time: a booking's times are ``dd-MMM-yyyy HH:mm:ss`` in its own
``time_zone``; rows hold instants in UTC. Statuses stay Bookings' own words in rows;
their canonical meaning is :data:`sync.engine.BOOKINGS_TO_CANON` (``PAYMENT_FAILURE`` is a
cancellation); a ``PENDING_PAYMENT`` row is stored as read and holds its link
(:data:`sync.engine.BOOKINGS_ON_HOLD`: nothing planned until it is paid or fails).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Protocol
from zoneinfo import ZoneInfo

from .engine import BOOKINGS_TO_CANON, Action, Kind, SideState, bookings_canon

UTC = timezone.utc

#: The Bookings status each action leaves a booking in (what a successful write means).
STATUS_AFTER = {Kind.RESCHEDULE: "UPCOMING", Kind.CANCEL: "CANCEL", Kind.COMPLETE: "COMPLETED", Kind.NO_SHOW: "NO_SHOW"}
#: ``updateappointment``'s ``action`` for each status change (a reschedule is ``rescheduleappointment``).
VERBS = {Kind.CANCEL: "cancel", Kind.COMPLETE: "completed", Kind.NO_SHOW: "noshow"}


class BookingLike(Protocol):
    """A booking as read from Bookings (:class:`zoho.models.Booking` is one): ``start`` and
    ``end`` are aware instants (``end`` None when unknown), ``status`` Bookings' word."""

    booking_id: str
    status: str
    time_zone: str
    staff_id: str | None
    service_id: str | None

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime | None: ...


def booking_row(b: BookingLike) -> dict[str, Any]:
    """A ``bookings`` row: ``booking_id``, ``start_time`` and ``end_time`` (aware UTC; no end:
    None), ``status`` (upper case), ``time_zone``, ``staff_id``, ``service_id``. Raises
    ``ValueError`` when the booking's times cannot be read."""
    end = b.end
    return {
        "booking_id": b.booking_id,
        "start_time": b.start.astimezone(UTC),
        "end_time": end.astimezone(UTC) if end else None,
        "status": b.status.upper(),
        "time_zone": b.time_zone,
        "staff_id": b.staff_id,
        "service_id": b.service_id,
    }


def _wall_time(instant: datetime, time_zone: str) -> datetime:
    """``instant`` as Bookings writes it: wall time in ``time_zone`` to the second, read back (the first pass of a fold)."""
    local = instant.astimezone(ZoneInfo(time_zone)).replace(microsecond=0, fold=0)
    return local.astimezone(UTC)


def refusal(action: Action) -> tuple[str, str] | None:
    """``(code, message)`` when ``action`` must not be sent to Bookings, else None.

    ``AMBIGUOUS_TIME``: a reschedule to the second pass of a daylight-saving fold
    (``01:30`` the second time in ``America/New_York`` on the night clocks go back):
    Bookings takes wall time in the booking's zone and would read it as the first.
    """
    if action.kind is Kind.RESCHEDULE and _wall_time(action.start, action.time_zone) != action.start:
        text = action.start.astimezone(ZoneInfo(action.time_zone)).strftime("%d-%b-%Y %H:%M:%S")
        return "AMBIGUOUS_TIME", f"{action.start.isoformat()} is the second {text} in {action.time_zone}; Bookings can only write the first"
    return None


def verb(action: Action) -> str:
    """The ``updateappointment`` action for a status change; ``KeyError`` for a reschedule."""
    return VERBS[action.kind]


def shows(row: Mapping[str, Any], action: Action) -> bool:
    """Whether a ``bookings`` row (:func:`booking_row`) already shows what ``action`` asks:
    a reschedule, the same start instant and still scheduled; a status change, its status.
    An unknown status shows nothing."""
    try:
        status = bookings_canon(row["status"])
    except ValueError:
        return False
    if status is not BOOKINGS_TO_CANON[STATUS_AFTER[action.kind]]:
        return False
    return action.kind is not Kind.RESCHEDULE or row["start_time"] == action.start


def state_after(action: Action, before: SideState, start: datetime | None, status: str | None) -> tuple[SideState, str]:
    """The booking's side after ``action`` succeeded, and its raw status.

    ``start`` and ``status``: what Zoho answered (None when unknown: the start
    stays ``before.start``, the status is :data:`STATUS_AFTER` of the action).
    Raises ``ValueError`` for a status the sync does not know.
    """
    status = status or STATUS_AFTER[action.kind]
    return SideState(start or before.start, bookings_canon(status)), status


def row_after(row: Mapping[str, Any], before_start: datetime | None, after: SideState, status: str, moved: bool) -> dict[str, Any]:
    """The ``bookings`` columns to set after a successful write: start and status; when
    the start ``moved``, the end moves with it (same length)."""
    values: dict[str, Any] = {"start_time": after.start, "status": status}
    if moved and row["end_time"] is not None and before_start is not None:
        values["end_time"] = row["end_time"] + (after.start - before_start)
    return values

