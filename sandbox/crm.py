"""CRM records, field metadata and notification channels.

Routes (``{version}`` is ``v2``, ``v2.1`` or ``v3`` .. ``v8``):

* ``GET /crm/{version}/{module}`` and ``GET /crm/{version}/{module}/{id}`` for
  ``Appointments__s`` and ``Events``: ``fields`` (required for lists from v3 on, as
  Zoho requires; an unknown field is ``INVALID_DATA``), ``page``/``per_page`` (200 a
  page, 2,000 records reachable, then ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``),
  ``page_token`` beyond that, ``sort_by``/``sort_order``, ``ids``, and the
  ``If-Modified-Since`` header (304 when nothing changed). An empty answer is HTTP 204.
  ``Status`` is shown as CRM derives it: a scheduled appointment whose start has
  passed is ``Overdue``; when the org does not "ask the user to mark the appointment
  as completed" (config ``ask_to_mark_completed=False``) one whose end has passed
  is ``Completed``.
* ``PUT /crm/{version}/{module}`` (``{"data": [...]}``, at most 100 records, else
  ``LIMIT_EXCEEDED``; per-record results in order, 207 for mixed outcomes) and
  ``PUT /crm/{version}/{module}/{id}``. The ``Appointments__s`` rules and error codes
  are those of "Update Appointments" (seeds 002 and 004, see
  :func:`update_appointment`); values that do not fit their field (text, pick list,
  boolean, date-time, duration) are ``INVALID_DATA``, never a 500.
  ``Modified_Time`` and ``Modified_By`` move on every write. Other methods on a
  module are ``INVALID_REQUEST_METHOD``; a body that is not JSON is ``INVALID_DATA``.
* ``GET /crm/{version}/settings/fields?module=...``.
* ``/crm/{version}/actions/watch``: ``POST`` subscribes (``channel_expiry`` at most
  7 days ahead, ``token`` at most 50 characters), ``GET`` lists, ``PATCH`` updates,
  ``DELETE ?channel_ids=`` unsubscribes. Every change to a watched module, by the
  API or by an admin edit, POSTs ``{"server_time", "query_params", "module",
  "resource_uri", "ids", "affected_fields", "operation", "channel_id", "token"}``
  to the channel's ``notify_url`` (``affected_fields``: every field the write
  changed, derived ones such as ``Appointment_End_Time`` included;
  ``return_affected_field_values`` adds ``affected_values``, the values as the API
  shows them). A write that fails changes nothing and notifies nobody.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from . import clock
from .auth import api_domain, require_crm
from .errors import CrmError, record_error
from .schema import APPOINTMENT_STATUSES, FIELD_INDEX, MODULES, field_metadata
from .seed import API_USER
from .state import SandboxState

router = APIRouter()

VERSION_RE = re.compile(r"^v(2(\.1)?|[3-8])$")
MAX_UPDATE = 100
MAX_PER_PAGE = 200
MAX_PAGE_RECORDS = 2000
SORT_FIELDS = ("id", "Created_Time", "Modified_Time")

APPOINTMENT_WRITABLE = {
    "Appointment_Name", "Appointment_Start_Time", "Duration", "Status", "Location", "Rescheduled_From",
    "Reschedule_Reason", "Reschedule_Note", "Cancellation_Reason", "Cancellation_Note", "Job_Sheet_Name",
    "Job_Sheet_Description__s", "Booking_Id",
}
EVENT_WRITABLE = {"Event_Title", "Start_DateTime", "End_DateTime", "All_day", "Venue", "Description", "Booking_Id"}


def check_version(version: str) -> int:
    """The major API version; raises ``INVALID_URL_PATTERN`` (404) for anything but v2..v8."""
    if not VERSION_RE.match(version):
        raise CrmError("INVALID_URL_PATTERN", 404)
    return int(version[1])


def check_module(module: str) -> None:
    """Raise ``INVALID_MODULE`` (400) unless the sandbox serves ``module``."""
    if module not in MODULES:
        raise CrmError("INVALID_MODULE", 400, details={"resource_path_index": 1})


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


# ----------------------------------------------------------------- notifications
def notify(state: SandboxState, request: Request, module: str, operation: str, changes: dict[str, list[str]]) -> None:
    """POST one notification per watching channel for the records in ``changes`` (id -> changed fields)."""
    if not changes:
        return
    now = time.time()
    stamp = clock.now()
    short = {"insert": "create", "update": "edit", "delete": "delete"}[operation]
    outbox = request.app.state.outbox
    for channel in state.channels.values():
        if channel["expiry_epoch"] < now:
            continue
        if not ({f"{module}.all", f"{module}.{short}"} & set(channel["events"])):
            continue
        payload: dict[str, Any] = {
            "server_time": int(now * 1000),
            "query_params": {},
            "module": module,
            "resource_uri": f"{api_domain(request)}/crm/v7/{module}",
            "ids": list(changes),
            "affected_fields": [{rid: fields} for rid, fields in changes.items()],
            "operation": operation,
            "channel_id": channel["channel_id"],
            "token": channel.get("token"),
        }
        if channel.get("return_affected_field_values"):
            store = state.module_store(module)
            shown = {rid: view(module, store[rid], stamp, auto_complete=auto_completes(state)) for rid in changes if rid in store}
            payload["affected_values"] = [
                {"record_id": rid, "values": {f: shown[rid].get(f) for f in fields}}
                for rid, fields in changes.items()
                if rid in shown
            ]
        outbox.send("notification", channel["notify_url"], payload)


# ------------------------------------------------------------------------ update
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
    code is not documented). The status rules see the status as the API shows it,
    so with ``ask_to_mark_completed`` off an ended appointment counts as completed.
    A reschedule sets ``Appointment_End_Time`` (start + ``Duration``),
    ``Rescheduled_From`` (the old start unless given), ``Reschedule_Count`` + 1 and
    ``Reschedule_Reason`` (default ``By Customer``); a cancellation sets
    ``Cancelled_Time`` and ``Cancellation_Reason`` (default ``By Customer``).
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
    duration = rec["Duration"]
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
    old_start = clock.parse_iso(rec["Appointment_Start_Time"])
    if new_start is not None and new_start == old_start:
        return None, record_error(
            "DEPENDENT_FIELD_UNCHANGED", "The new appointment time is the existing one", api_name="Appointment_Start_Time"
        )
    if from_time is not None and new_start is not None and not from_time < new_start:
        return None, record_error(
            "INVALID_DATA", "Rescheduled_From should be lesser than the new appointment time", api_name="Rescheduled_From"
        )
    start = new_start or old_start
    end = _add_minutes(start, duration)
    if end is None:
        return None, record_error(
            "INVALID_DATA", "invalid data", api_name="Duration" if "Duration" in changes else "Appointment_Start_Time"
        )
    if status == "Completed" and current != "Completed" and not cfg.ask_to_mark_completed:
        return None, record_error(
            "NOT_ALLOWED", "'Ask the user to mark the Appointment as completed' is not configured", api_name="Status"
        )
    if status in ("Completed", "Overdue") and rec["Status"] != status and end > now:
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
    new["Duration"] = duration
    new["Appointment_Start_Time"] = clock.to_crm(start, tz)
    new["Appointment_End_Time"] = clock.to_crm(end, tz)
    if new_start is not None:
        new["Rescheduled_From"] = clock.to_crm(from_time or old_start, tz)
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
    """Apply one ``Events`` update: ISO 8601 ``Start_DateTime``/``End_DateTime``, end not before start."""
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
    if clock.parse_iso(new["End_DateTime"]) < clock.parse_iso(new["Start_DateTime"]):
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


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CrmError("INVALID_DATA", 400, "the input is not a valid JSON") from None


# ------------------------------------------------------------------------ routes
@router.get("/crm/{version}/settings/fields")
async def fields_metadata(version: str, request: Request) -> JSONResponse:
    """Field metadata of ``module``."""
    check_version(version)
    require_crm(request, "ZohoCRM.settings.fields.READ")
    module = request.query_params.get("module")
    if not module:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "module"})
    check_module(module)
    return JSONResponse({"fields": field_metadata(module)})


def _encode_token(offset: int, sort_by: str, sort_order: str) -> str:
    raw = json.dumps({"o": offset, "s": sort_by, "d": sort_order, "e": time.time() + 86400})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    """The offset and sort of a ``page_token``; ``INVALID_DATA`` when it is not one of ours or expired."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = (
            isinstance(data, dict)
            and type(data["o"]) is int and data["o"] >= 0
            and data["s"] in SORT_FIELDS and data["d"] in ("asc", "desc")
            and isinstance(data["e"], (int, float))
        )
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise CrmError("INVALID_DATA", 400, "invalid page_token", {"param_name": "page_token"})
    if data["e"] < time.time():
        raise CrmError("INVALID_DATA", 400, "page_token expired", {"param_name": "page_token"})
    return data


