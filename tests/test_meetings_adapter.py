"""The CRM Meetings adapter (``sync.modules.Meetings``, module ``Events``; issue 15), table-driven.

What is covered, in the order of the file:

* :meth:`Meetings.row` (a records-API record -> a ``crm_events`` row), :attr:`Meetings.fields`,
  the constructor's checks and :func:`sync.modules.crm_module`;
* :meth:`Meetings.to_crm` for each (Bookings, Meeting) pair, with a status field and in the
  three *time-only* modes (``status_field=None``: cancel policy ``keep`` / ``prefix`` / ``delete``);
* :meth:`Meetings.payload` / :meth:`~Meetings.refusal` / :meth:`~Meetings.deletes`;
* :func:`sync.engine.plan` end to end with ``to_crm=Meetings(...).to_crm`` and ``scope="Events"``;
* :meth:`~Meetings.state_after`, :meth:`~Meetings.row_after`, :meth:`~Meetings.shows`, :meth:`~Meetings.canon`;
* the SQL side on a temporary SQLite store: :func:`sync.links.changed_links` over ``crm_events`` /
  ``sync_base_events`` with the adapter's ``status_sql`` / ``where_sql``, ``write_base`` and ``mark_deleted``;
* hypothesis: with a status field, a planned step makes the link agree (or a conflict says why) and
  planning again from there sends nothing.

To-CRM outcomes are rendered like ``tests/test_engine.py``'s: ``"crm:reschedule@T1 +45m"`` (a
reschedule to T1 whose new end is 45 minutes later), ``"crm:cancel note='Cancelled: Demo'"``,
``"| kept"`` (no action, a ``kept`` conflict), ``""`` (nothing).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from sync import bookings as bookings_side
from sync.engine import Action, Canon, Kind, Link, Policy, Side, SideState, agree, plan, plan_link
from sync.links import InvalidLink, changed_links, mark_deleted, upsert_bookings, upsert_crm_records, write_base
from sync.modules import CANON_AFTER, MEETING_STATUSES, Appointments, InvalidRecord, Meetings, crm_module
from sync.store import open_store
from sync.tables import CrmEvent, SyncBase, SyncBaseEvent
from zoho.timefmt import to_bookings

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=2)
T2 = T0 + timedelta(days=1)
BEFORE = T0 - timedelta(days=7)
AFTER = T0 + timedelta(days=7)
LABELS = {T0: "T0", T1: "T1", T2: "T2"}
S, X, C, N = Canon.SCHEDULED, Canon.CANCELLED, Canon.COMPLETED, Canon.NO_SHOW
M1 = T0 - timedelta(days=10)  # a Modified_Time
M2 = T0 - timedelta(days=2)  # Zoho's Modified_Time after our write
KOLKATA = timezone(timedelta(hours=5, minutes=30))
LA = timezone(timedelta(hours=-7))

STATUS = Meetings()  # status field Booking_Status, the default words
KEEP = Meetings(status_field=None)
PREFIX = Meetings(status_field=None, cancel_policy="prefix")
DELETE = Meetings(status_field=None, cancel_policy="delete")
CUSTOM_WORDS = (("scheduled", "Booked"), ("cancelled", "Called off"), ("completed", "Done"), ("no_show", "Absent"))
CUSTOM = Meetings("Booking_Ref", status_field="Status_Of_Booking", status_words=CUSTOM_WORDS)
MODULES = {"status": STATUS, "keep": KEEP, "prefix": PREFIX, "delete": DELETE, "custom": CUSTOM}


def side(start: datetime = T0, status: Canon = S, modified: datetime | None = None) -> SideState:
    return SideState(start, status, modified)


def link(crm: SideState, bookings: SideState, *, base: tuple[SideState, SideState] | None = (side(), side()), end: datetime | None = None,
         bookings_end: datetime | None = None, title: str | None = None, tz: str = "UTC", booking_id: str = "b1",
         base_at: datetime | None = None) -> Link:
    """A link; ``base`` is ``(crm, bookings)`` (default both scheduled at T0), None for a new link."""
    base_crm, base_bk = base or (None, None)
    return Link(booking_id, "c-" + booking_id, tz, crm, bookings, end=end, base_crm=base_crm, base_bookings=base_bk, base_at=base_at,
                bookings_end=bookings_end, title=title)


def act(a: Action) -> str:
    text = f"{a.target.value}:{a.kind.value}"
    if a.start is not None:
        text += "@" + LABELS.get(a.start, a.start.isoformat())
    if a.end is not None:
        text += f" +{int((a.end - a.start).total_seconds() // 60)}m"
    return text + (f" note={a.note!r}" if a.note is not None else "")


def render(actions, conflict) -> str:
    text = ", ".join(act(a) for a in actions)
    conflicts = [conflict] if conflict is not None and not isinstance(conflict, list) else (conflict or [])
    if conflicts:
        text += " | " + ", ".join(c.kind for c in conflicts)
    return text.strip()


def crm_action(kind: Kind, start: datetime | None = None, end: datetime | None = None, note: str | None = None, booking_id: str = "b1") -> Action:
    return Action(booking_id, "c-" + booking_id, Side.CRM, kind, "UTC", start=start, note=note, end=end)


def record(**fields) -> dict:
    """A records-API Meeting; ``fields`` replace or add (a value of ``...`` drops the field)."""
    base = {"id": "5545974000000001", "Event_Title": "Demo call", "Start_DateTime": "2026-06-01T14:30:00+05:30",
            "End_DateTime": "2026-06-01T15:30:00+05:30", "Modified_Time": "2026-05-22T09:00:00Z", "Booking_Status": "Scheduled",
            "Booking_Id": "#AN-00001"}
    out = {**base, **fields}
    return {k: v for k, v in out.items() if v is not ...}


# =========================================================================== row()

ROW_TIMES = [
    # id, Start_DateTime as CRM sends it, the instant
    ("kolkata", "2026-06-01T14:30:00+05:30", T0),
    ("z", "2026-06-01T09:00:00Z", T0),
    ("utc-offset", "2026-06-01T09:00:00+00:00", T0),
    ("los-angeles", "2026-06-01T02:00:00-07:00", T0),
    ("chatham", "2026-06-01T21:45:00+12:45", T0),
    ("previous-day-west", "2026-05-31T23:00:00-10:00", T0),
    ("next-day-east", "2026-06-02T01:00:00+16:00", T0),
    ("fraction", "2026-06-01T09:00:00.500+00:00", T0 + timedelta(milliseconds=500)),
]


@pytest.mark.parametrize(("value", "instant"), [r[1:] for r in ROW_TIMES], ids=[r[0] for r in ROW_TIMES])
def test_row_times_become_aware_utc(value, instant):
    row = STATUS.row(record(Start_DateTime=value, End_DateTime=value, Modified_Time=value))
    for column in ("start_time", "end_time", "modified_time"):
        assert row[column] == instant and row[column].utcoffset() == timedelta(0), column


def test_row_of_a_full_record():
    assert STATUS.row(record(id=5545974000000001)) == {
        "id": "5545974000000001", "booking_id": "#AN-00001", "title": "Demo call", "start_time": T0, "end_time": T0 + timedelta(hours=1),
        "status": "Scheduled", "modified_time": datetime(2026, 5, 22, 9, 0, tzinfo=UTC), "job_id": None, "deleted_at": None,
    }


ROW_TABLE = [
    # id, module, record changes, expected row columns
    ("status-cancelled", STATUS, {"Booking_Status": "Cancelled"}, {"status": "Cancelled"}),
    ("status-no-show", STATUS, {"Booking_Status": "No Show"}, {"status": "No Show"}),
    ("status-empty", STATUS, {"Booking_Status": ""}, {"status": None}),
    ("status-null", STATUS, {"Booking_Status": None}, {"status": None}),
    ("status-missing", STATUS, {"Booking_Status": ...}, {"status": None}),
    ("time-only-ignores-status", KEEP, {"Booking_Status": "Cancelled"}, {"status": None}),
    ("time-only-ignores-unknown-status", PREFIX, {"Booking_Status": "Postponed"}, {"status": None}),
    ("custom-field-and-word", CUSTOM, {"Status_Of_Booking": "Called off", "Booking_Status": "Rubbish", "Booking_Ref": "#AN-9"},
     {"status": "Called off", "booking_id": "#AN-9"}),
    ("custom-booking-field-only", CUSTOM, {}, {"booking_id": None, "status": None}),
    ("title-kept-as-is", STATUS, {"Event_Title": "Cancelled: Demo call"}, {"title": "Cancelled: Demo call"}),
    ("title-empty", STATUS, {"Event_Title": ""}, {"title": None}),
    ("title-missing", STATUS, {"Event_Title": ...}, {"title": None}),
    ("numeric-booking-id", STATUS, {"Booking_Id": 42}, {"booking_id": "42"}),
    ("empty-booking-id", STATUS, {"Booking_Id": ""}, {"booking_id": None}),
    ("no-end", STATUS, {"End_DateTime": None}, {"end_time": None}),
    ("empty-start", STATUS, {"Start_DateTime": ""}, {"start_time": None}),
    ("no-modified", STATUS, {"Modified_Time": ...}, {"modified_time": None}),
]


@pytest.mark.parametrize(("module", "changes", "expected"), [r[1:] for r in ROW_TABLE], ids=[r[0] for r in ROW_TABLE])
def test_row_columns(module, changes, expected):
    row = module.row(record(**changes))
    assert {k: row[k] for k in expected} == expected
    assert row["deleted_at"] is None and row["job_id"] is None and row["id"] == "5545974000000001"
    assert set(row) == {"id", "booking_id", "title", "start_time", "end_time", "status", "modified_time", "job_id", "deleted_at"}


INVALID_TABLE = [
    # id, module, record changes, the field named, text in the message
    ("unknown-status-word", STATUS, {"Booking_Status": "Postponed"}, "Booking_Status", "not one of the configured meeting statuses"),
    ("status-word-case", STATUS, {"Booking_Status": "cancelled"}, "Booking_Status", "Scheduled, Cancelled, Completed, No Show"),
    ("default-word-with-custom-words", CUSTOM, {"Status_Of_Booking": "Cancelled"}, "Status_Of_Booking", "Booked, Called off, Done, Absent"),
    ("status-not-text", STATUS, {"Booking_Status": 3}, "Booking_Status", "'3'"),
    ("not-a-date", STATUS, {"Start_DateTime": "not-a-date"}, "Start_DateTime", "not an ISO 8601 date-time"),
    ("no-offset", STATUS, {"End_DateTime": "2026-06-01T09:00:00"}, "End_DateTime", "without an offset"),
    ("month-13", STATUS, {"Start_DateTime": "2026-13-01T09:00:00+00:00"}, "Start_DateTime", "ISO 8601"),
    ("time-not-text", STATUS, {"Modified_Time": 1780304400}, "Modified_Time", "is not text (int)"),
    ("missing-id", STATUS, {"id": ...}, "id", "no id"),
    ("empty-id", KEEP, {"id": ""}, "id", "no id"),
]


@pytest.mark.parametrize(("module", "changes", "field", "text"), [r[1:] for r in INVALID_TABLE], ids=[r[0] for r in INVALID_TABLE])
def test_an_unreadable_record_raises_invalid_record_naming_the_field(module, changes, field, text):
    with pytest.raises(InvalidRecord) as caught:
        module.row(record(**changes))
    error = caught.value
    assert isinstance(error, ValueError) and error.field == field and field in str(error) and text in str(error)
    assert error.booking_id == record(**changes).get(module.booking_field)
    assert error.crm_id == (None if field == "id" else "5545974000000001")
    assert ("(no id)" in str(error)) is (field == "id")


def test_a_list_status_value_is_an_invalid_record():
    """A status field set up as a multi-select picklist comes as a list: ``status not in self.statuses``
    raises ``TypeError: unhashable type: 'list'``, which ``tasks.sync.read_crm_changes`` (catching
    ``InvalidRecord``) does not catch, so one such record stops the whole read."""
    with pytest.raises(InvalidRecord, match="Booking_Status"):
        STATUS.row(record(Booking_Status=["Cancelled"]))


# =========================================================================== fields, options

FIELDS_TABLE = [
    ("status-field", STATUS, ["Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time", "Booking_Status", "Booking_Id"]),
    ("time-only", KEEP, ["Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time", "Booking_Id"]),
    ("custom", CUSTOM, ["Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time", "Status_Of_Booking", "Booking_Ref"]),
    ("time-only-custom-booking-field", Meetings("Booking_Ref", status_field=None), ["Event_Title", "Start_DateTime", "End_DateTime", "Modified_Time", "Booking_Ref"]),
]


@pytest.mark.parametrize(("module", "fields"), [r[1:] for r in FIELDS_TABLE], ids=[r[0] for r in FIELDS_TABLE])
def test_fields(module, fields):
    assert module.fields == fields


def test_statuses_and_words():
    assert STATUS.statuses == {"Scheduled": S, "Cancelled": X, "Completed": C, "No Show": N}
    assert CUSTOM.statuses == {"Booked": S, "Called off": X, "Done": C, "Absent": N}
    assert KEEP.statuses == {} and PREFIX.statuses == {}
    assert [STATUS.word(c) for c in Canon] == ["Scheduled", "Cancelled", "Completed", "No Show"] == [MEETING_STATUSES[c.value] for c in Canon]
    assert CUSTOM.word(N) == "Absent"


def test_module_constants():
    assert (STATUS.api_name, STATUS.table, STATUS.base_table, STATUS.scope, STATUS.batch_size, STATUS.label) == (
        "Events", CrmEvent, SyncBaseEvent, "Events", 100, "meeting")


def test_bulk_mapping_reads_the_status_field_only_when_kept():
    assert CUSTOM.bulk_mapping().columns["Status_Of_Booking"][0] == "status" and "Booking_Ref" in CUSTOM.bulk_mapping().columns
    assert "Booking_Status" not in KEEP.bulk_mapping().columns and KEEP.bulk_mapping().module == "Events"


def test_crm_module_builds_meetings_with_its_options():
    module = crm_module("Events", "Booking_Ref", status_field=None, cancel_policy="prefix", cancel_prefix="[X] ", delete_cancels=True)
    assert module == Meetings("Booking_Ref", status_field=None, cancel_policy="prefix", cancel_prefix="[X] ", delete_cancels=True)
    assert crm_module("Events") == STATUS
    assert isinstance(crm_module("Appointments__s", "Booking_Ref", status_field=None), Appointments)  # options ignored
    with pytest.raises(NotImplementedError, match="Appointments__s or Events"):
        crm_module("Leads")


BAD_OPTIONS = [
    ("unknown-policy", dict(cancel_policy="archive"), "keep, prefix or delete"),
    ("missing-word", dict(status_words=(("scheduled", "A"), ("cancelled", "B"), ("completed", "C"))), "one distinct word"),
    ("duplicate-word", dict(status_words=(("scheduled", "A"), ("cancelled", "A"), ("completed", "C"), ("no_show", "D"))), "one distinct word"),
    ("unknown-canonical", dict(status_words=(*MEETING_STATUSES.items(), ("overdue", "Overdue"))), "one distinct word"),
]


@pytest.mark.parametrize("options,text", [r[1:] for r in BAD_OPTIONS], ids=[r[0] for r in BAD_OPTIONS])
def test_options_that_do_not_fit_are_refused(options, text):
    with pytest.raises(ValueError, match=text):
        Meetings(**options)
    with pytest.raises(ValueError, match=text):
        crm_module("Events", **options)


# =========================================================================== to_crm

H = timedelta(hours=1)
TO_CRM_TABLE = [
    # id, module, Bookings now, Meeting now, bookings_end, Meeting end, title, outcome
    # --- a move: the start, and the end from the booking's length, else the Meeting's own
    ("moved", STATUS, side(T1), side(T0), T1 + 0.75 * H, T0 + H, None, "crm:reschedule@T1 +45m"),
    ("moved-no-booking-end", STATUS, side(T1), side(T0), None, T0 + H, None, "crm:reschedule@T1 +60m"),
    ("moved-booking-end-not-after-start", STATUS, side(T1), side(T0), T1, T0 + 1.5 * H, None, "crm:reschedule@T1 +90m"),
    ("moved-meeting-end-not-after-start", STATUS, side(T1), side(T0), None, T0, None, "crm:reschedule@T1"),
    ("moved-no-ends", STATUS, side(T1), side(T0), None, None, None, "crm:reschedule@T1"),
    ("moved-earlier", STATUS, side(T0), side(T2), T0 + H, None, None, "crm:reschedule@T0 +60m"),
    ("moved-keep", KEEP, side(T1), side(T0), T1 + 0.75 * H, None, "Cancelled: Demo", "crm:reschedule@T1 +45m"),
    ("moved-prefix-title-not-prefixed", PREFIX, side(T1), side(T0), T1 + H, None, "Demo", "crm:reschedule@T1 +60m"),
    ("moved-delete", DELETE, side(T1), side(T0), None, T0 + H, None, "crm:reschedule@T1 +60m"),
    # --- status changes: no "finished takes no change", no "complete only after the end"
    ("cancelled", STATUS, side(T0, X), side(T0), None, None, None, "crm:cancel"),
    ("completed-before-the-end", STATUS, side(T0, C), side(T0), None, T0 + H, None, "crm:complete"),
    ("no-show", STATUS, side(T0, N), side(T0), None, None, None, "crm:no_show"),
    ("moved-and-cancelled", STATUS, side(T1, X), side(T0), None, None, None, "crm:cancel"),
    ("completed-meeting-cancelled", STATUS, side(T0, X), side(T0, C), None, None, None, "crm:cancel"),
    ("cancelled-meeting-completed", STATUS, side(T0, C), side(T0, X), None, None, None, "crm:complete"),
    ("no-show-meeting-cancelled", STATUS, side(T0, X), side(T0, N), None, None, None, "crm:cancel"),
    ("cancelled-meeting-no-show", STATUS, side(T0, N), side(T0, X), None, None, None, "crm:no_show"),
    ("custom-words", CUSTOM, side(T0, N), side(T0), None, None, None, "crm:no_show"),
    # --- a finished Meeting of a scheduled booking: a reschedule that writes Scheduled (un-cancel)
    ("uncancel-same-start", STATUS, side(T0), side(T0, X), T0 + H, None, None, "crm:reschedule@T0 +60m"),
    ("uncomplete-moved", STATUS, side(T1), side(T0, C), None, T0 + 0.5 * H, None, "crm:reschedule@T1 +30m"),
    ("un-no-show", STATUS, side(T0), side(T0, N), None, None, None, "crm:reschedule@T0"),
    # --- nothing to do
    ("same", STATUS, side(T0), side(T0), T0 + H, T0 + H, None, ""),
    ("both-cancelled", STATUS, side(T0, X), side(T1, X), None, None, None, ""),
    ("both-completed", STATUS, side(T0, C), side(T0, C), None, None, None, ""),
    ("time-only-same", KEEP, side(T0), side(T0), None, None, None, ""),
    # --- time only, cancel policy keep: nothing written, reported as kept
    ("keep-cancel", KEEP, side(T0, X), side(T0), None, None, "Demo", "| kept"),
    ("keep-complete", KEEP, side(T0, C), side(T0), None, None, "Demo", "| kept"),
    ("keep-no-show", KEEP, side(T0, N), side(T0), None, None, "Demo", "| kept"),
    # --- time only, prefix: the title carries the cancellation
    ("prefix-cancel", PREFIX, side(T0, X), side(T0), None, None, "Demo", "crm:cancel note='Cancelled: Demo'"),
    ("prefix-cancel-moved", PREFIX, side(T1, X), side(T0), None, None, "Demo", "crm:cancel note='Cancelled: Demo'"),
    ("prefix-cancel-no-title", PREFIX, side(T0, X), side(T0), None, None, None, "crm:cancel note='Cancelled: '"),
    ("prefix-custom", Meetings(status_field=None, cancel_policy="prefix", cancel_prefix="[X] "), side(T0, X), side(T0), None, None, "Demo",
     "crm:cancel note='[X] Demo'"),
    ("prefix-already-cancelled", PREFIX, side(T0, X), side(T0, X), None, None, "Cancelled: Demo", ""),
    ("prefix-complete", PREFIX, side(T0, C), side(T0), None, None, "Demo", "| kept"),
    ("prefix-no-show", PREFIX, side(T0, N), side(T0), None, None, "Demo", "| kept"),
    ("prefix-uncancel", PREFIX, side(T1), side(T0, X), T1 + 0.75 * H, None, "Cancelled: Demo", "crm:reschedule@T1 +45m note='Demo'"),
    ("prefix-uncancel-same-start", PREFIX, side(T0), side(T0, X), None, T0 + H, "Cancelled: Demo", "crm:reschedule@T0 +60m note='Demo'"),
    # --- time only, delete
    ("delete-cancel", DELETE, side(T0, X), side(T0), None, None, "Demo", "crm:cancel"),
    ("delete-complete", DELETE, side(T0, C), side(T0), None, None, "Demo", "| kept"),
    ("delete-no-show", DELETE, side(T0, N), side(T0), None, None, "Demo", "| kept"),
]


@pytest.mark.parametrize(("module", "bk", "crm", "bk_end", "end", "title", "expected"), [r[1:] for r in TO_CRM_TABLE], ids=[r[0] for r in TO_CRM_TABLE])
@pytest.mark.parametrize("now", [BEFORE, AFTER], ids=["before", "after"])
def test_to_crm(module, bk, crm, bk_end, end, title, expected, now):
    """Meetings have no rules: the outcome is the same before the start and after the end."""
    actions, conflict = module.to_crm(link(crm, bk, end=end, bookings_end=bk_end, title=title), now)
    assert render(actions, conflict) == expected
    for a in actions:
        assert (a.target, a.booking_id, a.crm_id, a.time_zone, a.since, a.scope) == (Side.CRM, "b1", "c-b1", "UTC", "new", "")
        assert module.refusal(a) is None


def test_to_crm_carries_the_link_and_its_base():
    base_at = T0 - timedelta(days=3)
    (action,), conflict = STATUS.to_crm(link(side(T0), side(T1.astimezone(KOLKATA)), tz="Asia/Kolkata", base_at=base_at.astimezone(LA),
                                             bookings_end=(T1 + H).astimezone(LA)), BEFORE)
    assert conflict is None
    assert action == Action("b1", "c-b1", Side.CRM, Kind.RESCHEDULE, "Asia/Kolkata", start=T1, since=base_at.isoformat(), end=T1 + H)
    assert action.start.tzinfo is UTC and action.end.tzinfo is UTC


KEPT_TABLE = [
    ("keep-cancel", KEEP, X, ["cancelled", "meeting_status_field empty", "meeting_cancel_policy is keep", "kept as it is"]),
    ("keep-complete", KEEP, C, ["completed", "meeting_status_field empty", "kept as it is"]),
    ("prefix-no-show", PREFIX, N, ["no_show", "meeting_status_field empty", "kept as it is"]),
]


@pytest.mark.parametrize(("module", "status", "words"), [r[1:] for r in KEPT_TABLE], ids=[r[0] for r in KEPT_TABLE])
def test_a_kept_conflict_says_why(module, status, words):
    actions, conflict = module.to_crm(link(side(), side(T0, status)), AFTER)
    assert actions == [] and (conflict.booking_id, conflict.crm_id, conflict.kind, conflict.winner) == ("b1", "c-b1", "kept", None)
    assert all(w in conflict.reason for w in words), conflict.reason
    assert ("cancel_policy" in conflict.reason) is (status is X)


# =========================================================================== payload, refusal, deletes

E = T1 + 0.75 * H
PAYLOAD_TABLE = [
    # id, module, action, the PUT Events record
    ("status-reschedule", STATUS, crm_action(Kind.RESCHEDULE, T1.astimezone(KOLKATA), E),
     {"id": "c-b1", "Start_DateTime": T1, "End_DateTime": E, "Booking_Status": "Scheduled"}),
    ("status-reschedule-no-end", STATUS, crm_action(Kind.RESCHEDULE, T1), {"id": "c-b1", "Start_DateTime": T1, "Booking_Status": "Scheduled"}),
    ("status-cancel", STATUS, crm_action(Kind.CANCEL), {"id": "c-b1", "Booking_Status": "Cancelled"}),
    ("status-complete", STATUS, crm_action(Kind.COMPLETE), {"id": "c-b1", "Booking_Status": "Completed"}),
    ("status-no-show", STATUS, crm_action(Kind.NO_SHOW), {"id": "c-b1", "Booking_Status": "No Show"}),
    ("custom-reschedule", CUSTOM, crm_action(Kind.RESCHEDULE, T1, E), {"id": "c-b1", "Start_DateTime": T1, "End_DateTime": E, "Status_Of_Booking": "Booked"}),
    ("custom-cancel", CUSTOM, crm_action(Kind.CANCEL), {"id": "c-b1", "Status_Of_Booking": "Called off"}),
    ("custom-complete", CUSTOM, crm_action(Kind.COMPLETE), {"id": "c-b1", "Status_Of_Booking": "Done"}),
    ("custom-no-show", CUSTOM, crm_action(Kind.NO_SHOW), {"id": "c-b1", "Status_Of_Booking": "Absent"}),
    ("keep-reschedule", KEEP, crm_action(Kind.RESCHEDULE, T1, E), {"id": "c-b1", "Start_DateTime": T1, "End_DateTime": E}),
    ("delete-reschedule", DELETE, crm_action(Kind.RESCHEDULE, T1), {"id": "c-b1", "Start_DateTime": T1}),
    ("prefix-cancel", PREFIX, crm_action(Kind.CANCEL, note="Cancelled: Demo"), {"id": "c-b1", "Event_Title": "Cancelled: Demo"}),
    ("prefix-reschedule-unprefix", PREFIX, crm_action(Kind.RESCHEDULE, T1, E, note="Demo"),
     {"id": "c-b1", "Start_DateTime": T1, "End_DateTime": E, "Event_Title": "Demo"}),
    ("prefix-reschedule", PREFIX, crm_action(Kind.RESCHEDULE, T1, E), {"id": "c-b1", "Start_DateTime": T1, "End_DateTime": E}),
]


@pytest.mark.parametrize(("module", "action", "expected"), [r[1:] for r in PAYLOAD_TABLE], ids=[r[0] for r in PAYLOAD_TABLE])
def test_payload(module, action, expected):
    payload = module.payload(action)
    assert payload == expected
    assert all(v.tzinfo is not None for v in payload.values() if isinstance(v, datetime))
    assert module.refusal(action) is None and not module.deletes(action)


REFUSED_TABLE = [
    # id, module, kind, what refusal says (None: sent as a delete), text of payload's ValueError
    ("delete-cancel", DELETE, Kind.CANCEL, None, "DELETE /crm/{v}/Events"),
    ("keep-complete", KEEP, Kind.COMPLETE, "NOT_SUPPORTED", "a complete cannot be written"),
    ("keep-no-show", KEEP, Kind.NO_SHOW, "NOT_SUPPORTED", "a no_show cannot be written"),
    ("prefix-complete", PREFIX, Kind.COMPLETE, "NOT_SUPPORTED", "no status field"),
    ("delete-no-show", DELETE, Kind.NO_SHOW, "NOT_SUPPORTED", "no status field"),
]


@pytest.mark.parametrize(("module", "kind", "code", "text"), [r[1:] for r in REFUSED_TABLE], ids=[r[0] for r in REFUSED_TABLE])
def test_payload_refuses_deletes_and_refused_actions(module, kind, code, text):
    action = crm_action(kind)
    with pytest.raises(ValueError, match=text.replace("{", r"\{").replace("}", r"\}")):
        module.payload(action)
    reason = module.refusal(action)
    assert (reason[0] if reason else None) == code
    assert module.deletes(action) is (code is None)


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_only_a_time_only_delete_policy_cancel_deletes(name, kind):
    assert MODULES[name].deletes(crm_action(kind, T1 if kind is Kind.RESCHEDULE else None)) is (name == "delete" and kind is Kind.CANCEL)


# =========================================================================== plan() end to end

def meetings_plan(links, module: Meetings = STATUS, now: datetime = BEFORE, policy: Policy = Policy.LATEST_WINS, source: Side = Side.BOOKINGS):
    return plan(links, policy, now, source, to_crm=module.to_crm, scope=module.scope)


def test_a_meeting_moved_in_crm_reschedules_the_booking_in_its_time_zone():
    result = meetings_plan([link(side(T1), side(), tz="Asia/Kolkata")])
    (action,) = result.actions
    assert (action.target, action.kind, action.time_zone, action.start, action.scope) == (Side.BOOKINGS, Kind.RESCHEDULE, "Asia/Kolkata", T1, "Events")
    assert to_bookings(action.start, action.time_zone) == "01-Jun-2026 16:30:00"
    assert action.key == f"Events|b1|bookings|reschedule|{T1.isoformat()}|new"
    assert result.conflicts == [] and bookings_side.refusal(action) is None


CRM_STATUS_TABLE = [
    # id, Meeting status now, now, outcome
    ("cancelled", X, BEFORE, "bookings:cancel"),
    ("cancelled-after", X, AFTER, "bookings:cancel"),
    ("no-show-after-start", N, T0 + timedelta(minutes=5), "bookings:no_show"),
    ("no-show-at-start", N, T0, "bookings:no_show"),
    ("no-show-before-start", N, T0 - timedelta(minutes=1), "| deferred"),
    ("completed-after-start", C, AFTER, "bookings:complete"),
    ("completed-before-start", C, BEFORE, "| deferred"),
]


@pytest.mark.parametrize(("crm_status", "now", "expected"), [r[1:] for r in CRM_STATUS_TABLE], ids=[r[0] for r in CRM_STATUS_TABLE])
def test_a_meeting_status_reaches_bookings(crm_status, now, expected):
    result = meetings_plan([link(side(T0, crm_status), side())], now=now)
    assert render(result.actions, result.conflicts) == expected
    assert all(a.key.startswith("Events|b1|bookings|") for a in result.actions)


BOOKINGS_CHANGE_TABLE = [
    # id, Bookings now, Meeting now, now, Meetings outcome, Appointments__s outcome
    ("moved", side(T1), side(), BEFORE, "crm:reschedule@T1 +60m", "crm:reschedule@T1"),
    ("cancelled", side(T0, X), side(), BEFORE, "crm:cancel", "crm:cancel"),
    ("completed-before-the-end", side(T0, C), side(), T0 + timedelta(minutes=30), "crm:complete", "| deferred"),
    ("no-show", side(T0, N), side(), AFTER, "crm:no_show", "crm:cancel note='No-show (Zoho Bookings)'"),
    ("moved-crm-completed", side(T1), side(T0, C), AFTER, "crm:reschedule@T1 +60m | both_changed", "| both_changed, rule"),
]


@pytest.mark.parametrize(("bk", "crm", "now", "events", "appointments"), [r[1:] for r in BOOKINGS_CHANGE_TABLE], ids=[r[0] for r in BOOKINGS_CHANGE_TABLE])
def test_a_booking_change_reaches_the_meeting(bk, crm, now, events, appointments):
    """The same link planned for Meetings and for ``Appointments__s``: Meetings take every change."""
    one = link(crm, bk, end=T0 + H, bookings_end=bk.start + H)
    meetings = meetings_plan([one], now=now, policy=Policy.BOOKINGS_WINS)
    appts = plan([one], Policy.BOOKINGS_WINS, now)
    assert render(meetings.actions, meetings.conflicts) == events
    assert render(appts.actions, appts.conflicts) == appointments


KEY_LINKS = [
    ("crm-moved", link(side(T1), side(), base_at=M1)),
    ("crm-cancelled", link(side(T0, X), side())),
    ("bookings-moved", link(side(), side(T1), base_at=M1)),
    ("bookings-cancelled", link(side(), side(T0, X))),
]


@pytest.mark.parametrize("one", [r[1] for r in KEY_LINKS], ids=[r[0] for r in KEY_LINKS])
def test_keys_carry_the_events_scope(one):
    (events,) = meetings_plan([one]).actions
    (appointments,) = plan([one], Policy.LATEST_WINS, BEFORE).actions
    assert events.scope == "Events" and appointments.scope == ""
    assert events.key == "Events|" + appointments.key and events.key != appointments.key
    assert not appointments.key.startswith("Events|")
    assert (events.target, events.kind, events.start, events.since) == (appointments.target, appointments.kind, appointments.start, appointments.since)


def test_a_kept_link_lands_in_plan_kept():
    kept = link(side(), side(T0, X), booking_id="b1")
    moved = link(side(), side(T1), booking_id="b2")
    completed = link(side(), side(T0, C), booking_id="b3")
    result = meetings_plan([kept, moved, completed], module=KEEP, now=AFTER)
    assert result.kept == [kept, completed]
    assert [(c.booking_id, c.kind) for c in result.conflicts] == [("b1", "kept"), ("b3", "kept")]
    assert [act(a) for a in result.actions] == ["crm:reschedule@T1"] and result.actions[0].booking_id == "b2"
    assert result.counts() == {"crm:reschedule": 1, "conflict:kept": 2, "agreed": 0, "unchanged": 0}
    assert meetings_plan([kept], module=PREFIX).kept == []  # prefix: written, not kept


def test_a_no_show_agrees_with_a_cancelled_meeting():
    """The engine's equivalence: a Meeting ``Cancelled`` and a booking ``NO_SHOW`` say the same."""
    result = meetings_plan([link(side(T0, X), side(T0, N))], now=AFTER)
    assert result.actions == [] and result.conflicts == [] and len(result.agreed) == 1


