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
    """
    status = rec["Status"]
    if status == "Scheduled" and clock.parse_iso(rec["Appointment_Start_Time"]) < now:
        if auto_complete and clock.parse_iso(rec["Appointment_End_Time"]) <= now:
            return "Completed"
        return "Overdue"
    return status

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
