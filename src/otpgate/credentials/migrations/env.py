"""Alembic's entry point: runs the scripts on the connection ``schema.py`` hands over
(``config.attributes["connection"]``), inside its transaction; never reads alembic.ini."""

from __future__ import annotations

from alembic import context

from otpgate.credentials.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
