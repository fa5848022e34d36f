"""The demo's helpers (``deployments/demo.py``, issue 15): the Meetings agreement check, the move
across a daylight-saving change, and step 5's edits against the sandbox.

The whole demo runs end to end in ``tests/test_security.py`` (its ``demo`` fixture); these
check the pieces it stands on without a Prefect server.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployments.demo import after_dst_change, disagreements, edit_both_sides, linked_meetings, meeting_disagreements

UTC = timezone.utc


def booking(bid: str, start: str, status: str = "UPCOMING", tz: str = "Europe/London") -> dict[str, Any]:
    return {"booking_id": bid, "start_time": start, "end_time": start, "time_zone": tz, "status": status}


def meeting(bid: str | None, start: str, word: str | None = "Scheduled", crm_id: str = "1") -> dict[str, Any]:
    return {"id": crm_id, "Booking_Id": bid, "Start_DateTime": start, "End_DateTime": start, "Booking_Status": word}


def dump_of(*pairs: tuple[dict, dict]) -> dict[str, Any]:
    return {"Appointments__s": [], "Events": [m for m, _ in pairs], "bookings": [b for _, b in pairs]}


def test_a_meeting_agrees_when_its_start_and_status_word_match_the_booking():
    dump = dump_of(
        (meeting("#A1", "2026-12-03T08:45:00-05:00"), booking("#A1", "03-Dec-2026 13:45:00")),  # the same instant, another offset
        (meeting("#A2", "2026-12-03T13:45:00+00:00", None), booking("#A2", "03-Dec-2026 13:45:00", "ONGOING")),  # empty: Scheduled
        (meeting("#A3", "2026-12-03T13:45:00+00:00", ""), booking("#A3", "03-Dec-2026 13:45:00", "PENDING")),
        (meeting("#A4", "2026-12-01T09:00:00+00:00", "Cancelled"), booking("#A4", "03-Dec-2026 13:45:00", "CANCEL")),  # both finished
        (meeting("#A5", "2026-12-01T09:00:00+00:00", "Cancelled"), booking("#A5", "03-Dec-2026 13:45:00", "NO_SHOW")),
        (meeting("#A6", "2026-12-03T13:45:00+00:00", "Cancelled"), booking("#A6", "03-Dec-2026 13:45:00", "PAYMENT_FAILURE")),
        (meeting("#A7", "2026-12-03T13:45:00+00:00", "Completed"), booking("#A7", "03-Dec-2026 13:45:00", "COMPLETED")),
        (meeting("#A8", "2026-12-03T13:45:00+00:00", "No Show"), booking("#A8", "03-Dec-2026 13:45:00", "NO_SHOW")),
    )
    assert meeting_disagreements(dump) == []


def test_a_meeting_disagrees_on_another_start_or_status():
    dump = dump_of(
        (meeting("#B1", "2026-12-03T14:45:00+00:00"), booking("#B1", "03-Dec-2026 13:45:00")),  # an hour apart, both scheduled
        (meeting("#B2", "2026-12-03T13:45:00+00:00", "Cancelled"), booking("#B2", "03-Dec-2026 13:45:00")),
        (meeting("#B3", "2026-12-03T13:45:00+00:00"), booking("#B3", "03-Dec-2026 13:45:00", "CANCEL")),
        (meeting("#B4", "2026-12-03T13:45:00+00:00", "No Show"), booking("#B4", "03-Dec-2026 13:45:00", "CANCEL")),
        (meeting("#B5", "2026-12-03T13:45:00+00:00", "Completed"), booking("#B5", "03-Dec-2026 13:45:00", "NO_SHOW")),
        (meeting("#B6", "2026-12-03T13:45:00+00:00", "Postponed"), booking("#B6", "03-Dec-2026 13:45:00")),  # no such word
        (meeting("#B7", "2026-12-03T13:45:00+00:00"), booking("#B7", "03-Dec-2026 13:45:00", "PENDING_PAYMENT")),  # on hold
    )
    assert [line.split(":")[0] for line in meeting_disagreements(dump)] == [f"#B{i}" for i in range(1, 8)]


def test_only_meetings_still_in_crm_and_linked_to_a_booking_count():
    dump = dump_of((meeting("#C1", "2026-12-03T13:45:00+00:00"), booking("#C1", "03-Dec-2026 13:45:00")))
    dump["Events"] += [meeting(None, "2026-12-03T10:00:00+00:00", crm_id="2"), meeting("#GONE", "2026-12-03T10:00:00+00:00", crm_id="3")]
    dump["bookings"].append(booking("#C2", "05-Dec-2026 10:00:00"))  # its Meeting was deleted in CRM
    assert list(linked_meetings(dump)) == ["#C1"] and meeting_disagreements(dump) == []


@pytest.mark.parametrize(("tz", "start", "expected"), [
    ("America/New_York", "2026-12-22T18:30:00+00:00", "2027-03-21T13:30:00-04:00"),  # EST -> EDT on 14 March, a week later
    ("Australia/Sydney", "2026-12-09T02:15:00+00:00", "2027-04-11T13:15:00+10:00"),  # AEDT -> AEST on 4 April
    ("Europe/London", "2026-07-01T09:00:00+00:00", "2026-11-01T10:00:00+00:00"),  # BST -> GMT on 25 October
])
def test_after_dst_change_keeps_the_wall_clock_a_week_after_the_zone_s_next_change(tz, start, expected):
    moved = after_dst_change(datetime.fromisoformat(start), tz)
    assert moved.isoformat() == expected
    assert moved.utcoffset() != datetime.fromisoformat(start).astimezone(ZoneInfo(tz)).utcoffset()


def test_after_dst_change_refuses_a_zone_without_one():
    with pytest.raises(ValueError, match="Asia/Kolkata"):
        after_dst_change(datetime(2026, 12, 1, tzinfo=UTC), "Asia/Kolkata")


def test_step_5_edits_meetings_of_other_bookings_as_a_crm_user_would(sandbox):
    sandbox.http.post("/__sandbox/reset", json={"appointments": 2000}).raise_for_status()  # the demo's seed size
    before = linked_meetings(sandbox.dump())
    ed = edit_both_sides(sandbox.http)
    after = sandbox.dump()

    kinds = [e.kind for e in ed.meetings]
    assert kinds == ["drag", "drag", "drag", "cancel", "delete"]
    touched = {e.pair.id for e in ed.meetings}
    assert len(touched) == 5 and len(ed.used) == len(ed.done) == 15  # each booking edited once
    meetings = linked_meetings(after)
    for e in ed.meetings[:3]:
        m = meetings[e.pair.id].crm
        assert datetime.fromisoformat(m["Start_DateTime"]) == e.start != before[e.pair.id].start
    dst = ed.meetings[2]
    zone = ZoneInfo(dst.pair.tz)
    assert dst.start.astimezone(zone).utcoffset() != dst.pair.start.astimezone(zone).utcoffset()  # across the zone's DST change
    assert dst.start.astimezone(zone).time() == dst.pair.start.astimezone(zone).time()
    assert meetings[ed.meetings[3].pair.id].crm["Booking_Status"] == "Cancelled"
    assert ed.meetings[4].pair.id not in meetings and ed.meetings[4].pair.id in {b["booking_id"] for b in after["bookings"]}

    # Before any sync: the Meetings edited and the bookings edited in Bookings disagree; the deleted Meeting no longer counts.
    assert {line.split(":")[0] for line in meeting_disagreements(after)} == touched - {ed.meetings[4].pair.id} | set(ed.webhooked)
    assert not {line.split(":")[0] for line in disagreements(after)} & touched  # no appointment of a Meeting edit was touched
