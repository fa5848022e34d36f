"""Soak: the full and scan syncs under injected faults, a few thousand changes, nothing lost or repeated.

``.venv/bin/python benchmarks/soak.py [--appointments 3000] [--rounds 4] [--changes 3000] [--seed 42]
[--module Appointments__s|Events|both] [--error-500 0.10] [--error-429 0.05] [--retry-after 1] [--drop 0.02] [--keep] [--verbose]``

``--module`` is the CRM module synced and edited: ``Appointments__s`` (default), ``Events``
(CRM Meetings: ``Start_DateTime`` / ``End_DateTime``, status picklist ``Booking_Status``) or
``both`` (``crm_module="Appointments__s"``, ``crm_modules=["Events"]``: Bookings is the hub,
and the CRM-side edits of each kind alternate between the two modules).

It starts ``python -m sandbox`` (``--appointments``, ``--seed``) and ``prefect server
start`` on free 127.0.0.1 ports, with ``PREFECT_HOME``, Prefect's database and the
sync's SQLite state store in a temporary folder (removed at the end unless ``--keep``),
onboards like ``make demo`` (grant code -> ``ZohoOAuth`` block, an
``AppointmentSyncConfig`` block) and runs a full sync with no faults: the base. Then,
``--rounds`` times:

1. **changes**: ``--changes / --rounds`` edits through the sandbox admin API, as users
   would, each on one side of a link whose sides agree at that moment (so every
   change needs exactly one write on each other system: one with one CRM module, two
   with both): CRM reschedules (later by 1-6 h; a Meeting is dragged, start and end),
   Bookings reschedules, CRM and Bookings cancellations, completions of
   appointments that have ended (both sides), Bookings no-shows and, where Meetings
   are synced, Meeting no-shows (``Booking_Status`` ``No Show``; half of the CRM
   completions' share). Reschedules move
   forward only and avoid daylight-saving folds and gaps; Bookings-side ones stay
   inside the scan window (7 days back to 30 ahead here; the soak has no webhook
   receiver, so the scan, the safety net, is what carries Bookings changes).
2. **faults on** (``PUT /__sandbox/faults``, group ``all``: 10 % HTTP 500, 5 % HTTP 429
   with ``Retry-After: 1``, 2 % dropped connections, on Accounts, CRM, Bulk Read and
   Bookings alike) and one sync, scan (incremental plus the Bookings window) in odd
   rounds and full in even ones.
   While it runs a background thread kills the access token once the sync has made
   60 % of the round's writes: ``POST /__sandbox/tokens/expire`` in odd rounds, and in
   even rounds ``POST /oauth/v2/token/revoke`` of the token the run is using (the
   sandbox revokes one access token). A sync run that raises is recorded and the
   soak goes on. Before each run the soak waits out a token-minting pause the
   ``ZohoOAuth`` block may have set (``throttled_until``: the sandbox answers a 429
   fault on ``/oauth/v2/token`` with Zoho's "Access Denied" throttle body, which the
   block honours for 2 minutes, by design); the wait is printed.

After the last round it reads the retry queue, turns the faults off, runs one more
full sync and reads it again. Figures (sandbox counters are zeroed after the base):

* **changes made**: admin edits the sandbox accepted.
* **physical minimum**: the writes the changes need: each change once on each of the
  other systems (changes made x the number of synced CRM modules).
* **changes applied**: writes the sync made, from the sandbox: accepted writes
  (``GET /__sandbox/stats`` ``writes``) minus the soak's own admin edits. Must equal
  the physical minimum: every change carried exactly once to each other system.
* **writes repeated** (must be 0): for each record (a CRM appointment or Meeting, a booking),
  the sync's writes to it as the sandbox counted them (``writes_by_record`` minus
  the soak's admin edits of that record) beyond the distinct changes the state
  store's action log says it needed (``sync_actions`` rows ``applied`` to that
  record and first logged after the base, not counting the re-sends below; one row
  per idempotency key = module, link, target, kind, value, base), summed over records. Its
  mirror, **writes lost** (logged applied, never received), must be 0 too.
* **re-sends** (must be 0): changes sent again that Zoho refused as already made
  (logged ``DEPENDENT_FIELD_UNCHANGED`` or ``ALREADY_DONE``, or failed with a Bookings
  "is already ..." refusal): no write, but a sign the sync lost track of one.
* **retries**: Prefect task runs that ran more than once and the extra runs
  (``run_count - 1``, from the Prefect API), next to the faults the sandbox injected
  and the API calls it answered.
* **retry queue**: links with an action the log holds ``failed`` or ``deferred``, plus
  links whose stored sides differ from their module's base (to be planned again), from
  the state store: after the last faulted run, and after the clean run (must be 0).
* **both sides agree** at the end (must), for each synced module: ``/__sandbox/dump``
  through ``deployments.demo.disagreements`` (appointments) and :func:`meeting_disagreements`
  (Meetings: the same start unless finished, ``Booking_Status`` equivalent to the booking's
  status, empty meaning ``Scheduled``).
* sync runs that raised (must be 0), access tokens minted and token kills.

Exit code 1 when a must-hold figure is missed. Only loopback traffic; not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

UTC = timezone.utc
OAUTH_BLOCK, CONFIG_BLOCK = "soak-oauth", "soak-sync"
#: Bookings refusals that mean "this was done already" (a re-send).
ALREADY = ("is already scheduled for the given start_time", "Appointment is already")
CRM_MODULES = ("Appointments__s", "Events")
#: A Meeting's ``Booking_Status`` word (empty: ``Scheduled``) -> the Bookings statuses that say the same.
MEETING_SAME_STATUS = {
    "Scheduled": {"UPCOMING", "ONGOING", "PENDING"},
    "Cancelled": {"CANCEL", "PAYMENT_FAILURE", "NO_SHOW"},
    "Completed": {"COMPLETED"},
    "No Show": {"NO_SHOW"},
}


def modules_of(choice: str) -> list[str]:
    """The CRM modules ``--module`` syncs (the configuration's ``crm_module`` first)."""
    return list(CRM_MODULES) if choice == "both" else [choice]


# ------------------------------------------------------------------ sandbox view
def writable(instant: datetime, tz: str) -> bool:
    """Bookings can write this instant as a wall time in ``tz`` (not in a fold's second pass or a gap)."""
    from zoho.timefmt import from_bookings, to_bookings

    return from_bookings(to_bookings(instant, tz), tz) == instant and to_bookings(instant + timedelta(hours=1), tz) != to_bookings(instant, tz)


@dataclass
class Linked:
    """A booking and its linked record in each synced CRM module, as ``GET /__sandbox/dump`` shows them."""

    booking: dict[str, Any]
    records: dict[str, dict[str, Any]]  # CRM module -> record

    @property
    def id(self) -> str:
        return self.booking["booking_id"]

    @property
    def tz(self) -> str:
        return self.booking["time_zone"]

    @property
    def start(self) -> datetime:
        return _instant(self.booking["start_time"], self.tz)

    @property
    def end(self) -> datetime:
        return _instant(self.booking["end_time"], self.tz)

    def scheduled(self, ended: bool = False) -> bool:
        """Every linked record says scheduled (an appointment that has ended may show ``Overdue``)."""
        for module, r in self.records.items():
            if module == "Events" and (r.get("Booking_Status") or "Scheduled") != "Scheduled":
                return False
            if module == "Appointments__s" and r["Status"] not in (("Scheduled", "Overdue") if ended else ("Scheduled",)):
                return False
        return True


def _instant(text: str, tz: str) -> datetime:
    from zoho.timefmt import from_bookings

    return from_bookings(text, tz).astimezone(UTC)


def meeting_disagreements(dump: dict[str, Any]) -> list[str]:
    """Linked Meetings that differ from their booking: ``Booking_Status`` (empty: ``Scheduled``) not
    equivalent to the booking's status, or another start instant while the Meeting is not finished."""
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    out = []
    for e in dump["Events"]:
        b = bookings.get(e.get("Booking_Id"))
        if b is None:
            continue
        word = e.get("Booking_Status") or "Scheduled"
        same_start = datetime.fromisoformat(e["Start_DateTime"]).astimezone(UTC) == _instant(b["start_time"], b["time_zone"])
        if b["status"] not in MEETING_SAME_STATUS.get(word, set()) or not (same_start or word != "Scheduled"):
            out.append(f"{b['booking_id']}: Meeting {e['Start_DateTime']} {word} / Bookings {b['start_time']} {b['time_zone']} {b['status']}")
    return out


def _disagreements(dump: dict[str, Any], modules: list[str]) -> list[str]:
    """``booking_id: ...`` lines of every synced module's links that disagree."""
    from deployments.demo import disagreements

    return [*(disagreements(dump) if "Appointments__s" in modules else []), *(meeting_disagreements(dump) if "Events" in modules else [])]


def agreeing_pairs(http: httpx.Client, modules: list[str]) -> tuple[list[Linked], int]:
    """Bookings linked in every synced module whose sides all agree now, and the number of bookings with a link that disagrees."""
    dump = http.get("/__sandbox/dump").json()
    bad = {line.split(":", 1)[0] for line in _disagreements(dump, modules)}
    records = {m: {r["Booking_Id"]: r for r in dump[m] if r.get("Booking_Id")} for m in modules}
    out = [Linked(b, {m: records[m][b["booking_id"]] for m in modules}) for b in dump["bookings"]
           if b["booking_id"] not in bad and all(b["booking_id"] in records[m] for m in modules)]  # fmt: skip
    return sorted(out, key=lambda p: p.id), len(bad)


def disagreeing(http: httpx.Client, modules: list[str]) -> list[str]:
    return _disagreements(http.get("/__sandbox/dump").json(), modules)


# ------------------------------------------------------------------ the changes
@dataclass
class Edit:
    side: str  # crm | bookings
    kind: str
    pair: Linked
    body: dict[str, Any]
    module: str = ""  # the CRM module edited (side crm)

    @property
    def record(self) -> str:
        """The ``writes_by_record`` key of the record edited."""
        return f"{self.module}:{self.pair.records[self.module]['id']}" if self.side == "crm" else f"bookings:{self.pair.id}"

    @property
    def label(self) -> str:
        """``crm:reschedule`` (an appointment), ``meeting:reschedule`` (a Meeting), ``bookings:cancel``..."""
        return f"{'meeting' if self.module == 'Events' else self.side}:{self.kind}"


#: Share of each round's changes per kind (completions and no-shows are limited by
#: the appointments that have ended and not been marked yet).
MIX = [("crm", "reschedule", 0.40), ("bookings", "reschedule", 0.38), ("crm", "cancel", 0.06), ("bookings", "cancel", 0.06),
       ("crm", "complete", 0.04), ("bookings", "complete", 0.03), ("bookings", "noshow", 0.03)]
#: With Meetings synced, half of the CRM completions' share goes to Meeting no-shows (``Booking_Status``
#: ``No Show``; appointments have no no-show status of their own).
MIX_MEETINGS = [(side, kind, 0.02 if (side, kind) == ("crm", "complete") else share) for side, kind, share in MIX] + [("crm", "noshow", 0.02)]


def crm_body(module: str, kind: str, p: Linked, to: datetime | None = None) -> dict[str, Any]:
    """What a CRM user's edit of ``kind`` on ``module`` sends (a Meeting reschedule is a calendar drag: start and end)."""
    from zoho.timefmt import to_crm

    if module == "Events":
        if kind == "reschedule":
            assert to is not None
            return {"Start_DateTime": to_crm(to), "End_DateTime": to_crm(to + (p.end - p.start))}
        return {"Booking_Status": {"cancel": "Cancelled", "complete": "Completed", "noshow": "No Show"}[kind]}
    if kind == "reschedule":
        assert to is not None
        return {"Appointment_Start_Time": to_crm(to)}
    return {"Status": "Cancelled", "Cancellation_Reason": "By Customer"} if kind == "cancel" else {"Status": "Completed"}


def plan_edits(pairs: list[Linked], n: int, scan: bool, rng: random.Random, modules: list[str] | None = None) -> list[Edit]:
    """Up to ``n`` edits of distinct agreeing links, by :data:`MIX` (:data:`MIX_MEETINGS` when Meetings are
    synced); the CRM-side edits of each kind take turns over the ``modules`` that can show it."""
    modules = modules or ["Appointments__s"]
    now = datetime.now(UTC)
    future = [p for p in pairs if p.booking["status"] == "UPCOMING" and p.scheduled() and p.start > now + timedelta(hours=3)]
    # ended, not marked yet; a scan run reads Bookings from 7 days back
    ended = [p for p in pairs if p.booking["status"] == "UPCOMING" and p.scheduled(ended=True) and p.end < now - timedelta(minutes=5)
             and (not scan or p.start > now - timedelta(days=6, hours=12))]
    rng.shuffle(future)
    rng.shuffle(ended)
    edits: list[Edit] = []
    horizon = now + timedelta(days=29, hours=12)  # inside the scan's Bookings window (30 days)
    for side, kind, share in MIX_MEETINGS if "Events" in modules else MIX:
        want = round(n * share)
        pool = ended if kind in ("complete", "noshow") else future
        eligible = [m for m in modules if kind != "noshow" or m == "Events"]  # appointments have no no-show status
        turn = 0
        while want and pool:
            p = pool.pop()
            module = eligible[turn % len(eligible)] if side == "crm" else ""
            to = None
            if kind == "reschedule":
                to = p.start + timedelta(hours=rng.randint(1, 6), minutes=rng.choice((0, 15, 30, 45)))
                if not writable(to, p.tz) or (side == "bookings" and to > horizon):
                    continue
            if side == "crm":
                body = crm_body(module, kind, p, to)
            elif kind == "reschedule":
                from zoho.timefmt import to_bookings

                assert to is not None
                body = {"start_time": to_bookings(to, p.tz)}
            else:
                body = {"action": {"cancel": "cancel", "complete": "completed", "noshow": "noshow"}[kind]}
            edits.append(Edit(side, kind, p, body, module))
            turn += 1
            want -= 1
    return edits


def apply_edits(url: str, edits: list[Edit], threads: int = 4) -> list[Edit]:
    """PATCH each edit through the admin API; returns the ones the sandbox accepted."""
    done: list[Edit] = []
    lock = threading.Lock()

    def run(chunk: list[Edit]) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for e in chunk:
                if e.side == "crm":
                    r = http.patch(f"/__sandbox/crm/{e.module}/{e.pair.records[e.module]['id']}", json=e.body)
                    ok = r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS"
                else:
                    r = http.patch(f"/__sandbox/bookings/{quote(e.pair.id, safe='')}", json=e.body)
                    ok = r.status_code == 200 and r.json()["response"]["status"] == "success"
                if ok:
                    with lock:
                        done.append(e)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [edits[i::threads] for i in range(threads)]))
    return done


