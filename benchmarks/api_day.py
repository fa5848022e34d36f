"""Benchmark: the Zoho API calls of one simulated day of one organisation (issue 13).

Starts ``python -m sandbox`` and ``prefect server start`` on free 127.0.0.1 ports
(``PREFECT_HOME``, Prefect's database and the sync's state stores in a temporary
folder, removed at the end unless ``--keep``; both servers log there) and the
webhook receiver (:func:`deployments.webhook.create_receiver`) in a thread of this
process, on a third free port. For each scenario, the sandbox is re-seeded with
``--appointments`` appointments (around the first simulated day), onboarded into
a ``ZohoOAuth`` and an ``AppointmentSyncConfig`` block (the sandbox's workspace time
zone Asia/Kolkata, Bookings Premium, CRM Enterprise with 10 users, a fresh SQLite
state store), the sandbox's Bookings webhook is pointed at the receiver (with its
shared secret) and the CRM notification channel subscribed to the receiver's
``/zoho/crm/notifications`` (:func:`deployments.onboarding.subscribe_receiver_channel`).

The simulated day runs from 02:05 UTC of day 1 (just after a nightly full sync) to
02:05 UTC of day 2 (just after the next one) on the sandbox's clock
(``PUT /__sandbox/clock``); the pipeline's clock follows it (:func:`sync.tables.set_clock`).
Before the day, a full sync at 02:00 establishes the base (not counted) and the
sandbox's counters are zeroed. During the day:

* every scheduled deployment of :func:`deployments.serve.build` runs at the times its
  schedule objects give for the day (Prefect's server-side ``get_dates``; the interval
  schedules anchored at the day's start, as if ``serve`` had been started then):
  ``refresh-token`` every 45 min, ``sync-incremental`` every 5 min, ``sync-scan``
  every 2 h, ``renew-notification-channel`` daily and ``sync-full`` at 02:00 UTC; each
  in this process (``await flow(**deployment.parameters)``) at its simulated time, in
  time order, against the Prefect server (flow and task runs, the writer's global
  concurrency limit and events are real);
* edits (busy scenarios) happen at random simulated times through the sandbox's
  admin API, as users would (the sandbox sends the webhook or notification);
* after each step the sandbox's outbox is drained, the receiver's coalescer flushes,
  and every ``zoho.sync.requested`` event it emitted is run as the ``sync-on-webhook``
  deployment's trigger would (``sync_records(config_block=, booking_ids=, crm_ids=, crm_module=, deleted_crm_ids=)``),
  again until no event is left (the sync's own writes come back as notifications).

Scenarios (``--scenario idle|busy|budget|all``, default all):

* **idle**: no edits.
* **busy**: 100 edits on each side (``--edits``) spread over the day: Bookings
  reschedules, cancellations, completions and no-shows, CRM reschedules,
  cancellations and completions, each of a different appointment whose sides
  agree, and valid when made (reschedules and cancellations of appointments at least
  2 h ahead, completions and no-shows of ones that have ended); the sandbox drops
  10 % of Bookings webhooks and 10 % of CRM notifications (``drop_*``, ``drop_seed``
  ``--seed``).
* **budget**: the busy day with a Bookings budget of 150 calls a day
  (``bookings_calls_per_day=150``, ``budget_percent=100``), then a second, idle day
  on which what was put off is caught up.

Printed per scenario: Bookings calls and CRM credits in the day, from the sandbox's
counters and from the pipeline's own ``api_usage`` rows; the physical minimum (one
write on the other side and one read per edit: Bookings, a write per CRM-side edit
and a ``getappointment`` per Bookings-side one; CRM, a write per Bookings-side edit
and a read per CRM-side one; idle: 0) and the ratio; the Bookings plans' limits;
changes lost (edited appointments whose edit does not show on both sides at the end,
and linked pairs that disagree); flow runs and their wall time by deployment; the
Bookings calls per workspace day (Asia/Kolkata) and what the runs reported put off.

Targets (each printed ``ok`` / ``missed``; exit 1 when one is missed; the last line
is ``targets: met`` or ``targets: missed``):

* idle: at most 50 Bookings calls and 1,000 CRM credits;
* busy: Bookings calls at most 1.3 x the minimum plus the idle figure (the idle
  scenario's when it ran, else this day's ``fetchappointment`` calls), and under
  the Free plan's 250; 0 changes lost;
* budget: never more than 150 Bookings calls in a workspace day; what was put off is
  reported and caught up on the second day (no read left waiting); 0 lost.

Simulation notes: access tokens are minted with a 7-day life (sandbox ``token_ttl``),
because the OAuth block's expiry follows the real clock while the sandbox's follows
the simulated one: with 1-hour tokens every simulated hour would cost a refused call
and a refresh that ``refresh-token`` prevents in production. The receiver's coalescing
window is 0.1 s (production: 2 s): deliveries of one simulated step are all in before
it flushes, since the sandbox's outbox is drained first.

Only loopback traffic; not part of the tests.
``.venv/bin/python benchmarks/api_day.py [--scenario all] [--appointments 2000] [--edits 100] [--seed 42]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # hundreds of runs: their INFO lines would drown the figures

from benchmarks.api_economy import free_port, start_prefect, start_sandbox, wait_until_up  # noqa: E402

UTC = timezone.utc
WORKSPACE_TZ = "Asia/Kolkata"  # the sandbox's org time zone: the Bookings day counts in it
OAUTH_BLOCK, CONFIG_BLOCK, CHANNEL_BLOCK = "day-oauth", "day-sync", "day-channel"
WEBHOOK_DEPLOYMENT = "sync-on-webhook"
BOOKINGS_PLANS = {"Free": 250, "Basic": 1000, "Premium": 3000}
#: Share of each side's edits per kind (completions and no-shows are limited by the
#: appointments that have ended and are not marked yet; short of those, a cancellation).
MIX = {"bookings": {"reschedule": 0.40, "cancel": 0.30, "complete": 0.20, "noshow": 0.10}, "crm": {"reschedule": 0.45, "cancel": 0.35, "complete": 0.20}}
BUDGET_CALLS = 150


def trigger_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``sync-on-webhook`` run's parameters for a ``zoho.sync.requested`` event, as its deployment
    trigger maps them (each ``{{ event.payload.<key> }}`` to that key; read from ``deployments/prefect.yaml``,
    whose triggers ``tests/test_deployments.py`` keeps equal to ``deployments/serve.py``'s)."""
    import yaml

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    hook = next(d for d in spec["deployments"] if d["name"] == WEBHOOK_DEPLOYMENT)
    (trigger,) = hook["triggers"]
    out = {}
    for name, template in trigger["parameters"].items():
        key = str(template).strip("{} ").removeprefix("event.payload.")
        out[name] = payload.get(key)
    return out


