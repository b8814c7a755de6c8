"""Factors, recovery codes and the failures that lock an identity out.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "factors",
        sa.Column("id", sa.String(34), primary_key=True),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=True),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("digits", sa.Integer, nullable=False),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("skew", sa.Integer, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("verified_at", sa.Float, nullable=True),
    )
    op.create_index("factors_identity", "factors", ["identity"])
    op.create_table(
        "recovery_codes",
        sa.Column("identity", sa.String(128), primary_key=True),
        sa.Column("code_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "identity_failures",
        sa.Column("identity", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("identity_failures")
    op.drop_table("recovery_codes")
    op.drop_index("factors_identity", table_name="factors")
    op.drop_table("factors")
