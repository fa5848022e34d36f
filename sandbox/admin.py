"""The sandbox's admin API under ``/__sandbox/`` (for tests, benchmarks and the demo).

No authentication: the sandbox binds to 127.0.0.1. Nothing here exists in Zoho.

* ``GET /__sandbox/health``.
* ``GET /__sandbox/credentials``: a working ``client_id``, ``client_secret`` and
  ``refresh_token`` (derived from the seed, so stable across resets), the scopes,
  and the base URLs (``accounts_url``, ``api_domain``, ``bookings_url``).
  ``POST`` with ``{"scope": [...], "permission": "full"|"read_only"}`` makes a new
  self client (to reproduce ``OAUTH_SCOPE_MISMATCH`` and ``NO_PERMISSION``).
* ``POST /__sandbox/grant-code`` ``{"client_id"?, "scope"?, "ttl"?}``: a one-time code
  for ``grant_type=authorization_code``.
* ``POST /__sandbox/tokens/expire``: expire every access token now (a token
  expiring mid-run).
* ``POST /__sandbox/reset`` ``{"appointments"?, "seed"?, "anchor_date"?}``: re-seed
  and forget tokens, jobs, channels, faults and counters (other keys are listed
  under ``ignored``; a bad value answers 400 and resets nothing).
* ``GET``/``PUT /__sandbox/config``: read or change settings (``bulk_delay``,
  ``bulk_page_size``, ``token_ttl``, ``bookings_webhook_url``, ``ask_to_mark_completed``...).
  An unknown name or a value of the wrong type answers 400 and changes nothing.
  Fault injection for benchmarks (not in Zoho): ``drop_bookings_webhooks`` and
  ``drop_crm_notifications`` (fractions 0..1; outside that, or not a number,
  answers 400 naming the setting) lose that share of Bookings webhooks and CRM
  notifications, drawn from ``drop_seed`` (integer >= 0, or null for 0); naming
  any of the three restarts the draws (see :mod:`sandbox.outbox`).
* ``PATCH /__sandbox/crm/{module}/{id}``: edit a CRM record as a user in the UI
  would (same rules as the API, ``Modified_By`` is the UI user, ``Modified_Time``
  the sandbox's clock, an ``update`` notification fires). Answers
  ``{"data": [per-record result]}``. A calendar drag of a meeting is
  ``PATCH /__sandbox/crm/Events/{id}`` ``{"Start_DateTime": ..., "End_DateTime": ...}``
  (ISO 8601, any offset); ``{"Booking_Status": "Cancelled"}`` sets the meeting's
  status pick list.
* ``DELETE /__sandbox/crm/{module}/{id}``: delete a CRM record as a user in the UI
  would: the record is gone (as after ``DELETE /crm/{version}/Events``) and a
  ``delete`` notification fires; counted as a write. Answers
  ``{"data": [per-record result]}``; an unknown id answers 404 ``RESOURCE_NOT_FOUND``.
* ``PATCH /__sandbox/crm/{module}/{id}/raw`` ``{"set": {field: value}}``: a test aid
  that stores values on a CRM record as given, unchecked (an ``Appointment_Start_Time``
  of ``not-a-date``), stamped as a UI edit and notified; not counted as a write
  (:func:`raw_crm`).
* ``PATCH /__sandbox/bookings/{booking_id}`` ``{"start_time"?, "staff_id"?, "action"?, "status"?}``
  (``#`` URL-encoded as ``%23``): edit a booking as its owner would; the webhook fires.
  ``status`` is what a payment provider does: ``PENDING_PAYMENT``, ``PAYMENT_FAILURE``
  or ``UPCOMING`` (paid).
* ``PATCH /__sandbox/bookings/{booking_id}/raw`` ``{"set"?: {field: value}, "remove"?: [field]}``,
  ``DELETE`` to undo: a test aid that changes how the Bookings API shows one booking
  (e.g. ``time_zone`` ``Mars/Olympus_Mons``, a ``start_time`` that is a number, no
  ``status``), to check that the client survives what it cannot read. No webhook.
* ``GET``/``PUT /__sandbox/clock``: the sandbox's now (ISO 8601 UTC) and offset
  from real time; ``PUT`` ``{"now": "<ISO 8601>"}``, ``{"advance_seconds": N}`` or
  ``{"real": true}`` (see :mod:`sandbox.clock` for what follows it). A reset goes
  back to real time.
* ``GET``/``PUT``/``DELETE /__sandbox/faults``: per route group (``accounts``,
  ``crm``, ``bulk``, ``bookings``, or ``all``) ``{"error_500": p, "error_429": p,
  "retry_after": s, "delay": s, "drop": p}``; ``p`` is a probability 0..1, a
  dropped connection closes the socket after the status line. A group's own
  setting overrides ``all``; a bad group, key or value answers 400 and changes
  nothing. The draws come from a generator seeded with ``seed`` at each reset,
  so a run of calls after a reset meets the same faults.
* ``GET /__sandbox/stats`` (``DELETE`` zeroes it): API calls per route, per group
  and per token label (a hash prefix: tokens never appear), access tokens minted
  (per refresh token label), throttled token requests, faults injected (per
  ``group:kind``, ``kind`` one of ``500``, ``429``, ``drop``, ``delay``), writes
  (per module, and per record in ``writes_by_record``: ``"<module>:<id>"`` or
  ``"bookings:<booking_id>"``, admin edits included),
  outbound deliveries (sent, failed, refused, dropped), bulk jobs and downloads, and
  ``limits``: the day's usage per API family against Zoho's limits
  (:mod:`sandbox.limits`). Calls are
  named by route template (``GET /crm/{version}/{module}``), faulted ones too.
* ``GET /__sandbox/dump?module=Appointments__s|Events|bookings&booking_id=...``:
  both sides' records as the APIs show them.
* ``GET /__sandbox/outbox``: the last 500 notifications, webhooks and callbacks
  sent, refused or dropped (URL, status, payload); ``POST /__sandbox/outbox/drain`` waits until the
  queue is empty.
"""

