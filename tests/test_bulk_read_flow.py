"""The ``bulk-read`` flow against the sandbox, on the Prefect test harness.

Every test gets a freshly seeded sandbox (300 appointments, jobs end after 0.3 s),
a saved ``ZohoOAuth`` block for it and its own SQLite state store and work folder.
What a read should store is computed from ``/__sandbox/dump``; what it cost is read
from ``/__sandbox/stats`` (jobs created, downloads, calls per route).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import Session

import flows.bulk_read as flow_module
from blocks import ZohoOAuth
from flows.bulk_read import BulkReadTimeoutError, bulk_read
from sync import bulk_runs
from sync.store import BulkReadRun, CrmAppointment, CrmEvent, open_store
from zoho.clients import CrmClient
from zoho.errors import BulkReadFailedError

STATUS_CALL = "GET /crm/bulk/{version}/read/{job_id}"


# ------------------------------------------------------------------- helpers
@pytest.fixture
async def oauth_block(sandbox, prefect_api) -> str:
    """The name of a saved ZohoOAuth block for the sandbox."""
    name = f"bulk-{uuid.uuid4().hex[:8]}"
    block = ZohoOAuth(
        client_id=sandbox.creds["client_id"],
        client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]),
        data_centre="CUSTOM",
        base_url=sandbox.url,
    )
    await block.asave(name)
    return name


@pytest.fixture
def store(tmp_path):
    """This test's state store URL and an engine on it."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_store(url)
    yield url, engine
    engine.dispose()


@pytest.fixture
def read(oauth_block, store, tmp_path):
    """``await read(**params)``: run the flow on this test's block, store and work folder."""
    url, _ = store

    async def run(**params: Any) -> dict[str, Any]:
        defaults = {"oauth_block": oauth_block, "store_url": url, "work_dir": str(tmp_path / "work"), "poll_seconds": 0.2, "poll_max_seconds": 1.0, "timeout_seconds": 60}
        return await bulk_read(**{**defaults, **params})

    return run


def stored_ids(engine, table: Any = CrmAppointment) -> list[str]:
    with Session(engine) as s:
        return list(s.exec(select(table.id)).scalars())


def dump(sandbox, module: str = "Appointments__s") -> list[dict[str, Any]]:
    return sandbox.dump(module=module)[module]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def runs(engine) -> list[BulkReadRun]:
    with Session(engine) as s:
        return list(s.exec(select(BulkReadRun)).scalars())


