"""The sync's queries of the state store: the CRM and Bookings sides, the links' base, the action log.

Pure data access (SQLAlchemy/SQLModel, bound parameters only): no Prefect, no HTTP.
The tables are in :mod:`sync.tables`:

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
from typing import Any, Callable, Iterable, Iterator, Mapping

from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlmodel import Session
from sqlmodel import select as sm_select

from .engine import BOOKINGS_ON_HOLD, BOOKINGS_TO_CANON, CRM_TO_CANON, Action, Canon, Link, OnHold, SideState
from .store import insert_on_conflict, upsert_newer
from .tables import BookingRecord, CrmAppointment, SyncAction, SyncBase, UTCDateTime, utc_now


def upsert_bookings(engine: Engine, rows: Iterable[dict[str, Any]], now: datetime | None = None) -> int:
    """Store fetched bookings (``booking_id``, ``start_time``, ``end_time``, ``status``,
    ``time_zone``, ``staff_id``, ``service_id``); ``changed_at`` moves only when start or
    status differ from what was stored. Returns the number of rows."""
    now = now or utc_now()
    rows = [{**r, "fetched_at": now, "changed_at": now} for r in rows]
    if not rows:
        return 0
    stmt = insert_on_conflict(engine, BookingRecord)
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


def upsert_crm_records(engine: Engine, table: Any, rows: Iterable[dict[str, Any]]) -> int:
    """Store CRM records read by the records API into ``table`` (a CRM table class; its columns as keys).

    Never goes back in ``modified_time`` (:func:`sync.store.upsert_newer`). Returns the number of rows given.
    """
    rows = list(rows)
    if rows:
        with engine.begin() as conn:
            conn.execute(upsert_newer(engine, table), rows)
    return len(rows)


def upsert_crm_appointments(engine: Engine, rows: Iterable[dict[str, Any]]) -> int:
    """:func:`upsert_crm_records` into ``crm_appointments``."""
    return upsert_crm_records(engine, CrmAppointment, rows)


def _canon_case(column: Any, table: Mapping[str, Canon]) -> Any:
    return case({k: v.value for k, v in table.items()}, value=column, else_=column)


def _live(crm: Any) -> Any:
    """The SQL condition "not deleted" for a CRM table with a ``deleted_at`` column (Meetings), else None."""
    return crm.c.deleted_at.is_(None) if "deleted_at" in crm.c else None


def changed_links(
    engine: Engine,
    booking_ids: Iterable[str] | None = None,
    chunk: int = 2000,
    *,
    crm_table: Any = CrmAppointment,
    crm_statuses: Mapping[str, Canon] = CRM_TO_CANON,
    base_table: Any = SyncBase,
    crm_status_sql: Callable[[Any], Any] | None = None,
    crm_where: Callable[[Any], Any] | None = None,
) -> Iterator[Link]:
    """Links whose CRM or Bookings side differs from the base, or that have no base.

    Joins ``crm_table`` (default ``crm_appointments``; its ``status`` words mapped by
    ``crm_statuses``, or its canonical status computed by ``crm_status_sql(columns)``,
    a SQL expression: Meetings derive it) and ``bookings`` on the booking id (left join
    ``base_table``, default ``sync_base``; each CRM module has its own); ``crm_where(columns)``
    limits the CRM records (None: all). The comparison runs in SQL. ``booking_ids`` limits
    it to those links. Rows come ``chunk`` at a time, ordered by booking id.
    Unknown statuses are passed through and :func:`row_to_link` raises ``ValueError``
    (:class:`InvalidLink`) for that link; the iterator stays usable, so a caller that
    catches the error on ``next()`` records the bad link and goes on with the rest.
    """
    crm = crm_table.__table__
    c, b, s = crm.c, BookingRecord.__table__.c, base_table.__table__.c
    derived = crm_status_sql(c) if crm_status_sql is not None else None
    crm_status = derived if derived is not None else _canon_case(c.status, crm_statuses)
    bk_status = _canon_case(b.status, BOOKINGS_TO_CANON)
    title = c.title.label("title") if "title" in c else None
    gone = c.deleted_at.isnot(None).label("crm_gone") if "deleted_at" in c else None
    query = (
        select(
            b.booking_id, c.id.label("crm_id"), b.time_zone, c.start_time.label("crm_start"), crm_status.label("crm_status"),
            c.modified_time, c.end_time.label("crm_end"), b.start_time.label("bk_start"), bk_status.label("bk_status"),
            b.changed_at, b.end_time.label("bk_end"), s.crm_start.label("base_crm_start"), s.crm_status.label("base_crm_status"),
            s.bookings_start.label("base_bk_start"), s.bookings_status.label("base_bk_status"), s.agreed_at.label("base_at"),
            *([title] if title is not None else []),
            *([gone] if gone is not None else []),
        )
        .select_from(crm.join(BookingRecord.__table__, c.booking_id == b.booking_id).outerjoin(base_table.__table__, s.booking_id == b.booking_id))
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
    condition = crm_where(c) if crm_where is not None else None
    if condition is not None:
        query = query.where(condition)
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
    (a ``ValueError`` carrying the booking and CRM ids) on a bad status or missing time, and
    :class:`~sync.engine.OnHold` (also a ``ValueError``) for a booking waiting for payment."""
    crm_id = getattr(row, "crm_id", None)
    if row.crm_start is None or row.bk_start is None:
        raise InvalidLink(row.booking_id, crm_id, f"link {row.booking_id}: a start time is missing (CRM {row.crm_start}, Bookings {row.bk_start})")
    if row.bk_status in BOOKINGS_ON_HOLD:  # PENDING_PAYMENT: held this run, reported (sync.engine.OnHold)
        raise OnHold(row.bk_status, row.booking_id, crm_id)
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
        bookings_end=getattr(row, "bk_end", None),
        title=getattr(row, "title", None),
        crm_gone=bool(getattr(row, "crm_gone", False)),
    )


