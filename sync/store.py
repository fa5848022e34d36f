"""The state store: CRM records the sync needs, Bulk Read runs and jobs, rejected rows, bookmarks.

SQLModel tables on SQLite or PostgreSQL: a SQLite file under the project's data
folder by default (``.data/state.db``; ``APPT_SYNC_STATE_STORE_URL`` to change),
PostgreSQL in production (``postgresql+psycopg://user@host:5432/db``, one database
per organisation; the password from ``PGPASSWORD`` or ``~/.pgpass`` rather than the
URL). Upserts are ``INSERT ... ON CONFLICT`` (:func:`insert_on_conflict`), which
both databases share. All SQL goes through SQLAlchemy with bound parameters.
Every ``datetime`` column is stored in UTC and read back timezone-aware (UTC),
whatever the database (SQLite has no time zones).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Engine, Index, String, Text, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

UTC = timezone.utc
DEFAULT_DATA_DIR = Path(os.environ.get("APPT_SYNC_DATA_DIR", Path.cwd() / ".data"))


def default_store_url() -> str:
    """``APPT_SYNC_STATE_STORE_URL``, else ``sqlite:///<data dir>/state.db``."""
    return os.environ.get("APPT_SYNC_STATE_STORE_URL") or f"sqlite:///{DEFAULT_DATA_DIR / 'state.db'}"


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


def insert_on_conflict(engine: Engine, table: Any) -> Any:
    """An ``INSERT`` for ``table`` that offers ``on_conflict_do_update`` on the engine's database.

    The state store upserts with ``INSERT ... ON CONFLICT``, which SQLite and
    PostgreSQL share (each through its own SQLAlchemy construct); any other
    database is refused here rather than with an obscure SQL error later.
    """
    name = engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"the state store runs on SQLite or PostgreSQL, not {name}")
    return insert(table)


def utc_now() -> datetime:
    """Now, aware UTC."""
    return datetime.now(UTC)


def _dt(**kwargs: Any) -> Any:
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
    """A CRM ``Events`` (Meetings) record as last read."""

    __tablename__ = "crm_events"

    id: str = Field(primary_key=True)
    booking_id: str | None = Field(default=None, index=True)
    title: str | None = None
    start_time: datetime | None = _dt()
    end_time: datetime | None = _dt()
    modified_time: datetime | None = _dt()
    job_id: str | None = None
    loaded_at: datetime | None = _dt()


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: PostgreSQL advisory lock held while the schema is created: flow runs of one
#: organisation starting at once on several workers would otherwise race in
#: ``CREATE TABLE`` (``pg_type_typname_nsp_index`` unique violations).
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"zoho-appointment-sync:schema").digest()[:8], "big", signed=True)


def make_engine(url: str | None = None) -> Engine:
    """An engine on ``url`` (default :func:`default_store_url`) with the tables created.

    SQLite files get WAL mode (readers do not block the loader) and their folder
    is created. ``postgresql://`` without a driver means psycopg (3), the driver
    this project installs; on PostgreSQL the tables are created under an advisory
    lock, so processes starting at once on an empty database do not collide.
    """
    url = url or default_store_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    from . import links  # noqa: F401  (registers the sync tables)

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            SQLModel.metadata.create_all(conn)
    else:
        SQLModel.metadata.create_all(engine)
    return engine
