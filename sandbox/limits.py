"""Zoho's API limits: Bookings calls per day, CRM credits per rolling 24 hours, CRM concurrency.

Usage is always counted (``GET /__sandbox/stats`` shows it under ``limits``); it is
enforced only with the setting ``limits_enforced`` (off by default, so tests,
``make demo`` and the benchmarks are never refused). Times read the sandbox's
clock (:mod:`sandbox.clock`), so moving the clock frees quota.

* **Bookings** ("API limits" of Zoho Bookings): calls per user per calendar day by
  plan: Free 250, Basic 1,000, Premium 3,000 (``bookings_plan``); calls to Accounts
  (``/oauth/``) are not counted. The day is the workspace's calendar day, taken in
  ``org_time_zone``. The sandbox has one user (every token acts for the org's one
  API user), so the count is per sandbox. What Zoho answers past the limit is not
  documented: the sandbox answers ``bookings_limit_status`` (default 429) with the
  Bookings failure envelope ``{"response": {"returnvalue": {"message": ..., "code":
  "API_LIMIT_EXCEEDED"}, "status": "failure"}}`` and a ``Retry-After`` header
  (seconds to the next local midnight).
* **CRM** ("API Limits" of Zoho CRM): credits over a rolling 24 hours by edition
  (``crm_edition``, ``crm_users``): Free 5,000; Standard 50,000 + 250 per user (at
  most 100,000); Professional 50,000 + 500 per user; Enterprise 50,000 + 1,000 per
  user; Ultimate 50,000 + 2,000 per user (add-on credits and the editions'
  maximums above 100,000 are not modelled). ``crm_credit_limit`` > 0 overrides the
  edition's figure (for tests). Every CRM and Bulk call costs 1 credit except
  creating a Bulk Read job, which costs ``crm_bulk_read_credits`` (default 50: an
  assumption, the credit table was not at hand). Concurrent calls by edition: Free
  5, Standard 10, Professional 15, Enterprise 20, Ultimate 25; heavy calls (here:
  record lists with ``If-Modified-Since``) at most 10 at once. Past either limit
  CRM answers 429 ``TOO_MANY_REQUESTS``; a refused call costs no credit.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import clock

BOOKINGS_PLANS = {"Free": 250, "Basic": 1000, "Premium": 3000}
CRM_EDITIONS = ("Free", "Standard", "Professional", "Enterprise", "Ultimate")
CRM_CONCURRENCY = {"Free": 5, "Standard": 10, "Professional": 15, "Enterprise": 20, "Ultimate": 25}
CRM_PER_USER = {"Standard": 250, "Professional": 500, "Enterprise": 1000, "Ultimate": 2000}
HEAVY_CONCURRENCY = 10
WINDOW = 86_400


def crm_credit_limit(cfg: Any) -> int:
    """Credits per rolling 24 hours for the configured edition and users."""
    if cfg.crm_credit_limit > 0:
        return int(cfg.crm_credit_limit)
    if cfg.crm_edition == "Free":
        return 5000
    limit = 50_000 + CRM_PER_USER[cfg.crm_edition] * cfg.crm_users
    return min(limit, 100_000) if cfg.crm_edition == "Standard" else limit


def local_day(tz: str) -> str:
    """The sandbox's current calendar date in ``tz``."""
    return clock.now().astimezone(ZoneInfo(tz)).date().isoformat()


def seconds_to_midnight(tz: str) -> int:
    """Seconds from the sandbox's now to the next midnight in ``tz``."""
    local = clock.now().astimezone(ZoneInfo(tz))
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    return max(1, int((midnight - local).total_seconds()))


