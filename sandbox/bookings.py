"""Zoho Bookings v1: ``getappointment``, ``fetchappointment``, ``rescheduleappointment``, ``updateappointment``.

Paths are under ``/bookings/v1/json/``; every answer uses the envelope
``{"response": {"returnvalue": ..., "status": "success"|"failure"}}`` and business
failures come with HTTP 200 and ``status: failure``, as Bookings does. Times are
``dd-MMM-yyyy HH:mm:ss`` (24-hour) in each booking's own ``time_zone``;
``fetchappointment``'s ``from_time``/``to_time`` are read in the org time zone.
Parameters come as form fields (``-F booking_id=...``) or, for
``fetchappointment``, also as one ``data`` form field holding JSON.

Rules a real booking system enforces: no reschedule of a cancelled, completed or
no-show booking; a reschedule to the current start (or to the staff member it
already has) is refused; a ``start_time`` that does not exist in the booking's
time zone (a daylight-saving gap) is refused, and one that happens twice (a
fold) means the first; the sandbox has no resource groups, so any ``group_id``
is refused; a booking cannot be completed or marked no-show before it starts; a
finished booking (cancelled, completed, no-show) takes no further action.
Unexpected errors under ``/bookings/`` also answer with the failure envelope.

Every change (by the API or an admin edit) POSTs to ``bookings_webhook_url``:
``{"event": "appointment_rescheduled"|"appointment_cancelled"|"appointment_completed"|
"appointment_noshow", "booking_id", "status", "start_time", "end_time", "time_zone",
"staff_id", "service_id", "changed_by": "api"|"ui", "event_time"}`` (Zoho does not
document its webhook payload; this one carries at least ``booking_id``).
``fetchappointment`` pages hold ``per_page`` bookings (default 50, at most
``bookings_max_per_page``, 100; not documented by Zoho) and an empty page is
``{"response": [], "next_page_available": false}``, or HTTP 204 with no body under
``bookings_empty_page_204`` (what a public client expects).

Where Zoho's documents leave a choice, a setting decides (``sandbox/config.py``):

* Failure shape (``bookings_failure_shape``): business failures (HTTP 200) answer
  ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}`` (``outer``,
  the default) or ``{"response": {"returnvalue": {"status": "failure", "message": ...},
  "status": "success"}}`` (``returnvalue``); public clients check both (Pipedream's
  ``zoho_bookings`` reschedule action, the Activepieces Zoho Bookings piece).
* Statuses (fetch-appointment doc): ``UPCOMING``, ``CANCEL``, ``ONGOING``, ``PENDING``,
  ``COMPLETED``, ``NO_SHOW``, ``PENDING_PAYMENT``, ``PAYMENT_FAILURE``; the seed makes
  none of the last two (``PATCH /__sandbox/bookings/{id}`` ``{"status": ...}`` does). A
  booking whose payment failed is finished like a cancelled one (assumed).
* Availability (inferred from public clients; off by default): a reschedule outside
  the staff member's working hours (``working_hours``, ``staff_working_hours``, read
  in ``working_hours_time_zone`` or the booking's own zone) or overlapping another
  active booking of the same staff member (``refuse_overlaps``) is a failure.
* Answer times: ``start_time`` / ``end_time`` are ``dd-MMM-yyyy HH:mm:ss``;
  ``customer_booking_start_time`` and ``booked_on`` are ``yyyy-MM-dd HH:mm:ss``
  (get-appointment doc sample), all in the booking's ``time_zone``.
* Test aid (nothing like it in Zoho): ``PATCH /__sandbox/bookings/{id}/raw`` overrides
  or removes fields of a booking as the API shows it (``raw`` below), to serve a
  booking the client must survive (an unknown ``time_zone``, a start that is no time).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from . import clock
from .auth import api_domain, require_bookings
from .errors import BookingsError
from .state import SandboxState

#: Failure shapes (``bookings_failure_shape``).
FAILURE_SHAPES = ("outer", "returnvalue")


class _FailureShapeRoute(APIRoute):
    """A route whose business failures (:class:`BookingsError`, HTTP 200) take the shape the
    ``bookings_failure_shape`` setting names; other failures go to the app's handler (outer shape)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except BookingsError as exc:
                if exc.status_code == 200 and request.app.state.sandbox.config.bookings_failure_shape == "returnvalue":
                    value: dict[str, Any] = {"status": "failure", "message": exc.message}
                    if exc.code:
                        value["code"] = exc.code
                    return JSONResponse({"response": {"returnvalue": value, "status": "success"}})
                raise

        return shaped


