"""Tasks of the appointment sync: one Zoho call each, and the helpers that drive them.

A task is one Zoho call (a page of a read, one booking, one CRM batch, one Bookings
write) with its retries and a name for the UI: transient errors are retried by
Prefect (:mod:`tasks.retry`), so a retry repeats that call only. Reads are one task
run per page, paged by :mod:`zoho.paging`: a read of n pages as one task would start
again from page 1 on every transient error, and with a few percent of calls failing
a long read would never finish (0.83 ** 30: under 1 % of 30-page reads get through
at the 17 % fault rate of ``benchmarks/soak.py``).

The helpers (:func:`read_crm_changes`, :func:`fetch_bookings`, :func:`get_bookings`,
:func:`apply_bookings`) run the tasks of one read or one set of writes inside
:func:`shared_client`: one block load and one connection pool for all their calls;
a task started outside one opens its own client. What a record or booking means
(rows, payloads, rules) is :mod:`sync.modules` and :mod:`sync.bookings`. Applying
never raises for a record Zoho refuses: the :class:`~sync.outcomes.Outcome`
carries Zoho's code and message and the run goes on.

Bookings calls across workers: with ``calls_per_second`` > 0 the helpers pass each
Bookings call (retries included) through Prefect's :func:`~prefect.concurrency.asyncio.rate_limit`
on the global concurrency limit ``zoho-bookings-rate-<oauth_block>`` (slot decay =
the rate; created on first use by :func:`blocks.limits.ensure_limit`), so N workers share one
rate; ``concurrency`` still caps the calls in flight per process.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, AsyncIterator, Iterable, Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import rate_limit
from prefect.runtime import task_run

from blocks.limits import ensure_limit
from blocks.zoho_oauth import ZohoOAuth
from sync import bookings
from sync.bookings import booking_row
from sync.bulk_load import parse_datetime
from sync.engine import Action, Kind
from sync.modules import CrmModule, InvalidRecord, crm_module
from sync.outcomes import Outcome, after_check, refused
from zoho.clients import ZohoClient, chunk_ids
from zoho.errors import ApiLimitError, BookingsError, BudgetReachedError, DependentFieldError, InvalidBookingError, ZohoError, crm_error, is_transient
from zoho.models import Booking, BookingsPage, RecordResult, RecordsPage, RejectedBooking
from zoho.paging import BookingsPaging, CrmRecordsPaging
from zoho.timefmt import to_crm
from zoho.usage import Family, current_meter
from zoho.usage import Kind as CallKind

from .retry import ZOHO_RETRIES, retry_transient

#: Record ids per ``GET /crm/v7/{module}?ids=`` call (Zoho's limit).
CRM_IDS_PER_CALL = 100

#: The Bookings rate of the current context: ``(limit name, calls per second)``; None: no limit.
_bookings_rate: ContextVar[tuple[str, float] | None] = ContextVar("appt_sync_bookings_rate", default=None)

#: Clients opened by :func:`shared_client` in the current context, by ``ZohoOAuth`` block name.
_shared: ContextVar[Mapping[str, ZohoClient]] = ContextVar("appt_sync_shared_zoho_clients", default={})


@asynccontextmanager
async def shared_client(oauth_block: str) -> AsyncIterator[ZohoClient]:
    """A client of the ``ZohoOAuth`` block ``oauth_block`` that every task started in this
    context uses (:func:`zoho_client`): one block load and one connection pool for a
    whole read or set of writes. Nested use for the same block reuses the outer one."""
    clients = _shared.get()
    if oauth_block in clients:
        yield clients[oauth_block]
        return
    async with (await ZohoOAuth.aload(oauth_block)).get_client() as zoho:
        token = _shared.set({**clients, oauth_block: zoho})
        try:
            yield zoho
        finally:
            _shared.reset(token)


def fits(family: Family, kind: CallKind, cost: int = 1) -> bool:
    """Whether the run's API budget (:class:`zoho.usage.Meter` of the context) lets one more call
    of ``cost`` units through; True without a meter. Asked before a task is started, so a
    call the budget refuses is skipped, not a failed task run."""
    meter = current_meter()
    return meter is None or meter.allows(family, kind, cost)


#: Errors that mean "not now, the day's allowance is spent": the work waits, it is not a failure of the record.
NOT_NOW = (ApiLimitError, BudgetReachedError)


def bookings_rate_name(oauth_block: str) -> str:
    """The global concurrency limit (with slot decay) pacing the Bookings calls of ``oauth_block``."""
    return f"zoho-bookings-rate-{oauth_block}"


@asynccontextmanager
async def bookings_rate(oauth_block: str, calls_per_second: float) -> AsyncIterator[None]:
    """Bookings tasks started in this context wait their turn at ``calls_per_second`` across all
    workers (:func:`bookings_turn`); 0: no limit, no Prefect API call. A nested use keeps the outer rate."""
    if calls_per_second <= 0 or _bookings_rate.get() is not None:
        yield
        return
    name = bookings_rate_name(oauth_block)
    await ensure_limit(name, max(1, math.ceil(calls_per_second)), calls_per_second)
    token = _bookings_rate.set((name, calls_per_second))
    try:
        yield
    finally:
        _bookings_rate.reset(token)


async def bookings_turn() -> None:
    """Wait for a slot of the Bookings rate limit of the current context (one Prefect API call), if any."""
    rate = _bookings_rate.get()
    if rate is not None:
        await rate_limit(rate[0], occupy=1, strict=True)


@asynccontextmanager
async def zoho_client(oauth_block: str) -> AsyncIterator[ZohoClient]:
    """The :func:`shared_client` of ``oauth_block`` when the caller opened one, else a client of its own for this call."""
    shared = _shared.get().get(oauth_block)
    if shared is not None:
        yield shared
        return
    async with (await ZohoOAuth.aload(oauth_block)).get_client() as zoho:
        yield zoho


def _page_name() -> str:
    return f"{task_run.task_name}-{task_run.parameters.get('page', 1)}"


def _crm_batch_name() -> str:
    actions = task_run.parameters.get("actions") or []
    module = task_run.parameters.get("module", "crm")
    return f"put-{getattr(module, 'api_name', module)}-{len(actions)}-records"


def _bookings_action_name() -> str:
    action = task_run.parameters.get("action")
    return f"bookings-{action.kind.value}-{action.booking_id}" if action is not None else "bookings-action"


# ------------------------------------------------------------------ reads
@task(name="fetch-bookings-page", task_run_name=_page_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def fetch_bookings_page(oauth_block: str, start: datetime, end: datetime, time_zone: str, page: int, per_page: int) -> BookingsPage:
    """One ``fetchappointment`` page: bookings starting in [``start``, ``end``] (aware; sent as wall time in ``time_zone``)."""
    await bookings_turn()
    async with zoho_client(oauth_block) as zoho:
        return await zoho.bookings.fetch_appointments(start, end, time_zone, page=page, per_page=per_page)


async def fetch_bookings(
    oauth_block: str, start: datetime, end: datetime, time_zone: str, per_page: int = 50, calls_per_second: float = 0.0, max_pages: int | None = None
) -> tuple[list[dict[str, Any]], int, bool, list[RejectedBooking]]:
    """Every booking starting in [``start``, ``end``] as ``bookings`` rows (:func:`sync.bookings.booking_row`):
    ``(rows, calls, complete, rejected)``; a ``fetch-bookings-page`` task run per page of ``per_page``
    (default 50: paging is not documented, a public client caps it at 50; an HTTP 204 is an empty
    last page) (:class:`zoho.paging.BookingsPaging`), at most ``calls_per_second`` across workers
    (:func:`bookings_rate`). One booking that cannot be read never fails its page: it is in
    ``rejected`` (:class:`zoho.models.RejectedBooking`: id and what was wrong) and the rest of
    the page is read; a later read takes it once fixed. The read stops early (``complete``
    False, the rows read so far kept) after ``max_pages`` pages, when the run's budget has no
    read left (:func:`fits`) or when Zoho answers with its limit."""
    rows: list[dict[str, Any]] = []
    rejected: list[RejectedBooking] = []
    cursor = BookingsPaging(per_page=per_page)
    calls = 0
    async with shared_client(oauth_block), bookings_rate(oauth_block, calls_per_second):
        while cursor:
            if (max_pages is not None and calls >= max_pages) or not fits("bookings", "read"):
                return rows, calls, False, rejected
            calls += 1
            try:
                answer = await fetch_bookings_page(oauth_block, start, end, time_zone, **cursor.params)
            except NOT_NOW:
                return rows, calls, False, rejected
            rows.extend(booking_row(b) for b in answer.response)
            rejected.extend(answer.rejected)
            cursor = cursor.after(answer)
    return rows, calls, True, rejected


@task(name="get-booking", task_run_name="get-booking-{booking_id}", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def get_booking(oauth_block: str, booking_id: str) -> Booking | RejectedBooking | None:
    """``getappointment``: the booking; a :class:`~zoho.models.RejectedBooking` (the id and what
    was wrong) when Zoho's answer cannot be read as one; None when Zoho refuses it (not found,
    not allowed: a failure in either shape). Transient errors and the day's limit raise."""
    await bookings_turn()
    async with zoho_client(oauth_block) as zoho:
        try:
            return await zoho.bookings.get_appointment(booking_id)
        except InvalidBookingError as exc:
            return RejectedBooking(booking_id=booking_id, reason=str(exc.details.get("problems") or exc.message))
        except ZohoError as exc:
            if is_transient(exc) or isinstance(exc, NOT_NOW):
                raise
            return None


