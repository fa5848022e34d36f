"""Load a Bulk Read result file into the state store: streamed, validated, one transaction per page.

The zip is read member by member as a stream (``zipfile.ZipFile.open``), the CSV
with the ``csv`` module (``utf-8-sig`` drops a BOM; quoted newlines are kept),
each row is validated and converted, and rows are upserted in batches inside one
transaction that also marks the job loaded: a page is all in or all out, and
memory stays flat as the file grows. ICS (``Events`` only) is parsed with
``icalendar``.

A bad row (a date-time or number that does not parse, a date-time without an
offset, the wrong number of values, an empty ``Id``) is recorded in
``rejected_records`` (with the line it starts on and the reason) and skipped; the
rest of the page goes on. A bad *file* (corrupt or truncated zip, no CSV member,
no header, a missing required column) raises :class:`BulkFileError` and loads
nothing: an error part-way through a page rolls the whole page back. Columns the
loader does not map are ignored and listed in :attr:`LoadReport.extra_columns`.
An upsert never replaces a record with an older one (by ``Modified_Time``) and
sets only the columns the file has, plus ``job_id`` / ``loaded_at`` and, in a table
with ``deleted_at`` (``crm_events``), ``deleted_at = None``: a record a Bulk Read
returns is not deleted.

Why the row conversion is not plainly written (issue 12): it is the hardest code
here to change safely (:func:`_converter` compiles one expression per file with
``eval``; :func:`_sqlite_datetime_codec` assembles UTC text from clock tables), so
it was measured against a floor, ``benchmarks/bulk_ingest.py``'s bare
``csv.reader`` + ``sqlite3.executemany`` of the same seven columns into the same
table with no validation or conversion (200,000 rows, CPU seconds of the best run,
interleaved, on a 2-CPU machine shared with other work): this code 1.6-1.8x the
floor (1.45-1.75 s against 0.92-1.0 s); the same conversion written plainly (a
loop over ``(index, codec)`` pairs, ``isoformat()`` behind the same per-string
cache) 1.9-2.0x (1.86-1.92 s); either trick alone 1.7-2.0x. The plain version
misses the 1.5x bar that would have let it replace them, and the two take 9-13 %
off the CPU time of a page's load, so they stay; ``tests/test_bulk_load.py`` and
``tests/test_properties.py`` pin their behaviour to :func:`parse_datetime` and
:class:`~sync.tables.UTCDateTime`. Figures in ``benchmarks/README.md``.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, update

from .store import upsert_newer
from .tables import UTC, BulkJob, CrmAppointment, CrmEvent, RejectedRecord, UTCDateTime, utc_now

#: Rows per executemany batch.
BATCH_SIZE = 5000
csv.field_size_limit(10 * 1024 * 1024)


class BulkFileError(ValueError):
    """A Bulk Read result file that cannot be loaded at all (nothing was loaded)."""


def _as_utc(parsed: datetime, value: str) -> datetime:
    """``parsed`` in UTC; ``ValueError`` when it has no offset or its UTC instant is outside years 1-9999."""
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without an offset: {value!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise ValueError(f"date-time out of range in UTC: {value!r}") from None


def parse_datetime(value: str) -> datetime | None:
    """ISO 8601 with offset (``Z`` accepted) -> aware UTC datetime; ``""`` -> None; else ``ValueError``
    (also for an instant whose UTC date falls outside years 1-9999)."""
    if not value:
        return None
    return _as_utc(datetime.fromisoformat(value), value)  # Python 3.11 reads "Z" and any offset


#: The range of a database integer column (64-bit signed).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def parse_int(value: str) -> int | None:
    """``"30"`` -> 30; ``""`` -> None; else ``ValueError`` (also outside the 64-bit range a column holds)."""
    if not value:
        return None
    number = int(value)
    if not INT_MIN <= number <= INT_MAX:
        raise ValueError(f"integer out of range: {value[:40]!r}")
    return number


def parse_text(value: str) -> str | None:
    """Text as is; ``""`` -> None."""
    return value or None


@dataclass(frozen=True)
class ModuleMapping:
    """How one module's CSV columns become state-store columns.

    ``columns``: CSV column (Zoho API name) -> (table column, converter).
    ``required``: CSV columns that must be in the header.
    """

    module: str
    table: Any
    columns: dict[str, tuple[str, Callable[[str], Any]]]
    required: frozenset[str]

    @property
    def fields(self) -> list[str]:
        """The API names to ask Bulk Read for (``Id`` always comes)."""
        return [c for c in self.columns if c != "Id"]


def appointments_mapping(booking_field: str = "Booking_Id") -> ModuleMapping:
    """``Appointments__s``; ``booking_field`` is the custom field holding the Bookings ``booking_id``."""
    columns = {
        "Id": ("id", parse_text),
        booking_field: ("booking_id", parse_text),
        "Appointment_Start_Time": ("start_time", parse_datetime),
        "Appointment_End_Time": ("end_time", parse_datetime),
        "Duration": ("duration", parse_int),
        "Status": ("status", parse_text),
        "Modified_Time": ("modified_time", parse_datetime),
    }
    return ModuleMapping("Appointments__s", CrmAppointment, columns, frozenset({"Id", booking_field, "Appointment_Start_Time", "Status", "Modified_Time"}))


def events_mapping(booking_field: str = "Booking_Id", status_field: str | None = None) -> ModuleMapping:
    """``Events`` (Meetings) as CSV; ``booking_field`` as for appointments; ``status_field``: the
    organisation's status picklist (e.g. ``Booking_Status``) read into ``status``, or None (time-only
    mode: ``status`` is not read, and a load leaves it alone). Neither is a required column."""
    columns = {
        "Id": ("id", parse_text),
        booking_field: ("booking_id", parse_text),
        "Event_Title": ("title", parse_text),
        "Start_DateTime": ("start_time", parse_datetime),
        "End_DateTime": ("end_time", parse_datetime),
        "Modified_Time": ("modified_time", parse_datetime),
    }
    if status_field:
        columns[status_field] = ("status", parse_text)
    return ModuleMapping("Events", CrmEvent, columns, frozenset({"Id", "Start_DateTime", "End_DateTime", "Modified_Time"}))


#: CRM module API name -> its CSV mapping (given the booking-id field, and for ``Events`` the status field).
MAPPINGS: dict[str, Callable[..., ModuleMapping]] = {"Appointments__s": appointments_mapping, "Events": events_mapping}


def module_mapping(module: str, booking_field: str = "Booking_Id", status_field: str | None = None) -> ModuleMapping:
    """The CSV mapping of CRM ``module`` (:data:`MAPPINGS`); ``status_field`` is passed to
    :func:`events_mapping` (``Appointments__s`` reads its own ``Status`` and ignores it).
    ``ValueError`` naming the known modules for any other module."""
    if module not in MAPPINGS:
        raise ValueError(f"no Bulk Read mapping for module {module!r}; known: {', '.join(MAPPINGS)}")
    if module == "Events":
        return events_mapping(booking_field, status_field)
    return MAPPINGS[module](booking_field)


@dataclass
class LoadReport:
    """What loading one page did."""

    job_id: str
    module: str
    rows: int = 0
    loaded: int = 0
    rejected: int = 0
    extra_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _open_member(archive: zipfile.ZipFile, job_id: str, suffix: str) -> zipfile.ZipExtFile:
    """The ``{job_id}{suffix}`` member (or the only ``*{suffix}`` one); ``BulkFileError`` when there is
    none, or when ``zipfile`` cannot read it (encrypted, or a compression method it lacks)."""
    names = archive.namelist()
    wanted = f"{job_id}{suffix}"
    if wanted not in names:
        candidates = [n for n in names if n.lower().endswith(suffix)]
        if len(candidates) != 1:
            raise BulkFileError(f"the zip of job {job_id} holds {names or 'nothing'}, not one {suffix} file")
        wanted = candidates[0]
    try:
        return archive.open(wanted)
    except (NotImplementedError, RuntimeError) as exc:  # unsupported compression; encrypted (password required)
        raise BulkFileError(f"the zip of job {job_id} cannot be read: {exc}") from exc


#: Distinct date-time strings remembered per column while a page loads.
DATETIME_CACHE = 65_536


_CLOCK_HM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_CLOCK_S = [f"{s:02d}+00:00" for s in range(60)]


def _sqlite_datetime_codec() -> Callable[[str], str | None]:
    """:func:`parse_datetime` and :class:`~sync.store.UTCDateTime`'s SQLite binding in one step.

    Gives the same text (``2026-11-01T04:30:00+00:00``) at half the cost: the slow
    part is ``isoformat`` of an aware datetime, so the text is assembled from the
    date (formatted once per distinct day) and tables of ``HH:MM:`` and ``SS+00:00``.
    A time with fractions of a second goes through ``isoformat``.
    """
    days: dict[int, str] = {}
    fromisoformat = datetime.fromisoformat

    def to_param(raw: str) -> str | None:
        if not raw:
            return None
        moment = _as_utc(fromisoformat(raw), raw)
        if moment.microsecond:
            return moment.isoformat()
        ordinal = moment.toordinal()
        day = days.get(ordinal)
        if day is None:
            day = days[ordinal] = moment.date().isoformat() + "T"
        return day + _CLOCK_HM[moment.hour * 60 + moment.minute] + _CLOCK_S[moment.second]

    return to_param


def _codec(convert: Callable[[str], Any], column_type: Any, dialect: Any) -> Callable[[str], Any]:
    """CSV text -> the value the database driver binds for the column.

    For :class:`~sync.store.UTCDateTime` columns this is ``convert`` followed by the
    column's own bind step (UTC ISO text on SQLite, fused into one function for
    :func:`parse_datetime`), and the result is remembered per distinct string in
    the codec's ``cache`` (look there first): a page repeats its appointment slots
    many times over. A column with more than :data:`DATETIME_CACHE` distinct
    values (``Modified_Time``) stops being remembered.
    """
    if not isinstance(column_type, UTCDateTime):
        return convert
    if convert is parse_datetime and dialect.name == "sqlite":
        to_bound = _sqlite_datetime_codec()
    else:
        bind = column_type.process_bind_param

        def to_bound(raw: str) -> Any:
            return bind(convert(raw), dialect)

    cache: dict[str, Any] = {}

    def to_param(raw: str) -> Any:
        value = to_bound(raw)
        if len(cache) < DATETIME_CACHE:
            cache[raw] = value
        return value

    to_param.cache = cache  # type: ignore[attr-defined]
    return to_param


@dataclass
class _Plan:
    """How the rows of one file become statement parameters, in statement order."""

    statement: Any  # the upsert (SQLAlchemy Core)
    sql: str | None  # its compiled text, when the driver takes positional tuples
    names: list[str]  # table columns, in parameter order
    cells: list[tuple[int, str, Callable[[str], Any]]]  # (CSV index, CSV column, codec) of the mapped columns, in parameter order
    constants: dict[str, Any]  # values of the columns not from the file, by column: job_id, loaded_at[, deleted_at None]
    id_at: int  # position of ``id`` in the parameters


def _plan(engine: Engine, header: list[str], mapping: ModuleMapping, job_id: str, loaded_at: datetime) -> _Plan:
    table_columns = mapping.table.__table__.columns
    mapped = {col: (header.index(csv_col), csv_col, conv) for csv_col, (col, conv) in mapping.columns.items() if csv_col in header}
    constants = {"job_id": job_id, "loaded_at": UTCDateTime().process_bind_param(loaded_at, engine.dialect)}
    if "deleted_at" in table_columns:
        constants["deleted_at"] = None  # a record in the file is not deleted
    names = [*mapped, *constants]
    statement = upsert_newer(engine, mapping.table, names)
    compiled = statement.compile(dialect=engine.dialect, column_keys=names)
    if compiled.positional and sorted(compiled.positiontup or []) == sorted(names):
        sql, names = compiled.string, list(compiled.positiontup or [])  # the statement's order (the table's)
    else:  # named parameters (psycopg...): bound through SQLAlchemy from dicts
        sql, constants["loaded_at"] = None, loaded_at
    cells = []  # the mapped columns in parameter order
    for col in names:
        if col in mapped:
            i, csv_col, conv = mapped[col]
            cells.append((i, csv_col, _codec(conv, table_columns[col].type, engine.dialect)))
    return _Plan(statement, sql, names, cells, constants, names.index("id"))


def _write_batch(conn: Any, plan: _Plan, batch: list[tuple[Any, ...]]) -> None:
    """Upsert one batch of parameter tuples (inside the page's transaction)."""
    if plan.sql is not None:
        conn.exec_driver_sql(plan.sql, batch)
    else:
        conn.execute(plan.statement, [dict(zip(plan.names, row)) for row in batch])


def _bad_cell(row: list[str], plan: _Plan) -> str:
    """Why a row failed conversion: the first column that does not convert."""
    for i, csv_col, codec in plan.cells:
        try:
            codec(row[i])
        except ValueError as exc:
            return f"{csv_col}: {exc}"
    return "Id is empty"


def _converter(plan: _Plan) -> Callable[[list[str]], tuple[Any, ...]]:
    """``row -> parameters`` for one file, as a single expression compiled from the plan.

    Equivalent to the values of ``plan.names`` in order, each a constant
    (``plan.constants``) or its cell's ``codec(row[i])`` (``plan.cells``, in the same
    order), raising ``ValueError`` the same way, without a loop and a call per cell: text
    and integer columns are converted inline, and a date-time column asks its
    codec's cache before calling it. The source holds only integers and fixed names.
    (:func:`parse_int` keeps its call: its range check is part of the conversion.)
    """
    env: dict[str, Any] = {}
    parts = []
    cells = iter(enumerate(plan.cells))
    for j, name in enumerate(plan.names):
        if name in plan.constants:
            env[f"k{j}"] = plan.constants[name]
            parts.append(f"k{j}")
            continue
        k, (i, _, codec) = next(cells)
        if codec is parse_text:
            parts.append(f"row[{i}] or None")
            continue
        env[f"c{k}"] = codec
        cache = getattr(codec, "cache", None)
        if cache is not None:  # cached values of date-time columns are never falsy but None
            env[f"g{k}"] = cache.get
            parts.append(f"(g{k}(row[{i}]) or c{k}(row[{i}]))")
        else:
            parts.append(f"c{k}(row[{i}])")
    return eval(f"lambda row: ({', '.join(parts)},)", env)  # noqa: S307 - see docstring


def _row_batches(reader: Any, header: list[str], plan: _Plan, rejected: list[dict], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Parameter tuples of the valid rows, ``size`` at a time; bad rows go to ``rejected`` with the line they start on."""
    width = len(header)
    id_col = header.index("Id")
    convert = _converter(plan)
    id_at = plan.id_at
    batch: list[tuple[Any, ...]] = []
    end = reader.line_num
    for row in reader:
        line, end = end + 1, reader.line_num
        if len(row) != width:
            if row:  # a blank line is no record
                rejected.append({"line": line, "record_id": row[id_col] if len(row) > id_col else None, "error": f"{len(row)} values for {width} columns", "raw": json.dumps(row)[:2000]})
            continue
        try:
            values = convert(row)
            if not values[id_at]:
                raise ValueError
        except ValueError:
            rejected.append({"line": line, "record_id": row[id_col] or None, "error": _bad_cell(row, plan), "raw": json.dumps(dict(zip(header, row)))[:2000]})
            continue
        batch.append(values)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _save_rejected(conn: Any, report: LoadReport, rejected: list[dict], loaded_at: datetime) -> None:
    """Insert the rows rejected so far (in the page's transaction) and forget them."""
    if rejected:
        conn.execute(
            RejectedRecord.__table__.insert(),
            [{**r, "job_id": report.job_id, "module": report.module, "created_at": loaded_at} for r in rejected],
        )
        report.rejected += len(rejected)
        rejected.clear()


def _finish(conn: Any, report: LoadReport, rejected: list[dict], loaded_at: datetime) -> None:
    _save_rejected(conn, report, rejected, loaded_at)
    report.rows = report.loaded + report.rejected
    conn.execute(
        update(BulkJob.__table__)
        .where(BulkJob.__table__.c.id == report.job_id)
        .values(loaded_at=loaded_at, records_loaded=report.loaded, records_rejected=report.rejected, state="COMPLETED")
    )


#: What a damaged zip raises while it is read: a bad header or CRC, a broken deflate stream, a cut-off member,
#: a version or compression method ``zipfile`` does not implement, an offset it cannot seek to (``OSError``;
#: also a file that is not there, which a rerun downloads again like a damaged one).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError)


def load_csv_zip(engine: Engine, zip_path: Path | str, job_id: str, mapping: ModuleMapping, batch_size: int = BATCH_SIZE) -> LoadReport:
    """Load ``{job_id}.csv`` from the zip at ``zip_path`` into ``mapping.table`` in one transaction.

    Rows are converted straight to driver parameters (date-times through
    :class:`~sync.store.UTCDateTime`, remembered per distinct string) and upserted
    ``batch_size`` at a time; rejected rows are written as they accumulate. A blank
    line is skipped. Returns a :class:`LoadReport`. Raises :class:`BulkFileError`
    (nothing loaded) for a corrupt or truncated zip, no CSV member, an empty file,
    missing required columns, text that is not UTF-8 or malformed CSV.
    """
    started = time.perf_counter()
    report = LoadReport(job_id, mapping.module)
    loaded_at = utc_now()
    rejected: list[dict] = []
    try:
        with zipfile.ZipFile(zip_path) as archive, _open_member(archive, job_id, ".csv") as member:
            text = io.TextIOWrapper(member, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if not header:
                raise BulkFileError(f"the CSV of job {job_id} is empty (no header row)")
            missing = sorted(mapping.required - set(header))
            if missing:
                raise BulkFileError(f"the CSV of job {job_id} lacks the columns {missing}; it has {header}")
            report.extra_columns = [c for c in header if c not in mapping.columns]
            plan = _plan(engine, header, mapping, job_id, loaded_at)
            with engine.begin() as conn:
                for batch in _row_batches(reader, header, plan, rejected, batch_size):
                    _write_batch(conn, plan, batch)
                    report.loaded += len(batch)
                    if len(rejected) >= batch_size:
                        _save_rejected(conn, report, rejected, loaded_at)
                _finish(conn, report, rejected, loaded_at)
    except ZIP_ERRORS as exc:
        raise BulkFileError(f"the result of job {job_id} is not a readable zip: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise BulkFileError(f"the CSV of job {job_id} is not UTF-8: {exc}") from exc
    except csv.Error as exc:
        raise BulkFileError(f"the CSV of job {job_id} is malformed: {exc}") from exc
    report.seconds = time.perf_counter() - started
    return report


def load_ics_zip(engine: Engine, zip_path: Path | str, job_id: str, booking_property: str = "X-ZOHO-BOOKING-ID") -> LoadReport:
    """Load ``{job_id}.ics`` (``Events``) into ``crm_events`` in one transaction.

    ``UID`` is the record id, ``DTSTART``/``DTEND`` the times, ``SUMMARY`` the
    title, ``LAST-MODIFIED`` the modification time; ``booking_property`` carries
    the booking id when the file has it. ``status`` (no ICS property carries it) is left
    as stored; ``deleted_at`` is cleared. An event without a UID, or whose times
    are not date-times with a time zone, is rejected (``line`` is then its
    position among the file's events). ICS pages hold at most 20,000 events, so
    the file is parsed whole. Raises :class:`BulkFileError` as :func:`load_csv_zip` does.
    """
    from icalendar import Calendar

    started = time.perf_counter()
    report = LoadReport(job_id, "Events")
    loaded_at = utc_now()
    rejected: list[dict] = []
    try:
        with zipfile.ZipFile(zip_path) as archive, _open_member(archive, job_id, ".ics") as member:
            data = member.read()
        calendar = Calendar.from_ical(data)
    except ZIP_ERRORS as exc:
        raise BulkFileError(f"the result of job {job_id} is not a readable zip: {exc}") from exc
    except ValueError as exc:
        raise BulkFileError(f"the ICS of job {job_id} is malformed: {exc}") from exc
    rows = []
    for position, component in enumerate(calendar.walk("VEVENT"), start=1):
        try:
            uid = str(component.get("UID") or "")
            if not uid:
                raise ValueError("UID is empty")
            start = component.decoded("DTSTART")
            end = component.decoded("DTEND")
            modified = component.decoded("LAST-MODIFIED") if component.get("LAST-MODIFIED") else None
            for name, value in (("DTSTART", start), ("DTEND", end), ("LAST-MODIFIED", modified)):
                if (value is not None or name != "LAST-MODIFIED") and (not isinstance(value, datetime) or value.tzinfo is None):
                    raise ValueError(f"{name} is not a date-time with a time zone: {value!r}")
            rows.append(
                {
                    "id": uid,
                    "booking_id": str(component.get(booking_property)) if component.get(booking_property) else None,
                    "title": str(component.get("SUMMARY") or "") or None,
                    "start_time": start.astimezone(UTC),
                    "end_time": end.astimezone(UTC),
                    "modified_time": modified.astimezone(UTC) if modified is not None else None,
                    "job_id": job_id,
                    "loaded_at": loaded_at,
                    "deleted_at": None,
                }
            )
        except (ValueError, KeyError, OverflowError) as exc:  # OverflowError: a time whose UTC date is out of range
            rejected.append({"line": position, "record_id": str(component.get("UID") or "") or None, "error": str(exc), "raw": component.to_ical().decode(errors="replace")[:2000]})
    with engine.begin() as conn:
        if rows:
            conn.execute(upsert_newer(engine, CrmEvent, list(rows[0])), rows)  # these columns only: ``status`` stays
        report.loaded = len(rows)
        _finish(conn, report, rejected, loaded_at)
    report.seconds = time.perf_counter() - started
    return report