# =========================================================================== state_after, row_after, shows, canon

STATE_TABLE = [
    # id, module, action, the Meeting side after
    ("reschedule", STATUS, crm_action(Kind.RESCHEDULE, T1), SideState(T1, S)),
    ("uncancel", STATUS, crm_action(Kind.RESCHEDULE, T0), SideState(T0, S)),
    ("cancel", STATUS, crm_action(Kind.CANCEL), SideState(T0, X)),
    ("complete", STATUS, crm_action(Kind.COMPLETE), SideState(T0, C)),
    ("no-show", STATUS, crm_action(Kind.NO_SHOW), SideState(T0, N)),
    ("prefix-cancel", PREFIX, crm_action(Kind.CANCEL, note="Cancelled: Demo"), SideState(T0, X)),
    ("delete-cancel", DELETE, crm_action(Kind.CANCEL), SideState(T0, X)),
    ("keep-reschedule", KEEP, crm_action(Kind.RESCHEDULE, T1.astimezone(LA)), SideState(T1, S)),
]


@pytest.mark.parametrize(("module", "action", "expected"), [r[1:] for r in STATE_TABLE], ids=[r[0] for r in STATE_TABLE])
@pytest.mark.parametrize("before", [SideState(T0, S, M1), SideState(T0, X, M1)], ids=["from-scheduled", "from-cancelled"])
def test_state_after(module, action, expected, before):
    after = module.state_after(action, before)
    assert after.same(expected) and after.modified is None