# ------------------------------------------------------------------ token killer
class TokenKiller(threading.Thread):
    """Kills the access token once the sandbox has taken ``after_writes`` writes (counted from ``base_writes``)."""

    def __init__(self, url: str, how: str, token: str | None, base_writes: int, after_writes: int) -> None:
        super().__init__(daemon=True)
        self.url, self.how, self.token, self.base, self.after = url, how, token, base_writes, max(1, after_writes)
        self.stop = threading.Event()
        self.killed_at_writes: int | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.wait(0.25):
                written = sum(http.get("/__sandbox/stats").json()["writes"].values()) - self.base
                if written < self.after:
                    continue
                if self.how == "revoke" and self.token:
                    for _ in range(50):  # the Accounts routes are faulted too
                        try:
                            r = http.post("/oauth/v2/token/revoke", data={"token": self.token})
                        except httpx.HTTPError:
                            continue
                        if r.status_code == 200 or "invalid_token" in r.text:
                            break
                else:
                    http.post("/__sandbox/tokens/expire").raise_for_status()
                self.killed_at_writes = written
                return


# ------------------------------------------------------------------ the state store
def store_figures(store_url: str, since: datetime, modules: list[str] | None = None) -> dict[str, Any]:
    """From the state store: needed writes per record, re-sends, and the retry queue (over the synced ``modules``)."""
    from sqlalchemy import select

    from sync.links import SyncAction, changed_links, retry_queue
    from sync.modules import crm_module
    from sync.store import make_engine

    engine = make_engine(store_url)
    try:
        t = SyncAction.__table__.c
        needed: Counter[str] = Counter()
        resent = 0
        with engine.connect() as conn:
            rows = conn.execute(select(t.key, t.target, t.booking_id, t.crm_id, t.status, t.code, t.message, t.created_at)).all()
        from sync.store import UTCDateTime

        conv = UTCDateTime()
        for key, target, bid, cid, status, code, message, created in rows:
            created = conv.process_result_value(created, engine.dialect) if isinstance(created, str) else created
            if created is None or created < since:
                continue
            if code in ("DEPENDENT_FIELD_UNCHANGED", "ALREADY_DONE") or (status == "failed" and message and any(s in message for s in ALREADY)):
                resent += 1
                continue
            if status == "applied":
                module = "Events" if key.startswith("Events|") else "Appointments__s"  # Meetings' action keys carry their module
                needed[f"{module}:{cid}" if target == "crm" else f"bookings:{bid}"] += 1
        queued = {a.booking_id for a in retry_queue(engine)}
        out_of_step = set()
        for module in modules or ["Appointments__s"]:
            m = crm_module(module)  # the configuration's defaults (Meetings: status picklist Booking_Status)
            links = changed_links(engine, crm_table=m.table, crm_statuses=m.statuses, base_table=m.base_table, crm_status_sql=m.status_sql, crm_where=m.where_sql)
            while True:
                try:
                    out_of_step.add(next(links).booking_id)
                except StopIteration:
                    break
                except ValueError:
                    continue
        return {"needed": needed, "resent": resent, "failed_actions": len(queued), "out_of_step": len(out_of_step - queued),
                "retry_queue": len(queued | out_of_step)}
    finally:
        engine.dispose()


