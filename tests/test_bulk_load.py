"""The Bulk Read loader (``sync/bulk_load.py``) on zips built here: no servers.

Each test writes a result zip as CRM Bulk Read gives it (``{job_id}.zip`` holding
``{job_id}.csv`` or ``.ics``) into a fresh SQLite state store, then reads the
store back: rows and their UTC times, the job's bookkeeping, rejected rows, and
that a page that cannot be loaded leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import struct
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Event
from sqlalchemy import func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError
from sqlmodel import Session

from sync import bulk_load
from sync.bulk_load import BulkFileError, appointments_mapping, events_mapping, load_csv_zip, load_ics_zip, parse_datetime
from sync.store import BulkJob, CrmAppointment, CrmEvent, RejectedRecord, UTCDateTime, open_store

UTC = timezone.utc
JOB = "5545974000003000101"
HEADER = ["Id", "Appointment_Name", "Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Booking_Id", "Modified_Time"]


# ------------------------------------------------------------------- helpers
def appointment(id: str, *, start: str = "2026-11-02T10:00:00-05:00", duration: int = 30, status: str = "Scheduled", booking: str | None = None, modified: str = "2026-10-01T09:00:00+01:00", name: str = "Haircut - Ada Lovelace") -> dict[str, Any]:
    """One ``Appointments__s`` row as Bulk Read writes it (end = start + duration, when start is a date-time)."""
    try:
        end = (datetime.fromisoformat(start) + timedelta(minutes=duration)).isoformat()
    except ValueError:
        end = ""
    return {
        "Id": id, "Appointment_Name": name, "Appointment_Start_Time": start, "Appointment_End_Time": end,
        "Duration": str(duration), "Status": status, "Booking_Id": booking or f"#AN-{id[-5:]}", "Modified_Time": modified,
    }  # fmt: skip


def csv_text(rows: list[Any], header: list[str] = HEADER) -> str:
    """CSV as Bulk Read writes it: a header, then rows (dicts by column, or raw lists)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(c, "") for c in header] if isinstance(row, dict) else row)
    return out.getvalue()


