"""Tasks of the appointment sync: read each side, apply planned actions.

Reads and writes go through :mod:`zoho`; transient errors are retried by Prefect
(:mod:`tasks.retry`), one task run per Zoho call (a read page, one booking, one CRM
batch), so a retry repeats that call only. Applying never raises for a record Zoho
refuses: the outcome carries Zoho's code and message and the run goes on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.zoho_oauth import ZohoOAuth
from sync.bulk_load import parse_datetime, parse_int
from sync.engine import NO_SHOW_NOTE, Action, Kind
from zoho.clients import ZohoClient
from zoho.errors import BookingsError, DependentFieldError, ZohoError, crm_error, is_transient
from zoho.models import AppointmentUpdate, Booking
from zoho.timefmt import from_bookings, to_bookings

from .retry import ZOHO_RETRIES, retry_transient


@dataclass
class Outcome:
    """What became of one action: ``ok``, Zoho's ``code`` and ``message``, and the
    target's new state when known (``start``: UTC, ``status``: raw, ``modified``).
    ``sent``: False when the action was refused before any call."""

    action: Action
    ok: bool
    code: str | None = None
    message: str | None = None
    transient: bool = False
    start: datetime | None = None
    status: str | None = None
    modified: datetime | None = None
    sent: bool = True


def booking_row(b: Booking) -> dict[str, Any]:
    """A ``bookings`` table row from a Bookings appointment (times to UTC)."""
    start = from_bookings(b.start_time, b.time_zone)
    end = from_bookings(b.end_time, b.time_zone) if b.end_time else None
    return {
        "booking_id": b.booking_id,
        "start_time": start.astimezone(timezone.utc),
        "end_time": end.astimezone(timezone.utc) if end else None,
        "status": b.status.upper(),
        "time_zone": b.time_zone,
        "staff_id": b.staff_id,
        "service_id": b.service_id,
    }


def crm_row(record: dict[str, Any], booking_field: str) -> dict[str, Any]:
    """A ``crm_appointments`` row from a records-API ``Appointments__s`` record."""
    def dt(name: str) -> datetime | None:
        value = record.get(name)
        return parse_datetime(value) if isinstance(value, str) else None

    duration = record.get("Duration")
    return {
        "id": str(record["id"]),
        "booking_id": record.get(booking_field) or None,
        "start_time": dt("Appointment_Start_Time"),
        "end_time": dt("Appointment_End_Time"),
        "duration": parse_int(str(duration)) if duration not in (None, "") else None,
        "status": record.get("Status"),
        "modified_time": dt("Modified_Time"),
        "job_id": None,
    }


CRM_FIELDS = ["Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time"]


# Reads are one task run per call (a page, or one booking), each retried on its own:
# a read of n pages as one task would start again from page 1 on every transient
# error, and with a few percent of calls failing a long read would never finish
# (0.83 ** 30: under 1 % of 30-page reads get through at the 17 % fault rate of
# benchmarks/soak.py). The calls of one read share one block load and one client.


def _page_name() -> str:
    from prefect.runtime import task_run

    return f"{task_run.task_name}-{task_run.parameters.get('page', 1)}"


@task(name="fetch-bookings-page", task_run_name=_page_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def fetch_bookings_page(oauth_block: str, start: datetime, end: datetime, time_zone: str, page: int, per_page: int, zoho: ZohoClient | None = None) -> tuple[list[dict[str, Any]], bool]:
    """One ``fetchappointment`` page: ``(rows, another page exists)``. ``zoho``: a client to share."""
    if zoho is None:
        async with (await ZohoOAuth.aload(oauth_block)).get_client() as own:
            return await fetch_bookings_page.fn(oauth_block, start, end, time_zone, page, per_page, own)
    result = await zoho.bookings.fetch_appointments(start, end, time_zone, page=page, per_page=per_page)
    return [booking_row(b) for b in result.response], bool(result.next_page_available and result.response)


async def fetch_bookings(oauth_block: str, start: datetime, end: datetime, time_zone: str, per_page: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Every booking starting in [``start``, ``end``]: ``(rows, calls)``; a ``fetch-bookings-page`` task run per page."""
    block = await ZohoOAuth.aload(oauth_block)
    rows, page = [], 1
    async with block.get_client() as zoho:
        while True:
            found, more = await fetch_bookings_page(oauth_block, start, end, time_zone, page, per_page, zoho)
            rows.extend(found)
            if not more:
                return rows, page
            page += 1


