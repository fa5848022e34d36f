"""``bulk-read`` flow: CRM Bulk Read from job creation to records in the state store.

Story (seed 001; shapes in ``shared/zoho-api-notes.md``):

1. Build the query with the typed criteria models and check each comparator
   against its field's type (a bad criterion fails before any API call).
2. Find the running read of the same query (a crashed run) or start one.
3. For each page: reuse the page's job if it exists (re-poll or re-download: Zoho
   keeps results 24 hours), else create a job and record it at once; wait for it
   (the callback, through the state store, when ``callback_url`` is set, with a
   slow poll as fallback; otherwise polling with capped exponential back-off) up
   to ``timeout_seconds``; ``FAILURE`` raises :class:`~zoho.errors.BulkReadFailedError`
   with Zoho's ``error_message``; download the zip (kept in
   ``work_dir/appt-sync-bulk/<run id>/`` until its page is loaded, so a rerun
   does not download it again, and job ids of other organisations never meet;
   dropped when it cannot be loaded, so a rerun does); load it in one transaction.
4. Follow ``more_records`` / ``next_page_token`` with new jobs until done.
5. After a full read (no criteria, the default fields) advance the module's
   bookmark to the run's start. Publish a table artifact
   (pages, job ids, records, rejected, seconds). A progress artifact moves while
   jobs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from pydantic import TypeAdapter

from sync import bulk_runs
from sync.bulk_load import BulkFileError
from sync.store import default_store_url, make_engine
from tasks.bulk_read import create_bulk_job, download_bulk_result, get_bulk_job, job_summary, load_bulk_page, mapping_fields
from zoho.errors import BulkReadFailedError
from zoho.models import FIELD_TYPES, BulkReadJob, BulkReadQuery, BulkReadRequest, BulkState, Callback, Criteria, ModuleRef, check_criteria

#: Share of a page's progress reached at each job state.
STAGE_PROGRESS = {"ADDED": 5.0, "QUEUED": 15.0, "IN PROGRESS": 40.0, "COMPLETED": 70.0, "DOWNLOADED": 85.0, "LOADED": 100.0}


class BulkReadTimeoutError(TimeoutError):
    """A Bulk Read job did not end within the flow's ``timeout_seconds``."""


def build_request(module: str, fields: list[str] | None, criteria: dict[str, Any] | None, file_type: str, booking_field: str, callback_url: str | None) -> BulkReadRequest:
    """The typed request; raises ``ValueError``/``pydantic.ValidationError`` naming a bad criterion."""
    parsed = TypeAdapter(Criteria).validate_python(criteria) if criteria else None
    if parsed is not None and module in FIELD_TYPES:
        check_criteria(parsed, {**FIELD_TYPES[module], booking_field: "text"})
    if fields is None:
        fields = [] if file_type == "ics" else mapping_fields(module, booking_field)
    return BulkReadRequest(
        query=BulkReadQuery(module=ModuleRef(api_name=module), fields=fields, criteria=parsed),
        callback=Callback(url=callback_url) if callback_url else None,
        file_type=file_type,  # type: ignore[arg-type]
    )