from __future__ import annotations

import copy
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import bookings as bk
from . import clock
from .auth import api_domain
from .config import FRACTION_SETTINGS, OPTIONAL_INT_SETTINGS
from .crm_records import apply_updates, delete_records
from .crm_request import check_module
from .crm_status import auto_completes, view
from .schema import FIELD_INDEX
from .watch import notify
from .errors import BookingsError, CrmError
from .limits import BOOKINGS_PLANS, CRM_EDITIONS
from .seed import UI_USER
from .state import DEFAULT_SCOPES, SandboxState

router = APIRouter(prefix="/__sandbox")

FAULT_GROUPS = ("accounts", "crm", "bulk", "bookings", "all")
FAULT_KEYS = ("error_500", "error_429", "retry_after", "delay", "drop")
PROBABILITY_KEYS = ("error_500", "error_429", "drop")
RESET_KEYS = ("appointments", "seed", "anchor_date")


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        import json

        body = json.loads(raw)
    except ValueError:
        raise CrmError("INVALID_DATA", 400, "the input is not a valid JSON") from None
    if not isinstance(body, dict):
        raise CrmError("INVALID_DATA", 400, "expected a JSON object")
    return body


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@router.get("/credentials")
async def credentials(request: Request) -> dict[str, Any]:
    """The sandbox's own self client and base URLs."""
    base = api_domain(request)
    return {
        **_state(request).default_credentials(),
        "accounts_url": base,
        "api_domain": base,
        "bookings_url": f"{base}/bookings/v1/json",
    }


