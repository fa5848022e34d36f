"""CRM notification channels: the watch API and the notifications it sends.

Follows Zoho CRM's Notification APIs (``/crm/{version}/actions/watch``):

* ``POST`` subscribes (``channel_expiry`` at most 7 days ahead, default one hour;
  ``token`` at most 50 characters; ``events`` such as ``Appointments__s.all`` or
  ``Events.edit``), ``GET`` lists the active channels (204 when none), ``PATCH``
  updates channels (events, expiry, ``notify_url``, token), ``DELETE
  ?channel_ids=`` unsubscribes. Per-channel results come in order; ``POST`` and
  ``PATCH`` answer 200, 207 for mixed outcomes, 400 when every one failed.
* :func:`notify`: every change to a watched module, by the API or by an admin
  edit, POSTs ``{"server_time", "query_params", "module", "resource_uri", "ids",
  "affected_fields", "operation", "channel_id", "token"}`` to the channel's
  ``notify_url`` (``affected_fields``: every field the write changed, derived
  ones such as ``Appointment_End_Time`` included; ``return_affected_field_values``
  adds ``affected_values``, the values as the API shows them). A write that fails
  changes nothing and notifies nobody. Deliveries go through the outbox
  (:mod:`sandbox.outbox`).

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
        if channel.get("return_affected_field_values"):
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
    """The org's notification channels."""
    check_version(version)
    require_crm(request, "ZohoCRM.notifications.READ")
    state: SandboxState = request.app.state.sandbox
    now = clock.timestamp()
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
    body = await json_body(request)
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
