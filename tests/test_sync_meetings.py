"""The sync-appointments flow with CRM Meetings (``Events``) against the sandbox: each kind of change
in each direction, both modules at once with no loop, the time-only mode, deletes.

Checks are made on the sandbox itself (``/__sandbox/dump``, ``/__sandbox/stats``), edits through its
admin API, as a CRM or Bookings user would make them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from blocks import ZohoOAuth
from blocks.sync_config import AppointmentSyncConfig
from flows.sync_appointments import sync_appointments
from sync.report import SyncSummary
from test_sync_flow import bookings_text, edit_booking, edit_crm, next_offset_change, wall_time, writes, zero_stats

UTC = timezone.utc
#: What an appointment says after a Bookings no-show (Appointments__s has none: written as Cancelled with this note).
NO_SHOW_NOTE = "No-show (Zoho Bookings)"
#: Booking_Status word -> the Bookings statuses that say the same.
SAME = {"Scheduled": {"UPCOMING", "ONGOING", "PENDING"}, "Cancelled": {"CANCEL", "PAYMENT_FAILURE", "NO_SHOW"}, "Completed": {"COMPLETED"}, "No Show": {"NO_SHOW"}}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def bookings_instant(text: str, tz: str) -> datetime:
    return datetime.strptime(text, "%d-%b-%Y %H:%M:%S").replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def meetings(dump: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """booking_id -> (Meeting, booking) for every Meeting linked to a booking."""
    bookings = {b["booking_id"]: b for b in dump["bookings"]}
    return {e["Booking_Id"]: (e, bookings[e["Booking_Id"]]) for e in dump["Events"] if e.get("Booking_Id") in bookings}


def meeting_disagreements(dump: dict[str, Any], status_field: bool = True) -> list[tuple]:
    out = []
    for bid, (e, b) in meetings(dump).items():
        word = e.get("Booking_Status") or "Scheduled"
        finished = b["status"] not in SAME["Scheduled"]
        same_start = instant(e["Start_DateTime"]) == bookings_instant(b["start_time"], b["time_zone"]) or (finished and word != "Scheduled")
        if not same_start or (status_field and b["status"] not in SAME[word]):
            out.append((bid, e["Start_DateTime"], word, b["start_time"], b["time_zone"], b["status"]))
    return out


def crm_iso(at: datetime, tz: str = "America/New_York") -> str:
    return at.astimezone(ZoneInfo(tz)).replace(microsecond=0).isoformat()


class Org:
    def __init__(self, name: str) -> None:
        self.name = name
        #: Bookings moved (on every side) to have ended before the first run: ``UPCOMING``, to complete or mark no-show.
        self.ended: list[str] = []
        #: The summary of the ``both`` fixture's first full run.
        self.first: SyncSummary | None = None

    async def set(self, **changes: Any) -> None:
        cfg = await AppointmentSyncConfig.aload(self.name)
        await cfg.model_validate({**cfg.model_dump(), **changes}).asave(self.name, overwrite=True)

    async def sync(self, mode: str = "scan", **kwargs: Any) -> SyncSummary:
        return await sync_appointments(config_block=self.name, mode=mode, **kwargs)


async def make_org(sandbox, tmp_path, **settings: Any) -> Org:
    tag = uuid.uuid4().hex[:8]
    oauth = ZohoOAuth(
        client_id=sandbox.creds["client_id"], client_secret=SecretStr(sandbox.creds["client_secret"]),
        refresh_token=SecretStr(sandbox.creds["refresh_token"]), data_centre="CUSTOM", base_url=sandbox.url,
    )
    await oauth.asave(f"mtg-oauth-{tag}")
    cfg = AppointmentSyncConfig(
        oauth_block=f"mtg-oauth-{tag}", bookings_time_zone="Asia/Kolkata", state_store_url=f"sqlite:///{tmp_path / f'state-{tag}.db'}",
        bookings_past_days=35, bookings_future_days=400, scan_past_hours=35 * 24, scan_future_hours=400 * 24, scan_max_calls=100,
        bookings_plan="premium", bookings_page_size=100, crm_edition="enterprise", crm_users=10, **settings,
    )
    await cfg.asave(f"mtg-{tag}")
    return Org(f"mtg-{tag}")


@pytest.fixture
async def both(sandbox, prefect_api, tmp_path) -> Org:
    """An organisation syncing Appointments__s and Meetings (Booking_Status), after a first full run;
    ``org.ended``: three upcoming bookings that ended two days ago (moved there on every side first)."""
    ended = end_early(sandbox, 3)
    org = await make_org(sandbox, tmp_path, crm_module="Appointments__s", crm_modules=["Events"])
    org.ended = ended
    org.first = await org.sync("full")
    sandbox.http.delete("/__sandbox/stats").raise_for_status()
    return org


def future_pairs(sandbox, n: int, *, tz: str | None = None, exclude: Iterable[str] = ()) -> list[tuple[dict, dict]]:
    """``n`` (Meeting, booking) pairs of upcoming bookings starting more than two days ahead (of ``tz``), not in ``exclude``."""
    now, skip = datetime.now(UTC), set(exclude)
    found = []
    for bid, (e, b) in sorted(meetings(sandbox.dump()).items()):
        if bid in skip or (e.get("Booking_Status") or "Scheduled") != "Scheduled":
            continue
        if b["status"] == "UPCOMING" and bookings_instant(b["start_time"], b["time_zone"]) > now + timedelta(days=2) and (tz is None or b["time_zone"] == tz):
            found.append((e, b))
    assert len(found) >= n
    return found[:n]


def edit_meeting(sandbox, crm_id: str, **fields: Any) -> None:
    r = sandbox.http.patch(f"/__sandbox/crm/Events/{crm_id}", json=fields)
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text






def delete_meeting(sandbox, crm_id: str) -> None:
    """Delete a Meeting as a CRM user (a ``delete`` notification is queued; nothing here delivers it)."""
    r = sandbox.http.delete(f"/__sandbox/crm/Events/{crm_id}")
    assert r.status_code == 200 and r.json()["data"][0]["code"] == "SUCCESS", r.text








def minutes(booking: dict) -> timedelta:
    """The booking's duration (``"45 mins"``)."""
    return timedelta(minutes=int(booking["duration"].split()[0]))


