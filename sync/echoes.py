"""Echoes: a Bookings webhook that only reports what the state store already holds.

When the sync writes to Bookings (reschedule, cancel, complete, no-show) it stores
the booking's new state from the write's answer in ``bookings``
(:class:`sync.tables.BookingRecord`), and Bookings then sends a webhook for that
very change. Reading the booking again (``getappointment``, one metered Bookings
call) would tell us nothing new, so the receiver drops such a webhook.

The rule, safe by construction: a webhook is an echo only when the stored row of
its booking exists and has the same start instant (UTC, to the second) and the
same canonical status (:func:`sync.engine.bookings_canon`) as the webhook
reports. Anything missing, unknown or unreadable is *not* an echo: the booking is
read as before.

Pure data access and comparison (SQLAlchemy, bound parameters only): no Prefect,
no HTTP, nothing of :mod:`zoho`. Parsing the webhook's Bookings time text is the
caller's job (an edge concern: ``zoho.timefmt.from_bookings``); this module takes
aware instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, select

from .engine import bookings_canon
from .tables import BookingRecord

UTC = timezone.utc


@dataclass(frozen=True)
class StoredBooking:
    """The part of a ``bookings`` row an echo is compared with: ``start`` aware UTC (None when
    unknown), ``status`` Bookings' own word (``UPCOMING``, ``CANCEL``, ...)."""

    booking_id: str
    start: datetime | None
    status: str | None


def _second(instant: datetime) -> datetime:
    """``instant`` in UTC without its fraction of a second; ``ValueError`` for a naive one."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"the start must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC).replace(microsecond=0)


def same_state(start: datetime, status: str, stored: StoredBooking | None) -> bool:
    """Whether a webhook reporting ``start`` (aware) and ``status`` (a Bookings status, any case)
    says what ``stored`` already holds: same instant to the second (compared in UTC) and the same
    canonical status (``ONGOING`` and ``UPCOMING`` are both *scheduled*).

    False when ``stored`` is None, has no start or status, or either status is unknown to
    :data:`sync.engine.BOOKINGS_TO_CANON`. Raises ``ValueError`` for a naive ``start``.
    """
    reported = _second(start)
    if stored is None or stored.start is None or not stored.status:
        return False
    try:
        same_status = bookings_canon(status) == bookings_canon(stored.status)
    except ValueError:
        return False
    return same_status and reported == _second(stored.start)


def stored_booking(engine: Engine, booking_id: str) -> StoredBooking | None:
    """The ``bookings`` row of ``booking_id`` (one indexed read), or None when there is none.
    Raises what SQLAlchemy raises when the store cannot be read."""
    table = BookingRecord.__table__
    query = select(table.c.start_time, table.c.status).where(table.c.booking_id == booking_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else StoredBooking(booking_id, row.start_time, row.status)


def is_echo(engine: Engine, booking_id: str, start: datetime, status: str) -> bool:
    """Whether a Bookings webhook for ``booking_id`` reporting ``start`` (aware) and ``status``
    is an echo of what the state store holds (:func:`same_state` against :func:`stored_booking`).

    Raises what SQLAlchemy raises when the store cannot be read (the caller decides: the
    receiver treats that as *not an echo*) and ``ValueError`` for a naive ``start``.
    """
    _second(start)  # refuse a naive start before touching the store
    return same_state(start, status, stored_booking(engine, booking_id))
