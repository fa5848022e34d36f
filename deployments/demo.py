"""``make demo`` / ``appt-sync demo``: the whole sync, end to end, against the local sandbox.

1. Reuse (or start, detached, PID in ``PREFECT_HOME/server.pid``) a Prefect server on
   127.0.0.1:``PREFECT_PORT`` (4200) with the project-local ``PREFECT_HOME``.
2. Reuse (or start, detached) the stack's ``sandbox`` service on 127.0.0.1:``SANDBOX_PORT``
   (8900; PID in ``PREFECT_HOME/sandbox.pid``, data in ``.data/sandbox.db``) and re-seed
   it fresh (``POST /__sandbox/reset``). Both keep running after the demo, so the
   blocks stay valid and ``appt-sync sync`` works afterwards; ``make down`` stops them.
3. Onboard with the least-privilege scopes: exchange a grant code for tokens, save the
   ``ZohoOAuth`` block ``zoho-sandbox`` and the ``AppointmentSyncConfig`` ``sync-sandbox``
   (the names ``appt-sync`` and ``make up`` use; state store ``.data/stack-state.db``,
   emptied: a fresh sandbox needs a fresh base).
4. Run a full sync and print its summary (and why it cancels the seed's no-shows in CRM).
5. Edit both sides as users would (admin API): reschedules across time zones and
   across a daylight-saving change, cancellations, completions, a no-show, and
   conflicting edits.
6. Run the syncs the edits start in production: one run of the bookings edited in
   Bookings (what the receiver starts from their webhooks: ``getappointment`` each),
   then the 5-minute incremental run (CRM records changed since the bookmark; no
   Bookings window). Print their summaries (with the day's Zoho API budget) and the
   Prefect UI address of the runs, and check through the admin API that every
   linked appointment agrees on both sides. Exit code 0 only if they all agree.
7. Say what is still running and how to go on: a ready-to-paste edit of each side,
   ``appt-sync sync`` to carry it over (or ``make up`` for webhooks), ``make down``.

With ``make up``'s stack running, the demo switches the sandbox's Bookings webhook
off while it works (its syncs would race the demo's) and, at the end, wires the
re-seeded sandbox to the receiver again (:func:`deployments.onboarding.wire`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from . import onboarding, processes, services
from .onboarding import CONFIG_BLOCK, OAUTH_BLOCK
from .processes import ROOT

#: The blocks the demo saves: the same as ``make up`` and ``appt-sync``'s defaults.
DEMO_BLOCK = OAUTH_BLOCK
DEMO_CONFIG = CONFIG_BLOCK


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


@dataclass
class Pair:
    """A linked CRM appointment and its booking, as ``GET /__sandbox/dump`` shows them."""

    crm: dict[str, Any]
    booking: dict[str, Any]

    @property
    def id(self) -> str:
        """The ``booking_id``."""
        return self.booking["booking_id"]

    @property
    def tz(self) -> str:
        """The booking's time zone."""
        return self.booking["time_zone"]

    @property
    def start(self) -> datetime:
        """The booking's start as an instant in UTC (``zoho.timefmt.from_bookings``)."""
        return _bookings_instant(self.booking["start_time"], self.tz)

    @property
    def end(self) -> datetime:
        """The booking's end as an instant in UTC."""
        return _bookings_instant(self.booking["end_time"], self.tz)


def _bookings_instant(text: str, tz: str) -> datetime:
    from zoho.timefmt import from_bookings

    return from_bookings(text, tz).astimezone(timezone.utc)


def linked_pairs(dump: dict[str, Any]) -> dict[str, Pair]:
    """``booking_id`` -> :class:`Pair` for every CRM appointment whose booking is in the dump."""
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    return {a["Booking_Id"]: Pair(a, bookings[a["Booking_Id"]]) for a in dump["Appointments__s"] if a.get("Booking_Id") in bookings}


def disagreements(dump: dict[str, Any]) -> list[str]:
    """Linked appointments whose CRM and Bookings sides differ (start instant or status)."""
    from sync.engine import Link, SideState, agree, bookings_canon, crm_canon

    out = []
    for p in linked_pairs(dump).values():
        appt, b = p.crm, p.booking
        crm = SideState(datetime.fromisoformat(appt["Appointment_Start_Time"]), crm_canon(appt["Status"]))
        booking = SideState(p.start, bookings_canon(b["status"]))
        if not agree(Link(b["booking_id"], appt["id"], b["time_zone"], crm, booking)):
            out.append(f"{b['booking_id']}: CRM {appt['Appointment_Start_Time']} {appt['Status']} / Bookings {b['start_time']} {b['time_zone']} {b['status']}")
    return out


