"""Scale-out: four organisations synced at once by two workers, Prefect and the state stores on PostgreSQL.

The production shape of DESIGN.md's "Scale" section, on one machine:

* a private PostgreSQL cluster (``conftest.pg``) holds the Prefect server's
  database (``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...``) and
  one state-store database per organisation (``postgresql+psycopg://...``, named
  in each organisation's ``AppointmentSyncConfig`` block); the password reaches
  every process as ``PGPASSWORD``, never in a URL or a block;
* four sandboxes (four organisations: different seeds and sizes, so their
  records differ), onboarded as the project onboards one (grant code ->
  ``ZohoOAuth`` block), each with its ``AppointmentSyncConfig`` block;
* one ``process`` work pool, one deployment of
  ``flows/sync_appointments.py:sync_appointments`` per organisation
  (``flow.from_source(ROOT, entrypoint).deploy``), and two workers
  (``prefect worker start --limit 2``: a worker takes at most two runs at a time).

Four full syncs are created at once, then each organisation's users edit both
sides (admin API), then four scan syncs (incremental plus the Bookings window: no
webhook receiver here) are created at once. Then:

* every organisation converges: both sides agree (``deployments.demo.disagreements``);
* no record crosses organisations: each state store holds exactly its own
  sandbox's records, with its own sandbox's times and statuses, and each sandbox
  was called only with its own organisation's access token (``calls_by_token``);
* the runs were spread over both workers (the workers' own
  ``prefect.worker.submitted-flow-run`` events say which worker took which run),
  and the Prefect server's PostgreSQL database holds them;
* no token was refreshed: each refresh token minted exactly one access token
  (at onboarding), well inside its one-hour lifetime and Zoho's 10 per 10 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from uuid import UUID

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from deployments import processes, services
from deployments.demo import disagreements

ROOT = Path(__file__).resolve().parents[1]
POOL = "scale-out"
ENTRYPOINT = "flows/sync_appointments.py:sync_appointments"
#: (organisation, sandbox seed, appointments): different data per organisation.
ORGS = [("acme", 101, 240), ("globex", 202, 280), ("initech", 303, 320), ("umbrella", 404, 360)]
WORKERS = ("worker-1", "worker-2")
RUN_TIMEOUT = 240  # seconds for a wave of four runs (bounded, not asserted as a figure)


def log(message: str) -> None:
    print(f"[scale-out {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- processes
class Processes:
    """Processes this test starts, each in its own session; stopped by their own group id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with (self.folder / f"{name}.log").open("w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True)
        self.started.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.folder / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.started):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def prefect_env(home: Path, api: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


def wait_for(check, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


# ------------------------------------------------------------------------------- edits
def local_wall(booking: dict, delta: timedelta) -> str:
    """A booking's start moved by ``delta`` as Bookings writes it (``dd-MMM-yyyy HH:mm:ss``, its own zone)."""
    moved = datetime.strptime(booking["start_time"], "%d-%b-%Y %H:%M:%S") + delta
    return f"{moved.day:02d}-{moved:%b-%Y %H:%M:%S}"


def edit_both_sides(http: httpx.Client) -> list[str]:
    """What users of one organisation do between two syncs: reschedules and cancellations on
    either side, and two conflicting edits. Returns the booking ids touched."""
    dump = http.get("/__sandbox/dump").json()
    now = datetime.now(timezone.utc)
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    pairs = [
        (a, bookings[a["Booking_Id"]]) for a in dump["Appointments__s"]
        if a.get("Booking_Id") in bookings and a["Status"] == "Scheduled" and bookings[a["Booking_Id"]]["status"] == "UPCOMING"
        and now + timedelta(hours=6) < datetime.fromisoformat(a["Appointment_Start_Time"]) < now + timedelta(days=20)
    ]  # fmt: skip
    assert len(pairs) >= 6, f"the seed has only {len(pairs)} upcoming linked appointments"

    def crm(a: dict, **changes: Any) -> None:
        http.patch(f"/__sandbox/crm/Appointments__s/{a['id']}", json=changes).raise_for_status()

    def bk(b: dict, **changes: Any) -> None:
        r = http.patch(f"/__sandbox/bookings/{b['booking_id'].replace('#', '%23')}", json=changes)
        r.raise_for_status()
        assert r.json()["response"]["status"] == "success", r.text

    def start(a: dict, delta: timedelta) -> str:
        return (datetime.fromisoformat(a["Appointment_Start_Time"]) + delta).isoformat()

    (a1, b1), (a2, b2), (a3, b3), (a4, b4), (a5, b5), (a6, b6) = pairs[:6]
    crm(a1, Appointment_Start_Time=start(a1, timedelta(days=1)))
    bk(b2, start_time=local_wall(b2, timedelta(hours=3)))
    bk(b3, action="cancel")
    crm(a4, Status="Cancelled", Cancellation_Reason="By Team", Cancellation_Note="Staff unavailable")
    crm(a5, Appointment_Start_Time=start(a5, timedelta(hours=2)))  # conflict: moved in CRM, cancelled in Bookings
    bk(b5, action="cancel")
    crm(a6, Appointment_Start_Time=start(a6, timedelta(hours=4)))  # conflict: moved differently on both sides
    bk(b6, start_time=local_wall(b6, timedelta(days=2)))
    return [b["booking_id"] for b in (b1, b2, b3, b4, b5, b6)]


# ------------------------------------------------------------------------------- stack
class ScaleOut:
    """Everything the test started, and the handles to check it."""

    def __init__(self, pg, folder: Path) -> None:
        self.pg = pg
        self.folder = folder
        self.procs = Processes(folder)
        self.api = ""
        self.sandboxes: dict[str, str] = {}
        self.stores: dict[str, str] = {}


@pytest.fixture(scope="module")
def scale_out(pg) -> Iterator[ScaleOut]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    folder = Path(tempfile.mkdtemp(prefix="appt-sync-scale-out-"))
    s = ScaleOut(pg, folder)
    home = folder / "prefect-home"
    home.mkdir()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, folder, True)  # after everything below has stopped
        cleanup.callback(s.procs.stop_all)
        # 1. the Prefect server on PostgreSQL
        started = time.monotonic()
        pg.create_database("prefect")
        port = processes.free_port()
        s.api = f"http://127.0.0.1:{port}/api"
        server = s.procs.start(
            "server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            prefect_env(home, PREFECT_API_DATABASE_CONNECTION_URL=pg.url("prefect", driver="asyncpg"), PREFECT_SERVER_UI_ENABLED="false"),
        )
        try:
            processes.wait_healthy(f"{s.api}/health", 180, server)
        except RuntimeError:
            raise RuntimeError(f"the Prefect server did not start:\n{s.procs.log_tail('server')}") from None
        log(f"Prefect server on PostgreSQL up in {time.monotonic() - started:.1f} s at {s.api}")
        cleanup.enter_context(temporary_settings({PREFECT_API_URL: s.api, PREFECT_HOME: home}))
        env = prefect_env(home, s.api)

        # 2. four organisations: sandbox, ZohoOAuth + AppointmentSyncConfig blocks, state-store database
        for org, seed, size in ORGS:
            s.sandboxes[org] = cleanup.enter_context(
                services.sandbox_process("--appointments", str(size), "--seed", str(seed), "--bulk-delay", "0.5", log_dir=folder)
            )
            s.stores[org] = pg.create_database(f"state_{org}")
        asyncio.run(_onboard(s))
        log("4 sandboxes onboarded: blocks zoho-<org> (ZohoOAuth) and sync-<org> (AppointmentSyncConfig), databases state_<org>")

        # 3. one process work pool, one deployment per organisation, two workers
        subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"], env=env, cwd=ROOT, check=True, capture_output=True)
        from flows.sync_appointments import sync_appointments

        for org, _, _ in ORGS:
            work = folder / "work" / org
            # to_deployment().apply() is Flow.deploy() without its "any workers online?" check, whose
            # request (offset/limit null) Prefect 3.8.8's server answers 422 with our fastapi pin.
            sync_appointments.from_source(str(ROOT), ENTRYPOINT).to_deployment(
                name=f"sync-{org}", work_pool_name=POOL, parameters={"config_block": f"sync-{org}"}, tags=[f"org:sync-{org}"],
                # Each organisation downloads Bulk Read results into its own folder: the default
                # folder is shared by every flow run on a machine and keyed by job id alone
                # (flows/bulk_read.py), and the sandboxes hand out the same job ids.
                job_variables={"env": {"APPT_SYNC_WORK_DIR": str(work)}},
            ).apply()
        for name in WORKERS:
            s.procs.start(
                name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process", "--name", name, "--limit", "2"],
                prefect_env(home, s.api, PREFECT_WORKER_QUERY_SECONDS="1"),
            )
        wait_for(lambda: len(asyncio.run(_online_workers())) == 2, 90, "two workers polling the pool")
        log(f"work pool {POOL!r}: 4 deployments, workers {', '.join(WORKERS)} online")
        yield s


async def _onboard(s: ScaleOut) -> None:
    from pydantic import SecretStr

    from blocks import AppointmentSyncConfig
    from deployments.onboarding import onboard, sandbox_grant

    for org, _, _ in ORGS:
        client_id, secret, code, scopes = sandbox_grant(s.sandboxes[org])
        await onboard(f"zoho-{org}", client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code),
                      data_centre="CUSTOM", base_url=s.sandboxes[org], scopes=scopes)
        await AppointmentSyncConfig(
            oauth_block=f"zoho-{org}", bookings_time_zone="Asia/Kolkata", state_store_url=s.stores[org], bookings_plan="premium",
            scan_past_hours=31 * 24, scan_future_hours=31 * 24, scan_max_calls=100,  # the whole seed: the scan carries the Bookings edits
        ).asave(f"sync-{org}", overwrite=True)


