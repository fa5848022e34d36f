"""CRM Bulk Read: create a job, read its status, download its result.

Follows Zoho's Bulk Read documents (seed 001 and the notes in
``shared/zoho-api-notes.md``):

* ``POST /crm/bulk/{version}/read`` (``Content-Type: application/json``, any case,
  parameters allowed; anything else answers 415 ``MEDIA_TYPE_NOT_SUPPORTED``) answers
  201 with the job in state ``ADDED``. ``query.module`` (``{"api_name": ...}`` or a
  plain string), ``fields`` (empty: all), ``criteria`` (a condition or a nested
  ``group_operator``/``group``), ``page`` or ``page_token``, ``cvid`` (accepted,
  ignored), ``file_type`` ``csv`` or ``ics`` (``Events`` only, no ``fields``),
  ``callback {url, method: post}``. A query the job could not run is refused when the
  job is created, with 400 and the codes of crm-oas v8.0 ``bulk_read.json``: a
  module the sandbox does not serve ``MODULE_NOT_SUPPORTED``, a field the module
  does not have ``FIELD_NOT_SUPPORTED`` (``details {api_name, module}``), criteria
  that break the rules ``INVALID_CRITERIA`` (unknown field, comparator not allowed
  for the field's data type (``details`` list the ``supported`` ones), a value of
  the wrong type, ``between`` without exactly two values, an empty ``group``) or
  ``GROUP_OPERATOR_NOT_SUPPORTED``, a bad callback ``INVALID_CALLBACK_URL`` /
  ``INVALID_CALLBACK_METHOD``. Malformed JSON, a bad
  ``page``/``page_token``/``file_type`` answer 400 ``INVALID_DATA`` (no code of the
  OAS fits); no ``query`` or no module 400 ``MANDATORY_NOT_FOUND``. The token needs
  ``ZohoCRM.bulk.read`` and ``ZohoCRM.modules.{module}.READ`` (else 401
  ``OAUTH_SCOPE_MISMATCH``).
* The job moves ``ADDED`` -> ``QUEUED`` -> ``IN PROGRESS`` -> ``COMPLETED`` (or
  ``FAILURE``) over ``bulk_delay`` seconds (a third each; a job still being built
  after that stays ``IN PROGRESS``). A fault of the sandbox itself fails the job
  with ``result.error_message {status, code: INTERNAL_ERROR, message, details}``:
  a job always ends. So does the fraction ``bulk_job_failure_rate`` (config, 0 by
  default: fault injection, nothing like it is documented) of jobs.
* ``GET /crm/bulk/{version}/read/{job_id}`` answers ``{"data": [job]}``; on completion
  ``result {page, per_page, count, download_url, more_records, next_page_token}``
  (``download_url`` relative, in the version of the call). The callback URL
  receives the same JSON, once, when the job ends (completed or failed).
* ``GET .../read/{job_id}/result`` answers ``{job_id}.zip`` holding ``{job_id}.csv``
  (first column ``Id``, then the requested fields in order; lookups as their ids;
  date-times ISO 8601 as stored; ``Status`` as the records API shows it, e.g.
  ``Overdue``) or ``{job_id}.ics``, for ``bulk_result_ttl`` seconds (a day). Rows
  are in ascending id order. An unknown job id answers 404 ``RESOURCE_NOT_FOUND``
  (``details {resource}``) for the status and 400 ``RESOURCE_NOT_FOUND`` for the
  result (crm-oas v8.0); a job not completed, failed or expired answers 400
  ``INVALID_DATA``; more than
  ``bulk_downloads_per_minute`` downloads in a rolling minute answer 429
  ``TOO_MANY_REQUESTS`` with ``Retry-After``.
* One page holds ``bulk_page_size`` records (200,000; ICS 20,000); the next page
  is a new job with ``query.page_token`` = the previous ``next_page_token`` (24
  hours, same module), or with ``query.page``.

Criteria semantics (Zoho's documents do not spell these out; the sandbox's choice):
compares of text, text area, picklist and e-mail fields ignore case; lookups
compare their ids; date-times compare instants, whatever the offset; ``between``
is inclusive; ``${EMPTY}`` with ``equal``/``not_equal`` matches an empty value;
``not_equal``, ``not_in``, ``not_contains`` and ``not_between`` match an empty
value, the other comparators do not. ``Status`` is compared as shown (``Overdue``).

The result is built off the event loop, in a worker thread, from a snapshot of
the records taken once ``bulk_delay`` has passed (200,000 records with every field
take a few seconds); the event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
import time
import zipfile
from datetime import datetime
from typing import Any, Callable, Iterable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from . import clock
from .auth import require_crm
from .crm_request import check_version, json_body
from .crm_status import auto_completes, effective_status
from .errors import CrmError
from .schema import COMPARATORS, FIELD_INDEX, MODULE_IDS, MODULES
from .seed import API_USER
from .state import BulkJob, SandboxState

router = APIRouter()
log = logging.getLogger("sandbox.bulk")

ICS_PAGE_LIMIT = 20_000
EMPTY = "${EMPTY}"
#: Rows written to the zip at a time (bounds the CSV text held in memory).
CSV_CHUNK = 5_000
LOOKUPS = ("lookup", "ownerlookup")


class CriteriaError(Exception):
    """A criterion the job cannot evaluate; carries Zoho's error ``code`` and ``details``.

    ``code`` is ``INVALID_CRITERIA``, or ``GROUP_OPERATOR_NOT_SUPPORTED`` for a bad
    ``group_operator`` (codes of crm-oas v8.0 ``bulk_read.json``; which of its finer
    codes Zoho gives for which fault is not documented, so the rest share
    ``INVALID_CRITERIA``, with ``details`` naming the field and what is wrong).
    """

    def __init__(self, message: str, code: str = "INVALID_CRITERIA", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details


# ---------------------------------------------------------------------- criteria
def status_reader(now: datetime, auto_complete: bool) -> Callable[[dict[str, Any]], str]:
    """``rec -> Status`` as the records API shows it at ``now`` (``Overdue``...).

    Remembers the answer per ``(Status, start, end)``: seeded records share a few
    thousand start times, so a big job parses each one once.
    """
    seen: dict[tuple[Any, Any, Any], str] = {}

    def status_of(rec: dict[str, Any]) -> str:
        key = (rec["Status"], rec.get("Appointment_Start_Time"), rec.get("Appointment_End_Time"))
        shown = seen.get(key)
        if shown is None:
            shown = seen[key] = effective_status(rec, now, auto_complete=auto_complete)
        return shown

    return status_of


def _coerce(value: Any, data_type: str, api_name: str) -> Any:
    """A criteria value as the compare needs it; raises :class:`CriteriaError`."""
    try:
        if data_type == "datetime":
            return clock.parse_iso(value).astimezone(clock.UTC)
        if data_type in ("integer", "bigint"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if data_type == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError
        if data_type in LOOKUPS:
            return str(value)
        return str(value).casefold()
    except (ValueError, TypeError):
        raise CriteriaError("invalid value for the field's data type", api_name=api_name, value=value) from None


def _reader(api_name: str, data_type: str, status_of: Callable | None) -> Callable[[dict[str, Any]], Any]:
    """``rec -> value`` in the form :func:`_coerce` gives criteria values (``None``: empty)."""
    if api_name == "Status" and status_of is not None:
        return lambda rec: status_of(rec).casefold()
    if data_type == "datetime":
        # Instants in UTC on both sides: aware datetimes with one tzinfo compare
        # ten times faster than with two. Seeded records share a few thousand
        # date-time strings, so each is parsed once.
        parsed: dict[str, datetime] = {}

        def moment(rec: dict[str, Any]) -> datetime | None:
            raw = rec.get(api_name)
            if raw is None or raw == "":
                return None
            if raw in parsed:
                return parsed[raw]
            try:
                value = clock.parse_iso(raw).astimezone(clock.UTC)
            except (ValueError, TypeError, OverflowError):  # a raw value set with the admin test aid: no instant
                value = None
            parsed[raw] = value
            return value

        return moment

    def value(rec: dict[str, Any]) -> Any:
        raw = rec.get(api_name)
        if data_type in LOOKUPS and isinstance(raw, dict):
            raw = raw.get("id")
        if raw is None or raw == "":
            return None
        if data_type in ("integer", "bigint"):
            return int(raw)
        if data_type == "boolean":
            return bool(raw)
        if data_type in LOOKUPS:
            return str(raw)
        return str(raw).casefold()

    return value


def compile_criteria(
    module: str, node: Any, now: datetime, auto_complete: bool = False
) -> Callable[[dict[str, Any]], bool]:
    """Turn a criteria tree into a predicate over records; raises :class:`CriteriaError`.

    A node is a group ``{"group_operator": "and"|"or", "group": [nodes]}`` or a
    condition ``{"field": {"api_name": ...}, "comparator": ..., "value": ...}``
    (``"api_name"`` directly in the condition, as v2 wrote it, is accepted too).
    ``Status`` of ``Appointments__s`` is compared as the records API shows it at
    ``now`` (see the module docstring for the rest of the semantics).
    """
    status_of = status_reader(now, auto_complete) if module == "Appointments__s" else None
    return _compile(module, node, status_of)


def _compile(module: str, node: Any, status_of: Callable | None) -> Callable[[dict[str, Any]], bool]:
    if not isinstance(node, dict):
        raise CriteriaError("criteria should be a JSON object")
    if "group" in node or "group_operator" in node:
        op = node.get("group_operator")
        group = node.get("group")
        if not isinstance(op, str) or op.lower() not in ("and", "or"):
            raise CriteriaError("invalid group_operator", "GROUP_OPERATOR_NOT_SUPPORTED", group_operator=op, supported=["and", "or"])
        if not isinstance(group, list) or not group:
            raise CriteriaError("group should be a non-empty array", api_name="group")
        parts = [_compile(module, child, status_of) for child in group]
        if op.lower() == "and":
            return lambda rec: all(p(rec) for p in parts)
        return lambda rec: any(p(rec) for p in parts)
    field_ref = node.get("field")
    api_name = field_ref.get("api_name") if isinstance(field_ref, dict) else node.get("api_name")
    field = FIELD_INDEX[module].get(api_name) if isinstance(api_name, str) else None
    if field is None:
        raise CriteriaError("invalid field in criteria", api_name=api_name)
    comparator = node.get("comparator")
    dtype = field.data_type
    if not isinstance(comparator, str) or comparator not in COMPARATORS.get(dtype, frozenset()):
        raise CriteriaError(
            "the comparator is not supported for the field's data type", api_name=api_name, comparator=comparator,
            supported=sorted(COMPARATORS.get(dtype, frozenset())),
        )
    if "value" not in node:
        raise CriteriaError("value is missing in criteria", api_name=api_name)
    value = node["value"]
    get = _reader(api_name, dtype, status_of)

    if comparator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise CriteriaError("in/not_in need a non-empty array", api_name=api_name)
        wanted = {_coerce(v, dtype, api_name) for v in value}
        if comparator == "in":
            return lambda rec: get(rec) in wanted
        return lambda rec: get(rec) not in wanted
    if comparator in ("between", "not_between"):
        if not isinstance(value, list) or len(value) != 2:
            raise CriteriaError("between needs an array of two values", api_name=api_name)
        lo, hi = (_coerce(v, dtype, api_name) for v in value)
        if comparator == "between":
            return lambda rec: (v := get(rec)) is not None and lo <= v <= hi
        return lambda rec: (v := get(rec)) is None or not lo <= v <= hi
    if value == EMPTY:
        if comparator == "equal":
            return lambda rec: get(rec) is None
        if comparator == "not_equal":
            return lambda rec: get(rec) is not None
    target = _coerce(value, dtype, api_name)
    ops: dict[str, Callable[[Any], bool]] = {
        "equal": lambda v: v == target,
        "not_equal": lambda v: v != target,
        "greater_than": lambda v: v is not None and v > target,
        "greater_equal": lambda v: v is not None and v >= target,
        "less_than": lambda v: v is not None and v < target,
        "less_equal": lambda v: v is not None and v <= target,
        "starts_with": lambda v: v is not None and v.startswith(target),
        "ends_with": lambda v: v is not None and v.endswith(target),
        "contains": lambda v: v is not None and target in v,
        "not_contains": lambda v: v is None or target not in v,
    }
    test = ops[comparator]
    return lambda rec: test(get(rec))


# ----------------------------------------------------------------- result files
def csv_row_maker(
    module: str, columns: list[str], status_of: Callable[[dict[str, Any]], str] | None
) -> Callable[[dict[str, Any]], list[Any]]:
    """``rec -> row`` for ``["Id", *columns]``, in the values :mod:`csv` writes as Zoho does.

    ``None`` stays ``None`` (the writer leaves the cell empty) and numbers stay
    numbers; lookups become their id, booleans ``true``/``false``, and ``Status``
    of ``Appointments__s`` what ``status_of`` says.
    """
    index = FIELD_INDEX[module]
    keys = ["id", *columns]
    lookups = [i for i, name in enumerate(keys) if index[name].data_type in LOOKUPS]
    booleans = [i for i, name in enumerate(keys) if index[name].data_type == "boolean"]
    status_at = keys.index("Status") if status_of is not None and "Status" in columns else None

    def row_of(rec: dict[str, Any]) -> list[Any]:
        row = [rec.get(k) for k in keys]
        for i in lookups:
            v = row[i]
            if isinstance(v, dict):
                row[i] = v.get("id", "")
        for i in booleans:
            v = row[i]
            if isinstance(v, bool):
                row[i] = "true" if v else "false"
        if status_at is not None:
            row[status_at] = status_of(rec)
        return row

    return row_of


def csv_text(rows: Iterable[list[Any]], width: int) -> str:
    """``rows`` of ``width`` cells as :func:`csv.writer` writes them (minimal quoting, ``\\n``).

    About twice as fast as ``writerows``: a row is joined directly unless a cell
    needs quoting, which shows in the joined line as a quote, a line break or one
    comma too many; those rows go through :mod:`csv`. ``None`` is an empty cell.
    """
    out: list[str] = []
    separators = width - 1
    quoted = io.StringIO()
    writer = csv.writer(quoted, lineterminator="\n")
    for row in rows:
        line = ",".join(["" if v is None else v if v.__class__ is str else str(v) for v in row])
        if not line or '"' in line or "\n" in line or "\r" in line or line.count(",") != separators:
            writer.writerow(row)
            line = quoted.getvalue()[:-1]
            quoted.seek(0)
            quoted.truncate()
        out.append(line)
    out.append("")
    return "\n".join(out)


def write_csv_zip(
    job_id: str,
    module: str,
    fields: list[str],
    records: list[dict[str, Any]],
    now: datetime,
    auto_complete: bool = False,
) -> bytes:
    """``{job_id}.zip`` holding ``{job_id}.csv``: header ``Id`` + ``fields``, one row per record.

    Written ``CSV_CHUNK`` rows at a time straight into the deflate stream.
    """
    columns = [f for f in fields if f != "id"]
    header = ["Id", *columns]
    status_of = status_reader(now, auto_complete) if module == "Appointments__s" else None
    row_of = csv_row_maker(module, columns, status_of)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(f"{job_id}.csv", "w", force_zip64=True) as raw:
            raw.write(csv_text([header], len(header)).encode("utf-8"))
            for start in range(0, len(records), CSV_CHUNK):
                chunk = map(row_of, records[start : start + CSV_CHUNK])
                raw.write(csv_text(chunk, len(header)).encode("utf-8"))
    return buf.getvalue()


def _ics_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r\n", "\\n").replace("\n", "\\n")


def _ics_time(value: str) -> str:
    try:
        return clock.parse_iso(value).astimezone(clock.UTC).strftime("%Y%m%dT%H%M%SZ")
    except (ValueError, TypeError, OverflowError):  # a raw value set with the admin test aid: written as it is
        return _ics_text(str(value))


def _fold(line: str) -> str:
    out, data = [], line.encode()
    while len(data) > 75:
        cut = 75 if not out else 74
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
            cut -= 1
        out.append(data[:cut].decode())
        data = data[cut:]
    out.append(data.decode())
    return "\r\n ".join(out)


def write_ics_zip(job_id: str, records: list[dict[str, Any]]) -> bytes:
    """``{job_id}.zip`` holding ``{job_id}.ics``: one ``VEVENT`` per Events record (RFC 5545)."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Zoho Sandbox//CRM Bulk Read//EN", "CALSCALE:GREGORIAN"]
    for rec in records:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{rec['id']}",
            f"DTSTAMP:{_ics_time(rec['Modified_Time'])}",
            f"DTSTART:{_ics_time(rec['Start_DateTime'])}",
            f"DTEND:{_ics_time(rec['End_DateTime'])}",
            _fold(f"SUMMARY:{_ics_text(rec.get('Event_Title') or '')}"),
            _fold(f"DESCRIPTION:{_ics_text(rec.get('Description') or '')}"),
            _fold(f"LOCATION:{_ics_text(rec.get('Venue') or '')}"),
            f"CREATED:{_ics_time(rec['Created_Time'])}",
            f"LAST-MODIFIED:{_ics_time(rec['Modified_Time'])}",
            _fold(f"X-ZOHO-BOOKING-ID:{_ics_text(rec.get('Booking_Id') or '')}"),
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{job_id}.ics", "\r\n".join(lines) + "\r\n")
    return buf.getvalue()


