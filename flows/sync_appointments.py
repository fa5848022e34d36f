"""``sync-appointments`` flow: read both sides, three-way diff, apply, commit the base.

* ``mode="full"``: Bulk Read of the CRM module, Bookings ``fetchappointment`` over
  the configured window.
* ``mode="incremental"``: CRM records modified since the bookmark (minus a small
  overlap; ``If-Modified-Since``) and Bookings over the shorter incremental window.
* ``booking_ids`` / ``crm_ids``: only those links (what webhooks call).
* ``dry_run``: plan and report, write nothing to Zoho.

Applying: CRM writes in batches of up to 100 records per ``PUT``; Bookings calls one
per booking, ``bookings_concurrency`` at a time. Each success updates our copy of
the target and the base at once, so the echo that comes back on the next read (or
notification) matches the base and is not sent again, and a crash after k of n
batches leaves the first k committed. A refused record is logged with Zoho's code
and message; the rest go on. Conflicts and deferred changes are reported and
re-planned next run.

Reporting (:mod:`sync.report`): a markdown summary and tables of changes (old ->
new, in the booking's time zone and UTC), failures and conflicts (what each side
wanted, who won, why), published also when the run fails part-way, before the
error is raised again. The run ends in a ``Completed`` state whose message is the
summary's headline (``nothing to do: echo of an earlier write ...`` for a records
run that found nothing to do; such a run is also renamed ``...-nothing-to-do-...``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed
from sqlalchemy import func, select
from sqlmodel import Session

from blocks.sync_config import AppointmentSyncConfig
from blocks.zoho_oauth import ZohoOAuth
from flows.bulk_read import bulk_read
from sync import bulk_runs
from sync.engine import Action, Canon, Kind, Link, Plan, Side, SideState, plan_link
from sync.links import BookingRecord, applied_keys, bookings_window, changed_links, log_actions, row_to_link, upsert_bookings, upsert_crm_appointments, write_base
from sync.report import SyncSummary, change_entry, conflicts_for, invalid_record, nothing_to_do_name, read_failure, run_name
from sync.store import CrmAppointment, make_engine, utc_now
from tasks.sync import CRM_FIELDS, Outcome, apply_bookings, apply_crm_batch, end_after, fetch_bookings, get_bookings, read_crm_changes

CRM_BATCH = 100
_CRM_STATUS_AFTER = {Kind.CANCEL: ("Cancelled", Canon.CANCELLED), Kind.COMPLETE: ("Completed", Canon.COMPLETED), Kind.RESCHEDULE: ("Scheduled", Canon.SCHEDULED)}


def _count_links(engine) -> int:
    c, b = CrmAppointment.__table__.c, BookingRecord.__table__.c
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CrmAppointment.__table__.join(BookingRecord.__table__, c.booking_id == b.booking_id))).scalar_one()


def _plan(engine, booking_ids, cfg, now, summary: SyncSummary) -> tuple[Plan, dict[str, Link]]:
    out, links = Plan(), {}
    rows = changed_links(engine, booking_ids)
    for link in _safe_links(rows, summary):
        summary.candidates += 1
        links[link.booking_id] = link
        actions, conflicts, agreed = plan_link(link, cfg.conflict_policy, now, cfg.initial_source)
        out.actions.extend(actions)
        out.conflicts.extend(conflicts)
        if agreed:
            out.agreed.append(link)
    return out, links


def _safe_links(links, summary: SyncSummary):
    iterator = iter(links)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except ValueError as exc:  # a record with an unknown status or no start: recorded (InvalidLink carries the ids), skipped
            summary.add_failure(invalid_record(getattr(exc, "booking_id", None), getattr(exc, "crm_id", None), str(exc)))


def _commit_crm(engine, link: Link, outcome: Outcome) -> tuple:
    action = outcome.action
    raw, canon = _CRM_STATUS_AFTER[action.kind]
    with Session(engine) as s:
        row = s.get(CrmAppointment, action.crm_id)
        start = action.start if action.kind is Kind.RESCHEDULE else link.crm.start
        if row is not None:
            row.end_time = end_after(start, row.start_time, row.end_time, row.duration) if action.kind is Kind.RESCHEDULE else row.end_time
            row.start_time, row.status = start, raw
            row.modified_time = outcome.modified or row.modified_time
            s.add(row)
            s.commit()
    return (link.booking_id, link.crm_id, link.time_zone, SideState(start, canon), link.bookings)


def _commit_bookings(engine, link: Link, outcome: Outcome) -> tuple:
    from sync.engine import bookings_canon

    start, status = outcome.start or link.bookings.start, outcome.status or "UPCOMING"
    with Session(engine) as s:
        row = s.get(BookingRecord, link.booking_id)
        if row is not None:
            row.start_time, row.status = start, status
            if outcome.start is not None and row.end_time is not None and link.bookings.start is not None:
                row.end_time = row.end_time + (start - link.bookings.start)
            s.add(row)
            s.commit()
    return (link.booking_id, link.crm_id, link.time_zone, link.crm, SideState(start, bookings_canon(status)))


def _run_name() -> str:
    """``sync-incremental-2026-11-21T10:05Z``; webhook runs ``sync-records-#AN-00123-+4-2026-11-21T10:05Z`` (:func:`sync.report.run_name`)."""
    from datetime import datetime, timezone

    from prefect.runtime import flow_run as current

    params = current.parameters
    return run_name(params.get("mode", "full"), bool(params.get("dry_run")), params.get("booking_ids"), params.get("crm_ids"), datetime.now(timezone.utc))