async def _online_workers() -> list[str]:
    from prefect import get_client

    async with get_client() as client:
        workers = await client.read_workers_for_work_pool(POOL, offset=0, limit=10)  # explicit: the server refuses null
    return [w.name for w in workers if str(w.status).upper().endswith("ONLINE")]


async def _run_wave(mode: str) -> dict[str, Any]:
    """Create one run per organisation at once, wait for all; returns org -> final flow run."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    runs = await asyncio.gather(*(run_deployment(f"sync-appointments/sync-{org}", parameters={"mode": mode}, timeout=0) for org, _, _ in ORGS))
    ids = {org: run.id for (org, _, _), run in zip(ORGS, runs)}
    deadline = time.monotonic() + RUN_TIMEOUT
    async with get_client() as client:
        while True:
            final = {org: await client.read_flow_run(i) for org, i in ids.items()}
            if all(r.state is not None and r.state.is_final() for r in final.values()):
                return final
            if time.monotonic() > deadline:
                raise AssertionError(f"{mode} runs not finished within {RUN_TIMEOUT} s: " + ", ".join(f"{o}: {r.state_name}" for o, r in final.items()))
            await asyncio.sleep(1)


async def _workers_of(run_ids: set[UUID]) -> dict[UUID, str]:
    """Flow run -> the worker that submitted it, from the workers' ``prefect.worker.submitted-flow-run`` events."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    out: dict[UUID, str] = {}
    async with get_client() as client:
        page = await client.read_events(EventFilter(event=EventNameFilter(name=["prefect.worker.submitted-flow-run"])), limit=50)  # the server allows 50 a page
        events = list(page.events)
        while page.next_page:
            page = await client.read_events_page(page.next_page)
            events += page.events
    for event in events:
        for related in event.related:
            if related.role == "flow-run":
                run_id = UUID(related.id.removeprefix("prefect.flow-run."))
                if run_id in run_ids:
                    out[run_id] = event.resource.name or event.resource.id
    return out


