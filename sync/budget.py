"""The organisation's daily Zoho API budget: the arithmetic (pure: no Prefect, HTTP or database).

Zoho's limits (``shared/zoho-api-notes.md``):

* **Bookings** ("API limits" of Zoho Bookings): calls per user per calendar day by
  plan: Free 250, Basic 1,000, Premium 3,000 (:data:`BOOKINGS_PLANS`). The day is
  taken in the workspace's time zone (``bookings_time_zone``).
* **CRM** ("API Limits" of Zoho CRM): credits over a rolling 24 hours by edition:
  Free 5,000; Standard 50,000 + 250 per user (at most 100,000); Professional 50,000 +
  500 per user; Enterprise 50,000 + 1,000 per user; Ultimate 50,000 + 2,000 per user
  (:func:`crm_daily_credits`; add-on credits: give ``crm_credits_per_day``).

Our budget is ``budget_percent`` (default 80 %) of Zoho's limit, so other users of the
same grant and the margin between our count and Zoho's keep room. Of the budget,
``write_reserve_percent`` is kept for writes: reads stop at ``budget - reserve``, writes
at ``budget`` (:meth:`FamilyDay.read_left` / :meth:`FamilyDay.write_left`), so a day
that runs short still sends the changes it has already read. A read that does not fit
waits for the next day: the scan and the full run are skipped and run again on their
schedule; a booking a webhook named is kept in ``pending_reads`` (:mod:`sync.usage`).

The forecast (:meth:`FamilyDay.forecast`) is what the period will have used at its end
at the current rate: ``used + rate x time left`` (Bookings: until the workspace's
midnight), the rate being the family's usage over the last 24 hours (or over the
history there is, at least an hour). CRM counts a rolling 24 hours, so its "period"
is the 24 hours ending now and its forecast is ``rate x 24 h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

#: Bookings calls per user per day, by plan (Zoho Bookings "API limits").
BOOKINGS_PLANS = {"free": 250, "basic": 1000, "premium": 3000}
#: CRM credits per rolling 24 hours: Free's fixed figure; other editions 50,000 + per user.
CRM_FREE_CREDITS = 5000
CRM_BASE_CREDITS = 50_000
CRM_PER_USER = {"standard": 250, "professional": 500, "enterprise": 1000, "ultimate": 2000}
CRM_STANDARD_MAX = 100_000
CRM_EDITIONS = ("free", *CRM_PER_USER)
DAY = timedelta(days=1)
#: The shortest history a rate is computed over: a run alone is not a rate, and on a
#: store's first day the nightly full run's pages would otherwise read as a rate of
#: 20 calls an hour.
MIN_RATE_WINDOW = timedelta(hours=6)


def bookings_daily_limit(plan: str, calls_per_day: int | None = None) -> int:
    """Zoho's Bookings calls per day: ``calls_per_day`` when given (> 0), else the ``plan``'s
    (``free`` / ``basic`` / ``premium``, any case). Raises ``ValueError`` naming an unknown plan."""
    if calls_per_day:
        return int(calls_per_day)
    try:
        return BOOKINGS_PLANS[plan.lower()]
    except KeyError:
        raise ValueError(f"unknown Bookings plan {plan!r} (expected one of {', '.join(BOOKINGS_PLANS)})") from None


def crm_daily_credits(edition: str, users: int = 1, credits_per_day: int | None = None) -> int:
    """Zoho's CRM credits per rolling 24 hours: ``credits_per_day`` when given (> 0), else by
    ``edition`` and ``users`` (see the module docstring). Raises ``ValueError`` naming an unknown edition."""
    if credits_per_day:
        return int(credits_per_day)
    key = edition.lower()
    if key == "free":
        return CRM_FREE_CREDITS
    if key not in CRM_PER_USER:
        raise ValueError(f"unknown CRM edition {edition!r} (expected one of {', '.join(CRM_EDITIONS)})")
    credits = CRM_BASE_CREDITS + CRM_PER_USER[key] * max(1, users)
    return min(credits, CRM_STANDARD_MAX) if key == "standard" else credits


def budget_of(limit: int, percent: float) -> int:
    """``percent`` of ``limit``, rounded down (at least 1 when the limit is)."""
    return max(1 if limit else 0, math.floor(limit * percent / 100))


def bookings_day(now: datetime, time_zone: str) -> tuple[str, datetime, datetime]:
    """The workspace's calendar day at ``now`` (aware): ``(YYYY-MM-DD, its start, its end)``, aware.

    Raises ``ValueError`` for a ``time_zone`` that is not an IANA name.
    """
    try:
        zone = ZoneInfo(time_zone)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"bookings_time_zone {time_zone!r} is not an IANA time zone") from exc
    local = now.astimezone(zone).date()
    start = datetime.combine(local, time(0), zone)
    end = datetime.combine(local + timedelta(days=1), time(0), zone)
    return local.isoformat(), start, end


@dataclass(frozen=True)
class FamilyDay:
    """One API family's day for the organisation (units: Bookings calls, CRM credits).

    ``limit``: Zoho's; ``budget``: ours (``budget_percent`` of it); ``reserve``: the part kept
    for writes; ``used``: spent in the period before this run; ``day``: the period's label
    (Bookings: the workspace's date; CRM: the UTC date, the period being the last 24 hours);
    ``ends``: when the period's count starts again (Bookings: the workspace's midnight; CRM:
    rolling, 24 hours from now); ``recent`` / ``recent_seconds``: usage over the last 24 hours
    and the seconds it covers (the rate of the forecast).
    """

    family: str
    limit: int
    budget: int
    reserve: int
    used: int
    day: str
    ends: datetime
    recent: int = 0
    recent_seconds: float = 0.0

    def read_left(self) -> int:
        """Units reads may still spend today: up to ``budget - reserve`` (never below 0)."""
        return max(0, self.budget - self.reserve - self.used)

    def write_left(self) -> int:
        """Units writes may still spend today: up to ``budget`` (never below 0)."""
        return max(0, self.budget - self.used)

    def rate_per_hour(self) -> float:
        """Units per hour over the recent history (at least :data:`MIN_RATE_WINDOW` long)."""
        seconds = max(self.recent_seconds, MIN_RATE_WINDOW.total_seconds())
        return self.recent * 3600 / seconds

    def forecast(self, now: datetime, spent: int = 0) -> int:
        """Units the period will have used at its end at the current rate, counting ``spent`` by this run.

        Bookings: ``used + spent + rate x hours to the workspace's midnight``; CRM (rolling):
        ``rate x 24 h``; the rate counts ``spent`` too.
        """
        seconds = max(self.recent_seconds, MIN_RATE_WINDOW.total_seconds())
        if self.family == "crm":
            return math.ceil((self.recent + spent) * DAY.total_seconds() / seconds)
        hours_left = max(0.0, (self.ends - now).total_seconds() / 3600)
        return math.ceil(self.used + spent + (self.recent + spent) * 3600 / seconds * hours_left)

    def summary(self, now: datetime, spent: int) -> dict[str, int | str]:
        """What a run's summary shows: ``used`` (before and by this run), ``budget``, ``limit``,
        ``forecast``, ``day``, ``left`` (for writes)."""
        return {
            "day": self.day,
            "used": self.used + spent,
            "budget": self.budget,
            "limit": self.limit,
            "forecast": self.forecast(now, spent),
            "left": max(0, self.budget - self.used - spent),
        }