def task_retries(api: str) -> tuple[int, int, int, int]:
    """(task runs, task runs retried, extra runs, task runs failed) on the private Prefect server."""
    runs, offset = [], 0
    with httpx.Client(timeout=60) as http:
        while True:
            page = http.post(f"{api}/task_runs/filter", json={"limit": 200, "offset": offset}).raise_for_status().json()
            runs += page
            if len(page) < 200:
                break
            offset += 200
    retried = [r for r in runs if (r.get("run_count") or 0) > 1]
    failed = sum(1 for r in runs if (r.get("state") or {}).get("type") == "FAILED")
    return len(runs), len(retried), sum(r["run_count"] - 1 for r in retried), failed


# ------------------------------------------------------------------ the run
@dataclass
class Round:
    mode: str
    made: int
    kinds: Counter
    seconds: float
    applied: int | None
    failed: int | None
    error: str | None
    kill: str
    killed_at: int | None
    faults: dict[str, int] = field(default_factory=dict)


async def onboard(url: str, store_url: str, modules: list[str]) -> None:
    from pydantic import SecretStr

    from blocks.sync_config import AppointmentSyncConfig
    from deployments.onboarding import onboard as do_onboard
    from deployments.onboarding import sandbox_grant

    client_id, secret, code, scopes = sandbox_grant(url)
    await do_onboard(OAUTH_BLOCK, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=url, scopes=scopes)
    await AppointmentSyncConfig(
        oauth_block=OAUTH_BLOCK, bookings_time_zone="Asia/Kolkata", state_store_url=store_url, bookings_plan="premium", crm_edition="enterprise", crm_users=10,
        scan_past_hours=7 * 24, scan_future_hours=30 * 24, scan_max_calls=100,  # the old incremental window: no receiver here, the scan carries Bookings edits
        crm_module=modules[0], crm_modules=modules[1:],
    ).asave(CONFIG_BLOCK, overwrite=True)


