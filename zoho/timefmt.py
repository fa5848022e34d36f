"""Time formats at the Zoho edges. Inside the project every time is an aware ``datetime``.

* CRM: ISO 8601 with offset, seconds precision (``2023-04-05T10:00:00+05:30``);
  Bulk Read criteria take the same form without milliseconds (seed 001).
* Bookings: ``dd-MMM-yyyy HH:mm:ss`` (24-hour, English month abbreviations) as
  wall time in the booking's own ``time_zone`` (seed 000).
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value``; raise ``ValueError`` naming ``what`` if it has no time zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value


def to_crm(instant: datetime) -> str:
    """ISO 8601 with offset, no fractions (CRM and Bulk Read criteria)."""
    return require_aware(instant).replace(microsecond=0).isoformat()


def to_bookings(instant: datetime, time_zone: str) -> str:
    """``dd-MMM-yyyy HH:mm:ss``: the wall time of ``instant`` in ``time_zone``."""
    local = require_aware(instant).astimezone(ZoneInfo(time_zone))
    return f"{local.day:02d}-{_MONTHS[local.month - 1]}-{local.year:04d} {local:%H:%M:%S}"


def from_bookings(text: str, time_zone: str) -> datetime:
    """Parse ``dd-MMM-yyyy HH:mm:ss`` as wall time in ``time_zone``.

    The result carries the fixed UTC offset that wall time had in ``time_zone``
    (e.g. ``13:00+05:30``), not the ``ZoneInfo`` itself: an aware datetime in a
    ``ZoneInfo`` fold never compares equal to one in another zone (PEP 495), so
    ``from_bookings(...) == crm_time`` would be False for the very same instant.
    In a daylight-saving fold the earlier instant is taken (``fold=0``); a wall
    time in a gap is kept as ``zoneinfo`` resolves it (the offset before the
    change). Raises ``ValueError`` naming the text when it does not match the format.
    """
    try:
        date_part, time_part = text.strip().split(" ")
        day, month, year = date_part.split("-")
        hour, minute, second = (int(x) for x in time_part.split(":"))
        naive = datetime(int(year), _MONTH_NUMBER[month.lower()], int(day), hour, minute, second)
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a Bookings time (dd-MMM-yyyy HH:mm:ss): {text!r}") from exc
    local = naive.replace(tzinfo=ZoneInfo(time_zone), fold=0)
    return naive.replace(tzinfo=timezone(local.utcoffset()))
