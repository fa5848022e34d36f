"""Property tests (hypothesis): the three-way diff, the Bulk Read loader and the webhook receiver.

* **The diff** (``sync/engine.py``). Links are generated from a few time zones with
  daylight saving (and two without), start instants clustered around the 2026 DST
  changes and written in any of those zones, every status each side can have,
  modification times, an end, and a base that is missing, agreed or arbitrary.
  :func:`apply` below does what an :class:`~sync.engine.Action` means on its target
  (a Bookings reschedule goes through the ``dd-MMM-yyyy HH:mm:ss`` wall time in the
  booking's zone, as the client sends it) and checks Zoho's rules first. What the
  engine promises, and the properties check:

  - a plan is ``agreed`` (nothing to send, nothing to report) exactly when the sides agree;
  - otherwise it has at most one action, and either that action makes the sides
    agree once applied, or there is no action and the reason is reported as a
    conflict (``both_changed`` under ``report_only``, ``rule``, or ``deferred``);
  - no action breaks a Zoho rule (no change to a finished target, no completion
    or no-show before its time, no reschedule to the same instant);
  - with a base, a change on one side only is carried to the other side, never
    overwritten; both sides changed differently is reported with the policy's winner;
  - a deferral is temporary: the same link planned late enough gets an action;
  - planning is deterministic and does not depend on which offset the instants
    came in (same actions, same idempotency keys);
  - after applying, re-planning is ``agreed`` (the echo dies) and, with the base
    moved to the new state, ``unchanged``.

  One limit is the Bookings time format itself: a wall time in a DST fold names two
  instants and Bookings takes the earlier, so a CRM reschedule to the *later* one
  cannot be written exactly (:func:`test_a_reschedule_into_the_second_pass_of_a_fold`).

* **The loader** (``sync/bulk_load.py``): generated CSV (and ICS) text, zipped, and
  then possibly damaged (bytes flipped, cut short), or arbitrary bytes: it loads
  (bad rows recorded and skipped, counts adding up) or raises ``BulkFileError``
  and loads nothing; never another exception.

* **The receiver** (``deployments/webhook.py``): arbitrary JSON (or bytes) on the
  three POST routes, with a right or wrong secret: never a 5xx, and an event (or
  queued id) only for an authenticated call that got a 2xx.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from deployments.webhook import ReceiverSettings, create_receiver
from sync.bulk_load import BulkFileError, appointments_mapping, events_mapping, load_csv_zip, load_ics_zip, parse_datetime, parse_int
from sync.bulk_runs import record_job_created
from sync.engine import (
    NO_SHOW_NOTE,
    Action,
    Canon,
    Kind,
    Link,
    Policy,
    Side,
    SideState,
    agree,
    plan,
    plan_link,
)
from sync.store import CrmAppointment, CrmEvent, RejectedRecord, open_store
from zoho.timefmt import from_bookings, to_bookings

UTC = timezone.utc

#: Modest budgets: the suite runs on 2 CPUs next to other work.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IO = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# =========================================================================== the diff
ZONES = ["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]
#: 2026 DST changes (UTC instants) of the zones above, and two ordinary times.
PIVOTS = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),    # New York springs forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),   # New York falls back (01:00-02:00 twice)
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),   # London springs forward
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # London falls back
    datetime(2026, 4, 4, 16, 0, tzinfo=UTC),   # Sydney falls back
    datetime(2026, 10, 3, 16, 0, tzinfo=UTC),  # Sydney springs forward
    datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
    datetime(2026, 12, 24, 18, 30, tzinfo=UTC),
]

instants = st.builds(lambda pivot, half_hours: pivot + timedelta(minutes=30 * half_hours), st.sampled_from(PIVOTS), st.integers(-6, 6))
zones = st.sampled_from(ZONES)
#: What each side can say (CRM has no no-show of its own: ``Cancelled`` + note).
CRM_STATUSES = [Canon.SCHEDULED, Canon.CANCELLED, Canon.COMPLETED]
BOOKINGS_STATUSES = list(Canon)
AGREED_PAIRS = [(Canon.SCHEDULED, Canon.SCHEDULED), (Canon.CANCELLED, Canon.CANCELLED), (Canon.CANCELLED, Canon.NO_SHOW), (Canon.COMPLETED, Canon.COMPLETED)]


def shown_in(instant: datetime, zone: str) -> datetime:
    """The same instant as an aware datetime in ``zone`` (a ``ZoneInfo``, fold set where it applies)."""
    return instant.astimezone(ZoneInfo(zone))


@st.composite
def side_states(draw, statuses: list[Canon], base: SideState | None, changed: bool | None = None) -> SideState:
    """A side now: unchanged from ``base`` half the time (or as ``changed`` says), else any start and status."""
    if base is not None and (changed is False or (changed is None and draw(st.booleans()))):
        start, status = base.start, base.status
    else:
        pairs = st.tuples(instants, st.sampled_from(statuses))
        start, status = draw(pairs.filter(lambda p: base is None or not base.same(SideState(*p))) if changed else pairs)
    modified = draw(st.none() | instants)
    return SideState(shown_in(start, draw(zones)), status, shown_in(modified, draw(zones)) if modified else None)


@st.composite
def links(draw, base: str | None = None, crm_changed: bool | None = None, bookings_changed: bool | None = None) -> Link:
    """A link; ``base`` ``none``/``agreed``/``arbitrary`` (default: any), each side changed from it or not (default: either)."""
    kind = base or draw(st.sampled_from(["none", "agreed", "arbitrary"]))
    base_crm = base_bk = None
    if kind == "agreed":
        start = draw(instants)
        crm_status, bk_status = draw(st.sampled_from(AGREED_PAIRS))
        base_crm, base_bk = SideState(shown_in(start, draw(zones)), crm_status), SideState(shown_in(start, draw(zones)), bk_status)
    elif kind == "arbitrary":
        base_crm = SideState(draw(instants), draw(st.sampled_from(CRM_STATUSES)))
        base_bk = SideState(draw(instants), draw(st.sampled_from(BOOKINGS_STATUSES)))
    crm = draw(side_states(CRM_STATUSES, base_crm, crm_changed))
    bookings = draw(side_states(BOOKINGS_STATUSES, base_bk, bookings_changed))
    end = crm.start + timedelta(minutes=draw(st.sampled_from([15, 30, 60, 120])))
    base_at = draw(instants) if base_crm is not None else None
    return Link("#AN-00042", "5545974000000042", draw(zones), crm, bookings, end=end, base_crm=base_crm, base_bookings=base_bk, base_at=base_at)


policies = st.sampled_from(list(Policy))
sources = st.sampled_from(list(Side))
nows = st.builds(lambda i, days: i + timedelta(days=days), instants, st.sampled_from([-30, -1, 0, 0, 1, 30]))


class ZohoRefused(AssertionError):
    """An action Zoho would refuse (the engine promises never to send one)."""


def bookings_wall_time(instant: datetime, time_zone: str) -> datetime:
    """Where a Bookings reschedule to ``instant`` lands: written as wall time in the booking's zone, read back."""
    return from_bookings(to_bookings(instant, time_zone), time_zone)


