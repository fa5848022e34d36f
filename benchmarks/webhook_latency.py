"""Benchmark: from an edit on one side to the change on the other, through the live stack.

Starts the ``make up`` stack (``deployments.stack.up``) with a temporary
``PREFECT_HOME`` and data folder on free 127.0.0.1 ports and stops it at the end,
or uses the running ``make up`` stack with ``--existing`` (ports from
``PREFECT_PORT``/``SANDBOX_PORT``/``RECEIVER_PORT``, secrets from
``.prefect/receiver.env``). The schedules of ``sync-incremental``, ``sync-scan`` and ``sync-full``
are paused meanwhile (and resumed afterwards), so every change is carried by
``sync-on-webhook`` runs started by the receiver's events. Then:

1. **Latency**: ``--edits`` sequential edits through the sandbox admin API, taking
   turns: CRM reschedule (-> Bookings), Bookings reschedule (-> CRM), Bookings
   cancel (-> CRM). Each is timed from just before the admin call until the dump of
   that one record shows the change on the other side (polled every 0.1 s). Before
   each edit the stack is let go quiet (no run under way, nothing pending in the
   receiver: the sync's own write comes back as a notification and starts an
   "echo" run that finds nothing to do); ``--back-to-back`` skips that wait.
   Prints p50 / p95 / max and a breakdown from the runs' timestamps (edit -> flow
   run created -> flow run started -> visible). Targets: p50 <= 5 s, p95 <= 10 s.
2. **Burst**: the CRM notification channel is unsubscribed, ``--burst-ids`` future
   CRM appointments are rescheduled through the admin API (so there is something to
   sync and nothing was notified yet), the channel is subscribed again, and
   ``--burst`` notifications (one id each, cycling over those ids) are POSTed
   straight to the receiver in ``--burst-seconds`` with the channel token. Waits
   (``--timeout``) until every id shows on the Bookings side and no run is left,
   then prints ids synced, ids lost and the ``sync-on-webhook`` flow runs created
   (counted with ``POST /api/flow_runs/filter``). Targets: 0 lost, <= 20 flow runs.

Only loopback traffic; not part of the tests; exits 1 when a target is missed.
``.venv/bin/python benchmarks/webhook_latency.py [--existing] [--edits 50] [--burst 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments import onboarding, processes, services  # noqa: E402
from deployments import stack as stk  # noqa: E402
from zoho.timefmt import from_bookings, to_bookings  # noqa: E402

UTC = timezone.utc
PAUSED_DURING_RUN = ("sync-incremental", "sync-scan", "sync-full")
ACTIVE = ["SCHEDULED", "PENDING", "RUNNING"]


# ------------------------------------------------------------------ helpers
def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def wait_for(check: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def quote(booking_id: str) -> str:
    return booking_id.replace("#", "%23")


def candidates(sandbox: httpx.Client) -> list[tuple[dict, dict]]:
    """Future pairs, Scheduled in CRM and UPCOMING in Bookings, at least a day ahead."""
    dump = sandbox.get("/__sandbox/dump").json()
    soon = datetime.now(UTC) + timedelta(days=1)
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    out = []
    for a in dump["Appointments__s"]:
        b = bookings.get(a.get("Booking_Id"))
        if b and a["Status"] == "Scheduled" and b["status"] == "UPCOMING" and datetime.fromisoformat(a["Appointment_Start_Time"]) > soon:
            out.append((a, b))
    return out


def record(sandbox: httpx.Client, booking_id: str) -> tuple[dict, dict]:
    """``(CRM appointment, booking)`` of one link, from the dump of that record only."""
    dump = sandbox.get("/__sandbox/dump", params={"booking_id": booking_id}).json()
    return dump["Appointments__s"][0], dump["bookings"][0]


# ------------------------------------------------------------ Prefect REST
class Runs:
    """``sync-on-webhook`` flow runs through the REST API (plain httpx)."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=30)
        self.deployment = self.http.get("/deployments/name/sync-appointments/sync-on-webhook").raise_for_status().json()["id"]

    def list(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"deployments": {"id": {"any_": [self.deployment]}}, "sort": "ID_DESC", "limit": 200}
        if states:
            body["flow_runs"] = {"state": {"type": {"any_": states}}}
        out, offset = [], 0
        while True:
            page = self._post("/flow_runs/filter", {**body, "offset": offset})
            out += page
            if len(page) < 200:
                return out
            offset += 200

    def since(self, t0: float) -> list[dict[str, Any]]:
        return [r for r in self.list() if _ts(r["created"]) >= t0]

    def settled(self) -> bool:
        return not self.list(ACTIVE)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST with a few retries: a busy SQLite-backed server answers 503 now and then."""
        for attempt in range(5):
            r = self.http.post(path, json=body)
            if r.status_code != 503:
                break
            time.sleep(1 + attempt)
        r.raise_for_status()
        return r.json() if r.content else None

    def pause(self, names: tuple[str, ...]) -> list[str]:
        """Pause the named deployments that are not paused yet; returns their ids."""
        paused = []
        for name in names:
            r = self.http.get(f"/deployments/name/sync-appointments/{name}")
            if r.status_code == 200 and not r.json().get("paused"):
                self._post(f"/deployments/{r.json()['id']}/pause_deployment")
                paused.append(r.json()["id"])
        return paused

    def resume(self, ids: list[str]) -> None:
        """Resume the paused deployments; a server still too busy to answer is reported, not fatal
        (the figures are already printed; resume them in the UI or with `prefect deployment resume`)."""
        for i in ids:
            try:
                self._post(f"/deployments/{i}/resume_deployment")
            except httpx.HTTPStatusError as exc:
                print(f"   could not resume deployment {i} ({exc.response.status_code}); resume it by hand", flush=True)


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


# ---------------------------------------------------------------- phase 1
def crm_reschedule(sandbox: httpx.Client, a: dict, b: dict, i: int) -> Callable[[], bool]:
    new = datetime.fromisoformat(a["Appointment_Start_Time"]) + timedelta(hours=1 + i % 3)
    sandbox.patch(f"/__sandbox/crm/Appointments__s/{a['id']}", json={"Appointment_Start_Time": new.isoformat()}).raise_for_status()

    def visible() -> bool:
        _, booking = record(sandbox, b["booking_id"])
        return from_bookings(booking["start_time"], booking["time_zone"]) == new

    return visible


def bookings_reschedule(sandbox: httpx.Client, a: dict, b: dict, i: int) -> Callable[[], bool]:
    new = from_bookings(b["start_time"], b["time_zone"]) + timedelta(hours=2)
    r = sandbox.patch(f"/__sandbox/bookings/{quote(b['booking_id'])}", json={"start_time": to_bookings(new, b["time_zone"])})
    r.raise_for_status()
    if r.json()["response"]["status"] != "success":
        raise RuntimeError(r.text)

    def visible() -> bool:
        appt, _ = record(sandbox, b["booking_id"])
        return datetime.fromisoformat(appt["Appointment_Start_Time"]) == new

    return visible


def bookings_cancel(sandbox: httpx.Client, a: dict, b: dict, i: int) -> Callable[[], bool]:
    sandbox.patch(f"/__sandbox/bookings/{quote(b['booking_id'])}", json={"action": "cancel"}).raise_for_status()
    return lambda: record(sandbox, b["booking_id"])[0]["Status"] == "Cancelled"


EDITS = [("CRM reschedule", crm_reschedule), ("Bookings reschedule", bookings_reschedule), ("Bookings cancel", bookings_cancel)]


def quiet(runs: Runs, receiver: str) -> bool:
    """No ``sync-on-webhook`` run under way and no id waiting in the receiver."""
    return httpx.get(f"{receiver}/healthz", timeout=10).json().get("pending_ids") == 0 and runs.settled()


def latency(sandbox: httpx.Client, runs: Runs, receiver: str, pairs: list[tuple[dict, dict]], args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """Run ``args.edits`` sequential edits; returns ``(seconds per visible edit, failures)``."""
    seconds, failures, marks = [], [], []
    n, timeout = args.edits, args.edit_timeout
    for i, (a, b) in enumerate(pairs[:n]):
        kind, edit = EDITS[i % len(EDITS)]
        if not args.back_to_back:
            wait_for(lambda: quiet(runs, receiver), 30, every=0.5)  # the previous edit's echo run has finished
        t0 = time.time()
        visible = edit(sandbox, a, b, i)
        if wait_for(visible, timeout):
            seconds.append(time.time() - t0)
            marks.append((a["id"], b["booking_id"], t0, time.time()))
            print(f"   {i + 1:3d}. {kind:20s} {b['booking_id']}: {seconds[-1]:5.2f} s", flush=True)
        else:
            failures.append(f"{kind} {b['booking_id']}")
            print(f"   {i + 1:3d}. {kind:20s} {b['booking_id']}: not visible within {timeout:.0f} s", flush=True)
    breakdown(runs, marks, args.verbose)
    return seconds, failures


def breakdown(runs: Runs, marks: list[tuple[str, str, float, float]], verbose: bool = False) -> None:
    """Medians of edit -> run created -> run started -> visible, from the runs that carried each id."""
    all_runs = sorted(runs.list(), key=lambda r: r["created"])
    parts: dict[str, list[float]] = {"edit -> flow run created": [], "created -> started": [], "started -> visible": []}
    for crm_id, booking_id, t0, t1 in marks:
        run = next((r for r in all_runs if _ts(r["created"]) >= t0 and (crm_id in (r["parameters"].get("crm_ids") or []) or booking_id in (r["parameters"].get("booking_ids") or []))), None)
        if run and run.get("start_time"):
            created, started = _ts(run["created"]), _ts(run["start_time"])
            parts["edit -> flow run created"].append(created - t0)
            parts["created -> started"].append(started - created)
            parts["started -> visible"].append(t1 - started)
            if verbose:
                print(f"   {booking_id}: created +{created - t0:.2f}, started +{started - created:.2f}, visible +{t1 - started:.2f}")
    for name, values in parts.items():
        if values:
            print(f"   {name:26s} median {statistics.median(values):5.2f} s, max {max(values):5.2f} s")


# ---------------------------------------------------------------- phase 2
async def post_burst(receiver: str, token: str, ids: list[str], count: int, seconds: float) -> dict[int, int]:
    """POST ``count`` notifications (one id each, cycling over ``ids``) evenly over ``seconds``; status counts."""
    statuses: dict[int, int] = {}
    step = seconds / count

    async with httpx.AsyncClient(base_url=receiver, timeout=30, limits=httpx.Limits(max_connections=50)) as http:

        async def one(i: int) -> None:
            body = {"server_time": int(time.time() * 1000), "query_params": {}, "module": "Appointments__s", "resource_uri": f"{receiver}/crm/v7/Appointments__s",
                    "ids": [ids[i % len(ids)]], "affected_fields": [], "operation": "update", "channel_id": str(onboarding.CHANNEL_ID), "token": token}
            try:
                status = (await http.post("/zoho/crm/notifications", json=body)).status_code
            except httpx.HTTPError:
                status = 0
            statuses[status] = statuses.get(status, 0) + 1

        start, tasks = time.monotonic(), []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * step - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return statuses


async def unsubscribe_channel(oauth_block: str, channel_block: str = onboarding.CHANNEL_BLOCK) -> None:
    """Unsubscribe the CRM notification channel of ``channel_block``, so edits notify nobody for a while."""
    from blocks.notification_channel import NotificationChannel
    from blocks.zoho_oauth import ZohoOAuth

    channel = await NotificationChannel.aload(channel_block)
    async with (await ZohoOAuth.aload(oauth_block)).get_client() as zoho:
        await zoho.crm.unwatch([channel.channel_id])


def burst(sandbox: httpx.Client, runs: Runs, s: stk.Stack, oauth_block: str, token: str, pairs: list[tuple[dict, dict]], args: argparse.Namespace) -> tuple[int, int, int]:
    """Returns ``(ids synced, ids lost, flow runs created)``."""
    wait_for(runs.settled, 60, every=1)
    expected: dict[str, datetime] = {}
    asyncio.run(unsubscribe_channel(oauth_block))  # these edits notify nobody: the burst is the only news
    try:
        for a, b in pairs[: args.burst_ids]:
            new = datetime.fromisoformat(a["Appointment_Start_Time"]) + timedelta(minutes=30)
            sandbox.patch(f"/__sandbox/crm/Appointments__s/{a['id']}", json={"Appointment_Start_Time": new.isoformat()}).raise_for_status()
            expected[b["booking_id"]] = new
    finally:
        asyncio.run(onboarding.subscribe_receiver_channel(oauth_block, f"{s.receiver}/zoho/crm/notifications", token))
    ids = [a["id"] for a, _ in pairs[: args.burst_ids]]
    print(f"   rescheduled {len(ids)} CRM appointments with notifications off; posting {args.burst} notifications in {args.burst_seconds:g} s ...", flush=True)
    t0 = time.time()
    statuses = asyncio.run(post_burst(s.receiver, token, ids, args.burst, args.burst_seconds))
    print(f"   posted in {time.time() - t0:.1f} s: HTTP {statuses}", flush=True)

    def synced() -> set[str]:
        dump = sandbox.get("/__sandbox/dump", params={"module": "bookings"}).json()["bookings"]
        return {b["booking_id"] for b in dump if b["booking_id"] in expected and from_bookings(b["start_time"], b["time_zone"]) == expected[b["booking_id"]]}

    done = wait_for(lambda: len(synced()) == len(expected) and runs.settled(), args.timeout, every=1)
    ok = synced()
    created = runs.since(t0)
    print(f"   {'settled' if done else 'timed out'} {time.time() - t0:.1f} s after the burst began", flush=True)
    states: dict[str, int] = {}
    for r in created:
        states[r["state_type"]] = states.get(r["state_type"], 0) + 1
    carried = {i for r in created for i in (r["parameters"].get("crm_ids") or [])}
    print(f"   flow runs by state: {states}; ids carried by them: {len(carried & set(ids))} of {len(ids)}")
    return len(ok), len(expected) - len(ok), len(created)


# ------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--existing", action="store_true", help="use the running `make up` stack instead of starting one")
    p.add_argument("--appointments", type=int, default=2000, help="appointments the started stack seeds")
    p.add_argument("--edits", type=int, default=50)
    p.add_argument("--edit-timeout", type=float, default=60)
    p.add_argument("--back-to-back", action="store_true", help="edit again as soon as the last edit shows, without waiting for its echo run to finish")
    p.add_argument("--burst", type=int, default=1000, help="notifications in the burst (0: no burst)")
    p.add_argument("--burst-seconds", type=float, default=10)
    p.add_argument("--burst-ids", type=int, default=500, help="distinct CRM appointments the burst names")
    p.add_argument("--coalesce", type=float, help="the receiver's coalesce window, seconds (started stack only)")
    p.add_argument("--leading", type=float, help="the receiver's leading-edge delay, seconds; -1: no leading edge, a fixed tick (started stack only)")
    p.add_argument("--poll", type=int, help="PREFECT_RUNNER_POLL_FREQUENCY of serve, seconds (started stack only)")
    p.add_argument("--verbose", action="store_true", help="print each edit's breakdown")
    p.add_argument("--keep", action="store_true", help="keep the started stack until Enter is pressed (to look around)")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the burst's ids to sync")
    return p.parse_args(argv)


def run(args: argparse.Namespace, s: stk.Stack, oauth_block: str = onboarding.OAUTH_BLOCK) -> int:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    token = services.receiver_secrets(s.home)["APPT_SYNC_RECEIVER_CHANNEL_TOKEN"]
    runs = Runs(s.api)
    paused = runs.pause(PAUSED_DURING_RUN)
    with temporary_settings({PREFECT_API_URL: s.api}):
        try:
            return _measure(args, s, runs, oauth_block, token)
        finally:
            runs.resume(paused)


def _measure(args: argparse.Namespace, s: stk.Stack, runs: Runs, oauth_block: str, token: str) -> int:
    with httpx.Client(base_url=s.sandbox, timeout=60) as sandbox:
        pairs = candidates(sandbox)
        need = args.edits + (args.burst_ids if args.burst else 0)
        if len(pairs) < need:
            raise SystemExit(f"the sandbox has {len(pairs)} future scheduled appointments; need {need}")
        print(f"\n== 1. {args.edits} sequential edits through the sandbox admin API", flush=True)
        seconds, failures = latency(sandbox, runs, s.receiver, pairs, args)
        synced, lost, flow_runs = 0, 0, 0
        if args.burst:
            print(f"\n== 2. burst: {args.burst} notifications in {args.burst_seconds:g} s", flush=True)
            synced, lost, flow_runs = burst(sandbox, runs, s, oauth_block, token, pairs[args.edits :], args)
    p50, p95 = (pct(seconds, 50), pct(seconds, 95)) if seconds else (float("inf"),) * 2
    print("\n== results")
    print(f"   latency: p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(seconds, default=float('inf')):.2f} s over {len(seconds)} edits ({len(failures)} not visible)  [target p50 <= 5, p95 <= 10]")
    print(f"   burst: ids synced {synced}, ids lost {lost}, flow runs created {flow_runs}  [target 0 lost, <= 20 runs]")
    ok = p50 <= 5 and p95 <= 10 and not failures and lost == 0 and flow_runs <= 20
    print("   all targets met" if ok else "   TARGET MISSED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.existing:
        ports = stk.ports()
        home = processes.prefect_home()
        if not (home / "receiver.env").exists():
            raise SystemExit(f"no {home / 'receiver.env'}: is `make up` running?")
        s = stk.Stack(home, f"http://127.0.0.1:{ports['prefect']}/api", f"http://127.0.0.1:{ports['sandbox']}", f"http://127.0.0.1:{ports['receiver']}")
        return run(args, s)
    if args.coalesce is not None:
        os.environ["APPT_SYNC_RECEIVER_COALESCE_SECONDS"] = str(args.coalesce)
    if args.leading is not None:
        if args.leading < 0:
            os.environ["APPT_SYNC_RECEIVER_LEADING_EDGE"] = "false"
        else:
            os.environ["APPT_SYNC_RECEIVER_LEADING_SECONDS"] = str(args.leading)
    if args.poll is not None:
        os.environ["PREFECT_RUNNER_POLL_FREQUENCY"] = str(args.poll)
    with tempfile.TemporaryDirectory(prefix="webhook-latency-") as tmp:
        home, data = Path(tmp) / "prefect", Path(tmp) / "data"
        print(f"== starting the stack in {tmp} ({args.appointments} appointments) ...", flush=True)
        t0 = time.monotonic()
        try:
            s = stk.up(home, data, processes.free_port(), processes.free_port(), processes.free_port(), appointments=args.appointments, say=lambda m: print(f"   {m}", flush=True))
            print(f"   up in {time.monotonic() - t0:.1f} s: UI {s.ui}, sandbox {s.sandbox}, receiver {s.receiver}; "
                  f"PREFECT_RUNNER_POLL_FREQUENCY={os.environ.get('PREFECT_RUNNER_POLL_FREQUENCY', stk.TUNING['PREFECT_RUNNER_POLL_FREQUENCY'])}, "
                  f"coalesce {os.environ.get('APPT_SYNC_RECEIVER_COALESCE_SECONDS', stk.TUNING['APPT_SYNC_RECEIVER_COALESCE_SECONDS'])} s, "
                  f"leading edge {os.environ.get('APPT_SYNC_RECEIVER_LEADING_EDGE', 'true')} ({os.environ.get('APPT_SYNC_RECEIVER_LEADING_SECONDS', '0.2')} s)", flush=True)
            return run(args, s)
        finally:
            if args.keep:
                input(f"stack kept in {tmp}: press Enter to stop it ")
            stk.down(home)


if __name__ == "__main__":
    sys.exit(main())