# ---------------------------------------------------------------- full reads
async def test_a_multi_page_read_stores_every_record_once(sandbox, read, store, prefect_api):
    _, engine = store
    sandbox.config(bulk_page_size=70)
    started = datetime.now(timezone.utc)
    result = await read()

    expected = sorted(r["id"] for r in dump(sandbox))
    ids = stored_ids(engine)
    assert len(expected) == 300 and sorted(ids) == expected  # every id, each once (id is the key)
    assert (result["pages"], result["records"], result["rejected"], result["resumed"]) == (5, 300, 0, False)
    assert [(j["page"], j["records"], j["state"]) for j in result["jobs"]] == [(1, 70, "COMPLETED"), (2, 70, "COMPLETED"), (3, 70, "COMPLETED"), (4, 70, "COMPLETED"), (5, 20, "COMPLETED")]
    stats = sandbox.stats()
    assert stats["bulk_jobs_created"] == 5 and stats["bulk_downloads"] == 5
    # Stored values are the dump's, in UTC.
    record = next(r for r in dump(sandbox) if r["Status"] == "Cancelled")
    with Session(engine) as s:
        row = s.get(CrmAppointment, record["id"])
    assert (row.status, row.booking_id, row.duration) == ("Cancelled", record["Booking_Id"], record["Duration"])
    assert row.start_time == instant(record["Appointment_Start_Time"]) and row.start_time.tzinfo == timezone.utc
    # The table artifact lists the pages; the run is closed; the bookmark is the run's start.
    artifacts = httpx.post(f"{prefect_api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["bulk-read-appointments--s"]}}, "sort": "CREATED_DESC", "limit": 1}, timeout=30).raise_for_status().json()
    table = artifacts[0]["data"]
    assert [j["job_id"] for j in result["jobs"]] == [row["job_id"] for row in (table if isinstance(table, list) else json.loads(table))]
    [run] = runs(engine)
    assert (run.status, run.pages, run.records) == ("completed", 5, 300)
    bookmark = bulk_runs.get_bookmark(engine, "Appointments__s")
    assert bookmark is not None and started <= bookmark <= datetime.now(timezone.utc)


async def test_criteria_with_nested_groups_between_and_in(sandbox, read, store):
    _, engine = store
    records = dump(sandbox)
    starts = sorted(instant(r["Appointment_Start_Time"]) for r in records)
    low, high = starts[60], starts[240]
    criteria = {
        "group_operator": "or",
        "group": [
            {
                "group_operator": "and",
                "group": [
                    {"field": {"api_name": "Appointment_Start_Time"}, "comparator": "between", "value": [low.isoformat(), high.isoformat()]},
                    {"field": {"api_name": "Status"}, "comparator": "in", "value": ["Scheduled", "Overdue"]},
                ],
            },
            {"field": {"api_name": "Duration"}, "comparator": "greater_equal", "value": 60},
        ],
    }
    result = await read(criteria=criteria)

    expected = {
        r["id"] for r in records
        if (low <= instant(r["Appointment_Start_Time"]) <= high and r["Status"] in ("Scheduled", "Overdue")) or r["Duration"] >= 60
    }  # fmt: skip
    assert 0 < len(expected) < 300
    assert set(stored_ids(engine)) == expected and result["records"] == len(expected)
    assert bulk_runs.get_bookmark(engine, "Appointments__s") is None  # a filtered read is not a full one


async def test_events_as_ics(sandbox, read, store):
    _, engine = store
    result = await read(module="Events", file_type="ics")

    events = {r["id"]: r for r in dump(sandbox, "Events")}
    with Session(engine) as s:
        rows = {r.id: r for r in s.exec(select(CrmEvent)).scalars()}
    assert set(rows) == set(events) and result["records"] == 300
    some = next(iter(rows.values()))
    assert some.booking_id == events[some.id]["Booking_Id"]
    assert some.start_time == instant(events[some.id]["Start_DateTime"]) and some.title == events[some.id]["Event_Title"]


async def test_a_job_id_seen_before_is_taken_as_a_new_job(sandbox, read, store):
    """A sandbox re-seeded (or restarted) hands out the same job ids again."""
    _, engine = store
    first = await read()
    sandbox.http.post("/__sandbox/reset", json={}).raise_for_status()
    second = await read()

    assert first["jobs"][0]["job_id"] == second["jobs"][0]["job_id"]
    assert second["records"] == 300 and second["run_id"] != first["run_id"]
    [job] = bulk_runs.run_jobs(engine, second["run_id"])
    assert job.records_loaded == 300 and job.state == "COMPLETED"


# ------------------------------------------------------------------ failures
async def test_a_failed_job_raises_zohos_error_and_fails_the_run(sandbox, read, store):
    _, engine = store
    sandbox.config(bulk_job_failure_rate=1.0)  # the sandbox's fault injection: every job ends in FAILURE
    with pytest.raises(BulkReadFailedError) as failed:
        await read()
    assert (failed.value.code, failed.value.message) == ("INTERNAL_ERROR", "Internal Server Error")
    [run] = runs(engine)
    assert run.status == "failed"
    [job] = bulk_runs.run_jobs(engine, run.id)
    assert (job.state, job.error_code) == ("FAILURE", "INTERNAL_ERROR")
    assert stored_ids(engine) == []


#: Queries Zoho refuses when the job is created: flow parameters, Zoho's code, what the error names.
REFUSED_AT_CREATE = [
    ({"fields": ["Appointment_Start_Time", "Status", "Modified_Time", "Booking_Id", "Not_A_Field__c"]}, "FIELD_NOT_SUPPORTED", "field Not_A_Field__c of Appointments__s"),
    ({"criteria": {"field": {"api_name": "Booking_Idx"}, "comparator": "equal", "value": "#AN-00001"}, "booking_field": "Booking_Idx", "fields": ["Appointment_Start_Time", "Status"]},
     "INVALID_CRITERIA", "field Booking_Idx"),
    ({"module": "Contacts", "fields": ["Last_Name"]}, "MODULE_NOT_SUPPORTED", "module Contacts"),
]


async def test_a_query_zoho_refuses_at_create_fails_the_run_naming_it(sandbox, read, store):
    """crm-oas v8.0 bulk_read.json: an unknown field, criteria on a field the org does not have,
    an unsupported module are refused with 400 when the job is created; the run fails at once
    (no job, no retry) with an error naming the field, criterion or module. (One test, one
    ZohoOAuth block: the session's Prefect server lists blocks in other tests.)"""
    from zoho.errors import BulkReadRefusedError

    _, engine = store
    for i, (params, code, named) in enumerate(REFUSED_AT_CREATE, start=1):
        with pytest.raises(BulkReadRefusedError) as refused:
            await read(**params)
        error = refused.value
        assert (error.code, error.status_code, error.transient) == (code, 400, False)
        assert error.message.startswith("Zoho refused the Bulk Read job: ") and named in error.message, error.message
        stats = sandbox.stats()
        assert stats["calls"].get("POST /crm/bulk/{version}/read") == i  # refused once each, not retried
        assert stats["bulk_jobs_created"] == 0
        assert len(runs(engine)) == i
        assert all(run.status == "failed" and bulk_runs.run_jobs(engine, run.id) == [] for run in runs(engine))
    assert stored_ids(engine) == []


async def test_a_comparator_wrong_for_the_field_fails_before_any_call(sandbox, read, store):
    _, engine = store
    with pytest.raises(ValueError, match="greater_than.*Status"):
        await read(criteria={"field": {"api_name": "Status"}, "comparator": "greater_than", "value": "Scheduled"})
    stats = sandbox.stats()
    assert stats["bulk_jobs_created"] == 0 and stats["calls_by_group"].get("bulk", 0) == 0
    assert runs(engine) == []


async def test_a_rerun_after_a_timeout_resumes_the_job_it_created(sandbox, read, store):
    _, engine = store
    with pytest.raises(BulkReadTimeoutError):
        await read(timeout_seconds=0.01)
    assert sandbox.stats()["bulk_jobs_created"] == 1 and stored_ids(engine) == []

    result = await read()
    assert result["resumed"] is True and result["records"] == 300
    assert sandbox.stats()["bulk_jobs_created"] == 1
    assert len(stored_ids(engine)) == 300
    [run] = runs(engine)
    assert run.status == "completed" and result["run_id"] == run.id


async def test_a_rerun_after_a_crash_mid_read_loads_only_what_is_missing(sandbox, read, store, monkeypatch):
    _, engine = store
    sandbox.config(bulk_page_size=200)
    real = flow_module.load_bulk_page
    loads: list[str] = []

    def crash_on_page_two(*args: Any, **kwargs: Any):
        loads.append(args[1])
        if len(loads) == 2:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(flow_module, "load_bulk_page", crash_on_page_two)
    with pytest.raises(RuntimeError, match="worker lost"):
        await read()
    monkeypatch.setattr(flow_module, "load_bulk_page", real)
    assert len(stored_ids(engine)) == 200  # page 1 is in, page 2 is not
    first = bulk_runs.get_job(engine, loads[0])

    result = await read()
    assert result["resumed"] is True and result["pages"] == 2 and result["records"] == 300
    assert len(stored_ids(engine)) == 300
    stats = sandbox.stats()
    assert stats["bulk_jobs_created"] == 2  # no new job
    assert stats["bulk_downloads"] == 2  # page 2's zip was kept, page 1 not read again
    assert bulk_runs.get_job(engine, loads[0]).loaded_at == first.loaded_at


async def test_a_429_on_download_is_waited_out(sandbox, read, store, monkeypatch):
    _, engine = store
    real = CrmClient.download_bulk_result
    limited: dict[str, float] = {}

    async def over_the_limit_once(self, url, sink, *args, **kwargs):
        """The first download meets Zoho's download limit (429, Retry-After 4 s) for 4 s."""
        if not limited:
            limited["since"] = time.monotonic()
            sandbox.faults(bulk={"error_429": 1.0, "retry_after": 4})
        elif time.monotonic() - limited["since"] >= 3.9:  # the task's own first retry comes after 1-3 s
            sandbox.http.delete("/__sandbox/faults").raise_for_status()
        return await real(self, url, sink, *args, **kwargs)

    monkeypatch.setattr(CrmClient, "download_bulk_result", over_the_limit_once)
    result = await read()

    assert result["records"] == 300 and len(stored_ids(engine)) == 300
    stats = sandbox.stats()
    assert stats["faults_injected"].get("bulk:429") == 1  # one 429, then it waited for Retry-After
    assert stats["bulk_downloads"] == 1 and stats["bulk_jobs_created"] == 1


async def test_a_server_error_on_a_status_call_is_retried(sandbox, read, store, monkeypatch):
    _, engine = store
    real = CrmClient.get_bulk_read
    failed: list[str] = []

    async def one_server_error(self, job_id):
        sandbox.faults(bulk={"error_500": 1.0} if not failed else {})
        try:
            return await real(self, job_id)
        finally:
            failed.append(job_id)

    monkeypatch.setattr(CrmClient, "get_bulk_read", one_server_error)
    result = await read()
    assert result["records"] == 300 and len(stored_ids(engine)) == 300
    assert sandbox.stats()["faults_injected"].get("bulk:500") == 1


# ------------------------------------------------------------------ callback
async def test_the_callback_ends_the_wait_without_polling_zoho(sandbox, read, store, receiver):
    url, engine = store
    stop = threading.Event()
    recorded: list[str] = []

    def relay() -> None:
        """What the webhook receiver will do: write each callback into the state store."""
        relay_engine = open_store(url)
        seen = 0
        while not stop.is_set():
            for item in receiver.received[seen:]:
                if item["path"] == "/cb":
                    job = bulk_runs.record_callback(relay_engine, item["json"])
                    recorded.append(job.id if job else "")
                seen += 1
            time.sleep(0.05)
        relay_engine.dispose()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        result = await read(callback_url=receiver.url + "/cb", poll_seconds=0.1, poll_max_seconds=60, timeout_seconds=30)
    finally:
        stop.set()
        thread.join(5)

    assert result["records"] == 300 and len(stored_ids(engine)) == 300
    [job] = result["jobs"]
    assert recorded == [job["job_id"]]
    assert sandbox.stats()["calls"].get(STATUS_CALL, 0) == 1  # the first look only; the callback did the rest



async def test_the_bulk_read_callback_flow_ends_the_wait(sandbox, read, store, receiver, prefect_api):
    """The ``bulk-read-callback`` deployment's flow, fed what the event carries, lets the waiting read go on."""
    import asyncio

    from blocks.sync_config import AppointmentSyncConfig
    from flows.bulk_read import bulk_read_callback

    url, engine = store
    org = f"sync-{uuid.uuid4().hex[:8]}"
    await AppointmentSyncConfig(state_store_url=url).asave(org)
    states: list[str | None] = []

    async def relay() -> None:
        seen = 0
        while True:
            for item in receiver.received[seen:]:
                seen += 1
                job = item["json"]["data"][0]  # what the receiver's event payload carries
                states.append(await bulk_read_callback(job_id=str(job["id"]), state=job["state"], result=job.get("result"), config_block=org))
            await asyncio.sleep(0.05)

    relaying = asyncio.create_task(relay())
    try:
        result = await read(callback_url=receiver.url + "/cb", poll_seconds=0.1, poll_max_seconds=60, timeout_seconds=30)
    finally:
        relaying.cancel()
    assert result["records"] == 300 and states == ["COMPLETED"]
    assert sandbox.stats()["calls"].get(STATUS_CALL, 0) == 1  # the callback, not polling, ended the wait
    assert await bulk_read_callback(job_id="999", state="COMPLETED", config_block=org) is None  # not one of ours: ignored
