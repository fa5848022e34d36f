"""Bookkeeping of Bulk Read runs and jobs in the state store (pure: no Prefect, no HTTP).

A *run* is one logical read (module, fields, criteria, file type) across all its
pages; each page is one Zoho job. Recording a job the moment Zoho creates it is
what makes a crashed read resumable: the rerun finds the running run with the
same query and re-polls or re-downloads its jobs (Zoho keeps results 24 hours)
instead of creating new ones.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from .tables import Bookmark, BulkJob, BulkReadRun, utc_now

#: Zoho keeps a job's result (and its ``next_page_token``) this long; we stay under it.
RESUME_WINDOW = timedelta(hours=23)


def query_hash(query: dict[str, Any]) -> str:
    """A stable hash of a Bulk Read query (module, fields, criteria, file type; no page)."""
    return hashlib.sha256(json.dumps(query, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def find_or_start_run(engine: Engine, module: str, query: dict[str, Any], now: datetime | None = None) -> tuple[BulkReadRun, bool]:
    """The running run of ``query`` started within :data:`RESUME_WINDOW`, or a new one.

    Returns ``(run, resumed)``.
    """
    now = now or utc_now()
    digest = query_hash(query)
    with Session(engine) as s:
        run = s.exec(
            select(BulkReadRun)
            .where(BulkReadRun.query_hash == digest, BulkReadRun.status == "running")
            .order_by(BulkReadRun.created_at.desc().nulls_last())  # NULLs sort first in PostgreSQL's DESC, last in SQLite's
        ).first()
        if run is not None and run.created_at and run.created_at > now - RESUME_WINDOW:
            return run, True
        if run is not None:
            run.status = "expired"
            s.add(run)
        run = BulkReadRun(id=uuid.uuid4().hex, module=module, query_hash=digest, query_json=json.dumps(query, sort_keys=True), created_at=now)
        s.add(run)
        s.commit()
        s.refresh(run)
        return run, False


def job_for_page(engine: Engine, run_id: str, page_index: int) -> BulkJob | None:
    """The newest usable job of page ``page_index`` of run ``run_id`` (not failed or expired)."""
    with Session(engine) as s:
        return s.exec(
            select(BulkJob)
            .where(BulkJob.run_id == run_id, BulkJob.page_index == page_index, BulkJob.state.not_in(["FAILURE", "EXPIRED"]))
            .order_by(BulkJob.created_at.desc().nulls_last())  # the same order on every database
        ).first()


def record_job_created(engine: Engine, run_id: str, page_index: int, module: str, job_id: str, page_token: str | None, created_at: datetime | None = None) -> BulkJob:
    """Store a job Zoho just created (state ``ADDED``).

    Zoho never hands out a job id twice, but a sandbox restarted from its seed
    does: a stored job with the same id (of an earlier run) is replaced.
    """
    job = BulkJob(id=job_id, run_id=run_id, page_index=page_index, module=module, page_token=page_token, state="ADDED", created_at=created_at or utc_now())
    with Session(engine) as s:
        job = s.merge(job)
        s.commit()
        s.refresh(job)
    return job


def record_job_status(engine: Engine, job_json: dict[str, Any]) -> BulkJob | None:
    """Update a job from Zoho's status JSON (``data[0]`` of the status call or the callback).

    Returns the stored job, or None when the job is not ours. A job already
    ``COMPLETED`` and loaded is never moved back. ``result.download_url`` is stored as
    given (Zoho sends it relative to the API domain); whoever downloads it must send
    the token to the API domain only (:func:`zoho.clients.own_url` refuses other hosts).
    """
    job_id = str(job_json.get("id", ""))
    with Session(engine) as s:
        job = s.get(BulkJob, job_id)
        if job is None:
            return None
        if job.loaded_at is None:
            state = str(job_json.get("state") or job.state)
            job.state = state
            result = job_json.get("result") or {}
            if state == "COMPLETED":
                job.count = result.get("count")
                job.more_records = bool(result.get("more_records"))
                job.next_page_token = result.get("next_page_token")
                job.download_url = result.get("download_url")
                job.finished_at = job.finished_at or utc_now()
            elif state == "FAILURE":
                error = result.get("error_message") or {}
                job.error_code = str(error.get("code") or "FAILURE")
                job.error_message = str(error.get("message") or "the job failed")
                job.finished_at = job.finished_at or utc_now()
            s.add(job)
            s.commit()
            s.refresh(job)
        return job


def record_callback(engine: Engine, payload: dict[str, Any]) -> BulkJob | None:
    """Apply a Bulk Read callback body (``{"data": [job]}`` or the job itself)."""
    data = payload.get("data")
    job_json = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else payload
    return record_job_status(engine, job_json)


def get_job(engine: Engine, job_id: str) -> BulkJob | None:
    """The stored job, if any."""
    with Session(engine) as s:
        return s.get(BulkJob, job_id)


def mark_job(engine: Engine, job_id: str, **values: Any) -> None:
    """Set columns of a stored job."""
    with Session(engine) as s:
        job = s.get(BulkJob, job_id)
        if job is not None:
            for key, value in values.items():
                setattr(job, key, value)
            s.add(job)
            s.commit()


def finish_run(engine: Engine, run_id: str, status: str, pages: int, records: int, rejected: int) -> None:
    """Close a run (``completed`` or ``failed``)."""
    with Session(engine) as s:
        run = s.get(BulkReadRun, run_id)
        if run is not None:
            run.status, run.pages, run.records, run.rejected, run.finished_at = status, pages, records, rejected, utc_now()
            s.add(run)
            s.commit()


def set_bookmark(engine: Engine, module: str, modified_since: datetime) -> None:
    """Advance the module's bookmark to ``modified_since`` (never backwards)."""
    with Session(engine) as s:
        mark = s.get(Bookmark, module) or Bookmark(module=module)
        if mark.modified_since is None or modified_since > mark.modified_since:
            mark.modified_since = modified_since
        mark.updated_at = utc_now()
        s.add(mark)
        s.commit()


