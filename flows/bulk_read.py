"""``bulk-read`` flow: CRM Bulk Read from job creation to records in the state store.

Story (seed 001; shapes in ``shared/zoho-api-notes.md``):

1. Build the query with the typed criteria models and check each comparator
   against its field's type (a bad criterion fails before any API call).
2. Find the running read of the same query (a crashed run) or start one.
3. For each page: reuse the page's job if it exists (re-poll or re-download: Zoho
   keeps results 24 hours), else create a job and record it at once; wait for it
   (the callback, through the state store, when a callback is set, with a
   slow poll as fallback; otherwise polling with capped exponential back-off) up
   to ``timeout_seconds``; ``FAILURE`` raises :class:`~zoho.errors.BulkReadFailedError`
   with Zoho's ``error_message``; download the zip (kept in
   ``work_dir/appt-sync-bulk/<run id>/`` until its page is loaded, so a rerun
   does not download it again, and job ids of other organisations never meet;
   dropped when it cannot be loaded, so a rerun does); load it in one transaction.
4. Follow ``more_records`` / ``next_page_token`` with new jobs until done
   (:class:`zoho.paging.BulkReadPaging` gives each next job's query).
5. After a full read (no criteria, the default fields) advance the module's
   bookmark to the run's start. Publish a table artifact
   (pages, job ids, records, rejected, seconds). A progress artifact moves while
   jobs run.
6. After a read of the whole module (no criteria) report the linked records the
   store holds that the read did not return (:func:`sync.bulk_runs.missing_from_run`):
   a record missing from a Bulk Read is reported, never acted on.

The callback URL's secret is never a flow-run parameter (Prefect shows and stores
those): the run takes the callback route's URL without it (``callback_url``) and a
reference to it (``callback_secret_block``, or the receiver's own environment
variable), and builds the URL Zoho calls inside the run (:func:`callback_target`).
The downloaded zip comes from the organisation's API domain only; a ``download_url``
on another host (a forged callback's) fails the page with
:class:`~zoho.errors.ForeignHostError` and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from pydantic import TypeAdapter

from sync import bulk_runs
from sync.bulk_load import MAPPINGS, BulkFileError, LoadReport, module_mapping
from sync.settings import AppSettings
from sync.store import default_store_url, open_store
from tasks.bulk_read import create_bulk_job, download_bulk_result, get_bulk_job, job_summary, load_bulk_page, mapping_fields
from zoho.errors import BulkReadFailedError, BulkReadRefusedError
from zoho.paging import BulkReadPaging
from zoho.models import FIELD_TYPES, BulkReadJob, BulkReadQuery, BulkReadRequest, BulkState, Callback, Criteria, ModuleRef, check_criteria

#: Share of a page's progress reached at each job state.
STAGE_PROGRESS = {"ADDED": 5.0, "QUEUED": 15.0, "IN PROGRESS": 40.0, "COMPLETED": 70.0, "DOWNLOADED": 85.0, "LOADED": 100.0}


#: Where the webhook receiver reads its callback secret (``deployments.webhook.ReceiverSettings``);
#: a run in the receiver's environment (``make up``, ``deployments.serve``) takes it from there.
CALLBACK_SECRET_ENV = "APPT_SYNC_RECEIVER_CALLBACK_SECRET"


class BulkReadTimeoutError(TimeoutError):
    """A Bulk Read job did not end within the flow's ``timeout_seconds``."""


class CallbackSecretInParametersError(ValueError):
    """A ``callback_url`` parameter that carries a secret (``?secret=`` or user info): flow-run
    parameters are stored and shown by Prefect, so the secret must come by reference."""


