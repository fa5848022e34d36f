"""Deterministic seed data: bookings and their CRM ``Appointments__s`` and ``Events`` records.

The same ``(seed, appointments, anchor_date)`` always yields the same records.
Every appointment exists three times, linked by the booking id (``#AN-00001``):
a Zoho Bookings booking, a CRM ``Appointments__s`` record and a CRM ``Events``
(Meetings) record, each with a ``Booking_Id`` custom field. Starts are spread over
anchor-30 to anchor+30 days, on a 15-minute grid between 08:00 and 18:00 local
time in the booking's ``time_zone``; both sides agree at seed time.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
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

CRM_ID_BASE = 5545974000002000000
CONTACT_ID_BASE = 5545974000001000000


def anchor_of(config: SandboxConfig) -> date:
    """The date seeded appointments are spread around."""
    return date.fromisoformat(config.anchor_date) if config.anchor_date else now().date()


def generate(config: SandboxConfig) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict], int]:
    """Build ``(appointments, events, bookings, next_crm_id)``.

    ``appointments`` / ``events``: CRM id -> record in API form (ISO 8601 strings
    in ``config.org_time_zone``). ``bookings``: booking id -> internal form
    (``start_utc`` ISO string, ``duration`` minutes, ``time_zone``, ``status``...).
    """
    rng = random.Random(config.seed)
    anchor = anchor_of(config)
    stamp = now()
    org_tz = config.org_time_zone
    services = [
        {"id": f"4500000000{100 + i}", "name": name, "duration": minutes} for i, (name, minutes) in enumerate(SERVICES)
    ]
    staff = [
        {"id": f"4500000000{200 + i}", "name": name, "email": name.lower().replace(" ", ".") + "@sandbox.zoho.test"}
        for i, name in enumerate(STAFF)
    ]
    owners = [
        {"name": s["name"], "id": str(5545974000000393100 + i), "email": s["email"]} for i, s in enumerate(staff)
    ]
    zones = [ZoneInfo(z) for z in SEED_TIME_ZONES]
    n_customers = max(1, config.appointments // 2)
    appointments: dict[str, dict] = {}
    events: dict[str, dict] = {}
    bookings: dict[str, dict] = {}
    crm_id = CRM_ID_BASE
    created = to_crm(stamp - timedelta(days=45), org_tz)
    api_user = dict(API_USER)
    for n in range(1, config.appointments + 1):
        zi = rng.choices(range(len(zones)), TZ_WEIGHTS)[0]
        tz = SEED_TIME_ZONES[zi]
        svc = services[rng.randrange(len(services))]
        si = rng.randrange(len(staff))
        cust = rng.randrange(n_customers)
        customer_name = f"{FIRST[cust % len(FIRST)]} {LAST[(cust // len(FIRST)) % len(LAST)]}"
        if cust >= len(FIRST) * len(LAST):
            customer_name += f" {cust // (len(FIRST) * len(LAST)) + 1}"
        customer_email = f"customer{cust:06d}@example.test"
        day = anchor + timedelta(days=rng.randint(-30, 30))
        minutes = 8 * 60 + 15 * rng.randrange(40)
        local = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=zones[zi])
        start = local.astimezone(UTC)
        end = start + timedelta(minutes=svc["duration"])
        roll = rng.random()
        if end < stamp:
            bstatus = "COMPLETED" if roll < 0.7 else "CANCEL" if roll < 0.85 else "NO_SHOW" if roll < 0.95 else "UPCOMING"
        else:
            bstatus = "UPCOMING" if roll < 0.85 else "CANCEL"
        crm_status = {"COMPLETED": "Completed", "CANCEL": "Cancelled"}.get(bstatus, "Scheduled")
        booking_id = f"#AN-{n:05d}"
        contact_id = str(CONTACT_ID_BASE + cust)
        crm_id += 1
        appt_id = str(crm_id)
        crm_id += 1
        event_id = str(crm_id)
        bookings[booking_id] = {
            "booking_id": booking_id,
            "service_id": svc["id"],
            "service_name": svc["name"],
            "staff_id": staff[si]["id"],
            "staff_name": staff[si]["name"],
            "staff_email": staff[si]["email"],
            "start_utc": start.isoformat(),
            "duration": svc["duration"],
            "time_zone": tz,
            "status": bstatus,
            "customer_name": customer_name,
            "customer_email": customer_email,
            "customer_contact_no": f"+1555{cust:07d}",
            "customer_more_info": {},
            "cost": float(svc["duration"]),
            "currency": "USD",
            "booked_on_utc": (start - timedelta(days=rng.randint(1, 20))).isoformat(),
            "modified_utc": (stamp - timedelta(days=1)).isoformat(),
        }
        audit = {
            "Created_Time": created,
            "Created_By": api_user,
            "Modified_Time": created,
            "Modified_By": api_user,
        }
        appointments[appt_id] = {
            "id": appt_id,
            "Appointment_Name": f"{svc['name']} - {customer_name}",
            "Appointment_Start_Time": to_crm(start, org_tz),
            "Appointment_End_Time": to_crm(end, org_tz),
            "Duration": svc["duration"],
            "Status": crm_status,
            "Service_Name": {"name": svc["name"], "id": svc["id"]},
            "Appointment_For": {
                "module": {"api_name": "Contacts", "id": "5545974000000000075"},
                "name": customer_name,
                "id": contact_id,
            },
            "Owner": owners[si],
            "Location": "Business Address",
            "Rescheduled_From": None,
            "Rescheduled_To": None,
            "Reschedule_Reason": None,
            "Reschedule_Note": None,
            "Reschedule_Count": 0,
            "Cancellation_Reason": "By Customer" if crm_status == "Cancelled" else None,
            "Cancellation_Note": None,
            "Cancelled_Time": created if crm_status == "Cancelled" else None,
            "Job_Sheet_Name": "Done" if crm_status == "Completed" else None,
            "Job_Sheet_Description__s": None,
            "Booking_Id": booking_id,
            **audit,
        }
        events[event_id] = {
            "id": event_id,
            "Event_Title": f"{svc['name']} with {customer_name}",
            "Start_DateTime": to_crm(start, org_tz),
            "End_DateTime": to_crm(end, org_tz),
            "All_day": False,
            "Venue": "Business Address",
            "Description": f"Zoho Bookings appointment {booking_id}",
            "Who_Id": {"name": customer_name, "id": contact_id},
            "Owner": owners[si],
            "Booking_Id": booking_id,
            **audit,
        }
    return appointments, events, bookings, crm_id + 1
