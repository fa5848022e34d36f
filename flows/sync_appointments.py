"""``sync-appointments`` flow: read both sides, three-way diff, apply, commit the base.

Webhook first: Bookings changes arrive by webhook and are read one by one
(``getappointment``), CRM changes by notification and the incremental read; no
schedule pages through the Bookings window every few minutes.

* ``booking_ids`` / ``crm_ids`` (what webhooks call): the given bookings are read,
  except those whose webhook (``booking_states``) reported just what the store holds
  once the run holds the one-writer lock (the echo of our own write);
  the given CRM records are read and their links planned with the booking as stored
  (a booking the store has never seen is read). The echo of our own CRM write costs
  one CRM read and no Bookings call.
* ``mode="incremental"`` (every 5 minutes): CRM records modified since the bookmark
  (minus a small overlap; ``If-Modified-Since``), the bookings waiting to be read
  (``pending_reads``) and those of new links; no Bookings window.
* ``mode="scan"`` (the safety net, every 2 hours): an incremental run plus Bookings ``fetchappointment`` over
  ``scan_past_hours`` back to ``scan_future_hours`` ahead, at most ``scan_max_calls``
  pages: completions and no-shows that send no webhook, and webhooks that were lost.
* ``mode="full"`` (nightly): Bulk Read of the CRM module, Bookings over the full window.
* ``dry_run``: plan and report, write nothing to Zoho.

Every run plans all links whose stored sides differ from their base, so a change
read by any run (or put off by an earlier one) is applied by the next.

The daily API budget (:mod:`sync.budget`, :mod:`tasks.budget`): before reading, a
run reads what the organisation spent today and counts every call it makes
(:class:`zoho.usage.Meter`). Reads stop when only the write reserve is left: the
scan and the full run's reads are skipped (they run again on schedule), bookings a
webhook named wait in ``pending_reads`` for the next run with budget left (the next
day at the latest), and an incremental run whose CRM read was cut short keeps its
bookmark. Writes stop at the budget and are re-planned later. A Zoho limit answer
(Bookings' daily calls, CRM 429) stops that family for the run. The summary shows the
day so far and a forecast; ``zoho.budget.low`` is sent (once a day per family) when
the forecast passes the budget.

Applying: CRM writes in batches of up to 100 records per ``PUT``; Bookings calls one
per booking, ``bookings_concurrency`` at a time. Each success updates our copy of
the target and the base at once, so the echo that comes back on the next read (or
notification) matches the base and is not sent again, and a crash after k of n
batches leaves the first k committed. A refused record is logged with Zoho's code
and message; the rest go on. A Bookings refusal (e.g. a time the staff member does
not work) is not sent again from the same base: later runs report it as a conflict
until either side changes (:func:`hold_refused`). Conflicts and deferred changes
(a link held by ``PENDING_PAYMENT`` is one) are reported and re-planned next run; a
booking that cannot be read is a reported failure, skipped (:func:`report_rejected`).

One writer per organisation: the Bookings read, planning and applying (through the
last write and base update) run inside the Prefect global concurrency limit
``appt-sync-writer-<config_block>`` (limit 1, created on first use, ``strict``,
60 s lease renewed while held: a crashed holder frees it within a minute; a run
waits ``writer_wait_seconds``). A second run of the organisation plans after the
first has committed its writes and bases, so it sends none of them again. The CRM
read may overlap (the store never takes an older ``Modified_Time``); the Bookings
read may not (a page read before another run's write and stored after it would
look like a Bookings edit back to the old value). Bookings calls are paced across
workers by ``bookings_calls_per_second`` (:func:`tasks.sync.bookings_rate`).

Reporting (:mod:`sync.report`): a markdown summary and tables of changes (old ->
new, in the booking's time zone and UTC), failures and conflicts (what each side
wanted, who won, why), published also when the run fails part-way, before the
error is raised again. The run ends in a ``Completed`` state whose message is the
summary's headline (``nothing to do: echo of an earlier write ...`` for a records
run that found nothing to do; such a run is also renamed ``...-nothing-to-do-...``).

The steps are the functions below :func:`sync_appointments`, in its order; the
domain (rows, payloads, rules) is :mod:`sync.modules` and :mod:`sync.bookings`, the
state store :mod:`sync.links`, the Zoho calls :mod:`tasks.sync`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Iterable, Iterator, Literal

from prefect import events, flow, get_client, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.concurrency.asyncio import concurrency
from prefect.runtime import flow_run
from prefect.states import Completed

from blocks.limits import ensure_limit
from blocks.sync_config import AppointmentSyncConfig
from blocks.zoho_oauth import ZohoOAuth
from flows.bulk_read import bulk_read
from sync import bulk_runs
from sync.engine import Action, Canon, Conflict, Kind, Link, OnHold, Plan, Side, plan
from sync.links import (
    applied_keys,
    refused_keys,
    bookings_window,
    changed_links,
    count_bookings_between,
    count_links,
    crm_ids_for_bookings,
    log_actions,
    mark_deleted,
    newest_modified_time,
    unknown_bookings,
    upsert_bookings,
    upsert_crm_records,
    write_agreed,
    write_base,
)
from sync.modules import CrmModule, crm_module
from sync.outcomes import Outcome, call_failed, commit_write
from sync.report import SyncSummary, change_entry, conflicts_for, invalid_record, nothing_to_do_name, read_failure, run_name
from sync.store import Store, open_store, utc_now
from sync.echoes import is_echo
from sync.usage import add_pending_reads, drop_pending_reads, pending_reads
from tasks.budget import Budget, close_budget, start_budget
from tasks.sync import apply_bookings, apply_crm_batch, fetch_bookings, fits, get_bookings, read_crm_changes, waiting
from zoho.models import RejectedBooking
from zoho.timefmt import from_bookings
from zoho.usage import BULK_READ_CREDITS, metering

#: Prefect event names for applied actions (the event feed reads as the sync's history).
EVENT_NAMES = {Kind.RESCHEDULE: "zoho.appointment.rescheduled", Kind.CANCEL: "zoho.appointment.cancelled", Kind.COMPLETE: "zoho.appointment.completed", Kind.NO_SHOW: "zoho.appointment.no_show"}

#: Lease of the one-writer lock (seconds): renewed while the run holds it; a crashed holder frees it after this.
WRITER_LEASE_SECONDS = 60


def writer_lock_name(config_block: str) -> str:
    """The Prefect global concurrency limit (limit 1) that lets one run of an organisation plan and apply at a time."""
    return f"appt-sync-writer-{config_block}"


def _run_name() -> str:
    """``sync-incremental-2026-11-21T10:05Z``; webhook runs ``sync-records-#AN-00123-+4-2026-11-21T10:05Z`` (:func:`sync.report.run_name`)."""
    params = flow_run.parameters
    crm_ids, deleted = params.get("crm_ids"), params.get("deleted_crm_ids")
    named = None if crm_ids is None and deleted is None else [*(crm_ids or []), *(deleted or [])]  # a delete notification's run is a records run too
    return run_name(params.get("mode", "full"), bool(params.get("dry_run")), params.get("booking_ids"), named, datetime.now(timezone.utc))