async def current_token() -> str | None:
    from blocks.zoho_oauth import ZohoOAuth

    block = await ZohoOAuth.aload(OAUTH_BLOCK)
    return block.access_token.get_secret_value() if block.access_token else None


def sync_once(mode: str) -> tuple[Any, str | None]:
    from blocks.zoho_oauth import ZohoOAuth
    from flows.sync_appointments import sync_appointments

    until = asyncio.run(ZohoOAuth.aload(OAUTH_BLOCK)).throttled_until
    if until is not None and until > datetime.now(UTC):
        wait = (until - datetime.now(UTC)).total_seconds() + 1
        print(f"    waiting {wait:.0f} s: the ZohoOAuth block pauses token minting after a throttle answer", flush=True)
        time.sleep(wait)
    try:
        return asyncio.run(sync_appointments(config_block=CONFIG_BLOCK, mode=mode)), None
    except Exception as exc:  # noqa: BLE001 - a run that raises is a finding, the soak goes on
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"


def soak(url: str, api: str, store_url: str, args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    modules = modules_of(args.module)
    http = httpx.Client(base_url=url, timeout=300)
    asyncio.run(onboard(url, store_url, modules))
    t0 = time.monotonic()
    base, error = sync_once("full")
    if base is None:
        raise SystemExit(f"the base sync failed: {error}")
    line("base (full sync, no faults)", f"{time.monotonic() - t0:.1f} s", f"{base.links:,} links, {base.applied:,} applied, {base.failed} failed")
    http.delete("/__sandbox/stats").raise_for_status()
    since = datetime.now(UTC)
    soak_t0 = time.monotonic()

    faults = {"all": {"error_500": args.error_500, "error_429": args.error_429, "retry_after": args.retry_after, "drop": args.drop}}
    admin: Counter[str] = Counter()
    rounds: list[Round] = []
    per_round = args.changes // args.rounds
    for r in range(1, args.rounds + 1):
        mode = "scan" if r % 2 else "full"
        pairs, _ = agreeing_pairs(http, modules)
        done = apply_edits(url, plan_edits(pairs, per_round, mode == "scan", rng, modules))
        for e in done:
            admin[e.record] += 1
        stats = http.get("/__sandbox/stats").json()
        writes_before = sum(stats["writes"].values())
        faults_before = Counter(stats["faults_injected"])
        http.put("/__sandbox/faults", json=faults).raise_for_status()
        how = "expire" if r % 2 else "revoke"
        killer = TokenKiller(url, how, asyncio.run(current_token()) if how == "revoke" else None, writes_before, int(len(done) * len(modules) * 0.6))
        killer.start()
        t0 = time.monotonic()
        summary, error = sync_once(mode)
        seconds = time.monotonic() - t0
        killer.stop.set()
        killer.join()
        http.delete("/__sandbox/faults").raise_for_status()  # the admin API is never faulted; the token calls between runs are
        injected = Counter(http.get("/__sandbox/stats").json()["faults_injected"]) - faults_before
        rounds.append(Round(mode, len(done), Counter(e.label for e in done), seconds, summary.applied if summary else None,
                            summary.failed if summary else None, error, how, killer.killed_at_writes, dict(injected)))
        rd = rounds[-1]
        codes = Counter(f["code"] for f in summary.failures) if summary else Counter()
        result = f"applied {rd.applied}, failed {rd.failed}{' ' + str(dict(codes)) if codes else ''}" if error is None else f"RAISED {error}"
        kill = f"token {how}d after {rd.killed_at} writes" if rd.killed_at is not None else f"token not {how}d (run ended first)"
        line(f"round {r}: {len(done)} changes, {mode} sync, faults on", f"{seconds:.1f} s", f"{result}; {kill}; faults {dict(sorted(injected.items()))}")
        if args.verbose:
            print(f"    changes: {dict(sorted(rd.kinds.items()))}")
            if summary is not None:
                print(f"    run: {summary.headline()}; planned {dict(sorted(summary.planned.items()))}")
                for f in summary.failures[:5]:
                    print(f"    failed {f.get('booking_id')} {f.get('target')} {f.get('kind')}: {f.get('code')} {str(f.get('message'))[:120]}")
                for c in summary.conflict_list[:5]:
                    print(f"    conflict {c.get('booking_id')} {c.get('kind')}: {str(c.get('reason'))[:160]}")

    after_faults = store_figures(store_url, since, modules)
    disagree_faulted = len(disagreeing(http, modules))
    t0 = time.monotonic()
    final, final_error = sync_once("full")
    line("one more full sync, faults off", f"{time.monotonic() - t0:.1f} s",
         f"applied {final.applied}, failed {final.failed}" if final else f"RAISED {final_error}")
    after_clean = store_figures(store_url, since, modules)
    bad = disagreeing(http, modules)
    stats = http.get("/__sandbox/stats").json()
    http.close()
    soak_seconds = time.monotonic() - soak_t0

    # --- figures
    made = sum(rd.made for rd in rounds)
    minimum = made * len(modules)  # each change once on each other system: Bookings or the CRM module(s) not edited
    by_record = Counter(stats["writes_by_record"])
    sync_writes = {k: v - admin.get(k, 0) for k, v in by_record.items() if v - admin.get(k, 0) > 0}
    needed = after_clean["needed"]
    extra = sum(max(0, n - needed.get(k, 0)) for k, n in sync_writes.items())
    lost = sum(max(0, n - sync_writes.get(k, 0)) for k, n in needed.items())
    resent = after_clean["resent"]
    applied = sum(sync_writes.values())
    n_tasks, n_retried, extra_runs, n_failed_tasks = task_retries(api)
    injected = stats["faults_injected"]
    raised = sum(1 for rd in rounds if rd.error) + (1 if final_error else 0)
    kinds = sum((rd.kinds for rd in rounds), Counter())

    print()
    rows = [
        ("changes made (admin edits accepted)", f"{made:,}", None),
        ("  by kind", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), None),
        *([("physical minimum (each change x other systems)", f"{minimum:,}  ({made:,} x {len(modules)})", None)] if len(modules) > 1 else []),
        ("changes applied (sync writes the sandbox took)", f"{applied:,}", applied == minimum),
        ("  logged applied in sync_actions", f"{sum(needed.values()):,}", None),
        ("writes repeated", f"{extra}", extra == 0),
        ("re-sends (refused or found done by Zoho)", f"{resent}", resent == 0),
        ("writes lost (logged applied, never received)", f"{lost}", lost == 0),
        ("task runs / retried / extra runs / failed for good", f"{n_tasks:,} / {n_retried:,} / {extra_runs:,} / {n_failed_tasks:,}", None),
        ("faults injected / API calls answered", f"{sum(injected.values()):,} / {stats['total_calls']:,}  {dict(sorted(injected.items()))}", None),
        ("retry queue after the last faulted run", f"{after_faults['retry_queue']}  ({after_faults['failed_actions']} with failed actions, "
         f"{after_faults['out_of_step']} out of step; {disagree_faulted} links disagree in Zoho)", None),
        ("retry queue after one more run, faults off", f"{after_clean['retry_queue']}", after_clean["retry_queue"] == 0),
        ("both sides agree at the end", "yes" if not bad else f"NO: {len(bad)} links differ", not bad),
        ("sync runs that raised", f"{raised}", raised == 0),
        ("access tokens minted / token kills", f"{stats['tokens_minted']} / {sum(1 for rd in rounds if rd.killed_at is not None)}", None),
        ("soak (rounds + last run)", f"{soak_seconds:.0f} s", None),
    ]
    for name, value, ok in rows:
        print(f"{name:<52}{value}{'' if ok is None else ('   ok' if ok else '   MISSED')}")
    for b in bad[:10]:
        print(f"  - {b}")
    met = all(ok for _, _, ok in rows if ok is not None)
    print(f"must-hold figures: {'met' if met else 'MISSED'}")
    return met


