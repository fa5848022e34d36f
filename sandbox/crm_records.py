"""CRM record updates: the "Update Appointments" rules, their error codes, and applying a ``data`` array.

Follows "Update Appointments" (seeds 002 and 004) for ``Appointments__s``: the
checks run in the order :func:`update_appointment` gives, each failing record
answers its own error (``INVALID_DATA``, ``NOT_ALLOWED``,
``DEPENDENT_FIELD_MISSING``, ``DEPENDENT_MISMATCH``,
``DEPENDENT_FIELD_UNCHANGED``, ``MANDATORY_NOT_FOUND``); values that do not fit
their field (text, pick list, boolean, date-time, duration) are ``INVALID_DATA``,
never a 500. ``Events`` take ISO 8601 ``Start_DateTime``/``End_DateTime`` (any
offset; stored in the org's time zone), end not before start, and the
``Booking_Status`` custom pick list (:data:`sandbox.schema.MEETING_STATUSES`; a value
outside it is ``INVALID_DATA``). ``Modified_Time`` and ``Modified_By`` move on every write.

:func:`apply_updates` is the one write path, for ``PUT /crm/{version}/{module}``
(:mod:`sandbox.crm`) and the admin's "UI" edits (:mod:`sandbox.admin`): per-record
results in order and the HTTP status (200, 207 for mixed outcomes, or the
errors'), then one notification to each watching channel (:func:`sandbox.watch.notify`).
A write that fails changes nothing and notifies nobody. :func:`delete_records` is
the one delete path (``DELETE /crm/{version}/Events`` and the admin's "UI"
delete), notified the same way with ``operation: "delete"``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import Request

from . import clock
from .crm_status import auto_completes, effective_status, stored_instant
from .errors import record_error
from .schema import APPOINTMENT_STATUSES, FIELD_INDEX
from .state import SandboxState
from .watch import notify

APPOINTMENT_WRITABLE = {
    "Appointment_Name", "Appointment_Start_Time", "Duration", "Status", "Location", "Rescheduled_From",
    "Reschedule_Reason", "Reschedule_Note", "Cancellation_Reason", "Cancellation_Note", "Job_Sheet_Name",
    "Job_Sheet_Description__s", "Booking_Id",
}
EVENT_WRITABLE = {
    "Event_Title", "Start_DateTime", "End_DateTime", "All_day", "Venue", "Description", "Booking_Id", "Booking_Status",
}

def _parse_dt(value: Any, api_name: str) -> tuple[datetime | None, dict | None]:
    """An ISO 8601 date-time with offset, or ``INVALID_DATA``.

    An instant so close to the ends of the calendar that it cannot be shown in
    every time zone (year 1 or 9999) is ``INVALID_DATA`` too, never a 500.
    """
    try:
        parsed = clock.parse_iso(value)
        (parsed - timedelta(days=1)).astimezone(clock.UTC)
        (parsed + timedelta(days=1)).astimezone(clock.UTC)
    except (ValueError, OverflowError):
        return None, record_error("INVALID_DATA", "invalid data", api_name=api_name, expected_data_type="datetime")
    return parsed, None

def _add_minutes(start: datetime, minutes: int) -> datetime | None:
    """``start + minutes``, or ``None`` when that leaves the calendar."""
    try:
        end = start + timedelta(minutes=minutes)
        (end + timedelta(days=1)).astimezone(clock.UTC)
    except OverflowError:
        return None
    return end

def _check_values(module: str, changes: dict[str, Any], writable: set[str]) -> dict[str, Any] | None:
    """``INVALID_DATA`` for the first writable key whose value does not fit its field.

    Text fields take a string, pick lists one of their values, booleans a boolean
    (``null`` clears any of them). Date-times and ``Duration`` are checked by the
    updaters; keys that are not writable are ignored, as Zoho ignores them.
    """
    for key in sorted(writable & changes.keys()):
        field, value = FIELD_INDEX[module][key], changes[key]
        if value is None or field.data_type in ("datetime", "integer"):
            continue
        if field.data_type in ("text", "textarea") and not isinstance(value, str):
            return record_error("INVALID_DATA", "invalid data", api_name=key, expected_data_type=field.data_type)
        if field.data_type == "boolean" and not isinstance(value, bool):
            return record_error("INVALID_DATA", "invalid data", api_name=key, expected_data_type="boolean")
        if field.pick_list and (not isinstance(value, str) or value not in field.pick_list):
            return record_error("INVALID_DATA", "invalid data", api_name=key, expected_data_type="picklist")
    return None

def update_appointment(
    state: SandboxState, rec: dict[str, Any], changes: dict[str, Any], actor: dict[str, str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Apply one ``Appointments__s`` update; returns ``(new_record, None)`` or ``(None, error)``.

    Rules from "Update Appointments" (seeds 002/004), in this order: value checks
    (``INVALID_DATA``), reschedule/status of a completed or cancelled appointment
    (``NOT_ALLOWED``), reschedule keys without ``Appointment_Start_Time`` and
    cancellation keys without ``Status: Cancelled`` (``DEPENDENT_FIELD_MISSING`` /
    ``DEPENDENT_MISMATCH``), a reschedule to the same start
    (``DEPENDENT_FIELD_UNCHANGED``), ``Completed`` while the org does not ask users
    to mark completion (``NOT_ALLOWED``), ``Completed``/``Overdue`` before the end
    (``DEPENDENT_MISMATCH``), and the job-sheet preference (``MANDATORY_NOT_FOUND``).
    ``Rescheduled_From`` must be earlier than the new start (``INVALID_DATA``: the
    code is not documented). With ``refuse_earlier_reschedules`` (config; off by
    default) a new start before the existing one answers ``DEPENDENT_FIELD_UNCHANGED``
    with the documents' words ("The new appointment time has to be greater than the
    existing Appointment_Start_Time"). The status rules see the status as the API shows it,
    so with ``ask_to_mark_completed`` off an ended appointment counts as completed.
    A reschedule sets ``Appointment_End_Time`` (start + ``Duration``),
    ``Rescheduled_From`` (the old start unless given), ``Reschedule_Count`` + 1 and
    ``Reschedule_Reason`` (default ``By Customer``); a cancellation sets
    ``Cancelled_Time`` and ``Cancellation_Reason`` (default ``By Customer``).
    A stored start or ``Duration`` that cannot be read (set with the admin test aid)
    counts as unknown: no rule compares with it, and the stored times stay unless a
    new start is given.
    """
    cfg = state.config
    now = clock.now()
    status = changes.get("Status")
    if "Status" in changes and status not in APPOINTMENT_STATUSES:
        return None, record_error("INVALID_DATA", "invalid data", api_name="Status")
    err = _check_values("Appointments__s", changes, APPOINTMENT_WRITABLE - {"Status"})
    if err:
        return None, err
    if "Service_Name" in changes:
        return None, record_error("INVALID_DATA", "Service_Name cannot be updated", api_name="Service_Name")
    if "Appointment_Name" in changes and not changes["Appointment_Name"]:
        return None, record_error("MANDATORY_NOT_FOUND", "required field not found", api_name="Appointment_Name")
    new_start = from_time = None
    if "Appointment_Start_Time" in changes:
        new_start, err = _parse_dt(changes["Appointment_Start_Time"], "Appointment_Start_Time")
        if err:
            return None, err
    if "Rescheduled_From" in changes:
        from_time, err = _parse_dt(changes["Rescheduled_From"], "Rescheduled_From")
        if err:
            return None, err
    duration = rec.get("Duration") if isinstance(rec.get("Duration"), int) and not isinstance(rec.get("Duration"), bool) else None
    if "Duration" in changes:
        if not isinstance(changes["Duration"], int) or isinstance(changes["Duration"], bool) or changes["Duration"] <= 0:
            return None, record_error("INVALID_DATA", "invalid data", api_name="Duration", expected_data_type="integer")
        duration = changes["Duration"]
    current = effective_status(rec, now, auto_complete=auto_completes(state))
    if new_start is not None and current in ("Completed", "Cancelled"):
        return None, record_error(
            "NOT_ALLOWED", "You cannot reschedule an appointment which is already marked as completed or cancelled",
            api_name="Appointment_Start_Time",
        )
    if status is not None and current == "Cancelled" and status != "Cancelled":
        return None, record_error("NOT_ALLOWED", "You cannot change the Status of a cancelled appointment", api_name="Status")
    if status is not None and current == "Completed" and status != "Completed":
        return None, record_error("NOT_ALLOWED", "You cannot change the Status of a completed appointment", api_name="Status")
    wants_reschedule_keys = any(changes.get(k) is not None for k in ("Reschedule_Reason", "Reschedule_Note"))
    if wants_reschedule_keys and new_start is None and not rec.get("Reschedule_Count"):
        return None, record_error(
            "DEPENDENT_FIELD_MISSING", "Appointment_Start_Time is mandatory to reschedule", api_name="Appointment_Start_Time"
        )
    if from_time is not None and new_start is None:
        return None, record_error(
            "DEPENDENT_FIELD_MISSING", "Appointment_Start_Time is mandatory to reschedule", api_name="Appointment_Start_Time"
        )
    if any(changes.get(k) is not None for k in ("Cancellation_Reason", "Cancellation_Note")):
        if status is None:
            return None, record_error("DEPENDENT_FIELD_MISSING", "Status 'Cancelled' is mandatory to cancel", api_name="Status")
        if status != "Cancelled":
            return None, record_error("DEPENDENT_MISMATCH", "Only 'Cancelled' is valid to cancel", api_name="Status")
    old_start = stored_instant(rec, "Appointment_Start_Time")
    if new_start is not None and new_start == old_start:
        return None, record_error(
            "DEPENDENT_FIELD_UNCHANGED", "The new appointment time is the existing one", api_name="Appointment_Start_Time"
        )
    if cfg.refuse_earlier_reschedules and new_start is not None and old_start is not None and new_start < old_start:
        return None, record_error(
            "DEPENDENT_FIELD_UNCHANGED",
            "The new appointment time has to be greater than the existing Appointment_Start_Time to reschedule the appointment",
            api_name="Appointment_Start_Time",
        )
    if from_time is not None and new_start is not None and not from_time < new_start:
        return None, record_error(
            "INVALID_DATA", "Rescheduled_From should be lesser than the new appointment time", api_name="Rescheduled_From"
        )
    start = new_start or old_start
    end = _add_minutes(start, duration) if start is not None and duration is not None else stored_instant(rec, "Appointment_End_Time")
    if end is None and start is not None and duration is not None:
        return None, record_error(
            "INVALID_DATA", "invalid data", api_name="Duration" if "Duration" in changes else "Appointment_Start_Time"
        )
    if status == "Completed" and current != "Completed" and not cfg.ask_to_mark_completed:
        return None, record_error(
            "NOT_ALLOWED", "'Ask the user to mark the Appointment as completed' is not configured", api_name="Status"
        )
    if status in ("Completed", "Overdue") and rec["Status"] != status and end is not None and end > now:
        return None, record_error(
            "DEPENDENT_MISMATCH", f"The appointment can be marked '{status}' only after it ends", api_name="Status"
        )
    if status == "Completed" and current != "Completed":
        if cfg.job_sheet_mandatory and not (changes.get("Job_Sheet_Name") or rec.get("Job_Sheet_Name")):
            return None, record_error("MANDATORY_NOT_FOUND", "required field not found", api_name="Job_Sheet_Name")
    tz = cfg.org_time_zone
    new = dict(rec)
    for key in APPOINTMENT_WRITABLE & changes.keys():
        new[key] = changes[key]
    new["Duration"] = duration if duration is not None else rec.get("Duration")
    if start is not None and end is not None and duration is not None:
        new["Appointment_Start_Time"] = clock.to_crm(start, tz)
        new["Appointment_End_Time"] = clock.to_crm(end, tz)
    elif new_start is not None:
        new["Appointment_Start_Time"] = clock.to_crm(new_start, tz)
    if new_start is not None:
        moved_from = from_time or old_start
        new["Rescheduled_From"] = clock.to_crm(moved_from, tz) if moved_from is not None else None
        new["Reschedule_Count"] = int(rec.get("Reschedule_Count") or 0) + 1
        new["Reschedule_Reason"] = changes.get("Reschedule_Reason") or "By Customer"
    if status == "Overdue":
        new["Status"] = "Scheduled"  # Overdue is derived from the start time
    if status == "Cancelled" and current != "Cancelled":
        new["Cancelled_Time"] = clock.to_crm(now, tz)
        new["Cancellation_Reason"] = changes.get("Cancellation_Reason") or "By Customer"
    new["Modified_Time"] = clock.to_crm(now, tz)
    new["Modified_By"] = dict(actor)
    return new, None

