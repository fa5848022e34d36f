"""The state store: engines, its schema (Alembic migrations) and the upserts every writer shares.

SQLite under the project's data folder by default (``.data/state.db``; see
:class:`~sync.settings.AppSettings`), PostgreSQL in production
(``postgresql+psycopg://user@host:5432/db``, one database per organisation; the
password from ``PGPASSWORD`` or ``~/.pgpass`` rather than the URL). The tables are
in :mod:`sync.tables`; the queries of the sync in :mod:`sync.links`, of Bulk Read in
:mod:`sync.bulk_runs` and :mod:`sync.bulk_load`. All SQL goes through SQLAlchemy
with bound parameters.

Opening a store: :func:`open_store` (whoever writes: the flows, the receiver, the
Bulk Read loader) upgrades its schema to the newest migration once per process
and URL, then hands out an engine; :func:`make_engine` only makes the engine.
:func:`upgrade_store` adopts a store made by an older release's ``create_all``
(tables but no ``alembic_version``) by stamping it, without touching its rows.

A new column or table: change :mod:`sync.tables`, then write a migration into
``sync/migrations/versions/`` (``alembic.command.revision(alembic_config(url),
autogenerate=True, message=...)`` drafts one against an upgraded store).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy import Connection, Engine, column, create_engine, delete, event, func, inspect, or_, select, table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from .settings import AppSettings
from .tables import (
    UTC,
    BookingRecord,
    Bookmark,
    BulkJob,
    BulkReadRun,
    CrmAppointment,
    CrmEvent,
    RejectedRecord,
    SyncAction,
    SyncBase,
    INITIAL_TABLES,
    TABLES,
    UTCDateTime,
    utc_now,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "UTC", "BookingRecord", "Bookmark", "BulkJob", "BulkReadRun", "CrmAppointment", "CrmEvent", "RejectedRecord", "SyncAction",
    "SyncBase", "TABLES", "empty_store", "UTCDateTime", "utc_now", "MIGRATIONS", "INITIAL_REVISION", "SCHEMA_LOCK_KEY", "HEAD_REVISION", "at_head", "StoreSchemaError", "default_store_url",
    "Store", "make_engine", "alembic_config", "upgrade_store", "open_store", "insert_on_conflict", "upsert_newer",
]

#: The handle of an open state store (what :func:`open_store` returns): a SQLAlchemy engine.
Store = Engine

#: The Alembic script folder (inside the package, so an installed copy has it).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The migration that creates the schema of the releases before migrations (``create_all``).
INITIAL_REVISION = "0001"
#: The newest migration (tests check it against Alembic's head): a store already at it is
#: recognised with one query, without loading Alembic (every flow-run process opens its store).
HEAD_REVISION = "0003"

#: Lock held while a schema is upgraded. PostgreSQL: the key of a transaction-level
#: advisory lock (flow runs of one organisation starting at once on several workers
#: would otherwise race in ``CREATE TABLE``: ``pg_type_typname_nsp_index`` unique
#: violations). SQLite takes its write lock instead (``BEGIN IMMEDIATE``).
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"zoho-appointment-sync:schema").digest()[:8], "big", signed=True)


class StoreSchemaError(RuntimeError):
    """A store without migration history that holds some of the tables but not all: not adopted."""


def default_store_url() -> str:
    """``APPT_SYNC_STATE_STORE_URL``, else ``sqlite:///<APPT_SYNC_DATA_DIR or ./.data>/state.db``
    (:meth:`~sync.settings.AppSettings.store_url`, read from the environment now)."""
    return AppSettings().store_url()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        # WAL is a property of the file: the first connection switches it. The switch needs the
        # file to itself and answers "database is locked" at once (no busy wait) while another
        # connection holds a lock; that one then has switched it or will, so only try.
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: How long a SQLite connection waits for another writer's lock before "database is locked".
SQLITE_BUSY_SECONDS = 30


def make_engine(url: str | None = None) -> Engine:
    """An engine on ``url`` (default :func:`default_store_url`); creates no table (see :func:`open_store`).

    SQLite files get WAL mode (readers do not block the loader) and their folder
    is created. ``postgresql://`` without a driver means psycopg (3), the driver
    this project installs.
    """
    url = url or default_store_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # SQLite: a writer waits up to SQLITE_BUSY_SECONDS for another's lock (the driver's
    # default is 5 s, which a schema upgrade on a busy machine can outlast).
    connect_args = {"timeout": SQLITE_BUSY_SECONDS} if parsed.get_backend_name() == "sqlite" else {}
    engine = create_engine(parsed, future=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(connection: Connection | None = None, url: str | None = None) -> "Config":
    """An Alembic configuration for the store's migrations (no ``alembic.ini`` needed).

    ``connection``: run on that connection (inside its transaction; the caller
    commits); else on ``url`` (default :func:`default_store_url`).
    """
    from alembic.config import Config  # Alembic only where the schema is looked at (a process that only reads pays nothing)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or default_store_url()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the store's schema lock; committed at the end."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite begins no transaction before DDL by itself: begin one that takes the write lock now
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
        else:
            raise NotImplementedError(f"the state store runs on SQLite or PostgreSQL, not {engine.dialect.name}")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def at_head(engine: Engine) -> bool:
    """Whether the store's ``alembic_version`` names :data:`HEAD_REVISION` (one query, no Alembic)."""
    version = table("alembic_version", column("version_num"))
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return list(conn.execute(select(version.c.version_num)).scalars()) == [HEAD_REVISION]