async def get_bookings(
    oauth_block: str, booking_ids: list[str], concurrency: int = 5, calls_per_second: float = 0.0
) -> tuple[list[dict[str, Any]], list[str], list[str], list[RejectedBooking]]:
    """``getappointment`` for each id (``concurrency`` at a time, at most ``calls_per_second`` across
    workers: :func:`bookings_rate`; a ``get-booking`` task run each):
    ``(bookings rows, ids Zoho refused, ids not read now, bookings that cannot be read)``. Ids
    beyond the run's budget for reads (:func:`fits`), or after Zoho answered with its limit, are
    not read (the third list: keep them for later); a booking Zoho answered but that cannot be
    read (an unknown ``time_zone``...) is in the fourth (:class:`zoho.models.RejectedBooking`),
    not stored, the others go on; an id still failing after its retries raises."""
    if not booking_ids:
        return [], [], [], []
    gate = asyncio.Semaphore(concurrency)
    later: list[str] = []

    async def one(booking_id: str) -> Booking | RejectedBooking | None:
        async with gate:
            if not fits("bookings", "read"):
                later.append(booking_id)
                return None
            try:
                return await get_booking(oauth_block, booking_id)
            except NOT_NOW:
                later.append(booking_id)
                return None

    async with shared_client(oauth_block), bookings_rate(oauth_block, calls_per_second):
        found = await asyncio.gather(*(one(b) for b in booking_ids))
    waiting = set(later)
    missing = [b for b, r in zip(booking_ids, found) if r is None and b not in waiting]
    rows = [booking_row(b) for b in found if isinstance(b, Booking)]
    return rows, missing, [b for b in booking_ids if b in waiting], [r for r in found if isinstance(r, RejectedBooking)]