def _sandbox(url: str, path: str) -> Any:
    return httpx.get(f"{url}{path}", timeout=60).raise_for_status().json()


def _store_rows(url: str) -> tuple[dict[str, tuple], dict[str, tuple], int]:
    """(CRM records: id -> (booking id, start, status), bookings: id -> (start, status), applied actions) of one state store."""
    from sync.links import BookingRecord, SyncAction
    from sync.store import CrmAppointment

    engine = create_engine(url)
    try:
        c, b, a = CrmAppointment.__table__.c, BookingRecord.__table__.c, SyncAction.__table__.c
        with engine.connect() as conn:
            crm = {r.id: (r.booking_id, r.start_time, r.status) for r in conn.execute(select(c.id, c.booking_id, c.start_time, c.status))}
            bookings = {r.booking_id: (r.start_time, r.status) for r in conn.execute(select(b.booking_id, b.start_time, b.status))}
            applied = conn.execute(select(func.count()).select_from(SyncAction.__table__).where(a.status == "applied")).scalar_one()
    finally:
        engine.dispose()
    return crm, bookings, applied


def _token_labels(org: str) -> tuple[str, str]:
    """The sandbox's labels (hash prefixes) of the organisation's access and refresh tokens."""
    from blocks.zoho_oauth import ZohoOAuth
    from sandbox.state import token_label

    block = ZohoOAuth.load(f"zoho-{org}")
    return token_label(block.access_token.get_secret_value()), token_label(block.refresh_token.get_secret_value())