@dataclass
class Usage:
    """API-limit counters of one sandbox (zeroed at reset)."""

    #: Bookings calls per local day (``YYYY-MM-DD`` -> calls).
    bookings_by_day: Counter = field(default_factory=Counter)
    #: CRM credits spent: ``(sandbox timestamp, credits)``, oldest first.
    crm_credits: deque = field(default_factory=deque)
    crm_credit_sum: int = 0
    crm_in_flight: int = 0
    crm_heavy_in_flight: int = 0
    #: Calls refused per reason (``bookings_daily``, ``crm_credits``, ``crm_concurrency``, ``crm_heavy_concurrency``).
    refused: Counter = field(default_factory=Counter)

    def credits_used(self) -> int:
        """CRM credits spent in the last 24 hours of the sandbox's clock."""
        now = clock.timestamp()
        while self.crm_credits and self.crm_credits[0][0] <= now - WINDOW:
            self.crm_credit_sum -= self.crm_credits.popleft()[1]
        # a clock moved back leaves entries "in the future": they still count
        return self.crm_credit_sum

    def as_dict(self, cfg: Any) -> dict[str, Any]:
        """The day's usage per API family, with the limits."""
        return {
            "enforced": cfg.limits_enforced,
            "bookings": {
                "plan": cfg.bookings_plan,
                "day": local_day(cfg.org_time_zone),
                "calls_today": self.bookings_by_day[local_day(cfg.org_time_zone)],
                "daily_limit": BOOKINGS_PLANS[cfg.bookings_plan],
            },
            "crm": {
                "edition": cfg.crm_edition,
                "users": cfg.crm_users,
                "credits_used_24h": self.credits_used(),
                "credit_limit_24h": crm_credit_limit(cfg),
                "in_flight": self.crm_in_flight,
                "concurrency_limit": CRM_CONCURRENCY[cfg.crm_edition],
                "heavy_concurrency_limit": HEAVY_CONCURRENCY,
            },
            "refused": dict(self.refused),
        }


def _credits(method: str, path: str, cfg: Any) -> int:
    parts = path.rstrip("/").split("/")
    # /crm/bulk/{version}/read
    if method == "POST" and len(parts) == 5 and parts[1:3] == ["crm", "bulk"] and parts[4] == "read":
        return int(cfg.crm_bulk_read_credits)
    return 1


def _heavy(method: str, path: str, headers: dict[bytes, bytes]) -> bool:
    return method == "GET" and b"if-modified-since" in headers and not path.startswith("/crm/bulk/")


def admit(usage: Usage, cfg: Any, group: str, method: str, path: str, headers: dict[bytes, bytes]) -> tuple[str, int, dict[str, Any], dict[str, str]] | None:
    """Count the call; ``None`` to let it through, else ``(reason, status, body, headers)``.

    A CRM call let through holds a concurrency slot until :func:`release`.
    """
    enforced = cfg.limits_enforced
    if group == "bookings":
        day = local_day(cfg.org_time_zone)
        if enforced and usage.bookings_by_day[day] >= BOOKINGS_PLANS[cfg.bookings_plan]:
            usage.refused["bookings_daily"] += 1
            limit = BOOKINGS_PLANS[cfg.bookings_plan]
            message = f"API call limit of {limit} calls per day for the {cfg.bookings_plan} plan exceeded; try again tomorrow"
            body = {"response": {"returnvalue": {"message": message, "code": "API_LIMIT_EXCEEDED"}, "status": "failure"}}
            return "bookings_daily", int(cfg.bookings_limit_status), body, {"Retry-After": str(seconds_to_midnight(cfg.org_time_zone))}
        usage.bookings_by_day[day] += 1
        return None
    if group not in ("crm", "bulk"):
        return None
    heavy = _heavy(method, path, headers)
    if enforced:
        reason = None
        if usage.crm_in_flight >= CRM_CONCURRENCY[cfg.crm_edition]:
            reason, details = "crm_concurrency", {"concurrency_limit": CRM_CONCURRENCY[cfg.crm_edition]}
        elif heavy and usage.crm_heavy_in_flight >= HEAVY_CONCURRENCY:
            reason, details = "crm_heavy_concurrency", {"concurrency_limit": HEAVY_CONCURRENCY}
        else:
            cost = _credits(method, path, cfg)
            if usage.credits_used() + cost > crm_credit_limit(cfg):
                reason, details = "crm_credits", {"credit_limit": crm_credit_limit(cfg)}
        if reason:
            usage.refused[reason] += 1
            body = {
                "code": "TOO_MANY_REQUESTS",
                "details": details,
                "message": "Too many requests. Please try again after some time.",
                "status": "error",
            }
            return reason, 429, body, {}
    cost = _credits(method, path, cfg)
    usage.crm_credits.append((clock.timestamp(), cost))
    usage.crm_credit_sum += cost
    usage.crm_in_flight += 1
    if heavy:
        usage.crm_heavy_in_flight += 1
    return None


def release(usage: Usage, group: str, method: str, path: str, headers: dict[bytes, bytes]) -> None:
    """Free the concurrency slot a CRM call held."""
    if group not in ("crm", "bulk"):
        return
    usage.crm_in_flight = max(0, usage.crm_in_flight - 1)
    if _heavy(method, path, headers):
        usage.crm_heavy_in_flight = max(0, usage.crm_heavy_in_flight - 1)
