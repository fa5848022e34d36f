"""The organisation's daily Zoho API budget around one run: the meter before, the record after.

:func:`start_budget` reads what the organisation spent today from the state store
(:func:`sync.usage.family_day`) and returns a :class:`zoho.usage.Meter` whose
allowances are what is left: reads up to the budget less the write reserve, writes up
to the budget (:mod:`sync.budget`). The flow installs it with
:func:`zoho.usage.metering`, so every Zoho call of the run (tasks, the Bulk Read
subflow) is counted and none passes the budget. :func:`close_budget` adds the run's
spending to the store and says which families' forecast passes the budget for the
first time today (the flow sends ``zoho.budget.low`` for those).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blocks.sync_config import AppointmentSyncConfig
from sync.budget import FamilyDay, bookings_daily_limit, crm_daily_credits
from sync.store import Store
from sync.usage import alert_once, family_day, record_usage
from zoho.usage import Allowance, Meter


@dataclass
class Budget:
    """A run's budget: the families' days before the run (``days``) and the run's :class:`Meter`."""

    days: dict[str, FamilyDay]
    meter: Meter


def limits_of(cfg: AppointmentSyncConfig) -> dict[str, int]:
    """Zoho's daily limits for ``cfg``: ``{"bookings": calls, "crm": credits}``."""
    return {
        "bookings": bookings_daily_limit(cfg.bookings_plan, cfg.bookings_calls_per_day),
        "crm": crm_daily_credits(cfg.crm_edition, cfg.crm_users, cfg.crm_credits_per_day),
    }


def start_budget(cfg: AppointmentSyncConfig, engine: Store, now: datetime) -> Budget:
    """The families' days so far and a meter allowing what is left of the budget (see the module docstring)."""
    days = {
        family: family_day(engine, family, limit, cfg.budget_percent, cfg.write_reserve_percent, now, cfg.bookings_time_zone)
        for family, limit in limits_of(cfg).items()
    }
    meter = Meter({family: Allowance(day.read_left(), day.write_left()) for family, day in days.items()})
    return Budget(days, meter)


def close_budget(budget: Budget, engine: Store, run_id: str, mode: str, now: datetime, time_zone: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Record the run's spending; returns ``(summary, alerts)``: per family the day so far
    (:meth:`sync.budget.FamilyDay.summary`), and the families whose forecast passes the budget
    for the first time today (each ``{"family", "day", "used", "forecast", "budget", "limit"}``)."""
    spent = budget.meter.by_family()
    record_usage(engine, run_id, mode, spent, now, time_zone)
    summary, alerts = {}, []
    for family, day in budget.days.items():
        shown = day.summary(now, spent.get(family, {}).get("units", 0))
        summary[family] = shown
        if int(shown["forecast"]) > day.budget and alert_once(engine, family, day.day, int(shown["used"]), int(shown["forecast"]), day.budget, now):
            alerts.append({"family": family, **shown})
    return summary, alerts