def stored(start: datetime = T0, end: datetime | None = T0 + timedelta(minutes=30), status: str | None = "Scheduled", title: str | None = "Demo",
           deleted_at: datetime | None = None, modified: datetime | None = M1, booking_id: str = "b1") -> dict:
    return {"id": "c-" + booking_id, "booking_id": booking_id, "title": title, "start_time": start, "end_time": end, "status": status,
            "modified_time": modified, "job_id": None, "loaded_at": None, "deleted_at": deleted_at}


ROW_AFTER_TABLE = [
    # id, module, stored row, action, Zoho's new Modified_Time, the columns set
    ("reschedule", STATUS, stored(), crm_action(Kind.RESCHEDULE, T1, E), M2,
     {"modified_time": M2, "start_time": T1, "end_time": E, "status": "Scheduled"}),
    ("reschedule-end-moved-by-old-length", STATUS, stored(), crm_action(Kind.RESCHEDULE, T1), M2,
     {"modified_time": M2, "start_time": T1, "end_time": T1 + timedelta(minutes=30), "status": "Scheduled"}),
    ("reschedule-no-end-known", STATUS, stored(end=None), crm_action(Kind.RESCHEDULE, T1), None,
     {"modified_time": M1, "start_time": T1, "end_time": None, "status": "Scheduled"}),
    ("uncancel", STATUS, stored(status="Cancelled"), crm_action(Kind.RESCHEDULE, T0, T0 + H), M2,
     {"modified_time": M2, "start_time": T0, "end_time": T0 + H, "status": "Scheduled"}),
    ("cancel", STATUS, stored(), crm_action(Kind.CANCEL), M2, {"modified_time": M2, "status": "Cancelled"}),
    ("complete-keeps-modified", STATUS, stored(), crm_action(Kind.COMPLETE), None, {"modified_time": M1, "status": "Completed"}),
    ("no-show", STATUS, stored(), crm_action(Kind.NO_SHOW), M2, {"modified_time": M2, "status": "No Show"}),
    ("custom-no-show", CUSTOM, stored(), crm_action(Kind.NO_SHOW), M2, {"modified_time": M2, "status": "Absent"}),
    ("keep-reschedule", KEEP, stored(status=None), crm_action(Kind.RESCHEDULE, T1, E), M2, {"modified_time": M2, "start_time": T1, "end_time": E}),
    ("prefix-cancel", PREFIX, stored(status=None), crm_action(Kind.CANCEL, note="Cancelled: Demo"), M2,
     {"modified_time": M2, "title": "Cancelled: Demo"}),
    ("prefix-uncancel", PREFIX, stored(status=None, title="Cancelled: Demo"), crm_action(Kind.RESCHEDULE, T1, E, note="Demo"), M2,
     {"modified_time": M2, "start_time": T1, "end_time": E, "title": "Demo"}),
    ("delete-cancel", DELETE, stored(status=None), crm_action(Kind.CANCEL), M2, {"modified_time": M2, "deleted_at": M2}),
    ("delete-cancel-no-modified", DELETE, stored(status=None), crm_action(Kind.CANCEL), None, {"modified_time": M1, "deleted_at": AFTER}),
]