async def wait_for_job(
    oauth_block: str,
    engine: Any,
    job_id: str,
    *,
    callback: bool,
    poll_seconds: float,
    poll_max_seconds: float,
    timeout_seconds: float,
    on_state: Any,
) -> BulkReadJob:
    """Wait until job ``job_id`` is ``COMPLETED`` or ``FAILURE``; returns its last status.

    With ``callback``: the state store is checked every ``poll_seconds`` (the
    receiver writes the callback there) and Zoho every ``poll_max_seconds``.
    Without: Zoho is polled at ``poll_seconds``, growing x1.5 up to ``poll_max_seconds``.
    Raises :class:`BulkReadTimeoutError` after ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = poll_seconds
    next_zoho = time.monotonic()
    while True:
        if callback:
            stored = bulk_runs.get_job(engine, job_id)
            if stored is not None and stored.state in ("COMPLETED", "FAILURE"):
                return BulkReadJob(id=job_id, state=BulkState(stored.state))
        if time.monotonic() >= next_zoho:
            job = await get_bulk_job(oauth_block, job_id)
            bulk_runs.record_job_status(engine, job.model_dump(mode="json"))
            await on_state(job.state.value)
            if job.state.is_terminal:
                return job
            next_zoho = time.monotonic() + (poll_max_seconds if callback else delay)
            delay = min(delay * 1.5, poll_max_seconds)
        if time.monotonic() > deadline:
            raise BulkReadTimeoutError(f"Bulk Read job {job_id} did not end within {timeout_seconds:.0f} s")
        await asyncio.sleep(poll_seconds if callback else max(0.0, min(next_zoho - time.monotonic(), delay)))


@flow(name="bulk-read", flow_run_name="bulk-read-{module}")
async def bulk_read(
    module: str = "Appointments__s",
    fields: list[str] | None = None,
    criteria: dict[str, Any] | None = None,
    oauth_block: str = "zoho-sandbox",
    store_url: str | None = None,
    booking_field: str = "Booking_Id",
    file_type: Literal["csv", "ics"] = "csv",
    callback_url: str | None = None,
    poll_seconds: float = 2.0,
    poll_max_seconds: float = 60.0,
    timeout_seconds: float = 3600.0,
    work_dir: str | None = None,
) -> dict[str, Any]:
    """Read ``module`` through Bulk Read into the state store; returns a summary.

    ``criteria``: a criteria tree as JSON (``{"group_operator": ..., "group": [...]}``
    or one condition); ``fields``: API names (default: what the loader maps; none
    for ICS). Returns ``{"run_id", "resumed", "pages", "records", "rejected",
    "jobs": [...]}``. Raises :class:`~zoho.errors.BulkReadFailedError`,
    :class:`BulkReadTimeoutError`, :class:`~sync.bulk_load.BulkFileError`.
    """
    logger = get_run_logger()
    request = build_request(module, fields, criteria, file_type, booking_field, callback_url)
    store_url = store_url or default_store_url()
    engine = make_engine(store_url)
    identity = {"module": module, "fields": request.query.fields, "criteria": request.to_json()["query"].get("criteria"), "file_type": file_type}
    run, resumed = bulk_runs.find_or_start_run(engine, module, identity)
    logger.info("%s Bulk Read run %s of %s", "Resuming" if resumed else "Starting", run.id, module)
    # One folder per run: job ids are only unique within an organisation, and a resumed run finds its pages again.
    folder = Path(work_dir or os.environ.get("APPT_SYNC_WORK_DIR") or tempfile.gettempdir()) / "appt-sync-bulk" / run.id
    progress_id = await acreate_progress_artifact(progress=0.0, description=f"Bulk Read of {module}: starting")
    page_index, page_token, records, rejected = 1, None, 0, 0
    try:
        while True:
            job_row = bulk_runs.job_for_page(engine, run.id, page_index)
            if job_row is not None and job_row.loaded_at is not None:
                logger.info("Page %s (job %s) was loaded before: %s records", page_index, job_row.id, job_row.records_loaded)
            else:
                started = time.monotonic()
                if job_row is None:
                    page_request = request.model_copy(deep=True)
                    page_request.query.page_token = page_token
                    created = await create_bulk_job(oauth_block, page_request)
                    job_row = bulk_runs.record_job_created(engine, run.id, page_index, module, created.id, page_token)
                    (folder / f"{created.id}.zip").unlink(missing_ok=True)  # a new job's result is not on disk yet
                    logger.info("Created Bulk Read job %s for page %s", created.id, page_index)
                else:
                    logger.info("Resuming job %s of page %s (state %s)", job_row.id, page_index, job_row.state)

                async def on_state(state: str, page: int = page_index, job_id: str = job_row.id) -> None:
                    await aupdate_progress_artifact(progress_id, STAGE_PROGRESS.get(state, 0.0), description=f"{module} page {page}: job {job_id} {state}")

                ended = await wait_for_job(
                    oauth_block, engine, job_row.id, callback=bool(callback_url), poll_seconds=poll_seconds,
                    poll_max_seconds=poll_max_seconds, timeout_seconds=timeout_seconds, on_state=on_state,
                )
                job_row = bulk_runs.get_job(engine, job_row.id)
                if ended.state is BulkState.FAILURE or job_row.state == "FAILURE":
                    error = ended.result.error_message if ended.result and ended.result.error_message else None
                    raise BulkReadFailedError(
                        (error.code if error else None) or job_row.error_code or "FAILURE",
                        (error.message if error else None) or job_row.error_message or "the Bulk Read job failed",
                        error.details if error else {},
                        None,
                        f"Bulk Read job {job_row.id}",
                    )
                zip_path = folder / f"{job_row.id}.zip"
                if not zip_path.exists():
                    size = await download_bulk_result(oauth_block, job_row.download_url, str(zip_path))
                    logger.info("Downloaded job %s: %.1f MB", job_row.id, size / 1e6)
                await on_state("DOWNLOADED")
                try:
                    report = load_bulk_page(store_url, job_row.id, str(zip_path), module, file_type, booking_field)
                except BulkFileError:
                    zip_path.unlink(missing_ok=True)  # nothing was loaded: a rerun downloads the page again
                    raise
                bulk_runs.mark_job(engine, job_row.id, seconds=time.monotonic() - started)
                zip_path.unlink(missing_ok=True)
                await on_state("LOADED")
                logger.info("Loaded page %s: %s records, %s rejected, in %.2f s", page_index, report.loaded, report.rejected, report.seconds)
                if report.rejected:
                    logger.warning("%s rows of job %s were rejected: see the rejected_records table", report.rejected, job_row.id)
                job_row = bulk_runs.get_job(engine, job_row.id)
            records += job_row.records_loaded or 0
            rejected += job_row.records_rejected or 0
            if not job_row.more_records:
                break
            page_token = job_row.next_page_token
            page_index += 1
    except BaseException:
        jobs = bulk_runs.run_jobs(engine, run.id)
        if any(j.state == "FAILURE" for j in jobs):
            bulk_runs.finish_run(engine, run.id, "failed", page_index, records, rejected)
        raise
    bulk_runs.finish_run(engine, run.id, "completed", page_index, records, rejected)
    with contextlib.suppress(OSError):
        folder.rmdir()  # empty once every page is loaded
    if run.created_at is not None and not fields and criteria is None:
        bulk_runs.set_bookmark(engine, module, run.created_at)
    jobs = [job_summary(j) for j in bulk_runs.run_jobs(engine, run.id)]
    await acreate_table_artifact(table=jobs, key=f"bulk-read-{module}".lower().replace("_", "-"), description=f"Bulk Read of {module}: {page_index} pages, {records} records, {rejected} rejected")
    logger.info("Bulk Read of %s done: %s pages, %s records, %s rejected", module, page_index, records, rejected)
    engine.dispose()
    return {"run_id": run.id, "resumed": resumed, "pages": page_index, "records": records, "rejected": rejected, "jobs": jobs}


@flow(name="bulk-read-callback", flow_run_name="bulk-read-callback-{job_id}")
async def bulk_read_callback(job_id: str, state: str, result: dict[str, Any] | None = None, config_block: str = "sync-sandbox") -> str | None:
    """Record a Bulk Read job's callback in the organisation's state store (deployment ``bulk-read-callback``).

    Started by the event ``zoho.bulk_read.callback`` (the receiver's, or a Prefect
    Cloud webhook's: ``deployments/cloud/bulk-read-callback.webhook.j2``) with the
    job's ``id``, ``state`` and ``result`` (``count``, ``more_records``,
    ``download_url``, or ``error_message``: the callback JSON of seed 001). The
    ``bulk-read`` run waiting on that job with a ``callback_url`` checks the store
    every ``poll_seconds`` and goes on to download as soon as the job is
    ``COMPLETED`` (or raises on ``FAILURE``). Idempotent: a job already loaded is
    never moved back. Returns the stored state, or None when the job is not one of
    this organisation's.
    """
    from blocks.sync_config import AppointmentSyncConfig

    logger = get_run_logger()
    cfg = await AppointmentSyncConfig.aload(config_block)
    engine = make_engine(cfg.state_store_url)
    try:
        stored = bulk_runs.record_callback(engine, {"data": [{"id": job_id, "state": state, "result": result or {}}]})
    finally:
        engine.dispose()
    if stored is None:
        logger.warning("Bulk Read job %s (%s) is not one of %s's jobs: ignored", job_id, state, config_block)
        return None
    logger.info("Bulk Read job %s is %s; the waiting bulk-read run picks it up", job_id, stored.state)
    return stored.state
