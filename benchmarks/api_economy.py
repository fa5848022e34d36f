"""Benchmark: how many Zoho API calls one sync spends on 10,000 + 10,000 changes.

Starts ``python -m sandbox`` and ``prefect server start`` on free 127.0.0.1 ports
(Prefect's ``PREFECT_HOME`` and database, and the state store, in a temporary
folder, removed at the end; both servers' output goes to a log there), seeds
``--appointments`` appointments, saves a ``ZohoOAuth`` and an
``AppointmentSyncConfig`` block, runs a full sync to establish the base, then
(not timed) makes ``--changes`` CRM-side and ``--changes`` Bookings-side
reschedules of future appointments through the sandbox admin API (the CRM side is
``--module``: ``Appointments__s`` (default), ``Events``, the Meetings, dragged in the
calendar, or ``both`` synced at once, the CRM edits split between the two), zeroes the
sandbox counters, expires every access token (so the run must mint its own), and
runs one sync (``--mode``, default scan: the incremental run plus the Bookings window
over 7 days back to 30 ahead, since this benchmark has no webhook receiver to bring
the Bookings changes; ``incremental`` makes no Bookings read at all). It prints, from the sandbox's
counters and dumps:

* CRM write calls (``PUT Appointments__s`` / ``PUT Events``): target the sum over the
  synced modules of ceil(records the module needs / 100);
* CRM records written, per synced module: target the records it needs, the physical
  minimum: every change must reach the two other systems, so a module needs one write
  per Bookings-side change plus one per CRM-side change made on the *other* module
  (with ``both``: a Meeting drag is 1 Bookings write + 1 ``Appointments__s`` write);
* Bookings write calls (``rescheduleappointment`` + ``updateappointment``):
  target the number of CRM-side changes (on either module);
* calls for unchanged records: target 0 (write calls and records beyond the targets,
  records written that needed nothing, writes to a CRM module not synced, refused
  records);
* access tokens minted during the run: target 1;
* whether every linked record of each synced module agrees with its booking afterwards
  (a Meeting: the same start unless finished, and its ``Booking_Status`` equivalent to
  the booking's status, empty meaning ``Scheduled``);
* the read calls and the run's seconds (for information).

It exits 1 when a target is missed. Only loopback traffic; not part of the tests.
``.venv/bin/python benchmarks/api_economy.py [--appointments 60000] [--changes 10000] [--module Appointments__s|Events|both]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import math
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the flow's per-task INFO lines would drown the figures

UTC = timezone.utc
SAME_STATUS = {
    "Scheduled": {"UPCOMING", "ONGOING", "PENDING"},
    "Overdue": {"UPCOMING", "ONGOING", "PENDING"},
    "Cancelled": {"CANCEL", "NO_SHOW"},
    "Completed": {"COMPLETED"},
}
#: A Meeting's ``Booking_Status`` word (empty: ``Scheduled``) -> the Bookings statuses that say the same.
MEETING_SAME_STATUS = {
    "Scheduled": {"UPCOMING", "ONGOING", "PENDING"},
    "Cancelled": {"CANCEL", "PAYMENT_FAILURE", "NO_SHOW"},
    "Completed": {"COMPLETED"},
    "No Show": {"NO_SHOW"},
}
CRM_MODULES = ("Appointments__s", "Events")
#: The start field of each CRM module.
START_FIELD = {"Appointments__s": "Appointment_Start_Time", "Events": "Start_DateTime"}
BOOKINGS_WRITES = ("POST /bookings/v1/json/rescheduleappointment", "POST /bookings/v1/json/updateappointment")
CRM_WRITE = "PUT /crm/{version}/{module}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(port: int, log: Any) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port), "--appointments", "1", "--bulk-delay", "0.3"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def start_prefect(port: int, home: Path, log: Any) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1 with its own ``PREFECT_HOME`` (database) in ``home``."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_until_up(url: str, proc: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def bookings_instant(text: str, tz: str) -> datetime:
    return datetime.strptime(text, "%d-%b-%Y %H:%M:%S").replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def bookings_text(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%d-%b-%Y %H:%M:%S")


def modules_of(choice: str) -> list[str]:
    """The CRM modules ``--module`` syncs (the configuration's ``crm_module`` first)."""
    return list(CRM_MODULES) if choice == "both" else [choice]


def linked(http: httpx.Client, modules: list[str] | tuple[str, ...] = ("Appointments__s",)) -> dict[str, dict[str, tuple[dict, dict]]]:
    """CRM module -> booking id -> (CRM record, booking) as the sandbox shows them, for each of ``modules``."""
    bookings = {b["booking_id"]: b for b in http.get("/__sandbox/dump", params={"module": "bookings"}).json()["bookings"]}
    out = {}
    for module in modules:
        crm = http.get("/__sandbox/dump", params={"module": module}).json()[module]
        out[module] = {r["Booking_Id"]: (r, bookings[r["Booking_Id"]]) for r in crm if r.get("Booking_Id") in bookings}
    return out


def disagreements(pairs: dict[str, tuple[dict, dict]], module: str = "Appointments__s") -> list[str]:
    """Links whose sides differ: status, or start unless the CRM side is finished (sync/engine.py's ``agree``).

    ``Appointments__s``: ``Status`` against :data:`SAME_STATUS`, finished = cancelled or completed.
    ``Events``: ``Booking_Status`` (empty: ``Scheduled``) against :data:`MEETING_SAME_STATUS`,
    finished = any word but ``Scheduled``."""
    out = []
    for bid, (r, b) in pairs.items():
        if module == "Events":
            word = r.get("Booking_Status") or "Scheduled"
            same_status = b["status"] in MEETING_SAME_STATUS.get(word, set())
            finished = word != "Scheduled"
        else:
            same_status = b["status"] in SAME_STATUS[r["Status"]]
            finished = r["Status"] in ("Cancelled", "Completed")
        same_start = datetime.fromisoformat(r[START_FIELD[module]]).astimezone(UTC) == bookings_instant(b["start_time"], b["time_zone"])
        if not same_status or not (same_start or finished):
            out.append(bid)
    return out


def edit_all(base_url: str, edits: list[tuple[str, str, dict]], threads: int = 4) -> None:
    """PATCH each ``(kind, id, body)`` through the admin API, keep-alive clients on a few threads;
    ``kind`` is ``bookings`` or ``crm:<module>``."""

    def run(chunk: list[tuple[str, str, dict]]) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for kind, rid, body in chunk:
                path = f"/__sandbox/crm/{kind.split(':', 1)[1]}/{rid}" if kind.startswith("crm:") else f"/__sandbox/bookings/{quote(rid, safe='')}"
                r = http.patch(path, json=body)
                if r.status_code != 200:
                    raise SystemExit(f"admin edit {kind} {rid} failed: {r.text}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [edits[i::threads] for i in range(threads)]))


async def save_blocks(creds: dict[str, str], url: str, store: str, modules: list[str]) -> str:
    from pydantic import SecretStr

    from blocks import ZohoOAuth
    from blocks.sync_config import AppointmentSyncConfig

    await ZohoOAuth(
        client_id=creds["client_id"], client_secret=SecretStr(creds["client_secret"]),
        refresh_token=SecretStr(creds["refresh_token"]), data_centre="CUSTOM", base_url=url,
    ).asave("bench-oauth", overwrite=True)  # fmt: skip
    await AppointmentSyncConfig(
        oauth_block="bench-oauth", bookings_time_zone="Asia/Kolkata", state_store_url=store, bookings_plan="premium", crm_edition="enterprise", crm_users=10,
        crm_module=modules[0], crm_modules=modules[1:],
        bookings_calls_per_day=1_000_000, scan_past_hours=7 * 24, scan_future_hours=30 * 24, scan_max_calls=1000,  # no budget in the way of the count
    ).asave("bench-sync", overwrite=True)
    return "bench-sync"


@dataclass
class Measured:
    """What the measured run did, from the sandbox's point of view."""

    modules: list[str]
    crm_side: dict[str, int]  # CRM-side changes per module
    n_bookings_side: int
    targets: set[str]
    before: dict[str, dict[str, str]]  # module -> booking id -> Modified_Time
    after: dict[str, dict[str, tuple[dict, dict]]]
    stats: dict[str, Any]
    summary: Any
    seconds: float

    @property
    def n_crm_side(self) -> int:
        return sum(self.crm_side.values())

    def needed(self, module: str) -> int:
        """Records ``module`` must take: each Bookings-side change, and each CRM-side change made on another module."""
        return self.n_bookings_side + self.n_crm_side - self.crm_side.get(module, 0)


def measure(http: httpx.Client, url: str, store: str, args: argparse.Namespace) -> Measured:
    """Seed, establish the base, make the changes (not timed), then run and time one sync."""
    from flows.sync_appointments import sync_appointments  # after PREFECT_API_URL is set

    modules = modules_of(args.module)
    http.post("/__sandbox/reset", json={"appointments": args.appointments, "seed": args.seed}).raise_for_status()
    config = asyncio.run(save_blocks(http.get("/__sandbox/credentials").json(), url, store, modules))
    t0 = time.monotonic()
    base = asyncio.run(sync_appointments(config_block=config, mode="full"))
    print(f"{'base (full sync, not timed)':<44}{time.monotonic() - t0:8.1f} s   {base.links:,} links, {base.applied:,} applied")

    now = datetime.now(UTC)
    lo, hi = now + timedelta(hours=2), now + timedelta(days=29)  # inside the scan window set in save_blocks
    pairs = linked(http, modules)
    future = [
        (bid, {m: pairs[m][bid][0] for m in modules}, b) for bid, (_, b) in sorted(pairs[modules[0]].items())
        if b["status"] == "UPCOMING" and lo < bookings_instant(b["start_time"], b["time_zone"]) < hi and all(bid in pairs[m] for m in modules)
    ]  # fmt: skip
    if len(future) < 2 * args.changes:
        raise SystemExit(f"only {len(future):,} future upcoming appointments: seed more (--appointments)")
    random.Random(args.seed).shuffle(future)
    crm_side, bookings_side = future[: args.changes], future[args.changes : 2 * args.changes]
    # the CRM edits: all on the one module, or (both) the first half on Appointments__s, the rest on Events
    split = [modules[0] if i < math.ceil(len(crm_side) / len(modules)) else modules[-1] for i in range(len(crm_side))]
    edits = []
    for module, (_, records, _) in zip(split, crm_side):
        r = records[module]
        if module == "Events":  # a CRM user drags the Meeting 1 h later in the calendar
            start = datetime.fromisoformat(r["Start_DateTime"]) + timedelta(hours=1)
            end = datetime.fromisoformat(r["End_DateTime"]) + timedelta(hours=1)
            edits.append(("crm:Events", r["id"], {"Start_DateTime": start.isoformat(), "End_DateTime": end.isoformat()}))
        else:  # a CRM user moves it 1 h later
            start = datetime.fromisoformat(r["Appointment_Start_Time"]) + timedelta(hours=1)
            edits.append(("crm:Appointments__s", r["id"], {"Appointment_Start_Time": start.isoformat()}))
    for bid, _, b in bookings_side:  # the customer moves it 2 h earlier
        start = bookings_instant(b["start_time"], b["time_zone"]) - timedelta(hours=2)
        edits.append(("bookings", bid, {"start_time": bookings_text(start, b["time_zone"])}))
    t0 = time.monotonic()
    edit_all(url, edits)
    print(f"{'admin edits (not timed)':<44}{time.monotonic() - t0:8.1f} s   {len(edits):,}")
    before = {m: {bid: r["Modified_Time"] for bid, (r, _) in by_bid.items()} for m, by_bid in linked(http, modules).items()}
    http.delete("/__sandbox/stats").raise_for_status()
    http.post("/__sandbox/tokens/expire").raise_for_status()  # the run starts with no valid token

    profiler = cProfile.Profile() if args.profile else None
    t0 = time.monotonic()
    if profiler:
        profiler.enable()
    summary = asyncio.run(sync_appointments(config_block=config, mode=args.mode))
    seconds = time.monotonic() - t0
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    targets = {bid for bid, _, _ in crm_side + bookings_side}
    crm_counts = {m: split.count(m) for m in modules}
    return Measured(modules, crm_counts, len(bookings_side), targets, before, linked(http, modules), http.get("/__sandbox/stats").json(), summary, seconds)


def report(m: Measured) -> bool:
    """Print the figures against their targets; True when every target is met."""
    calls = m.stats["calls"]
    n_bk_targets = m.n_crm_side  # a CRM-side change is written to Bookings (and from there to the other module)
    crm_records = {mod: m.stats["writes"].get(mod, 0) for mod in m.modules}
    bk_writes = sum(calls.get(k, 0) for k in BOOKINGS_WRITES)
    untouched_written = sum(
        1 for mod in m.modules for bid, (r, _) in m.after[mod].items() if bid not in m.targets and r["Modified_Time"] != m.before[mod].get(bid)
    )
    not_synced = sum(m.stats["writes"].get(mod, 0) for mod in CRM_MODULES if mod not in m.modules)
    unchanged = (max(0, bk_writes - n_bk_targets) + sum(max(0, crm_records[mod] - m.needed(mod)) for mod in m.modules)
                 + not_synced + untouched_written + m.summary.failed)  # fmt: skip
    label = "" if m.modules == ["Appointments__s"] else ", {}"
    rows = [
        ("CRM write calls (PUT, up to 100 records)", calls.get(CRM_WRITE, 0), sum(math.ceil(m.needed(mod) / 100) for mod in m.modules)),
        *((f"CRM records written{label.format(mod)}", crm_records[mod], m.needed(mod)) for mod in m.modules),
        ("Bookings write calls", bk_writes, n_bk_targets),
        ("calls for unchanged records", unchanged, 0),
        ("access tokens minted in the run", m.stats["tokens_minted"], 1),
        *((f"linked {'Meetings' if mod == 'Events' else 'appointments'} that disagree", len(disagreements(m.after[mod], mod)), 0) for mod in m.modules),
    ]
    for name, got, want in rows:
        print(f"{name:<44}{got:>8,}   target {want:,}   {'ok' if got == want else 'MISSED'}")
    others = {k: v for k, v in calls.items() if k not in (CRM_WRITE, *BOOKINGS_WRITES)}
    print(f"{'other calls (reads, token)':<44}{sum(others.values()):>8,}   {others}")
    s = m.summary
    print(f"{'sync run':<44}{m.seconds:8.1f} s   applied {s.applied:,}, failed {s.failed:,}, conflicts {s.conflicts:,}")
    met = all(got == want for _, got, want in rows)
    print(f"targets: {'met' if met else 'MISSED'}")
    return met


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--appointments", type=int, default=60_000, help="appointments to seed (about 40 %% are upcoming within 29 days)")
    p.add_argument("--changes", type=int, default=10_000, help="changes on each side")
    p.add_argument("--mode", choices=("scan", "incremental", "full"), default="scan")
    p.add_argument("--module", choices=("Appointments__s", "Events", "both"), default="Appointments__s",
                   help="the CRM module synced and edited: Appointments__s, Events (Meetings), or both (the CRM edits split between them)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--profile", action="store_true", help="profile the measured run (cProfile, top 25 by cumulative time)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "servers.log", "w") as log:
        sandbox_port, prefect_port = free_port(), free_port()
        url = f"http://127.0.0.1:{sandbox_port}"
        procs = [start_sandbox(sandbox_port, log), start_prefect(prefect_port, Path(tmp), log)]
        try:
            wait_until_up(f"{url}/__sandbox/health", procs[0])
            wait_until_up(f"http://127.0.0.1:{prefect_port}/api/health", procs[1])
            os.environ.update(PREFECT_HOME=tmp, PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api")
            modules = " + ".join(modules_of(args.module))
            print(f"api economy: {args.appointments:,} appointments, {args.changes:,} changes on each side, {args.mode} sync, CRM {modules}, {os.cpu_count()} CPUs")
            with httpx.Client(base_url=url, timeout=300) as http:
                measured = measure(http, url, f"sqlite:///{tmp}/state.db", args)
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0 if report(measured) else 1


if __name__ == "__main__":
    sys.exit(main())
