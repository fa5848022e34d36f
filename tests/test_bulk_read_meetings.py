"""Bulk Read of CRM Meetings (``Events``, issue 15): the status picklist, ``deleted_at``, missing records.

The loader on zips built here (as ``tests/test_bulk_load.py`` builds them), the
request the flow builds, :func:`sync.bulk_runs.missing_from_run` on a store filled
here, and the ``bulk-read`` flow against the sandbox (whose Meetings carry a
``Booking_Status`` picklist) on the Prefect test harness.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar, Event
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import Session

from sync import bulk_runs
from sync.bulk_load import appointments_mapping, events_mapping, load_csv_zip, load_ics_zip, module_mapping, parse_text
from sync.store import BulkJob, BulkReadRun, CrmAppointment, CrmEvent, open_store

UTC = timezone.utc
JOB = "5545974000003000301"
HEADER = ["Id", "Event_Title", "Start_DateTime", "End_DateTime", "Booking_Id", "Booking_Status", "Modified_Time"]


# ------------------------------------------------------------------- helpers
def meeting(id: str, *, status: str = "Scheduled", booking: str | None = "#AN-00001", modified: str = "2026-10-03T12:00:00Z") -> list[str]:
    """One ``Events`` CSV row in :data:`HEADER`'s order."""
    return [id, "Haircut with Ada", "2026-11-02T09:00:00+11:00", "2026-11-02T09:30:00+11:00", booking or "", status, modified]


