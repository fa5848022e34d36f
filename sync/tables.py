"""Every table of the state store, and the column type of its instants.

SQLModel tables on SQLite or PostgreSQL; the schema itself is made by the Alembic
migrations in ``sync/migrations/`` (:func:`sync.store.open_store`), never by
``create_all``: a new column or table here needs a new migration.

* CRM side: ``crm_appointments`` (:class:`CrmAppointment`), ``crm_events`` (:class:`CrmEvent`).
* Bookings side: ``bookings`` (:class:`BookingRecord`).
* The sync: ``sync_base`` (:class:`SyncBase`; Meetings: ``sync_base_events``, :class:`SyncBaseEvent`),
  ``sync_actions`` (:class:`SyncAction`).
* The API budget: ``api_usage`` (:class:`ApiUsage`), ``pending_reads`` (:class:`PendingRead`),
  ``budget_alerts`` (:class:`BudgetAlert`).
* Bulk Read: ``bulk_read_runs`` (:class:`BulkReadRun`), ``bulk_jobs`` (:class:`BulkJob`),
  ``rejected_records`` (:class:`RejectedRecord`); incremental reads: ``bookmarks`` (:class:`Bookmark`).

Every ``datetime`` column is a :class:`UTCDateTime`: stored in UTC and read back
timezone-aware (UTC), whatever the database (SQLite has no time zones).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import BigInteger, Column, DateTime, Index, String, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

UTC = timezone.utc


class UTCDateTime(TypeDecorator):
    """An aware ``datetime`` stored in UTC; naive values are refused (``ValueError``).

    PostgreSQL: ``timestamptz``. SQLite (no time zones): ISO 8601 text in UTC
    (``2026-11-01T04:30:00+00:00``), which sorts and compares in time order and
    costs a fraction of SQLAlchemy's own SQLite datetime binding on bulk loads.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(String(40) if dialect.name == "sqlite" else DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: give a time zone")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.isoformat() if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A replacement for the wall clock (:func:`set_clock`); None: the real time.
_clock: Callable[[], datetime] | None = None


def utc_now() -> datetime:
    """Now, aware UTC: the real time, or the clock :func:`set_clock` installed.

    Every "now" of the sync (the run's time, the Bookings window, the day of the
    API budget, bookmarks, ``changed_at``) comes from here.
    """
    return _clock() if _clock is not None else datetime.now(UTC)


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Make :func:`utc_now` answer ``clock()`` (aware UTC), or the real time again with None.

    For simulations that move time faster than the wall clock, e.g.
    ``benchmarks/api_day.py`` following the sandbox's ``/__sandbox/clock``; the
    process's Prefect and OAuth clocks are not affected.
    """
    global _clock
    _clock = clock


def _dt(**kwargs: Any) -> Any:
    """A nullable :class:`UTCDateTime` field (``default=None``)."""
    return Field(default=None, sa_column=Column(UTCDateTime(), **kwargs))


class CrmAppointment(SQLModel, table=True):
    """A CRM ``Appointments__s`` record as last read (bulk or API): what the sync compares."""

    __tablename__ = "crm_appointments"

    id: str = Field(primary_key=True)
    booking_id: str | None = Field(default=None, index=True)
    start_time: datetime | None = _dt()
    end_time: datetime | None = _dt()
    duration: int | None = Field(default=None, sa_type=BigInteger)  # 64-bit on PostgreSQL too, as on SQLite
    status: str | None = None
    modified_time: datetime | None = _dt()
    job_id: str | None = None
    loaded_at: datetime | None = _dt()


class CrmEvent(SQLModel, table=True):
    """A CRM ``Events`` (Meetings) record as last read. ``status``: the organisation's status
    picklist (:class:`sync.modules.Meetings`; None in time-only mode); ``deleted_at``: when
    the Meeting was deleted in CRM (a ``delete`` notification, or our own delete)."""

    __tablename__ = "crm_events"

    id: str = Field(primary_key=True)
    booking_id: str | None = Field(default=None, index=True)
    title: str | None = None
    start_time: datetime | None = _dt()
    end_time: datetime | None = _dt()
    modified_time: datetime | None = _dt()
    job_id: str | None = None
    loaded_at: datetime | None = _dt()
    status: str | None = None
    deleted_at: datetime | None = _dt()


class BulkReadRun(SQLModel, table=True):
    """One logical Bulk Read (all its pages): resumed while ``status`` is ``running``."""

    __tablename__ = "bulk_read_runs"

    id: str = Field(primary_key=True)
    module: str
    query_hash: str = Field(index=True)
    query_json: str = Field(sa_column=Column(Text))
    status: str = "running"  # running | completed | failed
    pages: int = 0
    records: int = 0
    rejected: int = 0
    created_at: datetime | None = _dt()
    finished_at: datetime | None = _dt()


class BulkJob(SQLModel, table=True):
    """One Bulk Read job (one page of a run), from creation to loaded."""

    __tablename__ = "bulk_jobs"
    __table_args__ = (Index("ix_bulk_jobs_run_page", "run_id", "page_index"),)

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    page_index: int
    module: str
    page_token: str | None = Field(default=None, sa_column=Column(Text))
    state: str = "ADDED"
    more_records: bool | None = None
    next_page_token: str | None = Field(default=None, sa_column=Column(Text))
    download_url: str | None = None
    count: int | None = None
    records_loaded: int | None = None
    records_rejected: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    created_at: datetime | None = _dt()
    finished_at: datetime | None = _dt()
    loaded_at: datetime | None = _dt()
    seconds: float | None = None


class RejectedRecord(SQLModel, table=True):
    """A row of a Bulk Read file that failed validation: kept, skipped, reported."""

    __tablename__ = "rejected_records"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    module: str
    line: int
    record_id: str | None = None
    error: str = Field(sa_column=Column(Text))
    raw: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime | None = _dt()


class Bookmark(SQLModel, table=True):
    """Per module: records modified up to ``modified_since`` are known (incremental reads)."""

    __tablename__ = "bookmarks"

    module: str = Field(primary_key=True)
    modified_since: datetime | None = _dt()
    updated_at: datetime | None = _dt()



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


class BaseColumns(SQLModel):
    """The columns of a base table: per link, the last state both sides agreed on (each side in its
    own terms: start instant, canonical status), the booking's time zone and when they agreed."""

    booking_id: str = Field(primary_key=True)
    crm_id: str = Field(index=True)
    crm_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    crm_status: str
    bookings_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    bookings_status: str
    time_zone: str
    agreed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SyncBase(BaseColumns, table=True):
    """The last state both sides agreed on, per link (``Appointments__s``)."""

    __tablename__ = "sync_base"


