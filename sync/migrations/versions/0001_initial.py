"""The state store's first schema: what ``create_all`` made before migrations.

Revision ID: 0001
Revises: (none)

Nine tables (``crm_appointments``, ``crm_events``, ``bookings``, ``sync_base``,
``sync_actions``, ``bulk_read_runs``, ``bulk_jobs``, ``rejected_records``,
``bookmarks``) and their indexes, column for column as ``SQLModel.metadata.create_all``
created them: SQLModel's ``str`` is ``AutoString`` (``VARCHAR``), every instant a
:class:`~sync.tables.UTCDateTime` (``VARCHAR(40)`` ISO 8601 UTC text on SQLite,
``timestamptz`` on PostgreSQL). A store made by ``create_all`` is stamped with this
revision instead (:func:`sync.store.upgrade_store`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from sync.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("booking_id", AutoString(), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=True),
        sa.Column("end_time", UTCDateTime(), nullable=True),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("time_zone", AutoString(), nullable=False),
        sa.Column("staff_id", AutoString(), nullable=True),
        sa.Column("service_id", AutoString(), nullable=True),
        sa.Column("changed_at", UTCDateTime(), nullable=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("booking_id"),
    )
    op.create_table(
        "bookmarks",
        sa.Column("module", AutoString(), nullable=False),
        sa.Column("modified_since", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("module"),
    )
    op.create_table(
        "bulk_jobs",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("page_index", sa.Integer(), nullable=False),
        sa.Column("module", AutoString(), nullable=False),
        sa.Column("page_token", sa.Text(), nullable=True),
        sa.Column("state", AutoString(), nullable=False),
        sa.Column("more_records", sa.Boolean(), nullable=True),
        sa.Column("next_page_token", sa.Text(), nullable=True),
        sa.Column("download_url", AutoString(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("records_loaded", sa.Integer(), nullable=True),
        sa.Column("records_rejected", sa.Integer(), nullable=True),
        sa.Column("error_code", AutoString(), nullable=True),
        sa.Column("error_message", AutoString(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bulk_jobs_run_id", "bulk_jobs", ["run_id"], unique=False)
    op.create_index("ix_bulk_jobs_run_page", "bulk_jobs", ["run_id", "page_index"], unique=False)

    op.create_table(
        "bulk_read_runs",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("module", AutoString(), nullable=False),
        sa.Column("query_hash", AutoString(), nullable=False),
        sa.Column("query_json", sa.Text(), nullable=True),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bulk_read_runs_query_hash", "bulk_read_runs", ["query_hash"], unique=False)

    op.create_table(
        "crm_appointments",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("booking_id", AutoString(), nullable=True),
        sa.Column("start_time", UTCDateTime(), nullable=True),
        sa.Column("end_time", UTCDateTime(), nullable=True),
        sa.Column("duration", sa.BigInteger(), nullable=True),
        sa.Column("status", AutoString(), nullable=True),
        sa.Column("modified_time", UTCDateTime(), nullable=True),
        sa.Column("job_id", AutoString(), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_crm_appointments_booking_id", "crm_appointments", ["booking_id"], unique=False)

    op.create_table(
        "crm_events",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("booking_id", AutoString(), nullable=True),
        sa.Column("title", AutoString(), nullable=True),
        sa.Column("start_time", UTCDateTime(), nullable=True),
        sa.Column("end_time", UTCDateTime(), nullable=True),
        sa.Column("modified_time", UTCDateTime(), nullable=True),
        sa.Column("job_id", AutoString(), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_crm_events_booking_id", "crm_events", ["booking_id"], unique=False)

    op.create_table(
        "rejected_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", AutoString(), nullable=False),
        sa.Column("module", AutoString(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("record_id", AutoString(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rejected_records_job_id", "rejected_records", ["job_id"], unique=False)

    op.create_table(
        "sync_actions",
        sa.Column("key", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("booking_id", AutoString(), nullable=False),
        sa.Column("crm_id", AutoString(), nullable=False),
        sa.Column("target", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("value", AutoString(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("code", AutoString(), nullable=True),
        sa.Column("message", AutoString(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_sync_actions_booking_id", "sync_actions", ["booking_id"], unique=False)
    op.create_index("ix_sync_actions_run_id", "sync_actions", ["run_id"], unique=False)
    op.create_index("ix_sync_actions_status", "sync_actions", ["status"], unique=False)

    op.create_table(
        "sync_base",
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
    op.create_index("ix_sync_base_crm_id", "sync_base", ["crm_id"], unique=False)


def downgrade() -> None:
    op.drop_table("sync_base")
    op.drop_table("sync_actions")
    op.drop_table("rejected_records")
    op.drop_table("crm_events")
    op.drop_table("crm_appointments")
    op.drop_table("bulk_read_runs")
    op.drop_table("bulk_jobs")
    op.drop_table("bookmarks")
    op.drop_table("bookings")