@task(name="read-crm-page", task_run_name=_page_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def read_crm_page(
    oauth_block: str, module: str, fields: list[str], page: int, per_page: int, page_token: str | None, since: datetime | None, ids: list[str] | None
) -> RecordsPage:
    """One ``GET /crm/v7/{module}`` page (``per_page`` records; ``page_token`` past 2,000): records
    modified after ``since`` (``If-Modified-Since``) or the records ``ids``."""
    async with zoho_client(oauth_block) as zoho:
        return await zoho.crm.get_records(module, fields, page=page, per_page=per_page, page_token=page_token, modified_since=since, ids=ids)


async def read_crm_changes(
    oauth_block: str, module: CrmModule, since: datetime | None = None, ids: list[str] | None = None
) -> tuple[list[dict[str, Any]], int, bool, list[InvalidRecord]]:
    """Records of ``module`` modified after ``since``, or the records ``ids`` (100 a call), as state-store
    rows (``module.row``): ``(rows, calls, complete, invalid)``; a ``read-crm-page`` task run per page
    (:class:`zoho.paging.CrmRecordsPaging`). One record that cannot be read (an
    ``Appointment_Start_Time`` of ``not-a-date``, without an offset, in month 13) never stops the
    read: it is left out of ``rows`` and listed in ``invalid`` (:class:`sync.modules.InvalidRecord`:
    the record, the field, the value and why), the rest go on, and a later read takes it once it is
    fixed (fixing it moves its ``Modified_Time``). The read stops early (``complete`` False, the rows
    read so far kept) when the run's CRM budget has no read left or Zoho answers with its limit."""
    rows: list[dict[str, Any]] = []
    invalid: list[InvalidRecord] = []
    calls = 0
    chunks = chunk_ids(ids, CRM_IDS_PER_CALL) if ids else [None]  # by count and by URL length
    async with shared_client(oauth_block):
        for chunk in chunks:
            cursor = CrmRecordsPaging()
            while cursor:
                if not fits("crm", "read"):
                    return rows, calls, False, invalid
                calls += 1
                try:
                    answer = await read_crm_page(oauth_block, module.api_name, module.fields, since=since, ids=chunk, **cursor.params)
                except NOT_NOW:
                    return rows, calls, False, invalid
                for record in answer.data:
                    try:
                        rows.append(module.row(record))
                    except InvalidRecord as exc:
                        invalid.append(exc)
                cursor = cursor.after(answer)
    return rows, calls, True, invalid


# ----------------------------------------------------------------- writes
def crm_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record of a CRM write as the API takes it: instants as ISO 8601 with their offset and
    no fractions (:func:`zoho.timefmt.to_crm`), other values as they are."""
    return {name: to_crm(value) if isinstance(value, datetime) else value for name, value in record.items()}


def _crm_outcome(module: str, action: Action, result: RecordResult) -> Outcome:
    """One record's result of a ``PUT``. ``DEPENDENT_FIELD_UNCHANGED`` is a refusal marked
    ``maybe_done``, never a success as it is: Zoho answers it for a reschedule to the start the
    record already has (a resend after a lost answer) and, as seeds 002/004 read ("The new
    appointment time has to be greater than the existing Appointment_Start_Time"), for a move
    earlier; :func:`apply_crm_batch` reads the record to tell which."""
    if result.ok:
        modified = result.details.get("Modified_Time")
        return Outcome(action, True, result.code, result.message, modified=parse_datetime(modified) if isinstance(modified, str) else None)
    error = crm_error(result.model_dump(), None, f"PUT /crm/v7/{module}")
    if isinstance(error, DependentFieldError) and error.code == "DEPENDENT_FIELD_UNCHANGED":
        return Outcome(action, False, error.code, error.message or "DEPENDENT_FIELD_UNCHANGED", maybe_done=True)
    return Outcome(action, False, error.code, error.message, transient=error.transient)


async def _crm_unless_done(zoho: ZohoClient, adapter: CrmModule, outcome: Outcome) -> Outcome:
    """Check a ``maybe_done`` CRM refusal with one ``GET /crm/v7/{module}/{id}``
    (:func:`sync.outcomes.after_check`): the record already shows the action (its start is the
    target) -> done, Zoho's code kept; otherwise the refusal stands with Zoho's reason and the
    start CRM shows, not transient. A read that fails leaves it standing, transient (checked again
    by the next run); a record that cannot be read leaves it standing, not transient."""
    action = outcome.action
    try:
        record = await zoho.crm.get_record(adapter.api_name, action.crm_id)
    except Exception as exc:  # noqa: BLE001 - the check is worth one read; without it the refusal stands
        return after_check(outcome, None, False, f"{getattr(exc, 'code', type(exc).__name__)}")
    try:
        row = adapter.row(record)
    except InvalidRecord as exc:
        return after_check(outcome, {}, False, str(exc))
    if adapter.shows(row, action):
        return after_check(outcome, row, True, "CRM shows it")
    start = row.get("start_time")
    return after_check(outcome, row, False, f"CRM still shows start {to_crm(start) if start else '-'}, status {row.get('status')}")


@task(name="apply-crm-batch", task_run_name=_crm_batch_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def apply_crm_batch(oauth_block: str, module: str | CrmModule, actions: list[Action]) -> list[Outcome]:
    """One ``PUT /crm/v7/{module}`` of up to 100 actions (payloads and rules: the adapter ``module``,
    or :func:`sync.modules.crm_module` of its API name); per-record outcomes in the order of ``actions``.
    An action the module refuses is not sent (``sent`` False). Actions the module sends as deletes
    (:meth:`~sync.modules.CrmModule.deletes`: a Meeting of a cancelled booking, time-only ``delete``
    policy) go in one ``DELETE /crm/v7/{module}?ids=`` instead; a record already gone counts as deleted.
    A ``DEPENDENT_FIELD_UNCHANGED`` record is read again (one ``GET`` by id each, :func:`_crm_unless_done`):
    done when CRM shows the target, else a refusal with Zoho's reason (not transient)."""
    adapter = crm_module(module) if isinstance(module, str) else module
    name = adapter.api_name
    reasons = [adapter.refusal(a) for a in actions]
    sendable = [a for a, reason in zip(actions, reasons) if reason is None]
    updates = [a for a in sendable if not adapter.deletes(a)]
    deletes = [a for a in sendable if adapter.deletes(a)]
    done: dict[int, Outcome] = {}
    if sendable:
        async with zoho_client(oauth_block) as zoho:
            if updates:
                results = await zoho.crm.update_records(name, [crm_json(adapter.payload(a)) for a in updates])
                outcomes = [_crm_outcome(name, a, r) for a, r in zip(updates, results)]
                for a, o in zip(updates, outcomes):
                    done[id(a)] = await _crm_unless_done(zoho, adapter, o) if o.maybe_done else o
            if deletes:
                results = await zoho.crm.delete_records(name, [a.crm_id for a in deletes])
                by_id = {str(r.details.get("id")): r for r in results}
                for a in deletes:
                    r = by_id.get(a.crm_id)
                    if r is None:
                        done[id(a)] = Outcome(a, False, "NO_RESULT", "Zoho's delete answer names no result for this record", transient=True)
                    elif r.ok or r.code == "INVALID_DATA":  # INVALID_DATA for an id: the record is gone already
                        done[id(a)] = Outcome(a, True, r.code, r.message if r.ok else f"already deleted ({r.message})")
                    else:
                        done[id(a)] = _crm_outcome(name, a, r)
    return [refused(a, reason) if reason is not None else done[id(a)] for a, reason in zip(actions, reasons)]


@task(name="apply-bookings-action", task_run_name=_bookings_action_name, cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def apply_bookings_action(oauth_block: str, action: Action) -> Outcome:
    """One Bookings write: ``rescheduleappointment`` (the start as wall time in the booking's
    zone) or ``updateappointment`` (``cancel``, ``completed``, ``noshow``).

    A refusal is an outcome, not an error: Zoho's code (``BOOKINGS_FAILURE`` when it gives
    none) and message, not transient (no task retry). A Bookings refusal, in either failure
    shape (outer ``status: failure``, or a failure inside ``returnvalue``), is ``maybe_done``
    (see :func:`apply_bookings`): a reschedule into time the staff member does not work or
    has booked is one. An answer whose booking cannot be read is ``INVALID_BOOKING``. An
    action :func:`sync.bookings.refusal` forbids is not sent.
    """
    reason = bookings.refusal(action)
    if reason is not None:
        return refused(action, reason)
    await bookings_turn()
    async with zoho_client(oauth_block) as zoho:
        try:
            if action.kind is Kind.RESCHEDULE:
                answer = await zoho.bookings.reschedule_appointment(action.booking_id, start=action.start, time_zone=action.time_zone)
            else:
                answer = await zoho.bookings.update_appointment(action.booking_id, bookings.verb(action))
        except ZohoError as exc:
            if is_transient(exc) or isinstance(exc, NOT_NOW):
                raise
            return Outcome(action, False, exc.code, exc.message, maybe_done=isinstance(exc, BookingsError))
    row = booking_row(answer)
    return Outcome(action, True, "SUCCESS", None, start=row["start_time"], status=row["status"])


async def _unless_done(oauth_block: str, outcome: Outcome) -> Outcome:
    """``outcome`` (a refusal), or a success with code ``ALREADY_DONE`` when one ``getappointment``
    shows the booking already as the action asks (the write was made before and its outcome
    never logged: a worker killed after the call, or an answer lost after Zoho applied it),
    as CRM's ``DEPENDENT_FIELD_UNCHANGED`` is in :func:`apply_crm_batch`. Otherwise the refusal
    stands (:func:`sync.outcomes.after_check`): Zoho's code and message plus what Bookings shows,
    not transient, still ``maybe_done`` (logged ``refused``: not sent again from the same base);
    likewise when Bookings refuses the read or answers a booking that cannot be read. A read
    that fails (after its retries) leaves it standing as transient: checked again next run."""
    try:
        booking = await get_booking(oauth_block, outcome.action.booking_id)
    except Exception as exc:  # noqa: BLE001 - the check is worth one read; without it the refusal stands
        return after_check(outcome, None, False, f"{getattr(exc, 'code', type(exc).__name__)}")
    if booking is None:
        return after_check(outcome, {}, False, "Bookings refused getappointment for it")
    if isinstance(booking, RejectedBooking):
        return after_check(outcome, {}, False, f"the booking cannot be read: {booking.reason}")
    row = booking_row(booking)
    if not bookings.shows(row, outcome.action):
        return after_check(outcome, row, False, f"Bookings shows start {booking.start_time} {booking.time_zone}, status {booking.status}")
    return Outcome(outcome.action, True, "ALREADY_DONE", f"the booking already shows it ({outcome.message})", start=row["start_time"], status=row["status"])


def waiting(action: Action, family: str) -> Outcome:
    """The outcome of a write not sent because the day's ``family`` budget is spent: failed,
    transient (re-planned by the next run with budget left), nothing sent."""
    return Outcome(action, False, "BUDGET_REACHED", f"not sent: the day's {family} API budget is spent; sent when budget is left (the next day at the latest)", transient=True, sent=False)


async def apply_bookings(oauth_block: str, actions: Iterable[Action], concurrency: int, calls_per_second: float = 0.0) -> list[Outcome]:
    """Apply Bookings actions, ``concurrency`` calls at a time (at most ``calls_per_second`` across
    workers: :func:`bookings_rate`), over one shared client; outcomes in order.

    A refused write (:attr:`~sync.outcomes.Outcome.maybe_done`) is checked with one
    ``get-booking`` task run (:func:`_unless_done`); a task that still fails after its
    retries becomes a failed outcome (transient), and the rest go on.
    """
    actions = list(actions)
    if not actions:
        return []
    gate = asyncio.Semaphore(concurrency)

    async def one(action: Action) -> Outcome:
        async with gate:
            if not fits("bookings", "write"):
                return waiting(action, "bookings")
            try:
                outcome = await apply_bookings_action(oauth_block, action)
                return await _unless_done(oauth_block, outcome) if outcome.maybe_done else outcome
            except NOT_NOW as exc:
                return Outcome(action, False, exc.code, exc.message, transient=True, sent=False)
            except ZohoError as exc:
                return Outcome(action, False, exc.code, exc.message, transient=exc.transient)
            except Exception as exc:  # noqa: BLE001 - e.g. a connection error after the retries: recorded, the rest go on
                return Outcome(action, False, type(exc).__name__, str(exc), transient=True)

    async with shared_client(oauth_block), bookings_rate(oauth_block, calls_per_second):
        return list(await asyncio.gather(*(one(a) for a in actions)))