@dataclass(frozen=True)
class Scenario:
    """One scenario: whether users edit, the share of deliveries dropped, the simulated days, config overrides."""

    name: str
    title: str
    edits: bool
    drops: float
    days: int = 1
    config: dict[str, Any] = field(default_factory=dict)


SCENARIOS = {
    "idle": Scenario("idle", "idle day", edits=False, drops=0.0),
    "busy": Scenario("busy", "busy day", edits=True, drops=0.10),
    "budget": Scenario("budget", "busy day on a Bookings budget of 150 calls, then an idle day", edits=True, drops=0.10, days=2,
                       config={"bookings_calls_per_day": BUDGET_CALLS, "budget_percent": 100}),
}  # fmt: skip


# ------------------------------------------------------------------ the receiver
class Receiver:
    """The webhook receiver app served by uvicorn in a thread; ``zoho.sync.requested`` payloads are collected."""

    def __init__(self, store_url: str, channel_token: str, bookings_secret: str) -> None:
        import uvicorn
        from pydantic import SecretStr

        from deployments.webhook import ReceiverSettings, create_receiver

        settings = ReceiverSettings(
            channel_token=SecretStr(channel_token), bookings_secret=SecretStr(bookings_secret), config_block=CONFIG_BLOCK,
            state_store_url=store_url, coalesce_seconds=0.1, leading_seconds=0.02,
        )  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._requested: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.heard: Counter[str] = Counter()  # other events: CRM notifications
        self.webhooks: list[tuple[str, bool]] = []  # (booking id, recognised as an echo) per Bookings webhook
        self.server = uvicorn.Server(uvicorn.Config(create_receiver(settings, emit=self.emit), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="receiver", daemon=True)

    def emit(self, event: str, resource: dict[str, str], payload: dict[str, Any], related: list[dict[str, str]] | None = None) -> None:
        """The receiver's emitter: keep ``zoho.sync.requested`` payloads, count the rest."""
        with self._lock:
            if event == "zoho.sync.requested":
                self._requested.append(payload)
            elif event == "zoho.bookings.webhook":
                self.webhooks.append((str(payload.get("booking_id")), bool(payload.get("echo"))))
            else:
                self.heard[event] += 1

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the webhook receiver did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def take(self) -> list[dict[str, Any]]:
        """The requested syncs emitted since the last call, in order."""
        with self._lock:
            out, self._requested = self._requested, []
        return out

    async def flushed(self, http: httpx.AsyncClient, timeout: float = 30) -> None:
        """Wait until the coalescer holds no id (everything queued was emitted)."""
        deadline = time.monotonic() + timeout
        while (await http.get(f"{self.url}/healthz")).json()["pending_ids"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver kept ids pending for 30 s")
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------ the schedule
@dataclass
class Due:
    """One scheduled flow run: its deployment, flow and parameters, at a simulated time."""

    at: datetime
    order: int
    deployment: str
    flow: Any
    parameters: dict[str, Any]


def flow_of(entrypoint: str) -> Any:
    """The flow object of a deployment's ``path/module.py:attr`` entrypoint."""
    path, _, attr = entrypoint.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)


def scheduled_runs(deployments: list[Any], start: datetime, end: datetime) -> list[Due]:
    """Every run the deployments' schedules make in ``[start, end)``, in time order (ties in :func:`build` order).

    The schedule objects are the client's (``prefect.schedules``); their times come from
    the server-side schemas' ``get_dates`` (what Prefect's scheduler uses). Interval
    schedules are anchored at ``start``: ``serve`` anchors them when it starts.
    """
    import prefect.server.schemas.schedules as server_schedules

    async def dates(schedule: Any) -> list[datetime]:
        data = schedule.model_dump()
        if "anchor_date" in data:
            data["anchor_date"] = start
        model = getattr(server_schedules, type(schedule).__name__).model_validate(data)
        return [datetime.fromtimestamp(d.timestamp(), UTC) for d in await model.get_dates(n=10_000, start=start, end=end) if d < end]

    due = []
    for order, d in enumerate(deployments):
        for s in d.schedules:
            for at in asyncio.run(dates(s.schedule)):
                due.append(Due(at, order, d.name, flow_of(d.entrypoint), dict(d.parameters)))
    return sorted(due, key=lambda r: (r.at, r.order))


# ------------------------------------------------------------------ the edits
@dataclass
class Edit:
    """One user edit at a simulated time, and what the sandbox answered."""

    at: datetime
    side: str  # bookings | crm
    kind: str  # reschedule | cancel | complete | noshow
    booking_id: str = ""
    crm_id: str = ""
    tz: str = "UTC"
    body: dict[str, Any] = field(default_factory=dict)
    to: datetime | None = None  # a reschedule's new start
    ok: bool = False
    answer: str = ""


def plan_edits(pairs: list[Any], n: int, start: datetime, end: datetime, rng: random.Random) -> list[Edit]:
    """``n`` edits per side at random times in ``[start + 1 min, end - 10 min)``, each of a different
    pair whose sides agree, chosen so the edit is valid at its time (see the module docstring)."""
    from benchmarks.soak import writable
    from zoho.timefmt import to_bookings, to_crm

    kinds = [(side, kind) for side, mix in MIX.items() for kind, share in mix.items() for _ in range(round(n * share))]
    rng.shuffle(kinds)
    span = (end - timedelta(minutes=10) - start - timedelta(minutes=1)).total_seconds()
    times = sorted(start + timedelta(minutes=1, seconds=int(rng.random() * span)) for _ in kinds)
    used: set[str] = set()
    scheduled = [p for p in pairs if p.booking["status"] in ("UPCOMING", "ONGOING") and p.crm["Status"] in ("Scheduled", "Overdue")]
    edits = []
    for at, (side, kind) in zip(times, kinds):
        ended = [p for p in scheduled if p.id not in used and p.end <= at - timedelta(minutes=5) and p.start > at - timedelta(days=7)]
        if kind in ("complete", "noshow") and not ended:
            kind = "cancel"
        pool = ended if kind in ("complete", "noshow") else [p for p in scheduled if p.id not in used and p.start > at + timedelta(hours=2)]
        edit = Edit(at, side, kind)
        for _ in range(20):
            p = rng.choice(pool)
            if kind == "reschedule":
                to = p.start + timedelta(hours=rng.randint(1, 6), minutes=rng.choice((0, 15, 30, 45)))
                if not writable(to, p.tz):
                    continue
                edit.to = to
                edit.body = {"Appointment_Start_Time": to_crm(to)} if side == "crm" else {"start_time": to_bookings(to, p.tz)}
            elif kind == "cancel":
                edit.body = {"Status": "Cancelled", "Cancellation_Reason": "By Customer"} if side == "crm" else {"action": "cancel"}
            elif kind == "complete":
                edit.body = {"Status": "Completed"} if side == "crm" else {"action": "completed"}
            else:
                edit.body = {"action": "noshow"}
            edit.booking_id, edit.crm_id, edit.tz = p.id, p.crm["id"], p.tz
            used.add(p.id)
            break
        edits.append(edit)
    return edits


async def make_edit(http: httpx.AsyncClient, edit: Edit) -> None:
    """PATCH the edit through the sandbox's admin API (as a user would: the webhook or notification fires)."""
    if edit.side == "crm":
        r = await http.patch(f"/__sandbox/crm/Appointments__s/{edit.crm_id}", json=edit.body)
        edit.ok = r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"
    else:
        r = await http.patch(f"/__sandbox/bookings/{quote(edit.booking_id, safe='')}", json=edit.body)
        edit.ok = r.status_code == 200 and r.json()["response"]["status"] == "success"
    edit.answer = "" if edit.ok else r.text[:200]


def edit_shows(edit: Edit, pair: Any) -> bool:
    """Whether both sides of the edited pair show the edit's result at the end."""
    crm, booking = pair.crm["Status"], pair.booking["status"]
    if edit.kind == "reschedule":
        return datetime.fromisoformat(pair.crm["Appointment_Start_Time"]) == edit.to == pair.start and crm in ("Scheduled", "Overdue") and booking in ("UPCOMING", "ONGOING")
    want = {"cancel": ("Cancelled", "CANCEL"), "complete": ("Completed", "COMPLETED"), "noshow": ("Cancelled", "NO_SHOW")}[edit.kind]
    return (crm, booking) == want


# ------------------------------------------------------------------ one simulated day
@dataclass
class RunRecord:
    """One flow run of the simulation."""

    deployment: str
    at: datetime
    seconds: float
    summary: Any = None
    error: str | None = None


@dataclass
class Measured:
    """What one simulated day did."""

    label: str
    start: datetime
    end: datetime
    edits: list[Edit]
    runs: list[RunRecord]
    stats: dict[str, Any]
    usage: dict[str, int]
    lost_edits: list[str]
    disagreeing: list[str]
    pending_reads: int
    heard: Counter
    webhooks: dict[str, int]
    seconds: float
    late_steps: int


class Simulation:
    """Runs flows and edits at simulated times against the sandbox, the receiver and the Prefect server."""

    def __init__(self, http: httpx.AsyncClient, receiver: Receiver, store_url: str, verbose: bool = False) -> None:
        self.http, self.receiver, self.store_url, self.verbose = http, receiver, store_url, verbose
        self.offset = 0.0  # seconds the simulated clock is ahead of real time
        self.runs: list[RunRecord] = []
        self.bookings_days: dict[str, int] = {}  # workspace day -> Bookings calls (sandbox limits counters)
        self.late_steps = 0

    def now(self) -> datetime:
        """The simulated now (the sandbox's clock: real time plus the offset)."""
        return datetime.fromtimestamp(time.time() + self.offset, UTC)

    async def set_time(self, at: datetime) -> datetime:
        """Move the sandbox's clock and the pipeline's to ``at`` (never back: a step that ran late starts late)."""
        await self.sample_days()
        if at < self.now():
            self.late_steps += 1
            return self.now()
        answer = (await self.http.put("/__sandbox/clock", json={"now": at.isoformat()})).raise_for_status().json()
        self.offset = answer["offset_seconds"]
        return at

    async def sample_days(self) -> None:
        """Note the sandbox's Bookings calls of the current workspace day (its ``limits`` counters)."""
        b = (await self.http.get("/__sandbox/stats")).json()["limits"]["bookings"]
        if b["calls_today"]:
            self.bookings_days[b["day"]] = max(self.bookings_days.get(b["day"], 0), b["calls_today"])

    async def run(self, deployment: str, flow: Any, parameters: dict[str, Any]) -> RunRecord:
        """Run one flow in this process at the simulated now; a failure is recorded, not raised."""
        at, t0 = self.now(), time.monotonic()
        record = RunRecord(deployment, at, 0.0)
        try:
            record.summary = await flow(**parameters)
        except Exception as exc:  # noqa: BLE001 - a failed run is a figure, the day goes on
            record.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"   {at:%H:%M:%S} {deployment} failed: {record.error}", flush=True)
        record.seconds = time.monotonic() - t0
        self.runs.append(record)
        if self.verbose:
            s = record.summary
            calls = getattr(s, "zoho_calls", None) or ""
            print(f"   {at:%m-%d %H:%M:%S} {deployment:27s} {record.seconds:5.1f} s {calls}", flush=True)
        return record

    async def settle(self) -> None:
        """Deliver what the sandbox sent, let the receiver flush, run each requested sync; again until quiet."""
        from flows.sync_appointments import sync_records

        for _ in range(20):
            await self.http.post("/__sandbox/outbox/drain")
            await self.receiver.flushed(self.http)
            requested = self.receiver.take()
            if not requested:
                return
            for payload in requested:
                await self.run(WEBHOOK_DEPLOYMENT, sync_records, trigger_parameters(payload))
        raise RuntimeError("the webhook runs did not settle after 20 rounds")

    async def day(self, label: str, start: datetime, end: datetime, due: list[Due], edits: list[Edit], check: list[Edit]) -> Measured:
        """Run the scheduled flows and the ``edits`` of ``[start, end)`` in time order, then measure
        (``check``: the edits whose result must show on both sides at the end)."""
        t0 = time.monotonic()
        first_run, self.late_steps = len(self.runs), 0
        steps: list[tuple[datetime, int, Any]] = [(d.at, 0, d) for d in due] + [(e.at, 1, e) for e in edits]
        steps.sort(key=lambda s: (s[0], s[1]))
        last: datetime | None = None
        done = 0
        for at, _, item in steps:
            if at != last:
                await self.set_time(at)
                last = at
            if isinstance(item, Due):
                await self.run(item.deployment, item.flow, item.parameters)
            else:
                await make_edit(self.http, item)
            await self.settle()
            done += 1
            if done % 100 == 0:
                print(f"   {label}: {done}/{len(steps)} steps, simulated {self.now():%m-%d %H:%M}, {time.monotonic() - t0:.0f} s", flush=True)
        await self.set_time(end)
        await self.sample_days()
        return await self.measure(label, start, end, edits, check, self.runs[first_run:], time.monotonic() - t0)

    async def measure(self, label: str, start: datetime, end: datetime, edits: list[Edit], check: list[Edit], runs: list[RunRecord], seconds: float) -> Measured:
        """The sandbox's counters and dump, the pipeline's ``api_usage`` of the day, and what was lost."""
        from deployments.demo import disagreements, linked_pairs

        stats = (await self.http.get("/__sandbox/stats")).json()
        dump = (await self.http.get("/__sandbox/dump", params={"module": "Appointments__s"})).json()
        dump["bookings"] = (await self.http.get("/__sandbox/dump", params={"module": "bookings"})).json()["bookings"]
        pairs = linked_pairs(dump)
        lost = [f"{e.side} {e.kind} {e.booking_id}" for e in check if e.ok and not edit_shows(e, pairs[e.booking_id])]
        usage, pending = store_usage(self.store_url, start, end)
        heard, self.receiver.heard = self.receiver.heard, Counter()
        webhooks, self.receiver.webhooks = self.receiver.webhooks, []
        return Measured(label, start, end, edits, runs, stats, usage, lost, disagreements(dump), pending, heard, classify_webhooks(webhooks, check), seconds, self.late_steps)


