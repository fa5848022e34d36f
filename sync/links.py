"""Links between CRM appointments and bookings: the Bookings side, the base, the action log.

Pure data access (SQLAlchemy/SQLModel, bound parameters only): no Prefect, no HTTP.

* ``bookings``: the Bookings side as last fetched. Bookings exposes no
  modification time, so ``changed_at`` is when we first saw the current
  (start, status): the stand-in for ``latest_wins``.
* ``sync_base``: per link, the last state both sides agreed on, each side in its
  own terms (start instant, canonical status); written only after both confirm.
* ``sync_actions``: every planned change with its idempotency key (link, target,
  kind, value), attempts, outcome, Zoho's code and message. ``failed`` and
  ``deferred`` rows are the retry queue: the next run plans them again from fresh
  reads, and a key already ``applied`` is verified by re-reading, never re-sent.

:func:`changed_links` is the diff's input, computed in SQL: only links whose
sides differ from the base (or have no base) become Python objects, so memory
does not grow with the number of unchanged appointments.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator

from sqlalchemy import Engine, and_, case, or_, select
from sqlmodel import Field, Session, SQLModel

from .engine import BOOKINGS_TO_CANON, CRM_TO_CANON, Action, Canon, Link, SideState
from .store import CrmAppointment, _dt, insert_on_conflict, utc_now


class BookingRecord(SQLModel, table=True):
    """A Zoho Bookings appointment as last fetched (instants in UTC)."""

    __tablename__ = "bookings"

    booking_id: str = Field(primary_key=True)
    start_time: datetime | None = _dt()
    end_time: datetime | None = _dt()
    status: str
    time_zone: str
    staff_id: str | None = None
    service_id: str | None = None
    changed_at: datetime | None = _dt()
    fetched_at: datetime | None = _dt()


class SyncBase(SQLModel, table=True):
    """The last state both sides agreed on, per link."""

    __tablename__ = "sync_base"

    booking_id: str = Field(primary_key=True)
    crm_id: str = Field(index=True)
    crm_start: datetime | None = _dt()
    crm_status: str
    bookings_start: datetime | None = _dt()
    bookings_status: str
    time_zone: str
    agreed_at: datetime | None = _dt()


class SyncAction(SQLModel, table=True):
    """One planned change and what became of it (the action log and retry queue)."""

    __tablename__ = "sync_actions"

    key: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    booking_id: str = Field(index=True)
    crm_id: str
    target: str
    kind: str
    value: str
    status: str = Field(index=True)  # planned | applied | failed | deferred | conflict | dry_run
    attempts: int = 0
    code: str | None = None
    message: str | None = None
    created_at: datetime | None = _dt()
    updated_at: datetime | None = _dt()


def _insert(engine: Engine, table: Any):
    return insert_on_conflict(engine, table)


def upsert_bookings(engine: Engine, rows: Iterable[dict[str, Any]], now: datetime | None = None) -> int:
    """Store fetched bookings (``booking_id``, ``start_time``, ``end_time``, ``status``,
    ``time_zone``, ``staff_id``, ``service_id``); ``changed_at`` moves only when start or
    status differ from what was stored. Returns the number of rows."""
    now = now or utc_now()
    rows = [{**r, "fetched_at": now, "changed_at": now} for r in rows]
    if not rows:
        return 0
    stmt = _insert(engine, BookingRecord)
    table = BookingRecord.__table__
    moved = or_(table.c.start_time.is_distinct_from(stmt.excluded.start_time), table.c.status.is_distinct_from(stmt.excluded.status))
    stmt = stmt.on_conflict_do_update(
        index_elements=["booking_id"],
        set_={
            **{c: getattr(stmt.excluded, c) for c in ("start_time", "end_time", "status", "time_zone", "staff_id", "service_id", "fetched_at")},
            "changed_at": case((moved, stmt.excluded.changed_at), else_=table.c.changed_at),
        },
    )
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(stmt, rows[i : i + 5000])
    return len(rows)


def upsert_crm_appointments(engine: Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Store CRM appointments read by the records API (table columns as keys); never goes back in ``modified_time``."""
    from .bulk_load import _upsert

    rows = list(rows)
    if rows:
        with engine.begin() as conn:
            conn.execute(_upsert(engine, CrmAppointment), rows)
    return len(rows)


def _canon_case(column: Any, table: dict[str, Canon]) -> Any:
    return case({k: v.value for k, v in table.items()}, value=column, else_=column)


def changed_links(engine: Engine, booking_ids: Iterable[str] | None = None, chunk: int = 2000) -> Iterator[Link]:
    """Links whose CRM or Bookings side differs from the base, or that have no base.

    Joins ``crm_appointments`` and ``bookings`` on the booking id (left join
    ``sync_base``); the comparison runs in SQL. ``booking_ids`` limits it to those links.
    Unknown statuses are passed through and :func:`row_to_link` raises ``ValueError``
    for that link; the iterator stays usable, so a caller that catches the error on
    ``next()`` records the bad link and goes on with the rest.
    """
    c, b, s = CrmAppointment.__table__.c, BookingRecord.__table__.c, SyncBase.__table__.c
    crm_status = _canon_case(c.status, CRM_TO_CANON)
    bk_status = _canon_case(b.status, BOOKINGS_TO_CANON)
    query = (
        select(
            b.booking_id, c.id.label("crm_id"), b.time_zone, c.start_time.label("crm_start"), crm_status.label("crm_status"),
            c.modified_time, c.end_time.label("crm_end"), b.start_time.label("bk_start"), bk_status.label("bk_status"),
            b.changed_at, b.end_time.label("bk_end"), s.crm_start.label("base_crm_start"), s.crm_status.label("base_crm_status"),
            s.bookings_start.label("base_bk_start"), s.bookings_status.label("base_bk_status"), s.agreed_at.label("base_at"),
        )
        .select_from(CrmAppointment.__table__.join(BookingRecord.__table__, c.booking_id == b.booking_id).outerjoin(SyncBase.__table__, s.booking_id == b.booking_id))
        .where(
            or_(
                s.booking_id.is_(None),
                c.start_time.is_distinct_from(s.crm_start),
                crm_status.is_distinct_from(s.crm_status),
                b.start_time.is_distinct_from(s.bookings_start),
                bk_status.is_distinct_from(s.bookings_status),
            )
        )
        .order_by(b.booking_id)
    )
    if booking_ids is not None:
        query = query.where(b.booking_id.in_(list(booking_ids)))
    # map, not a generator: an exception from row_to_link would end a generator
    return map(row_to_link, _rows(engine, query, chunk))