def _fields_param(request: Request, module: str) -> list[str]:
    """The ``fields`` query parameter as a list; an unknown field is ``INVALID_DATA``."""
    fields = [f.strip() for f in request.query_params.get("fields", "").split(",") if f.strip()]
    unknown = [f for f in fields if f not in FIELD_INDEX[module]]
    if unknown:
        raise CrmError("INVALID_DATA", 400, "invalid field", {"api_name": unknown[0]})
    return fields


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CrmError("INVALID_DATA", 400, f"invalid {name}", {"param_name": name}) from None


@router.get("/crm/{version}/actions/watch")
async def watch_list(version: str, request: Request) -> Response:
    """The org's notification channels."""
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.READ")
    state: SandboxState = request.app.state.sandbox
    now = time.time()
    active = [c for c in state.channels.values() if c["expiry_epoch"] > now]
    if not active:
        return Response(status_code=204)
    return JSONResponse(
        {
            "watch": [
                {
                    "channel_id": c["channel_id"],
                    "events": c["events"],
                    "channel_expiry": c["channel_expiry"],
                    "notify_url": c["notify_url"],
                    "resource_uri": f"{api_domain(request)}/crm/v7/{c['events'][0].split('.')[0]}",
                    "return_affected_field_values": c.get("return_affected_field_values", False),
                }
                for c in active
            ],
            "info": {"count": len(active), "more_records": False, "page": 1, "per_page": 200},
        }
    )