def _with_secret(url: str, secret: str) -> str:
    """``url`` with ``secret=<secret>`` added to its query (the receiver's ``?secret=``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "secret"] + [("secret", secret)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def callback_target(callback_url: str | None, callback_secret_block: str | None = None) -> str | None:
    """The callback URL of the Bulk Read request, built inside the run; None: no callback (poll).

    ``callback_url``: the receiver's callback route without its secret, e.g.
    ``https://hooks.example.com/zoho/crm/bulk-read/callback``. ``callback_secret_block``:
    the name of a Prefect ``Secret`` block holding either the receiver's callback secret
    (added as ``?secret=``) or a whole callback URL (a Prefect Cloud webhook's, whose URL
    is the credential; ``callback_url`` may then be left out). Without a block, the
    secret comes from :data:`CALLBACK_SECRET_ENV` when it is set, else ``callback_url``
    is used as it is.

    Raises :class:`CallbackSecretInParametersError` when ``callback_url`` carries a
    ``secret`` query parameter or user info (the text names neither value), ``ValueError``
    for a block holding a secret but no ``callback_url`` to add it to, and what
    ``Secret.aload`` raises for a missing block.
    """
    if callback_url is not None:
        parts = urlsplit(callback_url)
        if parts.username or parts.password or any(k == "secret" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
            raise CallbackSecretInParametersError(
                "callback_url carries a secret, which would be stored in the flow run's parameters: give the URL without it "
                f"and the secret by reference (callback_secret_block, a Prefect Secret block, or {CALLBACK_SECRET_ENV} in the worker's environment)"
            )
    if callback_secret_block:
        from prefect.blocks.system import Secret

        value = str((await Secret.aload(callback_secret_block)).value.get_secret_value())
        if value.startswith(("http://", "https://")):
            return value
        if not callback_url:
            raise ValueError(f"Secret block {callback_secret_block!r} holds a secret, not a URL: give callback_url (the receiver's callback route) too")
        return _with_secret(callback_url, value)
    if not callback_url:
        return None
    secret = os.environ.get(CALLBACK_SECRET_ENV)
    return _with_secret(callback_url, secret) if secret else callback_url


def build_request(
    module: str, fields: list[str] | None, criteria: dict[str, Any] | None, file_type: str, booking_field: str, callback_url: str | None, status_field: str | None = None
) -> BulkReadRequest:
    """The typed request; raises ``ValueError``/``pydantic.ValidationError`` naming a bad criterion.

    ``status_field``: the ``Events`` status picklist (e.g. ``Booking_Status``): asked for with
    the default fields and known to the criteria check as a picklist; ignored for other modules.
    """
    parsed = TypeAdapter(Criteria).validate_python(criteria) if criteria else None
    status_field = status_field if module == "Events" else None
    if parsed is not None and module in FIELD_TYPES:
        check_criteria(parsed, {**FIELD_TYPES[module], booking_field: "text", **({status_field: "picklist"} if status_field else {})})
    if fields is None:
        fields = [] if file_type == "ics" else mapping_fields(module, booking_field, status_field)
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


@dataclass(frozen=True)
class Polling:
    """How to wait for a job (see :func:`wait_for_job`): ``callback`` (the request has a
    callback URL), ``poll_seconds``, ``poll_max_seconds``, ``timeout_seconds``."""

    callback: bool
    poll_seconds: float
    poll_max_seconds: float
    timeout_seconds: float


@dataclass(frozen=True)
class ReadSetup:
    """What every page of one ``bulk-read`` run shares: the block, the module and the base
    request, the state store (URL and engine), the stored run's id, its work folder,
    the progress artifact's id, the file type, the booking field, the polling and the
    ``Events`` status field (None: not read)."""

    oauth_block: str
    module: str
    request: BulkReadRequest
    store_url: str
    engine: Any
    run_id: str
    folder: Path
    progress_id: Any
    file_type: str
    booking_field: str
    polling: Polling
    status_field: str | None = None


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
    callback_secret_block: str | None = None,
    poll_seconds: float = 2.0,
    poll_max_seconds: float = 60.0,
    timeout_seconds: float = 3600.0,
    work_dir: str | None = None,
    status_field: str | None = None,
) -> dict[str, Any]:
    """Read ``module`` through Bulk Read into the state store; returns a summary.

    ``criteria``: a criteria tree as JSON (``{"group_operator": ..., "group": [...]}``
    or one condition); ``fields``: API names (default: what the loader maps; none
    for ICS). ``callback_url`` (no secret in it) and ``callback_secret_block`` (the name of
    a Prefect ``Secret`` block): where Zoho posts the job when it ends, built inside the
    run by :func:`callback_target`; neither parameter holds the secret. ``status_field``: the status
    picklist on ``Events`` (``Booking_Status``), read into ``crm_events.status`` (None: not read).
    Returns ``{"run_id", "resumed", "pages", "records", "rejected", "jobs", "missing_count", "missing"}``:
    ``missing`` (at most 20 ``{"id", "booking_id"}``) are linked records the store holds that a read of
    the whole module did not return (:func:`report_missing`; none with criteria); nothing is done to them. Raises
    :class:`~zoho.errors.BulkReadFailedError`, :class:`BulkReadTimeoutError`,
    :class:`~sync.bulk_load.BulkFileError`, :class:`CallbackSecretInParametersError`,
    :class:`~zoho.errors.ForeignHostError` (a ``download_url`` off the API domain).
    """
    callback = await callback_target(callback_url, callback_secret_block)
    request = build_request(module, fields, criteria, file_type, booking_field, callback, status_field)
    store_url = store_url or default_store_url()
    engine = open_store(store_url)
    run, resumed = start_run(engine, module, request, file_type)
    setup = ReadSetup(
        oauth_block=oauth_block, module=module, request=request, store_url=store_url, engine=engine, run_id=run.id,
        folder=work_folder(work_dir, run.id), file_type=file_type, booking_field=booking_field,
        polling=Polling(bool(callback), poll_seconds, poll_max_seconds, timeout_seconds), status_field=status_field if module == "Events" else None,
        progress_id=await acreate_progress_artifact(progress=0.0, description=f"Bulk Read of {module}: starting"),
    )
    pages, records, rejected = await read_pages(setup)
    bookmark = run.created_at if not fields and criteria is None else None
    jobs = await finish_read(setup, bookmark, pages, records, rejected)
    missing_count, missing = report_missing(setup) if criteria is None else (0, [])
    engine.dispose()
    return {"run_id": run.id, "resumed": resumed, "pages": pages, "records": records, "rejected": rejected, "jobs": jobs,
            "missing_count": missing_count, "missing": missing}


def start_run(engine: Any, module: str, request: BulkReadRequest, file_type: str) -> tuple[Any, bool]:
    """The unfinished run of the same query (a crashed run) or a new one: ``(run row, resumed)``; logs which."""
    identity = {"module": module, "fields": request.query.fields, "criteria": request.to_json()["query"].get("criteria"), "file_type": file_type}
    run, resumed = bulk_runs.find_or_start_run(engine, module, identity)
    get_run_logger().info("%s Bulk Read run %s of %s", "Resuming" if resumed else "Starting", run.id, module)
    return run, resumed


def work_folder(work_dir: str | None, run_id: str) -> Path:
    """``<work_dir, $APPT_SYNC_WORK_DIR or the temp dir>/appt-sync-bulk/<run_id>``.

    One folder per run: job ids are only unique within an organisation, and a
    resumed run finds its pages again.
    """
    return Path(work_dir or AppSettings().bulk_work_dir()) / "appt-sync-bulk" / run_id


async def read_pages(setup: ReadSetup) -> tuple[int, int, int]:
    """Read every page, following ``more_records`` / ``next_page_token`` (:class:`~zoho.paging.BulkReadPaging`):
    ``(pages, records, rejected)``. On any error the run is marked ``failed`` when one of
    its jobs failed or Zoho refused to create one (:class:`~zoho.errors.BulkReadRefusedError`:
    the same query is refused again), else left ``running``, to be resumed; the error is re-raised."""
    cursor, records, rejected = BulkReadPaging(), 0, 0
    try:
        while cursor:
            job_row = await read_page(setup, cursor)
            records += job_row.records_loaded or 0
            rejected += job_row.records_rejected or 0
            cursor = cursor.after(job_row)
    except BaseException as exc:
        if isinstance(exc, BulkReadRefusedError) or any(j.state == "FAILURE" for j in bulk_runs.run_jobs(setup.engine, setup.run_id)):
            bulk_runs.finish_run(setup.engine, setup.run_id, "failed", cursor.page, records, rejected)
        raise
    return cursor.page, records, rejected


async def read_page(setup: ReadSetup, cursor: BulkReadPaging) -> Any:
    """Page ``cursor.page`` in the state store; returns its stored job row (counts, ``more_records``,
    ``next_page_token``). A page loaded before (a resumed run) is not read again."""
    job_row = bulk_runs.job_for_page(setup.engine, setup.run_id, cursor.page)
    if job_row is not None and job_row.loaded_at is not None:
        get_run_logger().info("Page %s (job %s) was loaded before: %s records", cursor.page, job_row.id, job_row.records_loaded)
        return job_row
    started = time.monotonic()
    job_row = await start_page_job(setup, cursor, job_row)
    on_state = progress_reporter(setup, cursor.page, job_row.id)
    job_row = await wait_for_page_job(setup, job_row.id, on_state)
    zip_path = await download_page(setup, job_row)
    await on_state("DOWNLOADED")
    report = load_page(setup, job_row.id, zip_path)
    bulk_runs.mark_job(setup.engine, job_row.id, seconds=time.monotonic() - started)
    zip_path.unlink(missing_ok=True)
    await on_state("LOADED")
    log_load(cursor.page, job_row.id, report)
    return bulk_runs.get_job(setup.engine, job_row.id)


async def start_page_job(setup: ReadSetup, cursor: BulkReadPaging, job_row: Any) -> Any:
    """The page's job row: ``job_row`` when the page has a job already (a resumed run), else
    a new job for ``cursor``'s query (task ``create-bulk-read-job``), recorded at once.

    Zoho refusing the job when it is created (a field, module or criterion it does not
    support) raises :class:`~zoho.errors.BulkReadRefusedError` at once (not retried: the same
    query is refused again), logged with Zoho's code and what it names."""
    logger = get_run_logger()
    if job_row is not None:
        logger.info("Resuming job %s of page %s (state %s)", job_row.id, cursor.page, job_row.state)
        return job_row
    try:
        created = await create_bulk_job(setup.oauth_block, cursor.request(setup.request))
    except BulkReadRefusedError as exc:
        logger.error("Bulk Read of %s, page %s: %s (%s); fix the query (fields, criteria, module) and run again", setup.module, cursor.page, exc.message, exc.code)
        raise
    job_row = bulk_runs.record_job_created(setup.engine, setup.run_id, cursor.page, setup.module, created.id, cursor.page_token)
    (setup.folder / f"{created.id}.zip").unlink(missing_ok=True)  # a new job's result is not on disk yet
    logger.info("Created Bulk Read job %s for page %s", created.id, cursor.page)
    return job_row