# ------------------------------------------------------------------------- jobs
def _page_token(offset: int, job: BulkJob) -> str:
    raw = json.dumps({"o": offset, "p": job.page + 1, "m": job.module, "e": clock.timestamp() + 86400})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_page_token(token: Any) -> tuple[int, int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4)))
        if data["e"] < clock.timestamp():
            raise CrmError("INVALID_DATA", 400, "the page_token has expired", {"api_name": "page_token"})
        offset, page, module = int(data["o"]), int(data["p"]), str(data["m"])
        if offset < 0 or page < 1:
            raise ValueError
        return offset, page, module
    except (ValueError, KeyError, TypeError):
        raise CrmError("INVALID_DATA", 400, "invalid page_token", {"api_name": "page_token"}) from None


def check_query(module: str, query: dict[str, Any], auto_complete: bool = False) -> None:
    """Refuse, when the job is created, a query the job could not run (crm-oas v8.0 ``bulk_read.json``, 400):
    ``fields`` not an array of strings (``INVALID_DATA``), a field the module does not have
    (``FIELD_NOT_SUPPORTED``, ``details {api_name, module}``), criteria that break the rules
    (``INVALID_CRITERIA`` / ``GROUP_OPERATOR_NOT_SUPPORTED``, see :class:`CriteriaError`)."""
    fields = query.get("fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise CrmError("INVALID_DATA", 400, "fields should be an array of field API names", {"api_name": "fields"})
    unknown = [f for f in fields if f not in FIELD_INDEX[module]]
    if unknown:
        raise CrmError("FIELD_NOT_SUPPORTED", 400, f"the field {unknown[0]} is not supported in {module}", {"api_name": unknown[0], "module": module})
    if query.get("criteria"):
        try:
            compile_criteria(module, query["criteria"], clock.now(), auto_complete)
        except CriteriaError as exc:
            raise CrmError(exc.code, 400, exc.message, exc.details) from None


def _fail(job: BulkJob, message: str, details: dict[str, Any], code: str = "INVALID_DATA") -> None:
    job.error = {"status": "error", "code": code, "message": message, "details": details}


def process(job: BulkJob, records: list[dict[str, Any]], config_page_size: int, auto_complete: bool = False) -> None:
    """Evaluate the job against ``records`` and build its result (runs in a worker thread).

    ``auto_complete``: ended ``Scheduled`` appointments show as ``Completed`` (the
    org does not ask users to mark them), as in the records API.
    """
    now = clock.now()
    q = job.query
    if job.module not in MODULES:
        _fail(job, "the module name given seems to be invalid", {"api_name": "module"}, "INVALID_MODULE")
        return
    fields = q.get("fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        _fail(job, "fields should be an array of field API names", {"api_name": "fields"})
        return
    unknown = [f for f in fields if f not in FIELD_INDEX[job.module]]
    if unknown:
        _fail(job, "invalid field", {"api_name": unknown[0]})
        return
    try:
        predicate = compile_criteria(job.module, q["criteria"], now, auto_complete) if q.get("criteria") else None
    except CriteriaError as exc:
        _fail(job, exc.message, exc.details)
        return
    selected = [r for r in records if predicate(r)] if predicate else list(records)
    selected.sort(key=lambda r: int(r["id"]))
    page_size = min(config_page_size, ICS_PAGE_LIMIT) if job.file_type == "ics" else config_page_size
    chunk = selected[job.offset : job.offset + page_size]
    more = job.offset + page_size < len(selected)
    if job.file_type == "ics":
        job.zip_bytes = write_ics_zip(job.id, chunk)
    else:
        columns = fields or [f.api_name for f in MODULES[job.module]]
        job.zip_bytes = write_csv_zip(job.id, job.module, columns, chunk, now, auto_complete)
    job.result = {
        "page": job.page,
        "per_page": page_size,
        "count": len(chunk),
        "download_url": f"/crm/bulk/{{version}}/read/{job.id}/result",
        "more_records": more,
    }
    if more:
        job.result["next_page_token"] = _page_token(job.offset + page_size, job)


def job_json(job: BulkJob, version: str, now: float, delay: float, done: bool) -> dict[str, Any]:
    """The job as ``GET .../read/{job_id}`` shows it."""
    if done:
        state = "FAILURE" if job.error else "COMPLETED"
    else:
        elapsed = now - job.created_at
        state = "ADDED" if elapsed < delay / 3 else "QUEUED" if elapsed < 2 * delay / 3 else "IN PROGRESS"
    query: dict[str, Any] = {
        "module": {"id": MODULE_IDS.get(job.module, ""), "api_name": job.module},
        "page": job.page,
    }
    for key in ("fields", "criteria", "cvid"):
        if job.query.get(key):
            query[key] = job.query[key]
    body: dict[str, Any] = {
        "id": job.id,
        "operation": "read",
        "state": state,
        "query": query,
        "created_by": {"id": API_USER["id"], "name": API_USER["name"]},
        "created_time": job.created_time,
        "file_type": job.file_type,
    }
    if job.callback:
        body["callback"] = job.callback
    if state == "COMPLETED" and job.result:
        result = dict(job.result)
        result["download_url"] = result["download_url"].replace("{version}", version)
        body["result"] = result
    elif state == "FAILURE":
        body["result"] = {"page": job.page, "error_message": job.error}
    return body


async def run_job(app: Any, job: BulkJob, version: str) -> None:
    """Wait ``bulk_delay``, build the result off the event loop, then POST the callback.

    A job always ends: a fault while building the result fails it with
    ``INTERNAL_ERROR`` rather than leaving it ``IN PROGRESS`` for ever.
    """
    state: SandboxState = app.state.sandbox
    await asyncio.sleep(state.config.bulk_delay)
    store = state.module_store(job.module) if job.module in MODULES else {}
    snapshot = list(store.values())
    if state.config.bulk_job_failure_rate and state.rng.random() < state.config.bulk_job_failure_rate:
        _fail(job, "Internal Server Error", {}, "INTERNAL_ERROR")  # fault injection (config bulk_job_failure_rate)
    else:
        try:
            await asyncio.to_thread(process, job, snapshot, state.config.bulk_page_size, auto_completes(state))
        except Exception:  # noqa: BLE001 - any fault of ours must still end the job
            log.exception("bulk read job %s failed", job.id)
            job.result = job.zip_bytes = None
            _fail(job, "Internal Server Error", {}, "INTERNAL_ERROR")
    job.finished_at = time.time()
    if job.callback and job.callback.get("url"):
        body = {"data": [job_json(job, version, time.time(), state.config.bulk_delay, True)]}
        app.state.outbox.send("bulk_callback", job.callback["url"], body)
        job.callback_sent = True
    app.state.bulk_tasks.pop(job.id, None)


# ----------------------------------------------------------------------- routes
@router.post("/crm/bulk/{version}/read", status_code=201)
async def create_job(version: str, request: Request) -> JSONResponse:
    """Create a Bulk Read job."""
    check_version(version)
    info = require_crm(request, "ZohoCRM.bulk.read")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise CrmError("MEDIA_TYPE_NOT_SUPPORTED", 415, "Unsupported Media Type: send application/json", {"expected_content_type": "application/json"})
    state: SandboxState = request.app.state.sandbox
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "query"})
    query = dict(body["query"])
    module = query.get("module")
    module = module.get("api_name") if isinstance(module, dict) else module
    if not module or not isinstance(module, str):
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "module"})
    if module not in MODULES:
        raise CrmError("MODULE_NOT_SUPPORTED", 400, "the module is not supported for Bulk Read", {"api_name": "module", "module": module})
    require_crm(request, f"ZohoCRM.modules.{module}.READ")
    file_type = body.get("file_type", "csv")
    if file_type not in ("csv", "ics"):
        raise CrmError("INVALID_DATA", 400, "file_type should be csv or ics", {"api_name": "file_type"})
    if file_type == "ics" and (module != "Events" or query.get("fields")):
        raise CrmError("INVALID_DATA", 400, "ics is only for Events, without fields", {"api_name": "file_type"})
    callback = body.get("callback")
    if callback is not None:
        if not isinstance(callback, dict) or not str(callback.get("url", "")).startswith(("http://", "https://")):
            raise CrmError("INVALID_CALLBACK_URL", 400, "invalid callback url", {"api_name": "url"})
        if str(callback.get("method", "post")).lower() != "post":
            raise CrmError("INVALID_CALLBACK_METHOD", 400, "callback method should be post", {"api_name": "method"})
    page = query.get("page", 1)
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise CrmError("INVALID_DATA", 400, "invalid page", {"api_name": "page"})
    offset = (page - 1) * (min(state.config.bulk_page_size, ICS_PAGE_LIMIT) if file_type == "ics" else state.config.bulk_page_size)
    if query.get("page_token"):
        offset, page, token_module = _read_page_token(query["page_token"])
        if token_module != module:
            raise CrmError("INVALID_DATA", 400, "the page_token belongs to another module", {"api_name": "page_token"})
    check_query(module, query, auto_completes(state))
    query["module"] = module
    job = BulkJob(
        id=state.new_job_id(),
        module=module,
        query=query,
        file_type=file_type,
        created_at=time.time(),
        created_time=clock.to_crm(clock.now(), state.config.org_time_zone),
        callback=callback,
        token=request.headers.get("authorization", ""),
        offset=offset,
        page=page,
    )
    _drop_expired_results(state)
    state.jobs[job.id] = job
    state.stats.bulk_jobs_created += 1
    request.app.state.bulk_tasks[job.id] = asyncio.create_task(run_job(request.app, job, version))
    return JSONResponse(
        {
            "data": [
                {
                    "status": "success",
                    "code": "ADDED_SUCCESSFULLY",
                    "message": "Added successfully.",
                    "details": {
                        "id": job.id,
                        "operation": "read",
                        "state": "ADDED",
                        "created_by": {"id": API_USER["id"], "name": API_USER["name"]},
                        "created_time": job.created_time,
                    },
                }
            ],
            "info": {},
        },
        status_code=201,
    )