# -------------------------------------------------------------------------------- test
def test_four_organisations_sync_at_once_on_two_workers_with_postgresql(scale_out: ScaleOut):
    from zoho.timefmt import from_bookings

    s = scale_out
    started = time.monotonic()
    full = asyncio.run(_run_wave("full"))
    log(f"4 full syncs done in {time.monotonic() - started:.1f} s: " + ", ".join(f"{o} {r.state_name}" for o, r in full.items()))
    assert all(r.state.is_completed() for r in full.values()), {o: (r.state_name, r.state.message) for o, r in full.items()}
    for org, url in s.sandboxes.items():
        assert disagreements(_sandbox(url, "/__sandbox/dump")) == [], f"{org} disagrees after its full sync"

    edited: dict[str, list[str]] = {}
    for org, url in s.sandboxes.items():
        with httpx.Client(base_url=url, timeout=30) as http:
            edited[org] = edit_both_sides(http)
        assert len(disagreements(_sandbox(url, "/__sandbox/dump"))) >= 4, f"the edits of {org} left both sides agreeing"

    started = time.monotonic()
    incremental = asyncio.run(_run_wave("scan"))
    log(f"4 scan syncs done in {time.monotonic() - started:.1f} s: " + ", ".join(f"{o} {r.state_name}" for o, r in incremental.items()))
    assert all(r.state.is_completed() for r in incremental.values()), {o: (r.state_name, r.state.message) for o, r in incremental.items()}

    for org, seed, size in ORGS:
        url = s.sandboxes[org]
        dump = _sandbox(url, "/__sandbox/dump")
        stats = _sandbox(url, "/__sandbox/stats")

        # every organisation converges
        assert disagreements(dump) == [], f"{org}: both sides do not agree after the scan sync"

        # no record crosses organisations: the store holds exactly this sandbox's records, as this sandbox has them
        crm, bookings, applied = _store_rows(s.stores[org])
        theirs_crm = {a["id"]: a for a in dump["Appointments__s"]}
        theirs_bk = {b["booking_id"]: b for b in dump["bookings"]}
        assert set(crm) == set(theirs_crm) and len(crm) == size, f"{org}: the state store's CRM ids are not its sandbox's"
        assert set(bookings) == set(theirs_bk), f"{org}: the state store's bookings are not its sandbox's"
        wrong = [i for i, (bid, start, status) in crm.items()
                 if bid != theirs_crm[i]["Booking_Id"] or start != datetime.fromisoformat(theirs_crm[i]["Appointment_Start_Time"])]
        assert wrong == [], f"{org}: {len(wrong)} CRM records in its store differ from its own sandbox (e.g. {wrong[:3]})"
        wrong = [i for i, (start, status) in bookings.items() if start != from_bookings(theirs_bk[i]["start_time"], theirs_bk[i]["time_zone"])]
        assert wrong == [], f"{org}: {len(wrong)} bookings in its store differ from its own sandbox (e.g. {wrong[:3]})"
        assert applied >= len(edited[org]) - 2, f"{org}: only {applied} changes applied for {len(edited[org])} edited links"

        # each sandbox was called with its own organisation's token only; no token refreshed
        access, refresh = _token_labels(org)
        assert set(stats["calls_by_token"]) == {access}, f"{org}: its sandbox saw tokens of other organisations"
        assert stats["tokens_minted_by_refresh_token"] == {refresh: 1}, f"{org}: tokens minted {stats['tokens_minted_by_refresh_token']}"
        assert stats["token_requests_throttled"] == 0
        log(f"{org} (seed {seed}, {size} appointments): agrees; store holds its {len(crm)} records only; "
            f"{applied} changes applied; {stats['total_calls']} API calls, all with its own token; 1 token minted")

    # the runs were spread over both workers, and the Prefect server kept them in PostgreSQL
    runs = {r.id: f"{o} {mode}" for mode, wave in (("full", full), ("scan", incremental)) for o, r in wave.items()}
    taken = wait_for(lambda: (w := asyncio.run(_workers_of(set(runs)))) and len(w) == len(runs) and w, 60, "a worker event for every run")
    for run_id, worker in sorted(taken.items(), key=lambda kv: runs[kv[0]]):
        log(f"{runs[run_id]:<18} ran on {worker}")
    assert set(taken.values()) == set(WORKERS), f"the runs were not spread over both workers: {taken}"
    for wave in (full, incremental):
        assert {taken[r.id] for r in wave.values()} == set(WORKERS), "a wave of four ran on one worker only"
    engine = create_engine(s.pg.url("prefect"))
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM flow_run WHERE id = ANY(:ids) AND state_type = 'COMPLETED'"), {"ids": list(runs)}).scalar_one()
    finally:
        engine.dispose()
    assert stored == len(runs)
