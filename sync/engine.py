"""The three-way diff: (CRM now, Bookings now, base) -> a plan of actions, conflicts and agreements.

Pure logic: no Prefect, no HTTP, no database. Instants are aware ``datetime``,
normalised to UTC before they are compared.

**Status table** (each side keeps its own words; the diff compares canonical statuses):

============================  ==================  =====================================
CRM ``Status``                canonical           Bookings ``status``
============================  ==================  =====================================
``Scheduled``, ``Overdue``    ``scheduled``       ``UPCOMING``, ``ONGOING``, ``PENDING``
``Cancelled``                 ``cancelled``       ``CANCEL``, ``PAYMENT_FAILURE``
``Completed``                 ``completed``       ``COMPLETED``
``Cancelled`` (+ note)        ``no_show``         ``NO_SHOW``
(none: the link is held)      (none)              ``PENDING_PAYMENT``
============================  ==================  =====================================

CRM has no no-show: a Bookings no-show is written to CRM as ``Cancelled`` with
``Cancellation_Note`` "No-show (Zoho Bookings)", and CRM ``Cancelled`` agrees with
Bookings ``NO_SHOW``. ``Overdue`` is CRM's own label for a past ``Scheduled``
appointment, not a change.

The payment statuses (Bookings fetch-appointment doc; what they mean is not documented,
so this is our reading): ``PAYMENT_FAILURE`` is a booking that will not take place,
a cancellation (carried to CRM as ``Cancelled``; CRM ``Cancelled`` agrees with it;
Bookings takes no further change, like ``CANCEL``). ``PENDING_PAYMENT`` is not yet an
appointment to mirror: it has no canonical status (:data:`BOOKINGS_ON_HOLD`), and a link
whose booking shows it is *held*: nothing is planned or sent either way, the run reports
it as deferred with the reason (not a failure), and the next run looks again (paid:
``UPCOMING``, synced; failed: ``PAYMENT_FAILURE``, cancelled).

**The diff.** A side *changed* when its (start, canonical status) differs from
its value in the base, the last state both sides agreed on. Both sides equal
(start instant and equivalent status; for two equivalent finished statuses the
start is ignored): nothing to send; the base follows. One side
changed: propagate it. Both changed to different values: the conflict policy
decides (``latest_wins`` by modification time, ``crm_wins``, ``bookings_wins``,
``report_only``) and the conflict is reported. No base yet and the sides differ:
``initial_source`` decides (Bookings by default: it is the booking system).

**Zoho's rules, checked before sending** (a breach becomes a conflict with the
reason, never a failed call): no reschedule of a cancelled or completed
appointment / booking; no status change of a finished booking or appointment; no
completing a CRM appointment before its end (*deferred*: the next run tries
again); no completing or no-show on Bookings before the start; a reschedule only
to a different time. ``Rescheduled_From`` is never sent (optional in the docs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Iterable


class Canon(str, Enum):
    """Canonical appointment status."""

    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"

    @property
    def finished(self) -> bool:
        """Cancelled, completed or no-show: no further reschedule or status change."""
        return self is not Canon.SCHEDULED


UTC = timezone.utc


def _utc(value: datetime | None, what: str) -> datetime | None:
    """``value`` as UTC (``timezone.utc``); ``ValueError`` for a naive one.

    Equality of aware datetimes in different zones is not equality of instants when
    one is a ``ZoneInfo`` time in a fold or gap (PEP 495: always unequal), so the
    diff normalises to UTC before comparing.
    """
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


CRM_TO_CANON = {"Scheduled": Canon.SCHEDULED, "Overdue": Canon.SCHEDULED, "Completed": Canon.COMPLETED, "Cancelled": Canon.CANCELLED}
BOOKINGS_TO_CANON = {
    "UPCOMING": Canon.SCHEDULED, "ONGOING": Canon.SCHEDULED, "PENDING": Canon.SCHEDULED,
    "CANCEL": Canon.CANCELLED, "COMPLETED": Canon.COMPLETED, "NO_SHOW": Canon.NO_SHOW,
    "PAYMENT_FAILURE": Canon.CANCELLED,
}
#: Bookings statuses that are not yet an appointment to mirror, with the reason reported for a
#: link held by one (see the module docstring): no canonical status, nothing planned or sent.
BOOKINGS_ON_HOLD = {
    "PENDING_PAYMENT": "the booking waits for the customer's payment (Bookings PENDING_PAYMENT): not an appointment to mirror yet; nothing sent, looked at again by the next run",
}
#: The note written to CRM for a Bookings no-show.
NO_SHOW_NOTE = "No-show (Zoho Bookings)"


class OnHold(ValueError):
    """A Bookings status of :data:`BOOKINGS_ON_HOLD`: the link is held this run, not diffed.

    ``status`` (upper case), ``reason`` (the table's), ``booking_id`` / ``crm_id`` of the
    link when known. A ``ValueError``, so a caller that only knows "no canonical status"
    still refuses to diff it; :meth:`conflict` is how a run reports it (deferred, not a failure).
    """

    def __init__(self, status: str, booking_id: str | None = None, crm_id: str | None = None) -> None:
        self.status = status.upper()
        self.reason = BOOKINGS_ON_HOLD[self.status]
        self.booking_id, self.crm_id = booking_id, crm_id
        super().__init__(f"link {booking_id}: {self.reason}" if booking_id else self.reason)

    def conflict(self) -> "Conflict":
        """The held link as a ``deferred`` :class:`Conflict` with the reason."""
        return Conflict(self.booking_id or "?", self.crm_id or "?", "deferred", self.reason)


def crm_canon(status: str | None) -> Canon:
    """Canonical status of a CRM ``Status``; raises ``ValueError`` for an unknown one."""
    try:
        return CRM_TO_CANON[status or ""]
    except KeyError:
        raise ValueError(f"unknown CRM appointment Status {status!r}") from None


def bookings_canon(status: str | None) -> Canon:
    """Canonical status of a Bookings ``status`` (any case); raises :class:`OnHold` (a
    ``ValueError``) for ``PENDING_PAYMENT`` and ``ValueError`` for an unknown one."""
    key = (status or "").upper()
    if key in BOOKINGS_ON_HOLD:
        raise OnHold(key)
    try:
        return BOOKINGS_TO_CANON[key]
    except KeyError:
        raise ValueError(f"unknown Bookings status {status!r}") from None


def equivalent(crm: Canon, bookings: Canon) -> bool:
    """Whether a CRM status and a Bookings status say the same (CRM cancelled = Bookings no-show)."""
    return crm == bookings or (crm is Canon.CANCELLED and bookings is Canon.NO_SHOW) or (crm is Canon.NO_SHOW and bookings is Canon.NO_SHOW)


class Side(str, Enum):
    """Which system."""

    CRM = "crm"
    BOOKINGS = "bookings"

    @property
    def other(self) -> "Side":
        return Side.BOOKINGS if self is Side.CRM else Side.CRM


class Policy(str, Enum):
    """What to do when both sides changed differently."""

    LATEST_WINS = "latest_wins"
    CRM_WINS = "crm_wins"
    BOOKINGS_WINS = "bookings_wins"
    REPORT_ONLY = "report_only"


class Kind(str, Enum):
    """Action kinds (one Zoho call each on Bookings; one record of a batch on CRM)."""

    RESCHEDULE = "reschedule"
    CANCEL = "cancel"
    COMPLETE = "complete"
    NO_SHOW = "no_show"


@dataclass(frozen=True)
class SideState:
    """One side of a link now (or in the base): start instant, canonical status, last modification.

    ``start`` and ``modified`` are normalised to UTC (any aware ``datetime`` is
    accepted; a naive one raises ``ValueError``).
    """

    start: datetime
    status: Canon
    modified: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "start"))
        object.__setattr__(self, "modified", _utc(self.modified, "modified"))

    def same(self, other: "SideState | None") -> bool:
        """Same start instant and status (modification time ignored)."""
        return other is not None and self.start == other.start and self.status == other.status


@dataclass(frozen=True)
class Link:
    """A CRM appointment and the booking it is linked to, with the base.

    ``end`` is the appointment's end instant (for "no completing before the end");
    ``time_zone`` is the booking's (Bookings times are written in it). ``end`` and
    ``base_at`` are normalised to UTC like :class:`SideState`'s instants, so a plan
    (its keys, and the times in its reasons) does not depend on the offset they came in.
    """

    booking_id: str
    crm_id: str
    time_zone: str
    crm: SideState
    bookings: SideState
    end: datetime | None = None
    base_crm: SideState | None = None
    base_bookings: SideState | None = None
    #: When the base was last agreed (None: no base yet); part of the actions' idempotency keys.
    base_at: datetime | None = None
    #: The booking's own end (its duration: ``bookings_end - bookings.start``), when known.
    bookings_end: datetime | None = None
    #: The CRM record's title, for a module that has one (Meetings' ``Event_Title``), else None.
    title: str | None = None
    #: The CRM record was deleted in CRM (a Meeting's ``delete`` notification): nothing can be written to it.
    crm_gone: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", _utc(self.end, "end"))
        object.__setattr__(self, "base_at", _utc(self.base_at, "base_at"))
        object.__setattr__(self, "bookings_end", _utc(self.bookings_end, "bookings_end"))


@dataclass(frozen=True)
class Action:
    """One change to send: ``kind`` on ``target`` for ``booking_id`` / ``crm_id``.

    ``start`` is the new start for a reschedule (normalised to UTC; written in
    ``time_zone`` for Bookings); ``end`` the new end where the target takes one (a
    Meeting's ``End_DateTime``). ``note``: text the write carries (a cancellation note,
    a Meeting's new title). ``since`` names the base the change departs from
    (its agreement time, or ``new``). ``scope``: the CRM module the plan was made for
    when it is not the first one (``Events``; empty for ``Appointments__s``, whose keys
    predate it). ``key`` is the idempotency key (scope, link, target,
    kind, target value, base): the same change planned again before the base moves
    (a rerun after a crash) has the same key whatever offset the instant came in,
    while the same value reached again later (A -> B -> A -> B) is a new change.
    """

    booking_id: str
    crm_id: str
    target: Side
    kind: Kind
    time_zone: str
    start: datetime | None = None
    note: str | None = None
    since: str = "new"
    end: datetime | None = None
    scope: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "start"))
        object.__setattr__(self, "end", _utc(self.end, "end"))

    @property
    def value(self) -> str:
        """The target value (ISO start for a reschedule, else the kind)."""
        return self.start.isoformat() if self.start is not None else self.kind.value

    @property
    def key(self) -> str:
        """Idempotency key: the same change to the same link (of the same module) has the same key."""
        key = f"{self.booking_id}|{self.target.value}|{self.kind.value}|{self.value}|{self.since}"
        return f"{self.scope}|{key}" if self.scope else key


@dataclass(frozen=True)
class Conflict:
    """Something the plan will not (or not yet) send, with the reason.

    ``kind``: ``both_changed`` (resolved by policy unless ``report_only``),
    ``rule`` (a Zoho rule forbids it), ``deferred`` (allowed later: the next run retries),
    ``kept`` (the CRM module cannot show it and the organisation chose to leave it so, e.g.
    a cancelled booking's Meeting without a status field: reported once, and the link's
    base is written as it is, so it is not planned again until a side changes).
    """

    booking_id: str
    crm_id: str
    kind: str
    reason: str
    winner: Side | None = None


@dataclass
class Plan:
    """The plan for a set of links."""

    actions: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    #: Links whose sides agree now and whose base should be (re)written.
    agreed: list[Link] = field(default_factory=list)
    #: Links with a ``kept`` conflict: their base is written as they are now (reported once).
    kept: list[Link] = field(default_factory=list)
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        """Actions per ``target:kind``, conflicts per kind, and agreements."""
        out: dict[str, int] = {}
        for a in self.actions:
            out[f"{a.target.value}:{a.kind.value}"] = out.get(f"{a.target.value}:{a.kind.value}", 0) + 1
        for c in self.conflicts:
            out[f"conflict:{c.kind}"] = out.get(f"conflict:{c.kind}", 0) + 1
        out["agreed"] = len(self.agreed)
        out["unchanged"] = self.unchanged
        return out


def agree(link: Link) -> bool:
    """Whether both sides say the same now: the same start instant and equivalent statuses,
    or equivalent finished statuses (a cancelled or completed appointment's start no longer
    matters, and Zoho would refuse to move it anyway)."""
    if not equivalent(link.crm.status, link.bookings.status):
        return False
    return link.crm.start == link.bookings.start or link.crm.status.finished


def since_of(link: Link) -> str:
    """The ``since`` of actions planned from ``link``: its base's agreement time (ISO UTC), or ``new``."""
    return link.base_at.astimezone(timezone.utc).isoformat() if link.base_at is not None else "new"


def _winner(link: Link, policy: Policy) -> Side | None:
    if policy is Policy.CRM_WINS:
        return Side.CRM
    if policy is Policy.BOOKINGS_WINS:
        return Side.BOOKINGS
    if policy is Policy.REPORT_ONLY:
        return None
    crm_at, bk_at = link.crm.modified, link.bookings.modified
    if crm_at is None and bk_at is None:
        return Side.BOOKINGS
    if bk_at is None or (crm_at is not None and crm_at > bk_at):
        return Side.CRM
    return Side.BOOKINGS


def _to_bookings(link: Link, now: datetime) -> tuple[list[Action], Conflict | None]:
    """Actions that make Bookings say what CRM says."""
    src, dst = link.crm, link.bookings
    ids = dict(booking_id=link.booking_id, crm_id=link.crm_id)
    base = dict(ids, time_zone=link.time_zone, since=since_of(link))
    if dst.status.finished:
        return [], Conflict(**ids, kind="rule", reason=f"the booking is {dst.status.value}; Bookings takes no further change")
    if src.status is Canon.CANCELLED:
        return [Action(**base, target=Side.BOOKINGS, kind=Kind.CANCEL)], None
    if src.status in (Canon.COMPLETED, Canon.NO_SHOW):
        if dst.start > now:
            return [], Conflict(**ids, kind="deferred", reason="a booking cannot be completed before it starts; retried after the start")
        kind = Kind.COMPLETE if src.status is Canon.COMPLETED else Kind.NO_SHOW
        return [Action(**base, target=Side.BOOKINGS, kind=kind)], None
    if src.start != dst.start:
        return [Action(**base, target=Side.BOOKINGS, kind=Kind.RESCHEDULE, start=src.start)], None
    return [], None


#: A CRM module's rules for carrying the Bookings side to it: ``(link, now) -> (actions, rule
#: conflict or None)``; each CRM module adapter has one (``sync.modules.CrmModule.to_crm``).
ToCrm = Callable[[Link, datetime], tuple[list[Action], Conflict | None]]


def appointments_to_crm(link: Link, now: datetime) -> tuple[list[Action], Conflict | None]:
    """Actions that make a CRM appointment (``Appointments__s``) say what Bookings says, or the
    rule that forbids it (seeds 002/004: a finished appointment takes no change, ``NOT_ALLOWED``;
    ``Completed`` only after the end, so deferred until then)."""
    src, dst = link.bookings, link.crm
    ids = dict(booking_id=link.booking_id, crm_id=link.crm_id)
    base = dict(ids, time_zone=link.time_zone, since=since_of(link))
    if dst.status.finished:
        return [], Conflict(**ids, kind="rule", reason=f"the CRM appointment is {dst.status.value}; Zoho does not allow rescheduling or changing it (NOT_ALLOWED)")
    if src.status in (Canon.CANCELLED, Canon.NO_SHOW):
        note = NO_SHOW_NOTE if src.status is Canon.NO_SHOW else None
        return [Action(**base, target=Side.CRM, kind=Kind.CANCEL, note=note)], None
    if src.status is Canon.COMPLETED:
        end = link.end or src.start
        if end > now:
            return [], Conflict(**ids, kind="deferred", reason=f"CRM allows Completed only after the end ({end.isoformat()}); retried then")
        return [Action(**base, target=Side.CRM, kind=Kind.COMPLETE)], None
    if src.start != dst.start:
        return [Action(**base, target=Side.CRM, kind=Kind.RESCHEDULE, start=src.start)], None
    return [], None


def plan_link(
    link: Link, policy: Policy, now: datetime, initial_source: Side = Side.BOOKINGS, to_crm: ToCrm = appointments_to_crm, scope: str = ""
) -> tuple[list[Action], list[Conflict], bool]:
    """Plan one link: ``(actions, conflicts, agreed)``; ``to_crm``: the CRM module's rules
    (default: ``Appointments__s``, :func:`appointments_to_crm`); ``scope``: set on every action
    (:attr:`Action.scope`, the module's part of the keys).

    ``agreed`` is True when both sides say the same now, so the base should be
    written (no action is sent then: this is where our own echoes die).
    """
    if agree(link):
        return [], [], True
    if link.base_crm is None or link.base_bookings is None:
        source: Side | None = initial_source
        conflict = None
    else:
        crm_changed = not link.crm.same(link.base_crm)
        bk_changed = not link.bookings.same(link.base_bookings)
        conflict = None
        if crm_changed and not bk_changed:
            source = Side.CRM
        elif bk_changed and not crm_changed:
            source = Side.BOOKINGS
        elif crm_changed and bk_changed:
            source = _winner(link, policy)
            how = f"{source.value} wins ({policy.value})" if source else "reported only"
            conflict = Conflict(link.booking_id, link.crm_id, "both_changed", f"changed on both sides since the last agreement; {how}", source)
        else:  # neither side moved from a base they never agreed on: repair from the initial source
            source = initial_source
    conflicts = [conflict] if conflict else []
    if source is None:
        return [], conflicts, False
    actions, rule = (_to_bookings if source is Side.CRM else to_crm)(link, now)
    if scope:
        actions = [replace(a, scope=scope) for a in actions]
    return actions, conflicts + ([rule] if rule else []), False


def plan(
    links: Iterable[Link], policy: Policy, now: datetime, initial_source: Side = Side.BOOKINGS, to_crm: ToCrm = appointments_to_crm, scope: str = ""
) -> Plan:
    """Plan every link (see :func:`plan_link`)."""
    out = Plan()
    for link in links:
        actions, conflicts, agreed = plan_link(link, policy, now, initial_source, to_crm, scope)
        out.actions.extend(actions)
        out.conflicts.extend(conflicts)
        if any(c.kind == "kept" for c in conflicts):
            out.kept.append(link)
        if agreed:
            if link.crm.same(link.base_crm) and link.bookings.same(link.base_bookings):
                out.unchanged += 1
            else:
                out.agreed.append(link)
    return out
