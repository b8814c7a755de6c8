"""The durable credential store: factors and recovery codes in SQL.

Everything else otpgate keeps lives for minutes or a day, in the hot store (``store/``);
this is what must outlive it: ``engine.py`` (DATABASE_URL to an async engine: aiosqlite
or asyncpg, one code path), ``tables.py`` (the schema), ``migrations/`` (Alembic's
scripts; ``schema.py`` applies them and says when the schema is behind), ``cipher.py``
(AES-256-GCM for the factor secrets at rest) and ``store.py`` (the
``domain.factors.ports.CredentialStore`` over them).
"""