def module_adapters(cfg: AppointmentSyncConfig) -> list[CrmModule]:
    """The adapters of the CRM modules ``cfg`` syncs (``synced_modules``, the first one first), with the
    Meetings options (status field and words, time-only cancel policy, deletes). Raises ``ValueError``
    naming what does not fit (e.g. ``meeting_statuses`` without a word for ``no_show``)."""
    words = cfg.meeting_statuses
    missing = [c.value for c in Canon if not words.get(c.value)]
    if missing:
        raise ValueError(f"meeting_statuses has no word for {', '.join(missing)} (keys: scheduled, cancelled, completed, no_show)")
    options = dict(
        status_field=cfg.meeting_status_field or None, status_words=tuple((c.value, words[c.value]) for c in Canon),
        cancel_policy=cfg.meeting_cancel_policy, cancel_prefix=cfg.meeting_cancel_prefix, delete_cancels=cfg.meeting_delete_cancels_booking,
    )
    return [crm_module(name, cfg.booking_field, **options) for name in cfg.synced_modules]


@dataclass
class SyncRun:
    """What the steps of one run share: the configuration, the CRM modules (``modules``; the one
    being planned is ``module``), the open store, the summary being filled, the ids of a records run
    (``crm_ids`` / ``deleted_crm_ids`` of ``crm_module``), the day's API budget, the links planned
    (by booking id, of ``module``), the Zoho calls made (by step), the bookings to read
    (``to_read``), the modules whose CRM read did not get through (``crm_incomplete``) and the
    bookings each module's changes wrote (``bookings_written``, for the hub pass)."""

    config_block: str
    cfg: AppointmentSyncConfig
    module: CrmModule
    engine: Store
    summary: SyncSummary
    mode: str
    booking_ids: list[str] | None
    crm_ids: list[str] | None
    budget: Budget
    now: datetime = field(default_factory=utc_now)
    links: dict[str, Link] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    token_expiry: datetime | None = None
    to_read: set[str] = field(default_factory=set)
    crm_incomplete: set[str] = field(default_factory=set)
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    modules: list[CrmModule] = field(default_factory=list)
    crm_module: str = ""
    deleted_crm_ids: list[str] | None = None
    bookings_written: dict[str, set[str]] = field(default_factory=dict)

    @property
    def crm_complete(self) -> bool:
        """Whether the CRM read of :attr:`module` got through."""
        return self.module.api_name not in self.crm_incomplete

    @property
    def targeted(self) -> bool:
        """A records run (``booking_ids`` / ``crm_ids``), as opposed to a full or incremental one."""
        return self.summary.mode == "records"


@flow(name="sync-appointments", flow_run_name=_run_name)
async def sync_appointments(
    config_block: str = "sync-sandbox",
    mode: Literal["full", "incremental", "scan"] = "full",
    dry_run: bool = False,
    booking_ids: list[str] | None = None,
    crm_ids: list[str] | None = None,
    booking_states: dict[str, dict[str, str]] | None = None,
    crm_module: str | None = None,
    deleted_crm_ids: list[str] | None = None,
) -> SyncSummary:
    """Sync the organisation configured in the ``AppointmentSyncConfig`` block ``config_block``.

    Returns a :class:`~sync.report.SyncSummary` (also published as a markdown artifact,
    with table artifacts of changes, failures and conflicts): the flow returns a
    ``Completed`` state carrying the summary, so ``await sync_appointments(...)`` gives
    the summary and the run's state message is :meth:`SyncSummary.headline`.
    ``crm_ids`` and ``deleted_crm_ids`` (a CRM ``delete`` notification's) are records of
    ``crm_module`` (default: the configuration's ``crm_module``). Every CRM module the
    configuration syncs is planned in turn against the same Bookings (the hub): a Bookings
    write made for one module is carried to the others in the same run. The
    flow run is tagged ``org:<config_block>`` and ``direction:both`` (also when
    started ad hoc). When the sync raises part-way, the summary of what was applied
    and the error is published and the error raised again (the run is Failed).
    """
    await _tag_run(f"org:{config_block}", "direction:both")
    targeted = booking_ids is not None or crm_ids is not None or deleted_crm_ids is not None  # a webhook's lists, even empty: never a full run
    summary = SyncSummary(run_id=str(flow_run.get_id() or uuid.uuid4()), mode="records" if targeted else mode, dry_run=dry_run, started_at=utc_now())
    try:
        async with open_run(config_block, mode, booking_ids, crm_ids, summary) as run:
            run.states = booking_states or {}
            run.crm_module = crm_module or run.modules[0].api_name
            run.deleted_crm_ids = deleted_crm_ids
            await read_crm_sides(run)
            async with one_writer(run):
                await read_bookings_side(run)
                await plan_and_apply_modules(run, dry_run)
            for module in run.modules:
                use_module(run, module)
                advance_bookmark(run)
            await finish(run)
    except Exception as exc:
        await _publish_failure(summary, exc)
        raise
    await _publish(summary)
    if targeted and summary.nothing_to_do:
        await _rename_run(nothing_to_do_name(flow_run.get_name() or ""))
    return Completed(message=summary.headline(), data=summary)  # type: ignore[return-value]  # the caller gets ``data``