@router.post("/credentials")
async def new_credentials(request: Request) -> dict[str, Any]:
    """A new self client with the given scopes and permission."""
    body = await _body(request)
    scope = body.get("scope", list(DEFAULT_SCOPES))
    scopes = [s.strip() for s in (scope.split(",") if isinstance(scope, str) else scope) if s.strip()]
    permission = body.get("permission", "full")
    if permission not in ("full", "read_only"):
        raise CrmError("INVALID_DATA", 400, "permission should be full or read_only")
    base = api_domain(request)
    return {**_state(request).new_client(scopes, permission), "accounts_url": base, "api_domain": base}


@router.post("/grant-code")
async def grant_code(request: Request) -> dict[str, Any]:
    """A one-time grant code for ``grant_type=authorization_code``."""
    state = _state(request)
    body = await _body(request)
    client_id = body.get("client_id") or state.default_credentials()["client_id"]
    if client_id not in state.clients:
        raise CrmError("INVALID_DATA", 400, "unknown client_id")
    scope = body.get("scope", list(DEFAULT_SCOPES))
    scopes = scope.split(",") if isinstance(scope, str) else list(scope)
    return {"code": state.new_grant_code(client_id, scopes, float(body.get("ttl", 600))), "client_id": client_id}


@router.post("/tokens/expire")
async def expire_tokens(request: Request) -> dict[str, int]:
    """Expire every access token now."""
    state = _state(request)
    for info in state.access_tokens.values():
        info["expires_at"] = clock.timestamp() - 1
    state.save_oauth()
    return {"expired": len(state.access_tokens)}


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    """Re-seed (optionally with new ``appointments``, ``seed``, ``anchor_date``)."""
    state = _state(request)
    body = await _body(request)
    changes = {k: v for k, v in body.items() if k in RESET_KEYS}
    ignored = [k for k in body if k not in RESET_KEYS]
    _check_settings(state, changes)
    state.config.update(changes)
    for task in request.app.state.bulk_tasks.values():
        task.cancel()
    request.app.state.bulk_tasks.clear()
    state.reset()
    request.app.state.outbox.reset_drops()
    return {"status": "reset", "appointments": len(state.appointments), "ignored": ignored}


@router.get("/config")
async def get_config(request: Request) -> dict[str, Any]:
    """Current settings."""
    return _state(request).config.as_dict()


@router.put("/config")
async def put_config(request: Request) -> JSONResponse:
    """Change settings; unknown names answer 400 and change nothing."""
    state = _state(request)
    body = await _body(request)
    known = set(state.config.as_dict())
    unknown = [k for k in body if k not in known]
    if unknown:
        raise CrmError("INVALID_DATA", 400, f"unknown settings: {', '.join(unknown)}", {"names": unknown})
    _check_settings(state, body)
    state.config.update(body)
    if any(name.startswith("drop_") for name in body):
        request.app.state.outbox.reset_drops()
    return JSONResponse(state.config.as_dict())


