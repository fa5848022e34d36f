"""CRM notification channels: the watch API and the notifications it sends.

Follows Zoho CRM's Notification APIs (``/crm/{version}/actions/watch``):

* ``POST`` subscribes (``token`` at most 50 characters; ``events`` such as
  ``Appointments__s.all`` or ``Events.edit``); ``channel_expiry`` not given or more
  than a week ahead gives one hour, silently ("If channel_expiry is not specified or
  set for more than a week, the default expiry time is for one hour"); one in the
  past or not ISO 8601 is ``INVALID_DATA`` (the sandbox's choice). ``GET`` lists the
  active channels (204 when none). ``PUT`` updates channels and replaces their
  details ("Update Details of a Notification": what the entry leaves out takes its
  default). ``PATCH`` changes only what is given ("Update Specific Information of a
  Notification"): ``events`` are added to the channel's, or with
  ``"_delete_events": true`` removed from them ("Disable Specific Notifications";
  removing the last one removes the channel). ``DELETE ?channel_ids=`` unsubscribes.
  Per-channel results come in order with crm-oas v8.0's messages; ``POST``, ``PUT``
  and ``PATCH`` answer 200 (the OAS gives 201 for ``POST``: not modelled), 207 for
  mixed outcomes, 400 when every one failed; ``PUT``/``PATCH`` of a channel that
  is not active is ``INVALID_DATA``.
* :func:`notify`: every change to a watched module, by the API or by an admin
  edit, POSTs ``{"server_time", "query_params", "module", "resource_uri", "ids",
  "affected_fields", "operation", "channel_id", "token"}`` to the channel's
  ``notify_url`` (``affected_fields``: every field the write changed, derived
  ones such as ``Appointment_End_Time`` included; ``return_affected_field_values``
  adds ``affected_values``, the values as the API shows them). A write that fails
  changes nothing and notifies nobody. ``operation`` is ``update`` for writes and
  ``delete`` for deletes (``DELETE /crm/{version}/Events``, the admin's "UI"
  delete), sent to channels watching ``{module}.all`` or ``{module}.delete``; a
  delete's ``ids`` are the deleted records, each with no affected fields
  (``[{id: []}]``) and no ``affected_values`` (Zoho's documents show only an
  ``insert`` payload; the shape of the others is the sandbox's assumption).
  Deliveries go through the outbox (:mod:`sandbox.outbox`).

The routes are in :data:`router`, which the app includes before the records
routes of :mod:`sandbox.crm` (``/crm/{version}/{module}/{id}`` would match
``actions/watch`` too).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from . import clock
from .auth import api_domain, require_crm
from .crm_request import check_version, json_body
from .crm_status import auto_completes, view
from .errors import CrmError, record_error
from .schema import MODULES
from .state import SandboxState

router = APIRouter()

# ----------------------------------------------------------------- notifications
def notify(state: SandboxState, request: Request, module: str, operation: str, changes: dict[str, list[str]]) -> None:
    """POST one notification per watching channel for the records in ``changes`` (id -> changed fields)."""
    if not changes:
        return
    now = clock.timestamp()
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
        if channel.get("return_affected_field_values") and operation != "delete":
            store = state.module_store(module)
            shown = {rid: view(module, store[rid], stamp, auto_complete=auto_completes(state)) for rid in changes if rid in store}
            payload["affected_values"] = [
                {"record_id": rid, "values": {f: shown[rid].get(f) for f in fields}}
                for rid, fields in changes.items()
                if rid in shown
            ]
        outbox.send("notification", channel["notify_url"], payload)

# ------------------------------------------------------------------- watch API
@router.get("/crm/{version}/actions/watch")
async def watch_list(version: str, request: Request) -> Response:
    """The org's active notification channels; ``channel_id`` and ``module`` (query, crm-oas
    v8.0) keep those with that id or watching that module. 204 when none."""
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.READ")
    state: SandboxState = request.app.state.sandbox
    now = clock.timestamp()
    active = [c for c in state.channels.values() if c["expiry_epoch"] > now]
    wanted_id, wanted_module = request.query_params.get("channel_id"), request.query_params.get("module")
    if wanted_id:
        active = [c for c in active if c["channel_id"] == wanted_id]
    if wanted_module:
        active = [c for c in active if any(e.split(".")[0] == wanted_module for e in c["events"])]
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

#: How the watch API's writes treat a channel (see :func:`_watch_write`).
SUBSCRIBE, REPLACE, PATCH = "subscribe", "replace", "patch"
#: Per-channel success messages (crm-oas v8.0 ``notifications.json``, ``Success_Response``).
MESSAGES = {
    SUBSCRIBE: "Successfully subscribed for actions-watch of the given module",
    REPLACE: "Successfully updated the subscribe details",
    PATCH: "Successfully updated the subscribe details",
    "removed": "Successfully removed the subscribe details",
}


def _expiry(value: Any) -> tuple[Any, dict | None]:
    """``channel_expiry`` as CRM sets it: one hour from now when not given or more than a
    week ahead ("If channel_expiry is not specified or set for more than a week, the default
    expiry time is for one hour": notifications docs, v7/v8; silently, no error). A value
    that is not an ISO 8601 date-time with offset, or not in the future, is ``INVALID_DATA``
    (not documented; the sandbox's choice)."""
    now = clock.now()
    if not value:
        return now + timedelta(hours=1), None
    try:
        expiry = clock.parse_iso(value)
    except ValueError:
        return None, record_error("INVALID_DATA", "invalid data", api_name="channel_expiry", expected_data_type="datetime")
    if expiry <= now:
        return None, record_error("INVALID_DATA", "channel_expiry should be in the future", api_name="channel_expiry")
    if expiry > now + timedelta(days=7):
        return now + timedelta(hours=1), None
    return expiry, None


def _validate_channel(entry: Any, i: int, mode: str, existing: dict | None = None) -> tuple[dict | None, dict | None]:
    """The channel ``entry`` asks for, or a per-channel error.

    ``SUBSCRIBE`` and ``REPLACE`` take the entry as the channel's whole details (what it
    leaves out takes its default: no token, one hour, no affected values); ``PATCH``
    changes only the keys given on ``existing``: ``events`` are added to the channel's,
    or with ``"_delete_events": true`` removed from them; ``channel_expiry`` given is set
    anew (one hour when more than a week ahead), not given keeps the current one.
    """
    if not isinstance(entry, dict):
        return None, record_error("INVALID_DATA", "invalid data", json_path=f"$.watch[{i}]")
    deleting = mode == PATCH and entry.get("_delete_events") is True
    if "_delete_events" in entry and entry["_delete_events"] not in (True, False):
        return None, record_error("INVALID_DATA", "invalid data", api_name="_delete_events", expected_data_type="boolean")
    if deleting and not entry.get("events"):
        return None, record_error("MANDATORY_NOT_FOUND", "required field not found", api_name="events", json_path=f"$.watch[{i}].events")
    if mode == PATCH and existing is not None:
        merged = {**existing, **{k: v for k, v in entry.items() if k not in ("events", "channel_expiry", "_delete_events")}}
        if "events" in entry:
            merged["events"] = entry["events"]
    else:
        merged = dict(entry)
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
    if mode == PATCH and existing is not None and "events" in entry:
        if deleting:
            events = [e for e in existing["events"] if e not in set(events)]
        else:
            events = existing["events"] + [e for e in events if e not in existing["events"]]
    token = merged.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 50):
        return None, record_error("INVALID_DATA", "token can have at most 50 characters", api_name="token")
    if not isinstance(merged["notify_url"], str) or not merged["notify_url"].startswith(("http://", "https://")):
        return None, record_error("INVALID_DATA", "invalid notify_url", api_name="notify_url")
    if mode == PATCH and existing is not None and not entry.get("channel_expiry"):
        expiry = clock.parse_iso(existing["channel_expiry"])
    else:
        expiry, err = _expiry(entry.get("channel_expiry"))
        if err:
            return None, err
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

async def _watch_write(version: str, request: Request, mode: str) -> JSONResponse:
    """``POST`` (``SUBSCRIBE``), ``PUT`` (``REPLACE``) or ``PATCH`` on ``actions/watch``.

    ``PUT`` and ``PATCH`` need an active channel with the entry's ``channel_id``
    (else ``INVALID_DATA``). A ``PATCH`` with ``_delete_events`` that removes every
    event of a channel removes the channel. Answers 200, 207 for mixed outcomes, 400
    when every channel failed.
    """
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.CREATE" if mode == SUBSCRIBE else "ZohoCRM.notifications.UPDATE")
    state: SandboxState = request.app.state.sandbox
    body = await json_body(request)
    items = body.get("watch") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise CrmError("MANDATORY_NOT_FOUND", 400, details={"api_name": "watch"})
    out: list[dict] = []
    ok = 0
    now = clock.timestamp()
    for i, entry in enumerate(items):
        existing = None
        if mode != SUBSCRIBE:
            existing = state.channels.get(str(entry.get("channel_id"))) if isinstance(entry, dict) else None
            if existing is None or existing["expiry_epoch"] < now:
                out.append(record_error("INVALID_DATA", "the channel_id given seems to be invalid", api_name="channel_id"))
                continue
        channel, err = _validate_channel(entry, i, mode, existing)
        if err:
            out.append(err)
            continue
        ok += 1
        if not channel["events"]:
            del state.channels[channel["channel_id"]]
            out.append({"code": "SUCCESS", "details": {"channel_id": channel["channel_id"]}, "message": MESSAGES["removed"], "status": "success"})
            continue
        state.channels[channel["channel_id"]] = channel
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
                "message": MESSAGES[mode],
                "status": "success",
            }
        )
    state.save_channels()
    status = 200 if ok == len(items) else 207 if ok else 400
    return JSONResponse({"watch": out}, status_code=status)

@router.post("/crm/{version}/actions/watch")
async def watch_subscribe(version: str, request: Request) -> JSONResponse:
    """Subscribe notification channels."""
    return await _watch_write(version, request, SUBSCRIBE)

@router.put("/crm/{version}/actions/watch")
async def watch_replace(version: str, request: Request) -> JSONResponse:
    """Update channels, replacing their details ("Update Details of a Notification")."""
    return await _watch_write(version, request, REPLACE)

@router.patch("/crm/{version}/actions/watch")
async def watch_update(version: str, request: Request) -> JSONResponse:
    """Change only the given details of channels; ``_delete_events`` removes the listed events."""
    return await _watch_write(version, request, PATCH)

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