def sides(sandbox, booking_id: str) -> tuple[dict | None, dict, dict | None]:
    """(Meeting or None when gone, booking, appointment or None) of one booking, as the sandbox shows them now."""
    dump = sandbox.dump(booking_id=booking_id)
    (booking,) = [b for b in dump["bookings"] if b["booking_id"] == booking_id]
    meeting = next((e for e in dump["Events"] if e.get("Booking_Id") == booking_id), None)
    appointment = next((a for a in dump["Appointments__s"] if a.get("Booking_Id") == booking_id), None)
    return meeting, booking, appointment






def end_early(sandbox, n: int) -> list[str]:
    """Move ``n`` future upcoming bookings to have ended two days ago, on every side as its users would
    (Bookings, the Meeting's drag, the appointment's start), before an organisation's first run: the
    seed's ended-but-upcoming bookings depend on the hour the tests run. Returns their booking ids."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    dump = sandbox.dump()
    appointments = {a["Booking_Id"]: a for a in dump["Appointments__s"] if a.get("Booking_Id")}
    ids = []
    for i, (e, b) in enumerate(future_pairs(sandbox, n, tz="Asia/Kolkata")):
        to = now - timedelta(days=2, hours=i)
        edit_booking(sandbox, b["booking_id"], start_time=bookings_text(to, b["time_zone"]))
        edit_meeting(sandbox, e["id"], Start_DateTime=crm_iso(to, "Asia/Kolkata"), End_DateTime=crm_iso(to + minutes(b), "Asia/Kolkata"))
        edit_crm(sandbox, appointments[b["booking_id"]]["id"], Appointment_Start_Time=crm_iso(to, "Asia/Kolkata"))
        ids.append(b["booking_id"])
    return ids


def kept_for(summary: SyncSummary) -> dict[str, str]:
    """Booking id -> reason of each ``kept`` entry of the summary's conflict list."""
    return {c["booking_id"]: c["reason"] for c in summary.conflict_list if c["kind"] == "kept"}