#: ``sync-on-webhook`` runs: a run that fails on a transient error (the Prefect API or
#: Zoho beyond the task retries) is run again, so the ids a webhook named are not lost.
#: Safe: applied changes are keyed and re-read, never sent twice.
sync_records = sync_appointments.with_options(retries=2, retry_delay_seconds=10)


# ------------------------------------------------------------------- steps
@asynccontextmanager
async def open_run(config_block: str, mode: str, booking_ids: list[str] | None, crm_ids: list[str] | None, summary: SyncSummary) -> AsyncIterator[SyncRun]:
    """Load the configuration, pick the CRM module's adapter and open the state store (upgraded); closed at the end.

    The run's Zoho calls are counted and limited by its budget (:func:`tasks.budget.start_budget`)
    until it ends, failed or not; then they are recorded (:func:`close_run_budget`).
    Raises ``ValueError`` for Meetings options that do not fit (:func:`module_adapters`).
    """
    summary.stage = "loading the configuration"
    cfg = await AppointmentSyncConfig.aload(config_block)
    modules = module_adapters(cfg)
    engine = open_store(cfg.state_store_url)
    try:
        now = utc_now()
        run = SyncRun(config_block, cfg, modules[0], engine, summary, mode, booking_ids, crm_ids, start_budget(cfg, engine, now), now, modules=modules)
        summary.modules = [m.api_name for m in modules]
        run.token_expiry = (await ZohoOAuth.aload(cfg.oauth_block)).expires_at
        with metering(run.budget.meter):
            try:
                yield run
            finally:
                await close_run_budget(run)
    finally:
        engine.dispose()


def use_module(run: SyncRun, module: CrmModule) -> None:
    """Make ``module`` the one the next step reads, plans or applies (its links start empty)."""
    run.module = module
    run.links = {}


async def read_crm_sides(run: SyncRun) -> None:
    """:func:`read_crm_side` of every module the run syncs; a records run first takes in the deletes
    a notification named (:func:`take_deletes`). The bookings of the given bookings' linked records,
    of every module, join the run."""
    given = list(run.booking_ids or [])
    if run.targeted:
        run.to_read = set(given)
        if (run.crm_ids or run.deleted_crm_ids) and run.crm_module not in {m.api_name for m in run.modules}:
            get_run_logger().warning("%s records of %s named by a notification: this organisation does not sync %s; ignored", len(run.crm_ids or []) + len(run.deleted_crm_ids or []), run.crm_module, run.crm_module)
            run.summary.notes.append(f"records of {run.crm_module} named by a notification: not synced by this organisation (crm_module / crm_modules); ignored")
        take_deletes(run)
    for module in run.modules:
        use_module(run, module)
        await read_crm_side(run, given)


def take_deletes(run: SyncRun) -> None:
    """The records a CRM ``delete`` notification named (``deleted_crm_ids`` of ``crm_module``): each
    stored Meeting is marked deleted (the echo of our own delete, already marked, is left alone) and
    reported; its booking joins the run, where a deleted Meeting cancels the booking only with
    ``meeting_delete_cancels_booking`` (:class:`sync.modules.Meetings`). A module without deletes
    (``Appointments__s``) and records the store does not hold are reported only."""
    ids = run.deleted_crm_ids or []
    if not ids:
        return
    module = next((m for m in run.modules if m.api_name == run.crm_module), None)
    if module is None:  # not synced: read_crm_sides reported it
        return
    if "deleted_at" not in module.table.__table__.c:
        get_run_logger().warning("%s records of %s deleted in CRM: not acted on (the module keeps no deletes)", len(ids), run.crm_module)
        run.summary.notes.append(f"{len(ids)} {run.crm_module} records deleted in CRM: reported only, nothing changed")
        return
    rows = mark_deleted(run.engine, module.table, ids, run.now)
    cancels = bool(getattr(module, "delete_cancels", False))
    for row in rows:
        if not row["booking_id"]:
            continue
        reason = (f"the {module.label} was deleted in CRM; its booking is cancelled (meeting_delete_cancels_booking on)" if cancels
                  else f"the {module.label} was deleted in CRM; its booking is left as it is and no longer synced (meeting_delete_cancels_booking off)")
        run.summary.conflict_list.extend(conflicts_for([Conflict(row["booking_id"], row["id"], "kept", reason)], {}, run.cfg.conflict_policy))
        run.summary.kept += 1
        if cancels:
            run.booking_ids = sorted(set(run.booking_ids or []) | {row["booking_id"]})
    if not cancels:
        keep_deleted(run, module, [r["booking_id"] for r in rows if r["booking_id"]])
    get_run_logger().info("%s %s records deleted in CRM (%s of them stored and newly marked)", len(ids), module.api_name, len(rows))