def line(name: str, seconds: str, text: str) -> None:
    print(f"{name:<52}{seconds:>9}   {text}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--appointments", type=int, default=3000, help="appointments to seed (about 40 %% upcoming within 30 days)")
    p.add_argument("--rounds", type=int, default=4, help="faulted sync runs (odd: scan, even: full)")
    p.add_argument("--changes", type=int, default=3000, help="changes in total, spread over the rounds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--module", choices=("Appointments__s", "Events", "both"), default="Appointments__s",
                   help="the CRM module synced and edited: Appointments__s, Events (Meetings), or both (the CRM edits alternate between them)")
    p.add_argument("--error-500", type=float, default=0.10)
    p.add_argument("--error-429", type=float, default=0.05)
    p.add_argument("--retry-after", type=float, default=1)
    p.add_argument("--drop", type=float, default=0.02)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, state store, Prefect database)")
    p.add_argument("--verbose", action="store_true", help="Prefect's warnings and the first failures of each round")
    args = p.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if args.verbose else "CRITICAL")

    tmp = Path(tempfile.mkdtemp(prefix="appt-soak-"))
    home = tmp / "prefect"
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    from deployments import processes, services

    print(f"soak: {args.appointments:,} appointments, CRM {' + '.join(modules_of(args.module))}, {args.changes:,} changes over {args.rounds} faulted runs, faults "
          f"500 {args.error_500:.0%} / 429 {args.error_429:.0%} (Retry-After {args.retry_after:g} s) / drop {args.drop:.0%}, "
          f"{os.cpu_count()} CPUs, folder {tmp}", flush=True)
    try:
        api = services.ensure_prefect_server(processes.free_port(), home)
        os.environ["PREFECT_API_URL"] = api
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with services.sandbox_process("--appointments", str(args.appointments), "--seed", str(args.seed), "--bulk-delay", "0.3", log_dir=tmp) as url, \
                temporary_settings({PREFECT_API_URL: api}):
            met = soak(url, api, f"sqlite:///{tmp / 'state.db'}", args)
    finally:
        processes.stop_pidfile(home / "server.pid")
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