def get_bookmark(engine: Engine, module: str) -> datetime | None:
    """The module's bookmark, or None before the first full read."""
    with Session(engine) as s:
        mark = s.get(Bookmark, module)
        return mark.modified_since if mark else None


def run_jobs(engine: Engine, run_id: str) -> list[BulkJob]:
    """The jobs of a run, by page."""
    with Session(engine) as s:
        return list(s.exec(select(BulkJob).where(BulkJob.run_id == run_id).order_by(BulkJob.page_index, BulkJob.created_at.asc().nulls_last())))


def missing_from_run(engine: Engine, table: Any, run_id: str, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """The linked records of ``table`` a completed whole-module run did not return: ``(count, first ``limit``)``.

    ``table``: the module's state-store table (:class:`~sync.tables.CrmAppointment`,
    :class:`~sync.tables.CrmEvent`; a class or a ``Table``). A record counts when it is
    linked (``booking_id`` set), not deleted (``deleted_at`` empty, where the table has
    it), its ``job_id`` is none of the run's jobs (a records-API read leaves it empty),
    and it was not modified since the run started (``modified_time`` empty or earlier:
    a record created or changed after Zoho took its snapshot is not in the file, or was
    not overwritten by it, without being missing). The list holds ``{"id", "booking_id"}``
    by ``id``. Only a report: nothing is changed. ``(0, [])`` for a run that is not
    ``completed`` or that had criteria (a partial or filtered read says nothing about
    the rest), and for an unknown run.
    """
    with Session(engine) as s:
        run = s.get(BulkReadRun, run_id)
    if run is None or run.status != "completed" or json.loads(run.query_json or "{}").get("criteria") is not None:
        return 0, []
    store_table = getattr(table, "__table__", table)
    columns = store_table.c
    jobs = sa_select(BulkJob.__table__.c.id).where(BulkJob.__table__.c.run_id == run_id)
    conditions = [columns.booking_id.is_not(None), or_(columns.job_id.is_(None), columns.job_id.not_in(jobs))]
    if "deleted_at" in columns:
        conditions.append(columns.deleted_at.is_(None))
    if run.created_at is not None:
        conditions.append(or_(columns.modified_time.is_(None), columns.modified_time < run.created_at))
    with engine.connect() as conn:
        count = conn.execute(sa_select(func.count()).select_from(store_table).where(*conditions)).scalar_one()
        rows = conn.execute(sa_select(columns.id, columns.booking_id).where(*conditions).order_by(columns.id).limit(limit)).all() if count else []
    return count, [{"id": r.id, "booking_id": r.booking_id} for r in rows]