def write_zip(folder: Path, content: str | bytes, *, member: str | None = None, job_id: str = JOB, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """``{job_id}.zip`` in ``folder`` holding ``content`` as ``member`` (default ``{job_id}.csv``)."""
    path = folder / f"{job_id}.zip"
    data = content.encode("utf-8") if isinstance(content, str) else content
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr(member or f"{job_id}.csv", data)
    return path


@pytest.fixture
def engine(tmp_path: Path):
    """A fresh SQLite state store holding the job :data:`JOB` (created, not loaded)."""
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    add_job(engine, JOB)
    yield engine
    engine.dispose()


def add_job(engine, job_id: str, module: str = "Appointments__s") -> None:
    with Session(engine) as s:
        s.add(BulkJob(id=job_id, run_id="run-1", page_index=1, module=module))
        s.commit()


def load(engine, folder: Path, rows: list[Any], job_id: str = JOB, header: list[str] = HEADER, **kwargs: Any):
    """Write ``rows`` as a page of job ``job_id`` and load it."""
    if job_id != JOB:
        add_job(engine, job_id)
    return load_csv_zip(engine, write_zip(folder, csv_text(rows, header), job_id=job_id), job_id, appointments_mapping(), **kwargs)


def stored(engine, table: Any = CrmAppointment) -> dict[str, Any]:
    """Every row of ``table``, by id."""
    with Session(engine) as s:
        return {r.id: r for r in s.exec(select(table)).scalars()}


def job(engine, job_id: str = JOB) -> BulkJob:
    with Session(engine) as s:
        return s.get(BulkJob, job_id)


def rejected(engine) -> list[RejectedRecord]:
    with Session(engine) as s:
        return list(s.exec(select(RejectedRecord).order_by(RejectedRecord.line)).scalars())


def count(engine, table: Any = CrmAppointment) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def assert_nothing_loaded(engine, job_id: str = JOB, before: int = 0) -> None:
    assert count(engine) == before
    assert rejected(engine) == []
    assert job(engine, job_id).loaded_at is None


# --------------------------------------------------------------------- pages
def test_a_page_loads_and_reads_back_in_aware_utc(engine, tmp_path):
    rows = [
        appointment("5545974000000400002", start="2026-11-02T10:00:00-05:00", duration=45, modified="2026-10-01T09:00:00+01:00"),
        appointment("5545974000000400004", start="2026-11-02T15:30:00+05:30", status="Completed", modified="2026-10-02T08:00:00Z"),
    ]
    report = load(engine, tmp_path, rows)

    assert (report.rows, report.loaded, report.rejected) == (2, 2, 0)
    got = stored(engine)
    first, second = got["5545974000000400002"], got["5545974000000400004"]
    assert first.start_time == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    assert first.start_time.tzinfo == UTC and first.end_time.tzinfo == UTC and first.modified_time.tzinfo == UTC
    assert first.end_time == datetime(2026, 11, 2, 15, 45, tzinfo=UTC)
    assert (first.duration, first.status, first.booking_id, first.job_id) == (45, "Scheduled", "#AN-00002", JOB)
    assert first.modified_time == datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    assert second.start_time == datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert second.status == "Completed"
    assert second.loaded_at is not None and second.loaded_at.tzinfo == UTC
    done = job(engine)
    assert (done.state, done.records_loaded, done.records_rejected) == ("COMPLETED", 2, 0)
    assert done.loaded_at is not None


def test_an_older_record_never_replaces_a_newer_one(engine, tmp_path):
    rid = "5545974000000400002"
    load(engine, tmp_path, [appointment(rid, status="Completed", modified="2026-10-05T12:00:00+00:00")])

    # A later page (or a stale job) carries an older version of the record, and a new one.
    older = appointment(rid, status="Scheduled", modified="2026-10-05T13:00:00+02:00")  # 11:00 UTC
    report = load(engine, tmp_path, [older, appointment("5545974000000400004")], job_id="5545974000003000104")
    assert report.loaded == 2
    got = stored(engine)
    assert got[rid].status == "Completed" and got[rid].job_id == JOB
    assert "5545974000000400004" in got

    newer = appointment(rid, status="Cancelled", modified="2026-10-05T08:00:01-04:00")  # 12:00:01 UTC
    load(engine, tmp_path, [newer], job_id="5545974000003000107")
    got = stored(engine)
    assert got[rid].status == "Cancelled" and got[rid].job_id == "5545974000003000107"
    assert got[rid].modified_time == datetime(2026, 10, 5, 12, 0, 1, tzinfo=UTC)


def test_a_page_without_an_optional_column_keeps_what_is_stored(engine, tmp_path):
    rid = "5545974000000400002"
    load(engine, tmp_path, [appointment(rid, duration=60)])
    narrow = [h for h in HEADER if h not in ("Duration", "Appointment_End_Time")]
    load(engine, tmp_path, [appointment(rid, status="Completed", modified="2026-10-09T00:00:00+00:00")], job_id="5545974000003000104", header=narrow)
    record = stored(engine)[rid]
    assert record.status == "Completed"
    assert record.duration == 60 and record.end_time == datetime(2026, 11, 2, 16, 0, tzinfo=UTC)


def test_a_utf8_bom_is_dropped(engine, tmp_path):
    text = csv_text([appointment("5545974000000400002")])
    load_csv_zip(engine, write_zip(tmp_path, text.encode("utf-8-sig")), JOB, appointments_mapping())
    assert list(stored(engine)) == ["5545974000000400002"]


def test_quoted_newlines_and_commas_stay_inside_their_field(engine, tmp_path):
    booking = '#AN-7, "walk-in"\nsecond line'
    rows = [
        appointment("5545974000000400002", booking=booking, name="Cut, colour\nand \"style\""),
        appointment("5545974000000400004"),
        appointment("5545974000000400006", start="not a date"),
    ]
    report = load(engine, tmp_path, rows)
    assert (report.loaded, report.rejected) == (2, 1)
    assert stored(engine)["5545974000000400002"].booking_id == booking
    # The file's lines: 1 header, 2-4 the first record (two quoted newlines), 5 the second, 6 the bad one.
    assert [(r.line, r.record_id) for r in rejected(engine)] == [(6, "5545974000000400006")]


def test_an_empty_result_loads_nothing_and_marks_the_job_loaded(engine, tmp_path):
    report = load(engine, tmp_path, [])
    assert (report.rows, report.loaded, report.rejected) == (0, 0, 0)
    assert count(engine) == 0
    done = job(engine)
    assert done.loaded_at is not None and done.records_loaded == 0 and done.state == "COMPLETED"


def test_unexpected_columns_are_ignored_and_reported(engine, tmp_path):
    header = ["Id", "Surprise__c", *HEADER[1:], "Another_Field"]
    row = {**appointment("5545974000000400002"), "Surprise__c": "x", "Another_Field": "y"}
    report = load(engine, tmp_path, [row], header=header)
    assert report.extra_columns == ["Surprise__c", "Appointment_Name", "Another_Field"]
    assert report.loaded == 1 and stored(engine)["5545974000000400002"].status == "Scheduled"


def test_a_missing_required_column_loads_nothing(engine, tmp_path):
    header = [h for h in HEADER if h != "Modified_Time"]
    with pytest.raises(BulkFileError, match="Modified_Time"):
        load(engine, tmp_path, [appointment("5545974000000400002")], header=header)
    assert_nothing_loaded(engine)


def _big_csv(rows: int = 3000) -> str:
    return csv_text([appointment(str(5545974000000400000 + 2 * i), modified=f"2026-10-01T09:{i % 60:02d}:00+01:00") for i in range(1, rows + 1)])


def _corrupt_deflate(folder: Path) -> Path:
    """A zip whose deflate stream is invalid (zlib fails), though its directory is fine."""
    path = write_zip(folder, _big_csv())
    with zipfile.ZipFile(path) as archive:
        offset = archive.infolist()[0].header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    data[offset + 30 + name_length + extra_length] = 0b111  # final block of the reserved type 11
    path.write_bytes(bytes(data))
    return path


def _not_a_zip(folder: Path) -> Path:
    path = folder / f"{JOB}.zip"
    path.write_bytes(b"<html>Service Unavailable</html>")
    return path


def _two_csv(folder: Path) -> Path:
    path = folder / f"{JOB}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", csv_text([]))
        archive.writestr("b.csv", csv_text([]))
    return path