def _edits(http: httpx.Client) -> tuple[list[str], list[str]]:
    """Edit both sides as users would; returns what was done (one line each) and the ids of the
    bookings edited in Bookings (each of which sends a webhook under ``make up``)."""
    dump = http.get("/__sandbox/dump").json()
    now = datetime.now(timezone.utc)
    pairs = [(p.crm, p.booking) for p in linked_pairs(dump).values()]

    def pick(tz: str | None, future: bool, crm_status: tuple[str, ...], bk_status: tuple[str, ...]) -> tuple[dict, dict]:
        """An unused pair; past ones ended within the last 6 days (inside the incremental window)."""
        for a, b in pairs:
            start = datetime.fromisoformat(a["Appointment_Start_Time"])
            if a["Booking_Id"] in used or (tz and b["time_zone"] != tz) or (start > now + timedelta(hours=2)) != future:
                continue
            if not future and start < now - timedelta(days=6):
                continue
            if a["Status"] in crm_status and b["status"] in bk_status:
                used.add(a["Booking_Id"])
                return a, b
        raise RuntimeError(f"the seed has no appointment for {tz} future={future} {crm_status} {bk_status}")

    used: set[str] = set()
    done: list[str] = []
    webhooked: list[str] = []

    def crm(a: dict, **changes: Any) -> None:
        r = http.patch(f"/__sandbox/crm/Appointments__s/{a['id']}", json=changes)
        r.raise_for_status()

    def bk(b: dict, **changes: Any) -> None:
        r = http.patch(f"/__sandbox/bookings/{b['booking_id'].replace('#', '%23')}", json=changes)
        r.raise_for_status()
        assert r.json()["response"]["status"] == "success", r.text
        webhooked.append(b["booking_id"])

    a, b = pick("Europe/London", True, ("Scheduled",), ("UPCOMING",))
    new = datetime.fromisoformat(a["Appointment_Start_Time"]) + timedelta(days=1, hours=2)
    crm(a, Appointment_Start_Time=new.isoformat())
    done.append(f"CRM: {b['booking_id']} (London) rescheduled to {new.isoformat()}")
    a, b = pick("America/New_York", True, ("Scheduled",), ("UPCOMING",))
    target = datetime(now.year + 1, 3, 15, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # after the March DST change
    crm(a, Appointment_Start_Time=target.isoformat())
    done.append(f"CRM: {b['booking_id']} (New York, {b['start_time']} EST) moved across the DST change to {target.isoformat()} (EDT)")
    a, b = pick("Australia/Sydney", True, ("Scheduled",), ("UPCOMING",))
    local = datetime.strptime(b["start_time"], "%d-%b-%Y %H:%M:%S") + timedelta(hours=3)
    wall = f"{local.day:02d}-{local:%b-%Y %H:%M:%S}"
    bk(b, start_time=wall)
    done.append(f"Bookings: {b['booking_id']} (Sydney) rescheduled to {wall} Sydney time")
    a, b = pick("Asia/Kolkata", True, ("Scheduled",), ("UPCOMING",))
    bk(b, action="cancel")
    done.append(f"Bookings: {b['booking_id']} cancelled")
    a, b = pick(None, True, ("Scheduled",), ("UPCOMING",))
    crm(a, Status="Cancelled", Cancellation_Reason="By Team", Cancellation_Note="Staff unavailable")
    done.append(f"CRM: {b['booking_id']} cancelled")
    a, b = pick(None, False, ("Overdue",), ("UPCOMING",))
    crm(a, Status="Completed")
    done.append(f"CRM: {b['booking_id']} marked Completed (it has ended)")
    a, b = pick(None, False, ("Overdue",), ("UPCOMING",))
    bk(b, action="completed")
    done.append(f"Bookings: {b['booking_id']} marked completed")
    a, b = pick(None, False, ("Overdue",), ("UPCOMING",))
    bk(b, action="noshow")
    done.append(f"Bookings: {b['booking_id']} marked no-show")
    a, b = pick(None, True, ("Scheduled",), ("UPCOMING",))
    crm(a, Appointment_Start_Time=(datetime.fromisoformat(a["Appointment_Start_Time"]) + timedelta(hours=1)).isoformat())
    bk(b, action="cancel")
    done.append(f"Conflict: {b['booking_id']} rescheduled in CRM and cancelled in Bookings")
    a, b = pick(None, True, ("Scheduled",), ("UPCOMING",))
    crm(a, Appointment_Start_Time=(datetime.fromisoformat(a["Appointment_Start_Time"]) + timedelta(hours=4)).isoformat())
    local = datetime.strptime(b["start_time"], "%d-%b-%Y %H:%M:%S") + timedelta(days=2)
    bk(b, start_time=f"{local.day:02d}-{local:%b-%Y %H:%M:%S}")
    done.append(f"Conflict: {b['booking_id']} rescheduled differently on both sides")
    return done, webhooked


def _print_summary(summary: Any, ui: str) -> None:
    print(f"   links {summary.links}, unchanged {summary.unchanged}, agreed {summary.agreed}, applied {summary.applied}, "
          f"failed {summary.failed}, conflicts {summary.conflicts}, deferred {summary.deferred}")
    print(f"   planned: {summary.planned or 'nothing'}; API calls: {summary.api_calls}")
    for family, name in (("bookings", "Bookings calls today"), ("crm", "CRM credits in 24 h")):
        day = summary.budget.get(family)
        if day:
            print(f"   {name}: {day['used']} of a budget of {day['budget']} (Zoho's limit {day['limit']}), forecast for the day {day['forecast']}")
    for c in summary.conflict_list[:10]:
        print(f"   conflict {c['booking_id']}: {c['reason']}")
    for f in summary.failures[:10]:
        print(f"   failed {f['booking_id']} {f['target']} {f['kind']}: {f['code']} {f['message']}")
    print(f"   Prefect UI: {ui}/runs/flow-run/{summary.run_id}")


def seeded_no_shows(dump: dict[str, Any]) -> int:
    """Linked appointments a Bookings ``NO_SHOW`` and a CRM ``Scheduled``/``Overdue`` (the seed makes past no-shows so)."""
    return sum(1 for p in linked_pairs(dump).values() if p.booking["status"] == "NO_SHOW" and p.crm["Status"] in ("Scheduled", "Overdue"))


def fresh_base(url: str) -> None:
    """Empty the state store at ``url`` in place (base, bookmarks, retry queue): a re-seeded sandbox needs a fresh base.

    Rows are deleted (:func:`sync.store.empty_store`) rather than the file removed, so
    a running receiver (``make up``) keeps a valid connection to it.
    """
    from sync.store import empty_store, open_store

    engine = open_store(url)
    try:
        empty_store(engine)
    finally:
        engine.dispose()


async def _run(sandbox_url: str, ui: str, data_dir: Path) -> int:
    from pydantic import SecretStr

    from flows.sync_appointments import sync_appointments

    from .onboarding import SCOPES, onboard, sandbox_grant

    fresh_base(onboarding.state_store_url(data_dir))
    client_id, secret, code, scopes = sandbox_grant(sandbox_url)
    await onboard(DEMO_BLOCK, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
    await onboarding.save_sync_config(DEMO_CONFIG, DEMO_BLOCK, data_dir, onboarding.sandbox_time_zone(sandbox_url))  # the window in the sandbox's zone
    print(f"   onboarded with the least-privilege scopes ({', '.join(SCOPES)})")
    print(f"   saved blocks '{DEMO_BLOCK}' (ZohoOAuth) and '{DEMO_CONFIG}' (AppointmentSyncConfig, state store {onboarding.state_store_url(data_dir)}, emptied)")

    _say("3. Full sync (Bulk Read of CRM, Bookings window, three-way diff, apply)")
    with httpx.Client(base_url=sandbox_url, timeout=60) as http:
        no_shows = seeded_no_shows(http.get("/__sandbox/dump").json())
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, mode="full"), ui)
    if no_shows:
        print(f"   The CRM cancellations are the seed's {no_shows} past no-shows: Bookings has them as NO_SHOW, CRM (which has no no-show)\n"
              "   as Scheduled. A link seen for the first time follows initial_source (Bookings), so CRM gets Cancelled, note \"No-show (Zoho Bookings)\".")

    _say("4. Users edit both sides")
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        done, webhooked = _edits(http)
        for line in done:
            print(f"   {line}")
        http.delete("/__sandbox/stats")

    _say("5. The syncs these edits start")
    print(f"   Bookings sends a webhook for each of its {len(webhooked)} edits; the receiver (make up) starts one sync of those bookings,")
    print("   which reads each with getappointment (and its CRM record) and applies what changed:")
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, booking_ids=webhooked), ui)
    print("   The CRM edits: the 5-minute incremental run reads the CRM records changed since its bookmark")
    print("   (no Bookings window: Bookings changes come by webhook, and the 2-hourly sync-scan is the safety net):")
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, mode="incremental"), ui)

    _say("6. Do both sides agree?")
    with httpx.Client(base_url=sandbox_url, timeout=60) as http:
        dump = http.get("/__sandbox/dump").json()
        stats = http.get("/__sandbox/stats").json()
    bad = disagreements(dump)
    linked = sum(1 for a in dump["Appointments__s"] if a.get("Booking_Id"))
    print(f"   the two runs used {stats['total_calls']} API calls, wrote {stats['writes'] or 'nothing'}, minted {stats['tokens_minted']} tokens")
    if bad:
        print(f"   {len(bad)} of {linked} linked appointments disagree:")
        for line in bad[:20]:
            print(f"   - {line}")
        return 1
    print(f"   yes: all {linked} linked appointments agree on both sides.")
    return 0


