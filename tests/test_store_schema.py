"""The state store's schema (Alembic migrations in ``sync/migrations/``), settings and CRM module adapters.

``tests_postgres/test_store_postgres.py`` runs the schema checks on PostgreSQL too.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel

import sync.store as store
from sync import bookings
from sync.engine import Action, Canon, Kind, Side, SideState
from sync.modules import Appointments, crm_module, end_after
from sync.settings import AppSettings
from sync.store import HEAD_REVISION, StoreSchemaError, default_store_url, make_engine, open_store, upgrade_store
from sync.tables import INITIAL_TABLES, TABLES, CrmAppointment, SyncBase

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def schema(engine) -> list[tuple]:
    """Every table and index of ours as SQLite has it (``sqlite_master``), without Alembic's own table;
    a table name quoted by a migration's table rebuild (``CREATE TABLE "crm_events"``) reads as unquoted."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version' ORDER BY name")).all()
    return [(t, n, tbl, sql.replace(f'CREATE TABLE "{n}"', f"CREATE TABLE {n}") if sql else sql) for t, n, tbl, sql in rows]


def revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def created_by_create_all(url: str, tables=None):
    """A store made by ``create_all`` (``tables``: only those, e.g. ``INITIAL_TABLES``: as releases before migrations made it)."""
    engine = make_engine(url)
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in tables] if tables else None)
    return engine


def test_make_engine_creates_no_table(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_the_migrations_make_the_schema_create_all_made(tmp_path):
    old = created_by_create_all(f"sqlite:///{tmp_path / 'old.db'}")
    new = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert schema(new) == schema(old)  # the same CREATE TABLE / CREATE INDEX text, column for column
        assert {t.__tablename__ for t in TABLES} <= set(inspect(new).get_table_names())
        with new.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata) == []
        assert revision(new) == HEAD_REVISION
    finally:
        old.dispose()
        new.dispose()


def test_a_store_made_by_create_all_is_adopted_with_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    old = created_by_create_all(url, INITIAL_TABLES)  # the nine tables of the releases before migrations
    with Session(old) as s:
        s.add(CrmAppointment(id="c1", booking_id="b1", start_time=T0, status="Scheduled", modified_time=T0))
        s.add(SyncBase(booking_id="b1", crm_id="c1", crm_status="scheduled", bookings_status="scheduled", time_zone="UTC", crm_start=T0, bookings_start=T0))
        s.commit()
    old.dispose()
    engine = open_store(url)
    try:
        assert revision(engine) == HEAD_REVISION  # stamped 0001, then upgraded
        assert {t.__tablename__ for t in TABLES} <= set(inspect(engine).get_table_names())
        with Session(engine) as s:
            assert s.get(CrmAppointment, "c1").start_time == T0 and s.get(SyncBase, "b1").crm_id == "c1"
        assert upgrade_store(engine) == HEAD_REVISION  # idempotent
    finally:
        engine.dispose()