def classify_webhooks(webhooks: list[tuple[str, bool]], edits: list[Edit]) -> dict[str, int]:
    """The Bookings webhooks the receiver heard: for users' Bookings edits, and for the sync's own
    writes (echoes), skipped as echoes by the receiver or queued (the webhook run then checks the
    state the webhook reported against the store once it holds the writer lock)."""
    users = {e.booking_id for e in edits if e.side == "bookings"}
    out: Counter[str] = Counter()
    for booking_id, echo in webhooks:
        if booking_id in users:
            out["users' edits"] += 1
        else:
            out["echoes skipped by the receiver" if echo else "echoes queued"] += 1
    return dict(out)


def store_usage(store_url: str, start: datetime, end: datetime) -> tuple[dict[str, int], int]:
    """From the state store: units per family recorded in ``[start, end]`` (``api_usage``) and the bookings waiting to be read."""
    from sqlalchemy import func, select

    from sync.store import make_engine
    from sync.tables import ApiUsage
    from sync.usage import count_pending_reads

    engine = make_engine(store_url)
    try:
        t = ApiUsage.__table__.c
        with engine.connect() as conn:
            rows = conn.execute(select(t.family, func.sum(t.units)).where(t.at >= start, t.at < end).group_by(t.family)).all()
        return {family: int(units) for family, units in rows}, count_pending_reads(engine)
    finally:
        engine.dispose()