@pytest.mark.parametrize(("module", "row", "action", "modified", "expected"), [r[1:] for r in ROW_AFTER_TABLE], ids=[r[0] for r in ROW_AFTER_TABLE])
def test_row_after(module, row, action, modified, expected, monkeypatch):
    monkeypatch.setattr("sync.modules.utc_now", lambda: AFTER)
    after = module.state_after(action, SideState(row["start_time"], module.canon(row)))
    values = module.row_after(row, action, after, modified)
    assert values == expected
    # what the SQL diff will read next run (canon of the new row) is what the new base says
    assert module.canon({**row, **values}) is after.status
    assert module.shows({**row, **values}, action)


SHOWS_TABLE = [
    # id, module, stored row, action, shown
    ("reschedule-same-instant", STATUS, stored(T1.astimezone(KOLKATA)), crm_action(Kind.RESCHEDULE, T1.astimezone(LA)), True),
    ("reschedule-other-start", STATUS, stored(T0), crm_action(Kind.RESCHEDULE, T1), False),
    ("reschedule-no-start", STATUS, stored(None), crm_action(Kind.RESCHEDULE, T1), False),
    ("cancel-shown", STATUS, stored(status="Cancelled"), crm_action(Kind.CANCEL), True),
    ("cancel-not-shown", STATUS, stored(status="Scheduled"), crm_action(Kind.CANCEL), False),
    ("cancel-empty-status", STATUS, stored(status=None), crm_action(Kind.CANCEL), False),
    ("cancel-deleted", STATUS, stored(status="Scheduled", deleted_at=M2), crm_action(Kind.CANCEL), True),
    ("complete", STATUS, stored(status="Completed"), crm_action(Kind.COMPLETE), True),
    ("complete-not-cancelled", STATUS, stored(status="Cancelled"), crm_action(Kind.COMPLETE), False),
    ("no-show", STATUS, stored(status="No Show"), crm_action(Kind.NO_SHOW), True),
    ("no-show-not-cancelled", STATUS, stored(status="Cancelled"), crm_action(Kind.NO_SHOW), False),
    ("custom-no-show", CUSTOM, stored(status="Absent"), crm_action(Kind.NO_SHOW), True),
    ("prefix-cancel-shown", PREFIX, stored(status=None, title="Cancelled: Demo"), crm_action(Kind.CANCEL, note="Cancelled: Demo"), True),
    ("prefix-cancel-not-shown", PREFIX, stored(status=None), crm_action(Kind.CANCEL, note="Cancelled: Demo"), False),
    ("keep-status-word-ignored", KEEP, stored(status="Cancelled"), crm_action(Kind.CANCEL), False),
    ("delete-cancel-shown", DELETE, stored(status=None, deleted_at=M2), crm_action(Kind.CANCEL), True),
    ("delete-cancel-not-shown", DELETE, stored(status=None), crm_action(Kind.CANCEL), False),
]


