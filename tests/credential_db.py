"""Credential databases for the tests: an SQLite file under the test's tmp_path, or a
database of the test's own on the PostgreSQL at POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test), created for the test and dropped after it
(never leftover state). PostgreSQL unreachable fails the test, saying so; never a skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from otpgate.credentials.engine import create_engine
from otpgate.credentials.schema import migrate

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for these tests and is not reachable at {POSTGRES_URL}"
            f" ({exc}). Start one, or point POSTGRES_URL at one.",
            pytrace=False,
        )


async def _execute(statement: str) -> None:
    admin = await _admin_connection()
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The URL of an empty database of this test's own, dropped afterwards. (A plain
    fixture, so that tests without an event loop of their own can use it too.)"""
    name = f"otpgate_test_{uuid.uuid4().hex}"
    asyncio.run(_execute(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty credential database of each kind."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_database"))
    return f"sqlite:///{tmp_path / 'credentials.sqlite3'}"


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """The same, migrated to this version's schema."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return database_url