class SyncBaseEvent(BaseColumns, table=True):
    """The Meetings' base (:class:`BaseColumns`): an organisation syncing ``Appointments__s``
    and Meetings keeps one base per module, so each module's diff is its own."""

    __tablename__ = "sync_base_events"


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


class ApiUsage(SQLModel, table=True):
    """Zoho API calls one run made of one family (``bookings``: calls; ``crm``: credits), for the
    organisation's daily budget (:mod:`sync.usage`). ``day``: the family's calendar day the
    calls count against (Bookings: the workspace's day, ``YYYY-MM-DD``; CRM: the UTC day, for
    reading only: CRM counts a rolling 24 hours from ``at``)."""

    __tablename__ = "api_usage"
    __table_args__ = (Index("ix_api_usage_family_at", "family", "at"), Index("ix_api_usage_family_day", "family", "day"))

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    mode: str
    family: str
    units: int = 0
    reads: int = 0
    writes: int = 0
    refused: int = 0
    day: str
    at: datetime | None = _dt()


class PendingRead(SQLModel, table=True):
    """A booking a webhook (or a CRM change) named that was not read because the day's Bookings
    budget was spent: read first by the next run with budget left, then removed."""

    __tablename__ = "pending_reads"

    booking_id: str = Field(primary_key=True)
    reason: str
    since: datetime | None = _dt()
    attempts: int = 0


class BudgetAlert(SQLModel, table=True):
    """A ``zoho.budget.low`` event sent for a family and day (at most one each)."""

    __tablename__ = "budget_alerts"

    family: str = Field(primary_key=True)
    day: str = Field(primary_key=True)
    used: int = 0
    forecast: int = 0
    budget: int = 0
    at: datetime | None = _dt()


#: The tables migration ``0001`` creates (the schema before migrations).
INITIAL_TABLES: tuple[type[SQLModel], ...] = (CrmAppointment, CrmEvent, BulkReadRun, BulkJob, RejectedRecord, Bookmark, BookingRecord, SyncBase, SyncAction)
#: Every table of the state store (``0002`` adds the API budget's, ``0003`` the Meetings' base).
TABLES: tuple[type[SQLModel], ...] = (*INITIAL_TABLES, ApiUsage, PendingRead, BudgetAlert, SyncBaseEvent)