def apply(link: Link, action: Action, now: datetime) -> Link:
    """``link`` after Zoho carried out ``action`` on its target side (see ``Action`` / ``Kind``).

    Reschedule: the target's start moves to ``action.start`` (on Bookings through
    the wall time in ``action.time_zone``). Cancel: the target is cancelled (CRM
    ``Cancelled``, with the no-show note for a Bookings no-show). Complete: completed.
    No-show: Bookings ``NO_SHOW``. Raises :class:`ZohoRefused` where Zoho would refuse.
    """
    target = link.crm if action.target is Side.CRM else link.bookings
    if action.booking_id != link.booking_id or action.crm_id != link.crm_id or action.time_zone != link.time_zone:
        raise ZohoRefused(f"action for another link: {action}")
    if target.status.finished:
        raise ZohoRefused(f"{action.kind.value} of a {target.status.value} {action.target.value} appointment")
    if action.kind is Kind.RESCHEDULE:
        if action.start is None or action.start == target.start:
            raise ZohoRefused("a reschedule to the same instant")
        start = bookings_wall_time(action.start, action.time_zone) if action.target is Side.BOOKINGS else action.start
        new = SideState(start, target.status, now)
    elif action.kind is Kind.CANCEL:
        assert action.note in (None, NO_SHOW_NOTE) and (action.note is None or action.target is Side.CRM)
        new = SideState(target.start, Canon.CANCELLED, now)
    elif action.kind is Kind.COMPLETE:
        if action.target is Side.CRM and link.end > now:
            raise ZohoRefused("CRM Completed before the appointment's end")
        if action.target is Side.BOOKINGS and link.bookings.start > now:
            raise ZohoRefused("a booking completed before it starts")
        new = SideState(target.start, Canon.COMPLETED, now)
    else:
        if action.target is not Side.BOOKINGS:
            raise ZohoRefused("CRM has no no-show status")
        if link.bookings.start > now:
            raise ZohoRefused("a no-show before the booking starts")
        new = SideState(target.start, Canon.NO_SHOW, now)
    return replace(link, crm=new) if action.target is Side.CRM else replace(link, bookings=new)