#: A base row as :func:`write_base` takes it: ``(booking_id, crm_id, time_zone, crm_state, bookings_state)``.
BaseRow = tuple[str, str, str, SideState, SideState]


def write_base(engine: Engine, links: Iterable[BaseRow], now: datetime | None = None, base_table: Any = SyncBase) -> int:
    """Record agreement: rows of ``(booking_id, crm_id, time_zone, crm_state, bookings_state)``,
    agreed at ``now`` (default now, UTC), in ``base_table`` (the CRM module's base; default
    ``sync_base``). Returns the number of rows."""
    now = now or utc_now()
    rows = [
        {"booking_id": bid, "crm_id": cid, "time_zone": tz, "crm_start": cs.start, "crm_status": cs.status.value,
         "bookings_start": bs.start, "bookings_status": bs.status.value, "agreed_at": now}
        for bid, cid, tz, cs, bs in links
    ]
    if not rows:
        return 0
    stmt = insert_on_conflict(engine, base_table)
    stmt = stmt.on_conflict_do_update(index_elements=["booking_id"], set_={k: getattr(stmt.excluded, k) for k in rows[0] if k != "booking_id"})
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def log_actions(engine: Engine, run_id: str, entries: Iterable[tuple[Action, str, str | None, str | None]], now: datetime | None = None) -> None:
    """Record ``(action, status, code, message)`` entries; an existing key gets one more attempt."""
    now = now or utc_now()
    rows = [
        {"key": a.key, "run_id": run_id, "booking_id": a.booking_id, "crm_id": a.crm_id, "target": a.target.value, "kind": a.kind.value,
         "value": a.value, "status": status, "attempts": 1 if status in ("applied", "failed", "refused") else 0, "code": code, "message": message,
         "created_at": now, "updated_at": now}
        for a, status, code, message in entries
    ]
    if not rows:
        return
    stmt = insert_on_conflict(engine, SyncAction)
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


