"""``make demo`` / ``appt-sync demo``: the whole sync, end to end, against the local sandbox.

1. Reuse (or start, detached, PID in ``PREFECT_HOME/server.pid``) a Prefect server on
   127.0.0.1:``PREFECT_PORT`` (4200) with the project-local ``PREFECT_HOME``.
2. Reuse (or start, detached) the stack's ``sandbox`` service on 127.0.0.1:``SANDBOX_PORT``
   (8900; PID in ``PREFECT_HOME/sandbox.pid``, data in ``.data/sandbox.db``) and re-seed
   it fresh (``POST /__sandbox/reset``): every booking has an ``Appointments__s`` record
   and a Meeting (``Events``). Both keep running after the demo, so the blocks stay
   valid and ``appt-sync sync`` works afterwards; ``make down`` stops them.
3. Onboard with the least-privilege scopes: exchange a grant code for tokens, save the
   ``ZohoOAuth`` block ``zoho-sandbox`` and the ``AppointmentSyncConfig`` ``sync-sandbox``
   (the names ``appt-sync`` and ``make up`` use; both CRM modules, ``Appointments__s``
   and ``Events``; state store ``.data/stack-state.db``, emptied: a fresh sandbox needs
   a fresh base).
4. Run a full sync of both modules and print its summary (and why it cancels the
   seed's no-shows in CRM).
5. Edit as users would (admin API), each booking once. Appointments and bookings:
   reschedules across time zones and across a daylight-saving change, cancellations,
   completions, a no-show, and conflicting edits. Meetings, of other bookings: calendar
   drags written with the offsets of other zones (one across a daylight-saving change
   of the booking's zone), a cancellation through the ``Booking_Status`` field, and a
   Meeting deleted in CRM.
6. Run the syncs the edits start in production: one run of the bookings edited in
   Bookings (what the receiver starts from their webhooks: ``getappointment`` each),
   the run of the deleted Meeting's ``delete`` notification (``deleted_crm_ids``,
   ``crm_module="Events"``), then the 5-minute incremental run (the appointments and
   Meetings changed since their bookmarks; no Bookings window). Print their summaries
   (with the day's Zoho API budget) and the Prefect UI address of the runs, then what
   followed the Meeting edits: a dragged Meeting's booking and appointment show its
   new time, a cancelled one's are cancelled, the deleted one's booking is left as it
   is and reported as kept.
7. Check through the admin API that both sides agree, one line per module: every linked
   appointment (:func:`disagreements`) and every linked Meeting still in CRM
   (:func:`meeting_disagreements`; the deleted one no longer counts). Exit code 0 only
   if both agree and every Meeting edit was followed as step 6 says.
8. Say what is still running and how to go on: a ready-to-paste edit of each side,
   ``appt-sync sync`` to carry it over (or ``make up`` for webhooks), ``make down``.

With ``make up``'s stack running, the demo switches the sandbox's Bookings webhook
off while it works (its syncs would race the demo's) and, at the end, wires the
re-seeded sandbox to the receiver again (:func:`deployments.onboarding.wire`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
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
    """A linked CRM record (an appointment, or a Meeting for :func:`linked_meetings`) and its
    booking, as ``GET /__sandbox/dump`` shows them."""

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


def linked_meetings(dump: dict[str, Any]) -> dict[str, Pair]:
    """``booking_id`` -> :class:`Pair` (the Meeting as ``crm``) for every Meeting (``Events``) still in
    CRM whose booking is in the dump."""
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    return {e["Booking_Id"]: Pair(e, bookings[e["Booking_Id"]]) for e in dump.get("Events", []) if e.get("Booking_Id") in bookings}


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


def meeting_disagreements(dump: dict[str, Any]) -> list[str]:
    """Linked Meetings still in CRM whose start or ``Booking_Status`` differs from their booking's.

    They agree when the statuses are equivalent (``Scheduled``, or empty: ``UPCOMING``,
    ``ONGOING``, ``PENDING``; ``Cancelled``: ``CANCEL``, ``PAYMENT_FAILURE``, ``NO_SHOW``;
    ``Completed``: ``COMPLETED``; ``No Show``: ``NO_SHOW``) and the start instants are equal
    unless both are finished (:func:`sync.engine.agree`). A word of neither list disagrees.
    """
    from sync.engine import Canon, Link, SideState, agree, bookings_canon
    from sync.modules import MEETING_STATUSES

    words = {word: Canon(canon) for canon, word in MEETING_STATUSES.items()}
    out = []
    for p in linked_meetings(dump).values():
        meeting, b = p.crm, p.booking
        word = meeting.get("Booking_Status") or MEETING_STATUSES[Canon.SCHEDULED.value]  # empty: scheduled
        shown = f"{p.id}: Meeting {meeting['Start_DateTime']} {word} / Bookings {b['start_time']} {p.tz} {b['status']}"
        try:
            crm = SideState(datetime.fromisoformat(meeting["Start_DateTime"]), words[word])
            booking = SideState(p.start, bookings_canon(b["status"]))
        except (KeyError, ValueError) as exc:  # a status word or a Bookings status with no equivalent
            out.append(f"{shown} ({exc})")
            continue
        if not agree(Link(p.id, meeting["id"], p.tz, crm, booking)):
            out.append(shown)
    return out


def after_dst_change(start: datetime, tz: str, days_after: int = 7) -> datetime:
    """``start``'s wall-clock time in ``tz``, ``days_after`` days after the first change of ``tz``'s
    UTC offset that follows ``start``: a move across a daylight-saving change (aware, in ``tz``).
    ``ValueError`` for a zone with no change in the next 400 days (``Asia/Kolkata``)."""
    local = start.astimezone(ZoneInfo(tz))
    for day in range(1, 400):
        if (local + timedelta(days=day)).utcoffset() != local.utcoffset():  # aware + timedelta keeps the wall clock
            return local + timedelta(days=day + days_after)
    raise ValueError(f"{tz} has no daylight-saving change in the 400 days after {start:%Y-%m-%d}")


def _wall(instant: datetime, tz: str) -> str:
    """``instant`` on the wall clock of ``tz``, its abbreviation and UTC offset: ``05-Apr-2027 10:00 AEST (UTC+10:00)``."""
    local = instant.astimezone(ZoneInfo(tz))
    return f"{local:%d-%b-%Y %H:%M} {local.tzname()} (UTC{local.isoformat()[-6:]})"


@dataclass
class MeetingEdit:
    """One Meeting edited in step 5: ``kind`` ``drag`` (to ``start``), ``cancel`` or ``delete``;
    ``pair`` is the Meeting and its booking before the edit."""

    kind: str
    pair: Pair
    start: datetime | None = None


@dataclass
class Editor:
    """Edits the sandbox as users would (admin API), each linked booking at most once.

    Picks come from one dump (:meth:`pick`); ``done`` says what was done (one line each),
    ``webhooked`` the bookings edited in Bookings (each sends a webhook under ``make up``),
    ``meetings`` the Meeting edits.
    """

    http: httpx.Client
    dump: dict[str, Any]
    now: datetime
    used: set[str] = field(default_factory=set)
    done: list[str] = field(default_factory=list)
    webhooked: list[str] = field(default_factory=list)
    meetings: list[MeetingEdit] = field(default_factory=list)

    def pick(self, tz: str | None = None, future: bool = True, crm_status: tuple[str, ...] = ("Scheduled",), bk_status: tuple[str, ...] = ("UPCOMING",)) -> tuple[Pair, Pair]:
        """An unused booking with the given zone and statuses whose Meeting is ``Scheduled``; a past one
        ended within the last 6 days (inside the incremental window). Returns (appointment pair, Meeting pair)."""
        meetings = linked_meetings(self.dump)
        for p in linked_pairs(self.dump).values():
            start = datetime.fromisoformat(p.crm["Appointment_Start_Time"])
            m = meetings.get(p.id)
            if p.id in self.used or m is None or (tz and p.tz != tz) or (start > self.now + timedelta(hours=2)) != future:
                continue
            if not future and start < self.now - timedelta(days=6):
                continue
            if p.crm["Status"] in crm_status and p.booking["status"] in bk_status and (m.crm.get("Booking_Status") or "Scheduled") == "Scheduled":
                self.used.add(p.id)
                return p, m
        raise RuntimeError(f"the seed has no appointment for {tz} future={future} {crm_status} {bk_status}")

    def crm(self, p: Pair, **changes: Any) -> None:
        """Edit the appointment in CRM."""
        self.http.patch(f"/__sandbox/crm/Appointments__s/{p.crm['id']}", json=changes).raise_for_status()

    def bookings(self, p: Pair, **changes: Any) -> None:
        """Edit the booking in Bookings (its webhook would start a records run)."""
        r = self.http.patch(f"/__sandbox/bookings/{p.id.replace('#', '%23')}", json=changes)
        r.raise_for_status()
        assert r.json()["response"]["status"] == "success", r.text
        self.webhooked.append(p.id)

    def drag(self, m: Pair, start: datetime, writer_tz: str) -> str:
        """Drag the Meeting in the CRM calendar to ``start`` (same length), written with the offset of
        ``writer_tz`` (the CRM user's zone); returns the new ``Start_DateTime``."""
        length = datetime.fromisoformat(m.crm["End_DateTime"]) - datetime.fromisoformat(m.crm["Start_DateTime"])
        zone = ZoneInfo(writer_tz)
        new = {"Start_DateTime": start.astimezone(zone).isoformat(), "End_DateTime": (start + length).astimezone(zone).isoformat()}
        self.http.patch(f"/__sandbox/crm/Events/{m.crm['id']}", json=new).raise_for_status()
        self.meetings.append(MeetingEdit("drag", m, start.astimezone(timezone.utc)))
        return new["Start_DateTime"]

    def cancel_meeting(self, m: Pair) -> None:
        """Set the Meeting's ``Booking_Status`` to ``Cancelled`` in CRM."""
        self.http.patch(f"/__sandbox/crm/Events/{m.crm['id']}", json={"Booking_Status": "Cancelled"}).raise_for_status()
        self.meetings.append(MeetingEdit("cancel", m))

    def delete_meeting(self, m: Pair) -> None:
        """Delete the Meeting in CRM (a ``delete`` notification fires)."""
        self.http.delete(f"/__sandbox/crm/Events/{m.crm['id']}").raise_for_status()
        self.meetings.append(MeetingEdit("delete", m))


def _edit_appointments(ed: Editor) -> None:
    """Appointments and bookings: reschedules across zones and a DST change, cancellations,
    completions, a no-show and two conflicting edits."""
    p, _ = ed.pick("Europe/London")
    new = datetime.fromisoformat(p.crm["Appointment_Start_Time"]) + timedelta(days=1, hours=2)
    ed.crm(p, Appointment_Start_Time=new.isoformat())
    ed.done.append(f"CRM: {p.id} (London) rescheduled to {new.isoformat()}")
    p, _ = ed.pick("America/New_York")
    target = after_dst_change(p.start, p.tz)
    ed.crm(p, Appointment_Start_Time=target.isoformat())
    ed.done.append(f"CRM: {p.id} (New York, {_wall(p.start, p.tz)}) moved across the DST change to {target.isoformat()} ({target.tzname()})")
    p, _ = ed.pick("Australia/Sydney")
    local = datetime.strptime(p.booking["start_time"], "%d-%b-%Y %H:%M:%S") + timedelta(hours=3)
    wall = f"{local.day:02d}-{local:%b-%Y %H:%M:%S}"
    ed.bookings(p, start_time=wall)
    ed.done.append(f"Bookings: {p.id} (Sydney) rescheduled to {wall} Sydney time")
    p, _ = ed.pick("Asia/Kolkata")
    ed.bookings(p, action="cancel")
    ed.done.append(f"Bookings: {p.id} cancelled")
    p, _ = ed.pick()
    ed.crm(p, Status="Cancelled", Cancellation_Reason="By Team", Cancellation_Note="Staff unavailable")
    ed.done.append(f"CRM: {p.id} cancelled")
    _edit_ended(ed)
    _edit_conflicts(ed)


def _edit_ended(ed: Editor) -> None:
    """Appointments that have ended: completed in CRM, completed and no-show in Bookings."""
    p, _ = ed.pick(None, False, ("Overdue",))
    ed.crm(p, Status="Completed")
    ed.done.append(f"CRM: {p.id} marked Completed (it has ended)")
    p, _ = ed.pick(None, False, ("Overdue",))
    ed.bookings(p, action="completed")
    ed.done.append(f"Bookings: {p.id} marked completed")
    p, _ = ed.pick(None, False, ("Overdue",))
    ed.bookings(p, action="noshow")
    ed.done.append(f"Bookings: {p.id} marked no-show")


def _edit_conflicts(ed: Editor) -> None:
    """Two appointments edited on both sides between two runs."""
    p, _ = ed.pick()
    ed.crm(p, Appointment_Start_Time=(datetime.fromisoformat(p.crm["Appointment_Start_Time"]) + timedelta(hours=1)).isoformat())
    ed.bookings(p, action="cancel")
    ed.done.append(f"Conflict: {p.id} rescheduled in CRM and cancelled in Bookings")
    p, _ = ed.pick()
    ed.crm(p, Appointment_Start_Time=(datetime.fromisoformat(p.crm["Appointment_Start_Time"]) + timedelta(hours=4)).isoformat())
    local = datetime.strptime(p.booking["start_time"], "%d-%b-%Y %H:%M:%S") + timedelta(days=2)
    ed.bookings(p, start_time=f"{local.day:02d}-{local:%b-%Y %H:%M:%S}")
    ed.done.append(f"Conflict: {p.id} rescheduled differently on both sides")


def _edit_meetings(ed: Editor) -> None:
    """Meetings of bookings not edited above, as a CRM user would: calendar drags written with other
    zones' offsets (one across the booking zone's DST change), a cancellation through
    ``Booking_Status``, a deletion."""
    for tz, shift, writer in (("Europe/London", timedelta(days=1, hours=1), "America/New_York"),
                              ("Asia/Kolkata", timedelta(hours=3, minutes=30), "Australia/Sydney")):
        _, m = ed.pick(tz)
        shown = ed.drag(m, m.start + shift, writer)
        ed.done.append(f"CRM Meeting: {m.id} ({m.tz}, {_wall(m.start, m.tz)}) dragged to {shown} by a CRM user in {writer}")
    _, m = ed.pick("Australia/Sydney")
    target = after_dst_change(m.start, m.tz)
    shown = ed.drag(m, target, "Asia/Kolkata")
    ed.done.append(f"CRM Meeting: {m.id} ({m.tz}, {_wall(m.start, m.tz)}) dragged across Sydney's DST change to {shown} "
                   f"by a CRM user in Asia/Kolkata: {_wall(target, m.tz)} in Sydney")
    _, m = ed.pick()
    ed.cancel_meeting(m)
    ed.done.append(f"CRM Meeting: {m.id} cancelled (Booking_Status Cancelled)")
    _, m = ed.pick()
    ed.delete_meeting(m)
    ed.done.append(f"CRM Meeting: {m.id} deleted (Meeting {m.crm['id']})")


def edit_both_sides(http: httpx.Client, now: datetime | None = None) -> Editor:
    """Step 5: edit appointments, bookings and Meetings as users would (each booking once); the
    :class:`Editor` says what was done."""
    ed = Editor(http, http.get("/__sandbox/dump").json(), now or datetime.now(timezone.utc))
    _edit_appointments(ed)
    _edit_meetings(ed)
    return ed


def _print_summary(summary: Any, ui: str) -> None:
    print(f"   links {summary.links}, unchanged {summary.unchanged}, agreed {summary.agreed}, applied {summary.applied}, "
          f"failed {summary.failed}, conflicts {summary.conflicts}, deferred {summary.deferred}, kept {summary.kept}")
    print(f"   planned: {summary.planned or 'nothing'}; API calls: {summary.api_calls}")
    for family, name in (("bookings", "Bookings calls today"), ("crm", "CRM credits in 24 h")):
        day = summary.budget.get(family)
        if day:
            print(f"   {name}: {day['used']} of a budget of {day['budget']} (Zoho's limit {day['limit']}), forecast for the day {day['forecast']}")
    for c in summary.conflict_list[:10]:
        print(f"   {'kept' if c['kind'] == 'kept' else 'conflict'} {c['booking_id']}: {c['reason']}")
    for f in summary.failures[:10]:
        print(f"   failed {f['booking_id']} {f['target']} {f['kind']}: {f['code']} {f['message']}")
    for note in summary.notes[:5]:
        print(f"   note: {note}")
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


def meeting_outcomes(dump: dict[str, Any], edits: list[MeetingEdit], kept: set[str]) -> list[tuple[bool, str]]:
    """What followed each Meeting edit: ``(as expected, line)`` each (``dump`` after the syncs; ``kept``:
    the booking ids the runs reported as kept). A drag: the booking and the appointment start at the
    Meeting's new instant. A cancellation: both cancelled. A deletion: the booking as it was, reported as kept."""
    from sync.engine import Canon, bookings_canon

    pairs, bookings = linked_pairs(dump), {b["booking_id"]: b for b in dump["bookings"]}
    out = []
    for e in edits:
        bid, tz = e.pair.id, e.pair.tz
        b, appt = bookings[bid], pairs[bid].crm if bid in pairs else {}
        now = _bookings_instant(b["start_time"], tz)
        if e.kind == "drag":
            ok = e.start is not None and now == e.start == datetime.fromisoformat(appt["Appointment_Start_Time"])
            out.append((ok, f"dragged Meeting {bid}: the booking now starts {_wall(now, tz)} {tz}, the appointment {appt['Appointment_Start_Time']} "
                            f"({'both' if ok else 'expected'} {e.start:%Y-%m-%d %H:%M} UTC)"))
        elif e.kind == "cancel":
            ok = bookings_canon(b["status"]) is Canon.CANCELLED and appt.get("Status") == "Cancelled"
            out.append((ok, f"cancelled Meeting {bid}: the booking is now {b['status']}, the appointment {appt.get('Status')}"))
        else:
            ok = b["status"] == e.pair.booking["status"] and now == e.pair.start and bid in kept
            out.append((ok, f"deleted Meeting {bid}: the booking is left as it was ({b['status']}, {_wall(now, tz)} {tz}), "
                            f"{'reported as kept' if bid in kept else 'NOT reported as kept'}; the appointment is {appt.get('Status')}"))
    return out


async def _sync_edits(ed: Editor, ui: str) -> list[Any]:
    """Step 6: the runs production starts for these edits; returns their summaries."""
    from flows.sync_appointments import sync_appointments

    print(f"   Bookings sends a webhook for each of its {len(ed.webhooked)} edits; the receiver (make up) starts one sync of those bookings,")
    print("   which reads each with getappointment (and its CRM records) and applies what changed:")
    runs = [await sync_appointments(config_block=DEMO_CONFIG, booking_ids=ed.webhooked)]
    _print_summary(runs[-1], ui)
    deleted = [e.pair.crm["id"] for e in ed.meetings if e.kind == "delete"]
    print(f"   The deleted Meeting: CRM's delete notification (Events.all) starts a run with its id ({', '.join(deleted)}, crm_module Events);")
    print("   meeting_delete_cancels_booking is off, so the booking is left as it is and the link reported as kept:")
    runs.append(await sync_appointments(config_block=DEMO_CONFIG, deleted_crm_ids=deleted, crm_module="Events"))
    _print_summary(runs[-1], ui)
    print("   The CRM edits (appointments and Meetings): the 5-minute incremental run reads the records of both modules changed")
    print("   since their bookmarks (no Bookings window: Bookings changes come by webhook, and the 2-hourly sync-scan is the safety net):")
    runs.append(await sync_appointments(config_block=DEMO_CONFIG, mode="incremental"))
    _print_summary(runs[-1], ui)
    return runs


def _agreement(what: str, bad: list[str], linked: int, extra: str = "") -> bool:
    """Print one agreement line for a module (and up to 20 disagreements); True when all agree."""
    if bad:
        print(f"   no: {len(bad)} of {linked} linked {what} disagree:")
        for line in bad[:20]:
            print(f"   - {line}")
        return False
    print(f"   yes: all {linked} linked {what} agree on both sides{extra}.")
    return True


def _check(sandbox_url: str, ed: Editor, runs: list[Any]) -> int:
    """Steps 6 (what followed the Meeting edits) and 7 (one agreement line per module); the exit code."""
    with httpx.Client(base_url=sandbox_url, timeout=60) as http:
        dump = http.get("/__sandbox/dump").json()
        stats = http.get("/__sandbox/stats").json()
    kept = {c["booking_id"] for r in runs for c in r.conflict_list if c["kind"] == "kept"}
    outcomes = meeting_outcomes(dump, ed.meetings, kept)
    print("   What followed the Meeting edits:")
    for ok, line in outcomes:
        print(f"   - {'ok' if ok else 'NOT AS EXPECTED'}: {line}")

    _say("7. Do both sides agree?")
    print(f"   the {len(runs)} runs used {stats['total_calls']} API calls, wrote {stats['writes'] or 'nothing'}, minted {stats['tokens_minted']} tokens")
    linked = sum(1 for a in dump["Appointments__s"] if a.get("Booking_Id"))
    gone = sum(1 for e in ed.meetings if e.kind == "delete")
    extra = f" (the {gone} Meeting deleted in CRM no longer counts; its booking and appointment are kept as they were)" if gone else ""
    appointments = _agreement("appointments", disagreements(dump), linked)
    meetings = _agreement("meetings", meeting_disagreements(dump), len(linked_meetings(dump)), extra)
    return 0 if appointments and meetings and all(ok for ok, _ in outcomes) else 1


async def _onboard(sandbox_url: str, data_dir: Path) -> None:
    """Step 3: tokens from a grant code, the two blocks, an emptied state store."""
    from pydantic import SecretStr

    from .onboarding import SCOPES, onboard, sandbox_grant

    _say("3. Onboarding")
    fresh_base(onboarding.state_store_url(data_dir))
    client_id, secret, code, scopes = sandbox_grant(sandbox_url)
    await onboard(DEMO_BLOCK, client_id=client_id, client_secret=SecretStr(secret), code=SecretStr(code), data_centre="CUSTOM", base_url=sandbox_url, scopes=scopes)
    await onboarding.save_sync_config(DEMO_CONFIG, DEMO_BLOCK, data_dir, onboarding.sandbox_time_zone(sandbox_url))  # the window in the sandbox's zone
    print(f"   onboarded with the least-privilege scopes ({', '.join(SCOPES)})")
    print(f"   saved blocks '{DEMO_BLOCK}' (ZohoOAuth) and '{DEMO_CONFIG}' (AppointmentSyncConfig: Appointments__s and Meetings (Events),")
    print(f"   state store {onboarding.state_store_url(data_dir)}, emptied)")


async def _full_sync(sandbox_url: str, ui: str) -> None:
    """Step 4: the full sync of both modules, and why it cancels the seed's no-shows in CRM."""
    from flows.sync_appointments import sync_appointments

    _say("4. Full sync of both CRM modules (Bulk Read of Appointments__s and Events, Bookings window, three-way diff, apply)")
    with httpx.Client(base_url=sandbox_url, timeout=60) as http:
        no_shows = seeded_no_shows(http.get("/__sandbox/dump").json())
    _print_summary(await sync_appointments(config_block=DEMO_CONFIG, mode="full"), ui)
    if no_shows:
        print(f"   The CRM cancellations are the seed's {no_shows} past no-shows: Bookings has them as NO_SHOW, CRM (which has no no-show)\n"
              "   as Scheduled. A link seen for the first time follows initial_source (Bookings), so CRM gets Cancelled, note \"No-show (Zoho Bookings)\".")


async def _run(sandbox_url: str, ui: str, data_dir: Path) -> int:
    await _onboard(sandbox_url, data_dir)
    await _full_sync(sandbox_url, ui)

    _say("5. Users edit both sides (appointments and bookings, then Meetings of other bookings)")
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        ed = edit_both_sides(http)
        for line in ed.done:
            print(f"   {line}")
        http.delete("/__sandbox/stats")

    _say("6. The syncs these edits start")
    runs = await _sync_edits(ed, ui)
    return _check(sandbox_url, ed, runs)


def example_edits(dump: dict[str, Any], sandbox_url: str, now: datetime | None = None) -> list[str]:
    """Ready-to-paste ``curl`` edits through the admin API, as users would make them.

    A Bookings reschedule (one day later, ``start_time`` as ``dd-MMM-yyyy HH:mm:ss`` in
    the booking's own time zone, the ``#`` of the id as ``%23``) and a CRM cancellation,
    of two upcoming linked appointments (``appt-sync sync --booking-id ...`` carries the
    first over as its webhook would, ``appt-sync sync`` the second), and a Meeting dragged one
    hour later in the CRM calendar (:func:`_meeting_edit`). Lines to print; empty without such
    appointments.
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
        *_meeting_edit(dump, sandbox_url, {booking.id, appointment.id}, now),
    ]


def _meeting_edit(dump: dict[str, Any], sandbox_url: str, taken: set[str], now: datetime) -> list[str]:
    """A ready-to-paste calendar drag of an upcoming Meeting one hour later (a booking not in ``taken``);
    ``appt-sync sync --crm-id ID --module Events`` carries it over as its notification would."""
    for pair in sorted(linked_meetings(dump).values(), key=lambda p: p.start):
        if pair.id in taken or pair.booking["status"] != "UPCOMING" or not now + timedelta(days=1) < pair.start < now + timedelta(days=20):
            continue
        start, end = (datetime.fromisoformat(pair.crm[k]) + timedelta(hours=1) for k in ("Start_DateTime", "End_DateTime"))
        body = f'{{"Start_DateTime": "{start.isoformat()}", "End_DateTime": "{end.isoformat()}"}}'
        return [
            f"Drag Meeting {pair.crm['id']} ({pair.id}) one hour later in the CRM calendar:",
            f"  curl -X PATCH '{sandbox_url}/__sandbox/crm/Events/{pair.crm['id']}' -H 'Content-Type: application/json' -d '{body}'",
        ]
    return []


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
    _say("8. Still running")
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
        print(f"   Carry a Bookings edit over with `{sync} --booking-id '#AN-…'` (what its webhook does), a CRM edit with `{sync}`")
        print(f"   (a Meeting's: `{sync} --crm-id ID --module Events`, as its notification would), or run `make up` to have webhooks carry each edit by themselves.")
    stop = "make down" if home.resolve() == (ROOT / ".prefect").resolve() else _command(home, "python", "-m", "deployments.stack", "down")
    print(f"   Stop the server and the sandbox (and anything else make up started) with `{stop}`.")


def _live_receiver(home: Path) -> str | None:
    """The URL of ``make up``'s webhook receiver when it runs (PID file and health), else None."""
    url = (services.read_stack(home) or {}).get("receiver")
    if url and processes.running(home / "receiver.pid") and processes.healthy(f"{url}/healthz"):
        return url
    return None


def run(appointments: int = 2000, port: int = 0, data_dir: Path | str | None = None) -> int:
    """Run the demo; returns the exit code (0: both sides of both modules agree at the end and the Meeting
    edits were followed as expected; 1 otherwise or when a service does not come up).

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