async def test_a_full_sync_of_both_modules_agrees_and_a_second_writes_nothing(sandbox, both):
    org, summary = both, both.first
    dump = sandbox.dump()
    assert meeting_disagreements(dump) == []
    assert summary.modules == ["Appointments__s", "Events"] and summary.failed == 0
    assert summary.links == len(meetings(dump)) + sum(1 for a in dump["Appointments__s"] if a.get("Booking_Id"))
    for mode in ("full", "incremental", "scan"):
        sandbox.http.delete("/__sandbox/stats").raise_for_status()
        again = await org.sync(mode)
        assert writes(sandbox) == {} and again.applied == 0 and again.candidates == 0, (mode, again.planned)


async def test_meeting_edits_reach_bookings_and_the_appointment_in_one_run_and_no_echo_writes(sandbox, both):
    org = both
    dragged, = future_pairs(sandbox, 1, tz="Europe/London")
    over_dst, = future_pairs(sandbox, 1, tz="America/New_York")
    cancelled, early = future_pairs(sandbox, 2, exclude={dragged[1]["booking_id"], over_dst[1]["booking_id"]})
    completed_id, no_show_id = org.ended[:2]
    completed, no_show = sides(sandbox, completed_id)[0], sides(sandbox, no_show_id)[0]

    # a calendar drag by a CRM user in New York: one day and two hours later, written with New York's offset
    d_meeting, d_booking = dragged
    d_to = instant(d_meeting["Start_DateTime"]) + timedelta(days=1, hours=2)
    edit_meeting(sandbox, d_meeting["id"], Start_DateTime=crm_iso(d_to), End_DateTime=crm_iso(d_to + minutes(d_booking)))
    # a drag to the same wall time after New York's next daylight-saving change, written with Kolkata's offset
    o_meeting, o_booking = over_dst
    o_from = bookings_instant(o_booking["start_time"], o_booking["time_zone"])
    o_to = wall_time(next_offset_change("America/New_York", o_from), o_from, "America/New_York")
    assert o_to.astimezone(ZoneInfo("America/New_York")).utcoffset() != o_from.astimezone(ZoneInfo("America/New_York")).utcoffset()
    edit_meeting(sandbox, o_meeting["id"], Start_DateTime=crm_iso(o_to, "Asia/Kolkata"), End_DateTime=crm_iso(o_to + minutes(o_booking), "Asia/Kolkata"))
    edit_meeting(sandbox, cancelled[0]["id"], Booking_Status="Cancelled")
    edit_meeting(sandbox, completed["id"], Booking_Status="Completed")
    edit_meeting(sandbox, no_show["id"], Booking_Status="No Show")
    edit_meeting(sandbox, early[0]["id"], Booking_Status="Completed")  # before the start: Bookings cannot complete it yet
    zero_stats(sandbox)

    summary = await org.sync("scan")

    meeting, booking, appointment = sides(sandbox, d_booking["booking_id"])
    assert booking["start_time"] == bookings_text(d_to, "Europe/London") and booking["status"] == "UPCOMING"
    assert instant(appointment["Appointment_Start_Time"]) == d_to and instant(appointment["Appointment_End_Time"]) == d_to + minutes(d_booking)
    assert instant(meeting["Start_DateTime"]) == d_to and instant(meeting["End_DateTime"]) == d_to + minutes(d_booking)

    meeting, booking, appointment = sides(sandbox, o_booking["booking_id"])
    assert booking["start_time"] == f"{o_to.astimezone(ZoneInfo('America/New_York')):%d-%b-%Y} {o_from.astimezone(ZoneInfo('America/New_York')):%H:%M:%S}"
    assert bookings_instant(booking["start_time"], booking["time_zone"]) == o_to
    assert instant(appointment["Appointment_Start_Time"]) == o_to

    meeting, booking, appointment = sides(sandbox, cancelled[1]["booking_id"])
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("Cancelled", "CANCEL", "Cancelled")
    meeting, booking, appointment = sides(sandbox, completed_id)
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("Completed", "COMPLETED", "Completed")
    meeting, booking, appointment = sides(sandbox, no_show_id)
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("No Show", "NO_SHOW", "Cancelled")
    assert appointment["Cancellation_Note"] == NO_SHOW_NOTE
    meeting, booking, appointment = sides(sandbox, early[1]["booking_id"])  # deferred: nothing written anywhere
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("Completed", "UPCOMING", "Scheduled")
    assert summary.deferred == 1 and [c["booking_id"] for c in summary.conflict_list if c["kind"] == "deferred"] == [early[1]["booking_id"]]

    # one Bookings write per Meeting change, each carried to the appointment in the same run (one PUT), none back to the Meetings
    assert writes(sandbox) == {"bookings": 5, "Appointments__s": 5}
    by_record = sandbox.stats()["writes_by_record"]
    assert all(v == 1 for v in by_record.values()) and not any(k.startswith("Events:") for k in by_record)
    assert sandbox.stats()["calls"]["PUT /crm/{version}/{module}"] == 1
    assert summary.applied == 10 and summary.failed == 0 and summary.conflicts == 0
    assert summary.planned == {"bookings:reschedule": 2, "bookings:cancel": 1, "bookings:complete": 1, "bookings:no_show": 1,
                               "crm:reschedule": 2, "crm:cancel": 2, "crm:complete": 1}
    dump = sandbox.dump()
    assert [d[0] for d in meeting_disagreements(dump)] == [early[1]["booking_id"]]

    # the echoes: a scan, and the records run each edited Meeting's own notification starts, write nothing
    zero_stats(sandbox)
    again = await org.sync("scan")
    assert writes(sandbox) == {} and again.applied == 0 and again.planned == {} and again.failed == 0
    edited = [d_meeting["id"], o_meeting["id"], cancelled[0]["id"], completed["id"], no_show["id"]]
    echo = await org.sync(crm_ids=edited, crm_module="Events")
    assert writes(sandbox) == {} and echo.applied == 0 and echo.planned == {} and echo.failed == 0 and echo.mode == "records"
    now = sandbox.dump()  # (statuses such as Overdue or ONGOING follow the clock: compared by what was written)
    assert now["Events"] == dump["Events"] and now["bookings"] == [dict(b, status=b2["status"]) for b, b2 in zip(dump["bookings"], now["bookings"])]
    assert [a["Modified_Time"] for a in now["Appointments__s"]] == [a["Modified_Time"] for a in dump["Appointments__s"]]

    # the webhook path: a drag's own notification starts a records run that carries it to Bookings and the appointment
    w_meeting, w_booking = future_pairs(sandbox, 1, exclude={d_booking["booking_id"], o_booking["booking_id"], cancelled[1]["booking_id"], early[1]["booking_id"]})[0]
    w_to = instant(w_meeting["Start_DateTime"]) - timedelta(hours=5)
    edit_meeting(sandbox, w_meeting["id"], Start_DateTime=crm_iso(w_to), End_DateTime=crm_iso(w_to + minutes(w_booking)))
    zero_stats(sandbox)
    hooked = await org.sync(crm_ids=[w_meeting["id"]], crm_module="Events")
    meeting, booking, appointment = sides(sandbox, w_booking["booking_id"])
    assert booking["start_time"] == bookings_text(w_to, w_booking["time_zone"]) and instant(appointment["Appointment_Start_Time"]) == w_to
    assert writes(sandbox) == {"bookings": 1, "Appointments__s": 1} and hooked.applied == 2 and hooked.failed == 0
    # the echoes of those two writes (the Bookings webhook, the appointment's notification) write nothing
    zero_stats(sandbox)
    echo = await org.sync(booking_ids=[w_booking["booking_id"]], crm_ids=[appointment["id"]], crm_module="Appointments__s")
    assert writes(sandbox) == {} and echo.applied == 0 and echo.planned == {} and echo.failed == 0