def _rows(engine: Engine, query: Any, chunk: int) -> Iterator[Any]:
    with engine.connect() as conn:
        yield from conn.execution_options(stream_results=True, yield_per=chunk).execute(query)


class InvalidLink(ValueError):
    """A link that cannot be diffed (a missing start, an unknown status); ``booking_id`` and ``crm_id`` name it."""

    def __init__(self, booking_id: str | None, crm_id: str | None, message: str) -> None:
        super().__init__(message)
        self.booking_id, self.crm_id = booking_id, crm_id


def row_to_link(row: Any) -> Link:
    """A :class:`~sync.engine.Link` from a :func:`changed_links` row; raises :class:`InvalidLink`
    (a ``ValueError`` carrying the booking and CRM ids) on a bad status or missing time."""
    crm_id = getattr(row, "crm_id", None)
    if row.crm_start is None or row.bk_start is None:
        raise InvalidLink(row.booking_id, crm_id, f"link {row.booking_id}: a start time is missing (CRM {row.crm_start}, Bookings {row.bk_start})")
    try:
        crm_status, bk_status = Canon(row.crm_status), Canon(row.bk_status)
    except ValueError:
        raise InvalidLink(row.booking_id, crm_id, f"link {row.booking_id}: unknown status (CRM {row.crm_status!r}, Bookings {row.bk_status!r})") from None
    base_crm = base_bk = None
    if row.base_crm_status is not None:
        base_crm = SideState(row.base_crm_start, Canon(row.base_crm_status))
        base_bk = SideState(row.base_bk_start, Canon(row.base_bk_status))
    return Link(
        booking_id=row.booking_id,
        crm_id=row.crm_id,
        time_zone=row.time_zone,
        crm=SideState(row.crm_start, crm_status, row.modified_time),
        bookings=SideState(row.bk_start, bk_status, row.changed_at),
        end=row.crm_end or row.bk_end,
        base_crm=base_crm,
        base_bookings=base_bk,
        base_at=getattr(row, "base_at", None),
    )


def write_base(engine: Engine, links: Iterable[tuple[str, str, str, SideState, SideState]], now: datetime | None = None) -> int:
    """Record agreement: rows of ``(booking_id, crm_id, time_zone, crm_state, bookings_state)``."""
    now = now or utc_now()
    rows = [
        {"booking_id": bid, "crm_id": cid, "time_zone": tz, "crm_start": cs.start, "crm_status": cs.status.value,
         "bookings_start": bs.start, "bookings_status": bs.status.value, "agreed_at": now}
        for bid, cid, tz, cs, bs in links
    ]
    if not rows:
        return 0
    stmt = _insert(engine, SyncBase)
    stmt = stmt.on_conflict_do_update(index_elements=["booking_id"], set_={k: getattr(stmt.excluded, k) for k in rows[0] if k != "booking_id"})
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def log_actions(engine: Engine, run_id: str, entries: Iterable[tuple[Action, str, str | None, str | None]], now: datetime | None = None) -> None:
    """Record ``(action, status, code, message)`` entries; an existing key gets one more attempt."""
    now = now or utc_now()
    rows = [
        {"key": a.key, "run_id": run_id, "booking_id": a.booking_id, "crm_id": a.crm_id, "target": a.target.value, "kind": a.kind.value,
         "value": a.value, "status": status, "attempts": 1 if status in ("applied", "failed") else 0, "code": code, "message": message,
         "created_at": now, "updated_at": now}
        for a, status, code, message in entries
    ]
    if not rows:
        return
    stmt = _insert(engine, SyncAction)
    table = SyncAction.__table__
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={"run_id": stmt.excluded.run_id, "status": stmt.excluded.status, "code": stmt.excluded.code, "message": stmt.excluded.message,
              "attempts": table.c.attempts + stmt.excluded.attempts, "updated_at": stmt.excluded.updated_at},
    )
    with engine.begin() as conn:
        conn.execute(stmt, rows)


def applied_keys(engine: Engine, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` were already applied (sent and confirmed by Zoho)."""
    keys = list(keys)
    out: set[str] = set()
    with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            t = SyncAction.__table__.c
            out |= {r[0] for r in conn.execute(select(t.key).where(and_(t.key.in_(keys[i : i + 500]), t.status == "applied")))}
    return out


def retry_queue(engine: Engine) -> list[SyncAction]:
    """Actions waiting for another run (``failed`` or ``deferred``)."""
    with Session(engine) as s:
        from sqlmodel import select as sm_select

        return list(s.exec(sm_select(SyncAction).where(SyncAction.status.in_(["failed", "deferred"]))))


def bookings_window(now: datetime, past_days: int, future_days: int) -> tuple[datetime, datetime]:
    """The Bookings fetch window around ``now``."""
    return now - timedelta(days=past_days), now + timedelta(days=future_days)