@pytest.mark.parametrize(("module", "row", "action", "shown"), [r[1:] for r in SHOWS_TABLE], ids=[r[0] for r in SHOWS_TABLE])
def test_shows(module, row, action, shown):
    assert module.shows(row, action) is shown


UNCANCEL_SHOWS = [
    ("status-still-cancelled", STATUS, stored(T0, status="Cancelled")),
    ("status-still-completed", STATUS, stored(T0, status="Completed")),
    ("prefix-still-prefixed", PREFIX, stored(T0, status=None, title="Cancelled: Demo")),
]


@pytest.mark.parametrize(("module", "row"), [r[1:] for r in UNCANCEL_SHOWS], ids=[r[0] for r in UNCANCEL_SHOWS])
def test_an_uncancel_is_not_shown_by_a_meeting_still_cancelled(module, row):
    """``to_crm`` plans a RESCHEDULE at the same start to un-cancel a finished Meeting of a scheduled
    booking; its payload writes the scheduled word (or the title without the prefix). A Meeting still
    reading cancelled does not show it: ``shows`` (used by ``tasks.sync._crm_unless_done`` to turn a
    ``maybe_done`` refusal into success) must say False, else the un-cancel is recorded as done."""
    (action,), _ = module.to_crm(link(side(T0, X), side(T0), title=row["title"]), BEFORE)
    assert action.kind is Kind.RESCHEDULE and action.start == row["start_time"]
    assert module.canon(row) is not Canon.SCHEDULED
    assert module.shows(row, action) is False