def _truncated(folder: Path) -> Path:
    path = write_zip(folder, _big_csv())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


BAD_ZIPS = {
    "not a zip": _not_a_zip,
    "no csv inside": lambda folder: write_zip(folder, "just a note", member="readme.txt"),
    "two csv inside": _two_csv,
    "truncated": _truncated,
    "corrupt deflate stream": _corrupt_deflate,
}


@pytest.mark.parametrize("damage", list(BAD_ZIPS))
def test_a_bad_zip_raises_and_loads_nothing(engine, tmp_path, damage):
    path = BAD_ZIPS[damage](tmp_path)
    with pytest.raises(BulkFileError):
        load_csv_zip(engine, path, JOB, appointments_mapping(), batch_size=100)
    assert_nothing_loaded(engine)


def test_an_empty_file_raises(engine, tmp_path):
    with pytest.raises(BulkFileError, match="empty"):
        load_csv_zip(engine, write_zip(tmp_path, ""), JOB, appointments_mapping())
    assert_nothing_loaded(engine)


# ------------------------------------------------------------------ bad rows
def test_bad_rows_are_recorded_skipped_and_the_rest_loads(engine, tmp_path):
    good = [appointment(str(5545974000000400000 + 2 * i)) for i in range(1, 5)]
    rows = [
        good[0],
        appointment("5545974000000400102", start="2026-13-45T10:00:00+00:00"),  # line 3: no such date
        good[1],
        appointment("5545974000000400104", start="2026-11-02T10:00:00"),  # line 5: no offset
        ["5545974000000400106", "too", "few"],  # line 6
        {**appointment("x"), "Id": ""},  # line 7
        good[2],
        {**appointment("5545974000000400108"), "Duration": "thirty"},  # line 9
        good[3],
    ]
    report = load(engine, tmp_path, rows)

    assert (report.rows, report.loaded, report.rejected) == (9, 4, 5)
    assert sorted(stored(engine)) == sorted(r["Id"] for r in good)
    bad = [(r.line, r.record_id, r.job_id, r.module) for r in rejected(engine)]
    assert bad == [
        (3, "5545974000000400102", JOB, "Appointments__s"),
        (5, "5545974000000400104", JOB, "Appointments__s"),
        (6, "5545974000000400106", JOB, "Appointments__s"),
        (7, None, JOB, "Appointments__s"),
        (9, "5545974000000400108", JOB, "Appointments__s"),
    ]
    reasons = [r.error for r in rejected(engine)]
    assert reasons[0].startswith("Appointment_Start_Time:")
    assert "without an offset" in reasons[1] and reasons[1].startswith("Appointment_Start_Time:")
    assert reasons[2] == f"3 values for {len(HEADER)} columns"
    assert reasons[3] == "Id is empty"
    assert reasons[4].startswith("Duration:")
    assert "thirty" in rejected(engine)[4].raw
    done = job(engine)
    assert (done.records_loaded, done.records_rejected) == (4, 5)