def representable(link: Link, action: Action) -> bool:
    """Whether Bookings can hold the action's instant exactly (not the later pass of a DST fold)."""
    return action.target is not Side.BOOKINGS or action.start is None or bookings_wall_time(action.start, action.time_zone) == action.start


def in_zone(link: Link, zone: str) -> Link:
    """The same link with every instant written in ``zone``."""

    def side(s: SideState | None) -> SideState | None:
        return None if s is None else SideState(shown_in(s.start, zone), s.status, shown_in(s.modified, zone) if s.modified else None)

    return replace(link, crm=side(link.crm), bookings=side(link.bookings), base_crm=side(link.base_crm), base_bookings=side(link.base_bookings),
                   end=shown_in(link.end, zone), base_at=shown_in(link.base_at, zone) if link.base_at else None)


@FAST
@given(links(), policies, nows, sources)
def test_a_plan_makes_the_sides_agree_or_says_why_not(link, policy, now, source):
    actions, conflicts, agreed = plan_link(link, policy, now, source)
    note(f"actions={actions} conflicts={conflicts} agreed={agreed}")
    assert agreed == agree(link)
    if agreed:
        assert actions == [] and conflicts == []
        return
    assert len(actions) <= 1
    assert {c.kind for c in conflicts} <= {"both_changed", "rule", "deferred"}
    if not actions:
        assert conflicts, "the sides disagree, nothing is sent and nothing is reported"
        return
    (action,) = actions
    assert action.since == (link.base_at.astimezone(UTC).isoformat() if link.base_at else "new")
    after = apply(link, action, now)  # raises ZohoRefused for a rule Zoho would enforce
    if representable(link, action):
        assert agree(after), f"applying {action} left {after.crm} / {after.bookings}"
        again, again_conflicts, again_agreed = plan_link(after, policy, now, source)
        assert (again, again_conflicts, again_agreed) == ([], [], True), "our own write must come back as an agreed echo"
        settled = replace(after, base_crm=after.crm, base_bookings=after.bookings, base_at=now)
        assert plan_link(settled, policy, now, source) == ([], [], True)
        out = plan([settled], policy, now, source)
        assert out.actions == [] and out.conflicts == [] and out.agreed == [] and out.unchanged == 1


@FAST
@given(links() | links("agreed", True, False) | links("agreed", False, True), policies, nows, sources)
def test_a_one_sided_change_is_carried_over(link, policy, now, source):
    actions, conflicts, agreed = plan_link(link, policy, now, source)
    if agreed or link.base_crm is None:
        return
    crm_changed, bk_changed = not link.crm.same(link.base_crm), not link.bookings.same(link.base_bookings)
    if crm_changed == bk_changed:
        return  # both: the next test; neither (a base never agreed on): repaired from the initial source
    changed = Side.CRM if crm_changed else Side.BOOKINGS
    assert all(a.target is changed.other for a in actions), "the side that changed is the source, never overwritten"
    assert not [c for c in conflicts if c.kind == "both_changed"]


@FAST
@given(links("agreed", True, True), policies, nows, sources)
def test_a_change_on_both_sides_is_decided_by_the_policy_and_reported(link, policy, now, source):
    actions, conflicts, agreed = plan_link(link, policy, now, source)
    if agreed:
        return  # both changed to the same thing
    (conflict,) = [c for c in conflicts if c.kind == "both_changed"]
    crm_at, bk_at = link.crm.modified, link.bookings.modified
    latest = Side.CRM if (crm_at and (not bk_at or crm_at > bk_at)) else Side.BOOKINGS  # no times at all: Bookings
    expected = {Policy.CRM_WINS: Side.CRM, Policy.BOOKINGS_WINS: Side.BOOKINGS, Policy.REPORT_ONLY: None, Policy.LATEST_WINS: latest}[policy]
    assert conflict.winner == expected
    assert all(a.target is expected.other for a in actions) if expected else actions == []