def _drop_expired_results(state: SandboxState) -> None:
    """Free the zips of results older than ``bulk_result_ttl`` (they answer "expired" anyway)."""
    oldest = time.time() - state.config.bulk_result_ttl
    for job in state.jobs.values():
        if job.zip_bytes is not None and job.finished_at is not None and job.finished_at < oldest:
            job.zip_bytes = None


def _job(request: Request, job_id: str, status_code: int) -> BulkJob:
    """The job ``job_id``; ``RESOURCE_NOT_FOUND`` (``details {resource}``) with ``status_code``
    when there is none (crm-oas v8.0: 404 for the status, 400 for the result)."""
    job = request.app.state.sandbox.jobs.get(job_id)
    if job is None:
        raise CrmError("RESOURCE_NOT_FOUND", status_code, "the requested resource was not found", {"resource": job_id})
    return job


@router.get("/crm/bulk/{version}/read/{job_id}")
async def job_status(version: str, job_id: str, request: Request) -> JSONResponse:
    """The job's state (and result once it has ended)."""
    check_version(version)
    require_crm(request, "ZohoCRM.bulk.read")
    job = _job(request, job_id, 404)
    state: SandboxState = request.app.state.sandbox
    done = job.finished_at is not None
    return JSONResponse({"data": [job_json(job, version, time.time(), state.config.bulk_delay, done)]})