router = APIRouter(prefix="/bookings/v1/json", route_class=_FailureShapeRoute)

STATUSES = ("UPCOMING", "CANCEL", "ONGOING", "PENDING", "COMPLETED", "NO_SHOW", "PENDING_PAYMENT", "PAYMENT_FAILURE")
FINISHED = {"CANCEL": "cancelled", "COMPLETED": "completed", "NO_SHOW": "marked as no-show", "PAYMENT_FAILURE": "not confirmed (its payment failed)"}
#: Statuses a booking holds its staff member's time in (for ``refuse_overlaps``).
ACTIVE = ("UPCOMING", "PENDING", "PENDING_PAYMENT")
#: What ``PATCH /__sandbox/bookings/{id}`` ``{"status": ...}`` may set (a payment provider's doing),
#: with the webhook event it sends.
PAYMENT_STATUSES = {"PENDING_PAYMENT": "appointment_payment_pending", "PAYMENT_FAILURE": "appointment_payment_failed", "UPCOMING": "appointment_confirmed"}
ACTIONS = {"completed": ("COMPLETED", "appointment_completed"), "cancel": ("CANCEL", "appointment_cancelled"), "noshow": ("NO_SHOW", "appointment_noshow")}
DEFAULT_PER_PAGE = 50
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def start_of(booking: dict[str, Any]) -> datetime:
    """The booking's start instant (aware, UTC)."""
    return datetime.fromisoformat(booking["start_utc"])


def status_of(booking: dict[str, Any], now: datetime) -> str:
    """The status Bookings shows: an ``UPCOMING`` booking under way is ``ONGOING``."""
    start = start_of(booking)
    if booking["status"] == "UPCOMING" and start <= now < start + timedelta(minutes=booking["duration"]):
        return "ONGOING"
    return booking["status"]


def iso_local(instant: datetime, tz: str) -> str:
    """``yyyy-MM-dd HH:mm:ss``: the wall time of ``instant`` in ``tz`` (``customer_booking_start_time``,
    ``booked_on``: the get-appointment doc sample gives ``2019-05-28 13:00:00``)."""
    return instant.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def view(booking: dict[str, Any], base_url: str, now: datetime) -> dict[str, Any]:
    """A booking as the API answers it, with its ``raw`` overrides (a test aid) applied last."""
    out = _view(booking, base_url, now)
    raw = booking.get("raw") or {}
    out.update(raw.get("set") or {})
    for name in raw.get("remove") or []:
        out.pop(name, None)
    return out


def _view(booking: dict[str, Any], base_url: str, now: datetime) -> dict[str, Any]:
    tz = booking["time_zone"]
    start = start_of(booking)
    end = start + timedelta(minutes=booking["duration"])
    return {
        "booking_id": booking["booking_id"],
        "service_id": booking["service_id"],
        "service_name": booking["service_name"],
        "staff_id": booking["staff_id"],
        "staff_name": booking["staff_name"],
        "start_time": clock.to_bookings(start, tz),
        "end_time": clock.to_bookings(end, tz),
        "time_zone": tz,
        "customer_booking_start_time": iso_local(start, tz),
        "customer_booking_time_zone": tz,
        "duration": f"{booking['duration']} mins",
        "status": status_of(booking, now),
        "customer_name": booking["customer_name"],
        "customer_email": booking["customer_email"],
        "customer_contact_no": booking["customer_contact_no"],
        "customer_more_info": booking["customer_more_info"],
        "cost": booking["cost"],
        "currency": booking["currency"],
        "booked_on": iso_local(datetime.fromisoformat(booking["booked_on_utc"]), tz),
        "summary_url": f"{base_url}/bookings/portal/#/appointment/{quote(booking['booking_id'], safe='')}",
    }


def ok(value: Any) -> JSONResponse:
    """The success envelope."""
    return JSONResponse({"response": {"returnvalue": value, "status": "success"}})


async def params(request: Request) -> dict[str, Any]:
    """Query string, form fields, and the keys of a JSON ``data`` form field, merged."""
    out: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        out.update({k: v for k, v in form.items() if isinstance(v, str)})
    elif ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BookingsError("Invalid JSON in the request body") from None
        if isinstance(body, dict):
            out.update(body)
    if isinstance(out.get("data"), str):
        try:
            data = json.loads(out.pop("data"))
        except ValueError:
            raise BookingsError("Invalid JSON in the data parameter") from None
        if isinstance(data, dict):
            out.update(data)
    return out