@FAST
@given(links(), policies, nows, sources)
def test_a_deferral_is_only_until_its_time(link, policy, now, source):
    actions, conflicts, _ = plan_link(link, policy, now, source)
    if not any(c.kind == "deferred" for c in conflicts):
        return
    assert actions == []
    later = max(link.end, link.crm.start, link.bookings.start, now) + timedelta(minutes=1)
    actions, conflicts, _ = plan_link(link, policy, later, source)
    assert len(actions) == 1 and not any(c.kind == "deferred" for c in conflicts)
    apply(link, actions[0], later)


@FAST
@given(links(), policies, nows, sources, zones)
def test_planning_is_deterministic_and_blind_to_offsets(link, policy, now, source, zone):
    first = plan_link(link, policy, now, source)
    assert plan_link(link, policy, now, source) == first
    moved = plan_link(in_zone(link, zone), policy, shown_in(now, zone), source)
    assert moved == first
    assert [a.key for a in moved[0]] == [a.key for a in first[0]]


@FAST
@given(st.sampled_from(AGREED_PAIRS), instants, zones, zones, policies, nows, sources)
def test_planning_an_agreed_state_yields_nothing(pair, start, z1, z2, policy, now, source):
    crm, bk = SideState(shown_in(start, z1), pair[0]), SideState(shown_in(start, z2), pair[1])
    for base in (None, (crm, bk)):
        link = Link("#AN-1", "1", z2, crm, bk, end=start + timedelta(hours=1), base_crm=base and base[0], base_bookings=base and base[1])
        assert plan_link(link, policy, now, source) == ([], [], True)
        out = plan([link], policy, now, source)
        assert out.actions == [] and out.conflicts == []
        assert (out.unchanged, len(out.agreed)) == ((1, 0) if base else (0, 1))


def test_a_reschedule_into_the_second_pass_of_a_fold():
    """New York's 01:30 on 1 Nov 2026 happens twice; Bookings' wall time names the first.

    A CRM reschedule to the second 01:30 (EST, 06:30Z) is sent, but the booking
    lands on the first (EDT, 05:30Z): the next run sees both sides changed and the
    policy decides (here Bookings, modified later, wins), so the sides agree again
    one hour off the CRM user's choice, and the conflict is reported.
    """
    ny = "America/New_York"
    base = SideState(datetime(2026, 11, 2, 15, 0, tzinfo=UTC), Canon.SCHEDULED)
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert shown_in(second, ny).fold == 1
    now = datetime(2026, 10, 1, tzinfo=UTC)
    link = Link("#AN-1", "1", ny, SideState(second, Canon.SCHEDULED, now - timedelta(hours=1)), base, end=second + timedelta(hours=1),
                base_crm=base, base_bookings=base, base_at=now - timedelta(days=1))
    (action,), conflicts, _ = plan_link(link, Policy.LATEST_WINS, now)
    assert action.target is Side.BOOKINGS and action.start == second and not conflicts
    after = apply(link, action, now)
    assert after.bookings.start == second - timedelta(hours=1) and not agree(after)
    (repair,), conflicts, _ = plan_link(after, Policy.LATEST_WINS, now)
    assert [c.kind for c in conflicts] == ["both_changed"] and repair.target is Side.CRM
    assert agree(apply(after, repair, now))


# ========================================================================= the loader
APPT_COLUMNS = ["Id", "Booking_Id", "Appointment_Start_Time", "Appointment_End_Time", "Duration", "Status", "Modified_Time"]
EXTRA_COLUMNS = ["Appointment_Name", "Owner", "Id", ""]
TRICKY = [
    "", " ", "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-03-08T02:30:00-05:00", "2026-06-01T09:00:00Z",
    "2026-06-01T09:00:00.123456+05:30", "2026-06-01T09:00:00", "2026-06-01", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
    "30", "-1", "1_000", " 7 ", "99999999999999999999", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "Scheduled", "Cancelled", "\ufeffId", "a,b", 'say "hi"', "line\nbreak", "\x00", "'; DROP TABLE crm_appointments; --",
]
cells = st.sampled_from(TRICKY) | st.text(max_size=12) | st.integers().map(str) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())