def keep_deleted(run: SyncRun, module: CrmModule, booking_ids: list[str]) -> None:
    """Write the base of these links (their CRM record deleted, the delete kept) as they are now, the
    deleted record reading cancelled: a delete kept while ``meeting_delete_cancels_booking`` is off
    stays kept when the option is turned on later (only deletes seen after that cancel bookings)."""
    if not booking_ids:
        return
    rows = changed_links(run.engine, booking_ids, crm_table=module.table, crm_statuses=module.statuses, base_table=module.base_table, crm_status_sql=module.status_sql)
    kept = []
    while True:
        try:
            kept.append(next(rows))
        except StopIteration:
            break
        except ValueError:  # a link that cannot be diffed (no start, on hold): nothing to keep
            continue
    write_agreed(run.engine, kept, run.now, module.base_table)


async def read_crm_side(run: SyncRun, given: list[str] | None = None) -> None:
    """Read the CRM records of ``run.module`` into the store: the given ids (of ``crm_module``) and
    those linked to the given bookings (records run; the bookings they name join the run), a Bulk
    Read of the module (full run), or what changed since the module's bookmark minus the overlap
    (incremental, scan)."""
    run.summary.stage = "reading CRM"
    cfg, module = run.cfg, run.module
    if run.targeted:
        own = list(run.crm_ids or []) if module.api_name == run.crm_module else []
        ids = own + crm_ids_for_bookings(run.engine, given or [], module.table)
        if ids:
            rows = await _read_crm(run, ids=sorted(set(ids)))
            linked = {r["booking_id"] for r in rows if r["booking_id"]}
            run.booking_ids = sorted(set(run.booking_ids or []) | linked)
            run.to_read |= set(unknown_bookings(run.engine, linked))
    elif run.mode == "full":
        if not fits("crm", "read", BULK_READ_CREDITS):
            run.summary.waiting.append(f"the Bulk Read of {module.api_name} (about {BULK_READ_CREDITS} CRM credits): the day's CRM budget is spent; the next full run reads it")
            return
        report = await bulk_read(
            module=module.api_name, oauth_block=cfg.oauth_block, store_url=cfg.state_store_url, booking_field=cfg.booking_field,
            poll_seconds=1.0, **({"status_field": module.status_field} if getattr(module, "status_field", None) else {}),
        )
        run.calls["crm_bulk_jobs"] += report["pages"]
        if report.get("missing_count"):
            shown = ", ".join(str(m["id"]) for m in report.get("missing", [])[:5])
            run.summary.notes.append(
                f"{report['missing_count']} linked {module.label}s ({module.api_name}) stored but missing from this Bulk Read (e.g. {shown}): "
                "reported only, nothing changed (deleted or hidden in CRM? a delete notification, when it comes, is acted on as configured)"
            )
    else:  # incremental, scan
        mark = bulk_runs.get_bookmark(run.engine, module.api_name)
        rows = await _read_crm(run, since=(mark - timedelta(minutes=cfg.incremental_overlap_minutes)) if mark else None)
        run.to_read |= set(unknown_bookings(run.engine, {r["booking_id"] for r in rows if r["booking_id"]}))


async def _read_crm(run: SyncRun, since: datetime | None = None, ids: list[str] | None = None) -> list[dict]:
    """Read CRM records (see :func:`tasks.sync.read_crm_changes`) into the store; returns their rows.
    A read the budget cut short is reported and leaves ``run.crm_complete`` False. A record that
    cannot be read (:class:`sync.modules.InvalidRecord`) is a reported failure naming it, the field
    and the value; it is not stored (what the store held stays) and the rest are applied."""
    rows, calls, complete, invalid = await read_crm_changes(run.cfg.oauth_block, run.module, since=since, ids=ids)
    run.calls["crm_read"] += calls
    upsert_crm_records(run.engine, run.module.table, rows)
    for bad in invalid:
        get_run_logger().warning("Skipped a CRM record that cannot be read: %s", bad)
        run.summary.add_failure(invalid_record(bad.booking_id, bad.crm_id, f"{bad}; skipped, read again once it is fixed"))
    if not complete:
        run.crm_incomplete.add(run.module.api_name)
        run.summary.waiting.append(f"CRM records {'changed since the bookmark' if ids is None else 'named by notifications'}: read cut short by the CRM budget after {calls} calls; the next run reads from the same bookmark")
    return rows


async def read_bookings_side(run: SyncRun) -> None:
    """Read the bookings of this run into the store: those to read one by one (a webhook's,
    new links', and the ones waiting from earlier runs: :func:`read_named_bookings`), then
    the window of a scan or full run (:func:`read_bookings_window`)."""
    run.summary.stage = "reading Bookings"
    await read_named_bookings(run)
    if not run.targeted and run.mode in ("scan", "full"):
        await read_bookings_window(run)


async def read_named_bookings(run: SyncRun) -> None:
    """``getappointment`` for ``run.to_read`` and the bookings waiting in ``pending_reads``. A booking
    Zoho refuses is a reported failure (when a webhook named it); one the budget does not reach waits
    in ``pending_reads`` for a later run."""
    cfg = run.cfg
    given = set(run.booking_ids or []) if run.targeted else set()
    earlier = pending_reads(run.engine)
    echoes = _echoes(run)
    ids = sorted(run.to_read - echoes) + [b for b in earlier if b not in run.to_read]
    if not ids:
        return
    rows, missing, later, rejected = await get_bookings(cfg.oauth_block, ids, cfg.bookings_concurrency, cfg.bookings_calls_per_second)
    run.calls["bookings_read"] += len(ids) - len(later)
    upsert_bookings(run.engine, rows, run.now)
    report_rejected(run, rejected)
    drop_pending_reads(run.engine, set(ids) - set(later))
    add_pending_reads(run.engine, later, "Bookings budget spent", run.now)
    for booking_id in missing:
        if booking_id in given:
            run.summary.add_failure(read_failure(booking_id, "NOT_FOUND", "getappointment failed (no such booking, or not allowed); not synced"))
    if later:
        run.summary.waiting.append(f"{len(later)} bookings to read (getappointment): the day's Bookings budget is spent; kept in pending_reads for the next run with budget")