#: Prefect event names for applied actions (the event feed reads as the sync's history).
EVENT_NAMES = {Kind.RESCHEDULE: "zoho.appointment.rescheduled", Kind.CANCEL: "zoho.appointment.cancelled", Kind.COMPLETE: "zoho.appointment.completed", Kind.NO_SHOW: "zoho.appointment.no_show"}


def _emit_applied(action: Action, run_id: str, config_block: str) -> None:
    """One event per applied action, the appointment as the resource (no secrets)."""
    from prefect.events import emit_event

    emit_event(
        event=EVENT_NAMES[action.kind],
        resource={"prefect.resource.id": f"zoho.appointment.{action.booking_id}", "prefect.resource.name": action.booking_id, "zoho.crm.id": action.crm_id},
        related=[
            {"prefect.resource.id": f"zoho.sync.{config_block}", "prefect.resource.role": "organisation"},
            {"prefect.resource.id": f"zoho.crm.record.{action.crm_id}", "prefect.resource.role": "crm-record", "prefect.resource.name": action.crm_id},
        ],
        payload={"target": action.target.value, "kind": action.kind.value, "value": action.value, "note": action.note, "sync_run": run_id},
    )


@flow(name="sync-appointments", flow_run_name=_run_name)
async def sync_appointments(
    config_block: str = "sync-sandbox",
    mode: Literal["full", "incremental"] = "full",
    dry_run: bool = False,
    booking_ids: list[str] | None = None,
    crm_ids: list[str] | None = None,
) -> SyncSummary:
    """Sync the organisation configured in the ``AppointmentSyncConfig`` block ``config_block``.

    Returns a :class:`~sync.report.SyncSummary` (also published as a markdown artifact,
    with table artifacts of changes, failures and conflicts): the flow returns a
    ``Completed`` state carrying the summary, so ``await sync_appointments(...)`` gives
    the summary and the run's state message is :meth:`SyncSummary.headline`. The
    flow run is tagged ``org:<config_block>`` and ``direction:both`` (also when
    started ad hoc). When the sync raises part-way, the summary of what was applied
    and the error is published and the error raised again (the run is Failed).
    """
    await _tag_run(f"org:{config_block}", "direction:both")
    targeted = booking_ids is not None or crm_ids is not None  # a webhook's lists, even empty: never a full run
    summary = SyncSummary(run_id=str(flow_run.get_id() or uuid.uuid4()), mode="records" if targeted else mode, dry_run=dry_run, started_at=utc_now())
    try:
        await _sync(config_block, mode, dry_run, booking_ids, crm_ids, summary)
    except Exception as exc:
        summary.fail(exc, utc_now())
        get_run_logger().error("Sync failed while %s, after %s applied: %s", summary.stage, summary.applied, summary.error)
        try:
            await _publish(summary)
        except Exception as publish_error:  # noqa: BLE001 - the run's own error matters more
            get_run_logger().warning("could not publish the summary of the failed run: %s", type(publish_error).__name__)
        raise
    await _publish(summary)
    if targeted and summary.nothing_to_do:
        await _rename_run(nothing_to_do_name(flow_run.get_name() or ""))
    return Completed(message=summary.headline(), data=summary)  # type: ignore[return-value]  # the caller gets ``data``


async def _rename_run(name: str) -> None:
    """Rename this flow run (one API call); a failure is logged, never raised."""
    from prefect import get_client

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
    from prefect import get_client

    run_id = flow_run.get_id()
    if run_id is None:
        return
    async with get_client() as client:
        await client.update_flow_run(run_id, tags=sorted(set(flow_run.get_tags()) | set(names)))