def test_many_bad_rows_are_written_as_they_come(engine, tmp_path):
    rows = [appointment(str(5545974000000400000 + 2 * i), modified="yesterday" if i % 3 else "2026-10-01T09:00:00Z") for i in range(1, 301)]
    report = load(engine, tmp_path, rows, batch_size=20)
    assert (report.loaded, report.rejected) == (100, 200)
    assert len(rejected(engine)) == 200 and count(engine) == 100


# ------------------------------------------------------------- all or nothing
def test_a_checksum_error_at_the_end_of_a_page_rolls_the_whole_page_back(engine, tmp_path):
    load(engine, tmp_path, [appointment("5545974000000400002", status="Completed", modified="2026-10-01T00:00:00Z")], job_id="5545974000003000098")
    text = _big_csv()
    path = write_zip(tmp_path, text, compression=zipfile.ZIP_STORED)
    data = path.read_bytes()
    last = data.rindex(b"#AN-")  # a booking id in the last row: the CSV still parses, the CRC does not match
    path.write_bytes(data[:last] + b"#XX-" + data[last + 4 :])

    with pytest.raises(BulkFileError, match="readable zip"):
        load_csv_zip(engine, path, JOB, appointments_mapping(), batch_size=100)  # 29 batches were written first
    assert_nothing_loaded(engine, before=1)
    assert stored(engine)["5545974000000400002"].status == "Completed"


def test_a_failure_in_a_later_batch_leaves_nothing_of_the_page(engine, tmp_path, monkeypatch):
    written = []
    real = bulk_load._write_batch

    def flaky(conn, plan, batch):
        if len(written) == 3:
            raise RuntimeError("disk full")
        real(conn, plan, batch)
        written.append(len(batch))

    monkeypatch.setattr(bulk_load, "_write_batch", flaky)
    rows = [appointment(str(5545974000000400000 + 2 * i), start="bad" if i == 5 else "2026-11-02T10:00:00-05:00") for i in range(1, 101)]
    with pytest.raises(RuntimeError, match="disk full"):
        load(engine, tmp_path, rows, batch_size=10)
    assert written == [10, 10, 10]
    assert_nothing_loaded(engine)


def test_events_load_from_csv_too(engine, tmp_path):
    header = ["Id", "Event_Title", "Start_DateTime", "End_DateTime", "All_day", "Booking_Id", "Modified_Time"]
    rows = [["5545974000000500001", "Haircut, with Ada", "2026-11-02T09:00:00+11:00", "2026-11-02T09:30:00+11:00", "false", "", "2026-10-03T12:00:00Z"]]
    add_job(engine, "5545974000003000301", module="Events")
    path = write_zip(tmp_path, csv_text(rows, header), job_id="5545974000003000301")
    report = load_csv_zip(engine, path, "5545974000003000301", events_mapping())
    assert (report.loaded, report.extra_columns) == (1, ["All_day"])
    record = stored(engine, CrmEvent)["5545974000000500001"]
    assert (record.title, record.booking_id) == ("Haircut, with Ada", None)
    assert record.start_time == datetime(2026, 11, 1, 22, 0, tzinfo=UTC)


# ------------------------------------------------------------------------ ICS
def ics(events: list[Event]) -> bytes:
    calendar = Calendar()
    calendar.add("prodid", "-//Zoho CRM//Bulk Read//EN")
    calendar.add("version", "2.0")
    for event in events:
        calendar.add_component(event)
    return calendar.to_ical()


