"""Run-time settings of the sandbox.

Every knob here can be set on the command line (``appt-sync sandbox --help``)
and most can be changed while the server runs with ``PUT /__sandbox/config``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Time zones the seed draws booking time zones from: three with daylight-saving
#: changes and one without.
SEED_TIME_ZONES = ("America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata")


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
    #: Zoho's "Ask the user to mark the Appointment as completed" preference:
    #: when false, ``Status: Completed`` through the API answers ``NOT_ALLOWED``
    #: and appointments that have ended show as ``Completed`` on their own.
    ask_to_mark_completed: bool = True
    #: Appointment preference "job sheet mandatory": completing without
    #: ``Job_Sheet_Name`` answers ``MANDATORY_NOT_FOUND``.
    job_sheet_mandatory: bool = False
    #: Where every booking change is POSTed (empty: nowhere).
    bookings_webhook_url: str = ""
    #: Extra headers sent with each Bookings webhook (e.g. a shared secret).
    bookings_webhook_headers: dict[str, str] = field(default_factory=dict)
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

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply ``changes`` (name -> value) all or nothing; returns the names that are not settings.

        Values are converted to the setting's type (``"false"`` is false); a value
        that does not convert raises ``ValueError`` and nothing is changed.
        """
        known = {f.name for f in fields(self)}
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                continue
            current = getattr(self, name)
            if isinstance(current, bool):
                if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                    value = value.lower() in ("true", "1")
                elif not isinstance(value, (bool, int)):
                    raise ValueError(f"{name} takes true or false, got {value!r}")
                value = bool(value)
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
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