def _booking(state: SandboxState, booking_id: Any) -> dict[str, Any]:
    if not booking_id:
        raise BookingsError("booking_id is mandatory")
    booking = state.bookings.get(str(booking_id))
    if booking is None:
        raise BookingsError(f"Invalid booking_id {booking_id}")
    return booking


def webhook(state: SandboxState, request: Request, booking: dict[str, Any], event: str, changed_by: str) -> None:
    """Queue the Bookings webhook for a change of ``booking``."""
    cfg = state.config
    if not cfg.bookings_webhook_url:
        return
    tz = booking["time_zone"]
    start = start_of(booking)
    payload = {
        "event": event,
        "booking_id": booking["booking_id"],
        "status": booking["status"],
        "start_time": clock.to_bookings(start, tz),
        "end_time": clock.to_bookings(start + timedelta(minutes=booking["duration"]), tz),
        "time_zone": tz,
        "staff_id": booking["staff_id"],
        "service_id": booking["service_id"],
        "changed_by": changed_by,
        "event_time": clock.now().isoformat(),
    }
    request.app.state.outbox.send("bookings_webhook", cfg.bookings_webhook_url, payload, cfg.bookings_webhook_headers)


def reschedule(state: SandboxState, booking: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """Apply a reschedule (``start_time``, ``staff_id`` or ``group_id``); raises :class:`BookingsError`."""
    if booking["status"] in FINISHED:
        raise BookingsError(f"Appointment cannot be rescheduled as it is {FINISHED[booking['status']]}")
    if not any(p.get(k) for k in ("start_time", "staff_id", "group_id")):
        raise BookingsError("One of staff_id, group_id or start_time is mandatory")
    new = dict(booking)
    if p.get("start_time"):
        try:
            local = clock.parse_bookings(p["start_time"], booking["time_zone"])
        except ValueError:
            raise BookingsError("Invalid start_time: use dd-MMM-yyyy HH:mm:ss (24-hour)") from None
        if not clock.exists(local):
            raise BookingsError(
                f"Invalid start_time: {p['start_time']} does not exist in {booking['time_zone']} (daylight-saving change)"
            )
        start = local.astimezone(clock.UTC)
        if start == start_of(booking):
            raise BookingsError("The appointment is already scheduled for the given start_time")
        new["start_utc"] = start.isoformat()
    if p.get("group_id"):
        raise BookingsError(f"Invalid group_id {p['group_id']}")
    if p.get("staff_id"):
        staff = {b["staff_id"]: b for b in state.bookings.values()}
        if str(p["staff_id"]) not in staff:
            raise BookingsError(f"Invalid staff_id {p['staff_id']}")
        if str(p["staff_id"]) == booking["staff_id"] and new["start_utc"] == booking["start_utc"]:
            raise BookingsError("The appointment is already assigned to the given staff_id")
        s = staff[str(p["staff_id"])]
        new.update(staff_id=s["staff_id"], staff_name=s["staff_name"], staff_email=s["staff_email"])
    check_availability(state, new)
    new["modified_utc"] = clock.now().isoformat()
    return new


def parse_hours(spec: str) -> tuple[frozenset[int], int, int]:
    """``"09:00-17:00"`` or ``"Mon-Fri 09:00-17:00"`` (days ``Mon-Fri``, ``Mon,Wed,Fri`` or ``Sat``)
    -> ``(weekdays 0..6, first minute, last minute)``; ``24:00`` ends the day. Raises ``ValueError``."""
    parts = spec.strip().split()
    if len(parts) not in (1, 2):
        raise ValueError(f"working hours {spec!r}: use HH:MM-HH:MM, optionally after days (Mon-Fri)")
    days = frozenset(range(7))
    if len(parts) == 2:
        days = frozenset()
        for item in parts[0].lower().split(","):
            first, _, last = item.partition("-")
            if first not in DAYS or (last and last not in DAYS):
                raise ValueError(f"working hours {spec!r}: unknown day in {parts[0]!r} (Mon..Sun)")
            a, b = DAYS.index(first), DAYS.index(last or first)
            days |= frozenset(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    try:
        lo, hi = (int(h) * 60 + int(m) for h, m in (t.split(":") for t in parts[-1].split("-")))
    except ValueError:
        raise ValueError(f"working hours {spec!r}: use HH:MM-HH:MM") from None
    if not 0 <= lo < hi <= 24 * 60:
        raise ValueError(f"working hours {spec!r}: the start must come before the end, within 00:00-24:00")
    return days, lo, hi


def check_availability(state: SandboxState, booking: dict[str, Any]) -> None:
    """Refuse ``booking`` (as rescheduled) when its staff member is not available for all of it:
    outside their working hours (``staff_working_hours`` / ``working_hours``, wall time in
    ``working_hours_time_zone`` or the booking's own zone) or, with ``refuse_overlaps``, over
    another active booking (``UPCOMING``, ``PENDING``, ``PENDING_PAYMENT``) of theirs.

    Zoho documents no such rule or message; the check is inferred from public clients (all
    check a reschedule's answer for a failure). Raises :class:`BookingsError` (HTTP 200).
    """
    cfg = state.config
    start = start_of(booking)
    end = start + timedelta(minutes=booking["duration"])
    spec = cfg.staff_working_hours.get(booking["staff_id"]) or cfg.working_hours
    if spec:
        zone = cfg.working_hours_time_zone or booking["time_zone"]
        days, lo, hi = parse_hours(spec)
        local = start.astimezone(ZoneInfo(zone))
        first = local.hour * 60 + local.minute + local.second / 60
        last = first + booking["duration"]  # past 24:00: into the next day, outside any hours
        if local.weekday() not in days or first < lo or last > hi:
            raise BookingsError(
                f"Staff {booking['staff_name']} is not available from {clock.to_bookings(start, booking['time_zone'])} "
                f"to {clock.to_bookings(end, booking['time_zone'])} ({booking['time_zone']}): outside working hours ({spec} {zone})"
            )
    if cfg.refuse_overlaps:
        for other in state.bookings.values():
            if other["booking_id"] == booking["booking_id"] or other["staff_id"] != booking["staff_id"] or other["status"] not in ACTIVE:
                continue
            o_start = start_of(other)
            if o_start < end and start < o_start + timedelta(minutes=other["duration"]):
                raise BookingsError(
                    f"Slot not available: staff {booking['staff_name']} already has an appointment from "
                    f"{clock.to_bookings(o_start, booking['time_zone'])} ({booking['time_zone']})"
                )


def update(booking: dict[str, Any], action: Any) -> tuple[dict[str, Any], str]:
    """Apply ``action`` (``completed``, ``cancel``, ``noshow``); returns the booking and webhook event."""
    if not isinstance(action, str) or action not in ACTIONS:
        raise BookingsError("Invalid action: use completed, cancel or noshow")
    if booking["status"] in FINISHED:
        raise BookingsError(f"Appointment is already {FINISHED[booking['status']]}")
    status, event = ACTIONS[action]
    if status in ("COMPLETED", "NO_SHOW") and start_of(booking) > clock.now():
        raise BookingsError("Appointment cannot be marked as completed or no-show before it starts")
    new = dict(booking, status=status, modified_utc=clock.now().isoformat())
    return new, event


def set_payment_status(booking: dict[str, Any], status: Any) -> tuple[dict[str, Any], str]:
    """What a payment provider does to a booking (admin edit only; no API sets it): ``PENDING_PAYMENT``
    (booked, not paid yet), ``PAYMENT_FAILURE`` (the payment failed: finished) or ``UPCOMING`` (paid).
    Returns the booking and the webhook event; raises :class:`BookingsError` for another status
    or a finished booking."""
    if not isinstance(status, str) or status not in PAYMENT_STATUSES:
        raise BookingsError(f"Invalid status: use one of {', '.join(PAYMENT_STATUSES)}")
    if booking["status"] in FINISHED:
        raise BookingsError(f"Appointment is already {FINISHED[booking['status']]}")
    return dict(booking, status=status, modified_utc=clock.now().isoformat()), PAYMENT_STATUSES[status]


def set_raw(booking: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The booking with raw overrides (a test aid, no Zoho equivalent): ``body["set"]`` (field ->
    any JSON value) is shown instead of the real values, ``body["remove"]`` (field names) are left
    out of every API answer; both merge with earlier overrides. Raises :class:`BookingsError` (400)."""
    sets, removes = body.get("set", {}), body.get("remove", [])
    if not isinstance(sets, dict) or not isinstance(removes, list) or not all(isinstance(n, str) for n in removes) or not (sets or removes):
        raise BookingsError('Give "set": {field: value} and/or "remove": [field, ...]', 400)
    raw = booking.get("raw") or {}
    new_set = {k: v for k, v in {**(raw.get("set") or {}), **sets}.items() if k not in removes}
    new_remove = sorted((set(raw.get("remove") or []) - set(sets)) | set(removes))
    return dict(booking, raw={"set": new_set, "remove": new_remove})


def save(state: SandboxState, booking: dict[str, Any]) -> None:
    """Store a changed booking (and persist it with ``--db``)."""
    state.bookings[booking["booking_id"]] = booking
    state.stats.writes["bookings"] += 1
    state.stats.writes_by_record[f"bookings:{booking['booking_id']}"] += 1
    state.save_records("bookings", {booking["booking_id"]: booking})


@router.get("/getappointment")
async def getappointment(request: Request) -> JSONResponse:
    """One booking by ``booking_id``."""
    require_bookings(request)
    state: SandboxState = request.app.state.sandbox
    booking = _booking(state, (await params(request)).get("booking_id"))
    return ok(view(booking, api_domain(request), clock.now()))


@router.post("/fetchappointment")
async def fetchappointment(request: Request) -> Response:
    """Bookings in a time window, optionally by status, service or staff, a page at a time
    (an empty page: HTTP 204 with no body under ``bookings_empty_page_204``)."""
    require_bookings(request)
    state: SandboxState = request.app.state.sandbox
    p = await params(request)
    tz = state.config.org_time_zone
    window = []
    for key in ("from_time", "to_time"):
        if p.get(key):
            try:
                window.append(clock.parse_bookings(p[key], tz))
            except ValueError:
                raise BookingsError(f"Invalid {key}: use dd-MMM-yyyy HH:mm:ss") from None
        else:
            window.append(None)
    status = p.get("status")
    if status and status not in STATUSES:
        raise BookingsError(f"Invalid status: use one of {', '.join(STATUSES)}")
    most = state.config.bookings_max_per_page
    try:
        page = int(p.get("page", 1))
        per_page = int(p.get("per_page", min(DEFAULT_PER_PAGE, most)))
    except (TypeError, ValueError):
        raise BookingsError("page and per_page should be numbers") from None
    if page < 1 or not 1 <= per_page <= most:
        raise BookingsError(f"page should be at least 1 and per_page between 1 and {most}")
    now = clock.now()
    lo, hi = window
    matches = [
        b
        for b in state.bookings.values()
        if (lo is None or start_of(b) >= lo)
        and (hi is None or start_of(b) <= hi)
        and (not status or status_of(b, now) == status)
        and (not p.get("service_id") or b["service_id"] == str(p["service_id"]))
        and (not p.get("staff_id") or b["staff_id"] == str(p["staff_id"]))
    ]
    matches.sort(key=lambda b: (b["start_utc"], b["booking_id"]))
    chunk = matches[(page - 1) * per_page : page * per_page]
    if not chunk and state.config.bookings_empty_page_204:
        return Response(status_code=204)
    base = api_domain(request)
    return ok(
        {
            "response": [view(b, base, now) for b in chunk],
            "next_page_available": page * per_page < len(matches),
            "page": page,
        }
    )


@router.post("/rescheduleappointment")
async def rescheduleappointment(request: Request) -> JSONResponse:
    """Move a booking to ``start_time`` (in its own ``time_zone``) or another staff member."""
    require_bookings(request)
    state: SandboxState = request.app.state.sandbox
    p = await params(request)
    booking = reschedule(state, _booking(state, p.get("booking_id")), p)
    save(state, booking)
    webhook(state, request, booking, "appointment_rescheduled", "api")
    return ok(view(booking, api_domain(request), clock.now()))


@router.post("/updateappointment")
async def updateappointment(request: Request) -> JSONResponse:
    """Mark a booking ``completed``, ``cancel`` or ``noshow``."""
    require_bookings(request)
    state: SandboxState = request.app.state.sandbox
    p = await params(request)
    booking, event = update(_booking(state, p.get("booking_id")), p.get("action"))
    save(state, booking)
    webhook(state, request, booking, event, "api")
    return ok(view(booking, api_domain(request), clock.now()))
