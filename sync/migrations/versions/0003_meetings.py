"""CRM Meetings as a second module: ``crm_events.status`` / ``deleted_at`` and ``sync_base_events``.

Revision ID: 0003
Revises: 0002

``crm_events`` gains ``status`` (the organisation's status picklist on Meetings, e.g.
``Booking_Status``; empty in time-only mode) and ``deleted_at`` (when a CRM ``delete``
notification, or the sync's own delete, removed the Meeting). ``sync_base_events`` is
the Meetings' own base (the last state both sides agreed on, per link), so an
organisation syncing ``Appointments__s`` and Meetings keeps one base per module
(:class:`sync.modules.Meetings`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from sync.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a store adopted from before migrations may have been made by a ``create_all`` that knew these
    # columns and table already: add only what is missing
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("crm_events")}
    missing = [c for c in (sa.Column("status", AutoString(), nullable=True), sa.Column("deleted_at", UTCDateTime(), nullable=True)) if c.name not in have]
    if missing:  # SQLite: rebuild the table, so its schema reads as create_all writes it; PostgreSQL: ALTER TABLE
        sqlite = op.get_bind().dialect.name == "sqlite"
        with op.batch_alter_table("crm_events", recreate="always" if sqlite else "auto") as batch:
            for column in missing:
                batch.add_column(column)
    if inspector.has_table("sync_base_events"):
        return
    op.create_table(
        "sync_base_events",
        sa.Column("booking_id", AutoString(), nullable=False),
        sa.Column("crm_id", AutoString(), nullable=False),
        sa.Column("crm_start", UTCDateTime(), nullable=True),
        sa.Column("crm_status", AutoString(), nullable=False),
        sa.Column("bookings_start", UTCDateTime(), nullable=True),
        sa.Column("bookings_status", AutoString(), nullable=False),
        sa.Column("time_zone", AutoString(), nullable=False),
        sa.Column("agreed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("booking_id"),
    )
    op.create_index("ix_sync_base_events_crm_id", "sync_base_events", ["crm_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sync_base_events_crm_id", table_name="sync_base_events")
    op.drop_table("sync_base_events")
    with op.batch_alter_table("crm_events") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("status")