def update_event(
    state: SandboxState, rec: dict[str, Any], changes: dict[str, Any], actor: dict[str, str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Apply one ``Events`` update: ISO 8601 ``Start_DateTime``/``End_DateTime``, end not before start.

    Other writable fields (:data:`EVENT_WRITABLE`) are checked against their field
    (``Booking_Status`` against its pick list, ``INVALID_DATA`` otherwise) and stored as given.
    """
    tz = state.config.org_time_zone
    err = _check_values("Events", changes, EVENT_WRITABLE)
    if err:
        return None, err
    new = dict(rec)
    for key in ("Start_DateTime", "End_DateTime"):
        if key in changes:
            parsed, err = _parse_dt(changes[key], key)
            if err:
                return None, err
            new[key] = clock.to_crm(parsed, tz)
    if "Event_Title" in changes and not changes["Event_Title"]:
        return None, record_error("MANDATORY_NOT_FOUND", "required field not found", api_name="Event_Title")
    start, end = stored_instant(new, "Start_DateTime"), stored_instant(new, "End_DateTime")
    if start is not None and end is not None and end < start:
        return None, record_error("INVALID_DATA", "End_DateTime is earlier than Start_DateTime", api_name="End_DateTime")
    for key in EVENT_WRITABLE - {"Start_DateTime", "End_DateTime"}:
        if key in changes:
            new[key] = changes[key]
    new["Modified_Time"] = clock.to_crm(clock.now(), tz)
    new["Modified_By"] = dict(actor)
    return new, None

def _affected_fields(old: dict[str, Any], new: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """The fields a write changed, derived ones included (a reschedule moves
    ``Appointment_End_Time`` too); the audit fields are left out. A write that
    changed nothing still names the keys it sent."""
    audit = {"Modified_Time", "Modified_By"}
    changed = sorted(k for k in new if k not in audit and new.get(k) != old.get(k))
    return changed or sorted(k for k in item if k != "id")

def apply_updates(
    state: SandboxState, request: Request, module: str, items: list[Any], actor: dict[str, str]
) -> tuple[list[dict[str, Any]], int]:
    """Apply a ``data`` array; returns per-record results and the HTTP status (200, 207 or the error's)."""
    store = state.module_store(module)
    updater = update_appointment if module == "Appointments__s" else update_event
    results: list[dict[str, Any]] = []
    statuses: list[int] = []
    changed: dict[str, dict] = {}
    affected: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            results.append(record_error("INVALID_DATA", "invalid data", json_path=f"$.data[{i}]"))
            statuses.append(400)
            continue
        rid = item.get("id")
        if rid in (None, ""):
            results.append(record_error("MANDATORY_NOT_FOUND", "required field not found", api_name="id", json_path=f"$.data[{i}].id"))
            statuses.append(400)
            continue
        rec = store.get(str(rid))
        if rec is None:
            results.append(record_error("INVALID_DATA", "the id given seems to be invalid", api_name="id", json_path=f"$.data[{i}].id"))
            statuses.append(400)
            continue
        new, err = updater(state, rec, {k: v for k, v in item.items() if k != "id"}, actor)
        if err is not None:
            err["details"].setdefault("json_path", f"$.data[{i}].{err['details'].get('api_name', 'id')}")
            results.append(err)
            statuses.append(403 if err["code"] in ("NOT_ALLOWED", "NO_PERMISSION") else 400)
            continue
        store[rec["id"]] = new
        changed[rec["id"]] = new
        affected[rec["id"]] = _affected_fields(rec, new, item)
        state.stats.writes[module] += 1
        state.stats.writes_by_record[f"{module}:{rec['id']}"] += 1
        results.append(
            {
                "code": "SUCCESS",
                "details": {
                    "Modified_Time": new["Modified_Time"],
                    "Modified_By": new["Modified_By"],
                    "Created_Time": new["Created_Time"],
                    "id": new["id"],
                    "Created_By": new["Created_By"],
                },
                "message": "record updated",
                "status": "success",
            }
        )
        statuses.append(200)
    state.save_records(module, changed)
    notify(state, request, module, "update", affected)
    if all(s == 200 for s in statuses):
        return results, 200
    if any(s == 200 for s in statuses):
        return results, 207
    return results, statuses[0] if len(set(statuses)) == 1 else 400


def delete_records(
    state: SandboxState, request: Request, module: str, ids: list[str]
) -> list[dict[str, Any]]:
    """Delete the records ``ids`` of ``module``; returns per-record results in order.

    Zoho's "Delete Records": ``{"code": "SUCCESS", "details": {"id"}, "message":
    "record deleted", "status": "success"}`` per deleted record; an id with no record
    (never one, or already deleted, an id given twice included) is ``INVALID_DATA``
    "the related id given seems to be invalid". A deleted record is gone from every
    view (records API, Bulk Read, the admin dump; the sandbox has no recycle bin to
    restore from), counts as a write, and watching channels get one notification
    with ``operation: "delete"`` and the deleted ids (:func:`sandbox.watch.notify`).
    """
    store = state.module_store(module)
    results: list[dict[str, Any]] = []
    deleted: dict[str, list[str]] = {}
    for rid in ids:
        if store.pop(rid, None) is None:
            results.append(record_error("INVALID_DATA", "the related id given seems to be invalid", id=rid))
            continue
        deleted[rid] = []
        state.stats.writes[module] += 1
        state.stats.writes_by_record[f"{module}:{rid}"] += 1
        results.append({"code": "SUCCESS", "details": {"id": rid}, "message": "record deleted", "status": "success"})
    state.delete_records(module, list(deleted))
    notify(state, request, module, "delete", deleted)
    return results
