"""CRM records as the API shows them: the derived ``Status`` and the ``fields`` selection.

CRM does not store ``Overdue``: a ``Scheduled`` appointment whose start has
passed is shown as ``Overdue``; when the org does not "ask the user to mark the
appointment as completed" (config ``ask_to_mark_completed=False``) one whose end
has passed is shown as ``Completed``, as "Update Appointments" (seeds 002 and 004)
says. The records API (:mod:`sandbox.crm`), notifications (:mod:`sandbox.watch`),
Bulk Read (:mod:`sandbox.bulk`), the update rules (:mod:`sandbox.crm_records`) and
the admin dump (:mod:`sandbox.admin`) all show a record through this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import clock
from .state import SandboxState

def effective_status(rec: dict[str, Any], now: datetime, *, auto_complete: bool = False) -> str:
    """``Status`` as CRM shows it: a ``Scheduled`` appointment whose start has passed is ``Overdue``.

    With ``auto_complete`` (the org does *not* "ask the user to mark the appointment
    as completed", config ``ask_to_mark_completed=False``) a ``Scheduled`` appointment
    whose end has passed is ``Completed``, as "Update Appointments" says.
    A start or end that is no ISO 8601 date-time (a value put there with the admin
    test aid ``POST /__sandbox/crm/{module}/{id}/raw``) counts as unknown: the
    ``Status`` is shown as stored.
    """
    status = rec["Status"]
    if status != "Scheduled":
        return status
    start = stored_instant(rec, "Appointment_Start_Time")
    if start is not None and start < now:
        end = stored_instant(rec, "Appointment_End_Time")
        if auto_complete and end is not None and end <= now:
            return "Completed"
        return "Overdue"
    return status


def stored_instant(rec: dict[str, Any], name: str) -> datetime | None:
    """The stored date-time ``rec[name]`` (aware), or None when it is missing or not ISO 8601 with an offset.

    The API only ever stores valid date-times; this guards the rules against values
    set with the admin test aid (``POST /__sandbox/crm/{module}/{id}/raw``).
    """
    try:
        return clock.parse_iso(rec.get(name))
    except (ValueError, TypeError):
        return None

def auto_completes(state: SandboxState) -> bool:
    """Whether ended appointments show as ``Completed`` (``ask_to_mark_completed`` is off)."""
    return not state.config.ask_to_mark_completed

def view(
    module: str, rec: dict[str, Any], now: datetime, fields: list[str] | None = None, *, auto_complete: bool = False
) -> dict[str, Any]:
    """A record as the API answers it (``Overdue``/``Completed`` applied, ``fields`` selected)."""
    out = dict(rec)
    if module == "Appointments__s":
        out["Status"] = effective_status(rec, now, auto_complete=auto_complete)
    if fields:
        out = {k: out.get(k) for k in ["id", *[f for f in fields if f != "id"]]}
    return out
