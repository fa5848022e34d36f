"""Tasks of the Bulk Read pipeline: create a job, read its status (never cached),
download its result, load a page. Transient Zoho errors are retried
(:mod:`tasks.retry`); nothing else is. The download also waits out a 429's
``Retry-After`` itself (see :func:`download_bulk_result`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.zoho_oauth import ZohoOAuth
from sync.bulk_load import LoadReport, appointments_mapping, events_mapping, load_csv_zip, load_ics_zip
from sync.store import make_engine
from zoho.errors import RateLimitedError
from zoho.models import BulkReadJob, BulkReadRequest

from .retry import ZOHO_RETRIES, retry_transient


@task(name="create-bulk-read-job", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def create_bulk_job(oauth_block: str, request: BulkReadRequest) -> BulkReadJob:
    """``POST /crm/bulk/v7/read``: the new job (state ``ADDED``)."""
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        return await zoho.crm.create_bulk_read(request)


@task(name="get-bulk-read-status", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def get_bulk_job(oauth_block: str, job_id: str) -> BulkReadJob:
    """``GET /crm/bulk/v7/read/{job_id}``: the job's state now (never cached)."""
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        return await zoho.crm.get_bulk_read(job_id)


#: Longest ``Retry-After`` the download waits out itself (Zoho's limit is 10 a minute).
MAX_RETRY_AFTER = 90.0
#: How many 429 answers with ``Retry-After`` one download attempt waits out.
RATE_LIMIT_WAITS = 3


@task(name="download-bulk-result", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def download_bulk_result(oauth_block: str, download_url: str, dest: str) -> int:
    """Stream the result zip to ``dest`` (a file path); returns its size in bytes.

    Writes to ``dest + ".part"`` and renames when complete, so a crash never
    leaves a truncated zip that looks finished. A 429 (at most 10 downloads a
    minute) is waited out for its ``Retry-After`` (up to :data:`MAX_RETRY_AFTER`
    seconds, :data:`RATE_LIMIT_WAITS` times) and tried again: the task's own
    retries (2 to 16 s apart) would all land inside the same minute. Other
    transient errors, and a 429 without ``Retry-After``, are retried by the task.
    """
    part = Path(dest + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        for waited in range(RATE_LIMIT_WAITS + 1):
            try:
                with part.open("wb") as sink:
                    size = await zoho.crm.download_bulk_result(download_url, sink)
                break
            except RateLimitedError as exc:
                if waited == RATE_LIMIT_WAITS or exc.retry_after is None or exc.retry_after > MAX_RETRY_AFTER:
                    raise
                get_run_logger().info("Zoho allows 10 Bulk Read downloads a minute: trying again in %.0f s", exc.retry_after)
                await asyncio.sleep(exc.retry_after)
    part.replace(dest)
    return size


@task(name="load-bulk-page", cache_policy=NO_CACHE)
def load_bulk_page(store_url: str, job_id: str, zip_path: str, module: str, file_type: str, booking_field: str) -> LoadReport:
    """Load one downloaded page into the state store (one transaction)."""
    engine = make_engine(store_url)
    try:
        if file_type == "ics":
            return load_ics_zip(engine, zip_path, job_id)
        mapping = appointments_mapping(booking_field) if module == "Appointments__s" else events_mapping(booking_field)
        return load_csv_zip(engine, zip_path, job_id, mapping)
    finally:
        engine.dispose()


def mapping_fields(module: str, booking_field: str) -> list[str]:
    """The fields a Bulk Read of ``module`` asks for so the loader has every column it maps."""
    mapping = appointments_mapping(booking_field) if module == "Appointments__s" else events_mapping(booking_field)
    return mapping.fields


def job_summary(job: Any) -> dict[str, Any]:
    """A row of the run's table artifact."""
    return {
        "page": job.page_index,
        "job_id": job.id,
        "state": job.state,
        "records": job.records_loaded if job.records_loaded is not None else job.count,
        "rejected": job.records_rejected or 0,
        "seconds": round(job.seconds or 0.0, 2),
    }