def progress_reporter(setup: ReadSetup, page: int, job_id: str) -> Callable[[str], Awaitable[None]]:
    """``await on_state(state)``: move the progress artifact to ``state``'s share (:data:`STAGE_PROGRESS`)."""

    async def on_state(state: str) -> None:
        await aupdate_progress_artifact(setup.progress_id, STAGE_PROGRESS.get(state, 0.0), description=f"{setup.module} page {page}: job {job_id} {state}")

    return on_state


async def wait_for_page_job(setup: ReadSetup, job_id: str, on_state: Callable[[str], Awaitable[None]]) -> Any:
    """Wait for job ``job_id`` to end (:func:`wait_for_job`); its stored row once ``COMPLETED``.

    Raises :class:`~zoho.errors.BulkReadFailedError` (``FAILURE``), :class:`BulkReadTimeoutError`.
    """
    ended = await wait_for_job(setup.oauth_block, setup.engine, job_id, **asdict(setup.polling), on_state=on_state)
    job_row = bulk_runs.get_job(setup.engine, job_id)
    if ended.state is BulkState.FAILURE or job_row.state == "FAILURE":
        raise job_failure(ended, job_row)
    return job_row


def job_failure(ended: BulkReadJob, job_row: Any) -> BulkReadFailedError:
    """The error for a failed job: Zoho's ``result.error_message`` when the status had one, else what the store holds."""
    error = ended.result.error_message if ended.result and ended.result.error_message else None
    return BulkReadFailedError(
        (error.code if error else None) or job_row.error_code or "FAILURE",
        (error.message if error else None) or job_row.error_message or "the Bulk Read job failed",
        error.details if error else {},
        None,
        f"Bulk Read job {job_row.id}",
    )


