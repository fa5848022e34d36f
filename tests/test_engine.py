"""The three-way diff (``sync.engine``), table-driven.

Every outcome is rendered as one short string so the tables read like the rules:

* ``"agreed"``: both sides say the same, nothing to send, the base follows;
* ``"bookings:reschedule@T1"``, ``"crm:cancel +note"``, ...: the actions, in order;
* ``"... | both_changed, rule"``: the conflicts (after the actions, if any);
* ``""``: nothing to send and nothing to report.

Times: ``T0`` is the agreed start; ``T1``/``T2`` other starts; ``BEFORE`` is a
"now" a week before ``T0``, ``AFTER`` a week after.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

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
    bookings_canon,
    crm_canon,
    equivalent,
    plan,
    plan_link,
)
from zoho.timefmt import from_bookings, to_bookings

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=2)
T2 = T0 + timedelta(days=1)
BEFORE = T0 - timedelta(days=7)
AFTER = T0 + timedelta(days=7)
LABELS = {T0: "T0", T1: "T1", T2: "T2"}
S, X, C, N = Canon.SCHEDULED, Canon.CANCELLED, Canon.COMPLETED, Canon.NO_SHOW
AGREED_BASE = "agreed-base"


def side(start: datetime = T0, status: Canon = S, modified: datetime | None = None) -> SideState:
    return SideState(start, status, modified)


def make_link(crm: SideState, bookings: SideState, base=AGREED_BASE, *, end: datetime | None = None, tz: str = "UTC", booking_id: str = "b1") -> Link:
    """A link; ``base`` is ``(crm, bookings)``, ``None`` for a new link, default both scheduled at T0."""
    base_crm, base_bk = (side(), side()) if base == AGREED_BASE else (base or (None, None))
    return Link(booking_id, "c-" + booking_id, tz, crm, bookings, end=end, base_crm=base_crm, base_bookings=base_bk)


def act(a: Action) -> str:
    text = f"{a.target.value}:{a.kind.value}"
    if a.start is not None:
        text += "@" + LABELS.get(a.start, a.start.isoformat())
    return text + (" +note" if a.note else "")


def render(actions, conflicts, agreed) -> str:
    if agreed:
        assert not actions and not conflicts
        return "agreed"
    text = ", ".join(act(a) for a in actions)
    if conflicts:
        text += " | " + ", ".join(c.kind for c in conflicts)
    return text.strip()


def outcome(link: Link, policy: Policy = Policy.LATEST_WINS, now: datetime = BEFORE, initial_source: Side = Side.BOOKINGS) -> str:
    return render(*plan_link(link, policy, now, initial_source))


# --- one-side and both-side changes against the base -------------------------------------

CHANGE = {
    "same": side(),
    "move": side(T1),
    "move2": side(T2),
    "cancel": side(T0, X),
    "move+cancel": side(T1, X),
}

CW, BW = Policy.CRM_WINS, Policy.BOOKINGS_WINS
CHANGE_TABLE = [
    # crm change, bookings change, policy, outcome
    ("same", "same", CW, "agreed"),
    ("move", "same", BW, "bookings:reschedule@T1"),
    ("cancel", "same", BW, "bookings:cancel"),
    ("move+cancel", "same", BW, "bookings:cancel"),
    ("same", "move", CW, "crm:reschedule@T1"),
    ("same", "cancel", CW, "crm:cancel"),
    ("same", "move+cancel", CW, "crm:cancel"),
    ("move", "move", CW, "agreed"),
    ("move", "move2", CW, "bookings:reschedule@T1 | both_changed"),
    ("move", "move2", BW, "crm:reschedule@T2 | both_changed"),
    ("move", "cancel", CW, "| both_changed, rule"),
    ("move", "cancel", BW, "crm:cancel | both_changed"),
    ("cancel", "move", CW, "bookings:cancel | both_changed"),
    ("cancel", "move", BW, "| both_changed, rule"),
    ("cancel", "cancel", CW, "agreed"),
    ("move+cancel", "move+cancel", BW, "agreed"),
    # both cancelled, one also moved: a cancelled appointment's start no longer matters
    ("move+cancel", "cancel", CW, "agreed"),
    ("cancel", "move+cancel", BW, "agreed"),
    ("move+cancel", "move", CW, "bookings:cancel | both_changed"),
    ("move+cancel", "move", BW, "| both_changed, rule"),
    ("move", "move+cancel", CW, "| both_changed, rule"),
    ("move", "move+cancel", BW, "crm:cancel | both_changed"),
    ("move+cancel", "move2", CW, "bookings:cancel | both_changed"),
]


@pytest.mark.parametrize(("crm", "bk", "policy", "expected"), CHANGE_TABLE, ids=[f"crm:{c}-bk:{b}-{p.value}" for c, b, p, _ in CHANGE_TABLE])
def test_changes_against_the_base(crm, bk, policy, expected):
    assert outcome(make_link(CHANGE[crm], CHANGE[bk]), policy) == expected


@pytest.mark.parametrize("policy", list(Policy), ids=lambda p: p.value)
@pytest.mark.parametrize(("crm", "bk", "expected"), [
    ("move", "same", "bookings:reschedule@T1"),
    ("same", "cancel", "crm:cancel"),
    ("move", "move", "agreed"),
], ids=["crm-only", "bookings-only", "both-same"])
def test_policy_does_not_matter_unless_both_changed_differently(policy, crm, bk, expected):
    assert outcome(make_link(CHANGE[crm], CHANGE[bk]), policy) == expected


# --- every CRM status x Bookings status ---------------------------------------------------

CRM_STATUSES = ["Scheduled", "Overdue", "Completed", "Cancelled"]
BK_STATUSES = ["UPCOMING", "ONGOING", "PENDING", "CANCEL", "COMPLETED", "NO_SHOW"]
PAIRS = [(c, b) for c in CRM_STATUSES for b in BK_STATUSES]
AGREEING = {
    ("Scheduled", "UPCOMING"), ("Scheduled", "ONGOING"), ("Scheduled", "PENDING"),
    ("Overdue", "UPCOMING"), ("Overdue", "ONGOING"), ("Overdue", "PENDING"),
    ("Completed", "COMPLETED"),
    ("Cancelled", "CANCEL"), ("Cancelled", "NO_SHOW"),
}
# From a base of Scheduled/UPCOMING at T0, now after the end; crm_wins where both changed.
PROPAGATED = {
    **{(c, b): "agreed" for c in ("Scheduled", "Overdue") for b in ("UPCOMING", "ONGOING", "PENDING")},
    **{(c, "CANCEL"): "crm:cancel" for c in ("Scheduled", "Overdue")},
    **{(c, "COMPLETED"): "crm:complete" for c in ("Scheduled", "Overdue")},
    **{(c, "NO_SHOW"): "crm:cancel +note" for c in ("Scheduled", "Overdue")},
    **{("Completed", b): "bookings:complete" for b in ("UPCOMING", "ONGOING", "PENDING")},
    ("Completed", "COMPLETED"): "agreed",
    ("Completed", "CANCEL"): "| both_changed, rule",
    ("Completed", "NO_SHOW"): "| both_changed, rule",
    **{("Cancelled", b): "bookings:cancel" for b in ("UPCOMING", "ONGOING", "PENDING")},
    ("Cancelled", "CANCEL"): "agreed",
    ("Cancelled", "NO_SHOW"): "agreed",
    ("Cancelled", "COMPLETED"): "| both_changed, rule",
}


def test_the_tables_cover_every_pair():
    assert set(PROPAGATED) == set(PAIRS) and AGREEING <= set(PAIRS)


@pytest.mark.parametrize(("crm", "bk"), PAIRS, ids=[f"{c}-{b}" for c, b in PAIRS])
def test_status_pair_agreement(crm, bk):
    expected = (crm, bk) in AGREEING
    assert equivalent(crm_canon(crm), bookings_canon(bk)) is expected
    assert agree(make_link(side(T0, crm_canon(crm)), side(T0, bookings_canon(bk)), base=None)) is expected


@pytest.mark.parametrize(("crm", "bk"), PAIRS, ids=[f"{c}-{b}" for c, b in PAIRS])
def test_status_pair_propagation(crm, bk):
    link = make_link(side(T0, crm_canon(crm)), side(T0, bookings_canon(bk)))
    assert outcome(link, Policy.CRM_WINS, now=AFTER) == PROPAGATED[(crm, bk)]


@pytest.mark.parametrize(("status", "canon"), [("Scheduled", S), ("Overdue", S), ("Completed", C), ("Cancelled", X)])
def test_crm_canon(status, canon):
    assert crm_canon(status) is canon


@pytest.mark.parametrize(("status", "canon"), [("UPCOMING", S), ("ongoing", S), ("Pending", S), ("CANCEL", X), ("completed", C), ("NO_SHOW", N)])
def test_bookings_canon_ignores_case(status, canon):
    assert bookings_canon(status) is canon


@pytest.mark.parametrize(("fn", "status"), [(crm_canon, "Pending"), (crm_canon, None), (crm_canon, "scheduled"), (bookings_canon, "RESCHEDULED"), (bookings_canon, None)])
def test_unknown_status_raises(fn, status):
    with pytest.raises(ValueError, match="unknown"):
        fn(status)


# --- conflict policies -------------------------------------------------------------------

M = T0 - timedelta(days=10)
POLICY_TABLE = [
    # policy, CRM modified, Bookings modified, outcome, winner
    (Policy.LATEST_WINS, M + timedelta(minutes=1), M, "bookings:reschedule@T1 | both_changed", Side.CRM),
    (Policy.LATEST_WINS, M, M + timedelta(minutes=1), "crm:reschedule@T2 | both_changed", Side.BOOKINGS),
    (Policy.LATEST_WINS, M, M, "crm:reschedule@T2 | both_changed", Side.BOOKINGS),  # a tie: Bookings
    (Policy.LATEST_WINS, None, None, "crm:reschedule@T2 | both_changed", Side.BOOKINGS),
    (Policy.LATEST_WINS, M, None, "bookings:reschedule@T1 | both_changed", Side.CRM),
    (Policy.LATEST_WINS, None, M, "crm:reschedule@T2 | both_changed", Side.BOOKINGS),
    (Policy.CRM_WINS, M, M + timedelta(days=1), "bookings:reschedule@T1 | both_changed", Side.CRM),
    (Policy.BOOKINGS_WINS, M + timedelta(days=1), M, "crm:reschedule@T2 | both_changed", Side.BOOKINGS),
    (Policy.REPORT_ONLY, M + timedelta(days=1), M, "| both_changed", None),
    (Policy.REPORT_ONLY, M, M + timedelta(days=1), "| both_changed", None),
]


@pytest.mark.parametrize(("policy", "crm_at", "bk_at", "expected", "winner"), POLICY_TABLE,
                         ids=["latest-crm-newer", "latest-bookings-newer", "latest-tie", "latest-no-times", "latest-crm-only-time",
                              "latest-bookings-only-time", "crm_wins-though-older", "bookings_wins-though-older", "report_only-crm-newer",
                              "report_only-bookings-newer"])
def test_conflict_policies(policy, crm_at, bk_at, expected, winner):
    link = make_link(side(T1, S, crm_at), side(T2, S, bk_at))
    actions, conflicts, agreed = plan_link(link, policy, BEFORE)
    assert render(actions, conflicts, agreed) == expected
    both = [c for c in conflicts if c.kind == "both_changed"]
    assert len(both) == 1 and both[0].winner is winner
    assert (both[0].booking_id, both[0].crm_id) == ("b1", "c-b1")


def test_report_only_keeps_reporting_and_writes_no_base():
    result = plan([make_link(side(T1), side(T2))], Policy.REPORT_ONLY, BEFORE)
    assert result.actions == [] and result.agreed == [] and result.unchanged == 0
    assert result.counts() == {"conflict:both_changed": 1, "agreed": 0, "unchanged": 0}


# --- a new link (no base) ------------------------------------------------------------------

INITIAL_TABLE = [
    ("differ-bookings-source", side(T0), side(T1), Side.BOOKINGS, "crm:reschedule@T1"),
    ("differ-crm-source", side(T0), side(T1), Side.CRM, "bookings:reschedule@T0"),
    ("crm-cancelled-crm-source", side(T0, X), side(T0), Side.CRM, "bookings:cancel"),
    ("crm-cancelled-bookings-source", side(T0, X), side(T0), Side.BOOKINGS, "| rule"),
    ("bookings-no-show", side(T0), side(T0, N), Side.BOOKINGS, "crm:cancel +note"),
    ("agree", side(T0), side(T0), Side.CRM, "agreed"),
]


@pytest.mark.parametrize(("crm", "bk", "source", "expected"), [r[1:] for r in INITIAL_TABLE], ids=[r[0] for r in INITIAL_TABLE])
def test_initial_link_uses_initial_source(crm, bk, source, expected):
    assert outcome(make_link(crm, bk, base=None), Policy.REPORT_ONLY, initial_source=source) == expected


def test_initial_agreement_writes_the_base():
    link = make_link(side(T0), side(T0), base=None)
    result = plan([link], Policy.LATEST_WINS, BEFORE)
    assert result.agreed == [link] and result.unchanged == 0 and result.actions == []


def test_a_base_never_agreed_on_is_repaired_from_the_initial_source():
    link = make_link(side(T0), side(T1), base=(side(T0), side(T1)))
    assert outcome(link) == "crm:reschedule@T1"
    assert outcome(link, initial_source=Side.CRM) == "bookings:reschedule@T0"


# --- echo suppression ----------------------------------------------------------------------

def test_echo_of_our_write_is_agreed_and_rewrites_the_base():
    echo = make_link(side(T1, S, M), side(T1, S, M))  # we moved Bookings to CRM's T1; it came back
    result = plan([echo], Policy.LATEST_WINS, BEFORE)
    assert result.actions == [] and result.conflicts == [] and result.agreed == [echo] and result.unchanged == 0


def test_echo_equal_to_the_base_is_unchanged():
    result = plan([make_link(side(T1), side(T1), base=(side(T1), side(T1)))], Policy.LATEST_WINS, BEFORE)
    assert result.actions == [] and result.agreed == [] and result.unchanged == 1


def test_echo_of_a_no_show_written_as_cancel():
    assert outcome(make_link(side(T0, X), side(T0, N)), now=AFTER) == "agreed"
    result = plan([make_link(side(T0, X), side(T0, N), base=(side(T0, X), side(T0, N)))], Policy.LATEST_WINS, AFTER)
    assert result.unchanged == 1 and result.actions == []


def test_plan_counts_a_mixed_set():
    links = [
        make_link(side(), side()),  # unchanged
        make_link(side(T1), side(T1), booking_id="b2"),  # echo: agreed
        make_link(side(T1), side(), booking_id="b3"),  # CRM moved
        make_link(side(), side(T0, N), booking_id="b4"),  # Bookings no-show
        make_link(side(T1), side(T2), booking_id="b5"),  # both moved
        make_link(side(T1), side(T0, X), booking_id="b6"),  # moved vs cancelled, CRM wins: rule
    ]
    result = plan(links, Policy.CRM_WINS, AFTER)
    assert result.counts() == {"bookings:reschedule": 2, "crm:cancel": 1, "conflict:both_changed": 2, "conflict:rule": 1, "agreed": 1, "unchanged": 1}
    assert [a.booking_id for a in result.actions] == ["b3", "b4", "b5"]
    assert [c.booking_id for c in result.conflicts] == ["b5", "b6", "b6"]


def test_the_crm_module_decides_what_reaches_it():
    """``plan(to_crm=...)``: the CRM module adapter's rules, not the engine's, decide the CRM side."""
    from sync.engine import Conflict, appointments_to_crm
    from sync.modules import crm_module

    links = [make_link(side(), side(T1), booking_id="b1"), make_link(side(T1), side(), booking_id="b2")]  # Bookings moved; CRM moved
    seen: list[str] = []

    def refuse_everything(link: Link, now: datetime):
        seen.append(link.booking_id)
        return [], Conflict(link.booking_id, link.crm_id, "rule", "this module takes no change")

    result = plan(links, Policy.LATEST_WINS, AFTER, to_crm=refuse_everything)
    assert seen == ["b1"]  # only the link whose change goes to CRM
    assert [(c.booking_id, c.kind) for c in result.conflicts] == [("b1", "rule")]
    assert [(a.booking_id, a.target) for a in result.actions] == [("b2", Side.BOOKINGS)]
    # the Appointments__s adapter's rules are the engine's defaults
    default = plan(links, Policy.LATEST_WINS, AFTER)
    adapter = plan(links, Policy.LATEST_WINS, AFTER, to_crm=crm_module("Appointments__s").to_crm)
    assert [act(a) for a in adapter.actions] == [act(a) for a in default.actions] and adapter.counts() == default.counts()
    assert crm_module("Appointments__s").to_crm(links[0], AFTER) == appointments_to_crm(links[0], AFTER)


# --- Zoho's rules ---------------------------------------------------------------------------

RULE_TABLE = [
    # base (crm, bookings), crm now, bookings now
    ("reschedule-cancelled-booking", (side(T0, X), side(T0, X)), side(T1), side(T0, X)),
    ("reschedule-completed-booking", (side(T0, C), side(T0, C)), side(T1), side(T0, C)),
    ("reschedule-no-show-booking", (side(T0, X), side(T0, N)), side(T1), side(T0, N)),
    ("reopen-cancelled-booking", (side(T0, X), side(T0, X)), side(T0), side(T0, X)),
    ("reschedule-cancelled-crm", (side(T0, X), side(T0, X)), side(T0, X), side(T1)),
    ("reschedule-completed-crm", (side(T0, C), side(T0, C)), side(T0, C), side(T1)),
    ("complete-cancelled-crm", (side(T0, X), side(T0, X)), side(T0, X), side(T0, C)),
]


@pytest.mark.parametrize(("base", "crm", "bk"), [r[1:] for r in RULE_TABLE], ids=[r[0] for r in RULE_TABLE])
def test_no_change_to_a_finished_target(base, crm, bk):
    actions, conflicts, agreed = plan_link(make_link(crm, bk, base=base), Policy.LATEST_WINS, AFTER)
    assert render(actions, conflicts, agreed) == "| rule"
    assert "cancelled" in conflicts[0].reason or "completed" in conflicts[0].reason or "no_show" in conflicts[0].reason


END = T0 + timedelta(hours=1)
TIMING_TABLE = [
    # crm now, bookings now, end, now, outcome
    ("crm-complete-before-end", side(T0), side(T0, C), END, T0 + timedelta(minutes=30), "| deferred"),
    ("crm-complete-at-end", side(T0), side(T0, C), END, END, "crm:complete"),
    ("crm-complete-after-end", side(T0), side(T0, C), END, AFTER, "crm:complete"),
    ("crm-complete-no-end-before-start", side(T0), side(T0, C), None, T0 - timedelta(minutes=1), "| deferred"),
    ("crm-complete-no-end-at-start", side(T0), side(T0, C), None, T0, "crm:complete"),
    ("bookings-complete-before-start", side(T0, C), side(T0), END, T0 - timedelta(minutes=1), "| deferred"),
    ("bookings-complete-at-start", side(T0, C), side(T0), END, T0, "bookings:complete"),
    ("bookings-no-show-before-start", side(T0, N), side(T0), END, T0 - timedelta(minutes=1), "| deferred"),
    ("bookings-no-show-after-start", side(T0, N), side(T0), END, T0 + timedelta(minutes=5), "bookings:no_show"),
    ("bookings-cancel-before-start", side(T0, X), side(T0), END, BEFORE, "bookings:cancel"),
    ("crm-cancel-before-start", side(T0), side(T0, X), END, BEFORE, "crm:cancel"),
]


@pytest.mark.parametrize(("crm", "bk", "end", "now", "expected"), [r[1:] for r in TIMING_TABLE], ids=[r[0] for r in TIMING_TABLE])
def test_completion_timing(crm, bk, end, now, expected):
    assert outcome(make_link(crm, bk, end=end), now=now) == expected


def test_a_deferred_change_is_sent_by_a_later_run():
    link = make_link(side(T0), side(T0, C), end=END)
    assert outcome(link, now=T0) == "| deferred"
    assert outcome(link, now=END + timedelta(seconds=1)) == "crm:complete"


KOLKATA = timezone(timedelta(hours=5, minutes=30))
LA = timezone(timedelta(hours=-7))
SAME_TIME_TABLE = [
    ("same-instant-other-offsets", side(T0.astimezone(KOLKATA)), side(T0.astimezone(LA)), "agreed"),
    ("moved-into-other-offset-same-instant", side(T1.astimezone(KOLKATA)), side(T1), "agreed"),
    ("crm-other-offset-equal-to-base", side(T0.astimezone(KOLKATA)), side(T0), "agreed"),
    ("one-second-later", side(T0 + timedelta(seconds=1)), side(T0), "bookings:reschedule@" + (T0 + timedelta(seconds=1)).isoformat()),
]


@pytest.mark.parametrize(("crm", "bk", "expected"), [r[1:] for r in SAME_TIME_TABLE], ids=[r[0] for r in SAME_TIME_TABLE])
def test_reschedule_only_when_the_instant_differs(crm, bk, expected):
    assert outcome(make_link(crm, bk)) == expected


def test_same_instant_in_another_offset_is_not_a_change():
    result = plan([make_link(side(T0.astimezone(KOLKATA)), side(T0.astimezone(LA)))], Policy.LATEST_WINS, BEFORE)
    assert result.unchanged == 1 and result.agreed == []


def test_naive_start_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        SideState(datetime(2026, 6, 1, 9, 0), S)


# --- no-show --------------------------------------------------------------------------------

def test_bookings_no_show_becomes_crm_cancel_with_the_note():
    actions, conflicts, agreed = plan_link(make_link(side(), side(T0, N)), Policy.LATEST_WINS, AFTER)
    assert [(a.target, a.kind, a.note) for a in actions] == [(Side.CRM, Kind.CANCEL, NO_SHOW_NOTE)] and not conflicts and not agreed


def test_bookings_cancel_becomes_crm_cancel_without_a_note():
    actions, _, _ = plan_link(make_link(side(), side(T0, X)), Policy.LATEST_WINS, AFTER)
    assert [(a.target, a.kind, a.note) for a in actions] == [(Side.CRM, Kind.CANCEL, None)]


def test_crm_cancelled_agrees_with_bookings_no_show_but_not_with_completed():
    assert equivalent(X, N) and not equivalent(X, C) and not equivalent(C, N)


# --- idempotency keys -------------------------------------------------------------------------

def key_of(link: Link, now: datetime = BEFORE) -> str:
    actions, _, _ = plan_link(link, Policy.CRM_WINS, now)
    assert len(actions) == 1
    return actions[0].key


def test_same_change_same_key():
    assert key_of(make_link(side(T1), side())) == key_of(make_link(side(T1, S, M), side()))


def test_same_target_instant_in_another_offset_same_key():
    assert key_of(make_link(side(T1.astimezone(KOLKATA)), side())) == key_of(make_link(side(T1), side()))


KEY_VARIANTS = [
    ("other-start", make_link(side(T2), side())),
    ("other-kind", make_link(side(T0, X), side())),
    ("other-target", make_link(side(), side(T1))),
    ("other-booking", make_link(side(T1), side(), booking_id="b2")),
]


@pytest.mark.parametrize("other", [v[1] for v in KEY_VARIANTS], ids=[v[0] for v in KEY_VARIANTS])
def test_different_change_different_key(other):
    assert key_of(other) != key_of(make_link(side(T1), side()))


def test_complete_and_no_show_keys_differ():
    assert key_of(make_link(side(T0, C), side()), AFTER) != key_of(make_link(side(T0, N), side()), AFTER)


# --- daylight saving and time zones east and west of UTC -------------------------------------

def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# id, time zone, Bookings wall time, the instant it is, the wall time we write for that instant
DST_TABLE = [
    ("new-york-gap", "America/New_York", "08-Mar-2026 02:30:00", utc(2026, 3, 8, 7, 30), "08-Mar-2026 03:30:00"),
    ("new-york-spring-day", "America/New_York", "08-Mar-2026 09:00:00", utc(2026, 3, 8, 13, 0), "08-Mar-2026 09:00:00"),
    ("new-york-fold", "America/New_York", "01-Nov-2026 01:30:00", utc(2026, 11, 1, 5, 30), "01-Nov-2026 01:30:00"),
    ("new-york-fall-day", "America/New_York", "01-Nov-2026 09:00:00", utc(2026, 11, 1, 14, 0), "01-Nov-2026 09:00:00"),
    ("london-gap", "Europe/London", "29-Mar-2026 01:30:00", utc(2026, 3, 29, 1, 30), "29-Mar-2026 02:30:00"),
    ("london-fold", "Europe/London", "25-Oct-2026 01:30:00", utc(2026, 10, 25, 0, 30), "25-Oct-2026 01:30:00"),
    ("sydney-fold", "Australia/Sydney", "05-Apr-2026 02:30:00", utc(2026, 4, 4, 15, 30), "05-Apr-2026 02:30:00"),
    ("sydney-gap", "Australia/Sydney", "04-Oct-2026 02:30:00", utc(2026, 10, 3, 16, 30), "04-Oct-2026 03:30:00"),
    ("auckland-fold", "Pacific/Auckland", "05-Apr-2026 02:30:00", utc(2026, 4, 4, 13, 30), "05-Apr-2026 02:30:00"),
    ("auckland-gap", "Pacific/Auckland", "27-Sep-2026 02:30:00", utc(2026, 9, 26, 14, 30), "27-Sep-2026 03:30:00"),
    ("auckland-summer-morning", "Pacific/Auckland", "15-Jan-2026 08:00:00", utc(2026, 1, 14, 19, 0), "15-Jan-2026 08:00:00"),
    ("los-angeles-gap", "America/Los_Angeles", "08-Mar-2026 02:30:00", utc(2026, 3, 8, 10, 30), "08-Mar-2026 03:30:00"),
    ("los-angeles-fold", "America/Los_Angeles", "01-Nov-2026 01:30:00", utc(2026, 11, 1, 8, 30), "01-Nov-2026 01:30:00"),
    ("los-angeles-evening", "America/Los_Angeles", "15-Jun-2026 20:00:00", utc(2026, 6, 16, 3, 0), "15-Jun-2026 20:00:00"),
    ("kolkata", "Asia/Kolkata", "15-Jun-2026 09:00:00", utc(2026, 6, 15, 3, 30), "15-Jun-2026 09:00:00"),
    ("kolkata-early-morning", "Asia/Kolkata", "15-Jun-2026 02:00:00", utc(2026, 6, 14, 20, 30), "15-Jun-2026 02:00:00"),
]
DST_IDS = [r[0] for r in DST_TABLE]
DST_ROWS = [r[1:] for r in DST_TABLE]


def tz_link(tz: str, crm_start: datetime, bk_start: datetime, base_start: datetime) -> Link:
    return make_link(side(crm_start), side(bk_start), base=(side(base_start), side(base_start)), tz=tz)


@pytest.mark.parametrize(("tz", "wall", "instant", "written"), DST_ROWS, ids=DST_IDS)
def test_bookings_reschedule_to_a_dst_day_reaches_crm_as_the_instant(tz, wall, instant, written):
    old = instant - timedelta(days=3)
    actions, conflicts, agreed = plan_link(tz_link(tz, old, from_bookings(wall, tz), old), Policy.LATEST_WINS, old - timedelta(days=1))
    assert not conflicts and not agreed
    assert [(a.target, a.kind, a.start) for a in actions] == [(Side.CRM, Kind.RESCHEDULE, instant)]


@pytest.mark.parametrize(("tz", "wall", "instant", "written"), DST_ROWS, ids=DST_IDS)
def test_crm_reschedule_to_a_dst_day_is_written_as_the_bookings_wall_time(tz, wall, instant, written):
    old = instant - timedelta(days=3)
    actions, conflicts, agreed = plan_link(tz_link(tz, instant, old, old), Policy.LATEST_WINS, old - timedelta(days=1))
    assert not conflicts and not agreed and [(a.target, a.kind) for a in actions] == [(Side.BOOKINGS, Kind.RESCHEDULE)]
    assert actions[0].time_zone == tz and actions[0].start == instant
    assert to_bookings(actions[0].start, actions[0].time_zone) == written
    assert from_bookings(written, tz) == instant  # Bookings reads back the same instant: the echo agrees


@pytest.mark.parametrize(("tz", "wall", "instant", "written"), DST_ROWS, ids=DST_IDS)
def test_the_echo_of_a_dst_reschedule_agrees(tz, wall, instant, written):
    old = instant - timedelta(days=3)
    link = tz_link(tz, instant, from_bookings(written, tz), old)
    assert outcome(link, now=old) == "agreed"


@pytest.mark.parametrize(("tz", "wall", "instant", "written"), DST_ROWS, ids=DST_IDS)
def test_a_change_of_representation_is_not_a_change(tz, wall, instant, written):
    """The base in UTC; CRM now as a ``ZoneInfo`` time (in a fold for the fold cases),
    Bookings as parsed from its wall time: unchanged, nothing to send."""
    local = instant.astimezone(ZoneInfo(tz))
    result = plan([tz_link(tz, local, from_bookings(wall, tz), instant)], Policy.LATEST_WINS, instant - timedelta(days=1))
    assert result.unchanged == 1 and result.actions == [] and result.conflicts == [] and result.agreed == []


def test_second_occurrence_of_a_fold_is_written_as_its_wall_time():
    """01:30 EST (06:30 UTC) on the fall-back day: the wall time is right, but the
    ``dd-MMM-yyyy HH:mm:ss`` format cannot say which 01:30, and it reads back as the
    first one (01:30 EDT): an hour apart, so the instants do not agree."""
    second = utc(2026, 11, 1, 6, 30)
    old = second - timedelta(days=3)
    actions, _, _ = plan_link(tz_link("America/New_York", second, old, old), Policy.LATEST_WINS, old)
    assert to_bookings(actions[0].start, "America/New_York") == "01-Nov-2026 01:30:00"
    assert from_bookings("01-Nov-2026 01:30:00", "America/New_York") == second - timedelta(hours=1)


def test_a_value_reached_again_after_a_new_agreement_is_a_new_change():
    """A -> B, B -> A, A -> B: the third move must not look already applied."""
    moved = side(T0 + timedelta(hours=1))
    first = Link("b1", "c1", "UTC", moved, side(), base_crm=side(), base_bookings=side(), base_at=T0 - timedelta(days=2))
    again = Link("b1", "c1", "UTC", moved, side(), base_crm=side(), base_bookings=side(), base_at=T0 - timedelta(days=1))
    (a1,), _, _ = plan_link(first, Policy.LATEST_WINS, BEFORE)
    (a2,), _, _ = plan_link(again, Policy.LATEST_WINS, BEFORE)
    (a1_rerun,), _, _ = plan_link(first, Policy.LATEST_WINS, BEFORE)
    assert a1.value == a2.value and a1.key != a2.key
    assert a1_rerun.key == a1.key