CANON_TABLE = [
    # id, module, stored row, canonical status
    ("scheduled", STATUS, stored(status="Scheduled"), S),
    ("cancelled", STATUS, stored(status="Cancelled"), X),
    ("completed", STATUS, stored(status="Completed"), C),
    ("no-show", STATUS, stored(status="No Show"), N),
    ("empty", STATUS, stored(status=""), S),
    ("none", STATUS, stored(status=None), S),
    ("deleted", STATUS, stored(status="Scheduled", deleted_at=M2), X),
    ("deleted-completed", STATUS, stored(status="Completed", deleted_at=M2), X),
    ("status-ignores-prefix", Meetings(cancel_policy="prefix"), stored(status="Scheduled", title="Cancelled: Demo"), S),
    ("custom", CUSTOM, stored(status="Called off"), X),
    ("keep-status-word-ignored", KEEP, stored(status="Cancelled"), S),
    ("keep-prefixed-title", KEEP, stored(status=None, title="Cancelled: Demo"), S),
    ("keep-deleted", KEEP, stored(status=None, deleted_at=M2), X),
    ("prefix-title", PREFIX, stored(status=None, title="Cancelled: Demo"), X),
    ("prefix-only", PREFIX, stored(status=None, title="Cancelled: "), X),
    ("prefix-other-case", PREFIX, stored(status=None, title="cancelled: Demo"), S),
    ("prefix-inside", PREFIX, stored(status=None, title="Demo (Cancelled: no)"), S),
    ("prefix-no-title", PREFIX, stored(status=None, title=None), S),
    ("prefix-custom", Meetings(status_field=None, cancel_policy="prefix", cancel_prefix="[X] "), stored(status=None, title="[X] Demo"), X),
    ("delete-title-ignored", DELETE, stored(status=None, title="Cancelled: Demo"), S),
    ("delete-deleted", DELETE, stored(status=None, deleted_at=M2), X),
]


@pytest.mark.parametrize(("module", "row", "canon"), [r[1:] for r in CANON_TABLE], ids=[r[0] for r in CANON_TABLE])
def test_canon(module, row, canon):
    assert module.canon(row) is canon


# =========================================================================== SQL (a temporary SQLite store)

@pytest.fixture
def engine(tmp_path):
    return open_store("sqlite:///" + str(tmp_path / "s.db"))


def bk_row(booking_id: str, start: datetime = T0, status: str = "UPCOMING", end: datetime | None = None, tz: str = "UTC") -> dict:
    return {"booking_id": booking_id, "start_time": start, "end_time": end, "status": status, "time_zone": tz, "staff_id": None, "service_id": None}


def store(engine, events=(), bookings=(), bases=(), now: datetime = BEFORE) -> None:
    upsert_crm_records(engine, CrmEvent, list(events))
    upsert_bookings(engine, list(bookings), now)
    write_base(engine, list(bases), now, base_table=SyncBaseEvent)


def diff(engine, module: Meetings, booking_ids=None) -> dict[str, Link]:
    """``changed_links`` for ``module`` as ``flows.sync_appointments`` calls it: ``crm_where`` only when
    ``where_sql`` gives a condition (see :func:`test_changed_links_takes_where_sql_as_it_is`)."""
    where = module.where_sql if module.where_sql(CrmEvent.__table__.c) is not None else None
    links = changed_links(engine, booking_ids, crm_table=CrmEvent, base_table=SyncBaseEvent, crm_status_sql=module.status_sql, crm_where=where)
    return {l.booking_id: l for l in links}


def crm_statuses(engine, module: Meetings) -> dict[str, Canon]:
    return {b: l.crm.status for b, l in diff(engine, module).items()}


# id, module, stored Meeting (status word, title, deleted), the status the SQL derives (None: not in the diff)
SQL_STATUS_TABLE = [
    ("word-scheduled", STATUS, ("Scheduled", "Demo", False), S),
    ("word-cancelled", STATUS, ("Cancelled", "Demo", False), X),
    ("word-completed", STATUS, ("Completed", "Demo", False), C),
    ("word-no-show", STATUS, ("No Show", "Demo", False), N),
    ("word-empty", STATUS, ("", "Demo", False), S),
    ("word-null", STATUS, (None, "Demo", False), S),
    ("status-ignores-title", STATUS, ("Scheduled", "Cancelled: Demo", False), S),
    ("custom-word", CUSTOM, ("Absent", "Demo", False), N),
    ("deleted-hidden", STATUS, ("Scheduled", "Demo", True), None),
    ("deleted-cancels", Meetings(delete_cancels=True), ("Completed", "Demo", True), X),
    ("keep-word-ignored", KEEP, ("Cancelled", "Demo", False), S),
    ("keep-prefixed-title", KEEP, (None, "Cancelled: Demo", False), S),
    ("keep-deleted-hidden", KEEP, (None, "Demo", True), None),
    ("keep-deleted-cancels", Meetings(status_field=None, delete_cancels=True), (None, "Demo", True), X),
    ("prefix-title", PREFIX, (None, "Cancelled: Demo", False), X),
    ("prefix-title-null", PREFIX, (None, None, False), S),
    ("prefix-not-at-start", PREFIX, (None, "Re: Cancelled: Demo", False), S),
    ("prefix-wildcards-escaped", Meetings(status_field=None, cancel_policy="prefix", cancel_prefix="50%_off/ "), (None, "50% off/ x", False), S),
    ("prefix-wildcards-match", Meetings(status_field=None, cancel_policy="prefix", cancel_prefix="50%_off/ "), (None, "50%_off/ x", False), X),
    ("delete-deleted-hidden", DELETE, (None, "Demo", True), None),
    ("delete-deleted-cancels", Meetings(status_field=None, cancel_policy="delete", delete_cancels=True), (None, "Demo", True), X),
]


def test_the_sql_derives_the_canonical_status(engine):
    """All rows of :data:`SQL_STATUS_TABLE` in one store, each module diffing its own booking."""
    events = [stored(status=w, title=t, deleted_at=M2 if d else None, booking_id=f"b{i:02}") for i, (_, _, (w, t, d), _) in enumerate(SQL_STATUS_TABLE)]
    store(engine, events, [bk_row(f"b{i:02}") for i in range(len(SQL_STATUS_TABLE))])
    got, want = {}, {}
    for i, (name, module, _, expected) in enumerate(SQL_STATUS_TABLE):
        links = diff(engine, module, [f"b{i:02}"])
        got[name] = links[f"b{i:02}"].crm.status if links else None
        want[name] = expected
        if links:  # the SQL and the adapter's own reading agree
            assert module.canon(events[i]) is got[name], name
    assert got == want


def test_where_sql_hides_deleted_meetings_unless_a_delete_cancels():
    hides = STATUS.where_sql(CrmEvent.__table__.c)
    assert str(hides) == "crm_events.deleted_at IS NULL"
    assert Meetings(delete_cancels=True).where_sql(CrmEvent.__table__.c) is None