async def download_page(setup: ReadSetup, job_row: Any) -> Path:
    """The job's zip in the run's folder, downloaded (task ``download-bulk-result``) unless a
    previous attempt left it there."""
    zip_path = setup.folder / f"{job_row.id}.zip"
    if not zip_path.exists():
        size = await download_bulk_result(setup.oauth_block, job_row.download_url, str(zip_path))
        get_run_logger().info("Downloaded job %s: %.1f MB", job_row.id, size / 1e6)
    return zip_path


def load_page(setup: ReadSetup, job_id: str, zip_path: Path) -> LoadReport:
    """Load the zip in one transaction (task ``load-bulk-page``). A file that cannot be loaded
    (:class:`~sync.bulk_load.BulkFileError`) is deleted, so a rerun downloads the page again."""
    try:
        return load_bulk_page(setup.store_url, job_id, str(zip_path), setup.module, setup.file_type, setup.booking_field, setup.status_field)
    except BulkFileError:
        zip_path.unlink(missing_ok=True)  # nothing was loaded: a rerun downloads the page again
        raise


def log_load(page: int, job_id: str, report: LoadReport) -> None:
    """Log a loaded page, and warn when rows were rejected."""
    logger = get_run_logger()
    logger.info("Loaded page %s: %s records, %s rejected, in %.2f s", page, report.loaded, report.rejected, report.seconds)
    if report.rejected:
        logger.warning("%s rows of job %s were rejected: see the rejected_records table", report.rejected, job_id)


