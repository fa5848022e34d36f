"""One writer per organisation (issue 13): two runs of one organisation at once send each write once.

Both runs start together in this process against a slowed sandbox (its ``delay``
fault), after edits on both sides; their reads overlap, but the Bookings read,
planning and applying run inside the organisation's Prefect global concurrency
limit ``appt-sync-writer-<config block>`` (limit 1), so the second run plans after
the first committed its writes and bases and finds nothing left to send. Checked
on the sandbox itself (``writes_by_record`` of ``GET /__sandbox/stats``, the dump).

Also: ``bookings_calls_per_second`` makes the Bookings calls go through Prefect's
``rate_limit`` on ``zoho-bookings-rate-<oauth block>`` (a limit with slot decay,
created on first use).
"""

from __future__ import annotations

import asyncio
import json
import os
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
from flows.sync_appointments import sync_appointments, writer_lock_name
from tasks.sync import bookings_rate_name
from zoho.timefmt import from_bookings, to_bookings

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
#: The child: one scan sync (incremental plus the Bookings window); prints what its summary says as one JSON line.
CHILD = (
    "import asyncio, json, sys\nfrom flows.sync_appointments import sync_appointments\n"
    "s = asyncio.run(sync_appointments(config_block=sys.argv[1], mode='scan'))\n"
    "print(json.dumps({'started_at': s.started_at.isoformat(), 'finished_at': s.finished_at.isoformat(), "
    "'applied': s.applied, 'failed': s.failed, 'changes': s.changes}, default=str))\n"
)
N_EACH_SIDE = 15


def writable(start: datetime, tz: str) -> bool:
    """The moves below (+2 h, -1 h) land on wall times Bookings reads back as the same instants (no DST fold or gap)."""
    return all(from_bookings(to_bookings(t, tz), tz) == t for t in (start + timedelta(hours=2), start - timedelta(hours=1)))


async def make_org(sandbox, tmp_path: Path, **settings) -> tuple[str, str]:
    """``ZohoOAuth`` and ``AppointmentSyncConfig`` blocks for the sandbox; returns (config block, oauth block)."""
    tag = uuid.uuid4().hex[:8]
    await ZohoOAuth(
        client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url,
    ).asave(f"writer-oauth-{tag}")  # fmt: skip
    await AppointmentSyncConfig(
        oauth_block=f"writer-oauth-{tag}", bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{tmp_path / 'state.db'}",
        bookings_past_days=35, bookings_future_days=60, scan_past_hours=7 * 24, scan_future_hours=15 * 24, scan_max_calls=100, **settings,
    ).asave(f"writer-{tag}")  # fmt: skip
    return f"writer-{tag}", f"writer-oauth-{tag}"


def edit_both_sides(sandbox, n: int) -> set[str]:
    """``n`` CRM-side reschedules (+2 h) and ``n`` Bookings-side cancels or moves (-1 h) of future
    appointments within the scan window; returns the ``writes_by_record`` keys the sync must write."""
    dump = sandbox.dump()
    crm = {a["Booking_Id"]: a for a in dump["Appointments__s"] if a.get("Booking_Id")}
    now = datetime.now(UTC)
    future = []
    for bk in sorted(dump["bookings"], key=lambda b: b["booking_id"]):
        appt, start = crm.get(bk["booking_id"]), from_bookings(bk["start_time"], bk["time_zone"])
        if appt and bk["status"] == "UPCOMING" and appt["Status"] == "Scheduled" and now + timedelta(hours=3) < start < now + timedelta(days=14) and writable(start, bk["time_zone"]):
            future.append((appt, bk, start))
    assert len(future) >= 2 * n, f"the seed has only {len(future)} future appointments in the window"
    targets = set()
    for appt, bk, start in future[:n]:  # a CRM user moves it 2 h later: one Bookings call
        to = (start + timedelta(hours=2)).astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
        r = sandbox.http.patch(f"/__sandbox/crm/Appointments__s/{appt['id']}", json={"Appointment_Start_Time": to})
        assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text
        targets.add(f"bookings:{bk['booking_id']}")
    for i, (appt, bk, start) in enumerate(future[n : 2 * n]):  # the customer cancels or moves it 1 h earlier: one CRM record
        body = {"action": "cancel"} if i % 2 else {"start_time": to_bookings(start - timedelta(hours=1), bk["time_zone"])}
        r = sandbox.http.patch(f"/__sandbox/bookings/{quote(bk['booking_id'], safe='')}", json=body)
        assert r.status_code == 200 and r.json()["response"]["status"] == "success", r.text
        targets.add(f"Appointments__s:{appt['id']}")
    return targets


def sync_in_child(prefect_api: str, config: str, home: Path) -> dict[str, Any]:
    """One scan run in a child process, as two workers would run them (flow runs of one
    process run one after the other); returns its summary's ``started_at``, ``finished_at``,
    ``applied``, ``failed`` and ``changes``."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", CHILD, config], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["started_at"], summary["finished_at"] = (datetime.fromisoformat(summary[k]) for k in ("started_at", "finished_at"))
    return summary


def read_limit(prefect_api: str, name: str) -> dict:
    return httpx.get(f"{prefect_api}/v2/concurrency_limits/{name}", timeout=30).raise_for_status().json()


async def test_two_runs_of_one_organisation_at_once_write_each_change_once(sandbox, prefect_api, tmp_path):
    config, _ = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")  # the base (and a saved access token)
    targets = edit_both_sides(sandbox, N_EACH_SIDE)
    sandbox.http.delete("/__sandbox/stats").raise_for_status()
    sandbox.faults(crm={"delay": 0.5}, bookings={"delay": 0.3})  # reads and writes slow enough for the runs to overlap

    started = time.monotonic()
    first, second = await asyncio.gather(*(asyncio.to_thread(sync_in_child, prefect_api, config, tmp_path / f"child-{i}") for i in (1, 2)))
    both = time.monotonic() - started
    sandbox.http.delete("/__sandbox/faults").raise_for_status()

    written = sandbox.stats()["writes_by_record"]
    assert set(written) == targets  # every change carried ...
    assert all(n == 1 for n in written.values()), {k: n for k, n in written.items() if n != 1}  # ... exactly once
    assert disagreements(sandbox.dump()) == []
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]  # the runs overlapped
    claimed = [{(c["booking_id"], c["target"], c["kind"], c["value"]) for c in s["changes"]} for s in (first, second)]
    assert not claimed[0] & claimed[1], claimed[0] & claimed[1]  # no change claimed by both runs
    assert len(claimed[0] | claimed[1]) == len(targets) == first["applied"] + second["applied"]
    assert first["failed"] == second["failed"] == 0
    assert read_limit(prefect_api, writer_lock_name(config))["limit"] == 1
    assert both < 25, both


async def test_bookings_rate_is_a_global_limit_with_slot_decay(sandbox, prefect_api, tmp_path):
    config, oauth = await make_org(sandbox, tmp_path)
    await sync_appointments(config_block=config, mode="full")
    targets = edit_both_sides(sandbox, 3)
    sandbox.http.delete("/__sandbox/stats").raise_for_status()
    cfg = await AppointmentSyncConfig.aload(config)
    cfg.bookings_calls_per_second = 50
    await cfg.asave(config, overwrite=True)

    summary = await sync_appointments(config_block=config, mode="scan")

    limit = read_limit(prefect_api, bookings_rate_name(oauth))
    assert (limit["limit"], limit["slot_decay_per_second"]) == (50, 50)
    assert set(sandbox.stats()["writes_by_record"]) == targets and summary.failed == 0
    assert disagreements(sandbox.dump()) == []