def example_edits(dump: dict[str, Any], sandbox_url: str, now: datetime | None = None) -> list[str]:
    """Two ready-to-paste ``curl`` edits through the admin API, as users would make them.

    A Bookings reschedule (one day later, ``start_time`` as ``dd-MMM-yyyy HH:mm:ss`` in
    the booking's own time zone, the ``#`` of the id as ``%23``) and a CRM cancellation,
    of two upcoming linked appointments (``appt-sync sync --booking-id ...`` carries the
    first over as its webhook would, ``appt-sync sync`` the second). Lines to print; empty
    without such appointments.
    """
    now = now or datetime.now(timezone.utc)
    upcoming = [p for p in linked_pairs(dump).values()
                if p.crm["Status"] == "Scheduled" and p.booking["status"] == "UPCOMING" and now + timedelta(days=1) < p.start < now + timedelta(days=20)]
    if len(upcoming) < 2:
        return []
    upcoming.sort(key=lambda p: p.start)
    booking, appointment = upcoming[0], upcoming[-1]
    local = datetime.strptime(booking.booking["start_time"], "%d-%b-%Y %H:%M:%S") + timedelta(days=1)
    wall = f"{local.day:02d}-{local:%b-%Y %H:%M:%S}"
    json_header = "-H 'Content-Type: application/json'"
    return [
        f"Reschedule booking {booking.id} ({booking.booking['start_time']} {booking.tz}) to a day later, in its own time zone:",
        f"  curl -X PATCH '{sandbox_url}/__sandbox/bookings/{booking.id.replace('#', '%23')}' {json_header} -d '{{\"start_time\": \"{wall}\"}}'",
        f"Cancel appointment {appointment.crm['id']} ({appointment.id}) in CRM:",
        f"  curl -X PATCH '{sandbox_url}/__sandbox/crm/Appointments__s/{appointment.crm['id']}' {json_header} -d '{{\"Status\": \"Cancelled\", \"Cancellation_Reason\": \"By Team\"}}'",
    ]