def refused_keys(engine: Engine, keys: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """Which of ``keys`` Zoho refused when they were sent (status ``refused``: a Bookings refusal
    that a re-read did not show as done), with the refusal's ``(code, message)``."""
    keys = list(keys)
    out: dict[str, tuple[str | None, str | None]] = {}
    with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            t = SyncAction.__table__.c
            query = select(t.key, t.code, t.message).where(and_(t.key.in_(keys[i : i + 500]), t.status == "refused"))
            out.update({r.key: (r.code, r.message) for r in conn.execute(query)})
    return out


def retry_queue(engine: Engine) -> list[SyncAction]:
    """Actions waiting for another run (``failed`` or ``deferred``)."""
    with Session(engine) as s:
        return list(s.exec(sm_select(SyncAction).where(SyncAction.status.in_(["failed", "deferred"]))))


def write_agreed(engine: Engine, links: Iterable[Link], now: datetime | None = None, base_table: Any = SyncBase) -> int:
    """Record that both sides of each link agree as they are now (:func:`write_base` of their current sides)."""
    return write_base(engine, [(l.booking_id, l.crm_id, l.time_zone, l.crm, l.bookings) for l in links], now, base_table)


def count_links(engine: Engine, crm_table: Any = CrmAppointment) -> int:
    """How many CRM records of ``crm_table`` (not deleted) are linked to a stored booking."""
    c, b = crm_table.__table__.c, BookingRecord.__table__.c
    query = select(func.count()).select_from(crm_table.__table__.join(BookingRecord.__table__, c.booking_id == b.booking_id))
    live = _live(crm_table.__table__)
    with engine.connect() as conn:
        return conn.execute(query if live is None else query.where(live)).scalar_one()


def crm_ids_for_bookings(engine: Engine, booking_ids: Iterable[str], crm_table: Any = CrmAppointment) -> list[str]:
    """Ids of the stored CRM records of ``crm_table`` (not deleted) linked to any of ``booking_ids`` (in no set order)."""
    booking_ids = list(booking_ids)
    if not booking_ids:
        return []
    c = crm_table.__table__.c
    query = select(c.id).where(c.booking_id.in_(booking_ids))
    live = _live(crm_table.__table__)
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(query if live is None else query.where(live))]


def mark_deleted(engine: Engine, crm_table: Any, crm_ids: Iterable[str], now: datetime) -> list[dict[str, Any]]:
    """Mark the stored records ``crm_ids`` of ``crm_table`` (one with a ``deleted_at`` column) deleted at
    ``now``; returns the rows (``id``, ``booking_id``, ``title``) of those newly marked: records not
    stored, or marked before (the echo of our own delete), are left out."""
    ids = sorted(set(crm_ids))
    if not ids:
        return []
    t = crm_table.__table__
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(select(t.c.id, t.c.booking_id, t.c.title).where(t.c.id.in_(ids), t.c.deleted_at.is_(None))).mappings()]
        if rows:
            conn.execute(update(t).where(t.c.id.in_([r["id"] for r in rows])).values(deleted_at=now))
    return rows


def newest_modified_time(engine: Engine, crm_table: Any = CrmAppointment) -> datetime | None:
    """The newest ``modified_time`` stored in ``crm_table`` (aware UTC), or None when it has none."""
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(crm_table.__table__.c.modified_time))).scalar_one_or_none()
    return UTCDateTime().process_result_value(newest, engine.dialect) if isinstance(newest, str) else newest


def update_row(engine: Engine, table: Any, key: str, change: Callable[[Mapping[str, Any]], dict[str, Any]]) -> bool:
    """Set the columns ``change(row)`` returns on the row of ``table`` whose primary key is ``key``.

    ``change`` gets the stored row (column name -> value, instants aware UTC) and
    returns the new values; read and write are one transaction. Returns False (and
    changes nothing) when no such row is stored.
    """
    t = table.__table__
    pk = list(t.primary_key.columns)[0]
    with engine.begin() as conn:
        row = conn.execute(select(t).where(pk == key)).mappings().first()
        if row is None:
            return False
        values = change(row)
        if values:
            conn.execute(update(t).where(pk == key).values(**values))
    return True


def bookings_window(now: datetime, past_days: int, future_days: int) -> tuple[datetime, datetime]:
    """The Bookings fetch window around ``now``: ``(now - past_days, now + future_days)`` (days of 24 h)."""
    return now - timedelta(days=past_days), now + timedelta(days=future_days)


def unknown_bookings(engine: Engine, booking_ids: Iterable[str]) -> list[str]:
    """Those of ``booking_ids`` with no stored ``bookings`` row (sorted): links the sync has never read."""
    ids = sorted({b for b in booking_ids if b})
    if not ids:
        return []
    table = BookingRecord.__table__
    with engine.connect() as conn:
        known = set(conn.execute(select(table.c.booking_id).where(table.c.booking_id.in_(ids))).scalars())
    return [b for b in ids if b not in known]


def count_bookings_between(engine: Engine, start: datetime, end: datetime) -> int:
    """Stored bookings starting in [``start``, ``end``] (aware): what a window read is expected to page through."""
    table = BookingRecord.__table__
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.start_time >= start, table.c.start_time <= end)).scalar_one())
