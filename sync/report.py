"""The sync run's summary (returned by the flow, shown as artifacts) and how it reads.

Pure: no Prefect, no HTTP, no database. The flow fills a :class:`SyncSummary` as it
goes and publishes :meth:`SyncSummary.markdown` and the tables
(:meth:`SyncSummary.change_table`, :meth:`SyncSummary.conflict_table`,
:meth:`SyncSummary.failure_table`) as artifacts, also when the run fails part-way.

Times in rows are shown in the booking's own time zone and in UTC, e.g.
``2026-12-01 10:00 Europe/London (10:00 UTC)``; statuses in words
(``Scheduled``, ``Cancelled``, ``Completed``, ``No-show``). No secrets: error
texts are cut to one line and token-like values are masked (:func:`one_line_error`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from sync.engine import NO_SHOW_NOTE, Action, Canon, Conflict, Kind, Link, Policy, Side, SideState

UTC = timezone.utc

#: Canonical statuses in words.
STATUS_WORDS = {Canon.SCHEDULED: "Scheduled", Canon.CANCELLED: "Cancelled", Canon.COMPLETED: "Completed", Canon.NO_SHOW: "No-show"}
#: Sides in words.
SIDE_WORDS = {Side.CRM: "CRM", Side.BOOKINGS: "Bookings"}
#: What the next run does after a failed run.
AFTER_FAILURE = "the next run re-plans from the base; nothing applied is sent twice"
#: The state message of a records run that found nothing to do.
NOTHING_TO_DO = "nothing to do: echo of an earlier write (both sides already agree)"
#: At most this many rows per table artifact.
MAX_ROWS = 1000


def show_time(instant: datetime | None, time_zone: str | None) -> str:
    """``instant`` in ``time_zone`` and in UTC: ``2026-12-01 10:00 Europe/London (10:00 UTC)``.

    The UTC part repeats the date when it differs (``2026-12-01 01:00 Asia/Kolkata
    (2026-11-30 19:30 UTC)``); seconds are shown only when not zero. A ``time_zone``
    that is empty, ``UTC`` or unknown gives the UTC time alone (``2026-12-01 10:00 UTC``).
    ``None`` gives ``-``. A naive ``instant`` is taken as UTC.
    """
    if instant is None:
        return "-"
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    utc = instant.astimezone(UTC)
    fmt = "%H:%M:%S" if utc.second else "%H:%M"
    try:
        zone = ZoneInfo(time_zone) if time_zone and time_zone.upper() != "UTC" else None
    except (ValueError, KeyError, OSError):  # not a time zone name
        zone = None
    if zone is None:
        return f"{utc:%Y-%m-%d} {utc.strftime(fmt)} UTC"
    local = instant.astimezone(zone)
    utc_text = utc.strftime(fmt) if utc.date() == local.date() else f"{utc:%Y-%m-%d} {utc.strftime(fmt)}"
    return f"{local:%Y-%m-%d} {local.strftime(fmt)} {time_zone} ({utc_text} UTC)"


def change_name(action: Action) -> str:
    """What an action does, in words: ``reschedule``, ``cancel``, ``complete`` or ``no-show``.

    A Bookings ``NO_SHOW`` written to CRM is a ``cancel`` action with the note
    :data:`~sync.engine.NO_SHOW_NOTE` (CRM has no no-show); it is called ``no-show``.
    """
    if action.kind is Kind.NO_SHOW or (action.kind is Kind.CANCEL and action.note == NO_SHOW_NOTE):
        return "no-show"
    return action.kind.value


def _new_status(action: Action) -> str:
    if action.target is Side.CRM and change_name(action) == "no-show":
        return f'Cancelled, note "{NO_SHOW_NOTE}" (CRM has no no-show)'
    return {Kind.CANCEL: "Cancelled", Kind.COMPLETE: "Completed", Kind.NO_SHOW: "No-show"}[action.kind]


def change_entry(action: Action, link: Link | None) -> dict[str, Any]:
    """One change for :attr:`SyncSummary.changes` / :attr:`SyncSummary.failures`.

    ``link`` is the link as planned (both sides before the write). Keys: ``booking_id``,
    ``crm_id``, ``target`` (``crm`` / ``bookings``: the side written), ``kind`` (the
    action kind, as logged in ``sync_actions``), ``value`` (ISO UTC start or the kind),
    and for people: ``change`` (:func:`change_name`), ``written_to`` (``CRM`` /
    ``Bookings``), ``old`` and ``new`` (``start <local> (<UTC>)`` or ``status <word>``,
    see :func:`show_time`), ``time_zone`` (the booking's).
    """
    tz = link.time_zone if link is not None else action.time_zone
    before: SideState | None = None
    if link is not None:
        before = link.crm if action.target is Side.CRM else link.bookings
    if action.kind is Kind.RESCHEDULE:
        old = f"start {show_time(before.start, tz)}" if before else "-"
        new = f"start {show_time(action.start, tz)}"
    else:
        old = f"status {STATUS_WORDS[before.status]}" if before else "-"
        new = f"status {_new_status(action)}"
    return {
        "booking_id": action.booking_id, "crm_id": action.crm_id, "target": action.target.value, "kind": action.kind.value, "value": action.value,
        "change": change_name(action), "written_to": SIDE_WORDS[action.target] + (f" {action.scope}" if action.scope and action.target is Side.CRM else ""),
        "old": old, "new": new, "time_zone": tz,
    }


def read_failure(booking_id: str, code: str, message: str) -> dict[str, Any]:
    """A :attr:`SyncSummary.failures` entry for a booking that could not be read (``getappointment``)."""
    return {"booking_id": booking_id, "crm_id": "-", "target": "bookings", "kind": "read", "change": "read", "code": code, "message": message}


def invalid_record(booking_id: str | None, crm_id: str | None, message: str) -> dict[str, Any]:
    """A :attr:`SyncSummary.failures` entry for a link that cannot be diffed (unknown status, no start)."""
    return {"booking_id": booking_id or "?", "crm_id": crm_id or "?", "target": "-", "kind": "invalid", "change": "invalid record", "code": "INVALID_RECORD", "message": message}


def _side_wish(now: SideState, base: SideState | None, tz: str) -> str:
    """What one side says, relative to the base: ``start ...``, ``status ...``, or ``unchanged (...)``."""
    parts = []
    if base is None or now.start != base.start:
        parts.append(f"start {show_time(now.start, tz)}")
    if base is None or now.status != base.status:
        parts.append(f"status {STATUS_WORDS[now.status]}")
    if not parts:
        return f"unchanged ({STATUS_WORDS[now.status]}, {show_time(now.start, tz)})"
    return ", ".join(parts)


def _why(conflict: Conflict, link: Link | None, policy: Policy) -> str:
    if conflict.kind != "both_changed":
        return conflict.reason
    if policy is Policy.LATEST_WINS:
        rule = "the later edit wins"
        if link is not None:
            crm_at, bk_at = link.crm.modified, link.bookings.modified
            tie = "; a tie goes to Bookings" if crm_at is not None and crm_at == bk_at else ""
            rule += f" (CRM modified {show_time(crm_at, None)}, Bookings change first seen {show_time(bk_at, None)}: Bookings has no modification time{tie})"
    else:
        rule = {Policy.CRM_WINS: "CRM always wins", Policy.BOOKINGS_WINS: "Bookings always wins", Policy.REPORT_ONLY: "neither is sent; fix it in either product"}[policy]
    return f"both sides changed since they last agreed; policy {policy.value}: {rule}"


def conflict_entry(conflict: Conflict, link: Link | None, policy: Policy) -> dict[str, Any]:
    """One conflict for :attr:`SyncSummary.conflict_list`.

    Keys: ``booking_id``, ``crm_id``, ``kind`` (``both_changed``, ``rule``,
    ``deferred``), ``reason`` (the engine's), ``winner`` (``crm`` / ``bookings`` / None),
    and for people: ``crm_wants`` / ``bookings_wants`` (each side's start and status
    where they differ from the base, local time and UTC), ``outcome`` (who won, or
    why nothing was sent) and ``why`` (the policy and the reason).
    """
    if link is not None:
        crm = _side_wish(link.crm, link.base_crm, link.time_zone)
        bookings = _side_wish(link.bookings, link.base_bookings, link.time_zone)
    else:
        crm = bookings = "-"
    if conflict.kind == "deferred":
        outcome = "none yet: deferred, the next run tries again"
    elif conflict.kind == "rule":
        outcome = "none: not sent (Zoho does not allow it)"
    elif conflict.winner is None:
        outcome = f"none: reported only ({policy.value})"
    else:
        outcome = f"{SIDE_WORDS[conflict.winner]} ({policy.value})"
    return {
        "booking_id": conflict.booking_id, "crm_id": conflict.crm_id, "kind": conflict.kind, "reason": conflict.reason,
        "winner": conflict.winner.value if conflict.winner else None,
        "crm_wants": crm, "bookings_wants": bookings, "outcome": outcome, "why": _why(conflict, link, policy),
    }


_SECRETS = re.compile(
    r"(?i)(zoho-oauthtoken\s+|bearer\s+|(?:access_token|refresh_token|client_secret|token|secret|password)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;]+"
)


def one_line_error(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most ``limit`` characters, token-like values masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _SECRETS.sub(lambda m: f"{m.group(1)}***", text)
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _id_part(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "~"


def run_name(mode: str, dry_run: bool, booking_ids: list[str] | None, crm_ids: list[str] | None, at: datetime) -> str:
    """The flow run's name: ``sync-<mode>[-dry-run]-<UTC minute>``, e.g. ``sync-incremental-2026-11-21T10:05Z``.

    Records runs (``booking_ids`` or ``crm_ids`` given, even empty) are named after
    what they were asked to touch: the first booking id (else ``crm-<first CRM id>``)
    and ``+N`` for the N other ids: ``sync-records-#AN-00123-+4-2026-11-21T10:05Z``.
    ``at`` is an aware datetime (shown in UTC).
    """
    stamp = f"{at.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
    dry = "-dry-run" if dry_run else ""
    if booking_ids is None and crm_ids is None:
        return f"sync-{mode}{dry}-{stamp}"
    ids = [*(booking_ids or []), *(f"crm-{c}" for c in crm_ids or [])]
    what = f"-{_id_part(str(ids[0]))}" + (f"-+{len(ids) - 1}" if len(ids) > 1 else "") if ids else "-no-ids"
    return f"sync-records{dry}{what}-{stamp}"


def nothing_to_do_name(name: str) -> str:
    """``name`` marked as a run that found nothing to do: ``sync-records-#AN-00123-nothing-to-do-2026-11-21T10:05Z``."""
    if "-nothing-to-do" in name:
        return name
    stamp = re.search(r"-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$", name)
    return f"{name[: stamp.start()]}-nothing-to-do{stamp.group()}" if stamp else f"{name}-nothing-to-do"


class SyncSummary(BaseModel):
    """What one sync run saw and did. Times are aware UTC; no secrets.

    Counts: ``failed`` is every entry of ``failures``: refused or failed writes, bookings
    that could not be read (``kind`` ``read``) and links that could not be diffed
    (``kind`` ``invalid``; also counted in ``invalid``). ``error``: set when the run
    stopped part-way (one line, see :func:`one_line_error`); ``stage``: the step it was in.

    Zoho API use: ``api_calls`` (calls by step: ``bookings_read``, ``crm_write``...);
    ``zoho_calls`` (``{family: {"reads", "writes", "units", "refused"}}`` as sent, retries
    included; units are Bookings calls and CRM credits); ``budget`` (``{family: {"day",
    "used", "budget", "limit", "forecast", "left"}}``, the day so far including this run,
    :meth:`sync.budget.FamilyDay.summary`); ``waiting``: what the budget put off, in words
    (done by a later run, nothing lost); ``would_call``: a dry run's writes
    (``bookings_calls``, ``crm_calls``, ``crm_credits``).

    ``modules``: the CRM modules synced (``Appointments__s``, ``Events``); the counts add up
    over them. ``notes``: what the run saw and only reports (records of a module not synced,
    Meetings missing from a Bulk Read), in words. ``kept``: differences a module keeps as they are by the organisation's choice
    (a cancelled booking's Meeting in time-only mode, a Meeting deleted in CRM), reported once.
    """

    run_id: str
    mode: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    links: int = 0
    candidates: int = 0
    unchanged: int = 0
    agreed: int = 0
    planned: dict[str, int] = Field(default_factory=dict)
    applied: int = 0
    failed: int = 0
    conflicts: int = 0
    deferred: int = 0
    kept: int = 0
    invalid: int = 0
    modules: list[str] = Field(default_factory=list)
    api_calls: dict[str, int] = Field(default_factory=dict)
    zoho_calls: dict[str, dict[str, int]] = Field(default_factory=dict)
    budget: dict[str, dict[str, Any]] = Field(default_factory=dict)
    waiting: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    would_call: dict[str, int] = Field(default_factory=dict)
    token_refreshed: bool = False
    changes: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    conflict_list: list[dict[str, Any]] = Field(default_factory=list)
    stage: str = "starting"
    error: str | None = None

    def add_failure(self, entry: dict[str, Any]) -> None:
        """Record a failure (a write refused or failed, a read failure, an invalid record) and count it."""
        self.failures.append(entry)
        self.failed += 1
        if entry.get("kind") == "invalid":
            self.invalid += 1

    def fail(self, exc: BaseException, now: datetime) -> None:
        """Mark the run as stopped part-way by ``exc`` (kept as one line, no secrets) at ``now``."""
        self.error = one_line_error(exc)
        self.finished_at = now

    @property
    def nothing_to_do(self) -> bool:
        """True when the run changed nothing and found nothing wrong: nothing planned, applied,
        failed, in conflict or deferred (for a records run: the echo of an earlier write)."""
        return self.error is None and not (self.planned or self.applied or self.failed or self.conflicts or self.deferred or self.kept or self.waiting or self.notes)

    def headline(self) -> str:
        """One line for the run's final state message: ``3 applied, 1 failed, 2 conflicts`` or
        :data:`NOTHING_TO_DO` for a records run that found nothing to do."""
        if self.error:
            return f"failed while {self.stage}: {self.error}; {self.applied} applied before that"
        if self.nothing_to_do:
            return NOTHING_TO_DO if self.mode == "records" else "nothing to do: both sides agree"
        verb = "planned (dry run)" if self.dry_run else "applied"
        done = sum(self.planned.values()) if self.dry_run else self.applied
        waiting = f"; {len(self.waiting)} put off by the API budget" if self.waiting else ""
        kept = f", {self.kept} kept as they are" if self.kept else ""
        return f"{done} {verb}, {self.failed} failed, {_count(self.conflicts, 'conflict')}, {self.deferred} deferred{kept}{waiting}"

    def budget_markdown(self) -> str:
        """The "Zoho API today" part of :meth:`markdown`: per family the day so far against the
        budget and Zoho's limit, the forecast for the day, this run's calls; what the budget put
        off; a dry run's writes."""
        words = {"bookings": ("Bookings calls", "day"), "crm": ("CRM credits", "24 h")}
        rows = []
        for family in ("bookings", "crm"):
            day, run = self.budget.get(family), self.zoho_calls.get(family, {})
            if not day and not run:
                continue
            name, period = words[family]
            spent = f"{run.get('reads', 0)} reads, {run.get('writes', 0)} writes" + (f", {run['refused']} not sent" if run.get("refused") else "")
            if day:
                low = " **over budget**" if int(day["forecast"]) > int(day["budget"]) else ""
                rows.append(f"| {name} ({period} {day['day']}) | {day['used']} / {day['budget']} (Zoho: {day['limit']}) | {day['forecast']}{low} | {spent} |")
            else:
                rows.append(f"| {name} | - | - | {spent} |")
        text = ""
        if rows:
            text = "\n### Zoho API today\n\n| | used / budget | forecast for the day | this run |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
        if self.waiting:
            text += "\nPut off by the API budget (a later run does it; nothing is lost):\n\n" + "\n".join(f"- {w}" for w in self.waiting[:50]) + "\n"
        if self.notes:
            text += "\nReported only (nothing was changed for these):\n\n" + "\n".join(f"- {n}" for n in self.notes[:50]) + "\n"
        if self.would_call:
            text += f"\nA real run would send {self.would_call.get('bookings_calls', 0)} Bookings calls and {self.would_call.get('crm_calls', 0)} CRM calls ({self.would_call.get('crm_credits', 0)} credits).\n"
        return text

    def markdown(self) -> str:
        """The run as a markdown summary: outcome, what happens next, the counts."""
        planned = ", ".join(f"{k} {v}" for k, v in sorted(self.planned.items())) or "nothing"
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.api_calls.items())) or "none"
        if self.error:
            outcome = (
                f"**Failed while {self.stage}**: `{self.error}`\n\n"
                f"Applied before the failure: {self.applied} (see `sync-changes`). Next: {AFTER_FAILURE}.\n\n"
            )
        elif self.nothing_to_do:
            outcome = f"**{_first_upper(self.headline())}.**\n\n"
        else:
            outcome = f"**{_first_upper(self.headline())}.**" + (" Failed and deferred changes are tried again by the next run." if self.failed or self.deferred else "") + "\n\n"
        failed = f"{self.failed}" + (f" ({self.invalid} invalid records)" if self.invalid else "")
        return (
            f"## Appointment sync ({self.mode}{', dry run' if self.dry_run else ''})\n\n{outcome}"
            f"| | |\n|---|---|\n| CRM modules | {', '.join(self.modules) or '-'} |\n| linked records (all modules) | {self.links} |\n| unchanged | {self.unchanged} |\n"
            f"| agreed (base updated, nothing sent) | {self.agreed} |\n| planned | {planned} |\n| applied | {self.applied} |\n"
            f"| failed (retried next run) | {failed} |\n| conflicts | {self.conflicts} |\n| deferred | {self.deferred} |\n| kept as they are | {self.kept} |\n"
            f"| invalid records skipped | {self.invalid} |\n| API calls | {calls} |\n| token refreshed | {self.token_refreshed} |\n"
            + self.budget_markdown()
        )

    def change_table(self) -> list[dict[str, str]]:
        """Rows of the ``sync-changes`` artifact: ``booking_id``, ``crm_id``, ``written_to``, ``change``, ``old``, ``new``."""
        return [_pick(c, "booking_id", "crm_id", "written_to", "change", "old", "new") for c in self.changes[:MAX_ROWS]]

    def failure_table(self) -> list[dict[str, str]]:
        """Rows of the ``sync-failures`` artifact: ``booking_id``, ``crm_id``, ``written_to``, ``change``,
        ``wanted`` (the new value tried), ``code``, ``message``."""
        return [{**_pick(f, "booking_id", "crm_id", "written_to", "change"), "wanted": f.get("new", "-"), **_pick(f, "code", "message")} for f in self.failures[:MAX_ROWS]]

    def conflict_table(self) -> list[dict[str, str]]:
        """Rows of the ``sync-conflicts`` artifact: ``booking_id``, ``crm_id``, ``kind``, ``crm_wants``,
        ``bookings_wants``, ``outcome``, ``why``."""
        return [_pick(c, "booking_id", "crm_id", "kind", "crm_wants", "bookings_wants", "outcome", "why") for c in self.conflict_list[:MAX_ROWS]]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(row: dict[str, Any], *keys: str) -> dict[str, str]:
    out = {}
    for k in keys:
        value = row.get(k)
        if k == "written_to" and value is None:
            value = {"crm": "CRM", "bookings": "Bookings"}.get(row.get("target") or "", row.get("target") or "-")
        if k == "change" and value is None:
            value = row.get("kind")
        out[k] = "-" if value is None else str(value)
    return out


def conflicts_for(conflicts: Iterable[Conflict], links: dict[str, Link], policy: Policy) -> list[dict[str, Any]]:
    """:func:`conflict_entry` for each conflict, with its link from ``links`` (by booking id)."""
    return [conflict_entry(c, links.get(c.booking_id), policy) for c in conflicts]