def store_bookings_days(store_url: str) -> dict[str, int]:
    """Bookings calls per workspace day as the pipeline recorded them (``api_usage.day``)."""
    from sqlalchemy import func, select

    from sync.store import make_engine
    from sync.tables import ApiUsage

    engine = make_engine(store_url)
    try:
        t = ApiUsage.__table__.c
        with engine.connect() as conn:
            return {day: int(units) for day, units in conn.execute(select(t.day, func.sum(t.units)).where(t.family == "bookings").group_by(t.day)).all()}
    finally:
        engine.dispose()


# ------------------------------------------------------------------ a scenario
async def save_blocks(sandbox_url: str, store_url: str, overrides: dict[str, Any]) -> None:
    """Onboard the sandbox into the ``ZohoOAuth`` block and save the ``AppointmentSyncConfig`` of the scenario."""
    from pydantic import SecretStr

    from blocks.sync_config import AppointmentSyncConfig
    from deployments.onboarding import onboard, sandbox_grant

    client_id, secret, code, scopes = sandbox_grant(sandbox_url)
    await onboard(OAUTH_BLOCK, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
    config = AppointmentSyncConfig(
        oauth_block=OAUTH_BLOCK, bookings_time_zone=WORKSPACE_TZ, state_store_url=store_url,
        bookings_plan="premium", crm_edition="enterprise", crm_users=10, bookings_page_size=100,  # as onboarding sets it for the sandbox
        **overrides,
    )  # fmt: skip
    await config.asave(CONFIG_BLOCK, overwrite=True)


async def run_scenario(sc: Scenario, sandbox_url: str, tmp: Path, day1: datetime, due_by_day: list[list[Due]], args: argparse.Namespace) -> list[Measured]:
    """Seed, onboard, wire the receiver, establish the base, then run the scenario's simulated days
    (``due_by_day[n]``: the scheduled runs of day ``n + 1``, from :func:`scheduled_runs`)."""
    from deployments.onboarding import subscribe_receiver_channel
    from flows.sync_appointments import sync_appointments
    from sync.tables import set_clock

    store_url = f"sqlite:///{tmp / f'state-{sc.name}.db'}"
    token, hook_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    receiver = Receiver(store_url, token, hook_secret)
    receiver.start()
    start = day1 + timedelta(minutes=5)
    span = timedelta(hours=args.hours)
    print(f"\n== {sc.name}: {sc.title}; {args.appointments:,} appointments; simulated from {start:%Y-%m-%d %H:%M} UTC for {sc.days} x {args.hours:g} h", flush=True)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=120) as http:
        try:
            (await http.post("/__sandbox/reset", json={"appointments": args.appointments, "seed": args.seed, "anchor_date": day1.date().isoformat()})).raise_for_status()
            await save_blocks(sandbox_url, store_url, sc.config)
            hook = {"bookings_webhook_url": f"{receiver.url}/zoho/bookings/webhook", "bookings_webhook_headers": {"X-Zoho-Bookings-Secret": hook_secret},
                    "token_ttl": 7 * 86_400, "drop_bookings_webhooks": 0.0, "drop_crm_notifications": 0.0}  # fmt: skip
            (await http.put("/__sandbox/config", json=hook)).raise_for_status()
            await subscribe_receiver_channel(OAUTH_BLOCK, f"{receiver.url}/zoho/crm/notifications", token, channel_block=CHANNEL_BLOCK)

            sim = Simulation(http, receiver, store_url, args.verbose)
            set_clock(sim.now)
            await sim.set_time(day1)
            t0 = time.monotonic()
            base = await sim.run("base (full, not counted)", sync_appointments, {"config_block": CONFIG_BLOCK, "mode": "full"})
            await sim.settle()
            if base.error:
                raise SystemExit(f"the base full sync failed: {base.error}")
            print(f"   base: full sync at {day1:%H:%M} UTC, {base.summary.links:,} links, {base.summary.applied} applied, {time.monotonic() - t0:.1f} s "
                  f"(+{len(sim.runs) - 1} webhook runs)", flush=True)  # fmt: skip
            edits: list[Edit] = []
            if sc.edits:
                from deployments.demo import disagreements, linked_pairs

                dump = (await http.get("/__sandbox/dump", params={"module": "Appointments__s"})).json()
                dump["bookings"] = (await http.get("/__sandbox/dump", params={"module": "bookings"})).json()["bookings"]
                bad = {line.split(":", 1)[0] for line in disagreements(dump)}
                pairs = sorted((p for p in linked_pairs(dump).values() if p.id not in bad), key=lambda p: p.id)
                edits = plan_edits(pairs, args.edits, start, start + span, random.Random(args.seed))
            drops = {"drop_bookings_webhooks": sc.drops, "drop_crm_notifications": sc.drops, "drop_seed": args.seed}
            (await http.put("/__sandbox/config", json=drops)).raise_for_status()
            (await http.delete("/__sandbox/stats")).raise_for_status()
            receiver.heard.clear()
            receiver.webhooks.clear()
            sim.runs.clear()
            days = []
            for n in range(sc.days):
                s, e = start + n * timedelta(days=1), start + n * timedelta(days=1) + span
                label = f"{sc.name} day {n + 1}" if sc.days > 1 else sc.name
                if n:
                    (await http.delete("/__sandbox/stats")).raise_for_status()
                days.append(await sim.day(label, s, e, due_by_day[n], edits if n == 0 else [], edits))
            days[-1].stats["bookings_days"] = dict(sim.bookings_days)
            days[-1].stats["store_bookings_days"] = store_bookings_days(store_url)
            return days
        finally:
            set_clock(None)
            await http.put("/__sandbox/clock", json={"real": True})
            await http.put("/__sandbox/config", json={"bookings_webhook_url": "", "drop_bookings_webhooks": 0.0, "drop_crm_notifications": 0.0})
            receiver.stop()