async def test_booking_and_appointment_edits_reach_the_meeting_once_and_an_opted_in_delete_cancels(sandbox, both):
    org = both
    moved, cancelled, appt_moved, deleted = future_pairs(sandbox, 4)
    no_show_id = org.ended[2]

    # Bookings -> Meeting (and the appointment): reschedule, cancel, no-show
    m_meeting, m_booking = moved
    m_to = bookings_instant(m_booking["start_time"], m_booking["time_zone"]) + timedelta(days=2, hours=-3)
    # a CRM user made the Meeting longer first (not a change the sync carries: only start and status are)
    edit_meeting(sandbox, m_meeting["id"], End_DateTime=crm_iso(instant(m_meeting["End_DateTime"]) + timedelta(hours=3)))
    edit_booking(sandbox, m_booking["booking_id"], start_time=bookings_text(m_to, m_booking["time_zone"]))
    # a Bookings move to the same wall time after New York's next daylight-saving change
    o_meeting, o_booking = future_pairs(sandbox, 1, tz="America/New_York", exclude={m_booking["booking_id"], cancelled[1]["booking_id"], appt_moved[1]["booking_id"], deleted[1]["booking_id"]})[0]
    o_from = bookings_instant(o_booking["start_time"], o_booking["time_zone"])
    o_to = wall_time(next_offset_change("America/New_York", o_from), o_from, "America/New_York")
    edit_booking(sandbox, o_booking["booking_id"], start_time=bookings_text(o_to, "America/New_York"))
    edit_booking(sandbox, cancelled[1]["booking_id"], action="cancel")
    edit_booking(sandbox, no_show_id, action="noshow")
    zero_stats(sandbox)

    summary = await org.sync("scan")

    meeting, booking, appointment = sides(sandbox, m_booking["booking_id"])
    assert instant(meeting["Start_DateTime"]) == m_to and instant(meeting["End_DateTime"]) == m_to + minutes(m_booking)
    assert meeting["Booking_Status"] == "Scheduled" and instant(appointment["Appointment_Start_Time"]) == m_to
    meeting, booking, appointment = sides(sandbox, o_booking["booking_id"])
    assert instant(meeting["Start_DateTime"]) == o_to and instant(meeting["End_DateTime"]) == o_to + minutes(o_booking)
    assert instant(appointment["Appointment_Start_Time"]) == o_to
    meeting, booking, appointment = sides(sandbox, cancelled[1]["booking_id"])
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("Cancelled", "CANCEL", "Cancelled")
    meeting, booking, appointment = sides(sandbox, no_show_id)
    assert (meeting["Booking_Status"], booking["status"], appointment["Status"]) == ("No Show", "NO_SHOW", "Cancelled")
    assert appointment["Cancellation_Note"] == NO_SHOW_NOTE
    assert writes(sandbox) == {"Events": 4, "Appointments__s": 4}
    assert sandbox.stats()["calls"]["PUT /crm/{version}/{module}"] == 2  # one per module
    assert summary.applied == 8 and summary.failed == 0 and summary.conflicts == 0
    assert meeting_disagreements(sandbox.dump()) == []

    # the echoes (the Meetings' notifications, then the safety net) write nothing
    zero_stats(sandbox)
    echo = await org.sync(crm_ids=[m_meeting["id"], o_meeting["id"], cancelled[0]["id"], sides(sandbox, no_show_id)[0]["id"]], crm_module="Events")
    assert writes(sandbox) == {} and echo.applied == 0 and echo.planned == {}
    again = await org.sync("scan")
    assert writes(sandbox) == {} and again.applied == 0 and again.planned == {}

    # Appointments__s -> Bookings -> Meeting: one Bookings write, one Meeting write, nothing back to the appointment
    a_meeting, a_booking = appt_moved
    appointment = sides(sandbox, a_booking["booking_id"])[2]
    a_to = instant(appointment["Appointment_Start_Time"]) + timedelta(days=1, hours=1)
    edit_crm(sandbox, appointment["id"], Appointment_Start_Time=crm_iso(a_to, "Asia/Kolkata"))
    zero_stats(sandbox)

    summary = await org.sync("scan")

    meeting, booking, appointment = sides(sandbox, a_booking["booking_id"])
    assert booking["start_time"] == bookings_text(a_to, a_booking["time_zone"])
    assert instant(meeting["Start_DateTime"]) == a_to and instant(meeting["End_DateTime"]) == a_to + minutes(a_booking)
    assert writes(sandbox) == {"bookings": 1, "Events": 1}
    assert summary.applied == 2 and summary.failed == 0
    zero_stats(sandbox)
    echo = await org.sync(crm_ids=[appointment["id"]], crm_module="Appointments__s")
    again = await org.sync("scan")
    assert writes(sandbox) == {} and echo.applied == 0 and again.applied == 0 and again.planned == {}
    assert meeting_disagreements(sandbox.dump()) == []

    # opted in: a Meeting deleted in CRM cancels its booking, and the same run carries that to the appointment
    await org.set(meeting_delete_cancels_booking=True)
    delete_meeting(sandbox, deleted[0]["id"])
    zero_stats(sandbox)

    summary = await org.sync(deleted_crm_ids=[deleted[0]["id"]], crm_module="Events")

    meeting, booking, appointment = sides(sandbox, deleted[1]["booking_id"])
    assert meeting is None and booking["status"] == "CANCEL" and appointment["Status"] == "Cancelled"
    assert writes(sandbox) == {"bookings": 1, "Appointments__s": 1}
    assert summary.applied == 2 and summary.failed == 0 and deleted[1]["booking_id"] in kept_for(summary)
    zero_stats(sandbox)
    again = await org.sync("scan")
    assert writes(sandbox) == {} and again.applied == 0 and again.planned == {} and again.failed == 0


