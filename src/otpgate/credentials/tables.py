"""The credential database's tables, as SQLAlchemy Core sees them (the migrations in
``migrations/versions/`` create them; a test checks the two agree).

Times are epoch seconds (floats), as everywhere in otpgate. A factor's secret is kept
only as the cipher's text (``cipher.py``), a recovery code only as its keyed hash.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

factors = Table(
    "factors",
    metadata,
    Column("id", String(34), primary_key=True),
    Column("identity", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("name", String(64), nullable=True),
    Column("secret", String(255), nullable=False),  # the cipher's text, never the secret
    Column("digits", Integer, nullable=False),
    Column("period", Integer, nullable=False),
    Column("algorithm", String(8), nullable=False),
    Column("skew", Integer, nullable=False),
    Column("last_step", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("verified_at", Float, nullable=True),
    Index("factors_identity", "identity"),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("identity", String(128), primary_key=True),
    Column("code_hash", LargeBinary(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

# The failures that lock an identity out (``limits.Lockout``), per identity.
identity_failures = Table(
    "identity_failures",
    metadata,
    Column("identity", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", Float, nullable=False),
)

# The Twilio Verify compatible routes' entities (a service's name for an identity) and
# challenges (each code checked, for fetch and list).
entities = Table(
    "entities",
    metadata,
    Column("id", String(34), primary_key=True),
    Column("service", String(34), nullable=False),
    Column("name", String(64), nullable=False),
    Column("identity", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("service", "name", name="entities_service_name"),
)

challenges = Table(
    "challenges",
    metadata,
    Column("id", String(34), primary_key=True),
    Column("identity", String(128), nullable=False),
    Column("factor_id", String(34), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("responded_at", Float, nullable=True),
    Index("challenges_identity", "identity", "created_at"),
)
