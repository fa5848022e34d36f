"""The SQL side of the diff (``sync.links``) on a temporary SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from sync.engine import Action, Canon, Kind, Policy, Side, SideState, plan
from sync.links import BookingRecord, SyncAction, SyncBase, applied_keys, changed_links, log_actions, upsert_bookings, upsert_crm_appointments, write_base
from sync.store import open_store
from zoho.timefmt import from_bookings

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=2)
NOW = T0 - timedelta(days=7)
S, X, C, N = Canon.SCHEDULED, Canon.CANCELLED, Canon.COMPLETED, Canon.NO_SHOW


@pytest.fixture
def engine(tmp_path):
    return open_store("sqlite:///" + str(tmp_path / "s.db"))


def crm(booking_id: str | None, start: datetime | None = T0, status: str | None = "Scheduled", *, id: str | None = None,
        modified: datetime | None = None, end: datetime | None = None) -> dict:
    return {"id": id or f"c-{booking_id}", "booking_id": booking_id, "start_time": start, "end_time": end, "duration": None,
            "status": status, "modified_time": modified, "job_id": None, "loaded_at": None}


def bk(booking_id: str, start: datetime | None = T0, status: str = "UPCOMING", *, tz: str = "UTC", end: datetime | None = None, staff: str | None = None) -> dict:
    return {"booking_id": booking_id, "start_time": start, "end_time": end, "status": status, "time_zone": tz, "staff_id": staff, "service_id": None}


def base(booking_id: str, crm_state: SideState = SideState(T0, S), bk_state: SideState = SideState(T0, S), tz: str = "UTC"):
    return (booking_id, f"c-{booking_id}", tz, crm_state, bk_state)


def store(engine, crm_rows=(), bk_rows=(), bases=(), now: datetime = NOW) -> None:
    upsert_crm_appointments(engine, list(crm_rows))
    upsert_bookings(engine, list(bk_rows), now)
    write_base(engine, list(bases), now)


def ids(links) -> list[str]:
    return [link.booking_id for link in links]


def booking(engine, booking_id: str) -> BookingRecord:
    with Session(engine) as s:
        return s.get(BookingRecord, booking_id)


def action(booking_id: str = "b1", kind: Kind = Kind.RESCHEDULE, start: datetime | None = T1) -> Action:
    return Action(booking_id, f"c-{booking_id}", Side.BOOKINGS, kind, "UTC", start if kind is Kind.RESCHEDULE else None)


# --- changed_links -----------------------------------------------------------------------

def test_changed_links_returns_only_links_that_differ_from_the_base(engine):
    store(
        engine,
        crm_rows=[crm("b1"), crm("b2", T1), crm("b3"), crm("b4"), crm("b5"), crm("b7", status="Overdue"), crm("b8", status="Cancelled"),
                  crm("b9"), crm(None, id="c-unlinked")],
        bk_rows=[bk("b1"), bk("b2"), bk("b3", status="CANCEL"), bk("b4", T1), bk("b6"), bk("b7"), bk("b8", status="NO_SHOW"), bk("b9", status="ONGOING")],
        bases=[base("b1"), base("b2"), base("b3"), base("b7"), base("b8", SideState(T0, X), SideState(T0, N)), base("b9")],
    )
    # b1 equal to the base; b2 CRM moved; b3 Bookings cancelled; b4 no base; b5 no booking; b6 no CRM record;
    # b7 Overdue = scheduled; b8 cancelled/no-show as in the base; b9 ONGOING = scheduled
    assert ids(changed_links(engine)) == ["b2", "b3", "b4"]


def test_changed_link_carries_both_sides_and_the_base(engine):
    modified = T0 - timedelta(days=2)
    store(engine, [crm("b2", T1, modified=modified, end=T1 + timedelta(minutes=30))], [bk("b2", tz="Asia/Kolkata", end=T0 + timedelta(hours=1))],
          [base("b2", tz="Asia/Kolkata")], now=NOW)
    [link] = changed_links(engine)
    assert (link.booking_id, link.crm_id, link.time_zone) == ("b2", "c-b2", "Asia/Kolkata")
    assert link.crm == SideState(T1, S, modified)
    assert link.bookings == SideState(T0, S, NOW)  # changed_at stands in for Bookings' modification time
    assert link.base_crm == SideState(T0, S) and link.base_bookings == SideState(T0, S)
    assert link.end == T1 + timedelta(minutes=30)  # CRM's end first


def test_end_falls_back_to_the_booking(engine):
    store(engine, [crm("b1")], [bk("b1", end=T0 + timedelta(hours=1))])
    [link] = changed_links(engine)
    assert link.end == T0 + timedelta(hours=1) and link.base_crm is None and link.base_bookings is None


CRM_STATUSES = {"Scheduled": S, "Overdue": S, "Completed": C, "Cancelled": X}
BK_STATUSES = {"UPCOMING": S, "ONGOING": S, "PENDING": S, "CANCEL": X, "COMPLETED": C, "NO_SHOW": N}


def test_statuses_are_mapped_to_canonical_in_sql(engine):
    pairs = [(c, b) for c in CRM_STATUSES for b in BK_STATUSES]
    store(engine, [crm(f"b{i:02}", status=c) for i, (c, _) in enumerate(pairs)], [bk(f"b{i:02}", status=b) for i, (_, b) in enumerate(pairs)])
    links = list(changed_links(engine))
    assert [(link.crm.status, link.bookings.status) for link in links] == [(CRM_STATUSES[c], BK_STATUSES[b]) for c, b in pairs]


@pytest.mark.parametrize(("base_crm", "base_bk", "crm_status", "bk_status", "changed"), [
    (S, S, "Overdue", "PENDING", False),
    (X, N, "Cancelled", "NO_SHOW", False),
    (C, C, "Completed", "COMPLETED", False),
    (S, S, "Completed", "UPCOMING", True),
    (S, S, "Scheduled", "NO_SHOW", True),
    (X, X, "Cancelled", "NO_SHOW", True),
], ids=["overdue-pending", "cancel-noshow", "completed", "crm-completed", "bookings-no-show", "cancel-to-no-show"])
def test_status_comparison_with_the_base_is_canonical(engine, base_crm, base_bk, crm_status, bk_status, changed):
    store(engine, [crm("b1", status=crm_status)], [bk("b1", status=bk_status)], [base("b1", SideState(T0, base_crm), SideState(T0, base_bk))])
    assert ids(changed_links(engine)) == (["b1"] if changed else [])


def test_same_instant_in_another_offset_is_not_a_change(engine):
    """A Bookings wall time in a daylight-saving fold, stored from its fixed offset, against a base in UTC."""
    start = from_bookings("01-Nov-2026 01:30:00", "America/New_York")  # 05:30 UTC
    store(engine, [crm("b1", start.astimezone(timezone(timedelta(hours=5, minutes=30))))], [bk("b1", start, tz="America/New_York")],
          [base("b1", SideState(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), S), SideState(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), S), "America/New_York")])
    assert ids(changed_links(engine)) == []


def test_changed_links_honours_booking_ids(engine):
    store(engine, [crm(f"b{i}", T1) for i in range(5)], [bk(f"b{i}") for i in range(5)], [base(f"b{i}") for i in range(5)])
    assert ids(changed_links(engine, ["b3", "b1", "unknown"])) == ["b1", "b3"]
    assert ids(changed_links(engine, [])) == []
    assert ids(changed_links(engine, iter(["b4"]))) == ["b4"]


def test_changed_links_streams_in_chunks(engine):
    store(engine, [crm(f"b{i:03}", T1) for i in range(25)], [bk(f"b{i:03}") for i in range(25)])
    assert ids(changed_links(engine, chunk=4)) == [f"b{i:03}" for i in range(25)]


@pytest.mark.parametrize(("crm_row", "bk_row", "message"), [
    (crm("b2", status="Rescheduled"), bk("b2"), "Rescheduled"),
    (crm("b2", status=None), bk("b2"), "b2"),
    (crm("b2"), bk("b2", status="WAITING"), "WAITING"),
    (crm("b2", start=None), bk("b2"), "start time is missing"),
], ids=["unknown-crm-status", "no-crm-status", "unknown-bookings-status", "no-start"])
def test_a_bad_link_raises_and_the_rest_still_come(engine, crm_row, bk_row, message):
    """What the flow does: catch ``ValueError`` on ``next()``, record it, go on."""
    store(engine, [crm("b1", T1), crm_row, crm("b3", T1)], [bk("b1"), bk_row, bk("b3")])
    links, errors = [], []
    iterator = iter(changed_links(engine))
    while True:
        try:
            links.append(next(iterator))
        except StopIteration:
            break
        except ValueError as exc:
            errors.append(str(exc))
    assert ids(links) == ["b1", "b3"]
    assert len(errors) == 1 and message in errors[0] and "b2" in errors[0]


# --- upsert_bookings ---------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "moves"), [
    ("end_time", T0 + timedelta(hours=2), False),
    ("staff_id", "staff-2", False),
    ("time_zone", "Europe/London", False),
    ("start_time", T0.astimezone(timezone(timedelta(hours=-7))), False),  # same instant
    ("status", "CANCEL", True),
    ("start_time", T1, True),
], ids=["end", "staff", "time-zone", "start-same-instant", "status", "start"])
def test_upsert_bookings_moves_changed_at_only_for_start_or_status(engine, field, value, moves):
    first, second = NOW, NOW + timedelta(hours=1)
    upsert_bookings(engine, [bk("b1", end=T0 + timedelta(hours=1))], first)
    assert upsert_bookings(engine, [{**bk("b1", end=T0 + timedelta(hours=1)), field: value}], second) == 1
    row = booking(engine, "b1")
    assert row.changed_at == (second if moves else first)
    assert row.fetched_at == second
    assert getattr(row, field) == value


def test_upsert_bookings_inserts_with_changed_at_now(engine):
    assert upsert_bookings(engine, []) == 0
    assert upsert_bookings(engine, [bk("b1"), bk("b2", T1)], NOW) == 2
    assert booking(engine, "b2").changed_at == NOW and booking(engine, "b2").start_time == T1


# --- write_base ----------------------------------------------------------------------------

def test_write_base_upserts(engine):
    assert write_base(engine, []) == 0
    assert write_base(engine, [base("b1"), base("b2")], NOW) == 2
    later = NOW + timedelta(days=1)
    assert write_base(engine, [base("b1", SideState(T1, X), SideState(T1, N), tz="Asia/Kolkata")], later) == 1
    with Session(engine) as s:
        rows = {r.booking_id: r for r in s.exec(select(SyncBase))}
    assert set(rows) == {"b1", "b2"}
    b1 = rows["b1"]
    assert (b1.crm_start, b1.crm_status, b1.bookings_start, b1.bookings_status, b1.time_zone, b1.agreed_at) == (T1, "cancelled", T1, "no_show", "Asia/Kolkata", later)
    assert (rows["b2"].crm_start, rows["b2"].crm_status, rows["b2"].agreed_at) == (T0, "scheduled", NOW)


def test_agreed_links_written_as_base_drop_out_of_the_next_diff(engine):
    """The echo path: both sides agree, the plan's agreed links become the base, the next diff is empty."""
    store(engine, [crm("b1", T1), crm("b2", T1), crm("b3")], [bk("b1", T1), bk("b2"), bk("b3")], [base("b1"), base("b2"), base("b3")])
    result = plan(changed_links(engine), Policy.LATEST_WINS, NOW)
    assert ids(result.agreed) == ["b1"] and [(a.booking_id, a.kind) for a in result.actions] == [("b2", Kind.RESCHEDULE)]
    write_base(engine, [(l.booking_id, l.crm_id, l.time_zone, l.crm, l.bookings) for l in result.agreed], NOW)
    assert ids(changed_links(engine)) == ["b2"]