@st.composite
def csv_files(draw) -> bytes:
    header = draw(st.lists(st.sampled_from(APPT_COLUMNS + EXTRA_COLUMNS), max_size=10)) if draw(st.booleans()) else list(APPT_COLUMNS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    rows = draw(st.lists(st.lists(cells, min_size=max(0, len(header) - 1), max_size=len(header) + 1), max_size=8))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):
        text = draw(st.text(max_size=200))  # no CSV at all
    data = text.encode("utf-8")
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data if draw(st.booleans()) else data


@st.composite
def damaged(draw, payload: bytes) -> bytes:
    """``payload`` zipped (as ``{job}.csv`` or under another name), then maybe bytes flipped or cut short."""
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]))
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name in draw(st.sampled_from([["JOB.csv"], ["other.csv"], ["JOB.csv", "JOB.txt"], ["a.csv", "b.csv"], []])):
            zf.writestr(name, payload)
    data = bytearray(buf.getvalue())
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (CrmAppointment, CrmEvent, RejectedRecord)}


def empty(engine) -> None:
    with engine.begin() as conn:
        for t in (CrmAppointment, CrmEvent, RejectedRecord):
            conn.execute(delete(t))


@pytest.fixture
def store(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield engine
    engine.dispose()


def check_load(engine, path: Path, load) -> None:
    """``load()`` either reports a load whose counts add up, or raises ``BulkFileError`` and leaves nothing."""
    empty(engine)
    try:
        report = load()
    except BulkFileError:
        assert counts(engine) == {"crm_appointments": 0, "crm_events": 0, "rejected_records": 0}, "a file that cannot be loaded left rows behind"
        return
    stored = counts(engine)
    assert report.rows == report.loaded + report.rejected
    assert stored["rejected_records"] == report.rejected
    assert stored["crm_appointments"] + stored["crm_events"] <= report.loaded  # the same Id twice is one record
    with engine.connect() as conn:
        assert all(conn.execute(select(CrmAppointment.id)).scalars())
        assert all(conn.execute(select(CrmEvent.id)).scalars())


@IO
@given(payload=csv_files(), data=st.data())
@example(payload=b"Id,Booking_Id,Appointment_Start_Time,Status,Modified_Time\n1,b,0001-01-01T00:00:00+05:00,Scheduled,2026-01-01T00:00:00Z\n", data=None)
@example(payload=b"Id,Booking_Id,Appointment_Start_Time,Status,Modified_Time,Duration\n1,b,2026-01-01T00:00:00Z,Scheduled,9999-12-31T23:59:59-05:00,30\n", data=None)
@example(payload=b"Id,Booking_Id,Appointment_Start_Time,Status,Modified_Time,Duration\n1,b,2026-01-01T00:00:00Z,Scheduled,2026-01-01T00:00:00Z,99999999999999999999\n", data=None)
def test_the_csv_loader_loads_or_raises_its_own_error(store, tmp_path, payload, data):
    path = tmp_path / "JOB.zip"
    if data is None:  # the explicit examples: zipped as they are
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("JOB.csv", payload)
    else:
        path.write_bytes(data.draw(damaged(payload)) if data.draw(st.booleans(), label="zipped") else payload)
    for mapping in (appointments_mapping(), events_mapping()):
        check_load(store, path, lambda: load_csv_zip(store, path, "JOB", mapping, batch_size=3))


def _zip_member(name: str, payload: bytes, compress_type: int | None = None, flag_bits: int = 0) -> bytes:
    """A stored member, then its central-directory entry patched: ``flag_bits`` set, or another compression method."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, payload)
    data = bytearray(buf.getvalue())
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= flag_bits  # general purpose flags (bit 0: encrypted)
    if compress_type is not None:
        data[central + 10 : central + 12] = compress_type.to_bytes(2, "little")
        data[8:10] = compress_type.to_bytes(2, "little")  # the local header says the same
    return bytes(data)


@pytest.mark.parametrize(
    "zipped",
    [
        _zip_member("JOB.csv", b"Id\n1\n", flag_bits=1),  # encrypted: RuntimeError from zipfile
        _zip_member("JOB.csv", b"Id\n1\n", compress_type=99),  # unknown method: NotImplementedError from zipfile
    ],
    ids=["encrypted-member", "unknown-compression"],
)
def test_a_zip_zipfile_cannot_open_is_a_bulk_file_error(store, tmp_path, zipped):
    path = tmp_path / "JOB.zip"
    path.write_bytes(zipped)
    with pytest.raises(BulkFileError):
        load_csv_zip(store, path, "JOB", appointments_mapping())
    with pytest.raises(BulkFileError):
        load_ics_zip(store, tmp_path / "JOB.zip", "JOB")


ics_lines = st.sampled_from([
    "BEGIN:VCALENDAR", "END:VCALENDAR", "BEGIN:VEVENT", "END:VEVENT", "VERSION:2.0", "UID:1", "UID:", "SUMMARY:Haircut",
    "DTSTART:20261101T013000Z", "DTEND:20261101T023000Z", "DTSTART;TZID=America/New_York:20261101T013000",
    "DTEND;TZID=Asia/Kolkata:00010101T000000", "DTSTART;TZID=Asia/Kolkata:00010101T000000", "DTSTART:20261101T013000",
    "DTSTART;VALUE=DATE:20261101", "LAST-MODIFIED:20261001T090000Z", "LAST-MODIFIED:99991231T235959Z", "DTEND:99991231T235959Z",
    "DTSTART;TZID=Nowhere/Land:20261101T013000", "X-ZOHO-BOOKING-ID:#AN-1", "DTSTART:garbage", "RRULE:FREQ=DAILY;COUNT=x", ":", "",
]) | st.text(max_size=20)


@IO
@given(lines=st.lists(ics_lines, max_size=14), data=st.data())
@example(lines=["BEGIN:VCALENDAR", "BEGIN:VEVENT", "UID:1", "DTSTART;TZID=Asia/Kolkata:00010101T000000", "DTEND;TZID=Asia/Kolkata:00010101T000000", "END:VEVENT", "END:VCALENDAR"], data=None)
@example(lines=["BEGIN:VCALENDAR", "BEGIN:VEVENT", "UID:1", "DTSTART:20261101T013000Z", "DTEND:99991231T235959Z", "LAST-MODIFIED:99991231T235959Z", "END:VEVENT", "END:VCALENDAR"], data=None)
def test_the_ics_loader_loads_or_raises_its_own_error(store, tmp_path, lines, data):
    if data is not None and data.draw(st.booleans(), label="wrap in a calendar"):
        lines = ["BEGIN:VCALENDAR", "BEGIN:VEVENT", *lines, "END:VEVENT", "END:VCALENDAR"]
    payload = "\r\n".join(lines).encode()
    path = tmp_path / "JOB.zip"
    if data is None:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("JOB.ics", payload)
    else:
        path.write_bytes(data.draw(damaged(payload)).replace(b"JOB.csv", b"JOB.ics"))
    check_load(store, path, lambda: load_ics_zip(store, path, "JOB"))


@FAST
@given(st.text(max_size=40) | st.sampled_from(TRICKY))
@example("0001-01-01T00:00:00+05:00")
@example("9999-12-31T23:59:59-05:00")
def test_parse_datetime_gives_utc_or_value_error(text):
    try:
        value = parse_datetime(text)
    except ValueError:
        return
    assert value is None if not text else (value.tzinfo is UTC)


@FAST
@given(st.text(max_size=30) | st.integers().map(str) | st.sampled_from(TRICKY))
@example("99999999999999999999")
def test_parse_int_gives_a_storable_integer_or_value_error(text):
    try:
        value = parse_int(text)
    except ValueError:
        return
    assert value is None if not text else (-(2**63) <= value < 2**63)


# ======================================================================= the receiver
TOKEN, SECRET, CB = "chan-tok-123", "bk-secret", "cb-secret"
ROUTES = {
    "crm": "/zoho/crm/notifications",
    "bookings": "/zoho/bookings/webhook",
    "callback": "/zoho/crm/bulk-read/callback",
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
#: Payloads with the keys the routes read, valued anything (lone surrogates included).
shaped = st.fixed_dictionaries(
    {},
    optional={
        "token": st.sampled_from([TOKEN, "wrong", "\ud800"]) | json_values,
        "module": st.sampled_from(["Appointments__s", "Leads"]) | json_values,
        "operation": st.sampled_from(["insert", "update", "delete", "restore", "explode"]) | json_values,
        "ids": st.lists(st.text(max_size=6) | st.integers() | st.booleans(), max_size=3) | json_values,
        "channel_id": json_values,
        "booking_id": st.sampled_from(["#AN-1", "", "\udc80"]) | json_values,
        "id": st.sampled_from(["555", "556", 555]) | json_values,
        "state": st.sampled_from(["COMPLETED", "FAILURE", "IN PROGRESS"]) | json_values,
        "result": st.fixed_dictionaries({}, optional={"count": json_values, "more_records": json_values, "next_page_token": json_values,
                                                     "download_url": json_values, "page": json_values, "error_message": json_values}) | json_values,
    },
)
bodies = (
    shaped.map(lambda d: json.dumps(d).encode())
    | shaped.map(lambda d: json.dumps({"data": [d]}).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)


def test_the_receiver_never_answers_5xx_and_emits_only_for_authenticated_calls(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_store(store_url)
    record_job_created(engine, "run-1", 1, "Appointments__s", "555", None)
    events: list = []
    receiver = ReceiverSettings(channel_token=TOKEN, bookings_secret=SECRET, callback_secret=CB, coalesce_seconds=3600, state_store_url=store_url)
    app = create_receiver(receiver, emit=lambda event, resource, payload: events.append((event, payload)))
    coalescer = app.state.coalescer
    accepted: set[str] = set()
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://receiver")

    @IO
    @given(route=st.sampled_from(sorted(ROUTES)), authenticated=st.booleans(), body=bodies)
    @example(route="crm", authenticated=True, body=b'{"token": "chan-tok-123", "module": []}')
    @example(route="crm", authenticated=True, body=b'{"token": "chan-tok-123", "module": "Appointments__s", "operation": {}}')
    @example(route="crm", authenticated=False, body=b'{"token": "\\ud800"}')
    @example(route="bookings", authenticated=True, body=b'{"booking_id": "\\ud800"}')
    @example(route="callback", authenticated=True, body=b'{"id": "555", "state": "COMPLETED", "result": [1]}')
    @example(route="callback", authenticated=True, body=b'{"id": "555", "state": "COMPLETED", "result": {"count": {"a": 1}}}')
    @example(route="callback", authenticated=True, body=b'{"id": "555", "state": "FAILURE", "result": {"error_message": "x"}}')
    @example(route="crm", authenticated=True, body=b'{"module": "Appointments__s", "operation": "update", "ids": ["1", 2]}')
    @example(route="bookings", authenticated=True, body=b'{"booking_id": "#AN-1", "status": "CANCEL"}')
    @example(route="callback", authenticated=True, body=b'{"data": [{"id": "555", "state": "COMPLETED", "result": {"count": 3, "more_records": false}}]}')
    def call(route, authenticated, body):
        events.clear()
        coalescer.crm.clear()  # what earlier examples queued (per module), and the booking ids
        coalescer.bookings.clear()
        params, headers = {}, {}
        if route == "crm" and authenticated:  # the CRM channel token travels in the body
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                body = json.dumps({**parsed, "token": TOKEN}).encode()
        elif route == "bookings":
            headers["X-Zoho-Bookings-Secret"] = SECRET if authenticated else "nope"
        elif route == "callback" and authenticated:
            params["secret"] = CB
        response = loop.run_until_complete(client.post(ROUTES[route], content=body, params=params, headers=headers))
        note(f"{response.status_code} {response.text}")
        assert response.status_code < 500
        emitted = bool(events) or any(coalescer.pending.values())
        if response.status_code >= 300 or not authenticated:
            assert not emitted, f"{response.status_code} but emitted {events}"
        if response.status_code < 300:
            assert authenticated and emitted
            accepted.add(route)
        for _, payload in events:  # what reaches Prefect must serialise
            json.dumps(payload).encode("utf-8")

    try:
        call()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
        engine.dispose()
    assert accepted == set(ROUTES), "every route must have accepted a valid call, or the test proves nothing"
