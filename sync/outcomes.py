"""What became of each change sent to Zoho, and how a success is recorded in the state store.

No Prefect, no HTTP. A success updates our copy of the target at once (so the echo
of our own write matches) and gives the link's new base row; the caller writes the
bases and the action log (:func:`sync.links.write_base`, :func:`sync.links.log_actions`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import Engine

from . import bookings
from .engine import Action, Link, Side
from .links import BaseRow, update_row
from .modules import CrmModule
from .tables import BookingRecord


@dataclass
class Outcome:
    """What became of one action.

    ``ok``; Zoho's ``code`` and ``message``; ``transient``: the failure may pass by
    itself (the next run retries). The target's new state when known: ``start``
    (aware UTC), ``status`` (the target's own word), ``modified`` (CRM's
    ``Modified_Time``). ``sent``: False when the action was refused before any call.
    ``maybe_done``: a refusal that may mean the change was made before (a Bookings
    refusal; CRM's ``DEPENDENT_FIELD_UNCHANGED``): worth one read to check
    (:func:`after_check`), never a success without it; once checked and not done, a
    refusal that stands (the flow does not send it again from the same base).
    """

    action: Action
    ok: bool
    code: str | None = None
    message: str | None = None
    transient: bool = False
    start: datetime | None = None
    status: str | None = None
    modified: datetime | None = None
    sent: bool = True
    maybe_done: bool = False


def refused(action: Action, reason: tuple[str, str]) -> Outcome:
    """The outcome of an action refused before sending: ``reason`` is ``(code, message)``."""
    return Outcome(action, False, reason[0], reason[1], sent=False)


def after_check(outcome: Outcome, row: Mapping[str, Any] | None, shown: bool, what: str = "") -> Outcome:
    """A ``maybe_done`` refusal once its target was read again (``row``: the target as a state-store
    row, None when it could not be read; ``shown``: whether it already says what the action asks).

    Shown: a success that keeps Zoho's code (the write was made before: a resend after a lost
    answer), message ``already done (checked: ...)``, ``modified`` and ``start`` from ``row``.
    Not shown: the refusal stands with Zoho's code and reason, plus ``what`` the target shows
    (e.g. CRM refusing an earlier move: ``DEPENDENT_FIELD_UNCHANGED`` "The new appointment time
    has to be greater than ..."), not transient (the same write is refused again); it keeps
    ``maybe_done``, the mark of a checked refusal: the flow logs it ``refused`` and does not send
    the same change from the same base again (``flows.sync_appointments.hold_refused``). ``row``
    None (the read failed): the refusal stands, transient and not ``maybe_done`` (unknown yet: the
    next run plans it again and checks again).
    """
    action = outcome.action
    if row is None:
        return replace(outcome, maybe_done=False, transient=True, message=f"{outcome.message} (the record could not be read again to check it{': ' + what if what else ''})")
    if shown:
        return Outcome(action, True, outcome.code, f"already done (checked: {what or 'the target shows it'})", start=row.get("start_time"), status=row.get("status"), modified=row.get("modified_time"))
    return replace(outcome, maybe_done=True, transient=False, message=f"{outcome.message}" + (f" ({what})" if what else ""))


def call_failed(action: Action, error: BaseException) -> Outcome:
    """The outcome of an action whose call still raised ``error`` after its retries: the
    error's ``code`` (a Zoho error's) or its type name, its text, transient (the next run
    tries again)."""
    return Outcome(action, False, getattr(error, "code", type(error).__name__), str(error), transient=True)


def commit_write(engine: Engine, module: CrmModule, link: Link, outcome: Outcome) -> BaseRow:
    """Record a successful write of ``outcome.action`` on its target in the store.

    CRM: the record's row takes the written start and status (end moved with a
    reschedule, Zoho's ``Modified_Time``); Bookings: the booking's row takes what
    Zoho answered (start, status; end moved with the start). A row that is not
    stored is left alone. Returns the link's new base row (both sides as they are
    now). Raises ``ValueError`` for a Bookings status the sync does not know.
    """
    action = outcome.action
    if action.target is Side.CRM:
        crm = module.state_after(action, link.crm)
        update_row(engine, module.table, action.crm_id, lambda row: module.row_after(row, action, crm, outcome.modified))
        return (link.booking_id, link.crm_id, link.time_zone, crm, link.bookings)
    booking, status = bookings.state_after(action, link.bookings, outcome.start, outcome.status)
    moved = outcome.start is not None
    update_row(engine, BookingRecord, link.booking_id, lambda row: bookings.row_after(row, link.bookings.start, booking, status, moved))
    return (link.booking_id, link.crm_id, link.time_zone, link.crm, booking)