# --- the action log ---------------------------------------------------------------------------

def logged(engine) -> dict[str, SyncAction]:
    with Session(engine) as s:
        return {r.key: r for r in s.exec(select(SyncAction))}


def test_log_actions_counts_attempts_per_key(engine):
    a, other = action("b1"), action("b2")
    t = [NOW + timedelta(minutes=i) for i in range(4)]
    log_actions(engine, "run-1", [(a, "planned", None, None), (other, "planned", None, None)], t[0])
    log_actions(engine, "run-1", [(a, "failed", "NOT_ALLOWED", "nope")], t[1])
    log_actions(engine, "run-2", [(a, "failed", "INTERNAL_ERROR", "again")], t[2])
    log_actions(engine, "run-3", [(a, "applied", "SUCCESS", None)], t[3])
    rows = logged(engine)
    assert set(rows) == {a.key, other.key}
    row = rows[a.key]
    assert (row.attempts, row.status, row.code, row.run_id, row.created_at, row.updated_at) == (3, "applied", "SUCCESS", "run-3", t[0], t[3])
    assert (row.target, row.kind, row.value) == ("bookings", "reschedule", T1.isoformat())
    assert (rows[other.key].attempts, rows[other.key].status) == (0, "planned")


@pytest.mark.parametrize(("statuses", "attempts"), [
    (["deferred", "deferred"], 0),
    (["conflict"], 0),
    (["dry_run", "planned", "applied"], 1),
    (["failed", "failed", "failed"], 3),
], ids=["deferred", "conflict", "dry-run-then-applied", "three-failures"])
def test_only_sends_count_as_attempts(engine, statuses, attempts):
    for i, status in enumerate(statuses):
        log_actions(engine, f"run-{i}", [(action(), status, None, None)], NOW)
    assert logged(engine)[action().key].attempts == attempts


def test_applied_keys(engine):
    done = [action(f"b{i:04}") for i in range(0, 1200, 2)]
    failed = [action(f"b{i:04}") for i in range(1, 1200, 2)]
    log_actions(engine, "run", [(a, "applied", "SUCCESS", None) for a in done] + [(a, "failed", "X", None) for a in failed], NOW)
    log_actions(engine, "run", [(action("b9999", Kind.CANCEL), "planned", None, None)], NOW)
    asked = [a.key for a in done + failed] + [action("b9999", Kind.CANCEL).key, "never-logged"]
    assert applied_keys(engine, asked) == {a.key for a in done}
    assert applied_keys(engine, []) == set()
