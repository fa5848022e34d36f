"""Deterministic seed data: bookings and their CRM ``Appointments__s`` and ``Events`` records.

The same ``(seed, appointments, anchor_date)`` always yields the same records.
Every appointment exists three times, linked by the booking id (``#AN-00001``):
a Zoho Bookings booking, a CRM ``Appointments__s`` record and a CRM ``Events``
(Meetings) record, each with a ``Booking_Id`` custom field. Starts are spread over
anchor-30 to anchor+30 days, on a 15-minute grid between 08:00 and 18:00 local
time in the booking's ``time_zone``; both sides agree at seed time: an
``Events`` record starts and ends when its booking does, as its
``Appointments__s`` record does, and its ``Booking_Status`` custom pick list
(an organisation's own field, assumed by the sandbox) mirrors the booking's
status (:data:`MEETING_STATUS_OF`).
"""

from __future__ import annotations

import gc
import random
from bisect import bisect
from datetime import date, datetime, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

from .clock import UTC, now, to_crm
from .config import SEED_TIME_ZONES, SandboxConfig

#: Zoho users of the sandbox org. The API user makes API writes; the UI user
#: makes the admin "as a user in the UI would" edits.
API_USER = {"name": "Patricia Boyle", "id": "5545974000000393001", "email": "patricia.boyle@sandbox.zoho.test"}
UI_USER = {"name": "Omar Diaz", "id": "5545974000000393017", "email": "omar.diaz@sandbox.zoho.test"}

SERVICES = [
    ("Initial consultation", 30),
    ("Follow-up", 15),
    ("Site survey", 60),
    ("Installation", 90),
    ("Maintenance visit", 45),
    ("Training session", 120),
]
STAFF = ["Aiko Tanaka", "Ben Carter", "Chloe Martin", "Dev Patel", "Elena Rossi", "Femi Adeyemi", "Grace Lee", "Hugo Silva"]
FIRST = ["Ana", "Bilal", "Carmen", "Dmitri", "Esther", "Farid", "Greta", "Hana", "Ivan", "Jia", "Kofi", "Lucia", "Mateo", "Nadia", "Olu", "Priya"]
LAST = ["Nguyen", "Smith", "Garcia", "Kowalski", "Okafor", "Brown", "Sato", "Muller", "Haddad", "Rao", "Dubois", "Jensen"]
#: Booking time zones with weights: New York, London, Sydney (DST) and Kolkata (no DST).
TZ_WEIGHTS = (4, 3, 2, 3)

#: Booking status -> ``Booking_Status`` of its ``Events`` record (every status of the
#: fetch-appointment doc; a failed payment ends a booking like a cancellation).
MEETING_STATUS_OF = {
    "UPCOMING": "Scheduled", "ONGOING": "Scheduled", "PENDING": "Scheduled", "PENDING_PAYMENT": "Scheduled",
    "CANCEL": "Cancelled", "PAYMENT_FAILURE": "Cancelled", "COMPLETED": "Completed", "NO_SHOW": "No Show",
}  # fmt: skip

CRM_ID_BASE = 5545974000002000000
CONTACT_ID_BASE = 5545974000001000000
#: Seeds of at least this many appointments are frozen out of the garbage collector.
FREEZE_FROM = 10_000


def anchor_of(config: SandboxConfig) -> date:
    """The date seeded appointments are spread around."""
    return date.fromisoformat(config.anchor_date) if config.anchor_date else now().date()


def generate(config: SandboxConfig) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict], int]:
    """Build ``(appointments, events, bookings, next_crm_id)``.

    ``appointments`` / ``events``: CRM id -> record in API form (ISO 8601 strings
    in ``config.org_time_zone``). ``bookings``: booking id -> internal form
    (``start_utc`` ISO string, ``duration`` minutes, ``time_zone``, ``status``...).

    200,000 appointments take a few seconds: the random draws are the ones, in the
    order, that ``randrange``/``randint``/``choices`` calls would make; what
    depends only on a draw (a start slot's time strings, a customer's name) is
    computed once; records are copies of a template with their own values filled
    in; the cyclic garbage collector is paused meanwhile (the records hold no
    cycles). Records share nested values that never change (``Owner``,
    ``Created_By``, ``Service_Name``...): the sandbox replaces records whole and
    never changes them in place.

    A big seed (``FREEZE_FROM`` appointments or more) is then moved out of the
    collector's sight (:func:`gc.freeze`): the records live until the next reset,
    and scanning their millions of objects would stall the server's event loop,
    once right after the reset and again during later collections. Old records
    are still freed by reference counting when a reset replaces them.
    """
    big = config.appointments >= FREEZE_FROM
    if big:
        gc.collect()  # so that the freeze below keeps no garbage alive
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        data = _generate(config)
    finally:
        if was_enabled:
            gc.enable()
    if big:
        gc.freeze()
    return data