async def test_time_only_meetings_follow_the_cancel_policy_and_keep_completions(sandbox, prefect_api, tmp_path):
    ended, = end_early(sandbox, 1)
    org = await make_org(sandbox, tmp_path, crm_module="Events", meeting_status_field=None)
    zero_stats(sandbox)
    first = await org.sync("full")
    assert first.failed == 0 and first.applied == 0 and writes(sandbox) == {}  # the seed's finished bookings are kept, not written
    keep, prefix, by_title, delete = future_pairs(sandbox, 4)

    # keep (the default): nothing written, reported once as kept
    edit_booking(sandbox, keep[1]["booking_id"], action="cancel")
    # and a reschedule in the same run: start and end written, the status pick list left alone
    r_meeting, r_booking = future_pairs(sandbox, 1, exclude={p[1]["booking_id"] for p in (keep, prefix, by_title, delete)})[0]
    r_to = bookings_instant(r_booking["start_time"], r_booking["time_zone"]) + timedelta(hours=4)
    edit_booking(sandbox, r_booking["booking_id"], start_time=bookings_text(r_to, r_booking["time_zone"]))
    zero_stats(sandbox)
    kept = await org.sync()
    meeting = sides(sandbox, r_booking["booking_id"])[0]
    assert instant(meeting["Start_DateTime"]) == r_to and instant(meeting["End_DateTime"]) == r_to + minutes(r_booking)
    assert meeting["Booking_Status"] == r_meeting["Booking_Status"] and meeting["Event_Title"] == r_meeting["Event_Title"]
    assert writes(sandbox) == {"Events": 1}
    assert sides(sandbox, keep[1]["booking_id"])[0] == keep[0]
    assert kept.kept == 1 and list(kept_for(kept)) == [keep[1]["booking_id"]] and kept.applied == 1 and kept.failed == 0
    zero_stats(sandbox)
    again = await org.sync()
    assert writes(sandbox) == {} and again.kept == 0 and again.planned == {} and again.conflict_list == [] and again.candidates == 0

    # delete: the Meeting of a cancelled booking is deleted; the echo of that delete does nothing
    await org.set(meeting_cancel_policy="delete")
    edit_booking(sandbox, delete[1]["booking_id"], action="cancel")
    zero_stats(sandbox)

    deleted = await org.sync()

    meeting, booking, _ = sides(sandbox, delete[1]["booking_id"])
    assert meeting is None and delete[0]["id"] not in {e["id"] for e in sandbox.dump()["Events"]} and booking["status"] == "CANCEL"
    assert writes(sandbox) == {"Events": 1} and deleted.applied == 1 and deleted.failed == 0
    zero_stats(sandbox)
    echo = await org.sync(deleted_crm_ids=[delete[0]["id"]], crm_module="Events")
    again = await org.sync()
    assert writes(sandbox) == {} and echo.applied == 0 and echo.kept == 0 and echo.conflict_list == [] and again.applied == 0 and again.planned == {}

    # prefix: a cancelled booking's Meeting gets "Cancelled: "; a CRM user's prefix cancels the booking; a completion is kept
    await org.set(meeting_cancel_policy="prefix")
    edit_booking(sandbox, prefix[1]["booking_id"], action="cancel")
    edit_meeting(sandbox, by_title[0]["id"], Event_Title=f"Cancelled: {by_title[0]['Event_Title']}")
    edit_booking(sandbox, ended, action="completed")
    ended_meeting = sides(sandbox, ended)[0]
    zero_stats(sandbox)

    prefixed = await org.sync()

    meeting, booking, _ = sides(sandbox, prefix[1]["booking_id"])
    assert meeting["Event_Title"] == f"Cancelled: {prefix[0]['Event_Title']}" and booking["status"] == "CANCEL"
    assert meeting["Start_DateTime"] == prefix[0]["Start_DateTime"] and meeting["End_DateTime"] == prefix[0]["End_DateTime"]
    assert sides(sandbox, by_title[1]["booking_id"])[1]["status"] == "CANCEL"
    meeting, booking, _ = sides(sandbox, ended)
    assert meeting == ended_meeting and booking["status"] == "COMPLETED"
    assert writes(sandbox) == {"Events": 1, "bookings": 1}
    assert prefixed.kept == 1 and list(kept_for(prefixed)) == [ended] and prefixed.applied == 2 and prefixed.failed == 0
    zero_stats(sandbox)
    again = await org.sync()
    assert writes(sandbox) == {} and again.applied == 0 and again.planned == {} and again.kept == 0 and again.conflict_list == []


