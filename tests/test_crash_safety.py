"""Crash safety: the worker process is killed (SIGKILL) while it applies a plan, twice; the next
run converges with no write repeated.

The sync runs in a child process (``python -c``: one scan run against the
test's Prefect server and sandbox); the sandbox slows every CRM and Bookings call
(its ``delay`` fault) so applying 300 changes takes seconds, and the test kills the
child as soon as the sandbox's write counter shows the chosen point:

1. the first CRM batch (100 records) written, the second on its way;
2. a second child takes the plan over: the second batch written and some of the
   150 Bookings calls made. The flow logs a run's Bookings outcomes after the last
   call, so these writes have reached Zoho while the state store may know nothing
   of them: neither the action log nor our copy of the bookings shows them.

Then a run that is not killed. What the design guarantees, checked on the sandbox
itself (``writes_by_record`` in ``GET /__sandbox/stats``, ``/__sandbox/dump``):

* no record receives more than the one write its change needs. A write whose
  outcome was logged moved its link's base, so it is not planned again (and
  ``applied_keys`` re-reads a logged change before it could be sent again). A write
  that reached Zoho unlogged is found by the next run's fresh reads: CRM records
  modified since the bookmark (our own writes move ``Modified_Time``) and the
  bookings in the scan window; both sides then agree and nothing is sent.
  A booking outside that window (here: more than 15 days ahead) is not re-read, so
  the change is sent again; Bookings refuses it (same start, or already
  cancelled), and the sync reads the booking back, finds it done and records
  success (``ALREADY_DONE``) without writing;
* the last run finishes the plan: both sides agree and nothing fails.

At most one CRM batch is in flight at a kill (each is logged when it returns).
The sandbox applies a request only after its delay, so a call whose caller died
during the delay is dropped (the connection is gone when the handler reads the
body); either way the counts above hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from blocks import ZohoOAuth
from blocks.sync_config import AppointmentSyncConfig
from deployments.demo import disagreements
from flows.sync_appointments import sync_appointments

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
N_CRM_SIDE = 150  # CRM-side reschedules: 150 Bookings calls
N_BOOKINGS_SIDE = 150  # Bookings-side cancels and reschedules: 2 CRM batches (100 + 50)
#: The child: one scan sync (incremental plus the Bookings window), nothing else.
CHILD = "import asyncio, sys\nfrom flows.sync_appointments import sync_appointments\nasyncio.run(sync_appointments(config_block=sys.argv[1], mode='scan'))\n"


def bk_instant(text: str, tz: str) -> datetime:
    return datetime.strptime(text, "%d-%b-%Y %H:%M:%S").replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def bk_text(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%d-%b-%Y %H:%M:%S")


def writable(start: datetime, tz: str) -> bool:
    """The moves below (+2 h, -1 h) land on wall times Bookings reads back as the same instants (no DST fold or gap)."""
    from zoho.timefmt import from_bookings, to_bookings

    return all(from_bookings(to_bookings(t, tz), tz) == t for t in (start + timedelta(hours=2), start - timedelta(hours=1)))


def total_writes(sandbox) -> int:
    return sum(sandbox.stats()["writes"].values())


def settled_writes(sandbox, quiet: float = 1.0) -> int:
    """The write count once it has not moved for ``quiet`` seconds (requests in flight at the kill are done)."""
    last, since = total_writes(sandbox), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = total_writes(sandbox)
        if now != last:
            last, since = now, time.monotonic()
    return last


async def make_org(sandbox, tmp_path: Path) -> str:
    """``ZohoOAuth`` and ``AppointmentSyncConfig`` blocks for the sandbox: full runs read every
    booking of the seed (30 days either side of today), scan runs those up to 15 days ahead."""
    tag = uuid.uuid4().hex[:8]
    await ZohoOAuth(
        client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url,
    ).asave(f"crash-oauth-{tag}")  # fmt: skip
    await AppointmentSyncConfig(
        oauth_block=f"crash-oauth-{tag}", bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_past_days=35, bookings_future_days=60, scan_past_hours=7 * 24, scan_future_hours=15 * 24, scan_max_calls=100,
        bookings_page_size=100,  # pages of 100: the runs' reads leave the Free plan's day enough for the 150 Bookings writes
    ).asave(f"crash-{tag}")  # fmt: skip
    return f"crash-{tag}"


def edit_both_sides(sandbox) -> set[str]:
    """Change 300 future appointments through the admin API, each on one side; returns the
    ``writes_by_record`` keys of the records the sync must write (the other sides).

    Bookings-side changes are within the scan window (a scan run reads
    no booking beyond it); CRM-side ones anywhere, so some of the bookings the sync
    writes lie beyond it."""
    dump = sandbox.dump()
    crm = {a["Booking_Id"]: a for a in dump["Appointments__s"] if a.get("Booking_Id")}
    now = datetime.now(UTC)
    future = []
    for bk in sorted(dump["bookings"], key=lambda b: b["booking_id"]):
        appt, start = crm.get(bk["booking_id"]), bk_instant(bk["start_time"], bk["time_zone"])
        if appt and bk["status"] == "UPCOMING" and appt["Status"] == "Scheduled" and start > now + timedelta(hours=3) and writable(start, bk["time_zone"]):
            future.append((appt, bk, start))
    near = [f for f in future if f[2] < now + timedelta(days=14)][:N_BOOKINGS_SIDE]
    rest = [f for f in future if f not in near][:N_CRM_SIDE]
    assert len(near) == N_BOOKINGS_SIDE and len(rest) == N_CRM_SIDE, f"the seed has only {len(future)} future appointments"
    assert any(start > now + timedelta(days=16) for _, _, start in rest)  # beyond the scan window
    targets = set()
    for appt, bk, start in rest:  # a CRM user moves it 2 h later: one Bookings call
        to = (start + timedelta(hours=2)).astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
        r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{appt['id']}", json={"Appointment_Start_Time": to})
        assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text
        targets.add(f"bookings:{bk['booking_id']}")
    for i, (appt, bk, start) in enumerate(near):  # the customer cancels or moves it 1 h earlier: one record of a CRM batch
        body = {"action": "cancel"} if i % 2 else {"start_time": bk_text(start - timedelta(hours=1), bk["time_zone"])}
        r = sandbox.http.patch(f"/__sandbox/bookings/{quote(bk['booking_id'], safe='')}", json=body)
        assert r.status_code == 200 and r.json()["response"]["status"] == "success", r.text
        targets.add(f"Appointments__s:{appt['id']}")
    return targets


def run_and_kill(sandbox, prefect_api: str, config: str, tmp_path: Path, kill_when: Any) -> int:
    """Start the sync in a child process, SIGKILL it when ``kill_when(writes)`` holds; returns the writes then."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "child-home"), "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "child.log").open("a")
    child = subprocess.Popen([sys.executable, "-c", CHILD, config], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            written = total_writes(sandbox)
            if kill_when(written):
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        rc = child.wait(10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        log.close()
    # A killed worker's lease on the one-writer lock lapses only after its 60 s (the server's minimum):
    # free it now, as an operator would (``prefect gcl update appt-sync-writer-<config> --active-slots 0``).
    for _ in range(20):  # the test server's SQLite answers 503 while it is busy
        if httpx.patch(f"{prefect_api}/v2/concurrency_limits/appt-sync-writer-{config}", json={"active_slots": 0}, timeout=30).status_code == 204:
            break
        time.sleep(0.25)
    assert rc == -signal.SIGKILL, f"the child ended on its own (code {rc}) before the kill point:\n{(tmp_path / 'child.log').read_text()[-3000:]}"
    return written


async def test_sigkill_while_applying_twice_then_next_run_converges_without_repeats(sandbox, prefect_api, tmp_path):
    sandbox.http.post("/__sandbox/reset", json={"appointments": 1000}).raise_for_status()
    config = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")  # the base (and a saved access token)
    targets = edit_both_sides(sandbox)
    sandbox.http.delete("/__sandbox/stats").raise_for_status()
    total = N_CRM_SIDE + N_BOOKINGS_SIDE
    sandbox.faults(crm={"delay": 0.4}, bookings={"delay": 0.05})  # every call slower, reads included

    run_and_kill(sandbox, prefect_api, config, tmp_path, lambda written: written >= 100)  # batch 1 in, batch 2 in its delay
    first = settled_writes(sandbox)
    assert 100 <= first < total, first
    run_and_kill(sandbox, prefect_api, config, tmp_path, lambda written: written >= N_BOOKINGS_SIDE + 30)  # CRM done, Bookings under way
    sandbox.http.delete("/__sandbox/faults").raise_for_status()
    second = settled_writes(sandbox)
    partial = sandbox.stats()["writes_by_record"]

    assert first < second < total, (first, second)
    assert set(partial) <= targets and all(n == 1 for n in partial.values()), {k: n for k, n in partial.items() if n != 1}
    assert len(disagreements(sandbox.dump())) == total - second

    rerun = await sync_appointments(config_block=config, mode="scan")

    assert disagreements(sandbox.dump()) == []
    written = sandbox.stats()["writes_by_record"]
    assert set(written) == targets  # every change carried ...
    assert all(n == 1 for n in written.values()), {k: n for k, n in written.items() if n != 1}  # ... exactly once
    assert rerun.failed == 0, rerun.failures[:5]
    assert rerun.applied >= total - second  # what was left, plus re-sends found done (ALREADY_DONE: no write)