def _check_settings(state: SandboxState, changes: dict[str, Any]) -> None:
    """Raise ``INVALID_DATA`` (400) unless every value in ``changes`` suits its setting.

    Checked on a copy of the settings, so a bad value changes nothing.
    """
    trial = copy.deepcopy(state.config)
    for name, value in changes.items():
        current = getattr(trial, name)
        if name in OPTIONAL_INT_SETTINGS:
            if not (value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)):
                raise CrmError("INVALID_DATA", 400, f"{name} should be an integer >= 0 or null, got {value!r}", {"name": name})
            continue
        if isinstance(current, bool):
            ok = isinstance(value, bool)
        elif isinstance(current, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if name in FRACTION_SETTINGS and not (ok and value <= 1):
                raise CrmError("INVALID_DATA", 400, f"{name} should be a number from 0 to 1, got {value!r}", {"name": name})
        elif isinstance(current, dict):
            ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        else:
            ok = isinstance(value, type(current))
        if not ok:
            raise CrmError("INVALID_DATA", 400, f"bad value for {name}: {value!r}", {"name": name})
    try:
        trial.update(changes)
        if trial.anchor_date:
            date.fromisoformat(trial.anchor_date)
        ZoneInfo(trial.org_time_zone)
        if trial.bookings_plan not in BOOKINGS_PLANS:
            raise ValueError(f"bookings_plan should be one of {', '.join(BOOKINGS_PLANS)}")
        if trial.crm_edition not in CRM_EDITIONS:
            raise ValueError(f"crm_edition should be one of {', '.join(CRM_EDITIONS)}")
        if not 400 <= trial.bookings_limit_status <= 599:
            raise ValueError("bookings_limit_status should be an HTTP error status (400..599)")
        if trial.bookings_failure_shape not in bk.FAILURE_SHAPES:
            raise ValueError(f"bookings_failure_shape should be one of {', '.join(bk.FAILURE_SHAPES)}")
        if trial.bookings_max_per_page < 1:
            raise ValueError("bookings_max_per_page should be at least 1")
        for spec in [trial.working_hours, *trial.staff_working_hours.values()]:
            if spec:
                bk.parse_hours(spec)
        if trial.working_hours_time_zone:
            ZoneInfo(trial.working_hours_time_zone)
    except (TypeError, ValueError, KeyError, ZoneInfoNotFoundError) as exc:
        raise CrmError("INVALID_DATA", 400, f"bad setting value: {exc}") from None


@router.patch("/crm/{module}/{record_id}")
async def edit_crm(module: str, record_id: str, request: Request) -> JSONResponse:
    """Edit a CRM record as a UI user (rules, Modified_By/Time, notifications)."""
    check_module(module)
    body = await _body(request)
    results, status = apply_updates(_state(request), request, module, [{**body, "id": record_id}], dict(UI_USER))
    return JSONResponse({"data": results}, status_code=status)


@router.delete("/crm/{module}/{record_id}")
async def delete_crm(module: str, record_id: str, request: Request) -> JSONResponse:
    """Delete a CRM record as a UI user (record gone, ``delete`` notification); unknown id: 404."""
    check_module(module)
    state = _state(request)
    if record_id not in state.module_store(module):
        raise CrmError("RESOURCE_NOT_FOUND", 404, f"no {module} record has the id {record_id}", {"module": module, "id": record_id})
    return JSONResponse({"data": delete_records(state, request, module, [record_id])})


#: Fields the raw test aid may not set: the record's identity and the times paging sorts on.
RAW_LOCKED = ("id", "Created_Time", "Modified_Time")


@router.patch("/crm/{module}/{record_id}/raw")
async def raw_crm(module: str, record_id: str, request: Request) -> JSONResponse:
    """Test aid: ``{"set": {field: value}}`` stores values on a CRM record as given, unchecked.

    Zoho never stores a bad value; this lets tests check that the client survives one
    it cannot read (an ``Appointment_Start_Time`` of ``not-a-date``, without an offset,
    in month 13). The write is stamped as a UI edit (``Modified_Time`` now,
    ``Modified_By`` the UI user) and watching channels are notified, as the edit that
    put the value there would be; it is not counted in ``writes``. A later edit (this
    aid, ``PATCH /__sandbox/crm/...`` or the API) replaces the value; the sandbox's
    rules treat a date-time they cannot read as unknown. Only fields of the module,
    and not ``id``, ``Created_Time`` or ``Modified_Time``: else 400 ``INVALID_DATA``.
    Answers ``{"data": [the record as stored]}``.
    """
    check_module(module)
    state = _state(request)
    body = await _body(request)
    values = body.get("set")
    if not isinstance(values, dict) or not values:
        raise CrmError("INVALID_DATA", 400, 'give {"set": {field: value, ...}}')
    bad = [k for k in values if k not in FIELD_INDEX[module] or k in RAW_LOCKED]
    if bad:
        raise CrmError("INVALID_DATA", 400, f"cannot set {', '.join(map(str, bad))}: not a field of {module}, or one the aid may not set", {"names": bad})
    store = state.module_store(module)
    rec = store.get(record_id)
    if rec is None:
        raise CrmError("INVALID_DATA", 400, "the id given seems to be invalid", {"id": record_id})
    rec = {**rec, **values, "Modified_Time": clock.to_crm(clock.now(), state.config.org_time_zone), "Modified_By": dict(UI_USER)}
    store[record_id] = rec
    state.save_records(module, {record_id: rec})
    notify(state, request, module, "update", {record_id: sorted(values)})
    return JSONResponse({"data": [rec]})


@router.patch("/bookings/{booking_id}")
async def edit_booking(booking_id: str, request: Request) -> JSONResponse:
    """Reschedule and/or act on a booking as its owner would; the webhook fires."""
    state = _state(request)
    body = await _body(request)
    booking = state.bookings.get(booking_id)
    if booking is None:
        raise BookingsError(f"Invalid booking_id {booking_id}", 404)
    if not any(body.get(k) for k in ("start_time", "staff_id", "action", "status")):
        raise BookingsError("Give start_time, staff_id, action or status", 400)
    events = []
    if body.get("status"):
        booking, event = bk.set_payment_status(booking, body["status"])
        events.append(event)
    if body.get("start_time") or body.get("staff_id"):
        booking = bk.reschedule(state, booking, body)
        events.append("appointment_rescheduled")
    if body.get("action"):
        booking, event = bk.update(booking, body["action"])
        events.append(event)
    bk.save(state, booking)
    for event in events:
        bk.webhook(state, request, booking, event, "ui")
    return bk.ok(bk.view(booking, api_domain(request), clock.now()))


@router.patch("/bookings/{booking_id}/raw")
async def corrupt_booking(booking_id: str, request: Request) -> JSONResponse:
    """Test aid: ``{"set": {field: value}, "remove": [field]}`` changes how the API shows a booking
    (:func:`sandbox.bookings.set_raw`); no webhook, not counted as a write."""
    state = _state(request)
    booking = state.bookings.get(booking_id)
    if booking is None:
        raise BookingsError(f"Invalid booking_id {booking_id}", 404)
    booking = bk.set_raw(booking, await _body(request))
    state.bookings[booking_id] = booking
    state.save_records("bookings", {booking_id: booking})
    return bk.ok(bk.view(booking, api_domain(request), clock.now()))


@router.delete("/bookings/{booking_id}/raw")
async def repair_booking(booking_id: str, request: Request) -> JSONResponse:
    """Drop a booking's raw overrides: the API shows its real fields again."""
    state = _state(request)
    booking = state.bookings.get(booking_id)
    if booking is None:
        raise BookingsError(f"Invalid booking_id {booking_id}", 404)
    booking = {k: v for k, v in booking.items() if k != "raw"}
    state.bookings[booking_id] = booking
    state.save_records("bookings", {booking_id: booking})
    return bk.ok(bk.view(booking, api_domain(request), clock.now()))


def _clock_view() -> dict[str, Any]:
    return {"now": clock.now().isoformat().replace("+00:00", "Z"), "offset_seconds": round(clock.offset(), 3), "real": clock.offset() == 0}


@router.get("/clock")
async def get_clock() -> dict[str, Any]:
    """The sandbox's now (ISO 8601 UTC) and its offset from real time in seconds."""
    return _clock_view()


@router.put("/clock")
async def put_clock(request: Request) -> dict[str, Any]:
    """``{"now": "<ISO 8601 with offset>"}`` sets the clock (it keeps running from
    there), ``{"advance_seconds": N}`` moves it (negative: back), ``{"real": true}``
    goes back to real time. Exactly one key; anything else answers 400."""
    body = await _body(request)
    if len(body) != 1 or next(iter(body)) not in ("now", "advance_seconds", "real"):
        raise CrmError("INVALID_DATA", 400, 'give exactly one of "now", "advance_seconds", "real"')
    if "now" in body:
        try:
            clock.set_now(clock.parse_iso(body["now"]))
        except (ValueError, OverflowError) as exc:
            raise CrmError("INVALID_DATA", 400, f"bad now: {exc}") from None
    elif "advance_seconds" in body:
        step = body["advance_seconds"]
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise CrmError("INVALID_DATA", 400, "advance_seconds should be a number")
        clock.advance(float(step))
    else:
        if body["real"] is not True:
            raise CrmError("INVALID_DATA", 400, 'real takes true')
        clock.set_real()
    return _clock_view()


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    """Injected faults per group."""
    return _state(request).faults


@router.put("/faults")
async def put_faults(request: Request) -> dict[str, Any]:
    """Set faults: ``{group: {error_500, error_429, retry_after, delay, drop}}``.

    Each named group's spec replaces that group's previous one; groups not named
    keep theirs. Probabilities must be within 0..1 and seconds at least 0. Any
    bad group, key or value answers 400 and changes nothing.
    """
    state = _state(request)
    body = await _body(request)
    new: dict[str, dict[str, float]] = {}
    for group, spec in body.items():
        if group not in FAULT_GROUPS or not isinstance(spec, dict):
            raise CrmError("INVALID_DATA", 400, f"unknown fault group {group!r}: use {', '.join(FAULT_GROUPS)}")
        bad = [k for k in spec if k not in FAULT_KEYS]
        if bad:
            raise CrmError("INVALID_DATA", 400, f"unknown fault keys {bad}: use {', '.join(FAULT_KEYS)}")
        try:
            if any(isinstance(v, bool) for v in spec.values()):
                raise TypeError
            values = {k: float(v) for k, v in spec.items()}
        except (TypeError, ValueError):
            raise CrmError("INVALID_DATA", 400, "fault values should be numbers") from None
        for key, value in values.items():
            top = 1.0 if key in PROBABILITY_KEYS else float("inf")
            if not 0 <= value <= top:
                raise CrmError("INVALID_DATA", 400, f"{group}.{key} should be between 0 and {top:g}")
        new[group] = values
    state.faults.update(new)
    return state.faults


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    """Turn every fault off."""
    _state(request).faults.clear()
    return {}


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    """API-call counters, and the day's usage against Zoho's API limits (``limits``)."""
    state = _state(request)
    return {**state.stats.as_dict(), "limits": state.usage.as_dict(state.config)}


@router.delete("/stats")
async def clear_stats(request: Request) -> dict[str, Any]:
    """Zero the counters."""
    from .state import Stats

    _state(request).stats = Stats()
    return {}


@router.get("/dump")
async def dump(request: Request) -> dict[str, Any]:
    """Both sides' records as the APIs show them."""
    state = _state(request)
    q = request.query_params
    wanted = q.get("module")
    booking_id = q.get("booking_id")
    now = clock.now()
    base = api_domain(request)
    out: dict[str, Any] = {}
    for module in ("Appointments__s", "Events"):
        if wanted in (None, module):
            out[module] = [
                view(module, r, now, auto_complete=auto_completes(state)) for r in state.module_store(module).values() if booking_id in (None, r.get("Booking_Id"))
            ]
    if wanted in (None, "bookings"):
        out["bookings"] = [bk.view(b, base, now) for b in state.bookings.values() if booking_id in (None, b["booking_id"])]
    return out


@router.get("/outbox")
async def outbox(request: Request) -> dict[str, Any]:
    """Recent outbound deliveries."""
    state = _state(request)
    return {"pending": request.app.state.outbox.queue.qsize(), "sent": list(state.outbox_log)}


@router.post("/outbox/drain")
async def drain(request: Request) -> dict[str, Any]:
    """Wait until every queued delivery was attempted."""
    await request.app.state.outbox.drain()
    return {"pending": 0}