async def test_a_meeting_deleted_in_crm_is_reported_not_acted_on_by_default(sandbox, prefect_api, tmp_path):
    org = await make_org(sandbox, tmp_path, crm_module="Events")
    await org.sync("full")
    (noted, noted_booking), (silent, silent_booking) = future_pairs(sandbox, 2)
    delete_meeting(sandbox, noted["id"])
    zero_stats(sandbox)

    # the records run a delete notification starts: the booking is left as it is, the delete reported
    summary = await org.sync(deleted_crm_ids=[noted["id"]], crm_module="Events")

    meeting, booking, _ = sides(sandbox, noted_booking["booking_id"])
    assert meeting is None and booking == noted_booking
    assert writes(sandbox) == {} and summary.applied == 0 and summary.failed == 0
    assert summary.kept == 1 and "deleted in CRM" in kept_for(summary)[noted_booking["booking_id"]]
    from prefect import get_client

    async with get_client() as client:  # named after the deleted record, as a records run
        assert (await client.read_flow_run(summary.run_id)).name.startswith(f"sync-records-crm-{noted['id']}-")

    # later runs leave the link alone, even when the booking moves (there is no Meeting to move)
    moved_to = bookings_instant(noted_booking["start_time"], noted_booking["time_zone"]) + timedelta(hours=2)
    edit_booking(sandbox, noted_booking["booking_id"], start_time=bookings_text(moved_to, noted_booking["time_zone"]))
    zero_stats(sandbox)
    later = await org.sync()
    assert writes(sandbox) == {} and later.applied == 0 and later.failed == 0 and later.planned == {} and later.conflict_list == [] and later.kept == 0
    assert sides(sandbox, noted_booking["booking_id"])[1]["status"] == "UPCOMING"

    # a Meeting deleted with no notification: the nightly Bulk Read misses it; nothing is acted on, the summary says so
    delete_meeting(sandbox, silent["id"])
    zero_stats(sandbox)
    nightly = await org.sync("full")
    assert writes(sandbox) == {} and nightly.applied == 0 and nightly.failed == 0 and nightly.planned == {}
    assert sides(sandbox, silent_booking["booking_id"])[1] == silent_booking
    assert sides(sandbox, noted_booking["booking_id"])[1]["status"] == "UPCOMING"
    missing = [n for n in nightly.notes if silent["id"] in n]
    assert len(missing) == 1 and "missing" in missing[0] and noted["id"] not in missing[0], nightly.notes


