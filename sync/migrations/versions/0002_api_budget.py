"""The API budget's tables: ``api_usage``, ``pending_reads``, ``budget_alerts``.

Revision ID: 0002
Revises: 0001

``api_usage``: the Zoho calls (Bookings) and credits (CRM) each run spent, by family
and day; ``pending_reads``: bookings a run could not read within the day's budget,
read first by the next run; ``budget_alerts``: the ``zoho.budget.low`` events sent
(one per family and day). See :mod:`sync.usage`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from sync.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("mode", AutoString(), nullable=False),
        sa.Column("family", AutoString(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.Column("writes", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("day", AutoString(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_usage_run_id", "api_usage", ["run_id"], unique=False)
    op.create_index("ix_api_usage_family_at", "api_usage", ["family", "at"], unique=False)
    op.create_index("ix_api_usage_family_day", "api_usage", ["family", "day"], unique=False)

    op.create_table(
        "pending_reads",
        sa.Column("booking_id", AutoString(), nullable=False),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("booking_id"),
    )

    op.create_table(
        "budget_alerts",
        sa.Column("family", AutoString(), nullable=False),
        sa.Column("day", AutoString(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("forecast", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("family", "day"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("pending_reads")
    op.drop_index("ix_api_usage_family_day", table_name="api_usage")
    op.drop_index("ix_api_usage_family_at", table_name="api_usage")
    op.drop_index("ix_api_usage_run_id", table_name="api_usage")
    op.drop_table("api_usage")