def _command(home: Path, *argv: str) -> str:
    """``argv`` as a shell command for this checkout (``PREFECT_HOME=...`` first when it is not ``.prefect/``)."""
    exe = Path(sys.executable).parent / argv[0]
    try:
        shown = str(exe.relative_to(Path.cwd()))
    except ValueError:
        shown = str(exe)
    prefix = "" if home.resolve() == (ROOT / ".prefect").resolve() else f"PREFECT_HOME={home} "
    return prefix + " ".join([shown, *argv[1:]])


def _ending(home: Path, ui: str, sandbox_url: str, live: str | None) -> None:
    """What keeps running, how to make an edit and carry it over, how to stop."""
    _say("7. Still running")
    print(f"   Prefect server  {ui}  (the runs above)")
    print(f"   Zoho sandbox    {sandbox_url}  (admin API under /__sandbox/)")
    try:
        with httpx.Client(base_url=sandbox_url, timeout=60) as http:
            lines = example_edits(http.get("/__sandbox/dump").json(), sandbox_url)
    except httpx.HTTPError:
        lines = []
    if lines:
        print("   Edit either side as a user would, e.g.")
        for line in lines:
            print(f"     {line}")
    sync = _command(home, "appt-sync", "sync")
    if live:
        print(f"   make up's receiver ({live}) is wired to the re-seeded sandbox again: edits reach the other side by themselves")
        print(f"   (sync-on-webhook runs in the UI); `{sync}` syncs by hand.")
    else:
        print(f"   Carry a Bookings edit over with `{sync} --booking-id '#AN-…'` (what its webhook does), a CRM edit with `{sync}`,")
        print("   or run `make up` to have webhooks carry each edit by themselves.")
    stop = "make down" if home.resolve() == (ROOT / ".prefect").resolve() else _command(home, "python", "-m", "deployments.stack", "down")
    print(f"   Stop the server and the sandbox (and anything else make up started) with `{stop}`.")