async def test_a_delete_kept_while_the_option_was_off_is_not_acted_on_when_it_is_turned_on(sandbox, prefect_api, tmp_path):
    org = await make_org(sandbox, tmp_path, crm_module="Events")
    await org.sync("full")
    (meeting, booking), = future_pairs(sandbox, 1)
    delete_meeting(sandbox, meeting["id"])
    kept = await org.sync(deleted_crm_ids=[meeting["id"]], crm_module="Events")
    assert "no longer synced" in kept_for(kept)[booking["booking_id"]]
    await org.set(meeting_delete_cancels_booking=True)
    zero_stats(sandbox)

    later = await org.sync()

    assert sides(sandbox, booking["booking_id"])[1]["status"] == "UPCOMING"
    assert writes(sandbox) == {} and later.applied == 0


async def test_a_meeting_gone_without_a_notification_is_marked_deleted_once_and_never_written_again(sandbox, prefect_api, tmp_path):
    """A Meeting deleted in CRM whose notification was lost: the booking moves, the sync's write to the
    Meeting answers INVALID_DATA (no such id); the Meeting is marked deleted and kept (reported once, the
    booking left as it is), and later runs send nothing to it."""
    org = await make_org(sandbox, tmp_path, crm_module="Events", meeting_delete_cancels_booking=True)
    await org.sync("full")
    (meeting, booking), = future_pairs(sandbox, 1)
    delete_meeting(sandbox, meeting["id"])
    # no channel is subscribed here: the delete notification never reaches a receiver (lost)
    start = bookings_instant(booking["start_time"], booking["time_zone"]) + timedelta(hours=1)
    edit_booking(sandbox, booking["booking_id"], start_time=start.astimezone(ZoneInfo(booking["time_zone"])).strftime("%d-%b-%Y %H:%M:%S"))

    first = await org.sync(booking_ids=[booking["booking_id"]])

    assert first.kept == 1 and first.failed == 0, (first.failures, first.conflict_list)
    assert "no longer exists" in kept_for(first)[booking["booking_id"]]
    zero_stats(sandbox)
    again = await org.sync("scan")
    assert again.planned == {} and again.applied == 0 and again.failed == 0
    assert writes(sandbox) == {}
    assert sides(sandbox, booking["booking_id"])[1]["status"] == "UPCOMING"  # never cancelled, even with the option on
