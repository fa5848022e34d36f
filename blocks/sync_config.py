"""``AppointmentSyncConfig``: one organisation's sync settings, as a Prefect Block.

Deployments take the block's name, so one code base serves many organisations.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field

from sync.engine import Policy, Side


class AppointmentSyncConfig(Block):
    """What to sync for one organisation and how.

    ``oauth_block``: the ``ZohoOAuth`` document to use. ``crm_module``:
    ``Appointments__s`` (status and time) or ``Events`` (Meetings; time only, CRM
    Meetings have no status). ``booking_field``: the CRM custom field holding the
    Bookings ``booking_id``. ``conflict_policy``: ``latest_wins`` (default),
    ``crm_wins``, ``bookings_wins``, ``report_only``. ``initial_source``: which side
    wins when a link is first seen and the sides differ. The Bookings window is
    ``bookings_past_days`` before to ``bookings_future_days`` after now (full
    runs) and ``incremental_past_days`` / ``incremental_future_days`` for incremental
    runs; ``bookings_time_zone`` is the workspace time zone ``fetchappointment``
    reads its window in. ``bookings_concurrency``: parallel Bookings calls.
    ``state_store_url``: SQLAlchemy URL (default: SQLite under ``.data/``).
    """

    _block_type_name = "Appointment Sync Config"
    _block_type_slug = "appointment-sync-config"
    _description = "Zoho Bookings <-> CRM appointment sync settings of one organisation."

    oauth_block: str = Field(default="zoho-sandbox", description="Name of the ZohoOAuth block.")
    crm_module: Literal["Appointments__s", "Events"] = "Appointments__s"
    booking_field: str = Field(default="Booking_Id", description="CRM field holding the Bookings booking_id.")
    conflict_policy: Policy = Policy.LATEST_WINS
    initial_source: Side = Side.BOOKINGS
    bookings_time_zone: str = Field(default="UTC", description="Time zone fetchappointment reads from_time/to_time in.")
    bookings_past_days: int = Field(default=35, ge=0)
    bookings_future_days: int = Field(default=90, ge=0)
    incremental_past_days: int = Field(default=7, ge=0, description="Completions and no-shows are usually marked within days.")
    incremental_future_days: int = Field(default=30, ge=0)
    incremental_overlap_minutes: int = Field(default=5, ge=0, description="Re-read this much before the bookmark.")
    bookings_concurrency: int = Field(default=5, ge=1, le=20)
    bookings_page_size: int = Field(default=100, ge=1, le=100)
    state_store_url: str | None = None