def _echoes(run: SyncRun) -> set[str]:
    """Bookings of ``run.to_read`` whose webhook (``booking_states``) reported just what the store
    holds now, i.e. after any run writing to them committed (:func:`sync.echoes.is_echo`): reading
    them would tell nothing new. A state that cannot be read is no echo."""
    found = set()
    for booking_id, state in run.states.items():
        if booking_id not in run.to_read or not isinstance(state, dict):
            continue
        try:
            start = from_bookings(str(state["start_time"]), str(state["time_zone"]))
            if is_echo(run.engine, booking_id, start, str(state["status"])):
                found.add(booking_id)
        except (KeyError, ValueError, OSError):  # OSError, ValueError: ZoneInfo of a bad name
            continue
    if found:
        run.calls["bookings_echoes_not_read"] += len(found)
    return found


async def read_bookings_window(run: SyncRun) -> None:
    """``fetchappointment`` over the scan's window (at most ``scan_max_calls`` pages) or the full
    run's (skipped, and reported, when the day's Bookings budget cannot cover the pages it expects)."""
    cfg = run.cfg
    if run.mode == "scan":
        start, end = run.now - timedelta(hours=cfg.scan_past_hours), run.now + timedelta(hours=cfg.scan_future_hours)
        cap: int | None = cfg.scan_max_calls
    else:
        start, end = bookings_window(run.now, cfg.bookings_past_days, cfg.bookings_future_days)
        cap = None
        expected = count_bookings_between(run.engine, start, end) // cfg.bookings_page_size + 1
        left = run.budget.meter.left("bookings", "read")
        if expected > left:
            run.summary.waiting.append(f"the Bookings window of the full run (about {expected} calls, {left:.0f} left today): skipped; the next full run reads it")
            return
    rows, calls, complete, rejected = await fetch_bookings(cfg.oauth_block, start, end, cfg.bookings_time_zone, cfg.bookings_page_size, cfg.bookings_calls_per_second, max_pages=cap)
    run.calls["bookings_read"] += calls
    upsert_bookings(run.engine, rows, run.now)
    report_rejected(run, rejected)
    if not complete:
        why = f"its cap of {cap} calls (scan_max_calls)" if cap is not None and calls >= cap else "the day's Bookings budget"
        run.summary.waiting.append(f"the Bookings {run.mode} window: stopped after {calls} calls by {why}; the rest is read by the next full run")


def report_rejected(run: SyncRun, rejected: Iterable[RejectedBooking]) -> None:
    """Each booking Zoho answered but that cannot be read (an unknown ``time_zone``, a start that
    is no time, a missing field) is a reported failure naming it and what was wrong; it is not
    stored (what the store held stays), the rest of its page went on, a later read takes it once fixed."""
    for r in rejected:
        where = "" if r.booking_id else f" (no booking_id; number {r.position + 1} of its page)"
        run.summary.add_failure(read_failure(r.booking_id or "?", "INVALID_BOOKING", f"the booking cannot be read{where}: {r.reason}; skipped, read again by the next run"))


@asynccontextmanager
async def one_writer(run: SyncRun) -> AsyncIterator[None]:
    """Hold the organisation's one-writer lock (:func:`writer_lock_name`; created on first use):
    wait at most ``writer_wait_seconds`` (``TimeoutError``) for a run of the same organisation
    that is applying; the lease is renewed while held and lapses within a minute of a crash."""
    run.summary.stage = "waiting for another run of this organisation"
    name = writer_lock_name(run.config_block)
    await ensure_limit(name, 1)
    asked = time.monotonic()
    async with concurrency(name, occupy=1, timeout_seconds=run.cfg.writer_wait_seconds, lease_duration=WRITER_LEASE_SECONDS, strict=True):
        waited = time.monotonic() - asked
        if waited >= 1:
            get_run_logger().info("waited %.1f s for another run of %s to finish applying (%s)", waited, run.config_block, name)
        yield


async def plan_and_apply_modules(run: SyncRun, dry_run: bool) -> None:
    """:func:`plan_and_apply` for each CRM module in turn, against the same Bookings (the hub). A Bookings
    write made for a later module (a Meeting moved in CRM) is then carried to the modules planned
    before it by a second pass over just those bookings, so both CRM modules follow in one run; the
    module that made the change agrees with Bookings and writes nothing again (no loop)."""
    for module in run.modules:
        use_module(run, module)
        await plan_and_apply(run, dry_run)
    if dry_run or len(run.modules) < 2:
        return
    for i, module in enumerate(run.modules[:-1]):
        later = set().union(*(run.bookings_written.get(m.api_name, set()) for m in run.modules[i + 1 :]))
        if later:
            use_module(run, module)
            get_run_logger().info("carrying %s Bookings changes made for %s to %s", len(later), ", ".join(m.api_name for m in run.modules[i + 1 :]), module.api_name)
            await plan_and_apply(run, dry_run, sorted(later))


async def plan_and_apply(run: SyncRun, dry_run: bool, only: list[str] | None = None) -> None:
    """Plan ``run.module`` (the links of ``only`` when given: a hub pass), then (unless ``dry_run``)
    re-check what was applied before and send the CRM and Bookings changes."""
    planned = plan_changes(run, only)
    if dry_run:
        record_dry_run(run, planned)
        return
    await recheck_applied(run, planned)
    hold_refused(run, planned)
    await apply_to_crm(run, planned)
    await apply_to_bookings(run, planned)