@router.get("/crm/bulk/{version}/read/{job_id}/result")
async def job_result(version: str, job_id: str, request: Request) -> Response:
    """The job's zip file."""
    check_version(version)
    require_crm(request, "ZohoCRM.bulk.read")
    state: SandboxState = request.app.state.sandbox
    job = _job(request, job_id, 400)
    if job.finished_at is None:
        raise CrmError("INVALID_DATA", 400, "the job has not completed", {"api_name": "job_id", "state": "not completed"})
    if job.error:
        raise CrmError("INVALID_DATA", 400, "the job failed: it has no result", {"api_name": "job_id", "state": "FAILURE"})
    now = time.time()
    if now > job.finished_at + state.config.bulk_result_ttl or job.zip_bytes is None:
        raise CrmError("INVALID_DATA", 400, "the result of this job has expired", {"api_name": "job_id"})
    while state.downloads and state.downloads[0] < now - 60:
        state.downloads.popleft()
    if len(state.downloads) >= state.config.bulk_downloads_per_minute:
        retry_after = max(1, int(state.downloads[0] + 60 - now) + 1)
        raise CrmError("TOO_MANY_REQUESTS", 429, details={"limit": state.config.bulk_downloads_per_minute}, headers={"Retry-After": str(retry_after)})
    state.downloads.append(now)
    state.stats.bulk_downloads += 1
    return Response(
        content=job.zip_bytes,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'},
    )
