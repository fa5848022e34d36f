"""``make demo`` / ``appt-sync demo``: the whole sync, end to end, against a local sandbox.

1. Reuse (or start, detached, PID in ``.prefect/server.pid``) a Prefect server on
   127.0.0.1 with the project-local ``PREFECT_HOME``.
2. Start the sandbox with seeded data on a free port.
3. Onboard: exchange a grant code for tokens, save the ``ZohoOAuth`` block and an
   ``AppointmentSyncConfig`` block (state store ``.data/demo-state.db``, fresh each run).
4. Run a full sync and print its summary.
5. Edit both sides as users would (admin API): reschedules across time zones and
   across a daylight-saving change, cancellations, completions, a no-show, and
   conflicting edits.
6. Run an incremental sync, print its summary and the Prefect UI address of the
   runs, and check through the admin API that every linked appointment agrees on
   both sides. Exit code 0 only if they all agree.
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

from .stack import ROOT, ensure_prefect_server, sandbox

DEMO_BLOCK = "zoho-demo"
DEMO_CONFIG = "sync-demo"


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


def _edits(http: httpx.Client) -> list[str]:
    """Edit both sides as users would; returns what was done, one line each."""
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
    done = []

    def crm(a: dict, **changes: Any) -> None:
        r = http.patch(f"/__sandbox/crm/Appointments__s/{a['id']}", json=changes)
        r.raise_for_status()

    def bk(b: dict, **changes: Any) -> None:
        r = http.patch(f"/__sandbox/bookings/{b['booking_id'].replace('#', '%23')}", json=changes)
        r.raise_for_status()
        assert r.json()["response"]["status"] == "success", r.text

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
    return done


def _print_summary(summary: Any, ui: str) -> None:
    print(f"   links {summary.links}, unchanged {summary.unchanged}, agreed {summary.agreed}, applied {summary.applied}, "
          f"failed {summary.failed}, conflicts {summary.conflicts}, deferred {summary.deferred}")
    print(f"   planned: {summary.planned or 'nothing'}; API calls: {summary.api_calls}")
    for c in summary.conflict_list[:10]:
        print(f"   conflict {c['booking_id']}: {c['reason']}")
    for f in summary.failures[:10]:
        print(f"   failed {f['booking_id']} {f['target']} {f['kind']}: {f['code']} {f['message']}")
    print(f"   Prefect UI: {ui}/runs/flow-run/{summary.run_id}")


async def _run(sandbox_url: str, ui: str, data_dir: Path) -> int:
    from pydantic import SecretStr

    from blocks import AppointmentSyncConfig
    from flows.sync_appointments import sync_appointments

    from .onboarding import onboard, sandbox_grant

    store = data_dir / "demo-state.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    store.unlink(missing_ok=True)
    client_id, secret, code, scopes = sandbox_grant(sandbox_url)
    await onboard(DEMO_BLOCK, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
    await AppointmentSyncConfig(oauth_block=DEMO_BLOCK, bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{store}").asave(DEMO_CONFIG, overwrite=True)
    print(f"   saved blocks '{DEMO_BLOCK}' (ZohoOAuth) and '{DEMO_CONFIG}' (AppointmentSyncConfig)")

    _say("3. Full sync (Bulk Read of CRM, Bookings window, three-way diff, apply)")
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, mode="full"), ui)

    _say("4. Users edit both sides")
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        for line in _edits(http):
            print(f"   {line}")
        http.delete("/__sandbox/stats")

    _say("5. Incremental sync")
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, mode="incremental"), ui)

    _say("6. Do both sides agree?")
    with httpx.Client(base_url=sandbox_url, timeout=60) as http:
        dump = http.get("/__sandbox/dump").json()
        stats = http.get("/__sandbox/stats").json()
    bad = disagreements(dump)
    linked = sum(1 for a in dump["Appointments__s"] if a.get("Booking_Id"))
    print(f"   incremental run used {stats['total_calls']} API calls, wrote {stats['writes'] or 'nothing'}, minted {stats['tokens_minted']} tokens")
    if bad:
        print(f"   {len(bad)} of {linked} linked appointments disagree:")
        for line in bad[:20]:
            print(f"   - {line}")
        return 1
    print(f"   yes: all {linked} linked appointments agree on both sides.")
    return 0


def run(appointments: int = 2000, port: int = 0, data_dir: Path | str | None = None, sandbox_args: tuple[str, ...] = ()) -> int:
    """Run the demo; returns the exit code (0: both sides agree at the end).

    ``data_dir`` holds the state store (default ``.data/``); ``sandbox_args`` are
    extra options for the sandbox (e.g. ``("--db", path)``). Both are for tests,
    which also set ``PREFECT_HOME`` and ``PREFECT_PORT`` to keep off the developer's stack.
    """
    prefect_port = int(os.environ.get("PREFECT_PORT", "4200"))
    _say(f"1. Prefect server on 127.0.0.1:{prefect_port} (PREFECT_HOME={os.environ.get('PREFECT_HOME', ROOT / '.prefect')})")
    api = ensure_prefect_server(prefect_port)
    ui = api.removesuffix("/api")
    print(f"   {ui} is up")
    os.environ["PREFECT_API_URL"] = api
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _say(f"2. Zoho sandbox with {appointments} seeded appointments")
    with sandbox(appointments, "--bulk-delay", "1.5", *sandbox_args) as url, temporary_settings({PREFECT_API_URL: api}):
        print(f"   {url}")
        return asyncio.run(_run(url, ui, Path(data_dir) if data_dir else ROOT / ".data"))


if __name__ == "__main__":
    sys.exit(run())