def _live_receiver(home: Path) -> str | None:
    """The URL of ``make up``'s webhook receiver when it runs (PID file and health), else None."""
    url = (services.read_stack(home) or {}).get("receiver")
    if url and processes.running(home / "receiver.pid") and processes.healthy(f"{url}/healthz"):
        return url
    return None


def run(appointments: int = 2000, port: int = 0, data_dir: Path | str | None = None) -> int:
    """Run the demo; returns the exit code (0: both sides agree at the end; 1 otherwise or when a service does not come up).

    ``port``: the sandbox's (default ``SANDBOX_PORT`` or 8900); the Prefect server's is
    ``PREFECT_PORT`` (4200). ``data_dir`` holds the sandbox's database and the state
    store (default ``.data/``). Tests set all three and ``PREFECT_HOME`` to keep off
    the developer's stack.
    """
    home = processes.prefect_home()
    data = Path(data_dir) if data_dir else ROOT / ".data"
    data.mkdir(parents=True, exist_ok=True)
    prefect_port = int(os.environ.get("PREFECT_PORT") or services.DEFAULT_PORTS["prefect"])
    sandbox_port = port or int(os.environ.get("SANDBOX_PORT") or services.DEFAULT_PORTS["sandbox"])
    try:
        _say(f"1. Prefect server on 127.0.0.1:{prefect_port} (PREFECT_HOME={home})")
        api = services.ensure_prefect_server(prefect_port, home)
        ui = api.removesuffix("/api")
        print(f"   {ui} is up")

        _say(f"2. Zoho sandbox on 127.0.0.1:{sandbox_port}, re-seeded with {appointments} appointments")
        sandbox_url, proc = services.start_sandbox(home, data, sandbox_port, appointments)
        if proc is not None:
            processes.wait_healthy(f"{sandbox_url}/__sandbox/health", 60, proc)
        services.record_stack(home, sandbox=sandbox_url)
        live = _live_receiver(home)
        # The demo's edits must not start webhook runs (they would race its syncs); a live receiver is wired again at the end.
        httpx.put(f"{sandbox_url}/__sandbox/config", json={"bookings_webhook_url": "", "bookings_webhook_headers": {}}, timeout=10).raise_for_status()
        httpx.post(f"{sandbox_url}/__sandbox/reset", json={"appointments": appointments}, timeout=120).raise_for_status()
        print(f"   {sandbox_url} ({'started' if proc is not None else 'already running'}; keeps running after the demo)")
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"make demo: {exc} (logs in {home}; `make down` stops what did start)", file=sys.stderr)
        return 1

    os.environ["PREFECT_API_URL"] = api
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        code = asyncio.run(_run(sandbox_url, ui, data))
        if live:
            onboarding.wire(sandbox_url, live, DEMO_BLOCK, services.receiver_secrets(home))
    _ending(home, ui, sandbox_url, live)
    return code


if __name__ == "__main__":
    sys.exit(run())