# ------------------------------------------------------------------ figures
def crm_credits(stats: dict[str, Any], bulk_read_credits: int) -> int:
    """CRM credits from the sandbox's counters: 1 per CRM and Bulk call, ``bulk_read_credits`` per Bulk Read job created."""
    groups = stats["calls_by_group"]
    return groups.get("crm", 0) + groups.get("bulk", 0) + (bulk_read_credits - 1) * stats["bulk_jobs_created"]


def put_off(runs: list[RunRecord]) -> dict[str, int]:
    """What the runs' summaries reported put off by the budget (``waiting`` and ``BUDGET_REACHED`` failures).

    Each run reports what is still waiting, so a booking or write that waits an hour shows in a
    dozen runs: the reads are given as the most bookings waiting at once, the writes as distinct links.
    """
    out: Counter[str] = Counter()
    writes: set[str] = set()
    for r in runs:
        s = r.summary
        if not hasattr(s, "waiting"):
            continue
        if s.waiting or any(f.get("code") == "BUDGET_REACHED" for f in s.failures):
            out["runs reporting something put off"] += 1
        for line in s.waiting:
            m = re.match(r"(\d+) bookings to read", line)
            if m:
                out["bookings waiting to be read, most at once"] = max(out["bookings waiting to be read, most at once"], int(m.group(1)))
            elif "scan window" in line:
                out["scan windows cut short"] += 1
            elif "full run" in line:
                out["full-run windows skipped"] += 1
            else:
                out["other waiting entries"] += 1
        for f in s.failures:
            if f.get("code") == "BUDGET_REACHED":
                writes.add(str(f.get("booking_id")))
    if writes:
        out["links whose write was put off"] = len(writes)
    return dict(out)


