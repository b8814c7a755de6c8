"""Entities and challenges, for the Twilio Verify compatible routes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("id", sa.String(34), primary_key=True),
        sa.Column("service", sa.String(34), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("service", "name", name="entities_service_name"),
    )
    op.create_table(
        "challenges",
        sa.Column("id", sa.String(34), primary_key=True),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("factor_id", sa.String(34), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("responded_at", sa.Float, nullable=True),
    )
    op.create_index("challenges_identity", "challenges", ["identity", "created_at"])


def downgrade() -> None:
    op.drop_index("challenges_identity", table_name="challenges")
    op.drop_table("challenges")
    op.drop_table("entities")