def hold_refused(run: SyncRun, planned: Plan) -> None:
    """Changes Zoho refused before (the same change from the same base: the same key, logged
    ``refused`` by :func:`_record`; e.g. a reschedule into time the staff member does not work, or
    CRM refusing an earlier move with ``DEPENDENT_FIELD_UNCHANGED``) are not sent again: each is a
    ``rule`` conflict with Zoho's code and message until either side changes (which makes a new
    change). No call is spent, run after run, on a write Zoho would refuse again."""
    refused = refused_keys(run.engine, [a.key for a in planned.actions])
    if not refused:
        return
    held = [
        Conflict(a.booking_id, a.crm_id, "rule", f"{'CRM' if a.target is Side.CRM else 'Bookings'} refused this change when it was sent ({refused[a.key][0]}: {refused[a.key][1]}); not sent again until either side changes")
        for a in planned.actions if a.key in refused
    ]
    planned.actions = [a for a in planned.actions if a.key not in refused]
    run.summary.conflict_list.extend(conflicts_for(held, run.links, run.cfg.conflict_policy))
    run.summary.conflicts += len(held)


def plan_changes(run: SyncRun, only: list[str] | None = None) -> Plan:
    """The three-way diff of ``run.module``'s links whose sides differ from their base
    (:func:`sync.engine.plan`; of ``only`` in a hub pass); links that agree become the base at
    once, and so do links the module keeps as they are (``kept``); conflicts and deferred changes go
    to the summary. The summary's counts add up over the modules."""
    run.summary.stage = "planning"
    summary = run.summary
    candidates = summary.candidates
    planned = _plan(run, only if only is not None else (run.booking_ids if run.targeted else None))
    if only is None:
        links = count_links(run.engine, run.module.table)
        summary.links += links
        summary.unchanged += links - (summary.candidates - candidates) if not run.targeted else 0
    for key, count in planned.counts().items():
        if ":" in key and not key.startswith("conflict"):
            summary.planned[key] = summary.planned.get(key, 0) + count
    write_agreed(run.engine, planned.agreed, run.now, run.module.base_table)
    write_agreed(run.engine, planned.kept, run.now, run.module.base_table)
    summary.agreed += len(planned.agreed)
    summary.conflict_list.extend(conflicts_for(planned.conflicts, run.links, run.cfg.conflict_policy))
    summary.conflicts += sum(1 for c in planned.conflicts if c.kind not in ("deferred", "kept"))
    summary.deferred += sum(1 for c in planned.conflicts if c.kind == "deferred")
    summary.kept += sum(1 for c in planned.conflicts if c.kind == "kept")
    get_run_logger().info(
        "%s: %s links, %s to look at: %s actions, %s conflicts, %s deferred",
        run.module.api_name, summary.links, summary.candidates - candidates, len(planned.actions), summary.conflicts, summary.deferred,
    )
    return planned


def _plan(run: SyncRun, booking_ids: list[str] | None) -> Plan:
    """:func:`sync.engine.plan` over the changed links (of ``booking_ids`` when given)."""
    module = run.module
    rows = changed_links(
        run.engine, booking_ids, crm_table=module.table, crm_statuses=module.statuses, base_table=module.base_table,
        crm_status_sql=module.status_sql, crm_where=module.where_sql,
    )
    held: list[Conflict] = []
    planned = plan(_valid_links(run, rows, held), run.cfg.conflict_policy, run.now, run.cfg.initial_source, to_crm=module.to_crm, scope=module.scope)
    planned.conflicts.extend(held)
    return planned


def _valid_links(run: SyncRun, links: Iterable[Link], held: list[Conflict] | None = None) -> Iterator[Link]:
    """The links, counted as candidates and kept in ``run.links``; a link that cannot be diffed
    (an unknown status or no start: :class:`sync.links.InvalidLink`) is a reported failure, skipped;
    a link held by its booking's status (``PENDING_PAYMENT``: :class:`sync.engine.OnHold`) goes to
    ``held`` as a deferred conflict with the reason (not a failure), skipped."""
    iterator = iter(links)
    while True:
        try:
            link = next(iterator)
        except StopIteration:
            return
        except OnHold as exc:
            run.summary.candidates += 1
            if held is not None:
                held.append(exc.conflict())
            continue
        except ValueError as exc:
            run.summary.add_failure(invalid_record(getattr(exc, "booking_id", None), getattr(exc, "crm_id", None), str(exc)))
            continue
        run.summary.candidates += 1
        run.links[link.booking_id] = link
        yield link