def test_empty_store_deletes_every_row_and_keeps_the_schema(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with Session(engine) as s:
            s.add(CrmAppointment(id="c1", booking_id="#AN-1", start_time=T0, status="Scheduled", modified_time=T0))
            s.add(SyncBase(booking_id="#AN-1", crm_id="c1", time_zone="UTC", crm_start=T0, crm_status="scheduled", bookings_start=T0, bookings_status="scheduled", agreed_at=T0))
            s.commit()
        store.empty_store(engine)
        with engine.connect() as conn:
            assert all(conn.execute(text(f"SELECT count(*) FROM {t.__tablename__}")).scalar_one() == 0 for t in TABLES)
        assert revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()


def test_a_store_with_only_some_tables_and_no_history_is_refused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        SQLModel.metadata.create_all(engine, tables=[CrmAppointment.__table__])
        with pytest.raises(StoreSchemaError, match="crm_appointments"):
            upgrade_store(engine)
        assert revision(engine) is None
    finally:
        engine.dispose()


def test_open_store_upgrades_once_per_process_and_url(tmp_path, monkeypatch):
    upgrades: list[str] = []
    real = store.upgrade_store
    monkeypatch.setattr(store, "upgrade_store", lambda engine: upgrades.append(str(engine.url)) or real(engine))
    for name in ("a.db", "a.db", "b.db", "a.db"):
        open_store(f"sqlite:///{tmp_path / name}").dispose()
    assert upgrades == [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]


def test_processes_upgrading_one_sqlite_store_at_once_do_not_collide(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def upgrade() -> None:
        engine = make_engine(url)
        try:
            barrier.wait()
            upgrade_store(engine)  # not open_store: each thread stands for a process of its own
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    engine = make_engine(url)
    try:
        assert revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()


def test_head_revision_is_alembics_head():
    from alembic.script import ScriptDirectory

    assert store.HEAD_REVISION == ScriptDirectory.from_config(store.alembic_config()).get_current_head()


def test_a_store_at_head_is_recognised_without_alembic(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'state.db'}"
    open_store(url).dispose()
    code = f"import sys; from sync.store import open_store; open_store({url!r}).dispose(); print('alembic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_migrations_ship_inside_the_package():
    assert (store.MIGRATIONS / "env.py").is_file() and (store.MIGRATIONS / "versions" / "0001_initial.py").is_file()
    assert store.MIGRATIONS.parent == Path(store.__file__).resolve().parent


# ---------------------------------------------------------------- settings
def test_settings_come_from_app_sync_variables(tmp_path, monkeypatch):
    for name in ("APPT_SYNC_DATA_DIR", "APPT_SYNC_STATE_STORE_URL", "APPT_SYNC_WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APPT_SYNC_DATA_DIR", str(tmp_path / "data"))
    assert default_store_url() == f"sqlite:///{tmp_path / 'data' / 'state.db'}"
    monkeypatch.setenv("APPT_SYNC_STATE_STORE_URL", "postgresql+psycopg://sync@db:5432/org")
    assert default_store_url() == "postgresql+psycopg://sync@db:5432/org"
    monkeypatch.setenv("APPT_SYNC_WORK_DIR", "")  # empty: unset
    monkeypatch.setenv("APPT_SYNC_RECEIVER_CONFIG_BLOCK", "not-ours")  # another class's variable
    assert AppSettings().work_dir is None and AppSettings().bulk_work_dir().is_dir()
    monkeypatch.setenv("APPT_SYNC_WORK_DIR", str(tmp_path / "work"))
    assert AppSettings().bulk_work_dir() == tmp_path / "work"


# --------------------------------------------------------------- adapters
def test_the_module_adapter_is_chosen_by_api_name():
    module = crm_module("Appointments__s", "Booking_Ref")
    assert isinstance(module, Appointments) and module.table is CrmAppointment and module.batch_size == 100
    assert module.fields == ["Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time", "Booking_Ref"]
    assert module.bulk_mapping().module == "Appointments__s" and "Booking_Ref" in module.bulk_mapping().columns
    assert crm_module("Events").api_name == "Events"  # Meetings (tests/test_meetings_adapter.py)
    with pytest.raises(NotImplementedError, match="Appointments__s or Events"):
        crm_module("Deals")


def test_an_appointment_record_becomes_a_row():
    row = Appointments().row({"id": 42, "Booking_Id": "#AN-1", "Appointment_Start_Time": "2026-06-01T14:30:00+05:30", "Appointment_End_Time": None,
                              "Duration": "30", "Status": "Scheduled", "Modified_Time": "2026-05-01T10:00:00Z"})
    assert row == {"id": "42", "booking_id": "#AN-1", "start_time": T0, "end_time": None, "duration": 30, "status": "Scheduled",
                   "modified_time": datetime(2026, 5, 1, 10, tzinfo=UTC), "job_id": None}


def test_appointment_writes_payloads_and_what_they_leave():
    module = Appointments()
    move = Action("b1", "c1", Side.CRM, Kind.RESCHEDULE, "UTC", T0 + timedelta(hours=1))
    assert module.payload(move) == {"id": "c1", "Appointment_Start_Time": T0 + timedelta(hours=1), "Reschedule_Reason": "By Customer"}
    after = module.state_after(move, SideState(T0, Canon.SCHEDULED))
    assert after == SideState(T0 + timedelta(hours=1), Canon.SCHEDULED)
    row = {"start_time": T0, "end_time": T0 + timedelta(minutes=45), "duration": None, "modified_time": T0}
    assert module.row_after(row, move, after, None) == {"start_time": after.start, "status": "Scheduled", "modified_time": T0, "end_time": T0 + timedelta(hours=1, minutes=45)}
    no_show = Action("b1", "c1", Side.CRM, Kind.NO_SHOW, "UTC")
    assert module.refusal(no_show)[0] == "NOT_SUPPORTED" and module.refusal(move) is None
    assert end_after(T0, None, None, 30) == T0 + timedelta(minutes=30) and end_after(T0, None, None, None) is None


def test_bookings_rules_and_what_a_booking_shows():
    zone = ZoneInfo("America/New_York")
    second = datetime(2026, 11, 1, 1, 30, tzinfo=zone, fold=1).astimezone(UTC)
    assert bookings.refusal(Action("b1", "c1", Side.BOOKINGS, Kind.RESCHEDULE, "America/New_York", second))[0] == "AMBIGUOUS_TIME"
    assert bookings.refusal(Action("b1", "c1", Side.BOOKINGS, Kind.RESCHEDULE, "America/New_York", second - timedelta(hours=1))) is None
    move = Action("b1", "c1", Side.BOOKINGS, Kind.RESCHEDULE, "UTC", T0)
    assert bookings.shows({"start_time": T0, "status": "ONGOING"}, move) and not bookings.shows({"start_time": T0, "status": "CANCEL"}, move)
    cancel = Action("b1", "c1", Side.BOOKINGS, Kind.CANCEL, "UTC")
    assert bookings.shows({"start_time": T0, "status": "CANCEL"}, cancel) and not bookings.shows({"start_time": T0, "status": "WAITING"}, cancel)
    assert bookings.verb(cancel) == "cancel"
    assert bookings.state_after(cancel, SideState(T0, Canon.SCHEDULED), None, None) == (SideState(T0, Canon.CANCELLED), "CANCEL")


def test_a_store_at_0002_with_meetings_upgrades_keeping_its_rows_and_index(tmp_path):
    """Migration 0003 (Meetings' status, deleted_at, their own base) on a store that already holds
    Meetings and a base: rows, the booking-id index and the appointments' base are kept."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'at-0002.db'}"
    command.upgrade(store.alembic_config(url=url), "0002")
    old = make_engine(url)
    with old.begin() as conn:
        conn.execute(text("INSERT INTO crm_events (id, booking_id, title, start_time, end_time, modified_time) "
                          "VALUES ('1', '#AN-1', 'Call', '2026-12-01T10:00:00+00:00', '2026-12-01T11:00:00+00:00', '2026-11-01T10:00:00+00:00')"))
        conn.execute(text("INSERT INTO sync_base (booking_id, crm_id, crm_status, bookings_status, time_zone) VALUES ('#AN-1', '9', 'scheduled', 'scheduled', 'UTC')"))
    old.dispose()
    engine = make_engine(url)
    try:
        assert upgrade_store(engine) == HEAD_REVISION
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, booking_id, title, status, deleted_at FROM crm_events")).one()
            assert tuple(row) == ("1", "#AN-1", "Call", None, None)
            assert conn.execute(text("SELECT count(*) FROM sync_base")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM sync_base_events")).scalar_one() == 0
        assert "ix_crm_events_booking_id" in {i["name"] for i in inspect(engine).get_indexes("crm_events")}
    finally:
        engine.dispose()
