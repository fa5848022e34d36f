"""The state store on PostgreSQL: the SQLite suites of ``sync/`` run again on the private cluster.

``tests/test_links.py`` (the SQL diff, upserts of bookings, base and action log)
and ``tests/test_bulk_load.py`` (the Bulk Read loader) are imported as they are and
run with their ``engine`` fixture replaced by one on a PostgreSQL database
(``postgresql+psycopg``), emptied before each test. Then what only PostgreSQL
shows: ``timestamptz`` columns, the Bulk Read bookkeeping (``sync/bulk_runs.py``),
several processes creating the schema at once, and text that SQL would choke on.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel, select

from sync import bulk_runs
from sync.links import BookingRecord, SyncBase, changed_links, upsert_bookings, upsert_crm_appointments, write_base
from sync.store import HEAD_REVISION, INITIAL_TABLES, Bookmark, BulkJob, CrmAppointment, make_engine, open_store, upgrade_store

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc


def _load(name: str):
    """``tests/<name>.py`` as a module of its own (``tests/`` is no package)."""
    spec = importlib.util.spec_from_file_location(f"sqlite_suite_{name}", ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


links_suite = _load("test_links")
load_suite = _load("test_bulk_load")
SKIP = {"test_the_loader_binds_date_times_as_the_store_does"}  # SQLite's codec, no database involved


def _export(module, prefix: str) -> None:
    for name, value in vars(module).items():
        if name.startswith("test_") and callable(value) and name not in SKIP:
            globals()[f"test_{prefix}_{name.removeprefix('test_')}"] = value


_export(links_suite, "links")
_export(load_suite, "bulk_load")


@pytest.fixture(scope="module")
def pg_engine(pg):
    engine = open_store(pg.create_database("store_suite"))
    yield engine
    engine.dispose()


def _empty(engine) -> None:
    tables = ", ".join(engine.dialect.identifier_preparer.quote(t.name) for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


@pytest.fixture
def engine(request, pg_engine):
    """The fixture the imported suites ask for: an empty PostgreSQL store (with the loader suite's job)."""
    _empty(pg_engine)
    if getattr(request.function, "__module__", "") == load_suite.__name__:
        load_suite.add_job(pg_engine, load_suite.JOB)
    return pg_engine


# ------------------------------------------------------------- PostgreSQL only
def test_the_schema_uses_postgresql_types(engine):
    columns = {c["name"]: c for c in inspect(engine).get_columns("crm_appointments")}
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    assert str(columns["start_time"]["type"]) == "TIMESTAMP" and columns["start_time"]["type"].timezone
    with engine.connect() as conn:
        assert conn.execute(text("SELECT data_type FROM information_schema.columns WHERE table_name = :t AND column_name = :c"),
                            {"t": "sync_base", "c": "agreed_at"}).scalar_one() == "timestamp with time zone"


def test_instants_keep_their_meaning_whatever_the_session_time_zone(engine):
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night London moves to BST
    upsert_crm_appointments(engine, [{"id": "c1", "booking_id": "b1", "start_time": start, "end_time": None, "duration": 30,
                                      "status": "Scheduled", "modified_time": start, "job_id": None, "loaded_at": None}])
    for zone in ("Australia/Sydney", "America/New_York", "UTC"):
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('TimeZone', :z, false)"), {"z": zone})
            stored = conn.execute(select(CrmAppointment.__table__.c.start_time)).scalar_one()
            conn.rollback()
        assert stored == start and stored.tzinfo == UTC


def test_text_sql_would_choke_on_is_stored_as_text(engine):
    nasty = "x'); DROP TABLE bookings; --\\ % %(id)s $1 ?"
    upsert_bookings(engine, [{"booking_id": nasty, "start_time": datetime(2026, 6, 1, 9, tzinfo=UTC), "end_time": None,
                              "status": "UPCOMING", "time_zone": "UTC", "staff_id": nasty, "service_id": None}])
    upsert_crm_appointments(engine, [{"id": nasty, "booking_id": nasty, "start_time": datetime(2026, 6, 1, 9, tzinfo=UTC), "end_time": None,
                                      "duration": None, "status": "Scheduled", "modified_time": None, "job_id": None, "loaded_at": None}])
    (link,) = list(changed_links(engine, [nasty]))
    assert (link.booking_id, link.crm_id) == (nasty, nasty)
    with Session(engine) as s:
        assert s.get(BookingRecord, nasty).staff_id == nasty


def test_a_duration_past_32_bits_loads_as_it_does_on_sqlite(engine, tmp_path):
    load_suite.add_job(engine, load_suite.JOB)
    row = load_suite.appointment("5545974000000400002")
    row["Duration"] = str(2**40)  # PostgreSQL's integer is 32-bit, SQLite's 64: the column is a bigint
    report = load_suite.load(engine, tmp_path, [row])
    assert (report.loaded, report.rejected) == (1, 0)
    assert load_suite.stored(engine)["5545974000000400002"].duration == 2**40


def test_a_url_without_a_driver_means_psycopg(pg, pg_engine):
    engine = make_engine(pg.url("store_suite").replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    finally:
        engine.dispose()


def test_bulk_read_runs_resume_and_jobs_keep_their_order(engine):
    now = datetime(2026, 6, 1, 9, tzinfo=UTC)
    query = {"module": "Appointments__s", "fields": ["Status"], "criteria": None, "file_type": "csv"}
    run, resumed = bulk_runs.find_or_start_run(engine, "Appointments__s", query, now)
    assert not resumed
    again, resumed = bulk_runs.find_or_start_run(engine, "Appointments__s", query, now + timedelta(hours=1))
    assert resumed and again.id == run.id
    later, resumed = bulk_runs.find_or_start_run(engine, "Appointments__s", query, now + timedelta(hours=30))
    assert not resumed and later.id != run.id
    bulk_runs.record_job_created(engine, later.id, 1, "Appointments__s", "j1", None, now)
    bulk_runs.record_job_created(engine, later.id, 1, "Appointments__s", "j2", None, now + timedelta(minutes=1))
    with Session(engine) as s:  # a job stored without a creation time must not shadow the newest one
        s.add(BulkJob(id="j0", run_id=later.id, page_index=1, module="Appointments__s", state="ADDED"))
        s.commit()
    assert bulk_runs.job_for_page(engine, later.id, 1).id == "j2"
    done = bulk_runs.record_job_status(engine, {"id": "j2", "state": "COMPLETED", "result": {"count": 3, "more_records": True, "next_page_token": "t2"}})
    assert (done.state, done.count, done.more_records, done.next_page_token) == ("COMPLETED", 3, True, "t2")
    assert [j.id for j in bulk_runs.run_jobs(engine, later.id)] == ["j1", "j2", "j0"]
    replaced = bulk_runs.record_job_created(engine, "another-run", 1, "Appointments__s", "j1", None, now)  # a sandbox reusing an id
    assert replaced.run_id == "another-run" and replaced.state == "ADDED"
    bulk_runs.finish_run(engine, later.id, "completed", 1, 3, 0)
    bulk_runs.set_bookmark(engine, "Appointments__s", now)
    bulk_runs.set_bookmark(engine, "Appointments__s", now - timedelta(days=1))  # never backwards
    assert bulk_runs.get_bookmark(engine, "Appointments__s") == now
    with Session(engine) as s:
        assert s.get(Bookmark, "Appointments__s").updated_at.tzinfo == UTC


def test_a_diff_over_many_links_streams_and_the_base_silences_it(engine):
    start = datetime(2026, 6, 1, 9, tzinfo=UTC)
    n = 5000
    upsert_crm_appointments(engine, [{"id": f"c{i}", "booking_id": f"b{i:05d}", "start_time": start + timedelta(minutes=15 * i), "end_time": None,
                                      "duration": 15, "status": "Scheduled", "modified_time": start, "job_id": None, "loaded_at": None} for i in range(n)])
    upsert_bookings(engine, [{"booking_id": f"b{i:05d}", "start_time": start + timedelta(minutes=15 * i), "end_time": None, "status": "UPCOMING",
                              "time_zone": "Europe/London", "staff_id": None, "service_id": None} for i in range(n)], start)
    links = list(changed_links(engine, chunk=700))
    assert len(links) == n and [l.booking_id for l in links] == sorted(l.booking_id for l in links)
    write_base(engine, [(l.booking_id, l.crm_id, l.time_zone, l.crm, l.bookings) for l in links], start)
    assert list(changed_links(engine)) == []
    with engine.connect() as conn:
        assert conn.execute(select(SyncBase.__table__.c.booking_id).limit(1)).scalar_one()


def test_processes_creating_the_schema_at_once_do_not_collide(pg):
    """Two workers' first flow runs of an organisation both upgrade the schema of an empty database
    (``upgrade_store``, which ``open_store`` runs once per process)."""
    url = pg.create_database("schema_race")
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        try:
            barrier.wait()
            engine = make_engine(url)
            try:
                upgrade_store(engine)
            finally:
                engine.dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    engine = make_engine(url)
    try:
        assert {"crm_appointments", "bookings", "sync_base", "sync_actions", "bulk_jobs"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _shape(engine) -> dict[str, tuple]:
    """Each of our tables as PostgreSQL has it: columns (name, type, nullable), primary key, indexes."""
    found = inspect(engine)
    return {
        t.name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(t.name)],
            found.get_pk_constraint(t.name)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(t.name)),
        )
        for t in SQLModel.metadata.sorted_tables
    }


def test_the_migrations_make_the_schema_create_all_made_and_adopt_an_old_store(pg):
    full = make_engine(pg.create_database("made_by_create_all"))
    old = make_engine(pg.create_database("made_before_migrations"))
    new = open_store(pg.create_database("made_by_migrations"))
    try:
        SQLModel.metadata.create_all(full)
        SQLModel.metadata.create_all(old, tables=[t.__table__ for t in INITIAL_TABLES])  # the releases before migrations
        with Session(old) as s:
            s.add(CrmAppointment(id="c1", booking_id="b1", start_time=datetime(2026, 6, 1, 9, tzinfo=UTC), status="Scheduled"))
            s.commit()
        assert _shape(new) == _shape(full)  # timestamptz, bigint, varchar... column for column
        with new.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata) == []
        assert upgrade_store(old) == HEAD_REVISION  # adopted: stamped 0001, upgraded, rows kept
        with old.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
        assert _shape(old) == _shape(full)
        with Session(old) as s:
            assert s.get(CrmAppointment, "c1").start_time == datetime(2026, 6, 1, 9, tzinfo=UTC)
    finally:
        full.dispose()
        old.dispose()
        new.dispose()