def _validate_channel(entry: Any, i: int, existing: dict | None = None) -> tuple[dict | None, dict | None]:
    if not isinstance(entry, dict):
        return None, record_error("INVALID_DATA", "invalid data", json_path=f"$.watch[{i}]")
    merged = {**(existing or {}), **entry}
    for key in ("channel_id", "events", "notify_url"):
        if merged.get(key) in (None, "", []):
            return None, record_error("MANDATORY_NOT_FOUND", "required field not found", api_name=key, json_path=f"$.watch[{i}].{key}")
    events = merged["events"]
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        return None, record_error("INVALID_DATA", "invalid data", api_name="events")
    for ev in events:
        module, _, op = ev.partition(".")
        if module not in MODULES or op not in ("all", "create", "edit", "delete"):
            return None, record_error("INVALID_MODULE" if module not in MODULES else "INVALID_DATA", f"invalid event {ev!r}", api_name="events")
    token = merged.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 50):
        return None, record_error("INVALID_DATA", "token can have at most 50 characters", api_name="token")
    if not isinstance(merged["notify_url"], str) or not merged["notify_url"].startswith(("http://", "https://")):
        return None, record_error("INVALID_DATA", "invalid notify_url", api_name="notify_url")
    now = clock.now()
    if merged.get("channel_expiry"):
        try:
            expiry = clock.parse_iso(merged["channel_expiry"])
        except ValueError:
            return None, record_error("INVALID_DATA", "invalid data", api_name="channel_expiry", expected_data_type="datetime")
        if expiry > now + timedelta(days=7) or expiry <= now:
            return None, record_error(
                "INVALID_DATA", "channel_expiry should be within one week from now", api_name="channel_expiry"
            )
    else:
        expiry = now + timedelta(hours=1)
    channel = {
        "channel_id": str(merged["channel_id"]),
        "events": events,
        "notify_url": merged["notify_url"],
        "token": token,
        "channel_expiry": expiry.isoformat(),
        "expiry_epoch": expiry.timestamp(),
        "return_affected_field_values": bool(merged.get("return_affected_field_values", False)),
    }
    return channel, None