async def finish_read(setup: ReadSetup, bookmark: datetime | None, pages: int, records: int, rejected: int) -> list[dict[str, Any]]:
    """Mark the run ``completed``, drop its (empty) folder, advance the module's bookmark to
    ``bookmark`` (the run's start, for a full read; None: leave it), publish the table
    artifact and log the totals. Returns the table's rows (:func:`~tasks.bulk_read.job_summary`)."""
    bulk_runs.finish_run(setup.engine, setup.run_id, "completed", pages, records, rejected)
    with contextlib.suppress(OSError):
        setup.folder.rmdir()  # empty once every page is loaded
    if bookmark is not None:
        bulk_runs.set_bookmark(setup.engine, setup.module, bookmark)
    jobs = [job_summary(j) for j in bulk_runs.run_jobs(setup.engine, setup.run_id)]
    module = setup.module
    await acreate_table_artifact(table=jobs, key=f"bulk-read-{module}".lower().replace("_", "-"), description=f"Bulk Read of {module}: {pages} pages, {records} records, {rejected} rejected")
    get_run_logger().info("Bulk Read of %s done: %s pages, %s records, %s rejected", module, pages, records, rejected)
    return jobs


def report_missing(setup: ReadSetup, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """The linked records of the module's table the completed run did not return
    (:func:`sync.bulk_runs.missing_from_run`: ``(count, first limit)``), logged as a warning
    when there are any. Reported only: nothing in the store is changed. ``(0, [])`` for a
    module the loader does not map."""
    if setup.module not in MAPPINGS:
        return 0, []
    count, missing = bulk_runs.missing_from_run(setup.engine, module_mapping(setup.module).table, setup.run_id, limit)
    if count:
        get_run_logger().warning(
            "%s linked %s records in the state store were not in this Bulk Read (e.g. %s): reported only, nothing changed",
            count, setup.module, ", ".join(m["id"] for m in missing[:5]),
        )
    return count, missing


@flow(name="bulk-read-callback", flow_run_name="bulk-read-callback-{job_id}")
async def bulk_read_callback(job_id: str, state: str, result: dict[str, Any] | None = None, config_block: str = "sync-sandbox") -> str | None:
    """Record a Bulk Read job's callback in the organisation's state store (deployment ``bulk-read-callback``).

    Started by the event ``zoho.bulk_read.callback`` (the receiver's, or a Prefect
    Cloud webhook's: ``deployments/cloud/bulk-read-callback.webhook.j2``) with the
    job's ``id``, ``state`` and ``result`` (``count``, ``more_records``,
    ``download_url``, or ``error_message``: the callback JSON of seed 001). The
    ``bulk-read`` run waiting on that job with a callback checks the store
    every ``poll_seconds`` and goes on to download as soon as the job is
    ``COMPLETED`` (or raises on ``FAILURE``). Idempotent: a job already loaded is
    never moved back. Returns the stored state, or None when the job is not one of
    this organisation's.
    """
    from blocks.sync_config import AppointmentSyncConfig

    logger = get_run_logger()
    cfg = await AppointmentSyncConfig.aload(config_block)
    engine = open_store(cfg.state_store_url)
    try:
        stored = bulk_runs.record_callback(engine, {"data": [{"id": job_id, "state": state, "result": result or {}}]})
    finally:
        engine.dispose()
    if stored is None:
        logger.warning("Bulk Read job %s (%s) is not one of %s's jobs: ignored", job_id, state, config_block)
        return None
    logger.info("Bulk Read job %s is %s; the waiting bulk-read run picks it up", job_id, stored.state)
    return stored.state
