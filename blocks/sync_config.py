"""``AppointmentSyncConfig``: one organisation's sync settings, as a Prefect Block.

Deployments take the block's name, so one code base serves many organisations.
"""

from __future__ import annotations

from typing import Annotated, Literal

from prefect.blocks.core import Block
from pydantic import Field

from sync.engine import Policy, Side

from .fields import choice


class AppointmentSyncConfig(Block):
    """What to sync for one organisation and how.

    ``oauth_block``: the ``ZohoOAuth`` document to use. ``crm_module``:
    ``Appointments__s`` (status and time) or ``Events`` (Meetings, the module Zoho's own
    Bookings integration writes to); ``crm_modules``: more than one at once (Bookings is
    then the hub: each module keeps its own base; :attr:`synced_modules`). Meetings have no
    appointment status: ``meeting_status_field`` names the picklist that carries it
    (values ``meeting_statuses``), or is empty for time only, where a Bookings
    cancellation is written as ``meeting_cancel_policy`` says (``keep``, ``prefix`` the
    title with ``meeting_cancel_prefix``, or ``delete``); a Meeting deleted in CRM cancels
    its booking only with ``meeting_delete_cancels_booking`` (:class:`sync.modules.Meetings`).
    ``booking_field``: the CRM custom field holding the Bookings ``booking_id``. ``conflict_policy``: ``latest_wins`` (default),
    ``crm_wins``, ``bookings_wins``, ``report_only``. ``initial_source``: which side
    wins when a link is first seen and the sides differ. The Bookings window is
    ``bookings_past_days`` before to ``bookings_future_days`` after now (full
    runs); incremental runs read no Bookings window (Bookings changes come by webhook);
    the safety-net ``sync-scan`` runs (an incremental run plus a window) read ``scan_past_hours`` back to
    ``scan_future_hours`` ahead, at most ``scan_max_calls`` pages a run.
    ``bookings_time_zone`` is the workspace time zone ``fetchappointment`` is assumed
    to read its window in (Zoho documents none; the sandbox reads it in its
    ``org_time_zone``), and whose calendar day the Bookings call limit counts;
    onboarding sets it (``appt-sync auth --config ... --bookings-time-zone ...``).

    The daily API budget (:mod:`sync.budget`): ``bookings_plan`` (or
    ``bookings_calls_per_day``) and ``crm_edition`` / ``crm_users`` (or
    ``crm_credits_per_day``) give Zoho's limits; the sync spends at most
    ``budget_percent`` of each, and reads stop ``write_reserve_percent`` of the budget
    before it, so changes already read are still written. ``bookings_concurrency``: parallel Bookings calls.
    ``bookings_calls_per_second``: Bookings calls per second across every worker of
    the organisation's OAuth grant (Prefect global concurrency limit
    ``zoho-bookings-rate-<oauth_block>`` with slot decay; 0: no limit).
    ``writer_wait_seconds``: how long a run waits for another run of the same
    organisation to finish applying (the one-writer lock ``appt-sync-writer-<block>``).
    ``state_store_url``: SQLAlchemy URL (default: SQLite under ``.data/``).
    """

    _block_type_name = "Appointment Sync Config"
    _block_type_slug = "appointment-sync-config"
    _description = "Zoho Bookings <-> CRM appointment sync settings of one organisation."

    oauth_block: str = Field(default="zoho-sandbox", title="Zoho OAuth block", description="Name of the Zoho OAuth block document whose credentials and shared token the sync uses.")
    crm_module: Literal["Appointments__s", "Events"] = Field(
        default="Appointments__s", title="CRM module",
        description="Appointments__s: CRM appointments (start time and status). Events: CRM Meetings (the module Zoho's Bookings integration writes to).",
    )
    crm_modules: list[Literal["Appointments__s", "Events"]] = Field(
        default_factory=list, title="CRM modules (more than one)",
        description=(
            "Sync these CRM modules against the same Bookings, e.g. [Appointments__s, Events]. Bookings is the hub: a change on "
            "either module reaches Bookings and, through it, the other; each keeps its own base. Empty: crm_module alone."
        ),
    )
    meeting_status_field: str | None = Field(
        default="Booking_Status", title="Meetings: status picklist",
        description=(
            "API name of the picklist field on Meetings (Events) that carries the booking's status. Empty: time only (Meetings "
            "have no status field of their own): start and end are synced, a Bookings cancellation follows meeting_cancel_policy."
        ),
    )
    meeting_statuses: dict[str, str] = Field(
        default_factory=lambda: {"scheduled": "Scheduled", "cancelled": "Cancelled", "completed": "Completed", "no_show": "No Show"},
        title="Meetings: status values",
        description="The status picklist's value for each state: keys scheduled, cancelled, completed, no_show.",
    )
    meeting_cancel_policy: Literal["keep", "prefix", "delete"] = Field(
        default="keep", title="Meetings, time only: a Bookings cancellation",
        description="Without a status field: keep the Meeting and report it (default), prefix its title with meeting_cancel_prefix, or delete it.",
    )
    meeting_cancel_prefix: str = Field(default="Cancelled: ", min_length=1, max_length=40, title="Meetings, time only: cancelled title prefix", description="Put before the title of a Meeting whose booking was cancelled (meeting_cancel_policy prefix); a Meeting whose title starts with it reads as cancelled.")
    meeting_delete_cancels_booking: bool = Field(
        default=False, title="Meetings: a deleted Meeting cancels its booking",
        description="When a linked Meeting is deleted in CRM: cancel the booking (on) or only report it (off, default). A Meeting missing from a Bulk Read is only ever reported.",
    )
    booking_field: str = Field(default="Booking_Id", title="CRM field holding the booking id", description="API name of the CRM field that holds the Zoho Bookings booking_id of the linked booking.")
    conflict_policy: Annotated[Policy, choice(Policy)] = Field(
        default=Policy.LATEST_WINS, title="Conflict policy (both sides changed)",
        description=(
            "What happens when CRM and Bookings both changed the same appointment since they last agreed. "
            "latest_wins: the later edit wins (CRM's Modified_Time against when the sync first saw the Bookings change); "
            "crm_wins: CRM always wins; bookings_wins: Bookings always wins; report_only: nothing is sent, the conflict is reported."
        ),
    )
    initial_source: Annotated[Side, choice(Side)] = Field(
        default=Side.BOOKINGS, title="Source of truth for new links",
        description="Which side is copied to the other when a link is seen for the first time and the sides differ (bookings: Zoho Bookings, crm: Zoho CRM).",
    )
    bookings_time_zone: str = Field(
        default="UTC", title="Bookings workspace time zone",
        description=(
            "IANA time zone of the Zoho Bookings workspace (e.g. Europe/London). Zoho does not document the zone of "
            "fetchappointment's from_time/to_time; the sync assumes the workspace's own zone (as the sandbox, in its "
            "org_time_zone, Asia/Kolkata by default) and sends the window's bounds as wall times in this zone. It is also "
            "the calendar day the daily Bookings call limit counts. UTC is only a placeholder: set the workspace's zone "
            "(appt-sync auth --config NAME --bookings-time-zone ZONE), or the window is off by the zone's offset."
        ),
    )
    bookings_past_days: int = Field(default=35, ge=0, title="Full runs: days back", description="Full runs read Bookings appointments starting this many days before now.")
    bookings_future_days: int = Field(default=90, ge=0, title="Full runs: days ahead", description="Full runs read Bookings appointments starting up to this many days after now.")
    scan_past_hours: int = Field(
        default=24, ge=0, le=24 * 60, title="Safety-net scan: hours back",
        description="The sync-scan runs read Bookings appointments starting this many hours before now (completions and no-shows, which may send no webhook, happen around the start).",
    )
    scan_future_hours: int = Field(default=24, ge=0, le=24 * 400, title="Safety-net scan: hours ahead", description="The sync-scan runs read Bookings appointments starting up to this many hours after now.")
    scan_max_calls: int = Field(
        default=4, ge=1, le=1000, title="Safety-net scan: most Bookings calls a run",
        description="A sync-scan run reads at most this many fetchappointment pages (its cost per run is bounded by it); the rest of the window waits for the nightly full run.",
    )
    bookings_plan: Literal["free", "basic", "premium"] = Field(
        default="free", title="Zoho Bookings plan",
        description="Sets Zoho's daily Bookings call limit: free 250, basic 1000, premium 3000 calls per user per day (the workspace's calendar day).",
    )
    bookings_calls_per_day: int | None = Field(default=None, ge=1, title="Bookings calls a day (overrides the plan)", description="Zoho's Bookings call limit per day if it is not the plan's figure. Empty: the plan's.")
    crm_edition: Literal["free", "standard", "professional", "enterprise", "ultimate"] = Field(
        default="free", title="Zoho CRM edition",
        description="Sets Zoho's CRM credits per rolling 24 hours: free 5000; standard 50000 + 250 per user (at most 100000); professional + 500, enterprise + 1000, ultimate + 2000 per user.",
    )
    crm_users: int = Field(default=1, ge=1, title="CRM user licences", description="User licences of the CRM organisation (the CRM credit limit grows with them).")
    crm_credits_per_day: int | None = Field(default=None, ge=1, title="CRM credits a day (overrides the edition)", description="Zoho's CRM credits per 24 hours if not the edition's figure (add-on credits). Empty: the edition's.")
    budget_percent: float = Field(
        default=80.0, gt=0, le=100, title="Budget (% of Zoho's daily limits)",
        description="The sync spends at most this share of each daily limit (Bookings calls, CRM credits); the rest is left for other users of the grant and for safety.",
    )
    write_reserve_percent: float = Field(
        default=10.0, ge=0, lt=100, title="Part of the budget kept for writes (%)",
        description="Reads stop when only this share of the day's budget is left, so changes already read are still sent; reads that cannot wait are kept and done the next day.",
    )
    incremental_overlap_minutes: int = Field(default=5, ge=0, title="Incremental overlap (minutes)", description="Incremental runs re-read CRM changes from this many minutes before the last run's bookmark.")
    bookings_concurrency: int = Field(default=5, ge=1, le=20, title="Parallel Bookings calls", description="How many Bookings API calls (reads and writes) run at once (1-20).")
    bookings_calls_per_second: float = Field(
        default=0.0, ge=0, title="Bookings calls per second (all workers)",
        description=(
            "At most this many Bookings API calls per second across every worker using the same Zoho OAuth block "
            "(Prefect global concurrency limit zoho-bookings-rate-<oauth block>, created on first use). "
            "0 (default): no limit, and no extra Prefect API call per Bookings call. Each rate-limited call costs at least one "
            "Prefect API call and can wait seconds for a slot; set it (e.g. 2-5) only when Zoho throttles Bookings. "
            "Parallelism is bookings_concurrency."
        ),
    )
    writer_wait_seconds: float = Field(
        default=900.0, gt=0, title="Wait for another run's writes (seconds)",
        description=(
            "Runs of one organisation plan and apply one at a time (Prefect global concurrency limit "
            "appt-sync-writer-<config block>, limit 1). A run waits at most this long for the run applying before it, then fails "
            "(webhook runs are retried)."
        ),
    )
    bookings_page_size: int = Field(
        default=50, ge=1, le=100, title="Bookings page size",
        description=(
            "Appointments per fetchappointment page (1-100). Zoho documents no paging; 50 is the cap a public client uses, "
            "so it works on every workspace. 100 halves the Bookings calls of a window read (a nightly full run over 2,000 "
            "appointments: 20 calls instead of 40) where the workspace accepts it."
        ),
    )
    state_store_url: str | None = Field(
        default=None, title="State store URL",
        description="SQLAlchemy URL of the sync's state store (links, base, action log), e.g. postgresql+psycopg://... Empty: SQLite under .data/.",
    )

    @property
    def synced_modules(self) -> list[str]:
        """The CRM modules this organisation syncs, ``crm_module`` first, each once."""
        return list(dict.fromkeys([self.crm_module, *self.crm_modules]))