def record_dry_run(run: SyncRun, planned: Plan) -> None:
    """A dry run sends nothing: the planned actions of ``run.module`` are logged as ``dry_run`` and the
    calls a real run would send are added to ``summary.would_call`` (a CRM update costs 1 credit). With
    two modules, a change carried through Bookings to the other module is not counted (no hub pass)."""
    run.summary.stage = "applying changes"
    log_actions(run.engine, run.summary.run_id, [(a, "dry_run", None, None) for a in planned.actions])
    crm = sum(1 for a in planned.actions if a.target is Side.CRM)
    crm_calls = -(-crm // run.module.batch_size)
    would = {"bookings_calls": len(planned.actions) - crm, "crm_calls": crm_calls, "crm_credits": crm_calls}
    run.summary.would_call = {k: run.summary.would_call.get(k, 0) + v for k, v in would.items()}  # added up over the modules


async def recheck_applied(run: SyncRun, planned: Plan) -> None:
    """Planned changes whose key was applied before while our copy of the target does not show
    it: re-read those links from both sides and plan them again (what a fresh read still
    asks for is a real change), so nothing applied is sent twice. A link the day's budget
    does not let us re-read is not sent now (reported; its booking waits in ``pending_reads``)."""
    run.summary.stage = "applying changes"
    already = applied_keys(run.engine, [a.key for a in planned.actions])
    if not already:
        return
    stale = sorted({a.booking_id for a in planned.actions if a.key in already})
    get_run_logger().warning("%s planned changes were applied before; re-reading those %s links before sending anything", len(already), len(stale))
    crm_rows = await _read_crm(run, ids=sorted({run.links[b].crm_id for b in stale}))
    rows, _, later, rejected = await get_bookings(run.cfg.oauth_block, stale, run.cfg.bookings_concurrency, run.cfg.bookings_calls_per_second)
    run.calls["bookings_read"] += len(stale) - len(later)
    upsert_bookings(run.engine, rows, utc_now())
    report_rejected(run, rejected)
    crm_read = {r["id"] for r in crm_rows}
    unread = sorted(set(later) | {b for b in stale if run.links[b].crm_id not in crm_read})
    if unread:
        add_pending_reads(run.engine, unread, "re-check before a resend; Bookings or CRM budget spent", run.now)
        run.summary.waiting.append(f"{len(unread)} changes applied before could not be re-read to check them (API budget): not sent; re-checked by a later run")
    unreadable = {r.booking_id for r in rejected}  # cannot tell whether it shows the change: not sent
    fresh = _plan(run, [b for b in stale if b not in set(unread) | unreadable])
    planned.actions = [a for a in planned.actions if a.booking_id not in set(stale)] + fresh.actions
    write_agreed(run.engine, fresh.agreed, run.now, run.module.base_table)


async def apply_to_crm(run: SyncRun, planned: Plan) -> None:
    """Send the CRM changes, ``module.batch_size`` records per call; a batch that still fails
    after its retries is a failed outcome for each of its records (retried next run), and so
    is a batch the day's CRM budget does not reach (not sent)."""
    run.summary.stage = "applying changes"
    actions = [a for a in planned.actions if a.target is Side.CRM]
    size = run.module.batch_size
    for i in range(0, len(actions), size):
        batch = actions[i : i + size]
        if not fits("crm", "write"):
            _record(run, [waiting(a, "CRM") for a in batch])
            continue
        run.calls["crm_write"] += 1
        try:
            outcomes = await apply_crm_batch(run.cfg.oauth_block, run.module, batch)
        except Exception as exc:  # the whole batch failed after retries: each record goes to the retry queue
            outcomes = [call_failed(a, exc) for a in batch]
        _record(run, outcomes)


async def apply_to_bookings(run: SyncRun, planned: Plan) -> None:
    """Send the Bookings changes, ``bookings_concurrency`` calls at a time."""
    run.summary.stage = "applying changes"
    actions = [a for a in planned.actions if a.target is Side.BOOKINGS]
    outcomes = await apply_bookings(run.cfg.oauth_block, actions, run.cfg.bookings_concurrency, run.cfg.bookings_calls_per_second)
    run.calls["bookings_write"] += sum(o.sent for o in outcomes)
    _record(run, outcomes)


def _record(run: SyncRun, outcomes: list[Outcome]) -> None:
    """Each success: our copy of the target, the summary, an event; then the new bases and the action log."""
    bases, log = [], []
    for outcome in outcomes:
        action = outcome.action
        entry = change_entry(action, run.links.get(action.booking_id))
        if outcome.ok:
            bases.append(commit_write(run.engine, run.module, run.links[action.booking_id], outcome))
            if action.target is Side.BOOKINGS:
                run.bookings_written.setdefault(run.module.api_name, set()).add(action.booking_id)
            run.summary.applied += 1
            run.summary.changes.append(entry)
            log.append((action, "applied", outcome.code, outcome.message))
            _emit_applied(action, run.summary.run_id, run.config_block, run.module.api_name)
        elif gone(run.module, outcome):
            _record_gone(run, action, outcome)
            log.append((action, "refused", outcome.code, outcome.message))
        else:
            run.summary.add_failure({**entry, "code": outcome.code, "message": outcome.message})
            # a Bookings refusal (or CRM's DEPENDENT_FIELD_UNCHANGED) that a re-read did not show as done
            # (tasks.sync._unless_done, tasks.sync._crm_unless_done) is "refused":
            # not sent again from the same base (hold_refused); other failures are retried next run
            log.append((action, "refused" if outcome.maybe_done else "failed", outcome.code, outcome.message))
    write_base(run.engine, bases, base_table=run.module.base_table)
    log_actions(run.engine, run.summary.run_id, log)


def gone(module: CrmModule, outcome: Outcome) -> bool:
    """Whether a CRM write failed because the record no longer exists (``INVALID_DATA`` "the id given
    seems to be invalid"), for a module that keeps deletes (Meetings)."""
    return (outcome.action.target is Side.CRM and outcome.code == "INVALID_DATA" and "deleted_at" in module.table.__table__.c
            and "id given seems to be invalid" in (outcome.message or ""))


def _record_gone(run: SyncRun, action: Action, outcome: Outcome) -> None:
    """A write to a record Zoho says is gone (deleted in CRM, no notification seen): the record is
    marked deleted and the delete kept (:func:`keep_deleted`; never cancels the booking), reported
    once; no later run writes to it again."""
    mark_deleted(run.engine, run.module.table, [action.crm_id], run.now)
    keep_deleted(run, run.module, [action.booking_id])
    why = f"the {run.module.label} no longer exists in CRM ({outcome.code}: {outcome.message}); marked deleted, its booking left as it is"
    run.summary.conflict_list.extend(conflicts_for([Conflict(action.booking_id, action.crm_id, "kept", why)], run.links, run.cfg.conflict_policy))
    run.summary.kept += 1
    get_run_logger().warning("%s %s (booking %s): %s", run.module.api_name, action.crm_id, action.booking_id, why)


def advance_bookmark(run: SyncRun) -> None:
    """After an incremental or scan run whose CRM read of ``run.module`` got through, the module's
    bookmark moves to the newest ``Modified_Time`` stored (never past the run's start, never backwards)."""
    run.summary.stage = "finishing"
    if run.targeted or run.mode not in ("incremental", "scan") or not run.crm_complete:
        return
    newest = newest_modified_time(run.engine, run.module.table)
    if newest is not None:
        bulk_runs.set_bookmark(run.engine, run.module.api_name, min(newest, run.now))


async def close_run_budget(run: SyncRun) -> None:
    """Record the run's Zoho calls (also after a failure), put the day so far in the summary and
    send ``zoho.budget.low`` for a family whose forecast passes the budget for the first time today."""
    summary = run.summary
    summary.zoho_calls = run.budget.meter.by_family()
    summary.budget, alerts = close_budget(run.budget, run.engine, summary.run_id, summary.mode, utc_now(), run.cfg.bookings_time_zone)
    for alert in alerts:
        get_run_logger().warning("%s API forecast for %s: %s of a budget of %s (Zoho's limit %s; %s used so far)", alert["family"], alert["day"], alert["forecast"], alert["budget"], alert["limit"], alert["used"])
        events.emit_event(
            event="zoho.budget.low",
            resource={"prefect.resource.id": f"zoho.sync.{run.config_block}", "prefect.resource.name": run.config_block},
            related=[{"prefect.resource.id": f"zoho.api.{alert['family']}", "prefect.resource.role": "api-family"}],
            payload=alert,
        )


async def finish(run: SyncRun) -> None:
    """Close the summary: the calls made, whether the token was refreshed, the end time."""
    summary = run.summary
    summary.api_calls = dict(run.calls)
    summary.token_refreshed = (await ZohoOAuth.aload(run.cfg.oauth_block)).expires_at != run.token_expiry
    summary.finished_at = utc_now()
    summary.stage = "done"
    get_run_logger().info(
        "Sync done: %s applied, %s failed, %s conflicts, %s deferred, %s agreed", summary.applied, summary.failed, summary.conflicts, summary.deferred, summary.agreed
    )


# ---------------------------------------------------------- run and report
def _emit_applied(action: Action, run_id: str, config_block: str, module: str) -> None:
    """One event per applied action, the appointment as the resource, its CRM record (of ``module``) related (no secrets)."""
    events.emit_event(
        event=EVENT_NAMES[action.kind],
        resource={"prefect.resource.id": f"zoho.appointment.{action.booking_id}", "prefect.resource.name": action.booking_id, "zoho.crm.id": action.crm_id},
        related=[
            {"prefect.resource.id": f"zoho.sync.{config_block}", "prefect.resource.role": "organisation"},
            {"prefect.resource.id": f"zoho.crm.record.{action.crm_id}", "prefect.resource.role": "crm-record", "prefect.resource.name": action.crm_id, "zoho.crm.module": module},
        ],
        payload={"target": action.target.value, "kind": action.kind.value, "value": action.value, "note": action.note, "sync_run": run_id, "crm_module": module},
    )


async def _rename_run(name: str) -> None:
    """Rename this flow run (one API call); a failure is logged, never raised."""
    run_id = flow_run.get_id()
    if run_id is None or not name:
        return
    try:
        async with get_client() as client:
            await client.update_flow_run(run_id, name=name)
    except Exception as exc:  # noqa: BLE001 - a name is not worth failing a sync for
        get_run_logger().debug("could not rename the run to %s: %s", name, exc)


async def _tag_run(*names: str) -> None:
    """Add ``names`` to this flow run's tags (one API call).

    Not ``with prefect.tags(...)``: task runs would inherit the tags, and Prefect asks
    the server for a ``tag:<name>`` concurrency slot around every tagged task run:
    two more API calls per Zoho call, and a run that fails outright when the server
    answers that request 503 under load (seen in benchmarks/webhook_latency.py).
    """
    run_id = flow_run.get_id()
    if run_id is None:
        return
    async with get_client() as client:
        await client.update_flow_run(run_id, tags=sorted(set(flow_run.get_tags()) | set(names)))


async def _publish_failure(summary: SyncSummary, exc: Exception) -> None:
    """Close the summary with the error and publish it; a failure to publish is logged (the run's own error matters more)."""
    summary.fail(exc, utc_now())
    get_run_logger().error("Sync failed while %s, after %s applied: %s", summary.stage, summary.applied, summary.error)
    try:
        await _publish(summary)
    except Exception as publish_error:  # noqa: BLE001 - the run's own error matters more
        get_run_logger().warning("could not publish the summary of the failed run: %s", type(publish_error).__name__)


async def _publish(summary: SyncSummary) -> None:
    """The summary and its tables as artifacts of this flow run (rows: :mod:`sync.report`)."""
    await acreate_markdown_artifact(key="sync-summary", markdown=summary.markdown(), description=f"Sync {summary.mode}: {summary.headline()}")
    if summary.changes:
        await acreate_table_artifact(key="sync-changes", table=summary.change_table(), description=f"{summary.applied} changes applied")
    if summary.failures:
        await acreate_table_artifact(key="sync-failures", table=summary.failure_table(), description=f"{summary.failed} failures (retried next run)")
    if summary.conflict_list:
        await acreate_table_artifact(key="sync-conflicts", table=summary.conflict_table(), description=f"{summary.conflicts} conflicts, {summary.deferred} deferred")