@pytest.mark.parametrize("module", [Meetings(delete_cancels=True), Meetings(status_field=None, cancel_policy="delete", delete_cancels=True)],
                         ids=["status-field", "time-only-delete"])
def test_changed_links_takes_where_sql_as_it_is(engine, module):
    """``CrmModule.where_sql`` answers None for "all records"; ``changed_links(crm_where=module.where_sql)``
    calls it and passes the None to ``query.where(None)``, which SQLAlchemy renders ``WHERE NULL``: every
    link (live or deleted) silently drops out of the diff. ``flows.sync_appointments`` works around it by
    passing ``crm_where=None`` when ``where_sql(columns)`` is None; any other caller gets an empty diff."""
    store(engine, [stored(T1, booking_id="b1"), stored(deleted_at=M2, booking_id="b2")], [bk_row("b1"), bk_row("b2")])
    links = changed_links(engine, crm_table=CrmEvent, base_table=SyncBaseEvent, crm_status_sql=module.status_sql, crm_where=module.where_sql)
    assert {l.booking_id: l.crm.status for l in links} == {"b1": S, "b2": X}


def test_the_sql_prefix_test_is_as_case_sensitive_as_canon(engine):
    """``status_sql`` says it computes what ``canon`` does; on SQLite ``title LIKE 'Cancelled: %'``
    also matches ``CANCELLED: Demo`` / ``cancelled: demo``, while ``canon`` (``str.startswith``) does not.
    The diff then reads the Meeting as cancelled (the booking gets cancelled), and when Bookings wins a
    reschedule ``to_crm`` does not strip the prefix (case-sensitive), so the next run reads it cancelled again."""
    titles = ["CANCELLED: Demo", "cancelled: demo", "Cancelled: Demo"]
    events = [stored(status=None, title=t, booking_id=f"b{i}") for i, t in enumerate(titles)]
    store(engine, events, [bk_row(f"b{i}") for i in range(len(titles))])
    assert crm_statuses(engine, PREFIX) == {f"b{i}": PREFIX.canon(e) for i, e in enumerate(events)}


def test_an_unknown_status_word_is_a_bad_link_and_the_rest_still_come(engine):
    store(engine, [stored(T1, booking_id="b1"), stored(status="Postponed", booking_id="b2"), stored(T1, booking_id="b3")], [bk_row("b1"), bk_row("b2"), bk_row("b3")])
    iterator, links, errors = iter(changed_links(engine, crm_table=CrmEvent, base_table=SyncBaseEvent, crm_status_sql=STATUS.status_sql,
                                                 crm_where=STATUS.where_sql)), [], []
    while True:
        try:
            links.append(next(iterator).booking_id)
        except StopIteration:
            break
        except InvalidLink as exc:
            errors.append((exc.booking_id, str(exc)))
    assert links == ["b1", "b3"] and len(errors) == 1 and errors[0][0] == "b2" and "Postponed" in errors[0][1]


def test_a_changed_meeting_carries_its_title_ends_and_base(engine):
    store(engine, [stored(T1, end=T1 + H, status="Scheduled", title="Demo", modified=M2)], [bk_row("b1", end=T0 + 0.75 * H, tz="Asia/Kolkata")],
          [("b1", "c-b1", "Asia/Kolkata", side(), side())])
    one = diff(engine, STATUS)["b1"]
    assert (one.crm, one.bookings, one.title, one.time_zone) == (SideState(T1, S, M2), SideState(T0, S, BEFORE), "Demo", "Asia/Kolkata")
    assert (one.end, one.bookings_end, one.base_crm, one.base_bookings, one.base_at) == (T1 + H, T0 + 0.75 * H, side(), side(), BEFORE)
    # the diff's link planned for Meetings: the booking follows the Meeting
    (action,) = meetings_plan([one]).actions
    assert (action.target, action.kind, action.start, action.time_zone) == (Side.BOOKINGS, Kind.RESCHEDULE, T1, "Asia/Kolkata")
    assert action.key == f"Events|b1|bookings|reschedule|{T1.isoformat()}|{BEFORE.isoformat()}"


def test_a_cancelled_meeting_in_the_store_cancels_the_booking(engine):
    store(engine, [stored(status="Cancelled"), stored(status="No Show", booking_id="b2")], [bk_row("b1"), bk_row("b2")],
          [("b1", "c-b1", "UTC", side(), side()), ("b2", "c-b2", "UTC", side(), side())])
    result = meetings_plan(diff(engine, STATUS).values(), now=AFTER)
    assert [(a.booking_id, act(a), a.key.split("|")[0]) for a in result.actions] == [("b1", "bookings:cancel", "Events"), ("b2", "bookings:no_show", "Events")]


def test_the_meetings_base_is_its_own(engine):
    """``write_base(base_table=SyncBaseEvent)`` leaves ``sync_base`` alone, and only the Meetings' base hides an agreed link."""
    store(engine, [stored(T1, booking_id="b1"), stored(T1, booking_id="b2")], [bk_row("b1", T1), bk_row("b2", T1)])
    assert set(diff(engine, STATUS)) == {"b1", "b2"}
    write_base(engine, [("b1", "c-b1", "UTC", side(T1), side(T1))], AFTER, base_table=SyncBaseEvent)
    write_base(engine, [("b2", "c-b2", "UTC", side(T1), side(T1))], AFTER)  # the Appointments__s base
    with Session(engine) as s:
        assert [r.booking_id for r in s.exec(select(SyncBase))] == ["b2"]
        (event_base,) = s.exec(select(SyncBaseEvent))
    assert (event_base.booking_id, event_base.crm_start, event_base.crm_status, event_base.agreed_at) == ("b1", T1, "scheduled", AFTER)
    assert set(diff(engine, STATUS)) == {"b2"}


def test_a_written_base_of_a_derived_status_is_not_a_change(engine):
    """The base holds canonical statuses; the SQL compares them with the derived one (no false diff)."""
    events = [stored(status="No Show", booking_id="b1"), stored(status=None, title="Cancelled: Demo", booking_id="b2"),
              stored(status="", booking_id="b3")]
    store(engine, events, [bk_row("b1", status="NO_SHOW"), bk_row("b2", status="CANCEL"), bk_row("b3")],
          [("b1", "c-b1", "UTC", side(T0, N), side(T0, N)), ("b2", "c-b2", "UTC", side(T0, X), side(T0, X)), ("b3", "c-b3", "UTC", side(), side())])
    assert set(diff(engine, STATUS, ["b1", "b3"])) == set() and set(diff(engine, PREFIX, ["b2"])) == set()
    assert set(diff(engine, KEEP, ["b2"])) == {"b2"}  # keep: the prefixed title is no cancellation, the base says cancelled


def test_a_deleted_meeting_is_not_rescheduled(engine):
    """The CRM user deletes the Meeting while the booking is moved; Bookings wins (``bookings_wins``, or
    ``latest_wins`` with the booking changed later). ``to_crm`` sees a cancelled Meeting of a scheduled
    booking and plans the un-cancel RESCHEDULE: a ``PUT /Events`` ``{id, Start_DateTime, End_DateTime}``
    of a record that no longer exists (nothing un-deletes it). Were it to succeed,
    ``row_after`` keeps ``deleted_at`` (the SQL still reads cancelled) while ``state_after`` says
    scheduled: the next run would see the Meeting changed and cancel the booking."""
    module = Meetings(status_field=None, cancel_policy="delete", delete_cancels=True)
    store(engine, [stored(deleted_at=M2)], [bk_row("b1", T1)], [("b1", "c-b1", "UTC", side(), side())])
    (one,) = diff(engine, module).values()
    assert one.crm.status is X and one.bookings.start == T1
    result = meetings_plan([one], module=module, policy=Policy.BOOKINGS_WINS)
    assert [act(a) for a in result.actions if a.target is Side.CRM] == []