async def _watch_write(version: str, request: Request, updating: bool) -> JSONResponse:
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.UPDATE" if updating else "ZohoCRM.notifications.CREATE")
    state: SandboxState = request.app.state.sandbox
    body = await _json_body(request)
    items = body.get("watch") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "watch"})
    out: list[dict] = []
    ok = 0
    for i, entry in enumerate(items):
        existing = None
        if updating:
            existing = state.channels.get(str(entry.get("channel_id"))) if isinstance(entry, dict) else None
            if existing is None:
                out.append(record_error("INVALID_DATA", "the channel_id given seems to be invalid", api_name="channel_id"))
                continue
        channel, err = _validate_channel(entry, i, existing)
        if err:
            out.append(err)
            continue
        state.channels[channel["channel_id"]] = channel
        ok += 1
        out.append(
            {
                "code": "SUCCESS",
                "details": {
                    "events": [
                        {
                            "channel_expiry": channel["channel_expiry"],
                            "resource_uri": f"{api_domain(request)}/crm/v7/{ev.split('.')[0]}",
                            "resource_id": "5545974000000002175",
                            "resource_name": ev.split(".")[0],
                            "channel_id": channel["channel_id"],
                        }
                        for ev in channel["events"]
                    ]
                },
                "message": "Successfully subscribed for actions-watch of the given module",
                "status": "success",
            }
        )
    state.save_channels()
    status = 200 if ok == len(items) else 207 if ok else 400
    return JSONResponse({"watch": out}, status_code=status)


@router.post("/crm/{version}/actions/watch")
async def watch_subscribe(version: str, request: Request) -> JSONResponse:
    """Subscribe notification channels."""
    return await _watch_write(version, request, updating=False)


@router.patch("/crm/{version}/actions/watch")
async def watch_update(version: str, request: Request) -> JSONResponse:
    """Update channels (events, expiry, notify_url, token)."""
    return await _watch_write(version, request, updating=True)


@router.delete("/crm/{version}/actions/watch")
async def watch_disable(version: str, request: Request) -> JSONResponse:
    """Unsubscribe the channels in ``channel_ids``."""
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.DELETE")
    state: SandboxState = request.app.state.sandbox
    ids = [i for i in request.query_params.get("channel_ids", "").split(",") if i]
    if not ids:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "channel_ids"})
    out = []
    for cid in ids:
        if state.channels.pop(cid, None) is None:
            out.append(record_error("INVALID_DATA", "the channel_id given seems to be invalid", channel_id=cid))
        else:
            out.append({"code": "SUCCESS", "details": {"channel_id": cid}, "message": "Successfully unsubscribed from actions-watch", "status": "success"})
    state.save_channels()
    return JSONResponse({"watch": out})


@router.get("/crm/{version}/{module}")
async def list_records(version: str, module: str, request: Request) -> Response:
    """List records of ``module``."""
    major = check_version(version)
    check_module(module)
    require_crm(request, f"ZohoCRM.modules.{module}.READ")
    state: SandboxState = request.app.state.sandbox
    q = request.query_params
    fields = _fields_param(request, module)
    if major >= 3 and not fields:
        raise CrmError("REQUIRED_PARAM_MISSING", 400, details={"param_name": "fields"})
    per_page = _int_param(request, "per_page", MAX_PER_PAGE)
    page = _int_param(request, "page", 1)
    if not 1 <= per_page <= MAX_PER_PAGE or page < 1:
        raise CrmError("INVALID_DATA", 400, "invalid page or per_page", {"param_name": "per_page" if page >= 1 else "page"})
    sort_by = q.get("sort_by", "id")
    sort_order = q.get("sort_order", "desc")
    if sort_by not in SORT_FIELDS or sort_order not in ("asc", "desc"):
        raise CrmError("INVALID_DATA", 400, "invalid sort_by or sort_order", {"param_name": "sort_by"})
    if q.get("page_token"):
        tok = _decode_token(q["page_token"])
        offset, sort_by, sort_order = tok["o"], tok["s"], tok["d"]
    else:
        offset = (page - 1) * per_page
        if offset + per_page > MAX_PAGE_RECORDS:
            raise CrmError(
                "DISCRETE_PAGINATION_LIMIT_EXCEEDED", 400,
                "You cannot fetch more than 2000 records using page and per_page. Use page_token.",
                {"limit": MAX_PAGE_RECORDS},
            )
    records = list(state.module_store(module).values())
    ids = {i for i in q.get("ids", "").split(",") if i}
    if ids:
        records = [r for r in records if r["id"] in ids]
    since = request.headers.get("if-modified-since")
    if since:
        try:
            since_dt = clock.parse_iso(since)
        except ValueError:
            raise CrmError("INVALID_DATA", 400, "invalid If-Modified-Since", {"header": "If-Modified-Since"}) from None
        records = [r for r in records if clock.parse_iso(r["Modified_Time"]) > since_dt]
        if not records:
            return Response(status_code=304)
    key = (lambda r: int(r["id"])) if sort_by == "id" else (lambda r: clock.parse_iso(r[sort_by]))
    records.sort(key=key, reverse=sort_order == "desc")
    chunk = records[offset : offset + per_page]
    if not chunk:
        return Response(status_code=204)
    now = clock.now()
    more = offset + per_page < len(records)
    info = {
        "per_page": per_page,
        "count": len(chunk),
        "page": page if not q.get("page_token") else offset // per_page + 1,
        "sort_by": sort_by,
        "sort_order": sort_order,
        "more_records": more,
        "next_page_token": _encode_token(offset + per_page, sort_by, sort_order) if more else None,
        "previous_page_token": None,
        "page_token_expiry": clock.to_crm(now + timedelta(days=1), state.config.org_time_zone) if more else None,
    }
    shown = [view(module, r, now, fields, auto_complete=auto_completes(state)) for r in chunk]
    return JSONResponse({"data": shown, "info": info})