def spent_by_deployment(runs: list[RunRecord]) -> dict[str, Counter]:
    """Units per family and deployment, from the summaries' ``zoho_calls`` (the pipeline's meter)."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        for family, v in (getattr(r.summary, "zoho_calls", None) or {}).items():
            out[r.deployment][family] += v.get("units", 0)
    return out


def report(name: str, days: list[Measured], idle_bookings: int | None, bulk_read_credits: int) -> tuple[list[tuple[str, str, bool]], int]:
    """Print one scenario's figures; returns its targets ``(name, figure, met)`` and the day's Bookings calls."""
    targets: list[tuple[str, str, bool]] = []
    first_bookings = 0
    for i, m in enumerate(days):
        print(f"\n-- {m.label}: {m.start:%Y-%m-%d %H:%M} -> {m.end:%Y-%m-%d %H:%M} UTC (simulated), {m.seconds:.0f} s wall time")
        made = [e for e in m.edits if e.ok]
        if m.edits:
            mix = Counter(f"{e.side} {e.kind}" for e in made)
            print(f"   edits made: {len(made)} ({', '.join(f'{k} {v}' for k, v in sorted(mix.items()))}); refused by the sandbox: {len(m.edits) - len(made)}")
            for e in m.edits:
                if not e.ok:
                    print(f"      refused: {e.side} {e.kind} {e.booking_id}: {e.answer}")
        out = m.stats.get("outbound", {})
        print(f"   deliveries: bookings webhooks sent {out.get('bookings_webhook_sent', 0)}, dropped {out.get('bookings_webhook_dropped', 0)}; "
              f"CRM notifications sent {out.get('notification_sent', 0)}, dropped {out.get('notification_dropped', 0)}")  # fmt: skip
        skipped = sum((getattr(r.summary, "api_calls", None) or {}).get("bookings_echoes_not_read", 0) for r in m.runs)
        print(f"   Bookings webhooks heard by the receiver: {m.webhooks or 'none'}; of those queued, echoes the webhook runs did not read "
              f"(booking_states): {skipped}; CRM notifications heard: {m.heard.get('zoho.crm.notification', 0)}")  # fmt: skip
        bookings = m.stats["calls_by_group"].get("bookings", 0)
        credits = crm_credits(m.stats, bulk_read_credits)
        minimum = len(made)  # each edit: one write on the other side, one read (Bookings for a Bookings edit, CRM for a CRM one)
        if i == 0:
            first_bookings = bookings
        print(f"   {'':34s}{'sandbox':>9s}{'pipeline':>10s}{'minimum':>9s}{'ratio':>8s}")
        for fam, got, mine in (("Bookings calls", bookings, m.usage.get("bookings", 0)), ("CRM credits", credits, m.usage.get("crm", 0))):
            ratio = f"{got / minimum:8.2f}" if minimum else f"{'-':>8s}"
            print(f"   {fam:34s}{got:9,}{mine:10,}{minimum:9,}{ratio}")
        print(f"   {'Bookings plan limits (calls a day)':36s}{', '.join(f'{k} {v:,}' for k, v in BOOKINGS_PLANS.items())}")
        bk_routes = {k.split("/")[-1]: v for k, v in m.stats["calls"].items() if "/bookings/" in k}
        crm_routes = {k: v for k, v in m.stats["calls"].items() if "/crm/" in k}
        print(f"   Bookings calls by method: {bk_routes}")
        print(f"   CRM calls by route: {crm_routes}; Bulk Read jobs {m.stats['bulk_jobs_created']} (x {bulk_read_credits} credits)")
        spent = spent_by_deployment(m.runs)
        print("   flow runs by deployment (the pipeline's meter: Bookings calls / CRM credits; wall seconds: total, mean, max):")
        by: dict[str, list[RunRecord]] = defaultdict(list)
        for r in m.runs:
            by[r.deployment].append(r)
        for dep, rs in sorted(by.items(), key=lambda kv: -len(kv[1])):
            secs = [r.seconds for r in rs]
            failed = sum(1 for r in rs if r.error)
            print(f"      {dep:28s}{len(rs):5d} runs{f' ({failed} failed)' if failed else '':12s} bookings {spent[dep]['bookings']:5,}  crm {spent[dep]['crm']:6,}   "
                  f"{sum(secs):7.1f} s, {sum(secs) / len(secs):5.2f}, {max(secs):5.2f}")  # fmt: skip
        print(f"      {'total':28s}{len(m.runs):5d} runs")
        if m.late_steps:
            print(f"   steps that started late (the previous step ran past their simulated time): {m.late_steps}")
        waiting = put_off(m.runs)
        if waiting or m.pending_reads:
            print(f"   put off by the budget (summaries' waiting / failures): {waiting}; bookings still waiting in pending_reads: {m.pending_reads}")
        lost_ids = {x.split()[-1] for x in m.lost_edits} | {x.split(":", 1)[0] for x in m.disagreeing}
        print(f"   changes lost: {len(lost_ids)} ({len(m.lost_edits)} edits not showing on both sides, {len(m.disagreeing)} linked pairs disagreeing)")
        for x in (m.lost_edits + m.disagreeing)[:20]:
            print(f"      {x}")
        m.stats["lost"] = len(lost_ids)
        m.stats["waiting"] = waiting

    m = days[0]
    bookings = m.stats["calls_by_group"].get("bookings", 0)
    credits = crm_credits(m.stats, bulk_read_credits)
    made = sum(1 for e in m.edits if e.ok)
    if name == "idle":
        targets += [("idle: Bookings calls <= 50", f"{bookings:,}", bookings <= 50), ("idle: CRM credits <= 1,000", f"{credits:,}", credits <= 1000)]
    if name in ("busy", "budget"):
        if idle_bookings is None:
            idle_bookings = m.stats["calls"].get("POST /bookings/v1/json/fetchappointment", 0) + m.stats["calls"].get("GET /bookings/v1/json/fetchappointment", 0)
            idle_note = f"this day's fetchappointment calls, {idle_bookings}"
        else:
            idle_note = f"the idle day's {idle_bookings}"
        cap = 1.3 * made + idle_bookings
    if name == "busy":
        targets += [
            (f"busy: Bookings calls <= 1.3 x {made} + idle ({idle_note}) = {cap:.0f}", f"{bookings:,}", bookings <= cap),
            ("busy: Bookings calls < 250 (Free plan)", f"{bookings:,}", bookings < 250),
            ("busy: changes lost = 0", str(m.stats["lost"]), m.stats["lost"] == 0),
        ]
    if name == "budget":
        last = days[-1]
        per_day = last.stats["bookings_days"]
        mine = last.stats["store_bookings_days"]
        print(f"\n   Bookings calls per workspace day ({WORKSPACE_TZ}), sandbox limits counters (base full included): {per_day}")
        print(f"   the same from the pipeline's api_usage: {mine}")
        worst = max(per_day.values(), default=0)
        reported = sum(d.stats["waiting"].get("runs reporting something put off", 0) for d in days)
        targets += [
            (f"budget: most Bookings calls in a workspace day <= {BUDGET_CALLS}", f"{worst:,}", worst <= BUDGET_CALLS),
            ("budget: what was put off is reported (runs whose summary says so > 0)", f"{reported:,}", reported > 0),
            ("budget: caught up on day 2 (bookings left in pending_reads = 0)", str(last.pending_reads), last.pending_reads == 0),
            ("budget: changes lost at the end of day 2 = 0", str(last.stats["lost"]), last.stats["lost"] == 0),
        ]
    return targets, first_bookings


# ------------------------------------------------------------------ main
async def run_all(scenarios: list[Scenario], sandbox_url: str, tmp: Path, day1: datetime, due_by_day: list[list[Due]], args: argparse.Namespace) -> tuple[list[tuple[str, str, bool]], float]:
    """Run the scenarios in order and print their figures; returns the targets and the total seconds."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30) as http:
        bulk_read_credits = int((await http.get("/__sandbox/config")).json()["crm_bulk_read_credits"])
    targets: list[tuple[str, str, bool]] = []
    idle_bookings: int | None = None
    t0 = time.monotonic()
    for sc in scenarios:
        days = await run_scenario(sc, sandbox_url, tmp, day1, due_by_day, args)
        found, bookings = report(sc.name, days, idle_bookings, bulk_read_credits)
        targets += found
        if sc.name == "idle":
            idle_bookings = bookings
    return targets, time.monotonic() - t0