def test_mark_deleted_returns_only_newly_marked_rows(engine):
    store(engine, [stored(booking_id="b1", title="One"), stored(booking_id="b2", title=None), stored(booking_id="b3")], [bk_row("b1"), bk_row("b2"), bk_row("b3")])
    assert mark_deleted(engine, CrmEvent, [], AFTER) == []
    first = mark_deleted(engine, CrmEvent, ["c-b2", "c-b1", "c-b1", "c-unknown"], AFTER)
    assert sorted(first, key=lambda r: r["id"]) == [{"id": "c-b1", "booking_id": "b1", "title": "One"}, {"id": "c-b2", "booking_id": "b2", "title": None}]
    assert mark_deleted(engine, CrmEvent, ["c-b1", "c-b3"], AFTER + H) == [{"id": "c-b3", "booking_id": "b3", "title": "Demo"}]
    with Session(engine) as s:
        assert {r.id: r.deleted_at for r in s.exec(select(CrmEvent))} == {"c-b1": AFTER, "c-b2": AFTER, "c-b3": AFTER + H}
    assert set(diff(engine, STATUS)) == set()
    assert {b: l.crm.status for b, l in diff(engine, Meetings(delete_cancels=True)).items()} == {"b1": X, "b2": X, "b3": X}


# =========================================================================== property: no loop

#: Zones without a DST change near the instants below (June), so a Bookings wall time round-trips.
ZONES = ["UTC", "Asia/Kolkata", "America/New_York", "Australia/Sydney"]
instants = st.builds(lambda half_hours: T0 + timedelta(minutes=30 * half_hours), st.integers(-6, 6))
zones = st.sampled_from(ZONES)
statuses = st.sampled_from(list(Canon))
minutes = st.sampled_from([None, 15, 30, 60, 90])
nows = st.builds(lambda i, days: i + timedelta(days=days), instants, st.sampled_from([-30, -1, 0, 0, 1, 30]))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sides(draw, base: SideState | None) -> SideState:
    if base is not None and draw(st.booleans()):
        start, status = base.start, base.status
    else:
        start, status = draw(instants), draw(statuses)
    modified = draw(st.none() | instants)
    return SideState(start, status, modified)


@st.composite
def meeting_links(draw) -> Link:
    """A link with a status field: any status on either side (Meetings have a no-show), a base that is
    missing, agreed or arbitrary, ends or not."""
    kind = draw(st.sampled_from(["none", "agreed", "arbitrary"]))
    base_crm = base_bk = None
    if kind == "agreed":
        start, status = draw(instants), draw(statuses)
        base_crm, base_bk = SideState(start, status), SideState(start, status)
    elif kind == "arbitrary":
        base_crm, base_bk = SideState(draw(instants), draw(statuses)), SideState(draw(instants), draw(statuses))
    crm, bk = draw(sides(base_crm)), draw(sides(base_bk))
    crm_len, bk_len = draw(minutes), draw(minutes)
    return Link("#AN-7", "5545974000000007", draw(zones), crm, bk, end=crm.start + timedelta(minutes=crm_len) if crm_len else None,
                base_crm=base_crm, base_bookings=base_bk, base_at=draw(st.none() | instants) if base_crm else None,
                bookings_end=bk.start + timedelta(minutes=bk_len) if bk_len else None, title=draw(st.none() | st.just("Demo")))


def apply_to_bookings(one: Link, action: Action, now: datetime) -> SideState:
    """The booking after ``action`` (Bookings' own rules checked: the engine promises never to break them)."""
    assert bookings_side.refusal(action) is None
    assert not one.bookings.status.finished, "no change to a finished booking"
    if action.kind in (Kind.COMPLETE, Kind.NO_SHOW):
        assert one.bookings.start <= now, "no completion or no-show before the start"
    after, _ = bookings_side.state_after(action, one.bookings, action.start, None)
    return after


def meeting_row(one: Link, module: Meetings) -> dict:
    """A stored row saying what the link's Meeting side says."""
    words = {c: module.word(c) for c in Canon}
    return stored(one.crm.start, one.end, words[one.crm.status], one.title, modified=one.crm.modified)


@FAST
@given(meeting_links(), st.sampled_from(list(Policy)), nows, st.sampled_from(list(Side)), st.sampled_from([STATUS, CUSTOM]))
def test_a_planned_step_makes_the_link_agree_and_planning_again_sends_nothing(one, policy, now, source, module):
    actions, conflicts, agreed = plan_link(one, policy, now, source, to_crm=module.to_crm, scope=module.scope)
    note(f"actions={actions} conflicts={conflicts} agreed={agreed}")
    assert agreed == agree(one)
    if agreed:
        assert actions == [] and conflicts == []
        return
    assert len(actions) <= 1
    assert {c.kind for c in conflicts} <= {"both_changed", "rule", "deferred"}, "a status field: nothing is kept"
    if not actions:
        assert conflicts, "the sides disagree, nothing is sent and nothing is reported"
        assert plan_link(one, policy, now, source, to_crm=module.to_crm, scope=module.scope) == (actions, conflicts, agreed)
        return
    (action,) = actions
    assert action.scope == "Events" and action.key.startswith("Events|#AN-7|")
    if action.target is Side.CRM:
        assert module.refusal(action) is None and not module.deletes(action)
        payload = module.payload(action)
        assert payload[module.status_field] == module.word(CANON_AFTER[action.kind])
        if action.end is not None:
            assert action.end > action.start and payload["End_DateTime"] == action.end
        crm = module.state_after(action, one.crm)
        row = meeting_row(one, module)
        assert module.canon({**row, **module.row_after(row, action, crm, now)}) is crm.status
        after = replace(one, crm=crm)
    else:
        after = replace(one, bookings=apply_to_bookings(one, action, now))
    assert agree(after), f"applying {action} left {after.crm} / {after.bookings}"
    assert plan_link(after, policy, now, source, to_crm=module.to_crm, scope=module.scope) == ([], [], True), "our own write comes back as an agreed echo"
    settled = replace(after, base_crm=after.crm, base_bookings=after.bookings, base_at=now)
    out = plan([settled], policy, now, source, to_crm=module.to_crm, scope=module.scope)
    assert out.actions == [] and out.conflicts == [] and out.agreed == [] and out.unchanged == 1


TIME_ONLY = [KEEP, PREFIX, DELETE, Meetings(status_field=None, cancel_policy="delete", delete_cancels=True)]


@FAST
@given(meeting_links(), st.sampled_from(list(Policy)), nows, st.sampled_from(list(Side)), st.sampled_from(TIME_ONLY))
def test_time_only_a_step_agrees_or_is_reported_and_a_kept_link_stays_quiet(one, policy, now, source, module):
    """Time only a Meeting reads scheduled, or cancelled (a prefixed title; deleted, with ``delete_cancels``):
    the generated Meeting side is made to fit, its title prefixed when it reads cancelled by the prefix."""
    can_cancel = module.cancel_policy == "prefix" or module.delete_cancels

    def fit(s: SideState | None) -> SideState | None:
        if s is None or s.status is S or (s.status is X and can_cancel):
            return s
        return SideState(s.start, X if can_cancel else S, s.modified)

    crm = fit(one.crm)
    prefixed = crm.status is X and module.cancel_policy == "prefix"
    one = replace(one, crm=crm, base_crm=fit(one.base_crm), title=module.cancel_prefix + "Demo" if prefixed else one.title)
    row = stored(one.crm.start, one.end, None, one.title, deleted_at=M1 if crm.status is X and not prefixed else None)
    assert module.canon(row) is crm.status
    actions, conflicts, agreed = plan_link(one, policy, now, source, to_crm=module.to_crm, scope=module.scope)
    note(f"actions={actions} conflicts={conflicts} agreed={agreed}")
    if agreed:
        return
    if not actions:
        assert conflicts
        if any(c.kind == "kept" for c in conflicts):
            # the flow writes a kept link's base as it is: planned again from there, nothing is sent
            settled = replace(one, base_crm=one.crm, base_bookings=one.bookings, base_at=now)
            assert plan_link(settled, policy, now, source, to_crm=module.to_crm, scope=module.scope)[0] == []
        return
    (action,) = actions
    if action.target is Side.BOOKINGS:
        return  # Bookings' side: the status-field property covers it
    assert module.refusal(action) is None
    if not module.deletes(action):
        module.payload(action)
    after = module.state_after(action, one.crm)
    assert agree(replace(one, crm=after))
    if row["deleted_at"] is not None:
        return  # a reschedule of a deleted Meeting: test_a_deleted_meeting_is_not_rescheduled
    assert module.canon({**row, **module.row_after(row, action, after, now)}) is after.status