def upgrade_store(engine: Engine) -> str:
    """Bring the store's schema to the newest migration; returns that revision id.

    Holds the schema lock (:data:`SCHEMA_LOCK_KEY`) while it looks and changes, so
    processes upgrading one store at once do not collide; the whole upgrade is one
    transaction. A store with every table of :data:`INITIAL_REVISION` but no
    ``alembic_version`` (made by ``create_all`` before migrations) is stamped with
    it first: its rows stay as they are. Raises :class:`StoreSchemaError` for a
    store without history that holds only some of those tables.
    """
    if at_head(engine):
        return HEAD_REVISION
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with _schema_lock(engine) as conn:
        config = alembic_config(conn)
        head = ScriptDirectory.from_config(config).get_current_head()
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        if current is None:
            ours = {t.__tablename__ for t in INITIAL_TABLES}
            present = ours & set(inspect(conn).get_table_names())
            if present == ours:
                command.stamp(config, INITIAL_REVISION)
            elif present:
                raise StoreSchemaError(f"the store has the tables {sorted(present)} but not {sorted(ours - present)}, and no migration history")
        command.upgrade(config, "head")
        return head


def empty_store(engine: Engine) -> None:
    """Delete every row of every table (links, base, action log, Bulk Read runs, bookmarks) in
    one transaction; the schema and its migration history stay. For a store whose Zoho side
    was reset (the demo's re-seeded sandbox): a running process keeps a valid connection."""
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table.__table__))


_upgraded: set[str] = set()
_upgrading = threading.Lock()


def open_store(url: str | None = None) -> Engine:
    """An engine on the store at ``url`` (default :func:`default_store_url`), its schema upgraded.

    The upgrade (:func:`upgrade_store`) runs once per process and URL; later calls
    only make the engine. An in-memory SQLite URL is upgraded every time (each
    engine is a new database). Raises what :func:`upgrade_store` raises.
    """
    engine = make_engine(url)
    key = engine.url.render_as_string(hide_password=False)
    if engine.url.database in (None, "", ":memory:"):
        upgrade_store(engine)
        return engine
    with _upgrading:
        if key not in _upgraded:
            upgrade_store(engine)
            _upgraded.add(key)
    return engine


def insert_on_conflict(engine: Engine, table: Any) -> Any:
    """An ``INSERT`` for ``table`` that offers ``on_conflict_do_update`` on the engine's database.

    The state store upserts with ``INSERT ... ON CONFLICT``, which SQLite and
    PostgreSQL share (each through its own SQLAlchemy construct); any other
    database is refused (``NotImplementedError``) rather than with an obscure SQL error later.
    """
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the state store runs on SQLite or PostgreSQL, not {name}")


def upsert_newer(engine: Engine, table: Any, columns: list[str] | None = None) -> Any:
    """``INSERT ... ON CONFLICT (id) DO UPDATE`` for a CRM table that never goes back in ``modified_time``.

    ``table``: a table class with ``id`` and ``modified_time`` columns
    (:class:`~sync.tables.CrmAppointment`, :class:`~sync.tables.CrmEvent`). The update
    sets ``columns`` only (default: every column but ``id``), so a source without an
    optional column leaves that column of a stored record alone; it is skipped when
    the stored record is newer (a row without ``modified_time`` on either side is
    taken). Returns the statement; execute it with one dict (or tuple) per row.
    """
    stmt = insert_on_conflict(engine, table)
    names = columns or [c.name for c in table.__table__.columns]
    cols = {name: getattr(stmt.excluded, name) for name in names if name != "id"}
    current = table.__table__.c.modified_time
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_=cols,
        where=or_(current.is_(None), stmt.excluded.modified_time.is_(None), stmt.excluded.modified_time >= current),
    )
