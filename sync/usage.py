"""The API budget in the state store: what each run spent, reads that wait, alerts sent.

* ``api_usage`` (:class:`~sync.tables.ApiUsage`): one row per run and family with the
  units spent (Bookings calls, CRM credits), the reads, writes and refused calls, and
  the day they count against. :func:`family_day` sums them into a
  :class:`~sync.budget.FamilyDay` before a run reads anything.
* ``pending_reads`` (:class:`~sync.tables.PendingRead`): bookings named by a webhook (or a
  CRM change) that were not read because the day's budget was spent; the next run with
  budget left reads them first (:func:`pending_reads`) and removes them once read.
* ``budget_alerts`` (:class:`~sync.tables.BudgetAlert`): at most one ``zoho.budget.low``
  event per family and day (:func:`alert_once`).

All instants are aware UTC; SQL is parameterised (SQLAlchemy Core).
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine

from .budget import DAY, FamilyDay, bookings_day, budget_of
from .store import insert_on_conflict
from .tables import ApiUsage, BudgetAlert, PendingRead

FAMILIES = ("bookings", "crm")


def usage_day(family: str, now: datetime, bookings_time_zone: str) -> str:
    """The day label a family's calls made at ``now`` count against: Bookings, the workspace's
    date in ``bookings_time_zone``; CRM, the UTC date (CRM itself counts a rolling 24 hours)."""
    if family == "bookings":
        return bookings_day(now, bookings_time_zone)[0]
    return now.date().isoformat()


def record_usage(engine: Engine, run_id: str, mode: str, spent: Mapping[str, Mapping[str, int]], now: datetime, bookings_time_zone: str) -> None:
    """Add the units a run spent, per family: ``spent`` is ``{family: {"units", "reads", "writes",
    "refused"}}`` (:meth:`zoho.usage.Meter.by_family`, or the part spent since the last call);
    families with nothing spent or refused are skipped."""
    rows = [
        {
            "run_id": run_id, "mode": mode, "family": family, "units": int(v.get("units", 0)), "reads": int(v.get("reads", 0)),
            "writes": int(v.get("writes", 0)), "refused": int(v.get("refused", 0)), "day": usage_day(family, now, bookings_time_zone), "at": now,
        }
        for family, v in spent.items()
        if any(int(v.get(k, 0)) for k in ("units", "reads", "writes", "refused"))
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(ApiUsage.__table__.insert(), rows)


def family_day(engine: Engine, family: str, limit: int, percent: float, reserve_percent: float, now: datetime, bookings_time_zone: str) -> FamilyDay:
    """The family's day so far (see :class:`~sync.budget.FamilyDay`): Zoho's ``limit``, our budget
    (``percent`` of it), the write reserve (``reserve_percent`` of the budget), the units used in
    the period (Bookings: the workspace's day; CRM: the last 24 hours) and the last 24 hours'
    usage for the forecast. Raises ``ValueError`` for an unknown family or time zone."""
    if family not in FAMILIES:
        raise ValueError(f"unknown API family {family!r} (expected one of {FAMILIES})")
    budget = budget_of(limit, percent)
    reserve = min(budget, round(budget * reserve_percent / 100))
    table = ApiUsage.__table__
    since = now - DAY
    with engine.connect() as conn:
        recent, first = conn.execute(select(func.coalesce(func.sum(table.c.units), 0), func.min(table.c.at)).where(table.c.family == family, table.c.at > since)).one()
        if family == "bookings":
            day, _, ends = bookings_day(now, bookings_time_zone)
            used = conn.execute(select(func.coalesce(func.sum(table.c.units), 0)).where(table.c.family == family, table.c.day == day)).scalar_one()
        else:
            day, ends, used = now.date().isoformat(), now + DAY, recent
    first_at = ApiUsage.__table__.c.at.type.process_result_value(first, engine.dialect) if first is not None else None
    seconds = (now - first_at).total_seconds() if first_at is not None else 0.0
    return FamilyDay(family, limit, budget, reserve, int(used), day, ends, int(recent), max(0.0, seconds))


def pending_reads(engine: Engine, limit: int | None = None) -> list[str]:
    """Booking ids waiting to be read, oldest first (at most ``limit``)."""
    query = select(PendingRead.__table__.c.booking_id).order_by(PendingRead.__table__.c.since, PendingRead.__table__.c.booking_id)
    if limit is not None:
        query = query.limit(max(0, limit))
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def count_pending_reads(engine: Engine) -> int:
    """How many bookings wait to be read."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PendingRead.__table__)).scalar_one())


def add_pending_reads(engine: Engine, booking_ids: Iterable[str], reason: str, now: datetime) -> None:
    """Keep ``booking_ids`` to read later (a booking already waiting keeps its ``since``; its attempts go up)."""
    ids = sorted(set(booking_ids))
    if not ids:
        return
    table = PendingRead.__table__
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.booking_id.in_(ids)).values(attempts=table.c.attempts + 1, reason=reason))
        conn.execute(insert_on_conflict(engine, table).on_conflict_do_nothing(index_elements=["booking_id"]), [{"booking_id": b, "reason": reason, "since": now, "attempts": 1} for b in ids])


def drop_pending_reads(engine: Engine, booking_ids: Iterable[str]) -> None:
    """Forget ``booking_ids`` (read now)."""
    ids = sorted(set(booking_ids))
    if ids:
        with engine.begin() as conn:
            conn.execute(delete(PendingRead.__table__).where(PendingRead.__table__.c.booking_id.in_(ids)))


def alert_once(engine: Engine, family: str, day: str, used: int, forecast: int, budget: int, now: datetime) -> bool:
    """Note a ``zoho.budget.low`` alert for ``family`` and ``day``; True the first time only (then send it)."""
    table = BudgetAlert.__table__
    with engine.begin() as conn:
        if conn.execute(select(table.c.family).where(table.c.family == family, table.c.day == day)).first() is not None:
            return False
        conn.execute(table.insert().values(family=family, day=day, used=used, forecast=forecast, budget=budget, at=now))
    return True