@task(name="get-booking", task_run_name="get-booking-{booking_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def get_booking(oauth_block: str, booking_id: str, zoho: ZohoClient | None = None) -> dict[str, Any] | None:
    """``getappointment``: the booking's row, or None when Zoho refuses it (not found, not allowed)."""
    if zoho is None:
        async with (await ZohoOAuth.aload(oauth_block)).get_client() as own:
            return await get_booking.fn(oauth_block, booking_id, own)
    try:
        return booking_row(await zoho.bookings.get_appointment(booking_id))
    except ZohoError as exc:
        if is_transient(exc):
            raise
        return None


async def get_bookings(oauth_block: str, booking_ids: list[str], concurrency: int = 5) -> tuple[list[dict[str, Any]], list[str]]:
    """``getappointment`` for each id (``concurrency`` at a time, a ``get-booking`` task run each):
    ``(rows, missing ids)``; an id still failing after its retries raises."""
    if not booking_ids:
        return [], []
    block = await ZohoOAuth.aload(oauth_block)
    gate = asyncio.Semaphore(concurrency)
    async with block.get_client() as zoho:
        async def one(bid: str) -> dict[str, Any] | None:
            async with gate:
                return await get_booking(oauth_block, bid, zoho)
        found = await asyncio.gather(*(one(b) for b in booking_ids))
    return [r for r in found if r is not None], [b for b, r in zip(booking_ids, found) if r is None]


@task(name="read-crm-page", task_run_name=_page_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def read_crm_page(
    oauth_block: str, module: str, fields: list[str], page: int, page_token: str | None, since: datetime | None, ids: list[str] | None, zoho: ZohoClient | None = None
) -> tuple[list[dict[str, Any]], bool, str | None]:
    """One ``GET /crm/v7/{module}`` page (200 records): ``(records, more_records, next_page_token)``."""
    if zoho is None:
        async with (await ZohoOAuth.aload(oauth_block)).get_client() as own:
            return await read_crm_page.fn(oauth_block, module, fields, page, page_token, since, ids, own)
    result = await zoho.crm.get_records(module, fields, page=page, per_page=200, page_token=page_token, modified_since=since, ids=ids)
    return result.data, result.more_records, result.next_page_token


async def read_crm_changes(oauth_block: str, module: str, booking_field: str, since: datetime | None = None, ids: list[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Records modified after ``since`` (``If-Modified-Since``), or the records ``ids``: ``(rows, calls)``;
    a ``read-crm-page`` task run per page (past 2,000 records by ``page_token``)."""
    block = await ZohoOAuth.aload(oauth_block)
    rows, calls = [], 0
    fields = [*CRM_FIELDS, booking_field]
    async with block.get_client() as zoho:
        chunks = [ids[i : i + 100] for i in range(0, len(ids), 100)] if ids else [None]
        for chunk in chunks:
            page, token = 1, None
            while True:
                data, more, next_token = await read_crm_page(oauth_block, module, fields, page, token, since, chunk, zoho)
                calls += 1
                rows.extend(crm_row(r, booking_field) for r in data)
                if not more:
                    break
                if page * 200 >= 2000 or token:
                    token = next_token
                page += 1
    return rows, calls


def crm_update(action: Action) -> AppointmentUpdate:
    """The ``PUT Appointments__s`` record for an action (seeds 002/004)."""
    if action.kind is Kind.RESCHEDULE:
        return AppointmentUpdate.reschedule(action.crm_id, action.start, reason="By Customer")
    if action.kind is Kind.CANCEL:
        return AppointmentUpdate.cancel(action.crm_id, note=action.note)
    if action.kind is Kind.COMPLETE:
        return AppointmentUpdate.complete(action.crm_id)
    raise ValueError(f"CRM has no {action.kind.value}: a no-show is written as a cancel with the note {NO_SHOW_NOTE!r}")


def _crm_batch_name() -> str:
    from prefect.runtime import task_run

    actions = task_run.parameters.get("actions") or []
    return f"put-{task_run.parameters.get('module', 'crm')}-{len(actions)}-records"


def _bookings_action_name() -> str:
    from prefect.runtime import task_run

    action = task_run.parameters.get("action")
    return f"bookings-{action.kind.value}-{action.booking_id}" if action is not None else "bookings-action"


@task(name="apply-crm-batch", task_run_name=_crm_batch_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def apply_crm_batch(oauth_block: str, module: str, actions: list[Action]) -> list[Outcome]:
    """One ``PUT /crm/v7/{module}`` of up to 100 actions; per-record outcomes in order.

    ``DEPENDENT_FIELD_UNCHANGED`` (the record is already at that time: a resend
    after a lost answer) counts as success.
    """
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        results = await zoho.crm.update_records(module, [crm_update(a) for a in actions])
    outcomes = []
    for action, result in zip(actions, results):
        if result.ok:
            modified = result.details.get("Modified_Time")
            outcomes.append(Outcome(action, True, result.code, result.message, modified=parse_datetime(modified) if isinstance(modified, str) else None))
            continue
        error = crm_error(result.model_dump(), None, f"PUT /crm/v7/{module}")
        if isinstance(error, DependentFieldError) and error.code == "DEPENDENT_FIELD_UNCHANGED":
            outcomes.append(Outcome(action, True, error.code, "already at that time"))
        else:
            outcomes.append(Outcome(action, False, error.code, error.message, transient=error.transient))
    return outcomes


@task(name="apply-bookings-action", task_run_name=_bookings_action_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def apply_bookings_action(oauth_block: str, action: Action, zoho: ZohoClient | None = None) -> Outcome:
    """One Bookings call: ``rescheduleappointment`` (start in the booking's time zone) or
    ``updateappointment`` (``cancel``, ``completed``, ``noshow``). A refusal is an outcome, not an error.

    A refusal is checked with one ``getappointment``: when the booking already shows
    what the action asks (the write was made before and its outcome never logged: a
    worker killed after the call, or an answer lost after Zoho applied it), the
    outcome is a success with code ``ALREADY_DONE``, as CRM's
    ``DEPENDENT_FIELD_UNCHANGED`` is in :func:`apply_crm_batch`.

    ``zoho``: a client to share (one block load and one connection pool for a whole
    run's calls); without it the task opens its own."""
    if action.kind is Kind.RESCHEDULE and from_bookings(to_bookings(action.start, action.time_zone), action.time_zone) != action.start:
        # the second pass of a daylight-saving fold: Bookings would read the wall time as the first one
        text = to_bookings(action.start, action.time_zone)
        return Outcome(action, False, "AMBIGUOUS_TIME", f"{action.start.isoformat()} is the second {text} in {action.time_zone}; Bookings can only write the first", sent=False)
    if zoho is None:
        async with (await ZohoOAuth.aload(oauth_block)).get_client() as own:
            return await apply_bookings_action.fn(oauth_block, action, own)
    try:
        if action.kind is Kind.RESCHEDULE:
            booking = await zoho.bookings.reschedule_appointment(action.booking_id, start=action.start, time_zone=action.time_zone)
        else:
            verb = {Kind.CANCEL: "cancel", Kind.COMPLETE: "completed", Kind.NO_SHOW: "noshow"}[action.kind]
            booking = await zoho.bookings.update_appointment(action.booking_id, verb)  # type: ignore[arg-type]
    except ZohoError as exc:
        if is_transient(exc):
            raise
        done = await _already_done(zoho, action) if isinstance(exc, BookingsError) else None
        if done is not None:
            return Outcome(action, True, "ALREADY_DONE", f"the booking already shows it ({exc.message})", start=done["start_time"], status=done["status"])
        return Outcome(action, False, exc.code, exc.message)
    row = booking_row(booking)
    return Outcome(action, True, "SUCCESS", None, start=row["start_time"], status=row["status"])


#: The Bookings status each status action leaves.
_DONE_STATUS = {Kind.CANCEL: "CANCEL", Kind.COMPLETE: "COMPLETED", Kind.NO_SHOW: "NO_SHOW"}


async def _already_done(zoho: ZohoClient, action: Action) -> dict[str, Any] | None:
    """The booking's row if it already shows what ``action`` asks (same start and not
    finished, or the action's status), else None (also when it cannot be read)."""
    try:
        row = booking_row(await zoho.bookings.get_appointment(action.booking_id))
    except ZohoError as exc:
        if is_transient(exc):
            raise
        return None
    if action.kind is Kind.RESCHEDULE:
        done = row["start_time"] == action.start and row["status"] in ("UPCOMING", "ONGOING", "PENDING")
    else:
        done = row["status"] == _DONE_STATUS[action.kind]
    return row if done else None


async def apply_bookings(oauth_block: str, actions: Iterable[Action], concurrency: int) -> list[Outcome]:
    """Apply Bookings actions, ``concurrency`` calls at a time, over one shared client; a task
    that still fails after its retries becomes a failed outcome."""
    actions = list(actions)
    if not actions:
        return []
    gate = asyncio.Semaphore(concurrency)
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:

        async def one(action: Action) -> Outcome:
            async with gate:
                try:
                    return await apply_bookings_action(oauth_block, action, zoho)
                except ZohoError as exc:
                    return Outcome(action, False, exc.code, exc.message, transient=exc.transient)
                except Exception as exc:  # noqa: BLE001 - e.g. a connection error after the retries: recorded, the rest go on
                    return Outcome(action, False, type(exc).__name__, str(exc), transient=True)

        return list(await asyncio.gather(*(one(a) for a in actions)))


def end_after(start: datetime, old_start: datetime | None, old_end: datetime | None, duration: int | None) -> datetime | None:
    """The end after moving ``old_start`` -> ``start`` (same length)."""
    if duration:
        return start + timedelta(minutes=duration)
    if old_start and old_end:
        return start + (old_end - old_start)
    return None
