"""Time helpers: every instant inside the sandbox is an aware ``datetime``.

The sandbox's clock is settable (``GET``/``PUT /__sandbox/clock``): :func:`now`
and :func:`timestamp` are real time plus an offset, and every instant the sandbox
reasons about (appointments passing and Overdue, token expiry and the mint window,
grant codes, page tokens, notification channel expiry, the Bookings day and the CRM
credit window) reads them. The offset is one per process (one sandbox per
process) and goes back to 0 (real time) at every reset. Timers that only measure
real durations stay on real time: a Bulk Read job's progress through its states
and its result's lifetime (the job runs in a real ``asyncio.sleep``; moving the
clock must not report ``COMPLETED`` before the file exists), the 10 downloads a
minute throttle and the outbox's log stamps.

Strings exist only at the edges: ISO 8601 with offset for CRM (in the org's time
zone, seconds precision, as Zoho answers) and ``dd-MMM-yyyy HH:mm:ss`` in a
booking's own ``time_zone`` for Bookings.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): i + 1 for i, name in enumerate(_MONTHS)}

UTC = timezone.utc


#: Seconds the sandbox's clock is ahead of real time (negative: behind).
_offset: float = 0.0


def timestamp() -> float:
    """The sandbox's now as POSIX seconds (real time plus the offset)."""
    return time.time() + _offset


def now() -> datetime:
    """The sandbox's current instant, UTC, whole seconds (Zoho's times carry no fractions)."""
    return datetime.fromtimestamp(timestamp(), UTC).replace(microsecond=0)


def offset() -> float:
    """Seconds the sandbox's clock is ahead of real time."""
    return _offset


def set_now(instant: datetime) -> None:
    """Make ``instant`` (aware) the sandbox's now; the clock keeps running from there."""
    global _offset
    _offset = instant.timestamp() - time.time()


def advance(seconds: float) -> None:
    """Move the sandbox's clock by ``seconds`` (negative: back)."""
    global _offset
    _offset += seconds


def set_real() -> None:
    """Back to real time."""
    global _offset
    _offset = 0.0


def to_crm(instant: datetime, tz: str) -> str:
    """``2023-04-05T10:00:00+05:30``: ``instant`` shown in time zone ``tz``."""
    return instant.astimezone(ZoneInfo(tz)).replace(microsecond=0).isoformat()


def parse_iso(value: object) -> datetime:
    """Parse an ISO 8601 date-time with an offset (``Z`` accepted).

    Raises ``ValueError`` for anything else, including a time without an offset:
    Zoho's documents always send and expect the offset.
    """
    if not isinstance(value, str) or "T" not in value:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"ISO 8601 date-time without an offset: {value!r}")
    return parsed


def to_bookings(instant: datetime, tz: str) -> str:
    """``28-May-2019 13:00:00``: ``instant`` as wall time in ``tz`` (English month names)."""
    local = instant.astimezone(ZoneInfo(tz))
    return f"{local.day:02d}-{_MONTHS[local.month - 1]}-{local.year:04d} {local:%H:%M:%S}"


def parse_bookings(value: object, tz: str) -> datetime:
    """Parse ``dd-MMM-yyyy HH:mm:ss`` (24-hour) as wall time in ``tz``.

    A wall time that falls in a daylight-saving fold (it happens twice) or gap
    (it never happens) is resolved with ``fold=0`` (the offset in force before the
    change), as ``zoneinfo`` does; :func:`exists` tells a gap apart. Raises
    ``ValueError``.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a dd-MMM-yyyy HH:mm:ss time: {value!r}")
    try:
        date_part, time_part = value.strip().split(" ")
        day, month, year = date_part.split("-")
        hour, minute, second = (int(x) for x in time_part.split(":"))
        naive = datetime(int(year), _MONTH_NUMBER[month.lower()], int(day), hour, minute, second)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a dd-MMM-yyyy HH:mm:ss time: {value!r}") from exc
    return naive.replace(tzinfo=ZoneInfo(tz))


def exists(local: datetime) -> bool:
    """Whether the aware wall time ``local`` happens in its time zone (False in a
    daylight-saving gap, e.g. 02:30 on the day New York springs forward)."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)