#: ``sync-on-webhook`` runs: a run that fails on a transient error (the Prefect API or
#: Zoho beyond the task retries) is run again, so the ids a webhook named are not lost.
#: Safe: applied changes are keyed and re-read, never sent twice.
sync_records = sync_appointments.with_options(retries=2, retry_delay_seconds=10)


async def _sync(config_block: str, mode: str, dry_run: bool, booking_ids: list[str] | None, crm_ids: list[str] | None, summary: SyncSummary) -> None:
    """The sync itself, filling ``summary`` as it goes (``summary.stage`` names the step)."""
    summary.stage = "loading the configuration"
    cfg = await AppointmentSyncConfig.aload(config_block)
    if cfg.crm_module != "Appointments__s":
        raise NotImplementedError("syncing Events (Meetings) is not built yet; use crm_module=Appointments__s")
    engine = make_engine(cfg.state_store_url)
    try:
        await _sync_with(engine, cfg, config_block, mode, dry_run, booking_ids, crm_ids, summary)
    finally:
        engine.dispose()


async def _sync_with(engine, cfg: AppointmentSyncConfig, config_block: str, mode: str, dry_run: bool, booking_ids: list[str] | None, crm_ids: list[str] | None, summary: SyncSummary) -> None:
    logger = get_run_logger()
    now = utc_now()
    targeted = summary.mode == "records"
    calls: Counter[str] = Counter()
    token_before = (await ZohoOAuth.aload(cfg.oauth_block)).expires_at

    # 1. the CRM side
    summary.stage = "reading CRM"
    if targeted:
        ids = list(crm_ids or [])
        if booking_ids:
            with engine.connect() as conn:
                c = CrmAppointment.__table__.c
                ids += [r[0] for r in conn.execute(select(c.id).where(c.booking_id.in_(booking_ids)))]
        if ids:
            rows, n = await read_crm_changes(cfg.oauth_block, cfg.crm_module, cfg.booking_field, ids=sorted(set(ids)))
            calls["crm_read"] += n
            upsert_crm_appointments(engine, rows)
            booking_ids = sorted(set(booking_ids or []) | {r["booking_id"] for r in rows if r["booking_id"]})
    elif mode == "full":
        report = await bulk_read(module=cfg.crm_module, oauth_block=cfg.oauth_block, store_url=cfg.state_store_url, booking_field=cfg.booking_field, poll_seconds=1.0)
        calls["crm_bulk_jobs"] += report["pages"]
    else:
        mark = bulk_runs.get_bookmark(engine, cfg.crm_module)
        since = (mark - timedelta(minutes=cfg.incremental_overlap_minutes)) if mark else None
        rows, n = await read_crm_changes(cfg.oauth_block, cfg.crm_module, cfg.booking_field, since=since)
        calls["crm_read"] += n
        upsert_crm_appointments(engine, rows)

    # 2. the Bookings side
    summary.stage = "reading Bookings"
    if targeted:
        rows, missing = await get_bookings(cfg.oauth_block, list(booking_ids or []), cfg.bookings_concurrency)
        calls["bookings_read"] += len(booking_ids or [])
        for bid in missing:
            summary.add_failure(read_failure(bid, "NOT_FOUND", "getappointment failed (no such booking, or not allowed); not synced"))
    else:
        past, future = (cfg.bookings_past_days, cfg.bookings_future_days) if mode == "full" else (cfg.incremental_past_days, cfg.incremental_future_days)
        start, end = bookings_window(now, past, future)
        rows, n = await fetch_bookings(cfg.oauth_block, start, end, cfg.bookings_time_zone, cfg.bookings_page_size)
        calls["bookings_read"] += n
    upsert_bookings(engine, rows, now)

    # 3. the diff
    summary.stage = "planning"
    summary.links = _count_links(engine)
    plan, links = _plan(engine, booking_ids if targeted else None, cfg, now, summary)
    summary.unchanged = summary.links - summary.candidates if not targeted else 0
    summary.planned = {k: v for k, v in plan.counts().items() if ":" in k and not k.startswith("conflict")}
    write_base(engine, [(l.booking_id, l.crm_id, l.time_zone, l.crm, l.bookings) for l in plan.agreed], now)
    summary.agreed = len(plan.agreed)
    summary.conflict_list.extend(conflicts_for(plan.conflicts, links, cfg.conflict_policy))
    summary.conflicts = sum(1 for c in plan.conflicts if c.kind != "deferred")
    summary.deferred = sum(1 for c in plan.conflicts if c.kind == "deferred")
    logger.info("%s links, %s to look at: %s actions, %s conflicts, %s deferred", summary.links, summary.candidates, len(plan.actions), summary.conflicts, summary.deferred)

    # 4. apply
    summary.stage = "applying changes"
    if dry_run:
        log_actions(engine, summary.run_id, [(a, "dry_run", None, None) for a in plan.actions])
    else:
        already = applied_keys(engine, [a.key for a in plan.actions])
        if already:  # sent before, yet our copy of the target does not show it: re-read before deciding
            stale = sorted({a.booking_id for a in plan.actions if a.key in already})
            logger.warning("%s planned changes were applied before; re-reading those %s links before sending anything", len(already), len(stale))
            rows, n = await read_crm_changes(cfg.oauth_block, cfg.crm_module, cfg.booking_field, ids=sorted({links[b].crm_id for b in stale}))
            calls["crm_read"] += n
            upsert_crm_appointments(engine, rows)
            rows, _ = await get_bookings(cfg.oauth_block, stale, cfg.bookings_concurrency)
            calls["bookings_read"] += len(stale)
            upsert_bookings(engine, rows, utc_now())
            plan.actions = [a for a in plan.actions if a.booking_id not in set(stale)]
            fresh, fresh_links = _plan(engine, stale, cfg, now, summary)
            links.update(fresh_links)
            plan.actions += fresh.actions  # what a fresh read still asks for is a real change
            write_base(engine, [(l.booking_id, l.crm_id, l.time_zone, l.crm, l.bookings) for l in fresh.agreed], now)
        todo = plan.actions
        crm_actions = [a for a in todo if a.target is Side.CRM]
        for i in range(0, len(crm_actions), CRM_BATCH):
            batch = crm_actions[i : i + CRM_BATCH]
            calls["crm_write"] += 1
            try:
                outcomes = await apply_crm_batch(cfg.oauth_block, cfg.crm_module, batch)
            except Exception as exc:  # the whole batch failed after retries: each record goes to the retry queue
                outcomes = [Outcome(a, False, getattr(exc, "code", type(exc).__name__), str(exc), transient=True) for a in batch]
            _record(engine, summary, links, outcomes, _commit_crm, config_block)
        bk_actions = [a for a in todo if a.target is Side.BOOKINGS]
        bk_outcomes = await apply_bookings(cfg.oauth_block, bk_actions, cfg.bookings_concurrency)
        calls["bookings_write"] += sum(o.sent for o in bk_outcomes)
        _record(engine, summary, links, bk_outcomes, _commit_bookings, config_block)

    # 5. bookmark and report
    summary.stage = "finishing"
    if not targeted and mode == "incremental":
        with engine.connect() as conn:
            newest = conn.execute(select(func.max(CrmAppointment.__table__.c.modified_time))).scalar_one_or_none()
        if newest is not None:
            from sync.store import UTCDateTime

            newest = UTCDateTime().process_result_value(newest, engine.dialect) if isinstance(newest, str) else newest
            bulk_runs.set_bookmark(engine, cfg.crm_module, min(newest, now))
    summary.api_calls = dict(calls)
    summary.token_refreshed = (await ZohoOAuth.aload(cfg.oauth_block)).expires_at != token_before
    summary.finished_at = utc_now()
    summary.stage = "done"
    logger.info("Sync done: %s applied, %s failed, %s conflicts, %s deferred, %s agreed", summary.applied, summary.failed, summary.conflicts, summary.deferred, summary.agreed)