def _generate(config: SandboxConfig) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict], int]:
    rng = random.Random(config.seed)
    # What rng.randrange(n) and rng.randint(a, b) call, without their argument
    # checks: randrange(n) is _randbelow(n), randint(a, b) is a + _randbelow(b - a + 1).
    below = rng._randbelow
    rand = rng.random
    anchor = anchor_of(config)
    stamp = now()
    org_tz = config.org_time_zone
    org_zone = ZoneInfo(org_tz)
    services = [
        {"id": f"4500000000{100 + i}", "name": name, "duration": minutes} for i, (name, minutes) in enumerate(SERVICES)
    ]
    service_refs = [{"name": s["name"], "id": s["id"]} for s in services]
    staff = [
        {"id": f"4500000000{200 + i}", "name": name, "email": name.lower().replace(" ", ".") + "@sandbox.zoho.test"}
        for i, name in enumerate(STAFF)
    ]
    owners = [
        {"name": s["name"], "id": str(5545974000000393100 + i), "email": s["email"]} for i, s in enumerate(staff)
    ]
    zones = [ZoneInfo(z) for z in SEED_TIME_ZONES]
    n_customers = max(1, config.appointments // 2)
    names_per_round = len(FIRST) * len(LAST)
    # rng.choices(range(len(zones)), TZ_WEIGHTS)[0], with the weights summed once.
    cum_weights = list(accumulate(TZ_WEIGHTS))
    total_weight = cum_weights[-1] + 0.0
    last_zone = len(cum_weights) - 1
    booked_before = [timedelta(days=d) for d in range(21)]

    created = to_crm(stamp - timedelta(days=45), org_tz)
    api_user = dict(API_USER)
    contacts = {"api_name": "Contacts", "id": "5545974000000000075"}
    # Templates give every record its keys in API order; None marks a per-record value.
    appointment_template = {
        "id": None, "Appointment_Name": None, "Appointment_Start_Time": None, "Appointment_End_Time": None,
        "Duration": None, "Status": None, "Service_Name": None, "Appointment_For": None, "Owner": None,
        "Location": "Business Address", "Rescheduled_From": None, "Rescheduled_To": None, "Reschedule_Reason": None,
        "Reschedule_Note": None, "Reschedule_Count": 0, "Cancellation_Reason": None, "Cancellation_Note": None,
        "Cancelled_Time": None, "Job_Sheet_Name": None, "Job_Sheet_Description__s": None, "Booking_Id": None,
        "Created_Time": created, "Created_By": api_user, "Modified_Time": created, "Modified_By": api_user,
    }  # fmt: skip
    event_template = {
        "id": None, "Event_Title": None, "Start_DateTime": None, "End_DateTime": None, "All_day": False,
        "Venue": "Business Address", "Description": None, "Who_Id": None, "Owner": None, "Booking_Id": None,
        "Booking_Status": None, "Created_Time": created, "Created_By": api_user, "Modified_Time": created, "Modified_By": api_user,
    }  # fmt: skip
    booking_template = {
        "booking_id": None, "service_id": None, "service_name": None, "staff_id": None, "staff_name": None,
        "staff_email": None, "start_utc": None, "duration": None, "time_zone": None, "status": None,
        "customer_name": None, "customer_email": None, "customer_contact_no": None, "customer_more_info": None,
        "cost": None, "currency": "USD", "booked_on_utc": None,
        "modified_utc": (stamp - timedelta(days=1)).isoformat(),
    }  # fmt: skip

    slots: dict[tuple[int, int, int, int], tuple[datetime, str, str, str, bool]] = {}
    customers: dict[int, tuple[str, str, str, str]] = {}
    appointments: dict[str, dict] = {}
    events: dict[str, dict] = {}
    bookings: dict[str, dict] = {}
    crm_id = CRM_ID_BASE
    for n in range(1, config.appointments + 1):
        zi = bisect(cum_weights, rand() * total_weight, 0, last_zone)
        svc_i = below(len(services))
        si = below(len(staff))
        cust = below(n_customers)
        day_offset = below(61) - 30
        slot = below(40)
        roll = rand()

        key = (zi, svc_i, day_offset, slot)
        timing = slots.get(key)
        if timing is None:
            day = anchor + timedelta(days=day_offset)
            minutes = 8 * 60 + 15 * slot
            local = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=zones[zi])
            start = local.astimezone(UTC)
            end = start + timedelta(minutes=services[svc_i]["duration"])
            timing = slots[key] = (
                start,
                start.isoformat(),
                start.astimezone(org_zone).isoformat(),
                end.astimezone(org_zone).isoformat(),
                end < stamp,
            )
        start, start_utc, start_crm, end_crm, ended = timing

        person = customers.get(cust)
        if person is None:
            name = f"{FIRST[cust % len(FIRST)]} {LAST[(cust // len(FIRST)) % len(LAST)]}"
            if cust >= names_per_round:
                name += f" {cust // names_per_round + 1}"
            person = customers[cust] = (name, f"customer{cust:06d}@example.test", str(CONTACT_ID_BASE + cust), f"+1555{cust:07d}")
        customer_name, customer_email, contact_id, phone = person

        if ended:
            bstatus = "COMPLETED" if roll < 0.7 else "CANCEL" if roll < 0.85 else "NO_SHOW" if roll < 0.95 else "UPCOMING"
        else:
            bstatus = "UPCOMING" if roll < 0.85 else "CANCEL"
        crm_status = {"COMPLETED": "Completed", "CANCEL": "Cancelled"}.get(bstatus, "Scheduled")
        svc = services[svc_i]
        person_staff = staff[si]
        booking_id = f"#AN-{n:05d}"
        crm_id += 1
        appt_id = str(crm_id)
        crm_id += 1
        event_id = str(crm_id)

        b = booking_template.copy()
        b["booking_id"] = booking_id
        b["service_id"] = svc["id"]
        b["service_name"] = svc["name"]
        b["staff_id"] = person_staff["id"]
        b["staff_name"] = person_staff["name"]
        b["staff_email"] = person_staff["email"]
        b["start_utc"] = start_utc
        b["duration"] = svc["duration"]
        b["time_zone"] = SEED_TIME_ZONES[zi]
        b["status"] = bstatus
        b["customer_name"] = customer_name
        b["customer_email"] = customer_email
        b["customer_contact_no"] = phone
        b["customer_more_info"] = {}
        b["cost"] = float(svc["duration"])
        b["booked_on_utc"] = (start - booked_before[below(20) + 1]).isoformat()
        bookings[booking_id] = b

        a = appointment_template.copy()
        a["id"] = appt_id
        a["Appointment_Name"] = f"{svc['name']} - {customer_name}"
        a["Appointment_Start_Time"] = start_crm
        a["Appointment_End_Time"] = end_crm
        a["Duration"] = svc["duration"]
        a["Status"] = crm_status
        a["Service_Name"] = service_refs[svc_i]
        a["Appointment_For"] = {"module": contacts, "name": customer_name, "id": contact_id}
        a["Owner"] = owners[si]
        a["Booking_Id"] = booking_id
        if crm_status == "Cancelled":
            a["Cancellation_Reason"] = "By Customer"
            a["Cancelled_Time"] = created
        elif crm_status == "Completed":
            a["Job_Sheet_Name"] = "Done"
        appointments[appt_id] = a

        e = event_template.copy()
        e["id"] = event_id
        e["Event_Title"] = f"{svc['name']} with {customer_name}"
        e["Start_DateTime"] = start_crm
        e["End_DateTime"] = end_crm
        e["Description"] = f"Zoho Bookings appointment {booking_id}"
        e["Who_Id"] = {"name": customer_name, "id": contact_id}
        e["Owner"] = owners[si]
        e["Booking_Id"] = booking_id
        e["Booking_Status"] = MEETING_STATUS_OF[bstatus]
        events[event_id] = e
    return appointments, events, bookings, crm_id + 1