def csv_zip(folder: Path, rows: list[list[str]], header: list[str] = HEADER, job_id: str = JOB) -> Path:
    """``{job_id}.zip`` holding ``{job_id}.csv`` as Bulk Read writes it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = folder / f"{job_id}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{job_id}.csv", out.getvalue())
    return path


def add_job(engine, job_id: str, run_id: str = "run-1", module: str = "Events") -> None:
    with Session(engine) as s:
        s.add(BulkJob(id=job_id, run_id=run_id, page_index=1, module=module))
        s.commit()


def events(engine) -> dict[str, CrmEvent]:
    with Session(engine) as s:
        return {r.id: r for r in s.exec(select(CrmEvent)).scalars()}


@pytest.fixture
def engine(tmp_path: Path):
    """A fresh SQLite state store holding the job :data:`JOB` (created, not loaded)."""
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    add_job(engine, JOB)
    yield engine
    engine.dispose()


# ------------------------------------------------------------------- mapping
def test_events_mapping_reads_the_status_field_when_given():
    plain = events_mapping()
    assert "status" not in {col for col, _ in plain.columns.values()}
    mapping = events_mapping("Booking_Ref", "Booking_Status")
    assert mapping.columns["Booking_Status"] == ("status", parse_text)
    assert mapping.columns["Booking_Ref"][0] == "booking_id"
    assert mapping.fields == [f if f != "Booking_Id" else "Booking_Ref" for f in plain.fields] + ["Booking_Status"]
    assert mapping.required == plain.required  # a Meeting without the picklist is still loaded
    assert events_mapping(status_field="Meeting_State").columns["Meeting_State"] == ("status", parse_text)


def test_module_mapping_passes_the_status_field_to_events_only():
    assert module_mapping("Events", "Booking_Id", "Booking_Status").columns == events_mapping("Booking_Id", "Booking_Status").columns
    assert module_mapping("Events").columns == events_mapping().columns
    assert module_mapping("Appointments__s", "Booking_Id", "Booking_Status").columns == appointments_mapping().columns
    with pytest.raises(ValueError, match="no Bulk Read mapping for module 'Contacts'"):
        module_mapping("Contacts", status_field="Booking_Status")


# ---------------------------------------------------------------------- load
def test_a_csv_of_meetings_with_booking_status_loads_the_status(engine, tmp_path):
    rows = [meeting("5545974000000500001", status="Cancelled"), meeting("5545974000000500002", status=""), meeting("5545974000000500003", status="No Show", booking=None)]
    report = load_csv_zip(engine, csv_zip(tmp_path, rows), JOB, events_mapping(status_field="Booking_Status"))

    assert (report.loaded, report.rejected, report.extra_columns) == (3, 0, [])
    stored = events(engine)
    assert {k: (r.status, r.booking_id) for k, r in stored.items()} == {
        "5545974000000500001": ("Cancelled", "#AN-00001"), "5545974000000500002": (None, "#AN-00001"), "5545974000000500003": ("No Show", None),
    }  # fmt: skip
    assert all(r.job_id == JOB and r.deleted_at is None for r in stored.values())
    assert stored["5545974000000500001"].start_time == datetime(2026, 11, 1, 22, 0, tzinfo=UTC)


def test_a_meeting_in_a_bulk_read_is_not_deleted_and_time_only_keeps_the_status(engine, tmp_path):
    """A stored Meeting marked deleted that a Bulk Read returns is not deleted; a load without the
    status field (time-only mode, or an ICS file) leaves the stored status alone."""
    with Session(engine) as s:
        s.add(CrmEvent(id="5545974000000500001", booking_id="#AN-00001", status="Completed", deleted_at=datetime(2026, 10, 5, tzinfo=UTC)))
        s.commit()
    load_csv_zip(engine, csv_zip(tmp_path, [meeting("5545974000000500001", status="Cancelled")]), JOB, events_mapping())
    row = events(engine)["5545974000000500001"]
    assert (row.status, row.deleted_at, row.title) == ("Completed", None, "Haircut with Ada")

    with Session(engine) as s:  # deleted again, then read as ICS
        s.get(CrmEvent, "5545974000000500001").deleted_at = datetime(2026, 10, 6, tzinfo=UTC)
        s.commit()
    add_job(engine, "5545974000003000302")
    item = Event()
    for name, value in (("uid", "5545974000000500001"), ("dtstamp", datetime(2026, 10, 1, tzinfo=UTC)), ("dtstart", datetime(2026, 11, 2, 9, tzinfo=UTC)),
                        ("dtend", datetime(2026, 11, 2, 10, tzinfo=UTC)), ("summary", "Haircut (ICS)"), ("last-modified", datetime(2026, 10, 7, tzinfo=UTC))):  # fmt: skip
        item.add(name, value)
    calendar = Calendar()
    calendar.add("prodid", "-//Zoho CRM//Bulk Read//EN")
    calendar.add("version", "2.0")
    calendar.add_component(item)
    path = tmp_path / "5545974000003000302.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("5545974000003000302.ics", calendar.to_ical())
    assert load_ics_zip(engine, path, "5545974000003000302").loaded == 1
    row = events(engine)["5545974000000500001"]
    assert (row.status, row.deleted_at, row.title, row.job_id) == ("Completed", None, "Haircut (ICS)", "5545974000003000302")


def test_an_older_meeting_in_a_bulk_read_changes_nothing(engine, tmp_path):
    """The upsert skips a record the store holds newer: its deletion mark stays too."""
    deleted = datetime(2026, 10, 9, tzinfo=UTC)
    with Session(engine) as s:
        s.add(CrmEvent(id="5545974000000500001", booking_id="#AN-00001", status="Scheduled", modified_time=datetime(2026, 10, 8, tzinfo=UTC), deleted_at=deleted))
        s.commit()
    load_csv_zip(engine, csv_zip(tmp_path, [meeting("5545974000000500001", status="Cancelled")]), JOB, events_mapping(status_field="Booking_Status"))
    row = events(engine)["5545974000000500001"]
    assert (row.status, row.deleted_at, row.job_id) == ("Scheduled", deleted, None)


# -------------------------------------------------------------- the request
def test_the_request_asks_for_the_status_field_and_checks_criteria_on_it():
    from flows.bulk_read import build_request

    request = build_request("Events", None, None, "csv", "Booking_Id", None, "Booking_Status")
    assert "Booking_Status" in request.query.fields
    assert "Booking_Status" not in build_request("Events", None, None, "csv", "Booking_Id", None).query.fields
    assert build_request("Events", None, None, "ics", "Booking_Id", None, "Booking_Status").query.fields == []
    assert "Booking_Status" not in build_request("Appointments__s", None, None, "csv", "Booking_Id", None, "Booking_Status").query.fields
    # A configured picklist of another name is a picklist to the criteria check.
    on = {"field": {"api_name": "Meeting_State"}, "comparator": "in", "value": ["Cancelled", "No Show"]}
    assert "Meeting_State" in build_request("Events", None, on, "csv", "Booking_Id", None, "Meeting_State").query.fields
    with pytest.raises(ValueError, match="greater_than.*Meeting_State"):
        build_request("Events", None, {**on, "comparator": "greater_than", "value": "A"}, "csv", "Booking_Id", None, "Meeting_State")
    with pytest.raises(ValueError, match="not a known field"):
        build_request("Events", None, on, "csv", "Booking_Id", None)  # not configured: unknown
    build_request("Events", None, {**on, "field": {"api_name": "Booking_Status"}}, "csv", "Booking_Id", None)  # the default picklist is known


# ------------------------------------------------------------ missing records
def run_with_jobs(engine, run_id: str, jobs: list[str], *, status: str = "completed", criteria: Any = None, started: datetime) -> None:
    query = {"module": "Events", "fields": [], "criteria": criteria, "file_type": "csv"}
    with Session(engine) as s:
        s.add(BulkReadRun(id=run_id, module="Events", query_hash=bulk_runs.query_hash(query), query_json=json.dumps(query), status=status, created_at=started))
        for i, job in enumerate(jobs, start=1):
            s.add(BulkJob(id=job, run_id=run_id, page_index=i, module="Events"))
        s.commit()


def test_missing_from_run_reports_linked_records_the_run_did_not_load(engine):
    started = datetime(2026, 11, 1, tzinfo=UTC)
    before, after = started - timedelta(days=3), started + timedelta(minutes=5)
    run_with_jobs(engine, "run-2", ["J1", "J2"], started=started)
    rows = [
        CrmEvent(id="e01", booking_id="#AN-1", job_id="J1", modified_time=before),  # loaded by page 1
        CrmEvent(id="e02", booking_id="#AN-2", job_id="J2", modified_time=before),  # loaded by page 2
        CrmEvent(id="e03", booking_id="#AN-3", job_id="OLD", modified_time=before),  # an earlier run's: missing
        CrmEvent(id="e04", booking_id="#AN-4", job_id=None, modified_time=None),  # read by the records API: missing
        CrmEvent(id="e05", booking_id=None, job_id="OLD", modified_time=before),  # not linked
        CrmEvent(id="e06", booking_id="#AN-6", job_id="OLD", modified_time=before, deleted_at=before),  # deleted
        CrmEvent(id="e07", booking_id="#AN-7", job_id=None, modified_time=after),  # changed since the run started
    ]
    with Session(engine) as s:
        s.add_all(rows)
        s.commit()

    assert bulk_runs.missing_from_run(engine, CrmEvent, "run-2") == (2, [{"id": "e03", "booking_id": "#AN-3"}, {"id": "e04", "booking_id": "#AN-4"}])
    assert bulk_runs.missing_from_run(engine, CrmEvent.__table__, "run-2", limit=1) == (2, [{"id": "e03", "booking_id": "#AN-3"}])
    with Session(engine) as s:  # a report only: nothing changed
        assert {r.id: (r.job_id, r.deleted_at) for r in s.exec(select(CrmEvent)).scalars()}["e03"] == ("OLD", None)
    # A filtered, an unfinished or an unknown run says nothing about the rest.
    run_with_jobs(engine, "run-3", ["J3"], criteria={"field": {"api_name": "Booking_Status"}, "comparator": "equal", "value": "Cancelled"}, started=started)
    run_with_jobs(engine, "run-4", ["J4"], status="running", started=started)
    assert [bulk_runs.missing_from_run(engine, CrmEvent, r) for r in ("run-3", "run-4", "no-such-run")] == [(0, [])] * 3


def test_missing_from_run_on_a_table_without_deleted_at(engine):
    started = datetime(2026, 11, 1, tzinfo=UTC)
    run_with_jobs(engine, "run-2", ["J1"], started=started)
    with Session(engine) as s:
        s.add_all([CrmAppointment(id="a1", booking_id="#AN-1", job_id="J1"), CrmAppointment(id="a2", booking_id="#AN-2", job_id="OLD")])
        s.commit()
    assert bulk_runs.missing_from_run(engine, CrmAppointment, "run-2") == (1, [{"id": "a2", "booking_id": "#AN-2"}])


# ------------------------------------------------------- the flow, on the sandbox
@pytest.fixture
async def oauth_block(sandbox, prefect_api) -> str:
    """The name of a saved ZohoOAuth block for the sandbox."""
    from blocks import ZohoOAuth

    name = f"meetings-{uuid.uuid4().hex[:8]}"
    block = ZohoOAuth(
        client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url,
    )  # fmt: skip
    await block.asave(name)
    return name


def sandbox_meetings_have(field: str) -> bool:
    """Whether the sandbox's Meetings carry ``field`` (``sandbox/schema.py``)."""
    from sandbox.schema import FIELD_INDEX

    return field in FIELD_INDEX["Events"]