def _record(engine, summary: SyncSummary, links: dict[str, Link], outcomes: list[Outcome], commit, config_block: str) -> None:
    bases, log = [], []
    for o in outcomes:
        a: Action = o.action
        entry = change_entry(a, links.get(a.booking_id))
        if o.ok:
            bases.append(commit(engine, links[a.booking_id], o))
            summary.applied += 1
            summary.changes.append(entry)
            log.append((a, "applied", o.code, o.message))
            _emit_applied(a, summary.run_id, config_block)
        else:
            summary.add_failure({**entry, "code": o.code, "message": o.message})
            log.append((a, "failed", o.code, o.message))
    write_base(engine, bases)
    log_actions(engine, summary.run_id, log)


async def _publish(summary: SyncSummary) -> None:
    """The summary and its tables as artifacts of this flow run (rows: :mod:`sync.report`)."""
    await acreate_markdown_artifact(key="sync-summary", markdown=summary.markdown(), description=f"Sync {summary.mode}: {summary.headline()}")
    if summary.changes:
        await acreate_table_artifact(key="sync-changes", table=summary.change_table(), description=f"{summary.applied} changes applied")
    if summary.failures:
        await acreate_table_artifact(key="sync-failures", table=summary.failure_table(), description=f"{summary.failed} failures (retried next run)")
    if summary.conflict_list:
        await acreate_table_artifact(key="sync-conflicts", table=summary.conflict_table(), description=f"{summary.conflicts} conflicts, {summary.deferred} deferred")
