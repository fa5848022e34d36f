"""Run-time settings of the sandbox.

Every knob here can be set on the command line (``appt-sync sandbox --help``)
and most can be changed while the server runs with ``PUT /__sandbox/config``.

Fault injection for benchmarks (Zoho documents no such settings; real Zoho
simply loses some deliveries now and then):

* ``drop_bookings_webhooks`` (0..1, default 0): the fraction of Bookings
  webhooks lost on the way (``--drop-bookings-webhooks``).
* ``drop_crm_notifications`` (0..1, default 0): the fraction of CRM
  notifications lost on the way (``--drop-crm-notifications``).
* ``drop_seed`` (integer >= 0 or null, default null = :data:`DEFAULT_DROP_SEED`,
  i.e. 0): seed of the draws, so a run is reproducible (``--drop-seed``).

A dropped delivery is never POSTed: it is counted in ``GET /__sandbox/stats``
(``outbound``: ``bookings_webhook_dropped``, ``notification_dropped``) and
listed by ``GET /__sandbox/outbox`` with status ``"dropped (<setting> setting)"``.
Bulk Read callbacks are never dropped. The draws restart from the seed at each
``POST /__sandbox/reset``, whenever ``PUT /__sandbox/config`` names a ``drop_*``
setting, and whenever a drop rate or the seed changes, so the same seed drops
the same deliveries of the same sequence of sends (see :mod:`sandbox.outbox`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Time zones the seed draws booking time zones from: three with daylight-saving
#: changes and one without.
SEED_TIME_ZONES = ("America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata")

#: Settings that are a fraction (a probability) from 0 to 1.
FRACTION_SETTINGS = ("drop_bookings_webhooks", "drop_crm_notifications", "bulk_job_failure_rate")
#: Integer settings that may also be ``None`` (JSON ``null``).
OPTIONAL_INT_SETTINGS = ("drop_seed",)
#: Seed of the drop draws when ``drop_seed`` is ``None``.
DEFAULT_DROP_SEED = 0


@dataclass
class SandboxConfig:
    """Settings of one sandbox instance.

    Times are seconds unless the name says otherwise. Zoho's API limits
    (``sandbox/limits.py``) are counted always but enforced only with
    ``limits_enforced`` (off by default; plan Premium, edition Enterprise, 10 users),
    so existing tests, ``make demo`` and the benchmarks are never refused.
    """

    #: Appointments the seed creates (each one is a booking, an
    #: ``Appointments__s`` record and an ``Events`` record, linked by ``Booking_Id``).
    appointments: int = 2000
    #: Seed of the deterministic data generator.
    seed: int = 42
    #: ISO date (``YYYY-MM-DD``) the seeded appointments are spread around
    #: (-30 to +30 days). Empty: today's date in UTC at reset time.
    anchor_date: str = ""
    #: Time zone CRM answers in (the CRM user's time zone) and the one Bookings'
    #: ``fetchappointment`` reads ``from_time``/``to_time`` in.
    org_time_zone: str = "Asia/Kolkata"
    #: ``expires_in`` of minted access tokens.
    token_ttl: int = 3600
    #: Access tokens one refresh token may mint per ``token_window`` seconds.
    token_mint_limit: int = 10
    token_window: int = 600
    #: Active access tokens per refresh token; minting one more invalidates the oldest.
    max_active_tokens: int = 15
    #: Seconds a Bulk Read job takes from ``ADDED`` to ``COMPLETED``; the states
    #: ``ADDED``, ``QUEUED`` and ``IN PROGRESS`` each take a third of it.
    bulk_delay: float = 3.0
    #: Records per Bulk Read page (Zoho: 200,000; ICS pages are capped at 20,000).
    bulk_page_size: int = 200_000
    #: Result downloads allowed per rolling minute before 429.
    bulk_downloads_per_minute: int = 10
    #: Seconds a completed job's result stays downloadable.
    bulk_result_ttl: int = 86_400
    #: Fault injection (Zoho documents no such setting; a real job may end in
    #: ``FAILURE`` now and then): the fraction (0..1) of Bulk Read jobs that end in
    #: ``FAILURE`` with ``INTERNAL_ERROR`` instead of completing, drawn from the
    #: sandbox's seeded generator. Queries Zoho would refuse never make a job: they
    #: are refused when it is created.
    bulk_job_failure_rate: float = 0.0
    #: Zoho's "Ask the user to mark the Appointment as completed" preference:
    #: when false, ``Status: Completed`` through the API answers ``NOT_ALLOWED``
    #: and appointments that have ended show as ``Completed`` on their own.
    ask_to_mark_completed: bool = True
    #: Appointment preference "job sheet mandatory": completing without
    #: ``Job_Sheet_Name`` answers ``MANDATORY_NOT_FOUND``.
    job_sheet_mandatory: bool = False
    #: Refuse moving an appointment earlier, as "Update Appointments" (seeds 002/004)
    #: reads: "The new appointment time has to be greater than the existing
    #: Appointment_Start_Time" (under ``DEPENDENT_FIELD_UNCHANGED``) and "The
    #: Rescheduled_From time should be lesser than the new appointment time".
    #: Whether Zoho refuses every earlier move is not documented: off by default
    #: (earlier moves are accepted); on, one answers ``DEPENDENT_FIELD_UNCHANGED``.
    refuse_earlier_reschedules: bool = False
    #: Where every booking change is POSTed (empty: nowhere).
    bookings_webhook_url: str = ""
    #: Extra headers sent with each Bookings webhook (e.g. a shared secret).
    bookings_webhook_headers: dict[str, str] = field(default_factory=dict)
    #: Shape of a Bookings business failure (HTTP 200). Zoho shows two and public
    #: clients check both (Pipedream's ``components/zoho_bookings`` reschedule action,
    #: the Activepieces Zoho Bookings piece): ``"outer"`` (default)
    #: ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}`` and
    #: ``"returnvalue"`` ``{"response": {"returnvalue": {"status": "failure", "message": ...},
    #: "status": "success"}}``. 401s and the daily limit keep the outer shape.
    bookings_failure_shape: str = "outer"
    #: ``fetchappointment``: most bookings a page may hold (Zoho documents no paging;
    #: 100 assumed; a public client caps ``per_page`` at 50). The default page is 50.
    bookings_max_per_page: int = 100
    #: ``fetchappointment``: answer an empty page with HTTP 204 and no body (what a
    #: public client expects; undocumented) instead of ``{"response": [], "next_page_available": false}``.
    bookings_empty_page_204: bool = False
    #: Staff availability, checked on a reschedule (Zoho documents no rule; inferred
    #: from public clients, which all check a reschedule's answer for a failure).
    #: Working hours of every staff member: ``""`` (default: any time),
    #: ``"09:00-17:00"`` or ``"Mon-Fri 09:00-17:00"`` (days ``Mon-Fri`` or ``Mon,Wed``;
    #: ``24:00`` ends the day). The whole appointment must lie inside them.
    working_hours: str = ""
    #: Working hours per staff id (same format), overriding ``working_hours``.
    staff_working_hours: dict[str, str] = field(default_factory=dict)
    #: Time zone working hours are read in (``""``: the booking's own ``time_zone``).
    working_hours_time_zone: str = ""
    #: Refuse a reschedule that overlaps another active booking of the same staff member.
    refuse_overlaps: bool = False
    #: Let notifications, webhooks and callbacks go to non-loopback hosts.
    #: Off by default: the sandbox never sends traffic off this machine.
    allow_remote_callbacks: bool = False
    #: Base URL returned as ``api_domain`` (empty: the URL the request came in on).
    public_url: str = ""
    #: Enforce Zoho's API limits (see ``sandbox/limits.py``). Off by default so
    #: tests, ``make demo`` and the benchmarks are never refused; usage is counted
    #: either way (``GET /__sandbox/stats`` -> ``limits``).
    limits_enforced: bool = False
    #: Zoho Bookings plan: ``Free`` (250 calls a day), ``Basic`` (1,000), ``Premium`` (3,000).
    bookings_plan: str = "Premium"
    #: HTTP status of a Bookings call past the daily limit (Zoho documents none; 429 here).
    bookings_limit_status: int = 429
    #: Zoho CRM edition: ``Free``, ``Standard``, ``Professional``, ``Enterprise``, ``Ultimate``
    #: (credits per 24 hours and concurrent calls follow it).
    crm_edition: str = "Enterprise"
    #: CRM user licences (credits grow with them).
    crm_users: int = 10
    #: CRM credits per rolling 24 hours; 0: the edition's figure (for tests).
    crm_credit_limit: int = 0
    #: Credits one Bulk Read create costs (assumed 50; every other call costs 1).
    crm_bulk_read_credits: int = 50
    #: Fault injection for benchmarks (nothing like it exists in Zoho): the
    #: fraction (0..1) of Bookings webhooks lost on the way, never POSTed.
    drop_bookings_webhooks: float = 0.0
    #: Fault injection for benchmarks: the fraction (0..1) of CRM notifications
    #: lost on the way. Bulk Read callbacks are never dropped.
    drop_crm_notifications: float = 0.0
    #: Seed of the drop draws (``None``: :data:`DEFAULT_DROP_SEED`, 0); the same
    #: seed drops the same deliveries of the same sequence of sends.
    drop_seed: int | None = None

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply ``changes`` (name -> value) all or nothing; returns the names that are not settings.

        Values are converted to the setting's type (``"false"`` is false); a value
        that does not convert, or a fraction (``drop_*``) outside 0..1, raises
        ``ValueError`` and nothing is changed.
        """
        known = {f.name for f in fields(self)}
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                continue
            current = getattr(self, name)
            if name in OPTIONAL_INT_SETTINGS:
                value = None if value is None else int(value)
            elif isinstance(current, bool):
                if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                    value = value.lower() in ("true", "1")
                elif not isinstance(value, (bool, int)):
                    raise ValueError(f"{name} takes true or false, got {value!r}")
                value = bool(value)
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
                if name in FRACTION_SETTINGS and not 0 <= value <= 1:
                    raise ValueError(f"{name} should be between 0 and 1, got {value!r}")
            elif isinstance(current, dict) and not isinstance(value, dict):
                raise ValueError(f"{name} takes a JSON object, got {value!r}")
            converted[name] = value
        for name, value in converted.items():
            setattr(self, name, value)
        return [name for name in changes if name not in known]

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (webhook headers are masked)."""
        out = asdict(self)
        out["bookings_webhook_headers"] = {k: "********" for k in self.bookings_webhook_headers}
        return out
