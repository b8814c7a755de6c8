"""DATABASE_URL to an async SQLAlchemy engine: ``sqlite:///path`` through aiosqlite (the
embedded default, one machine), ``postgresql://user@host/db`` through asyncpg (several
hosts). One code path above this module; the dialect shows only in the upsert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class DatabaseUrlError(ValueError):
    pass


def async_url(database_url: str) -> URL:
    """The URL with its async driver: ``sqlite://`` and ``postgresql://`` (or
    ``postgres://``), a driver named in the URL replaced."""
    try:
        url = make_url(database_url)
    except Exception:
        raise DatabaseUrlError(
            "not a database URL (sqlite:///path or postgresql://user@host/db)"
        ) from None
    backend = url.get_backend_name()
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in DRIVERS:
        raise DatabaseUrlError(f"{backend}: only sqlite:// and postgresql:// are supported")
    if backend == "sqlite" and not url.database:
        raise DatabaseUrlError("sqlite:// needs a file: sqlite:///path/to/file.sqlite3")
    return url.set(drivername=DRIVERS[backend])


def redacted(database_url: str) -> str:
    """The URL as it may be shown: a password replaced by ***."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:
        return "<not a URL>"


def create_engine(database_url: str, timeout: float = 5.0) -> AsyncEngine:
    """An engine for DATABASE_URL; a SQLite file's directory is created when missing.
    ``timeout``: seconds to connect, and to wait for SQLite's write lock."""
    url = async_url(database_url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        assert url.database  # checked by async_url
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": timeout}
    else:
        options["connect_args"] = {"timeout": timeout, "command_timeout": timeout}
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(connection: Any, _record: Any) -> None:
    """Write-ahead log and full durability (these are credentials, not counters); the
    driver's own transaction handling off, so that ``_sqlite_begin`` decides."""
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """Every transaction takes the write lock at once (waiting up to the timeout for
    it), as the hot store's SQLite steps do: a read-then-write never finds the file
    changed under it, and savepoints work."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")