@router.get("/crm/{version}/{module}/{record_id}")
async def get_record(version: str, module: str, record_id: str, request: Request) -> Response:
    """One record by id."""
    check_version(version)
    check_module(module)
    require_crm(request, f"ZohoCRM.modules.{module}.READ")
    state: SandboxState = request.app.state.sandbox
    fields = _fields_param(request, module)
    rec = state.module_store(module).get(record_id)
    if rec is None:
        raise CrmError("INVALID_DATA", 400, "the id given seems to be invalid", {"id": record_id})
    return JSONResponse({"data": [view(module, rec, clock.now(), fields, auto_complete=auto_completes(state))]})


def _actor(info: dict[str, Any]) -> dict[str, str]:
    return dict(API_USER)


@router.put("/crm/{version}/{module}")
async def update_records(version: str, module: str, request: Request) -> JSONResponse:
    """Update up to 100 records of ``module``."""
    check_version(version)
    check_module(module)
    info = require_crm(request, f"ZohoCRM.modules.{module}.UPDATE", write=True)
    state: SandboxState = request.app.state.sandbox
    body = await _json_body(request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "data" not in body:
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "data"})
    if not isinstance(items, list) or not items:
        raise CrmError("INVALID_DATA", 400, "data should be a non-empty array", {"api_name": "data"})
    if len(items) > MAX_UPDATE:
        raise CrmError("LIMIT_EXCEEDED", 400, "the number of records exceeds the limit", {"limit": MAX_UPDATE})
    results, status = apply_updates(state, request, module, items, _actor(info))
    return JSONResponse({"data": results}, status_code=status)


@router.put("/crm/{version}/{module}/{record_id}")
async def update_record(version: str, module: str, record_id: str, request: Request) -> JSONResponse:
    """Update one record named in the URL."""
    check_version(version)
    check_module(module)
    info = require_crm(request, f"ZohoCRM.modules.{module}.UPDATE", write=True)
    state: SandboxState = request.app.state.sandbox
    body = await _json_body(request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "data"})
    results, status = apply_updates(state, request, module, [{**items[0], "id": record_id}], _actor(info))
    return JSONResponse({"data": results}, status_code=status)


@router.api_route("/crm/{version}/{module}", methods=["POST", "PATCH", "DELETE"])
@router.api_route("/crm/{version}/{module}/{record_id}", methods=["POST", "PATCH", "DELETE"])
async def wrong_method(version: str, module: str, request: Request, record_id: str | None = None) -> JSONResponse:
    """Methods the sandbox does not serve on records: ``INVALID_REQUEST_METHOD``."""
    check_version(version)
    check_module(module)
    raise CrmError("INVALID_REQUEST_METHOD", 400)
