"""Where the credential database's schema stands, and bringing it to this version's.

``otpgate migrate`` runs ``migrate``; ``otpgate serve`` runs ``schema_state`` first and
refuses a schema that is behind (or migrates, with DATABASE_MIGRATE_ON_START=true).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
# The advisory lock migrations take on PostgreSQL ("otpgate" in ASCII).
LOCK_KEY = 0x6F7470676174


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None  # the revision the database is at (None: empty)
    head: str  # this version's

    @property
    def behind(self) -> bool:
        return self.current != self.head


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # there is a first migration
    return head


async def schema_state(engine: AsyncEngine) -> SchemaState:
    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return SchemaState(await connection.run_sync(current), head_revision())


async def migrate(engine: AsyncEngine) -> SchemaState:
    """Apply every script the database has not had, in one transaction; the state
    before. On PostgreSQL an advisory lock makes two instances migrating at once take
    turns (the second then has nothing to do); SQLite's write lock does the same."""
    before = await schema_state(engine)

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        await connection.run_sync(upgrade)
    return before
