"""Tasks of the Bulk Read pipeline: create a job, read its status (never cached),
download its result, load a page. Transient Zoho errors are retried
(:mod:`tasks.retry`, which also waits out a 429's or 5xx's ``Retry-After``);
nothing else is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.zoho_oauth import ZohoOAuth
from sync.bulk_load import LoadReport, load_csv_zip, load_ics_zip, module_mapping
from sync.store import open_store
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
    """``GET /crm/bulk/v7/read/{job_id}``: the job's state now (never cached).

    The answer's ``callback`` (Zoho echoes the request's, whose URL carries the
    receiver's secret) is left out of the returned job, so no task result, log or
    artifact made from it can show the secret.
    """
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        job = await zoho.crm.get_bulk_read(job_id)
    return BulkReadJob.model_validate(job.model_dump(exclude={"callback"})) if "callback" in (job.model_extra or {}) else job


@task(name="download-bulk-result", cache_policy=NO_CACHE, retry_condition_fn=retry_transient, **ZOHO_RETRIES)
async def download_bulk_result(oauth_block: str, download_url: str, dest: str) -> int:
    """Stream the result zip to ``dest`` (a file path); returns its size in bytes.

    Writes to ``dest + ".part"`` and renames when complete, so a crash never
    leaves a truncated zip that looks finished. A 429 (Zoho allows 10 downloads
    a minute) and other transient errors are retried by the task, no sooner than
    the answer's ``Retry-After`` (:mod:`tasks.retry`). Raises the typed
    :mod:`zoho.errors` error once the retries are spent;
    :class:`~zoho.errors.ForeignHostError` at once (not retried, nothing sent) when
    ``download_url`` is not on the organisation's API domain.
    """
    part = Path(dest + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    block = await ZohoOAuth.aload(oauth_block)
    async with block.get_client() as zoho:
        with part.open("wb") as sink:
            size = await zoho.crm.download_bulk_result(download_url, sink)
    part.replace(dest)
    return size


@task(name="load-bulk-page", cache_policy=NO_CACHE)
def load_bulk_page(store_url: str, job_id: str, zip_path: str, module: str, file_type: str, booking_field: str, status_field: str | None = None) -> LoadReport:
    """Load one downloaded page into the state store (one transaction); ``status_field``: the
    ``Events`` status picklist read into ``status`` (CSV only; None: not read)."""
    engine = open_store(store_url)
    try:
        if file_type == "ics":
            return load_ics_zip(engine, zip_path, job_id)
        return load_csv_zip(engine, zip_path, job_id, module_mapping(module, booking_field, status_field))
    finally:
        engine.dispose()


def mapping_fields(module: str, booking_field: str, status_field: str | None = None) -> list[str]:
    """The fields a Bulk Read of ``module`` asks for so the loader has every column it maps
    (for ``Events`` with a ``status_field``, that field too)."""
    return module_mapping(module, booking_field, status_field).fields


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