def event(uid: str, start: Any, end: Any, title: str, booking: str | None = None, modified: datetime | None = None) -> Event:
    item = Event()
    item.add("uid", uid)
    item.add("dtstamp", datetime(2026, 10, 1, tzinfo=UTC))
    item.add("dtstart", start)
    item.add("dtend", end)
    item.add("summary", title)
    if modified is not None:
        item.add("last-modified", modified)
    if booking is not None:
        item.add("x-zoho-booking-id", booking)
    return item


def test_ics_events_load_with_their_booking_id(engine, tmp_path):
    add_job(engine, "5545974000003000201", module="Events")
    sydney = ZoneInfo("Australia/Sydney")
    data = ics([
        event("5545974000000500001", datetime(2026, 11, 2, 9, 0, tzinfo=sydney), datetime(2026, 11, 2, 9, 30, tzinfo=sydney), "Haircut with Ada, \"VIP\"", "#AN-00001", datetime(2026, 10, 3, 12, 0, tzinfo=UTC)),
        event("5545974000000500003", datetime(2026, 11, 3, 14, 0, tzinfo=UTC), datetime(2026, 11, 3, 15, 0, tzinfo=UTC), "Colour with Grace"),
        event("5545974000000500005", datetime(2026, 11, 4).date(), datetime(2026, 11, 5).date(), "All day"),  # no time: rejected
    ])  # fmt: skip
    path = write_zip(tmp_path, data, member="5545974000003000201.ics", job_id="5545974000003000201")
    report = load_ics_zip(engine, path, "5545974000003000201")

    assert (report.rows, report.loaded, report.rejected) == (3, 2, 1)
    got = stored(engine, CrmEvent)
    first = got["5545974000000500001"]
    assert first.booking_id == "#AN-00001"
    assert first.title == 'Haircut with Ada, "VIP"'
    assert first.start_time == datetime(2026, 11, 1, 22, 0, tzinfo=UTC) and first.start_time.tzinfo == UTC
    assert first.end_time == datetime(2026, 11, 1, 22, 30, tzinfo=UTC)
    assert first.modified_time == datetime(2026, 10, 3, 12, 0, tzinfo=UTC)
    assert got["5545974000000500003"].booking_id is None and got["5545974000000500003"].modified_time is None
    [bad] = rejected(engine)
    assert (bad.line, bad.record_id, bad.module) == (3, "5545974000000500005", "Events")
    assert "DTSTART" in bad.error
    assert job(engine, "5545974000003000201").loaded_at is not None


@pytest.mark.parametrize("content", [b"not a calendar at all", b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:1\r\n", b""])
def test_a_malformed_ics_raises_and_loads_nothing(engine, tmp_path, content):
    path = write_zip(tmp_path, content, member=f"{JOB}.ics")
    with pytest.raises(BulkFileError):
        load_ics_zip(engine, path, JOB)
    assert count(engine, CrmEvent) == 0 and job(engine).loaded_at is None


def test_a_damaged_ics_zip_raises(engine, tmp_path):
    (tmp_path / f"{JOB}.zip").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(BulkFileError, match="readable zip"):
        load_ics_zip(engine, tmp_path / f"{JOB}.zip", JOB)


# --------------------------------------------------------------------- store
def test_the_store_refuses_naive_datetimes(engine):
    with Session(engine) as s:
        s.add(CrmAppointment(id="1", start_time=datetime(2026, 11, 2, 10, 0)))
        with pytest.raises(StatementError, match="naive datetime"):
            s.commit()
    assert count(engine) == 0


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-02T10:00:00-05:00", "2026-12-31T22:30:59-05:00", "2026-01-01T03:15:07+05:45", "2026-03-01T00:00:00+11:00",
        "2028-02-29T23:59:59-10:00", "2026-11-02T10:00:00Z", "2026-11-02T10:00:00.250000+01:00", "2026-11-02T10:00:00+00:00", "",
    ],
)  # fmt: skip
def test_the_loader_binds_date_times_as_the_store_does(text):
    """The loader's fused SQLite conversion gives the text :class:`UTCDateTime` would bind."""
    codec = bulk_load._codec(parse_datetime, UTCDateTime(), sqlite.dialect())
    expected = UTCDateTime().process_bind_param(parse_datetime(text), sqlite.dialect())
    assert codec(text) == expected
    assert codec.cache[text] == expected  # what the loader looks up first