@pytest.mark.skipif(not sandbox_meetings_have("Booking_Status"), reason="the sandbox's Events have no Booking_Status picklist (sandbox/schema.py EVENT_FIELDS)")
async def test_a_bulk_read_of_meetings_stores_booking_status_and_reports_missing_meetings(sandbox, oauth_block, engine, tmp_path):
    from flows.bulk_read import bulk_read

    url = f"sqlite:///{tmp_path / 'state.db'}"  # the ``engine`` fixture's store
    gone = "5545974999999999999"
    with Session(engine) as s:  # a linked Meeting the store holds but CRM no longer returns
        s.add(CrmEvent(id=gone, booking_id="#AN-GONE", status="Scheduled", modified_time=datetime(2026, 1, 1, tzinfo=UTC)))
        s.commit()
    params = {"module": "Events", "status_field": "Booking_Status", "oauth_block": oauth_block, "store_url": url, "work_dir": str(tmp_path / "work"), "poll_seconds": 0.2, "poll_max_seconds": 1.0, "timeout_seconds": 60}
    result = await bulk_read(**params)

    meetings = {r["id"]: r for r in sandbox.dump(module="Events")["Events"]}
    stored = events(engine)
    assert result["records"] == len(meetings) == 300 and set(stored) == set(meetings) | {gone}
    assert {k: r.status for k, r in stored.items() if k in meetings} == {k: m["Booking_Status"] for k, m in meetings.items()}
    assert {r.status for r in stored.values()} >= {"Scheduled", "Cancelled", "Completed", "No Show"}
    assert (result["missing_count"], result["missing"]) == (1, [{"id": gone, "booking_id": "#AN-GONE"}])
    row = events(engine)[gone]
    assert (row.status, row.deleted_at, row.job_id) == ("Scheduled", None, None)  # reported, never acted on

    # A read filtered on the picklist says nothing about the rest.
    criteria = {"field": {"api_name": "Booking_Status"}, "comparator": "in", "value": ["Cancelled", "No Show"]}
    filtered = await bulk_read(**params, criteria=criteria)
    expected = sum(m["Booking_Status"] in ("Cancelled", "No Show") for m in meetings.values())
    assert 0 < filtered["records"] == expected and (filtered["missing_count"], filtered["missing"]) == (0, [])