def first_day(now: datetime) -> datetime:
    """02:00 UTC of the first simulated day: the next 02:00 at least an hour ahead of ``now``
    (the notification channel's expiry is set from the real clock and must be within a week of the simulated one)."""
    day = (now + timedelta(hours=1)).replace(hour=2, minute=0, second=0, microsecond=0)
    return day if day >= now + timedelta(hours=1) else day + timedelta(days=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=("idle", "busy", "budget", "all"), default="all")
    p.add_argument("--appointments", type=int, default=2000)
    p.add_argument("--edits", type=int, default=100, help="edits on each side in the busy and budget days")
    p.add_argument("--seed", type=int, default=42, help="seed of the sandbox's data, the edits and the dropped deliveries")
    p.add_argument("--hours", type=float, default=24, help="length of a simulated day (shorter for a quick look; the targets assume 24)")
    p.add_argument("--verbose", action="store_true", help="print every flow run with its time and Zoho calls")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (Prefect's database, the state stores, the servers' log)")
    args = p.parse_args()
    scenarios = [SCENARIOS[n] for n in (("idle", "busy", "budget") if args.scenario == "all" else (args.scenario,))]

    wall = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="api-day-"))
    with open(tmp / "servers.log", "w") as log:
        sandbox_port, prefect_port = free_port(), free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        procs = [start_sandbox(sandbox_port, log), start_prefect(prefect_port, tmp, log)]
        try:
            wait_until_up(f"{sandbox_url}/__sandbox/health", procs[0])
            wait_until_up(f"http://127.0.0.1:{prefect_port}/api/health", procs[1])
            os.environ.update(PREFECT_HOME=str(tmp), PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api")
            from deployments.serve import build

            deployments = build(CONFIG_BLOCK, OAUTH_BLOCK, time_zone="UTC", channel_block=CHANNEL_BLOCK)
            day1 = first_day(datetime.now(UTC))
            start, span = day1 + timedelta(minutes=5), timedelta(hours=args.hours)
            due_by_day = [scheduled_runs(deployments, start + timedelta(days=n), start + timedelta(days=n) + span) for n in range(max(s.days for s in scenarios))]
            print(f"api day: {', '.join(s.name for s in scenarios)}; {args.appointments:,} appointments, {args.edits} edits a side on busy days, seed {args.seed}; "
                  f"{os.cpu_count()} CPUs; scheduled runs a day: {dict(Counter(d.deployment for d in due_by_day[0]))}", flush=True)  # fmt: skip
            targets, seconds = asyncio.run(run_all(scenarios, sandbox_url, tmp, day1, due_by_day, args))
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(30)
                except Exception:  # noqa: BLE001
                    proc.kill()
            if args.keep:
                print(f"kept {tmp}")
            else:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    print("\n== targets")
    for name, got, ok in targets:
        print(f"   {name:78s}{got:>8s}   {'ok' if ok else 'missed'}")
    print(f"wall time: {time.monotonic() - wall:.0f} s ({seconds:.0f} s in the scenarios)")
    met = all(ok for _, _, ok in targets)
    print(f"targets: {'met' if met else 'missed'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
